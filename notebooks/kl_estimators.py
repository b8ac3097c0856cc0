"""The cells of notebook 09, KL estimators (written to .ipynb by make_notebooks.py).

The value of each estimator (an estimate of KL(π‖π_ref) from sampled tokens) against its gradient
as a loss term (exact sums over the actions of a tabular policy), placement in the reward or in the
loss, and the ``kl-estimators`` scenario. Answers follow the convention of make_notebooks.py; the
solutions are registered in lossviz/exercises.py.
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
            f"**Runs.** {', '.join(s.default_losses)} (all: {', '.join(s.losses)}).\n\n"
            f"**Claim.** {s.claim}\n\n**Source.** {s.source} (see [the references]({REFS})).")


def cells() -> list:
    return [
        new_markdown_cell(f"""# 09 · KL estimators: the value is not the gradient

RL fine-tuning keeps the policy π near a reference π_ref with a KL penalty. The trainer never sums over
the vocabulary: it has the log-probabilities of the sampled tokens only, and estimates the KL from them.

**Notation.** For a token y sampled from π, d = log π(y) − log π_ref(y). Then KL(π‖π_ref) = E_{{y∼π}}[d]
(the **reverse** KL, the one RLHF's objective holds) and KL(π_ref‖π) = E_{{y∼π_ref}}[−d] (the
**forward** KL). The estimators of `compute_approx_kl(log_probs, log_probs_base, kl_estimator)`
({ref("schulman2020", "Schulman 2020")}; verl's names in brackets):

| name | value k(d) | as a value | as a loss term: E_π[∇k] |
|---|---|---|---|
| `k1` | d | unbiased for KL(π‖π_ref), noisy, can be negative | E_π[∇ log π] = **0** |
| `k2` (`mse`) | d²/2 | biased, never negative | **∇KL(π‖π_ref)** |
| `k3` (`low_var_kl`) | e^{{−d}} − 1 + d | unbiased, never negative, low variance | **∇KL(π_ref‖π)** |
| `k1+`, `k3+` | value of k1 / k3 | as k1 / k3 | gradient of k2: ∇KL(π‖π_ref) |

The last column is the lesson of {ref("tangmunos2025", "Tang & Munos 2025")}: an estimator that is good
as a *value* is not automatically right as a *loss*, because the samples come from π and autograd does not
differentiate the sampling."""),
        new_code_cell("""import numpy as np
import torch

import lossviz
from lossviz.dynamics.catalog_rl import expected_kl_term_gradient, kl_gradients
from lossviz.losses import compute_approx_kl
from lossviz.teaching import check, reveal, show"""),

        new_markdown_cell("""## 1 · Values: estimating KL(π‖π_ref) from samples

A tabular policy over 4 tokens and its reference. 200 000 tokens are sampled from π, the production
`compute_approx_kl` gives one value per token, and their mean is the estimate."""),
        new_code_cell("""pi = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
ref = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
exact_reverse = float((pi * (pi / ref).log()).sum())
y = torch.multinomial(pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
print(f"exact KL(π‖π_ref) = {exact_reverse:.4f}")
for est in ("k1", "k2", "k3"):
    values = compute_approx_kl(pi.log()[y], ref.log()[y], kl_estimator=est)
    print(f"{est}: mean {values.mean().item():.4f}, std per token {values.std().item():.3f}, "
          f"share of negative values {(values < 0).double().mean().item():.2f}")"""),
        new_markdown_cell("""k1 and k3 are unbiased: their means agree with the exact KL up to sampling noise. k2 is not (its mean
is a different number), but it is never negative, and neither is k3. As *values* (numbers to log, or a
penalty subtracted from the reward) k3 is the best of the three here."""),

        new_markdown_cell("""## 2 · Gradients: the same estimators as loss terms

Add β·mean(k) to the loss and let autograd differentiate it. Autograd sees log π(y) for the sampled y
and differentiates only that; the sampling is not differentiated. So the expected gradient of the term is
Σ_y π(y)·∇_θ k(log π(y) − log π_ref(y)), with π(y) a constant weight. `expected_kl_term_gradient` computes
exactly that sum with the production `compute_approx_kl`; `kl_gradients` gives the two KL gradients of a
softmax policy in closed form."""),
        new_code_cell("""theta = pi.log().numpy()   # logits of π (a softmax of them is π)
ref_logits = ref.log().numpy()
reverse, forward = kl_gradients(theta, ref_logits)
print("∇KL(π‖π_ref):", reverse.round(4))
print("∇KL(π_ref‖π):", forward.round(4))
for est in ("k1", "k2", "k3", "k1+", "k3+"):
    print(f"E[∇{est}]:".ljust(14), expected_kl_term_gradient(est, theta, ref_logits).round(4))"""),
        new_markdown_cell("""k1's expected gradient is 0 on every logit: the term changes the loss's value but not, on average, its
gradient, because E_π[∇ log π] = ∇ Σ_y π(y) = 0. k2 and the straight-through k1+ and k3+ give the
gradient of the reverse KL; k3 gives the gradient of the *forward* KL. The unbiased value and the right
gradient are different properties.

The explorer below draws each estimator and its gradient in d = log π − log π_ref; its facts give the
expected gradient of the term on a 3-action tabular policy, derived by sympy. Pick `k1+` or `k3+`: the
explorer moves log π with the detached value held (at sg(log π) = 1, what autograd sees), so the curve is
k2's parabola shifted to take k1's or k3's value there, and the gradient on the right is k2's, d."""),
        new_code_cell("""lossviz.explore("kl-estimators")"""),

        new_markdown_cell("""## 3 · Placement: in the reward or in the loss

There are two places for the penalty. **In the reward** (InstructGPT, OpenRLHF's default): each token's
reward becomes r − β·k with k detached, and the policy-gradient loss −(r − β·k)·log π carries it. **In the
loss** (GRPO, verl's `use_kl_loss`): + β·k is added to the loss and differentiated.

k1 in the reward is the textbook objective: E_π[(r − β·d)·∇ log π] = ∇(E_π[r] − β·KL(π‖π_ref)), because
E_π[d·∇ log π] = ∇KL(π‖π_ref) (the score-function identity). The same k1 in the loss does nothing (section
2). The cell checks the identity on the policy above, summing over the tokens."""),
        new_code_cell("""logits = torch.tensor(theta, requires_grad=True)
log_p = torch.log_softmax(logits, dim=-1)
d = (log_p - ref.log()).detach()
# k1 in the reward, β = 1: the loss −E_π[(r − d)·log π] has the KL part E_π[d·log π] (π a constant weight)
(log_p.detach().exp() * d * log_p).sum().backward()
print("k1 in the reward:", logits.grad.numpy().round(4))
print("∇KL(π‖π_ref):    ", reverse.round(4))"""),

        new_markdown_cell(_about("kl-estimators", "4 · The estimators in training")),
        new_code_cell("""sim = lossviz.simulate("kl-estimators", losses="no-kl,k1,k2,k3,k1-in-reward")
for loss, run in sim.runs.items():
    print(f"{loss:<13} π(y*) at the end {run['p_rewarded'][-1]:.3f}, KL(π‖π_ref) {run['kl'][-1]:.3f}")
print(f"reverse-KL optimum {sim.extra['reverse_optimum'][0]:.3f}, forward-KL optimum {sim.extra['forward_optimum'][0]:.3f}")
show(sim.figure())"""),
        new_markdown_cell("""The k1 term leaves the run where the run without any KL term goes: all the mass on the rewarded
action. k2 and k1-in-the-reward stop at the reverse-KL optimum π_ref·e^{r/β}/Z; k3 stops elsewhere, at
the optimum of E[r] − β·KL(π_ref‖π), which here lets more mass onto y*. The right panel evaluates the
exact expected gradients of each term at the reverse-KL optimum: the k2 bars sit on ∇KL(π‖π_ref)
(circles), the k3 bars on ∇KL(π_ref‖π) (crosses), and k1 has none.

The same scenario runs from the command line: `lossviz simulate kl-estimators --beta 1 --losses k2,k3`."""),

        new_markdown_cell("""## Exercises

Replace each `...` by your answer (an expression is fine) and run the cell; the `check` lines say
whether it is right, with a hint if it is not. `reveal("<key>")` prints a solution.

1. What is the value of k3 at d = −1?
2. For π = (0.6, 0.4) and π_ref = (0.8, 0.2), what is the expected gradient of a k3 loss term on θ_0
   (the logit of the first token)?
3. And of a k2 loss term, on the same logit?
4. And of a k1 loss term, on any logit?
5. In the scenario (π_ref(y*) = 0.1, reward 1 on y* only), where does π(y*) stop with a k2 loss term at
   β = 1?
6. And with a k3 loss term at β = 1? (Check both with `lossviz.simulate("kl-estimators", beta=1)`.)"""),
        new_code_cell("""answer_1 = ...  # k3 at d = -1
answer_2 = ...  # E[∇k3] on θ_0 for π = (0.6, 0.4), π_ref = (0.8, 0.2)
answer_3 = ...  # E[∇k2] on θ_0, same π and π_ref
answer_4 = ...  # E[∇k1] on any logit
answer_5 = ...  # π(y*) where a k2 term stops at β = 1
answer_6 = ...  # π(y*) where a k3 term stops at β = 1"""),
        new_code_cell("""check("kl-1", answer_1)
check("kl-2", answer_2)
check("kl-3", answer_3)
check("kl-4", answer_4)
check("kl-5", answer_5)
check("kl-6", answer_6);"""),
    ]
