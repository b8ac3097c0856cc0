r"""APO-down (TRL ``loss_type="apo_down"``): the chosen implicit reward pushed down, the margin still pushed up."""

from __future__ import annotations

import sympy as sp

from ..symbolic import Sigmoid
from ._common import once
from ._pairwise import BETA, GRADIENT_IN_H, RHO_C, RHO_R, SPLIT_AXIS, PairwiseType, rho_c, rho_r, side_facts
from .base import Fact
from .figure import LessonFigure, Panel


class DPOAPODown(PairwiseType):
    name = "dpo-apo-down"
    order = 8
    loss_type = "apo_down"
    references = ("apo",)
    aliases = ("apo-down",)
    title = "APO-down"
    lesson = ("σ(βρ_c) + (1 - σ(βh)): the chosen log-ratio is pushed down by its own term and up by the margin's, "
              "the rejected one always down (for chosen answers worse than the model's own)")
    params = (BETA,)
    axis = SPLIT_AXIS
    figure = LessonFigure(
        panels=(Panel("loss", r"$\sigma(\beta\rho_c) + 1 - \sigma(\beta h)$"), Panel("grad", GRADIENT_IN_H)),
        title="the chosen term pulls ρ_c down, the margin term pulls h up: along the even split the loss is not monotone")

    def loss(self, p):
        beta = p["beta"]
        return Sigmoid(beta * rho_c()) + Sigmoid(-beta * (rho_c() - rho_r()))  # 1 - σ(βh) written as σ(-βh)

    def facts(self, d):
        along, facts = side_facts(d, mixed_doc="∂²L/∂ρ_c∂ρ_r: not zero, the margin term couples the two log-ratios")
        chosen = once(lambda: sp.diff(along(), RHO_C))
        return facts + [
            Fact("chosen_gradient_rejected_at_reference", "∂L/∂ρ_c with ρ_r = 0: zero, the chosen term and the margin term cancel",
                 lambda: sp.simplify(chosen().subs(RHO_R, 0))),
        ]
