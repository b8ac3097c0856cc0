"""Write the teaching notebooks (committed without outputs). Run: python notebooks/make_notebooks.py

Each notebook: the lesson in words, the sympy derivation rendered, a verification cell on the
production class, the explorer, the lesson figure, and exercises whose answers a cell checks.
All logic lives in lossviz; the cells only call it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """import lossviz
from IPython.display import Math, display
from lossviz.plots import figure
from lossviz.teaching import bisect, check, show"""


def derivation(name, variable, **params):
    """A cell that derives an entry with sympy and renders its loss, one gradient and its facts."""
    args = "".join(f", {k}={v!r}" for k, v in params.items())
    return "\n".join([
        f"d = lossviz.derive({name!r}{args})",
        'display(Math(r"\\mathcal{L} = " + d.loss_latex))',
        f"symbol = d.card.variable_latex.get({variable!r}, {variable!r})",
        f'display(Math(r"\\frac{{\\partial \\mathcal{{L}}}}{{\\partial " + symbol + "}} = " + d.gradient_latex[{variable!r}]))',
        "for fact in d.facts:",
        '    print(f"{fact.name:<28} {fact.value}    # {fact.doc}")',
    ])


def verification(*names):
    return f"""report = lossviz.verify({list(names)!r}, device="cpu", dtype="float64")
print(report.table())
assert report.ok"""


NOTEBOOKS = {
    "00_basics": [
        new_markdown_cell("""# 00 · The three curves behind every loss here

Almost every loss in post-training is built from the sigmoid. Three curves are worth knowing by heart:
σ(x), the loss −log σ(x), and its derivative σ(x) − 1 = −σ(−x).

The derivative tells the whole story. When x is very negative (the model is badly wrong), the push is
close to −1, its largest. When x is large (already right), the push fades to 0. Every DPO, reward-model
and PRM loss below is this curve with a different x."""),
        new_code_cell(SETUP),
        new_markdown_cell("## The derivation, by sympy"),
        new_code_cell(derivation("basics", "x")),
        new_markdown_cell("## The production code has that gradient"),
        new_code_cell(verification("basics")),
        new_markdown_cell("## Explore, and the lesson figure"),
        new_code_cell('lossviz.explore("basics")'),
        new_code_cell('show(figure("basics"))'),
        new_markdown_cell("""## Exercises

1. At which x is the push exactly −1/2? Find it numerically from the card's gradient.
2. How large can the push get? Evaluate the gradient far to the left."""),
        new_code_cell("""grad = lambda x: d.evaluate({"x": x}, "x")
answer_1 = bisect(lambda x: grad(x) + 0.5, -10, 10)
answer_2 = grad(-50.0)"""),
        new_code_cell("""check(answer_1, 0.0, what="x where the push is -1/2")
check(answer_2, d.fact("gradient_limit_neg_inf").value, tolerance=1e-9, what="the push far to the left")"""),
    ],
    "01_sft_and_distillation": [
        new_markdown_cell("""# 01 · SFT and distillation

**GPTLMLoss** is next-token cross-entropy. Position t predicts the token at t+1; prompt tokens carry
the label −100 and contribute nothing. For each counted token the gradient on the logits is
softmax − one-hot.

**KDLoss** is cross-entropy to the teacher's soft labels. Since KL(q‖p) = CE(q, p) − H(q) and the
teacher entropy H(q) does not depend on the student, minimising this cross-entropy minimises the KL.
The gradient is p_student − q_teacher. In training it is often mixed with the hard-label loss:
α·lm_loss + β·kd_loss."""),
        new_code_cell(SETUP),
        new_code_cell(derivation("gptlm", "logits_0")),
        new_code_cell(derivation("kd", "logits_0")),
        new_code_cell(verification("gptlm", "kd")),
        new_code_cell('lossviz.explore(["gptlm", "kd"])'),
        new_code_cell('show(figure("kd"))'),
        new_markdown_cell("""## Exercises

