r"""Shared pieces of the DPO loss-type cards (TRL's ``loss_type`` names on :class:`lossviz.losses.DPOLoss`).

Every type is a function of the two log-ratios :math:`\rho_c = \pi^c - \pi^c_{ref}` and
:math:`\rho_r = \pi^r - \pi^r_{ref}`; most of them of the margin :math:`h = \rho_c - \rho_r` alone.
Those are drawn along DPO's margin axis (the chosen log-prob moves, the other three stay at 0);
the types that treat the two log-ratios separately (NCA, BCO, SPPO, APO) along the margin split
evenly, :math:`\rho_c = h/2`, :math:`\rho_r = -h/2`, so that neither side is favoured by the cut.
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from ..symbolic import elementary
from ._common import draw, once, solve_one, sym
from .base import Fact, Param
from .batch import BatchSpec, Term
from .dpo import BETA, MARGIN, MARGIN_AXIS, PAIR, _MarginCard, in_margin, margin
from .figure import Axis

RHO_C, RHO_R = sp.Symbol("rho_c", real=True), sp.Symbol("rho_r", real=True)
GRADIENT_IN_H = r"gradient $\partial\mathcal{L}/\partial h$"
EPSILON = Param("label_smoothing", 0.1, "probability ε that a preference label is flipped (TRL takes it from label_smoothing)",
                r"\varepsilon", low=0.0, high=0.5, high_open=True)

# the margin split evenly between the two log-ratios: ρ_c = h/2, ρ_r = -h/2
SPLIT_AXIS = Axis("h", {"policy_chosen_logps": "h/2", "policy_rejected_logps": "-h/2", "reference_chosen_logps": 0, "reference_rejected_logps": 0},
                  lambda p: (-8.0 / p["beta"], 8.0 / p["beta"]),
                  r"log-ratio margin $h$, split evenly:" + "\n" + r"$\rho_c = h/2$, $\rho_r = -h/2$")


def rho_c():
    return sym("policy_chosen_logps") - sym("reference_chosen_logps")


def rho_r():
    return sym("policy_rejected_logps") - sym("reference_rejected_logps")


def in_rhos(expr):
    """Re-express a function of the four log-probs through the log-ratios ρ_c, ρ_r (references at 0)."""
    return expr.subs({sym("reference_chosen_logps"): 0, sym("reference_rejected_logps"): 0}).subs(
        {sym("policy_chosen_logps"): RHO_C, sym("policy_rejected_logps"): RHO_R})


def side_facts(d, mixed_doc="∂²L/∂ρ_c∂ρ_r: zero, the chosen and the rejected log-ratio are pushed independently"):
    """The gradient in each log-ratio and the mixed partial (a type that treats the two sides separately)."""
    along = once(lambda: in_rhos(d.loss))
    return along, [
        Fact("chosen_gradient", "∂L/∂ρ_c, ρ_c = π^c - π^c_ref (negative: the chosen log-prob is pushed up)", lambda: sp.factor(sp.simplify(sp.diff(along(), RHO_C)))),
        Fact("rejected_gradient", "∂L/∂ρ_r, ρ_r = π^r - π^r_ref (positive: the rejected log-prob is pushed down)", lambda: sp.factor(sp.simplify(sp.diff(along(), RHO_R)))),
        Fact("mixed_partial", mixed_doc, lambda: sp.simplify(sp.diff(along(), RHO_C, RHO_R))),
    ]


def split_minimum(d):
    """The margin where the loss along the split axis (ρ_c = h/2, ρ_r = -h/2) is stationary (sympy solve), or oo."""
    along = in_rhos(d.loss).subs({RHO_C: MARGIN / 2, RHO_R: -MARGIN / 2})
    h_star = solve_one(elementary(sp.diff(along, MARGIN)), MARGIN)
    return sp.oo if h_star is None else sp.simplify(h_star)


def margin_slope(d):
    """∂L/∂h of a loss of the margin alone."""
    return sp.diff(in_margin(d.loss), MARGIN)


class PairwiseType(_MarginCard):
    """A card for one ``loss_type`` of DPOLoss; ``kwarg_params`` are the card parameters passed on by name."""

    loss_type = "sigmoid"
    kwarg_params: Sequence[str] = ()
    family = "dpo"
    axis = MARGIN_AXIS
    # margins βh of the verification batches, chosen to reach every region of the loss types
    batch_margins: Sequence[float] = (-6.0, -1.0, -0.3, 0.3, 1.0, 6.0)
    scale = 5.0  # the spread of the sampled log-probs

    def accept(self, row, p) -> bool:
        """Whether a sampled pair is far enough from the loss's kinks (none by default)."""
        return True

    def sample(self, rng, p):
        return draw(rng, PAIR, self.scale, lambda v: self.accept(v, p))

    def production_kwargs(self, p):
        kwargs = {"beta": float(p["beta"]), "loss_type": self.loss_type}
        kwargs.update({k: float(p[k]) for k in self.kwarg_params})
        return kwargs

    def batches(self, rng, p):
        from lossviz.losses import DPOLoss

        return [margin_batch(self, rng, p, lambda device: DPOLoss(**self.production_kwargs(p)))]


