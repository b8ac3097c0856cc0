r"""NCA for a pair (TRL ``loss_type="nca_pair"``): noise-contrastive alignment with the implicit rewards βρ."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid
from ._common import once, solve_one
from ._pairwise import BETA, GRADIENT_IN_H, RHO_C, SPLIT_AXIS, PairwiseType, rho_c, rho_r, side_facts, split_minimum
from .base import Fact
from .figure import LessonFigure, Mark, Panel


class DPONCA(PairwiseType):
    name = "dpo-nca"
    order = 4
    loss_type = "nca_pair"
    references = ("nca",)
    aliases = ("nca-pair",)
    title = "NCA (pair)"
    lesson = ("-log σ(βρ_c) - ½log σ(-βρ_c) - ½log σ(-βρ_r): each log-ratio on its own; the chosen one is pulled to "
              "βρ_c = log 2 and stays there, the rejected one is always pushed down")
    params = (BETA,)
    axis = SPLIT_AXIS
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\log\sigma(\beta\rho_c) - \frac{1}{2}\log\sigma(-\beta\rho_c) - \frac{1}{2}\log\sigma(-\beta\rho_r)$"),
                Panel("grad", GRADIENT_IN_H)),
        title="the chosen log-ratio is held at βρ_c = log 2, the rejected one pushed down: along the even split the minimum is at βh = 2 log 3",
        marks=(Mark("split_minimum", label="min at h = 2 log 3/β = {x:.3g}", zero_gradient=True),))

    def loss(self, p):
        beta = p["beta"]
        return -LogSigmoid(beta * rho_c()) - LogSigmoid(-beta * rho_c()) / 2 - LogSigmoid(-beta * rho_r()) / 2

    def facts(self, d):
        along, facts = side_facts(d)
        chosen = once(lambda: sp.diff(along(), RHO_C))
        from ..symbolic import elementary

        return facts + [
            Fact("chosen_optimum", "the chosen log-ratio where ∂L/∂ρ_c = 0: ρ_c* = log 2 / β (NCA keeps the chosen reward finite)",
                 lambda: sp.simplify(solve_one(elementary(chosen()), RHO_C))),
            Fact("split_minimum", "the margin h of the minimum along the even split ρ_c = h/2, ρ_r = -h/2", lambda: split_minimum(d)),
        ]
