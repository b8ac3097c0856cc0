r"""SPPO with hard labels (TRL ``loss_type="sppo_hard"``): each log-ratio regressed onto its own target ±1/(2β)."""

from __future__ import annotations

import sympy as sp

from ._pairwise import BETA, GRADIENT_IN_H, RHO_C, RHO_R, SPLIT_AXIS, PairwiseType, rho_c, rho_r, side_facts, split_minimum
from .base import Fact
from .figure import Axis, LessonFigure, Mark, Panel, Shot


class DPOSPPO(PairwiseType):
    name = "dpo-sppo"
    order = 6
    loss_type = "sppo_hard"
    references = ("sppo",)
    aliases = ("sppo-hard",)
    title = "SPPO (hard labels)"
    lesson = "(ρ_c - 1/(2β))² + (ρ_r + 1/(2β))²: the chosen log-ratio regressed onto +1/(2β), the rejected onto -1/(2β)"
    params = (BETA,)
    # the margin target 1/β ± 6 nats (and h = 0): the vertex and both arms, as for IPO
    axis = Axis(SPLIT_AXIS.symbol, SPLIT_AXIS.cut, lambda p: (min(-1.0, 1 / p["beta"] - 6.0), 1 / p["beta"] + 6.0), SPLIT_AXIS.label)
    batch_margins = (-1.0, -0.3, 0.3, 0.5, 1.0, 3.0)
    figure = LessonFigure(
        panels=(Panel("loss", r"$(\rho_c - \frac{1}{2\beta})^2 + (\rho_r + \frac{1}{2\beta})^2$"), Panel("grad", GRADIENT_IN_H)),
        title="each log-ratio has its own target ±1/(2β): along the even split the margin's target is 1/β, twice IPO's",
        marks=(Mark("split_minimum", label="target h = 1/β = {x:g}", zero_gradient=True),))
    gallery = (Shot("dpo-sppo", "SPPO (hard): ρ_c → +1/(2β) and ρ_r → -1/(2β), each on its own; along the even split the margin "
                    "target is 1/β", sweep=("beta", (0.25, 0.5, 1.0))),)

    def loss(self, p):
        target = 1 / (2 * p["beta"])
        return (rho_c() - target) ** 2 + (rho_r() + target) ** 2

    def facts(self, d):
        along, facts = side_facts(d)
        return facts + [
            Fact("chosen_target", "the chosen log-ratio where ∂L/∂ρ_c = 0: +1/(2β)", lambda: sp.solve(sp.diff(along(), RHO_C), RHO_C)[0]),
            Fact("rejected_target", "the rejected log-ratio where ∂L/∂ρ_r = 0: -1/(2β)", lambda: sp.solve(sp.diff(along(), RHO_R), RHO_R)[0]),
            Fact("split_minimum", "the margin h of the minimum along the even split: 1/β", lambda: split_minimum(d)),
        ]
