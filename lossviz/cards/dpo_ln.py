r"""LN-DPO (TRL ``loss_type="sigmoid_norm"``): DPO on the per-token log-ratios ρ/L."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, Sigmoid
from ._common import sym
from ._pairwise import (BETA, CHOSEN_LENGTH, PAIR, REJECTED_LENGTH, SPLIT_AXIS, PairwiseType, WithLengths, length_terms,
                        margin_batch, rho_c, rho_r)
from .base import Example, Fact
from .figure import Axis, LessonFigure, Mark, Panel

M = sp.Symbol("m", real=True)


def lengths_example(module, values, p, names, dtype=None, device=None):
    """A one-pair example whose module receives the card's lengths as keyword tensors."""
    from ._common import tensor

    args = [tensor([values[n]], dtype, device) for n in PAIR]
    args += [tensor([float(p[k])], dtype, device) for k in ("chosen_length", "rejected_length")[:len(names)]]
    return Example(WithLengths(module, names), args, {n: (i, (0,)) for i, n in enumerate(PAIR)})


def random_lengths(rng, count):
    import numpy as np

    return [rng.integers(1, 60, size=count).astype(np.float64) for _ in range(2)]


class DPOLN(PairwiseType):
    name = "dpo-ln"
    order = 10
    loss_type = "sigmoid_norm"
    references = ("simpo", "dpo")
    aliases = ("ln-dpo", "sigmoid-norm")
    title = "LN-DPO (length-normalised)"
    lesson = ("-log σ(β(ρ_c/L_c - ρ_r/L_r)): DPO on the per-token log-ratios, so a longer response does not "
              "make a larger margin; each token's gradient is divided by its response's length")
    params = (BETA, CHOSEN_LENGTH, REJECTED_LENGTH)
    # the summed margin h split evenly (ρ_c = h/2, ρ_r = -h/2): both lengths scale it, m = (h/2)(1/L_c + 1/L_r)
    axis = Axis("h", SPLIT_AXIS.cut, lambda p: (-16.0 / (p["beta"] * (1 / p["chosen_length"] + 1 / p["rejected_length"])),
                                                16.0 / (p["beta"] * (1 / p["chosen_length"] + 1 / p["rejected_length"]))), SPLIT_AXIS.label)
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\log\sigma(\beta(\rho_c/L_c - \rho_r/L_r))$"), Panel("grad", r"gradient $\partial\mathcal{L}/\partial h$")),
        title="DPO on the per-token margin m = ρ_c/L_c - ρ_r/L_r: longer responses stretch the curve in summed nats",
        marks=(Mark("gradient_at_zero", at=0.0, panel="grad", label="h = 0: {y:.3g}"),))

    def loss(self, p):
        return -LogSigmoid(p["beta"] * (rho_c() / p["chosen_length"] - rho_r() / p["rejected_length"]))

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "loss_type": self.loss_type}

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import DPOLoss

        return lengths_example(DPOLoss(**self.production_kwargs(p)), values, p, ("chosen_lengths", "rejected_lengths"), dtype, device)

    def batches(self, rng, p):
        from lossviz.losses import DPOLoss

        make = lambda device: WithLengths(DPOLoss(**self.production_kwargs(p)), ("chosen_lengths", "rejected_lengths"))
        spec = margin_batch(self, rng, p, make)
        return [length_terms(spec, random_lengths(rng, len(spec.terms)))]

    def facts(self, d):
        beta, lc, lr = d.p["beta"], d.p["chosen_length"], d.p["rejected_length"]
        k = sp.Symbol("k", positive=True)
        pc, pr, rc, rr = (sym(n) for n in PAIR)
        return [
            Fact("chosen_gradient_times_length", "L_c·∂L/∂π_c: -β σ(-β m), DPO's weight in the per-token margin m = ρ_c/L_c - ρ_r/L_r",
                 lambda: sp.simplify(lc * d.gradient["policy_chosen_logps"])),
            Fact("gradient_ratio", "(∂L/∂π_c)/(∂L/∂π_r) = -L_r/L_c: each response's gradient is divided by its own length",
                 lambda: sp.simplify(d.gradient["policy_chosen_logps"] / d.gradient["policy_rejected_logps"])),
            Fact("length_scaling", "L(k·ρ; k·L) - L(ρ; L): zero, a response k times longer with the same per-token log-ratio has the same loss",
                 lambda: sp.simplify(self.loss({"beta": beta, "chosen_length": k * lc, "rejected_length": k * lr}).subs(
                     {pc: k * (pc - rc) + rc, pr: k * (pr - rr) + rr}, simultaneous=True) - d.loss)),
            Fact("gradient_at_zero", "∂L/∂m at m = 0: -β/2", lambda: -beta * Sigmoid(0)),
            Fact("per_token_margin_of_split", "m along the even split ρ_c = h/2, ρ_r = -h/2: (h/2)(1/L_c + 1/L_r)",
                 lambda: sp.factor(((pc - rc) / lc - (pr - rr) / lr).subs({pc: M / 2 + rc, pr: -M / 2 + rr}))),
        ]
