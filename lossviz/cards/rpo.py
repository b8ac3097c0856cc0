r"""RPO: DPO plus a negative log-likelihood term on the chosen response (OpenRLHF ``nll_loss_coef``, TRL ``["sigmoid", "sft"]``)."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary
from ._common import once, sym
from ._pairwise import (BETA, CHOSEN_LENGTH, GRADIENT_IN_H, MARGIN, PairwiseType, WithLengths, in_margin, length_terms,
                        margin, margin_batch)
from .base import Fact, Param
from .dpo_ln import lengths_example, random_lengths
from .figure import Curve, LessonFigure, Mark, Panel, Shot

ALPHA = Param("nll_loss_coef", 1.0, "weight α of the chosen response's NLL (per token) added to the DPO loss", r"\alpha", low=0.0)


class RPO(PairwiseType):
    name = "rpo"
    order = 11
    loss_type = "sigmoid"
    kwarg_params = ("nll_loss_coef",)
    references = ("rpo", "dpo")
    aliases = ("dpo-nll",)
    title = "RPO (DPO + NLL)"
    lesson = ("-log σ(βh) - α·π_c/L_c: DPO plus the chosen response's per-token NLL; the chosen log-prob keeps a push α/L_c "
              "when the pair is ranked right, where DPO's fades")
    params = (BETA, ALPHA, CHOSEN_LENGTH)
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\log\sigma(\beta h) - \alpha\,\pi^c/L_c$"), Panel("grad", GRADIENT_IN_H + r" (here $h = \pi^c$)")),
        title="the NLL term keeps a push α/L_c on the chosen log-prob when DPO's has faded",
        curves=(Curve(lambda c: c.other("dpo"), "dpo:{beta:g}", "DPO $-\\log\\sigma(\\beta h)$", panels=("loss", "grad"),
                      style={"color": "0.45", "linestyle": "--"}),),
        marks=(Mark("chosen_push_right_order", kind="limit", panel="grad", scale=-1.0, label="→ -α/L_c = {y:g} as h → ∞"),))
    gallery = (Shot("rpo", "RPO adds the chosen response's per-token NLL to DPO: a push α/L_c on the chosen log-prob that does not "
                    "fade when the pair is ranked right", sweep=("nll_loss_coef", (0.0, 1.0, 2.0))),)

    def loss(self, p):
        return -LogSigmoid(p["beta"] * margin()) - p["nll_loss_coef"] * sym("policy_chosen_logps") / p["chosen_length"]

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import DPOLoss

        return lengths_example(DPOLoss(**self.production_kwargs(p)), values, p, ("chosen_lengths",), dtype, device)

    def batches(self, rng, p):
        from lossviz.losses import DPOLoss

        make = lambda device: WithLengths(DPOLoss(**self.production_kwargs(p)), ("chosen_lengths",))
        spec = margin_batch(self, rng, p, make)
        return [length_terms(spec, random_lengths(rng, len(spec.terms))[:1], ("chosen_length",))]

    def facts(self, d):
        beta, alpha, lc = d.p["beta"], d.p["nll_loss_coef"], d.p["chosen_length"]
        chosen = once(lambda: sp.factor_terms(sp.simplify(in_margin(d.gradient["policy_chosen_logps"]))))
        return [
            Fact("chosen_gradient", "∂L/∂π_c as a function of h: -βσ(-βh) - α/L_c", chosen),
            Fact("rejected_gradient", "∂L/∂π_r as a function of h: βσ(-βh), DPO's", lambda: sp.simplify(in_margin(d.gradient["policy_rejected_logps"]))),
            Fact("chosen_push_right_order", "-∂L/∂π_c as h -> +oo: α/L_c (DPO's part fades, the NLL's stays)",
                 lambda: sp.limit(elementary(-chosen()), MARGIN, sp.oo)),
            Fact("nll_term", "L minus DPO's loss: -α·π_c/L_c, the per-token NLL of the chosen response",
                 lambda: sp.simplify(d.loss + LogSigmoid(beta * margin()))),
        ]
