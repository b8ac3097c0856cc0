r"""DAPO: PPO's token loss with clip-higher (ε_l = 0.2, ε_h = 0.28) and one token mean over the batch (Yu et al. 2025, §3.1 and §3.3).

Clip-higher widens the trust region upwards only: a token the advantage favours may grow to
(1 + ε_h)·π_old before its gradient stops, which lifts unlikely tokens (DAPO §3.1); the
token-level mean (``loss_agg_mode="token-mean"``) gives every token of the batch the weight
1/Σm, whatever the length of its answer (DAPO §3.3).
"""

from __future__ import annotations

import sympy as sp

from ._rl import agg_weights
from .base import Fact, Param
from .batch import BatchSpec, Term, mask_rows, sample_rows
from .controls import Hold, Window
from .figure import Shot
from .grpo import WORKED
from .ppo import POLICY_VARS, PPOPolicy


class DAPO(PPOPolicy):
    name = "dapo"
    aliases = ("clip-higher",)
    family = "grpo"
    order = 3  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "DAPO: clip-higher, token-mean"
    lesson = ("-min(rA, clip(r, 1-ε_l, 1+ε_h)A) with ε_h > ε_l: a favoured token may grow further before its gradient stops; "
              "one mean over all the tokens of the batch gives every token the same weight")
    params = (
        Param("clip_eps_low", 0.2, "lower half-width ε_l", r"\varepsilon_l", low=0.0, high=1.0, low_open=True, high_open=True),
        Param("clip_eps_high", 0.28, "upper half-width ε_h (clip-higher)", r"\varepsilon_h", low=0.0, high=10.0, low_open=True),
        Param("dual_clip", None, "dual-clip constant c > 1 bounding the loss for A < 0 (default: off)", "c", low=1.0, high=100.0,
              low_open=True, optional=True),
        Param("log_ratio_max", None, "clamp of the log-ratio before exp (default: 3/4 of log(finfo.max) of the input dtype)",
              r"x_{\max}", optional=True),
    )
    references = ("dapo", "ppo", "verl")
    controls = (Hold("advantages", "A", -2.0, 2.0, "the advantage A (its sign picks the side that is clipped)"),
                Window("clip_eps_low", 0.01, 0.9, 0.01), Window("clip_eps_high", 0.01, 2.0, 0.01),
                Window("dual_clip", 1.05, 5.0, 0.05, on=3.0))
    gallery = (Shot("dapo", "DAPO clip-higher: for A > 0 the gradient stops at 1+ε_h = 1.28, for A < 0 at 1-ε_l = 0.8"),)

    def production_kwargs(self, p):
        kw = {"clip_eps_low": float(p["clip_eps_low"]), "clip_eps_high": float(p["clip_eps_high"]), "loss_agg_mode": "token-mean"}
        for k in ("dual_clip", "log_ratio_max"):
            if p[k] is not None:
                kw[k] = float(p[k])
        return kw

    def facts(self, d):
        facts = super().facts(d)
        low, high = self.bounds(d.p)
        p_old = sp.Symbol("p_old", positive=True)
        worked = agg_weights("token-mean", WORKED, WORKED[1])
        facts += [
            Fact("largest_favoured_probability", "for A > 0: the largest new probability of a token with old probability p_old "
                 "that still gets a gradient (the upper clip edge, (1+ε_h)·p_old)",
                 lambda: sp.exp(sp.log(p_old) + sp.log(1 + high)).simplify()),
            Fact("worked_example_weight", "token-mean on the reference's worked example (answers of 10 and 100 tokens): "
                 "every token weighs 1/110", lambda: worked[0]),
            Fact("worked_example_ratio", "correct : wrong per token under token-mean", lambda: sp.simplify(worked[0] / worked[1])),
        ]
        return facts

    def batches(self, rng, p):
        """(B, T) batches reduced by one token mean, a fully masked sequence in the second, advantages (B, 1) in the first."""
        import numpy as np

        from lossviz.losses import PolicyLoss

        make = lambda device: PolicyLoss(**self.production_kwargs(p))
        specs = []
        for label, empty, per_seq in (("token-mean, advantages (B, 1)", None, True), ("token-mean, sequence 1 fully masked", 1, False)):
            rows, steps = 3, 5
            points = sample_rows(self, rng, p, rows * steps)
            lp, old, adv = (np.array([pt[n] for pt in points]).reshape(rows, steps) for n in POLICY_VARS)
            if per_seq:
                adv = adv[:, :1].copy()
            mask = mask_rows(rng, rows, steps)
            if empty is not None:
                mask[empty] = 0.0
            kept = [(b, t) for b in range(rows) for t in range(steps) if mask[b, t]]
            terms = [Term({"log_probs": (0, (b, t)), "old_log_probs": (1, (b, t)), "advantages": (2, (b, 0 if per_seq else t))},
                          1 / len(kept)) for b, t in kept]
            specs.append(BatchSpec(label, make, [lp, old, adv, mask], list(POLICY_VARS) + ["action_mask"], [0, 1, 2], terms))
        return specs
