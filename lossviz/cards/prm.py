r"""PRM card: the loss at one placeholder position, restricted to the two reward tokens."""

from __future__ import annotations

import sympy as sp

from ..errors import arg
from ..symbolic import LogSigmoid, elementary
from ._common import once, solve_one, sym, tensor
from .base import Card, CardError, Example, Fact, Param
from .batch import BatchSpec, Term
from .controls import Labels
from .figure import Axis, CustomFigure, Mark, Shot

LOGITS = ("logits_0", "logits_1")  # the logits of the reward tokens (+, -) at the placeholder
PLACEHOLDER, REWARD_IDS, VOCAB = 3, [1, 2], 4
DIFF = sp.Symbol("d", real=True)  # z_+ - z_-


class PRM(Card):
    name = "prm"
    controls = (Labels("hard", "p", {"+ (p = 1)": 1.0, "− (p = 0)": 0.0}),)  # the explorer: with hard labels p is the label
    axis = Axis("d", {"logits_0": "d", "logits_1": 0}, (-8.0, 8.0), r"logit difference $d = z_+ - z_-$")
    figure = CustomFigure("lossviz.plots.custom:prm", marks=(Mark("optimum", label="optimum d*"),))  # the hard labels for reference and the token strip
    gallery = (Shot("prm", "PRM: 2 reward tokens make a logistic loss on d = z+ - z-; soft label p is optimal at log(p/(1-p)); only placeholders count"),)
    references = ("lightman2023", "mathshepherd")
    aliases = ("PRMLoss", "process-reward")
    family = "prm"
    title = "process reward model loss"
    lesson = "a 2-way softmax over the reward tokens = a logistic loss on d = z₊ - z₋; a soft label p is optimal at d* = log(p/(1-p))"
    production = "lossviz.losses:PRMLoss"
    params = (
        Param("labels", "soft", "which case: soft labels (p is a probability) or hard labels (p is 1 for '+', 0 for '-')", choices=("soft", "hard")),
        Param("p", 0.8, "probability that the step is correct (the first reward token)", "p", low=0.0, high=1.0),
    )
    cases_doc = "labels=soft|hard"
    variable_latex = {"logits_0": "z_{+}", "logits_1": "z_{-}"}

    def resolve_extra(self, values, given):
        if values["labels"] == "hard":
            if "p" not in given:
                values["p"] = 1.0
            elif values["p"] not in (0.0, 1.0):
                raise CardError(f"{arg('p')} must be 0 or 1 with {arg('labels')}=hard (the label '+' is 1, '-' is 0); got {values['p']:g}")
        return values

    def variables(self, p):
        return LOGITS

    def loss(self, p):
        d = sym("logits_0") - sym("logits_1")
        return -p["p"] * LogSigmoid(d) - (1 - p["p"]) * LogSigmoid(-d)

    def facts(self, d):
        slope = once(lambda: sp.simplify(sp.diff(d.loss.subs(sym("logits_0"), DIFF + sym("logits_1")), DIFF)))
        facts = [
            Fact("gradient_in_d", "∂ℓ/∂z₊ = -∂ℓ/∂z₋ as a function of d: σ(d) - p", slope),
            Fact("gradient_antisymmetry", "∂ℓ/∂z₊ + ∂ℓ/∂z₋: zero", lambda: sp.simplify(d.gradient["logits_0"] + d.gradient["logits_1"])),
        ]
        if d.params["labels"] == "soft":

            def optimum():
                found = solve_one(elementary(slope()), DIFF)
                return sp.oo if found is None else sp.simplify(found)

            facts.append(Fact("optimum", "the logit difference d* where the soft-label loss is minimal: log(p/(1-p))", optimum))
        return facts

    def example(self, values, p, dtype=None, device=None):
        import torch

        from lossviz.losses import PRMLoss

        logits = torch.zeros(1, 1, VOCAB, dtype=dtype or torch.float64, device=device)
        for k, n in enumerate(LOGITS):
            logits[0, 0, REWARD_IDS[k]] = values[n]
        inputs = torch.tensor([[PLACEHOLDER]], device=device)
        if p["labels"] == "soft":
            labels = tensor([[float(p["p"])]], dtype, device)
        else:
            labels = torch.tensor([[REWARD_IDS[0] if float(p["p"]) == 1.0 else REWARD_IDS[1]]], device=device)
        return Example(PRMLoss(PLACEHOLDER, REWARD_IDS), [inputs, logits, labels], {n: (1, (0, 0, REWARD_IDS[k])) for k, n in enumerate(LOGITS)})

    def sample(self, rng, p):
        return {n: float(rng.normal() * 2) for n in LOGITS}

    def batches(self, rng, p):
        """Soft and hard labels; a placeholder after every other token, one step labelled -100; soft labels 0, 0.5 and 1 included."""
        import numpy as np

        from lossviz.losses import PRMLoss

        rows, steps = 2, 6
        inputs = rng.integers(4, 9, size=(rows, steps))
        inputs[:, 1::2] = PLACEHOLDER
        logits = rng.normal(size=(rows, steps, VOCAB)) * 2
        steps_at = [(b, t) for b in range(rows) for t in range(steps) if inputs[b, t] == PLACEHOLDER]
        where = lambda b, t: {n: (1, (b, t, REWARD_IDS[k])) for k, n in enumerate(LOGITS)}
        soft = np.where(inputs == PLACEHOLDER, rng.uniform(0.05, 0.95, size=(rows, steps)), -100.0)
        hard = np.where(inputs == PLACEHOLDER, rng.choice(REWARD_IDS, size=(rows, steps)), -100)
        soft[steps_at[0]], soft[steps_at[1]], soft[steps_at[3]] = 0.5, 1.0, 0.0  # the tie and both ends of [0, 1]
        soft[steps_at[2]] = -100.0
        hard[steps_at[2]] = -100
        counted = [s for s in steps_at if s != steps_at[2]]
        make = lambda device: PRMLoss(PLACEHOLDER, REWARD_IDS)
        soft_terms = [Term(where(b, t), 1 / len(counted), {"labels": "soft"}, {"p": (2, (b, t))}) for b, t in counted]
        hard_terms = [Term(where(b, t), 1 / len(counted), {"labels": "hard"}, {"p": 1.0 if hard[b, t] == REWARD_IDS[0] else 0.0}) for b, t in counted]
        names = ["inputs", "logits", "labels"]
        return [
            BatchSpec("soft labels", make, [inputs, logits, soft], names, [1], soft_terms, symbolic=("p",)),
            BatchSpec("hard labels", make, [inputs, logits.copy(), hard], names, [1], hard_terms, symbolic=("p",)),
        ]