1. For logits z = (2, 0, −1) and target 0, compute ∂L/∂z₀ by hand (softmax − one-hot) and compare
   with autograd of the production `GPTLMLoss`.
2. Check KL = CE − H(q) numerically: compute the teacher entropy and subtract it from `KDLoss`."""),
        new_code_cell("""import math, torch
from lossviz.losses import GPTLMLoss, KDLoss
z = [2.0, 0.0, -1.0]
p0 = math.exp(z[0]) / sum(math.exp(v) for v in z)
answer_1 = p0 - 1.0
logits = torch.tensor([[z, [0.0, 0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
GPTLMLoss()(logits, torch.tensor([[-100, 0]])).backward()
autograd_1 = logits.grad[0, 0, 0].item()

student = torch.tensor([[[0.5, -1.0, 2.0]]], dtype=torch.float64)
teacher = torch.tensor([[[1.0, 0.0, -1.0]]], dtype=torch.float64)
q, logp = teacher.softmax(-1), student.log_softmax(-1)
entropy = -(q * q.log()).sum().item()
answer_2 = KDLoss()(student, teacher, torch.zeros(1, 1, dtype=torch.long)).item() - entropy
kl = (q * (q.log() - logp)).sum().item()"""),
        new_code_cell("""check(answer_1, autograd_1, tolerance=1e-12, what="dL/dz0 by hand")
check(answer_2, kl, tolerance=1e-12, what="KDLoss - H(q)")"""),
    ],
    "02_dpo_cdpo_ipo": [
        new_markdown_cell("""# 02 · DPO, cDPO and IPO

DPO turns a preference pair into a loss on the implicit-reward margin
h = (π_c − π_r) − (π_c,ref − π_r,ref): L = −log σ(βh). The push on the chosen log-prob is β·σ(−βh)
(DPO paper, Eq. 7). It is largest when the pair is ranked wrongly (h ≪ 0) and fades once the pair is
ranked right. Nothing stops the margin from growing without bound, and it can grow even while both
rewards fall.

**cDPO** (label smoothing ε) assumes each label is flipped with probability ε. The loss then has a
finite minimum at βh* = log((1−ε)/ε), so the model stops pushing. **IPO** regresses the margin onto a
target instead: (h − 1/(2β))²."""),
        new_code_cell(SETUP),
        new_code_cell(derivation("dpo", "policy_chosen_logps")),
        new_code_cell(derivation("cdpo", "policy_chosen_logps")),
        new_code_cell(derivation("ipo", "policy_chosen_logps")),
        new_code_cell(verification("dpo", "cdpo", "ipo")),
        new_code_cell('explorers = lossviz.explore(["dpo", "cdpo", "ipo"])\nexplorers'),
        new_code_cell('show(figure("cdpo", sweep=("label_smoothing", [0.0, 0.1, 0.3]), beta=0.1))'),
        new_markdown_cell("""## Exercises

1. Find the margin where the cDPO gradient vanishes for β = 0.1, ε = 0.1 (numerically, from the card).
2. Where is the IPO target for β = 0.5?
3. What is DPO's gradient weight at h = 0 for β = 0.3?"""),
        new_code_cell("""c = lossviz.derive("cdpo", beta=0.1, label_smoothing=0.1)
at = lambda h: {"policy_chosen_logps": h, "policy_rejected_logps": 0.0, "reference_chosen_logps": 0.0, "reference_rejected_logps": 0.0}
answer_1 = bisect(lambda h: c.evaluate(at(h), "policy_chosen_logps"), -100, 100)
i = lossviz.derive("ipo", beta=0.5)
answer_2 = bisect(lambda h: i.evaluate(at(h), "policy_chosen_logps"), -10, 10)
answer_3 = -lossviz.derive("dpo", beta=0.3).evaluate(at(0.0), "policy_chosen_logps")"""),
        new_code_cell("""import math
check(answer_1, c.fact("minimum").value, what="the cDPO minimum h*")
check(answer_1, math.log(9) / 0.1, what="h* against log((1-ε)/ε)/β")
check(answer_2, i.fact("target").value, what="the IPO target")
check(answer_3, 0.3 / 2, tolerance=1e-12, what="the DPO weight at h = 0")"""),
    ],
    "03_kto": [
        new_markdown_cell("""# 03 · KTO

KTO needs no pairs. Each example has a label, desirable or undesirable, and its own loss around a
reference point z: w_D(1 − σ(β(Δ − z))) or w_U(1 − σ(β(z − Δ))), with Δ = π − π_ref.

The reference point is the KL estimate of the batch: a mean over mismatched prompt/response pairs,
averaged over devices, detached (no gradient flows through it) and clamped at 0. Unlike DPO's, the
gradient is bell-shaped. It is largest at Δ = z and vanishes on both sides, because the loss
saturates.

**Vanilla KTO** (balanced sampling) concatenates the chosen and rejected losses instead of subtracting
them. The two sides do not interact through a margin."""),
        new_code_cell(SETUP),
        new_code_cell(derivation("kto", "policy_chosen_logps")),
        new_code_cell(derivation("vanilla-kto", "policy_chosen_logps")),
        new_code_cell(verification("kto", "vanilla-kto")),
        new_code_cell('lossviz.explore("kto")'),
        new_code_cell('show(figure("kto"))\n'),
        new_code_cell('show(figure("vanilla-kto"))'),
        new_markdown_cell("""## Exercises

1. With β = 0.1 and the reference point at z = 2, where is the desirable arm's gradient largest?
2. What is that largest gradient (w_D = 1)?"""),
        new_code_cell("""k = lossviz.derive("kto", symbolic=False)
at = lambda delta: {"policy_chosen_logps": delta, "reference_chosen_logps": 0.0, "policy_KL_logps": 2.0, "reference_KL_logps": 0.0}
g = lambda delta: k.evaluate(at(delta), "policy_chosen_logps")
h = 1e-4
answer_1 = bisect(lambda x: (g(x + h) - g(x - h)) / (2 * h), -20, 30)  # where the slope of the gradient is 0
answer_2 = g(answer_1)"""),
        new_code_cell("""import sympy as sp
check(answer_1, k.fact("gradient_peak").value.subs(sp.Symbol("z_ref", real=True), 2.0), tolerance=1e-4, what="the peak of the bell")
check(answer_2, k.fact("gradient_peak_value").value, tolerance=1e-6, what="the gradient at its peak (-wβ/4)")"""),
    ],
    "04_ppo_policy_and_value": [
        new_markdown_cell("""# 04 · PPO: the clipped policy loss and the clipped value loss

The policy loss is −min(rA, clip(r, 1−ε, 1+ε)·A), with the ratio r = π/π_old. Once r leaves the trust
region in the direction the advantage favours, the clipped term wins and the gradient is exactly zero.
For A > 0 that happens past 1+ε, for A < 0 below 1−ε.

The value loss takes the **max** of the clipped and unclipped squared errors, which is pessimistic.
Why max and not min? The clip should bind only when it makes the loss *larger*. If the new value has
moved past the clip edge towards the return R, the clipped error is the larger one and is constant,
so there is no gradient: the critic gets no credit for jumping beyond its trust region. With min, the
unclipped error would win there and keep pulling."""),
        new_code_cell(SETUP),
        new_code_cell(derivation("ppo-policy", "log_probs", clip_eps=0.2)),
        new_code_cell(derivation("ppo-value", "values", clip_eps=0.2)),
        new_code_cell(verification("ppo-policy", "ppo-value")),
        new_code_cell('lossviz.explore(["ppo-policy", "ppo-value"])'),
        new_code_cell('show(figure("ppo-policy", clip_eps=0.2))'),
        new_code_cell('show(figure("ppo-value", clip_eps=0.2))'),
        new_markdown_cell("""## Exercises

1. For A = +1 and ε = 0.2, from which ratio on is the policy gradient zero? (Scan the card's gradient.)
2. For v_old = 0, R = 1 and ε = 0.2, where does the value loss's flat zone end?"""),
        new_code_cell("""import numpy as np
p = lossviz.derive("ppo-policy", clip_eps=0.2)
rs = np.linspace(0.5, 2.0, 150001)
grads = p.evaluate({"log_probs": np.log(rs), "old_log_probs": 0 * rs, "advantages": 1 + 0 * rs}, "log_probs")
answer_1 = rs[np.argmax(grads == 0)]
v = lossviz.derive("ppo-value", clip_eps=0.2)
vs = np.linspace(0.25, 3.0, 275001)
gv = v.evaluate({"values": vs, "old_values": 0 * vs, "returns": 1 + 0 * vs}, "values")
answer_2 = vs[np.argmax(gv != 0)]"""),
        new_code_cell("""import sympy as sp
zone = p.fact("zero_gradient_ratios_A_positive").value
check(answer_1, zone.start, tolerance=1e-4, what="the first clipped ratio")
flat = v.fact("flat_zone_above").value.subs({sp.Symbol("old_values", real=True): 0, sp.Symbol("returns", real=True): 1})
check(answer_2, flat.end, tolerance=1e-4, what="the end of the flat zone (2R - v_old - ε)")"""),
    ],
    "05_reward_models": [
        new_markdown_cell("""# 05 · Reward models: pairwise and log-exp

The pairwise (Bradley–Terry) loss is −log σ(r_c − r_r − m): the basics curve applied to the reward gap.
The margin m moves the point where the gradient fades. A gap of about 2 that no longer trains now
trains until about 2 + m. Constants inside the log-sigmoid decide where training stops pushing.

`LogExpLoss` is the same function written as log(1 + e^{r_r − r_c}). Mathematically they are equal;
numerically they are not. The naive form overflows in float32 once the gap passes about 88.7. lossviz
evaluates both stably."""),
        new_code_cell(SETUP),
        new_code_cell(derivation("pairwise", "chosen_reward")),
        new_code_cell(derivation("logexp", "chosen_reward")),
        new_code_cell(verification("pairwise", "logexp")),
        new_code_cell('lossviz.explore(["pairwise", "logexp"])'),
        new_code_cell('show(figure("pairwise", sweep=("margin", [0.0, 1.0, 2.0])))'),
        new_code_cell("""from lossviz.plots import request
from lossviz.plots.lessons import logexp_overflow
show(logexp_overflow(request("logexp")))"""),
        new_markdown_cell("""## Exercises

1. With margin m = 2, at which gap has the gradient fallen to 1/10 of its maximum?
2. From which (negative) gap on does the naive float32 log(1 + e^{−Δ}) return inf?"""),
        new_code_cell("""import numpy as np
r = lossviz.derive("pairwise", margin=2.0)
answer_1 = bisect(lambda gap: -r.evaluate({"chosen_reward": gap, "reject_reward": 0.0}, "chosen_reward") - 0.1, -10, 20)
gaps = -np.arange(0, 120, 0.01, dtype=np.float32)
with np.errstate(over="ignore"):
    naive = np.log(np.float32(1) + np.exp(-gaps))
answer_2 = float(gaps[np.argmax(np.isinf(naive))])"""),
        new_code_cell("""check(answer_1, r.fact("fade_point").value, what="the fade point m + log 9")
check(answer_2, -np.log(np.finfo(np.float32).max), tolerance=1e-3, what="the float32 overflow gap")"""),
    ],
    "06_process_reward_model": [
        new_markdown_cell("""# 06 · The process reward model

A PRM scores each reasoning step. The data put a placeholder token (here "ки") after every step; the
labels carry the step's label token ("+" or "−") at those positions and −100 everywhere else. Only
placeholder positions count. With the logits restricted to the two reward tokens, the softmax has
two entries, which is a logistic loss on d = z₊ − z₋. A soft label p targets [p, 1 − p] and is
optimal at d* = log(p/(1 − p)).

One pitfall is silent. If the tokenizer merges the placeholder with its neighbours (a BPE merge of
"ки" with the newline, a known issue with Qwen tokenizers), the placeholder's token id no longer
appears. Those steps simply drop out of the loss."""),
        new_code_cell(SETUP),
        new_code_cell(derivation("prm", "logits_0")),
        new_code_cell(verification("prm")),
        new_code_cell('lossviz.explore("prm")'),
        new_code_cell('show(figure("prm"))'),
        new_markdown_cell("""## A tokenised example

A tiny BPE tokenizer is trained on the notebook's own text, so nothing is downloaded. Without
protecting the placeholder, a merge swallows it. Protected as a special token, every step survives."""),
        new_code_cell("""from lossviz.teaching import TinyBPE
steps = ["Step 1: 2 + 3 = 5", "Step 2: 5 * 4 = 20", "Step 3: 20 - 1 = 18"]
text = "".join(s + " ки\\n" for s in steps)
corpus = text * 20
naive = TinyBPE.train(corpus, merges=8)
safe = TinyBPE.train(corpus, merges=8, specials=["ки"])
print("naive tokens:    ", naive.tokenize(text)[:16], "...")
print("protected tokens:", safe.tokenize(text)[:16], "...")
print("placeholders found:", naive.tokenize(text).count("ки"), "(naive) vs", safe.tokenize(text).count("ки"), "(protected)")"""),
        new_code_cell("""import torch
from lossviz.losses import PRMLoss
ids = safe.encode(text)
placeholder = safe.vocab["ки"]
inputs = torch.tensor([ids])
labels = torch.full_like(inputs, -100)
plus, minus = safe.vocab["+"] if "+" in safe.vocab else 0, safe.vocab["-"]
labels[inputs == placeholder] = plus
logits = torch.randn(1, len(ids), len(safe.vocab), dtype=torch.float64)
loss, acc = PRMLoss(placeholder, [plus, minus])(inputs, logits, labels, return_acc=True)
print(f"protected placeholder: {int((inputs == placeholder).sum())} steps counted, loss {loss.item():.4f}")
naive_ids = torch.tensor([naive.encode(text)])
try:
    PRMLoss(naive.vocab.get("ки", -1) if "ки" in naive.vocab else 10**6, [0, 1])(naive_ids, torch.zeros(1, naive_ids.shape[1], len(naive.vocab)), torch.full_like(naive_ids, -100))
except ValueError as err:
    print("naive tokenizer:", err)"""),
        new_markdown_cell("""## Exercises

1. For a soft label p = 0.8, at which logit difference d is the loss smallest?
2. How many of the three steps does the protected tokenizer keep?"""),
        new_code_cell("""prm = lossviz.derive("prm", p=0.8)
answer_1 = bisect(lambda dd: prm.evaluate({"logits_0": dd, "logits_1": 0.0}, "logits_0"), -10, 10)
answer_2 = int((inputs == placeholder).sum())"""),
        new_code_cell("""import math
check(answer_1, prm.fact("optimum").value, what="the soft-label optimum")
check(answer_1, math.log(0.8 / 0.2), what="d* against log(p/(1-p))")
check(answer_2, len(steps), what="steps kept")"""),
    ],
}


def main():
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                                   "language_info": {"name": "python"}})
        nbformat.write(nb, HERE / f"{name}.ipynb")
    print(f"wrote {len(NOTEBOOKS)} notebooks to {HERE}")


if __name__ == "__main__":
    main()
