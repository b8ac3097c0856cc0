r"""BCO for a pair (TRL ``loss_type="bco_pair"``): two binary classifiers on the implicit rewards, no running-mean shift."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary
from ._common import once
from ._pairwise import BETA, GRADIENT_IN_H, RHO_C, RHO_R, SPLIT_AXIS, PairwiseType, rho_c, rho_r, side_facts
from .base import Fact
from .figure import LessonFigure, Mark, Panel


class DPOBCO(PairwiseType):
    name = "dpo-bco"
    order = 5
    loss_type = "bco_pair"
    references = ("bco",)
    aliases = ("bco-pair",)
    title = "BCO (pair)"
    lesson = ("-log σ(βρ_c) - log σ(-βρ_r): the chosen response classified as good, the rejected one as bad, each on its own; "
              "the decision boundary is the reference (ρ = 0), without the running-mean shift of the paper")
    params = (BETA,)
    axis = SPLIT_AXIS
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\log\sigma(\beta\rho_c) - \log\sigma(-\beta\rho_r)$"), Panel("grad", GRADIENT_IN_H)),
        title="two independent classifiers: along the even split the gradient tends to -β as h → -∞ and fades as h → ∞",
        marks=(Mark("split_gradient_wrong_order", kind="limit", panel="grad", label="→ -β = {y:g} as h → -∞"),))

    def loss(self, p):
        beta = p["beta"]
        return -LogSigmoid(beta * rho_c()) - LogSigmoid(-beta * rho_r())

    def facts(self, d):
        along, facts = side_facts(d)
        h = sp.Symbol("h", real=True)
        split_slope = once(lambda: elementary(sp.diff(along().subs({RHO_C: h / 2, RHO_R: -h / 2}), h)))
        return facts + [
            Fact("chosen_limit_wrong", "∂L/∂ρ_c as ρ_c -> -oo: -β (a chosen response scored below the reference is pushed up hardest)",
                 lambda: sp.limit(elementary(sp.diff(along(), RHO_C)), RHO_C, -sp.oo)),
            Fact("rejected_limit_wrong", "∂L/∂ρ_r as ρ_r -> +oo: β", lambda: sp.limit(elementary(sp.diff(along(), RHO_R)), RHO_R, sp.oo)),
            Fact("split_gradient_wrong_order", "∂L/∂h along the even split as h -> -oo: -β", lambda: sp.limit(split_slope(), h, -sp.oo)),
        ]
