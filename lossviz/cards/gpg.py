r"""GPG: the policy gradient with no ratio and no clip, -A·log π per token (Chu et al. 2025).

The gradient of a token is :math:`-A\,\nabla\log\pi`: it never vanishes and never saturates, and
it does not depend on the old policy (REINFORCE with the group advantage).
"""

from __future__ import annotations

import sympy as sp

from ._common import sym, tensor
from ._rl import draw_point
from .base import Card, Example, Fact
from .batch import BatchSpec, Term, mask_rows, sample_rows
from .controls import Hold
from .figure import Axis, LessonFigure, Panel, Shot
from .ppo import POLICY_VARS


class GPG(Card):
    name = "gpg"
    aliases = ("reinforce",)
    family = "grpo"
    order = 8  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "GPG: -A log π"
    lesson = "-A·log π per token: the gradient -A never vanishes or saturates, with no old policy, ratio or clip"
    production = "lossviz.losses:PolicyLoss"
    variable_latex = {"log_probs": r"\log\pi", "old_log_probs": r"\log\pi_{\mathrm{old}}", "advantages": "A"}
    constants = ("old_log_probs", "advantages")
    references = ("gpg", "grpo")
    controls = (Hold("advantages", "A", -2.0, 2.0, "the advantage A"),)
    axis = Axis("x", {"log_probs": "x", "old_log_probs": 0, "advantages": 1}, (-3.0, 0.0), r"token log-probability $\log\pi$")
    figure = LessonFigure(
        panels=(Panel("loss", "loss", tag="A_positive", title="A = +1"),
                Panel("loss", "loss", tag="A_negative", title="A = -1", cut={"advantages": -1}),
                Panel("grad", r"$\partial\ell/\partial\log\pi$", tag="A_positive", style={"color": 1}),
                Panel("grad", r"$\partial\ell/\partial\log\pi$", tag="A_negative", style={"color": 1}, cut={"advantages": -1})),
        rows=2, size=(3.4, 2.3), label=r"$-A\log\pi$", title="the gradient -A is the same at every log π: no ratio, no clip")
    gallery = (Shot("gpg", "GPG: -A·log π; the gradient -A is the same at every log-probability"),)

    def variables(self, p):
        return POLICY_VARS

    def loss(self, p):
        return -sym("advantages") * sym("log_probs")

    def production_kwargs(self, p):
        return {"policy_loss_type": "gpg", "loss_agg_mode": "token-mean"}

    def facts(self, d):
        lp, old = sym("log_probs"), sym("old_log_probs")
        return [Fact("gradient", "∂ℓ/∂log π = -A, the same at every log π", lambda: sp.diff(d.loss, lp)),
                Fact("old_policy_gradient", "∂ℓ/∂log π_old = 0: the old policy does not enter", lambda: sp.diff(d.loss, old))]

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import PolicyLoss

        args = [tensor([[values[n]]], dtype, device) for n in POLICY_VARS]
        return Example(PolicyLoss(**self.production_kwargs(p)), args, {n: (i, (0, 0)) for i, n in enumerate(POLICY_VARS)})

    def sample(self, rng, p):
        return draw_point(rng, POLICY_VARS, lambda v: abs(v["advantages"]) > 0.05, scale=1.0)

    def batches(self, rng, p):
        return token_mean_batches(self, rng, p, lambda: self.production_kwargs(p))


def token_mean_batches(card, rng, p, kwargs):
    """(B, T) batches reduced by one token mean: advantages (B, T), then (B, 1) with a fully masked sequence."""
    import numpy as np

    from lossviz.losses import PolicyLoss

    specs = []
    for label, empty, per_seq in (("token-mean, advantages (B, T)", None, False), ("token-mean, advantages (B, 1), sequence 1 fully masked", 1, True)):
        rows, steps = 3, 5
        points = sample_rows(card, rng, p, rows * steps)
        lp, old, adv = (np.array([pt[n] for pt in points]).reshape(rows, steps) for n in POLICY_VARS)
        if per_seq:
            adv = adv[:, :1].copy()
        mask = mask_rows(rng, rows, steps)
        if empty is not None:
            mask[empty] = 0.0
        kept = [(b, t) for b in range(rows) for t in range(steps) if mask[b, t]]
        terms = [Term({"log_probs": (0, (b, t)), "old_log_probs": (1, (b, t)), "advantages": (2, (b, 0 if per_seq else t))},
                      1 / len(kept)) for b, t in kept]
        specs.append(BatchSpec(label, lambda device: PolicyLoss(**kwargs()), [lp, old, adv, mask],
                               list(POLICY_VARS) + ["action_mask"], [0, 1, 2], terms))
    return specs
