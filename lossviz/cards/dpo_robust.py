r"""rDPO (TRL ``loss_type="robust"``): the DPO loss de-biased for labels flipped with probability ε."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary
from ._common import once
from ._pairwise import BETA, EPSILON, GRADIENT_IN_H, MARGIN, MARGIN_AXIS, PairwiseType, in_margin, margin
from .base import Fact
from .figure import Axis, Curve, LessonFigure, Panel, Shot


def robust_loss(beta, eps, h):
    """[(1-ε)·(-log σ(βh)) - ε·(-log σ(-βh))] / (1 - 2ε) (rDPO)."""
    return (-(1 - eps) * LogSigmoid(beta * h) + eps * LogSigmoid(-beta * h)) / (1 - 2 * eps)


class DPORobust(PairwiseType):
    name = "dpo-robust"
    order = 1  # teaching order after dpo, cdpo, ipo: the TRL loss types, then RPO
    loss_type = "robust"
    kwarg_params = ("label_smoothing",)
    references = ("rdpo", "dpo")
    aliases = ("rdpo", "robust-dpo")
    title = "rDPO (robust)"
    lesson = ("[(1-ε)(-log σ(βh)) - ε(-log σ(-βh))]/(1-2ε): its expectation over labels flipped with probability ε "
              "is the clean DPO loss; it is unbounded below, so the push never fades")
    params = (BETA, EPSILON)
    axis = Axis(MARGIN_AXIS.symbol, MARGIN_AXIS.cut, lambda p: (-6.0 / p["beta"], 6.0 / p["beta"]), MARGIN_AXIS.label)
    figure = LessonFigure(
        panels=(Panel("loss", r"$\frac{-(1-\varepsilon)\log\sigma(\beta h) + \varepsilon\log\sigma(-\beta h)}{1-2\varepsilon}$"),
                Panel("grad", GRADIENT_IN_H)),
        title="unbiased under flipped labels; the gradient tends to -εβ/(1-2ε), not 0, so the margin keeps growing",
        curves=(Curve(lambda c: c.other("dpo"), "dpo:{beta:g}", "DPO $-\\log\\sigma(\\beta h)$", panels=("loss", "grad"),
                      style={"color": "0.45", "linestyle": "--"}),))
    gallery = (Shot("dpo-robust", "rDPO: averaged over labels flipped with probability ε it is DPO's loss; alone it is unbounded below "
                    "and its gradient tends to -εβ/(1-2ε) as the pair is ranked right", sweep=("label_smoothing", (0.0, 0.1, 0.3))),)

    def loss(self, p):
        return robust_loss(p["beta"], p["label_smoothing"], margin())

    def facts(self, d):
        beta, eps = d.p["beta"], d.p["label_smoothing"]
        slope = once(lambda: sp.diff(in_margin(d.loss), MARGIN))
        along = once(lambda: in_margin(d.loss))
        return [
            Fact("expected_over_flips", "(1-ε)·L(h) + ε·L(-h), the loss averaged over a label flipped with probability ε: -log σ(βh), "
                 "DPO's loss on the clean label (rDPO's unbiasedness)",
                 lambda: sp.simplify(elementary((1 - eps) * along() + eps * along().subs(MARGIN, -MARGIN)))),
            Fact("gradient_in_h", "∂L/∂h", slope),
            Fact("gradient_right_order", "∂L/∂h as h -> +oo: -εβ/(1-2ε), not 0 (the loss is unbounded below)",
                 lambda: sp.simplify(sp.limit(elementary(slope()), MARGIN, sp.oo))),
            Fact("gradient_wrong_order", "∂L/∂h as h -> -oo: -(1-ε)β/(1-2ε)",
                 lambda: sp.simplify(sp.limit(elementary(slope()), MARGIN, -sp.oo))),
        ]
