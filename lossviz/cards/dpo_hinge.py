r"""Hinge loss on the implicit-reward margin (SLiC-HF / RSO; TRL ``loss_type="hinge"``)."""

from __future__ import annotations

import sympy as sp

from ._common import far_from, once
from ._pairwise import BETA, GRADIENT_IN_H, MARGIN, PairwiseType, in_margin, margin
from .base import Fact
from .figure import Curve, LessonFigure, Mark, Panel, Shot


class DPOHinge(PairwiseType):
    name = "dpo-hinge"
    order = 2
    loss_type = "hinge"
    references = ("slic", "rso", "dpo")
    aliases = ("slic", "rso-hinge")
    title = "hinge (SLiC / RSO)"
    lesson = "max(0, 1 - βh): a constant push β until the implicit-reward margin βh reaches 1, then none at all"
    params = (BETA,)
    batch_margins = (-6.0, -1.0, 0.3, 0.8, 1.3, 2.0, 6.0)  # both sides of the hinge at βh = 1
    figure = LessonFigure(
        panels=(Panel("loss", r"$\max(0,\ 1 - \beta h)$"), Panel("grad", GRADIENT_IN_H + "\n" + r"$= -\beta\ \mathrm{for}\ \beta h < 1$")),
        title="a constant push β until βh = 1, none beyond: the margin stops at the hinge",
        curves=(Curve(lambda c: c.other("dpo"), "dpo:{beta:g}", "DPO $-\\log\\sigma(\\beta h)$", panels=("loss", "grad"),
                      style={"color": "0.45", "linestyle": "--"}),),
        marks=(Mark("hinge", kind="edge", label="hinge h = 1/β = {x:g}"),
               Mark("zero_gradient_margins", kind="zone", panel="grad", label="no gradient")))
    gallery = (Shot("dpo-hinge", "hinge max(0, 1 - βh): the gradient is -β until the implicit-reward margin βh reaches 1 and 0 beyond",
                    sweep=("beta", (0.1, 0.25))),)

    def loss(self, p):
        u = p["beta"] * margin()
        return sp.Piecewise((1 - u, u < 1), (0, True))

    def accept(self, row, p):
        h = (row["policy_chosen_logps"] - row["reference_chosen_logps"]) - (row["policy_rejected_logps"] - row["reference_rejected_logps"])
        return far_from(h, [1 / float(p["beta"])], 0.05)

    def facts(self, d):
        slope = once(lambda: sp.piecewise_fold(sp.diff(in_margin(d.loss), MARGIN)))

        def where(nonzero):
            parts = [sp.solveset(c, MARGIN, sp.S.Reals) if c is not sp.true else None for e, c in slope().args]
            region, seen = sp.S.EmptySet, sp.S.EmptySet
            for (e, _), part in zip(slope().args, parts):
                part = sp.S.Reals - seen if part is None else part - seen
                if (e != 0) == nonzero:
                    region = region | part
                seen = seen | part
            return region

        return [
            Fact("gradient_in_h", "∂L/∂h: -β where βh < 1 (the subgradient of the hinge), 0 beyond", slope),
            Fact("pushing_margins", "the margins h where the gradient is -β (not 0): h < 1/β", lambda: where(True)),
            Fact("zero_gradient_margins", "the margins h where the gradient is 0: h > 1/β", lambda: where(False)),
            Fact("hinge", "the hinge: the margin where the loss reaches 0, h = 1/β", lambda: sp.solve(in_margin(d.loss).args[0][0], MARGIN)[0]),
        ]
