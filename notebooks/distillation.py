"""The cells of notebook 11, distillation beyond KD (written to .ipynb by make_notebooks.py).

Forward vs reverse KL, GKD's generalised Jensen–Shannon family between them, and the temperature,
with the production ``GKDLoss`` and ``KDLoss`` on real batches. Answers follow the convention of
make_notebooks.py: ``answer_N = ...  # what to compute`` and a later ``check("gkd-N", answer_N)``;
the solutions are registered in lossviz/exercises.py.
"""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_markdown_cell

REFS = "../docs/references.md"


def cells() -> list:
    return [
        new_markdown_cell(f"""# 11 · Distillation: forward KL, reverse KL and the JSD family between them

**Notation.** At one position the student has logits z and the teacher logits t; with a temperature
τ, p_S = softmax(z/τ) and p_T = softmax(t/τ). Notebook 01's `KDLoss` minimises the cross-entropy to
the teacher, that is the **forward** KL(p_T‖p_S) = Σ_v p_T (log p_T − log p_S): every token the
teacher likes must get mass from the student (*mass-covering*). The **reverse** KL(p_S‖p_T) =
Σ_v p_S (log p_S − log p_T) only charges the student for mass where the teacher has little: it may
drop a teacher mode and sit on another (*mode-seeking*); on-policy distillation (MiniLLM, Gu et al.
2024) uses it.

**GKD** (Agarwal et al. 2024) interpolates with a mixture m = β p_T + (1 − β) p_S:
JSD_β = β KL(p_T‖m) + (1 − β) KL(p_S‖m). Its value tends to 0 at both ends (m → p_S, and the factor
β → 0), so `GKDLoss` computes β = 0 as the forward KL and β = 1 as the reverse KL exactly, as
TRL's `generalized_jsd_loss` does. The gradient in the student logits is p_S − p_T for the forward
KL, and p_S,k (log(p_S,k/p_T,k) − KL(p_S‖p_T)) for the reverse. Papers: the
[references]({REFS})."""),
        new_code_cell("""import math

import numpy as np
import torch

from lossviz.losses import GKDLoss, KDLoss
from lossviz.teaching import check, reveal, show"""),

        new_markdown_cell("""## 1 · The production class on a real batch

Two sequences of four positions over a vocabulary of six; label −100 marks positions that do not
count (prompt, padding). The loss is the mean over the counted positions. Below, `GKDLoss` at β = 0
and β = 1 against the two KLs written out, and the interior β against the mixture formula."""),
        new_code_cell("""torch.manual_seed(0)
student = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
teacher = torch.randn(2, 4, 6, dtype=torch.float64)
label = torch.tensor([[-100, 3, 1, 0], [2, 5, -100, -100]])
keep = label != -100

log_s, log_t = student.log_softmax(-1), teacher.log_softmax(-1)
forward_kl = (log_t.exp() * (log_t - log_s)).sum(-1)[keep].mean()
reverse_kl = (log_s.exp() * (log_s - log_t)).sum(-1)[keep].mean()


def jsd(beta):
    log_m = torch.logaddexp(log_t + math.log(beta), log_s + math.log(1 - beta))
    kl_t = (log_t.exp() * (log_t - log_m)).sum(-1)
    kl_s = (log_s.exp() * (log_s - log_m)).sum(-1)
    return (beta * kl_t + (1 - beta) * kl_s)[keep].mean()


def gkd(beta):
    return GKDLoss(beta=beta)(student, teacher, label).item()


print(f"β = 0:    GKDLoss {gkd(0.0):.12f}   forward KL {forward_kl.item():.12f}")
print(f"β = 1:    GKDLoss {gkd(1.0):.12f}   reverse KL {reverse_kl.item():.12f}")
print(f"β = 0.3:  GKDLoss {gkd(0.3):.12f}   mixture    {jsd(0.3).item():.12f}")
print(f"β = 1e-6: interior formula {jsd(1e-6).item():.3e}  (→ 0: why the ends are special-cased)")"""),
        new_markdown_cell("""The gradient of the forward KL is p_S − p_T at every counted position (divided by their number):"""),
        new_code_cell("""GKDLoss(beta=0.0)(student, teacher, label).backward()
expected = (log_s.exp() - log_t.exp()).detach() * keep.unsqueeze(-1) / keep.sum()
print("largest |autograd − (p_S − p_T)/N|:", (student.grad - expected).abs().max().item())
print("gradient at an ignored position:", student.grad[0, 0].abs().max().item())"""),

        new_markdown_cell("""## 2 · Mass-covering against mode-seeking, trained

A teacher with two modes over a vocabulary of 21 tokens (at tokens 5 and 15, the second weighted 0.8
against the first), and a student that can only make one bump: its logits are −(v − μ)²/(2s²) over
the token index v, with two parameters, the centre μ and the width s. Each GKD loss trains such a
student with Adam from the same start (μ = 12.5, s = 1: narrow, a little nearer the second mode). The
forward KL must cover both modes, so the student moves between them and widens; the reverse KL lets it
settle on the nearer mode and stay narrow."""),
        new_code_cell("""import math

import torch
from matplotlib.figure import Figure

from lossviz.losses import GKDLoss

V = torch.arange(21, dtype=torch.float64)
# modes at 5 and 15, the second with weight 0.8
teacher_logits = torch.logaddexp(-(V - 5) ** 2 / 2, -(V - 15) ** 2 / 2 + math.log(0.8)).reshape(1, 1, -1)
label = torch.zeros(1, 1, dtype=torch.long)


def train(beta, steps=300, lr=0.05):
    mu = torch.tensor(12.5, dtype=torch.float64, requires_grad=True)
    log_s = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)  # s = 1
    optimizer = torch.optim.Adam([mu, log_s], lr=lr)
    loss = GKDLoss(beta=beta)
    for _ in range(steps):
        logits = (-(V - mu) ** 2 / (2 * log_s.exp() ** 2)).reshape(1, 1, -1)
        value = loss(logits, teacher_logits, label)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return mu.item(), log_s.exp().item(), value.item()


results = {beta: train(beta) for beta in (0.0, 0.25, 0.5, 0.75, 1.0)}
for beta, (mu, s, value) in results.items():
    print(f"β = {beta:<4}  centre μ = {mu:6.2f}   width s = {s:5.2f}   final loss {value:.3f}")

fig = Figure(figsize=(9, 3.2))
ax = fig.subplots()
ax.bar(V, teacher_logits.softmax(-1).flatten(), color="0.8", label="teacher p_T")
for beta, style in ((0.0, "o-"), (0.5, "s--"), (1.0, "^-")):
    mu, s, _ = results[beta]
    probs = (-(V - mu) ** 2 / (2 * s**2)).softmax(-1)
    ax.plot(V, probs, style, markersize=4, label=f"student, β = {beta:g}")
ax.set_xlabel("token v")
ax.set_ylabel("probability")
ax.legend(frameon=False, loc="upper left")
fig.tight_layout()
show(fig)"""),
        new_markdown_cell("""Read the table top to bottom: the forward KL (β = 0) puts the bump between the modes and widens it
to cover both; as β grows, the mixture weighs the student's own view more, and from some β on the
student gives up the far mode and copies the near one. It found the *nearer* mode, not the heavier one.

**Exercise 1.** Suppose the reverse-KL student had copied the other mode instead: its logits exactly
−(v − 5)²/2. What would its reverse KL to the teacher be? Is that better or worse than where training
left it?

**Exercises 2 and 3.** For the distributions p = (0.7, 0.2, 0.1) (teacher) and q = (0.4, 0.4, 0.2)
(student), what is the forward KL(p‖q)? And the reverse KL(q‖p)?

**Exercise 4.** And GKD's JSD at β = 0.5 for the same pair?"""),
        new_code_cell("""answer_1 = ...  # KL(p_S‖p_T) of a student sitting exactly on the mode at token 5
answer_2 = ...  # forward KL(p‖q)
answer_3 = ...  # reverse KL(q‖p)
answer_4 = ...  # JSD at β = 0.5
check("gkd-1", answer_1)
check("gkd-2", answer_2)
check("gkd-3", answer_3)
check("gkd-4", answer_4);"""),

        new_markdown_cell("""## 3 · Temperature

Dividing both logits by τ > 1 softens the distributions, so the small probabilities of the teacher
("dark knowledge", Hinton et al. 2015) weigh more. The gradient of KL(p_T^τ‖p_S^τ) in the student logits
is (p_S^τ − p_T^τ)/τ, and for large τ, p^τ − q^τ itself shrinks like 1/τ: the gradient falls like
1/τ². `KDLoss(temperature=τ)` multiplies by τ² to keep its scale (Hinton et al., §2); `GKDLoss`, like
TRL's GKD, does not. One position, the gradient's size at several τ:"""),
        new_code_cell("""z = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]], dtype=torch.float64)
t = torch.tensor([[[0.0, 2.0, 1.0, -2.0]]], dtype=torch.float64)
one = torch.zeros(1, 1, dtype=torch.long)
for tau in (1.0, 2.0, 4.0, 8.0):
    sizes = []
    for module in (KDLoss(temperature=tau), GKDLoss(beta=0.0, temperature=tau)):
        zz = z.clone().requires_grad_(True)
        module(zz, t, one).backward()
        sizes.append(zz.grad.norm().item())
    print(f"τ = {tau:<4} |∂/∂z|: KDLoss (τ² · cross-entropy) {sizes[0]:.4f}"
          f"    GKDLoss β = 0 (KL, no τ²) {sizes[1]:.5f}")"""),
        new_markdown_cell("""**Exercise 5.** `KDLoss(temperature=τ)` is τ² times the cross-entropy of the softened distributions. At
τ = 3, what is the ratio of its gradient to the gradient of `GKDLoss(beta=0, temperature=3)` on the same
input? (Cross-entropy and forward KL differ by the teacher entropy, which has no student gradient.)"""),
        new_code_cell("""answer_5 = ...  # KDLoss's gradient / GKDLoss's gradient at τ = 3
check("gkd-5", answer_5);"""),
    ]
