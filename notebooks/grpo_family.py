"""The cells of notebook 08, the GRPO family (written to .ipynb by make_notebooks.py).

Ratio losses (PPO, GSPO, CISPO, SAPO, GMPO, GPG) on one batch through the production ``PolicyLoss``,
aggregation and the worked example of Dr. GRPO's length bias (weights from the production
``agg_loss``), group advantages, and the ``length-bias`` scenario. Answers follow the convention of
make_notebooks.py: ``answer_N = ...  # what to compute`` and a later ``check("<key>", answer_N)``;
the solutions are registered in lossviz/exercises.py.
"""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_markdown_cell

REFS = "../docs/references.md"


def ref(anchor: str, text: str) -> str:
    return f"[{text}]({REFS}#{anchor})"


def _about(name: str, heading: str) -> str:
    from lossviz.dynamics import get

    s = get(name)
    return (f"## {heading}\n\n**Policy.** {s.policy}.  \n**Data.** {s.data}.  \n"
            f"**Runs.** {', '.join(s.default_losses)} (each name is advantage estimator/aggregation mode).\n\n"
            f"**Claim.** {s.claim}\n\n**Source.** {s.source} (see [the references]({REFS})).")


def cells() -> list:
    return [
        new_markdown_cell(f"""# 08 · The GRPO family: ratio losses, aggregation, group advantages

Notebook 04 trained a policy with PPO's clipped loss and a learned value function. The losses of
2025–26 keep the per-token ratio and drop the value function: several answers are sampled for the
same prompt (a **group**), and each answer's advantage comes from the rewards of its group. Three
choices then make the members of the family differ, and this notebook takes them one at a time:

1. **the per-token loss**: how the ratio r_t = π(y_t)/π_old(y_t) and the advantage A enter
   (PPO's clip, GSPO's sequence ratio, CISPO's detached weight, SAPO's soft gate, GMPO's
   geometric mean, GPG's plain log-probability);
2. **the aggregation**: how the per-token losses of a batch of answers of different lengths
   are summed into one number (`loss_agg_mode`), which sets the weight of every token;
3. **the advantage estimator**: how a group's rewards become advantages (`group_advantages`).

**Notation.** A batch holds B answers; answer i has L_i tokens (the mask m marks them) and is padded
to length T. log r_t = log π(y_t) − log π_old(y_t). The **push** on a log-probability is minus the
loss's gradient, −∂L/∂log π(y_t), as in every notebook here: gradient descent moves log π(y_t) by the
learning rate times the push. Papers: {ref("grpo", "GRPO")}, {ref("dapo", "DAPO")}, {ref("drgrpo", "Dr. GRPO")},
{ref("gspo", "GSPO")}, {ref("cispo", "CISPO")}, {ref("sapo", "SAPO")}, {ref("gmpo", "GMPO")}, {ref("gpg", "GPG")}."""),
        new_code_cell("""import math

import numpy as np
import torch

import lossviz
from lossviz.losses import PolicyLoss, agg_loss, group_advantages
from lossviz.teaching import check, reveal, show"""),

        new_markdown_cell("""## 1 · The per-token losses

Every member is `PolicyLoss(policy_loss_type=...)`; with A the advantage of the token's answer:

| type | loss of one token (or one answer) | what it does to the push |
|---|---|---|
| `ppo` (GRPO, DAPO) | −min(r·A, clip(r, 1−ε_l, 1+ε_h)·A) | zero once r has left the trust region in the direction A favours |
| `gspo` | the same clip on the answer's ratio s_i = exp(mean_t log r_t), one value per answer | every token of an answer shares one ratio, so one clip decision |
| `cispo` | −sg(clip(r, 1−ε_l, 1+ε_h))·A·log π(y_t) | the ratio is only a detached weight: the push never vanishes, it is capped |
| `sapo` | −f(r)·A, f(r) = (4/τ)·σ(τ(r − 1)) | a smooth gate instead of a hard clip: f(1) = 2/τ, f′(1) = 1 |
| `gmpo` | the clip in log space, −A·exp(mean_t clip(log r_t)) per answer | a geometric mean of the token ratios |
| `gpg` | −A·log π(y_t) | plain REINFORCE: no ratio, no clip |

(sg is stop-gradient; τ = τ_pos for A > 0 and τ_neg for A < 0.) At r = 1, on-policy, every type pushes
log π(y_t) by the same amount: what differs is what happens once the policy has moved. The cell below
puts the same batch through each type (aggregated with the default `seq-mean-token-mean`; GSPO and GMPO
give one value per answer and accept only that mode) and prints each token's push in units of its
weight 1/(B·L_i), at a ratio of 1.1 on the first token and 3 on the last one of the first answer."""),
        new_code_cell("""# two answers of 3 and 2 tokens (the last position of the second is padding), one advantage each
mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
advantages = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)  # [B, 1]: one advantage per answer
old = torch.log(torch.tensor([[0.5, 0.4, 0.3], [0.6, 0.2, 0.9]], dtype=torch.float64))
log_ratio = torch.log(torch.tensor([[1.1, 1.0, 3.0], [1.1, 1.0, 1.0]], dtype=torch.float64))

share = mask.shape[0] * mask.sum(dim=1, keepdim=True)  # B·L_i: seq-mean-token-mean weighs each token 1/(B·L_i)
for kind in ("ppo", "gspo", "cispo", "sapo", "gmpo", "gpg"):
    logp = (old + log_ratio).requires_grad_(True)
    loss, metrics = PolicyLoss(policy_loss_type=kind)(logp, old, advantages, mask, return_metrics=True)
    loss.backward()
    push = (-logp.grad * share).masked_fill(mask == 0, float("nan")).numpy().round(3) + 0.0  # + 0.0: no "-0"
    print(f"{kind:<6} loss {loss.item():+.4f}  clip fraction {metrics['clip_fraction'].item():.2f}  push per token:",
          np.array2string(push).replace("\\n", ""))"""),
        new_markdown_cell("""Read the last token of the first answer (A = +1, r = 3): PPO's push is 0 (clipped: the policy has
already raised it past 1 + ε), CISPO still pushes it by the capped weight, SAPO by its fading gate.
GSPO decides per answer: the geometric mean of the first answer's ratios, (1.1·1·3)^{1/3} ≈ 1.49, is past
1 + ε, so none of its three tokens is pushed. GMPO clips each token's log-ratio before taking the geometric
mean: the token at r = 3 is clipped, the other two are still pushed. The padding position gets no push
from any of them.

The explorers below draw the loss and its gradient against one token's log-probability for GSPO, CISPO,
SAPO and GMPO: move the clip or τ, the advantage A, and (GSPO, GMPO) the other tokens' log-ratio, and
compare where each gradient stops, is capped, or fades."""),
        new_code_cell("""lossviz.explore(["gspo", "cispo", "sapo", "gmpo"])"""),

        new_markdown_cell(f"""## 2 · Aggregation: the weight of every token

Every `loss_agg_mode` is a weighted sum L = Σ_{{i,t}} w_{{i,t}}·ℓ_{{i,t}} of the per-token losses, and a token's
push is its weight times its own push. The weights ({ref("drgrpo", "Dr. GRPO §3.1")}, {ref("dapo", "DAPO §3.3")}):

| mode | w_{{i,t}} | used by |
|---|---|---|
| `seq-mean-token-mean` | 1/(B·L_i) | the GRPO paper, TRL `grpo`, OpenRLHF's default |
| `token-mean` | 1/Σ_j L_j | DAPO, TRL `dapo`, OpenRLHF `token_level_loss=True` |
| `seq-mean-token-sum` | 1/B | verl option |
| `seq-mean-token-sum-norm` | 1/(B·T), T a constant (the padded length) | Dr. GRPO, TRL `dr_grpo` |

The weights can be read off the production code itself: differentiate `agg_loss` with respect to the
per-token losses. The worked example of Dr. GRPO: one group, a correct answer of 10 tokens (A = +1) and
a wrong one of 100 tokens (A = −1)."""),
        new_code_cell("""lengths = (10, 100)
T = max(lengths)
mask = torch.tensor([[1.0] * L + [0.0] * (T - L) for L in lengths], dtype=torch.float64)
for mode in ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
    per_token = torch.ones(2, T, dtype=torch.float64, requires_grad=True)
    agg_loss(per_token, mask, mode).backward()
    w_correct, w_wrong = per_token.grad[0, 0].item(), per_token.grad[1, 0].item()
    print(f"{mode:<24} per token: correct 1/{1 / w_correct:.0f}, wrong 1/{1 / w_wrong:.0f} ({w_correct / w_wrong:.0f}:1);"
          f"  per answer: {10 * w_correct:.3f}, {100 * w_wrong:.3f}")"""),
        new_markdown_cell("""Under `seq-mean-token-mean` each answer counts once whatever its length, so each token of the long
wrong answer carries a tenth of the weight of a token of the short correct one: 10:1. Per token, a long
wrong answer is penalised less than a short one, and the gradient lengthens wrong answers. Under
`token-mean` and Dr. GRPO's constant normaliser every token weighs the same (1:1), and a whole answer
then weighs in proportion to its length. Section 4 trains a policy under each mode.

The explorer below puts the PPO token loss of a 1-token and a 2-token answer through each mode: pick
`loss_agg_mode` and read the weight of each token in its facts."""),
        new_code_cell("""lossviz.explore("grpo")"""),

        new_markdown_cell(f"""## 3 · Group advantages

For a group of G answers to one prompt with rewards R_1 … R_G, mean R̄ and sample standard deviation s:

| `method` | A_i | note |
|---|---|---|
| `grpo` | (R_i − R̄)/(s + ε) | {ref("grpo", "GRPO")}: a group whose rewards barely differ gets large advantages |
| `dr_grpo` | R_i − R̄ | {ref("drgrpo", "Dr. GRPO")} drops the std (the difficulty bias) |
| `rloo` | R_i − mean of the others = G/(G−1)·(R_i − R̄) | {ref("rloo", "RLOO")}: an unbiased baseline |
| `reinforce_baseline` | R_i − R̄, then whitened over the batch | {ref("reinforcepp", "REINFORCE++")} |

Two groups of 8 answers with 0/1 rewards: one prompt answered right 4 times, one only once."""),
        new_code_cell("""rewards = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
for method in ("grpo", "dr_grpo", "rloo", "reinforce_baseline"):
    adv = group_advantages(rewards, 8, method=method)
    print(f"{method:<19} right answers: {adv[0, 0].item():+.3f} (4 of 8), {adv[1, 0].item():+.3f} (1 of 8);  "
          f"sum per group: {adv.sum(dim=1).numpy().round(12) + 0.0}")  # + 0.0 turns -0 into 0"""),
        new_markdown_cell("""Every estimator sums to zero within a group (the whitened one over the batch). GRPO's std makes the
lone right answer of the hard prompt weigh more than twice as much as a right answer of the easy one;
Dr. GRPO keeps the raw differences, and RLOO scales them by G/(G − 1) = 8/7. None of them looks at the
lengths: the length bias of section 2 comes from the aggregation alone, as the next section shows."""),

        new_markdown_cell(_about("length-bias", "4 · Length bias, trained")),
        new_code_cell("""sim = lossviz.simulate("length-bias")
for loss, run in sim.runs.items():
    print(f"{loss:<32} wrong answers {run['length_wrong'][0]:.1f} -> {run['length_wrong'][-1]:.1f} tokens, "
          f"correct {run['length_correct'][0]:.1f} -> {run['length_correct'][-1]:.1f}")
show(sim.figure())"""),
        new_markdown_cell("""The right-hand panel is computed, not sampled: for each estimator and mode it sums over every length
an answer can have (and, for `token-mean`, over the total length of the rest of the batch) to get the
expected push that one batch gives the wrong answers' length logit. With a constant weight it is exactly
0 whatever the advantage, because the reward does not depend on the length and the mean of a score
function is zero. The dotted lines of the third panel are the pushes measured on the sampled batches,
averaged over 20 steps: they scatter around the exact curves."""),

        new_markdown_cell("""## Exercises

Replace each `...` by your answer (an expression is fine) and run the cell; the `check` lines say
whether it is right, with a hint if it is not. `reveal("<key>")` prints a solution.

1. One group of B = 2 answers: a correct one of 20 tokens and a wrong one of 60. Under
   `seq-mean-token-mean`, how many times the weight of a wrong answer's token does a correct answer's
   token carry?
2. And the weight of every token under `seq-mean-token-sum-norm`, with the padded length 60?
3. What is the GRPO advantage of the first answer of the group with rewards (1, 0, 0, 0, 1, 0)?
4. SAPO with τ = 1: how hard does it push log π of a token with A = +1 at r = 1.5?
5. In the length-bias scenario at its defaults, what is the exact expected push on the wrong answers'
   length logit with Dr. GRPO advantages under `seq-mean-token-mean`? (Not 0: the culprit is the mode.)"""),
        new_code_cell("""answer_1 = ...  # weight of a correct token / weight of a wrong token, seq-mean-token-mean
answer_2 = ...  # the weight of a token under seq-mean-token-sum-norm, B = 2, T = 60
answer_3 = ...  # GRPO advantage of the first answer of (1, 0, 0, 0, 1, 0)
answer_4 = ...  # SAPO's push on log π at r = 1.5, A = +1, τ = 1
answer_5 = ...  # the exact push at the start, advantage dr_grpo, mode seq-mean-token-mean"""),
        new_code_cell("""check("grpo-1", answer_1)
check("grpo-2", answer_2)
check("grpo-3", answer_3)
check("grpo-4", answer_4)
check("grpo-5", answer_5);"""),
    ]
