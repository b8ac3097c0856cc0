r"""GMPO: the geometric mean of the token ratios, each clipped in log space on the side A favours (Zhao et al. 2025).

The card's example is one answer of three tokens with one advantage A. Each token's log-ratio
:math:`x_t` is clipped sign-aware, :math:`\tilde x_t = \min(x_t, \varepsilon_h)` for A > 0 and
:math:`\max(x_t, -\varepsilon_l)` for A < 0, and :math:`\ell = -A\exp(\tfrac13\sum_t\tilde x_t)`, one
value per answer (verl's form; the paper's bounds :math:`e^{\pm0.4}` are ``clip_eps = 0.4`` on
log r). Unlike GSPO, the clip acts per token: a clipped token stops, the others keep their
gradient :math:`-A\,G/3`, G the clipped geometric mean.
"""

from __future__ import annotations

import sympy as sp

from ._common import once, sym
from ._rl import FLOAT64_LOG_RATIO_MAX, TOP, away, draw_point, zero_set
from .base import Fact, Param
from .controls import Hold, Window
from .figure import Axis, LessonFigure, Mark, Panel, Shot
from .gspo import LENGTH, LP, OLD, VARS, SequenceCard

R = sp.Symbol("r", positive=True)


class GMPO(SequenceCard):
    name = "gmpo"
    aliases = ("gmpo-loss",)
    family = "grpo"
    order = 7  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "GMPO: geometric mean of clipped token ratios"
    lesson = ("-A·exp(mean_t clip(log r_t)): the token log-ratios are clipped one by one in log space on the side A favours, "
              "then averaged; a clipped token stops while the others keep the gradient -A·G/L")
    production = "lossviz.losses:PolicyLoss"
    loss_type = "gmpo"
    params = (
        Param("clip_eps_low", 0.4, "lower bound -ε_l of the token log-ratio (paper: 0.4, i.e. r ≥ e^-0.4)", r"\varepsilon_l",
              low=0.0, high=10.0, low_open=True),
        Param("clip_eps_high", 0.4, "upper bound ε_h of the token log-ratio (paper: 0.4)", r"\varepsilon_h", low=0.0, high=10.0, low_open=True),
    )
    references = ("gmpo", "gspo", "verl")
    controls = (Hold("advantages", "A", -2.0, 2.0, "the answer's advantage A (its sign picks the side that is clipped)"),
                Hold(("log_probs_1", "log_probs_2"), "x_rest", -1.0, 1.0, "log-ratio of the two other tokens"),
                Window("clip_eps_low", 0.05, 2.0, 0.05), Window("clip_eps_high", 0.05, 2.0, 0.05))
    axis = Axis("r", {**{n: 0 for n in VARS}, "log_probs_0": "log(r)", "advantages": 1}, (0.3, 3.0),
                "ratio $r$ of token 0 (tokens 1, 2 at $r = 1$)", positive=True)
    figure = LessonFigure(
        panels=(Panel("loss", "loss", tag="A_positive", title="A > 0 (A = +1)"),
                Panel("loss", "loss", tag="A_negative", title="A < 0 (A = -1)", cut={"advantages": -1}),
                Panel("grad", r"$\partial\ell/\partial r$", tag="A_positive", style={"color": 1}),
                Panel("grad", r"$\partial\ell/\partial r$", tag="A_negative", style={"color": 1}, cut={"advantages": -1})),
        rows=2, size=(3.6, 2.4), label=r"$-A\,e^{\mathrm{mean}_t \tilde x_t}$",
        title="each token is clipped in log space: token 0 stops at r = exp(ε_h) (A\u00a0>\u00a00) or exp(−ε_l) (A\u00a0<\u00a00)",
        marks=(Mark("zero_gradient_token_ratios_A_positive", kind="zone", label="zero gradient", once=True, on="A_positive"),
               Mark("zero_gradient_token_ratios_A_negative", kind="zone", label="zero gradient", once=True, on="A_negative"),
               Mark("token_clip_high", kind="edge", label=r"$e^{{\varepsilon_h}}$", once=True),
               Mark("token_clip_low", kind="edge", label=r"$e^{{-\varepsilon_l}}$", once=True)))
    gallery = (Shot("gmpo", "GMPO: a token's log-ratio is clipped in log space on the side the advantage favours; the answer's loss is "
                    "-A times the geometric mean of the clipped ratios"),)

    def loss(self, p):
        return self.surrogate(p, TOP)

    def surrogate(self, p, top):
        low, high = self.bounds(p)
        adv = sym("advantages")
        clipped = [sp.Piecewise((high, (adv >= 0) & (sym(lp) - sym(o) > high)), (-low, (adv < 0) & (sym(lp) - sym(o) < -low)),
                                (sym(lp) - sym(o), True)) for lp, o in zip(LP, OLD)]
        mean = sum(clipped) / LENGTH
        if top is sp.oo:
            return -adv * sp.exp(mean)
        # the production clamps the mean at top; only A < 0 reaches it (for A >= 0 the mean is at most ε_h): the condition
        # is written with Max (x̃_t = max(x_t, -ε_l) for A < 0), which stays a plain relation
        lifted = sum(sp.Max(sym(lp) - sym(o), -low) for lp, o in zip(LP, OLD)) / LENGTH
        return sp.Piecewise((-adv * sp.exp(top), (adv < 0) & (lifted > top)), (-adv * sp.exp(mean), True))

    def facts(self, d):
        low, high = self.bounds(d.p)
        adv = sym("advantages")
        grad0 = once(lambda: sp.diff(self.surrogate(d.p, sp.oo), sym("log_probs_0")))
        one_token = {sym(n): 0 for n in VARS if n not in ("log_probs_0", "advantages")}
        one_token[sym("log_probs_0")] = sp.log(R)

        def zeros(sign):
            a = sign * sp.Symbol("A", positive=True)
            return zero_set(grad0(), {**one_token, adv: a}, {**one_token, adv: a}, R)

        g = sp.Symbol("G", positive=True)
        # no token clipped: each token's Piecewise at its last branch, x̃_t = x_t; the loss is -A·G, G the geometric mean
        inside = once(lambda: self.surrogate(d.p, sp.oo).replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[-1][0]))
        return [
            Fact("token_gradient_inside", "∂ℓ/∂log π_t of a token that is not clipped: -A·G/3, G the geometric mean of the clipped ratios",
                 lambda: sp.simplify(sp.diff(inside(), sym("log_probs_0")).subs(inside() / -adv, g))),
            Fact("zero_gradient_token_ratios_A_positive", "A > 0: the ratios r of token 0 where its gradient is zero, r > e^ε_h",
                 lambda: zeros(1)),
            Fact("zero_gradient_token_ratios_A_negative", "A < 0: r < e^-ε_l", lambda: zeros(-1)),
            Fact("token_clip_high", "the token ratio where the clip binds for A > 0: e^ε_h", lambda: sp.exp(high)),
            Fact("token_clip_low", "... for A < 0: e^-ε_l", lambda: sp.exp(-low)),
        ]

    def sample(self, rng, p):
        low, high = (float(v) for v in self.bounds(p))
        ok = lambda v: away([v[lp] - v[o] for lp, o in zip(LP, OLD)], [-low, high]) and abs(v["advantages"]) > 0.05
        return draw_point(rng, VARS, ok)
