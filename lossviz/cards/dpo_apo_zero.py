r"""APO-zero (TRL ``loss_type="apo_zero"``): the chosen implicit reward pushed up and the rejected one down, independently."""

from __future__ import annotations

import sympy as sp

from ..symbolic import Sigmoid, elementary
from ._common import once, solve_one
from ._pairwise import BETA, GRADIENT_IN_H, RHO_C, RHO_R, SPLIT_AXIS, PairwiseType, rho_c, rho_r, side_facts
from .base import Fact
from .figure import LessonFigure, Mark, Panel


class DPOAPOZero(PairwiseType):
    name = "dpo-apo-zero"
    order = 7
    loss_type = "apo_zero"
    references = ("apo",)
    aliases = ("apo-zero",)
    title = "APO-zero"
    lesson = ("(1 - σ(βρ_c)) + σ(βρ_r): the chosen log-ratio is pushed up and the rejected one down, each on its own, "
              "hardest at ρ = 0 (for chosen answers better than the model's own)")
    params = (BETA,)
    axis = SPLIT_AXIS
    figure = LessonFigure(
        panels=(Panel("loss", r"$1 - \sigma(\beta\rho_c) + \sigma(\beta\rho_r)$"), Panel("grad", GRADIENT_IN_H)),
        title="two independent pushes, each bell-shaped around its own ρ = 0: the chosen up, the rejected down",
        marks=(Mark("split_gradient_peak", at=0.0, panel="grad", label="h = 0: -β/4 = {y:g}"),))

    def loss(self, p):
        beta = p["beta"]
        return Sigmoid(-beta * rho_c()) + Sigmoid(beta * rho_r())  # 1 - σ(βρ_c) written as σ(-βρ_c)

    def facts(self, d):
        along, facts = side_facts(d)
        chosen = once(lambda: sp.diff(along(), RHO_C))
        return facts + [
            Fact("chosen_peak", "the chosen log-ratio where the push on it is largest: ρ_c = 0",
                 lambda: solve_one(elementary(sp.diff(chosen(), RHO_C)), RHO_C)),
            Fact("chosen_peak_value", "∂L/∂ρ_c there: -β/4", lambda: sp.simplify(chosen().subs(RHO_C, 0))),
            Fact("split_gradient_peak", "∂L/∂h at h = 0 along the even split: -β/4",
                 lambda: sp.simplify(sp.diff(along().subs({RHO_C: RHO_C / 2, RHO_R: -RHO_C / 2}), RHO_C).subs(RHO_C, 0))),
        ]
