r"""DiscoPOP (TRL ``loss_type="discopop"``): the log-ratio modulated loss, a blend of the logistic and the exponential loss."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, Sigmoid, elementary
from ._common import once
from ._pairwise import BETA, GRADIENT_IN_H, MARGIN, MARGIN_AXIS, PairwiseType, in_margin, margin
from .base import Fact, Param
from .figure import Axis, Curve, LessonFigure, Mark, Panel, Shot

U = sp.Symbol("u", real=True)
TAU = Param("discopop_tau", 0.05, "temperature τ of the modulation σ(βh/τ) that blends the logistic and the exponential loss",
            r"\tau", low=0.0, low_open=True, high=0.5)


def discopop_loss(u, tau):
    """(1 - σ(u/τ))·(-log σ(u)) + σ(u/τ)·e^{-u}, the second term written as exp(log σ(u/τ) - u) so that it cannot overflow."""
    return Sigmoid(-u / tau) * (-LogSigmoid(u)) + sp.exp(LogSigmoid(u / tau) - u)


def stationary_points(slope_u, span: float = 3.0, steps: int = 1200):
    """The zeros of ∂L/∂u in [-span, span] (a sign scan, then bisection at 30 digits): [(u, 'minimum' | 'maximum'), ...]."""
    import mpmath

    f = sp.lambdify(U, elementary(slope_u), "mpmath")
    grid = [-span + 2 * span * k / steps for k in range(steps + 1)]
    values = [f(mpmath.mpf(x)) for x in grid]
    out = []
    with mpmath.workdps(30):
        for a, b, fa, fb in zip(grid, grid[1:], values, values[1:]):
            if fa == 0 or (fa < 0) != (fb < 0):
                root = mpmath.findroot(f, (mpmath.mpf(a), mpmath.mpf(b)), solver="anderson")
                out.append((sp.Float(root, 15), "minimum" if fa < 0 else "maximum"))
    return out


class DPODiscoPOP(PairwiseType):
    name = "dpo-discopop"
    order = 9
    loss_type = "discopop"
    kwarg_params = ("discopop_tau",)
    references = ("discopop", "dpo")
    aliases = ("discopop", "lrml")
    title = "DiscoPOP (log-ratio modulated)"
    lesson = ("(1 - σ(βh/τ))(-log σ(βh)) + σ(βh/τ)e^{-βh}: logistic for wrongly ranked pairs, exponential for right ones; "
              "at τ = 0.05 it is not monotone: it rises between a local minimum at βh ≈ -0.12 and a local maximum at βh ≈ 0.07")
    params = (BETA, TAU)
    # the non-monotone zone is |βh| < 0.2: a window of ±1.5 in βh shows it beside both arms
    axis = Axis(MARGIN_AXIS.symbol, MARGIN_AXIS.cut, lambda p: (-1.5 / p["beta"], 1.5 / p["beta"]), MARGIN_AXIS.label)
    batch_margins = (-6.0, -1.0, -0.25, -0.12, -0.05, 0.0, 0.07, 0.2, 1.0, 6.0)
    figure = LessonFigure(
        panels=(Panel("loss", r"$(1-w)(-\log\sigma(\beta h)) + w\,e^{-\beta h}$" + "\n" + r"$w = \sigma(\beta h/\tau)$"),
                Panel("grad", GRADIENT_IN_H)),
        title="not monotone: it rises between a local minimum and a local maximum near h = 0",
        curves=(Curve(lambda c: c.other("dpo"), "dpo:{beta:g}", "DPO $-\\log\\sigma(\\beta h)$", panels=("loss", "grad"),
                      style={"color": "0.45", "linestyle": "--"}),),
        marks=(Mark("local_minimum", label="local min: βh = {local_minimum_u:.3f}", zero_gradient=True, missing="monotone"),
               Mark("local_maximum", label="local max: βh = {local_maximum_u:.3f}", zero_gradient=True)))
    gallery = (Shot("dpo-discopop", "DiscoPOP blends the logistic loss (βh < 0) and the exponential loss (βh > 0) with weight σ(βh/τ); "
                    "at τ = 0.05 the blend rises between βh ≈ -0.12 and βh ≈ 0.07: the loss is not monotone in the margin"),)

    def loss(self, p):
        return discopop_loss(p["beta"] * margin(), p["discopop_tau"])

    def facts(self, d):
        beta, tau = d.p["beta"], d.p["discopop_tau"]
        in_u = once(lambda: in_margin(d.loss).subs(MARGIN, U / beta))
        slope_u = once(lambda: sp.diff(in_u(), U))
        at_zero = once(lambda: sp.simplify(elementary(slope_u()).subs(U, 0)))
        facts = [
            Fact("gradient_in_h", "∂L/∂h", lambda: sp.diff(in_margin(d.loss), MARGIN)),
            Fact("slope_at_zero", "∂L/∂u at u = βh = 0: (1 - log 2)/(4τ) - 3/4 (about +0.78 at τ = 0.05: the loss rises there)", at_zero),
            Fact("tau_of_flat_start", "the τ below which the loss rises through u = 0: (1 - log 2)/3",
                 lambda: sp.solve(at_zero().subs(tau, sp.Symbol("t", positive=True)), sp.Symbol("t", positive=True))[0]
                 if isinstance(tau, sp.Symbol) else sp.solve(elementary(sp.diff(discopop_loss(U, sp.Symbol("t", positive=True)), U)).subs(U, 0),
                                                              sp.Symbol("t", positive=True))[0]),
        ]
        if not isinstance(tau, sp.Symbol):
            points = once(lambda: stationary_points(slope_u()))
            first = lambda kind: next((u for u, k in points() if k == kind), sp.nan)
            facts += [
                Fact("local_minimum_u", "u = βh of the local minimum (a sign scan of ∂L/∂u over |u| ≤ 3, then mpmath): -0.1186 at τ = 0.05; nan when there is none", lambda: first("minimum")),
                Fact("local_maximum_u", "u = βh of the local maximum: 0.0720 at τ = 0.05; nan when there is none", lambda: first("maximum")),
                Fact("local_minimum", "the margin h of the local minimum", lambda: first("minimum") / beta),
                Fact("local_maximum", "the margin h of the local maximum", lambda: first("maximum") / beta),
            ]
        return facts
