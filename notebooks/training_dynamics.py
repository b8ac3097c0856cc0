"""The cells of notebook 07, training dynamics (written to .ipynb by make_notebooks.py).

Each scenario: its claim and source (read from its declaration in lossviz.dynamics, so the
text cannot drift from the code), the run, the figure, and an exercise. Answers follow the
convention of make_notebooks.py: ``answer_N = ...  # what to compute`` and a later
``check("dyn-N", answer_N)``; the solutions are registered in lossviz/dynamics/exercises.py.
"""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_markdown_cell

REFS = "../docs/references.md"


def _scenario(name):
    from lossviz.dynamics import get

    return get(name)


def _about(name: str, heading: str) -> str:
    s = _scenario(name)
    return (f"## {heading}\n\n**Policy.** {s.policy}.  \n**Data.** {s.data}.  \n"
            f"**Losses.** {', '.join(s.default_losses)} (all: {', '.join(s.losses)}).\n\n"
            f"**Claim.** {s.claim}\n\n**Source.** {s.source} (see [the references]({REFS})).")


def cells() -> list:
    return [
        new_markdown_cell("""# 07 · Training dynamics: what the gradient does to a policy

The earlier notebooks show each loss as a curve in its own inputs. Here small policies are *trained*
with the production losses of `lossviz.losses`, and every step is recorded: the margin h (the
log-ratio margin of a pair), the log-probabilities of the chosen and rejected responses, and the
exact KL(π‖π_ref) (a sum over every response for the tabular and log-linear policies).

`lossviz.simulate(scenario, losses=..., steps=..., seed=..., **params)` returns the runs as numpy
arrays (`sim["ipo"]["margin"]`) and draws them with `sim.figure()`. The same runs are on the command
line: `lossviz simulate --list`, `lossviz simulate likelihood-displacement --ches -0.5`."""),
        new_code_cell("""import numpy as np

import lossviz
from lossviz.dynamics import scenarios
from lossviz.teaching import check, reveal, show

for s in scenarios():
    print(f"{s.name:<26} {s.title}")"""),

        new_markdown_cell(_about("deterministic-preferences", "1 · Deterministic preferences")),
        new_code_cell("""sim = lossviz.simulate("deterministic-preferences", beta=0.5, label_smoothing=0.1)
for loss, run in sim.runs.items():
    tail = run["margin"][-len(run["margin"]) // 10:]  # the last 10% of the steps
    print(f"{loss:<5} final margin {tail[-1]:8.4f}   rose over the last 10% by {tail[-1] - tail[0]:.2e}")
show(sim.figure())"""),
        new_markdown_cell("""**Exercise 1.** The run above used β = 0.5 and ε = 0.1. At β = 0.25 and ε = 0.2, at which margin h
does cDPO stop? Work it out from the loss, then compare with the run in the next cell."""),
        new_code_cell("""answer_1 = ...  # the margin h where cDPO's gradient vanishes at β = 0.25, ε = 0.2
print("cDPO's final margin at β = 0.25, ε = 0.2:",
      lossviz.simulate("deterministic-preferences", losses="cdpo", beta=0.25, label_smoothing=0.2)["cdpo"]["margin"][-1])
check("dyn-1", answer_1)"""),

        new_markdown_cell(_about("likelihood-displacement", "2 · Likelihood displacement")),
        new_code_cell("""from lossviz.dynamics.catalog import displacement_features

sim = lossviz.simulate("likelihood-displacement", ches=0.5)
print("features (rows: y_c, y_r, y_o):\\n", displacement_features(0.5, 1.0))
run = sim["dpo"]
print(f"log π(y_c): {run['logp_chosen'][0]:.3f} -> {run['logp_chosen'][-1]:.3f};  margin: {run['margin'][0]:.3f} -> {run['margin'][-1]:.3f}")
show(sim.figure())"""),
        new_markdown_cell("""**Exercise 2.** Take `ches = -0.5`: the features are φ_c = (1, 0), φ_r = (0.5, 1), φ_o = (−1.5, −1),
and the policy starts uniform (θ = 0). Predict the sign of the first step's change of log π(y_c)
(+1 or −1) from the features alone, then run it.

**Exercise 3.** At `ches = 0.5`, β = 0.5 and a learning rate η = 1e-3, what is the first step's change
of log π(y_c) to first order? Compare with the run below."""),
        new_code_cell("""answer_2 = ...  # +1 or -1: the sign of the first change of log π(y_c) at ches = -0.5
answer_3 = ...  # η·w·(φ_c − φ_r)·(φ_c − φ̄) at ches = 0.5, β = 0.5, η = 1e-3"""),
        new_code_cell("""first = lossviz.simulate("likelihood-displacement", ches=-0.5, steps=1)["dpo"]["logp_chosen"]
print("observed first change at ches = -0.5:", first[1] - first[0])
small = lossviz.simulate("likelihood-displacement", ches=0.5, lr=1e-3, steps=1)["dpo"]["logp_chosen"]
print("observed first change at ches = 0.5, lr = 1e-3:", small[1] - small[0])
check("dyn-2", answer_2)
check("dyn-3", answer_3)"""),
        new_code_cell("""# drag `ches` through 0 and watch log π(y_c) turn; the step slider scrubs the run without re-training
lossviz.explore_dynamics("likelihood-displacement")"""),

        new_markdown_cell(_about("beta-sweep", "3 · β is the KL strength")),
        new_code_cell("""sim = lossviz.simulate("beta-sweep")
for loss, run in sim.runs.items():
    print(loss, "final KL per β:", run["final_kl"].round(4))
show(sim.figure())"""),
        new_markdown_cell("""**Exercise 4.** What is IPO's final margin at β = 2? Check it against `sim["ipo"]["final_margin"]`
(the sweep's β values are in `sim["ipo"]["beta"]`)."""),
        new_code_cell("""answer_4 = ...  # IPO's final margin at β = 2
check("dyn-4", answer_4)"""),

        new_markdown_cell(_about("noisy-labels", "4 · Noisy labels")),
        new_code_cell("""sim = lossviz.simulate("noisy-labels", flip=0.2)
for loss, run in sim.runs.items():
    print(f"{loss:<5} weight on flipped pairs {run['weight_flipped'][-1]:.3f}, on clean pairs {run['weight_clean'][-1]:.3f}, "
          f"ranking accuracy {run['accuracy'][-1]:.3f}")
show(sim.figure())"""),
        new_markdown_cell("""**Exercise 5.** At β = 0.5, what is the largest gradient weight DPO can put on one pair, however
wrongly the policy ranks it?"""),
        new_code_cell("""answer_5 = ...  # the supremum of DPO's per-pair weight at β = 0.5
check("dyn-5", answer_5)"""),

        new_markdown_cell(_about("trust-region", "5 · PPO's trust region over several epochs")),
        new_code_cell("""sim = lossviz.simulate("trust-region")  # clip ε = 0.2, dual clip c = 1.5, 8 epochs
for loss, run in sim.runs.items():
    print(f"{loss:<13} largest |log r| after {len(sim.steps) - 1} epochs: {run['max_abs_log_ratio'][-1]:.3f}, "
          f"clip fraction {run['clip_fraction'][-1]:.3f}")
show(sim.figure())"""),
        new_markdown_cell("""Clipping keeps the ratios nearer 1 than no clipping does (compare the largest |log r| above). A few
tokens with A < 0 still end with r > c: the same token in the same state has A > 0 in other sequences, and
their pushes raise the shared logit. Plain clipping keeps pushing such a token down with a push of
size w·r·|A| (w is the token's share of the loss's mean), which grows with r; dual clip caps its loss
at w·c·|A| and stops pushing it. The series `max_push_negative` is the largest push on an A < 0
token in units of w·|A|, and `dual_clip_fraction` the fraction of tokens with A < 0 and r > c."""),
        new_code_cell("""c = sim.params["dual_clip"]
for loss in ("ppo", "ppo-dualclip"):
    run = sim[loss]
    print(f"{loss:<13} A < 0 tokens with r > c: {run['dual_clip_fraction'].max():.1%} at most; "
          f"largest push on an A < 0 token: {run['max_push_negative'].max():.2f} w·|A|; "
          f"largest log r among them at the end: {run['max_log_ratio_negative'][-1]:.2f} (log c = {np.log(c):.2f})")"""),
        new_markdown_cell("""Dual clip bounds the loss, not the ratio: the capped tokens are no longer pushed down, so in this run
the largest log r among the A < 0 tokens ends *higher* with dual clip than with plain clipping.

**Exercise 6.** After the last epoch, what fraction of the batch's tokens does PPO's clipped loss
no longer push (their gradient is exactly zero)? Read it from the run `sim["ppo"]`.

**Exercise 7.** One token has A < 0 and ratio r = 2.5 (ε = 0.2). In units of w·|A|, how hard does PPO
with dual clip c = 3 push its log π down? And with c = 2? (The push is −∂ℓ/∂log π; you can check your
answers with `lossviz.losses.PolicyLoss` and autograd.)"""),
        new_code_cell("""answer_6 = ...  # the zero-gradient fraction of the "ppo" run at the last epoch
answer_7 = ...  # the push on an A < 0 token at r = 2.5 with dual clip c = 3, in units of w·|A|
answer_8 = ...  # the same token with dual clip c = 2
check("dyn-6", answer_6)
check("dyn-7", answer_7)
check("dyn-8", answer_8)"""),
    ]
