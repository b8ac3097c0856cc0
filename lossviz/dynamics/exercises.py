"""The exercises of notebook 07 (training dynamics), with their solutions kept out of the cells.

Importing this module registers them with :func:`lossviz.teaching.exercise`. Expected values
are lazy: closed forms where the lesson has one (the fixed points, the first-order step),
otherwise read from a seeded simulation (a sign, a clip fraction).
"""

from __future__ import annotations

import math

from ..teaching import exercise


def _simulate(name, **kwargs):
    from .engine import simulate

    return simulate(name, progress=False, **kwargs)


def _dual_clip_push(ratio: float, dual_clip: float) -> float:
    """−∂ℓ/∂log π of the production PolicyLoss for one token with A = −1 (so the push is in units of w·|A|, w = 1)."""
    import torch

    from ..losses import PolicyLoss

    log_probs = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    loss = PolicyLoss(clip_eps=0.2, dual_clip=dual_clip)(log_probs, torch.zeros(1, 1, dtype=torch.float64),
                                                          torch.full((1, 1), -1.0, dtype=torch.float64))
    loss.backward()
    return float(log_probs.grad[0, 0])  # ∂ℓ/∂log π = r·|A| while the loss still pushes the token down


def _first_step_sign(ches: float) -> float:
    run = _simulate("likelihood-displacement", ches=ches, steps=1)["dpo"]
    return math.copysign(1.0, run["logp_chosen"][1] - run["logp_chosen"][0])


exercise(
    "dyn-1",
    lambda: math.log((1 - 0.2) / 0.2) / 0.25,
    hint="cDPO's gradient vanishes where (1−ε)·σ(−βh) = ε·σ(βh); solve for h at β = 0.25, ε = 0.2.",
    tolerance=1e-4,
    what="the margin where cDPO stops",
)
exercise(
    "dyn-2",
    lambda: _first_step_sign(-0.5),
    hint="At θ = 0 the policy is uniform, so φ̄ is the mean of the three features; "
    "the sign of (φ_c − φ_r)·(φ_c − φ̄) is the sign of the change (answer +1 or −1).",
    tolerance=0.0,
    what="the sign of the first step's change of log π(y_c)",
)
exercise(
    "dyn-3",
    lambda: -1e-3 * (0.5 / 2) * 0.5,
    hint="η·w·(φ_c − φ_r)·(φ_c − φ̄) with η = 1e-3, w = β·σ(−β·0) = β/2, β = 0.5, and "
    "(φ_c − φ_r)·(φ_c − φ̄) = −CHES at the uniform reference.",
    tolerance=1e-3,
    what="the first-order change of log π(y_c) in one step",
)
exercise(
    "dyn-4",
    lambda: 1 / (2 * 2.0),
    hint="IPO regresses the margin on its target 1/(2β).",
    tolerance=1e-4,
    what="IPO's final margin at β = 2",
)
exercise(
    "dyn-5",
    0.5,
    hint="DPO's per-pair weight is β·σ(−βh); how large can σ be?",
    tolerance=1e-9,
    what="the largest gradient weight DPO can give a pair at β = 0.5",
)
exercise(
    "dyn-6",
    lambda: float(_simulate("trust-region")["ppo"]["zero_grad_fraction"][-1]),
    hint="Run lossviz.simulate(\"trust-region\") and read the series zero_grad_fraction of the run \"ppo\" at the last epoch.",
    tolerance=1e-9,
    what="the fraction of tokens PPO's clipped loss no longer pushes after 8 epochs",
)
exercise(
    "dyn-7",
    lambda: _dual_clip_push(2.5, 3.0),
    hint="For A < 0 and r > 1+ε the min picks the unclipped term r·A, whose push on log π is w·r·|A|; "
    "dual clip replaces the loss by the constant −c·A only once r > c. Is r = 2.5 past c = 3?",
    tolerance=1e-9,
    what="the push dual clip c = 3 gives an A < 0 token at r = 2.5, in units of w·|A|",
)
exercise(
    "dyn-8",
    lambda: _dual_clip_push(2.5, 2.0),
    hint="Past r = c the dual-clipped loss is the constant −c·A: what is the gradient of a constant?",
    tolerance=1e-9,
    what="the push dual clip c = 2 gives an A < 0 token at r = 2.5, in units of w·|A|",
)
