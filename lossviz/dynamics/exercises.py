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


def _first_step_sign(ches: float) -> float:
    run = _simulate("likelihood-displacement", ches=ches, steps=1)["dpo"]
    return math.copysign(1.0, run["logp_chosen"][1] - run["logp_chosen"][0])


exercise(
    "dyn-1",
    lambda: math.log((1 - 0.1) / 0.1) / 0.5,
    hint="cDPO's gradient vanishes where (1−ε)·σ(−βh) = ε·σ(βh); solve for h at β = 0.5, ε = 0.1.",
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
    1.5,
    hint="For A < 0 the push on log π is w·r·|A| while the loss still pushes; dual clip stops pushing once r > c. "
    "What is the largest r it still pushes?",
    tolerance=1e-9,
    what="the largest push dual clip c = 1.5 gives an A < 0 token, in units of w·|A|",
)
