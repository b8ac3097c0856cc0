r"""EXO for a pair (TRL ``loss_type="exo_pair"``): the reverse KL from the model's pair probabilities to the smoothed labels."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, Sigmoid, elementary
from ._common import once
from ._pairwise import BETA, GRADIENT_IN_H, MARGIN, MARGIN_AXIS, PairwiseType, in_margin, margin
from .base import Fact, Param
from .figure import Axis, Curve, LessonFigure, Mark, Panel, Shot

U = sp.Symbol("u", real=True)


class DPOExo(PairwiseType):
    name = "dpo-exo"
    order = 3
    loss_type = "exo_pair"
    kwarg_params = ("label_smoothing",)
    references = ("exo", "dpo")
    aliases = ("exo-pair",)
    title = "EXO (pair)"
    lesson = ("KL([σ(βh), σ(-βh)] ‖ [1-ε, ε]): the reverse KL from the model's pair probabilities to the smoothed label; "
              "zero, with zero gradient, at βh* = log((1-ε)/ε), the margin where cDPO is minimal too")
    params = (BETA, Param("label_smoothing", 1e-3, "ε of the smoothed label [1-ε, ε]; EXO needs ε > 0 (TRL uses 1e-3 when it is 0)",
                          r"\varepsilon", low=0.0, low_open=True, high=0.5, high_open=True))
    axis = Axis(MARGIN_AXIS.symbol, MARGIN_AXIS.cut, lambda p: (-6.0 / p["beta"], 9.5 / p["beta"]), MARGIN_AXIS.label)  # a tick at the right end would leave the canvas
    batch_margins = (-6.0, -1.0, 0.3, 3.0, 7.0, 10.0)
    figure = LessonFigure(
        panels=(Panel("loss", r"$\mathrm{KL}([\sigma(\beta h), \sigma(-\beta h)]\ \|\ [1-\varepsilon, \varepsilon])$"),
                Panel("grad", GRADIENT_IN_H)),
        title="a reverse KL to the label [1-ε, ε]: zero, with zero gradient, at βh* = log((1-ε)/ε)",
        curves=(Curve(lambda c: c.other("dpo"), "dpo:{beta:g}", "DPO $-\\log\\sigma(\\beta h)$", panels=("loss", "grad"),
                      style={"color": "0.45", "linestyle": "--"}),),
        marks=(Mark("minimum", label="min 0 at $h^*$ = log((1−ε)/ε)/β = {x:.3g}", zero_gradient=True),))
    gallery = (Shot("dpo-exo", "EXO's pair loss is the KL from [σ(βh), σ(-βh)] to [1-ε, ε]: zero at βh* = log((1-ε)/ε), "
                    "the minimum of cDPO with the same ε", sweep=("label_smoothing", (1e-3, 0.05))),)

    def loss(self, p):
        u, eps = p["beta"] * margin(), p["label_smoothing"]
        return Sigmoid(u) * (LogSigmoid(u) - sp.log(1 - eps)) + Sigmoid(-u) * (LogSigmoid(-u) - sp.log(eps))

    def facts(self, d):
        beta, eps = d.p["beta"], d.p["label_smoothing"]
        # the loss as a function of u = βh, its slope, and the slope divided by σ(u)σ(-u) > 0 (same zeros)
        in_u = once(lambda: in_margin(d.loss).subs(MARGIN, U / beta))
        slope_u = once(lambda: sp.diff(in_u(), U))
        reduced = once(lambda: sp.simplify(sp.expand_log(elementary(slope_u() / (Sigmoid(U) * Sigmoid(-U))), force=True)))
        beta_h = once(lambda: sp.simplify(sp.solve(reduced(), U)[0]))

        def minimum_value():
            # with a symbolic ε write it through the odds t = (1-ε)/ε > 0, so that every logarithm is of a positive number
            t = sp.Symbol("t", positive=True)
            value = elementary(in_u().subs(U, beta_h()))
            if isinstance(eps, sp.Symbol):
                value = value.subs(eps, 1 / (1 + t))
            return sp.simplify(sp.expand_log(sp.simplify(value), force=True))

        return [
            Fact("gradient_in_h", "∂L/∂h", lambda: sp.diff(in_margin(d.loss), MARGIN)),
            Fact("slope_over_bell", "∂L/∂u ÷ σ(u)σ(-u), u = βh: u - log((1-ε)/ε), linear in u, one zero", reduced),
            Fact("beta_times_minimum", "β h* where the gradient is 0: log((1-ε)/ε)", beta_h),
            Fact("minimum", "the margin h* of the minimum", lambda: beta_h() / beta),
            Fact("minimum_value", "the loss at h*: 0 (the two distributions are equal)",
                 minimum_value),
        ]