CHOSEN_LENGTH = Param("chosen_length", 10.0, "number of tokens L_c of the chosen response (the card's example; a batch has one per pair)",
                      "L_c", low=1.0)
REJECTED_LENGTH = Param("rejected_length", 10.0, "number of tokens L_r of the rejected response", "L_r", low=1.0)


class WithLengths:
    """Calls a production module with the response lengths as keyword arguments:
    ``WithLengths(module, ("chosen_lengths",))(*logps, chosen_lengths)``."""

    def __init__(self, module, names, positional: int = 4):
        self.module, self.names, self.positional = module, tuple(names), positional

    def __call__(self, *args):
        head, tail = args[:self.positional], args[self.positional:]
        return self.module(*head, **dict(zip(self.names, tail)))


def length_terms(spec: BatchSpec, lengths, names=("chosen_length", "rejected_length")):
    """Per-pair lengths for a batch: append the length arrays to the inputs and point each term's length parameters at them."""
    import numpy as np

    first = len(spec.args)
    spec.args = list(spec.args) + [np.asarray(a) for a in lengths]
    spec.arg_names = list(spec.arg_names) + [n + "s" for n in names]
    for t in spec.terms:
        index = next(iter(t.where.values()))[1]
        t.extra = {n: (first + k, index) for k, n in enumerate(names)}
    spec.symbolic = tuple(names)
    return spec


def margin_batch(card, rng, p, make_module, scaled_margins=None, label="mean over pairs at spread margins"):
    """Pairs whose implicit-reward margins βh are the card's ``batch_margins`` (then jittered), plus two sampled pairs.

    Each pair's log-ratios split the margin at random; the reference log-probs are random, so
    every input carries its own value."""
    import numpy as np

    beta = float(p["beta"])
    rows = []
    for u in (scaled_margins if scaled_margins is not None else card.batch_margins):
        for _ in range(1000):
            h = (u + rng.uniform(-0.05, 0.05)) / beta
            split = rng.uniform(-0.5, 1.5)
            rc, rr = rng.normal() * card.scale, rng.normal() * card.scale
            row = {"policy_chosen_logps": rc + split * h, "policy_rejected_logps": rr - (1 - split) * h,
                   "reference_chosen_logps": rc, "reference_rejected_logps": rr}
            if card.accept(row, p):
                break
        rows.append(row)
    rows += [card.sample(rng, p) for _ in range(2)]
    args = [np.array([r[n] for r in rows]) for n in PAIR]
    terms = [Term({n: (k, (i,)) for k, n in enumerate(PAIR)}, 1 / len(rows)) for i in range(len(rows))]
    return BatchSpec(label, make_module, args, PAIR, [0, 1, 2, 3], terms)


__all__ = ["BETA", "CHOSEN_LENGTH", "EPSILON", "REJECTED_LENGTH", "WithLengths", "length_terms", "GRADIENT_IN_H", "MARGIN", "MARGIN_AXIS", "PAIR", "PairwiseType", "RHO_C", "RHO_R", "SPLIT_AXIS",
           "in_margin", "in_rhos", "side_facts", "split_minimum", "margin", "margin_batch", "margin_slope", "rho_c", "rho_r"]
