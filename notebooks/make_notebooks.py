"""Write the teaching notebooks (committed without outputs). Run: python notebooks/make_notebooks.py

Each notebook: the lesson and its notation in words, the sympy derivation rendered, how to read
the verification table and the table itself, the production class on a real batch, the
explorer, the lesson figure, and exercises. All logic lives in lossviz; the cells only call it.

The sections every notebook has are generated from the cards (``derivations``,
``verification_section``, ``explore_section``): the gradient shown is the one in the variable
the card's ``axis`` moves, and the lesson figure is drawn as the card's first gallery ``Shot``
draws it. The prose of each lesson is written here by hand.

Exercise convention (tests/test_notebooks.py relies on it):

- an answer cell holds one line per answer, exactly ``answer_N = ...  # what to compute``,
  possibly below lines of given code; the student replaces ``...`` by an expression;
- the matching ``check("<key>", answer_N)`` is in the same or a later cell; the expected
  values and hints are registered in ``lossviz/exercises.py`` (``reveal("<key>")`` prints a
  solution), so no answer sits in a cell;
- the tests run every notebook twice: as committed (each check prints "not answered yet"),
  and with each ``answer_N = ...`` line replaced by ``answer_N = solution("<key>")`` (each check
  prints "✓").

``notebooks/training_dynamics.py`` (when present) provides the cells of notebook 07 through
its ``cells()`` function.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
REFS = "../docs/references.md"

SETUP = """import lossviz
from IPython.display import Math, display
from lossviz.plots import figure
from lossviz.teaching import bisect, check, reveal, show"""


def ref(anchor: str, text: str) -> str:
    return f"[{text}]({REFS}#{anchor})"


def _card(name):
    from lossviz.registry import get

    return get(name)


def derivation(name, **params):
    """A cell that derives an entry with sympy and renders its loss, its facts, and the gradient in the
    variable its lesson figure moves (the card's ``axis``)."""
    card = _card(name)
    variable = card.axis.moving(card.resolve(params))
    args = "".join(f", {k}={v!r}" for k, v in params.items())
    return "\n".join([
        f"d = lossviz.derive({name!r}{args})",
        'display(Math(r"\\mathcal{L} = " + d.loss_latex))',
        f"symbol = d.card.variable_latex.get({variable!r}, {variable!r})",
        f'display(Math(r"\\frac{{\\partial \\mathcal{{L}}}}{{\\partial " + symbol + "}} = " + d.gradient_latex[{variable!r}]))',
        "for fact in d.facts:",
        '    print(f"{fact.name:<28} {fact.value}    # {fact.doc}")',
    ])


def verify_explained() -> str:
    """How to read the table of ``lossviz.verify``, with the tolerances it uses."""
    from lossviz import verification as v

    tolerances = ", ".join(f"{dtype} {tol:.0e}" for dtype, tol in v.TOLERANCES.items())
    samples = getattr(v, "SAMPLES", 0)
    drawn = (f" It runs at the default parameters and at {samples} more parameter sets drawn from the seed "
             "(listed under the table), on batches that reach every branch of the code." if samples else "")
    return f"""## Does the production code have that gradient?

`lossviz.verify` runs the production class (the one a training job imports from `lossviz.losses`)
forward and backward on seeded random batches, and compares with the card's sympy gradient
evaluated in float64 at the same inputs.{drawn} How to read the table:

- **points**: how many examples the batches held; **max abs err** and **max rel err**: the largest
  difference between production and the card, over the loss and every input gradient (relative: the
  loss to the summed size of its per-example terms, so terms that cancel are not held to their tiny
  sum; a gradient to the largest expected gradient of its batch); **tol**: the relative error allowed
  for the dtype ({tolerances});
- **fin.diff**: a check of autograd that needs no derivation at all: the loss is evaluated at the
  inputs moved by ±{v.FD_STEP:g} along a random direction, and the slope (central finite
  difference) must match autograd's directional derivative to {v.FD_TOLERANCE:g}, relative to the
  size of the derivative's terms and to at least 1e-3 of the loss (rounding the loss alone moves a
  difference quotient with this step by about 1e-10 of the loss);
- **gradcheck**: `torch.autograd.gradcheck`, the same idea input by input in float64
  (eps 1e-6, atol 1e-7, rtol 1e-5);
- **verdict**: pass when all of the above hold."""


def verification(*names):
    return f"""report = lossviz.verify({list(names)!r}, device="cpu", dtype="float64")
print(report.table())
assert report.ok"""


# --- the sections every notebook has, generated from the cards (the prose around them is hand-written)


def derivations(*names, **params):
    """One derivation cell per entry; each gets the parameters it has."""
    cells = []
    for name in names:
        own = {p.name for p in _card(name).params}
        cells.append(new_code_cell(derivation(name, **{k: v for k, v in params.items() if k in own})))
    return cells


def verification_section(*names):
    """How to read the verification table, then the table for the entries."""
    return [new_markdown_cell(verify_explained()), new_code_cell(verification(*names))]


def lesson_figure(name):
    """A cell showing the entry's lesson figure as its first gallery shot draws it (its parameters and sweep)."""
    card = _card(name)
    shot = card.gallery[0] if card.gallery else None
    args = ""
    if shot is not None and shot.sweep is not None:
        args += f", sweep=({shot.sweep[0]!r}, {list(shot.sweep[1])!r})"
    if shot is not None:
        args += "".join(f", {k}={v!r}" for k, v in shot.params.items())
    return new_code_cell(f"show(figure({name!r}{args}))".replace("'", "\""))


def explore_section(*names, figures=None):
    """The explorer of the entries and their lesson figures (``figures``: which of them; default all)."""
    shown = names if figures is None else figures
    target = repr(names[0]) if len(names) == 1 else repr(list(names))
    heading = "## Explore, and the lesson figure" + ("s" if len(shown) > 1 else "")
    return [new_markdown_cell(heading), new_code_cell(f"lossviz.explore({target})".replace("'", '"')),
            *[lesson_figure(n) for n in shown]]


EXERCISE_HOWTO = """Replace each `...` by your answer (an expression is fine) and run the cell; the next cell
checks it. Stuck? `reveal("<key>")` prints a solution."""

NOTEBOOKS = {
    "00_basics": [
        new_markdown_cell(f"""# 00 · The three curves behind every loss here

**Notation.** x is a real number; in later notebooks it is a margin (DPO's βh), a reward gap, or a
logit difference. σ(x) = 1/(1 + e^{{−x}}) is the sigmoid and ℓ(x) = −log σ(x) = log(1 + e^{{−x}}) is
the loss.

**Gradient and push.** The gradient is ∂ℓ/∂x = σ(x) − 1 = −σ(−x). In all these notebooks the
**push** on a variable is minus its gradient, −∂ℓ/∂x: the direction in which gradient descent moves
it, and (times the learning rate) how far. Here the push is σ(−x), positive everywhere, so training
always raises x. It is close to 1, its largest, when x ≪ 0 (the model is badly wrong) and fades to 0
as x grows (already right). Every DPO, reward-model and PRM loss below is this curve with a
different x. Papers cited in these notebooks are listed in the [references]({REFS})."""),
        new_code_cell(SETUP),
        new_markdown_cell("""## The derivation, by sympy

The card writes ℓ(x) in sympy; sympy differentiates it and finds the lesson's closed forms
(limits, identities). Each fact prints as its name, its value, and what it means."""),
        *derivations("basics"),
        *verification_section("basics"),
        new_markdown_cell("""## The production code on a real batch

The pairwise reward-model loss is this curve applied to reward gaps: `PairWiseLoss` returns the
mean of −log σ(Δ) over a batch, Δ = r_c − r_r. Autograd's push on each chosen reward is therefore
σ(−Δ)/N (N from the mean)."""),
        new_code_cell("""import torch
from lossviz.losses import PairWiseLoss

chosen = torch.tensor([-3.0, 0.0, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
rejected = torch.zeros(4, dtype=torch.float64)
loss = PairWiseLoss()(chosen, rejected)
loss.backward()
print(f"loss = {loss.item():.4f}")
print("gap Δ:               ", chosen.detach().tolist())
print("push × N (autograd): ", [round(v, 4) for v in (-chosen.grad * len(chosen)).tolist()])
print("σ(-Δ):               ", [round(v, 4) for v in torch.sigmoid(-chosen.detach()).tolist()])"""),
        *explore_section("basics"),
        new_markdown_cell(f"""## Exercises

{EXERCISE_HOWTO}

1. At which x has the push fallen to 1/5?
2. What is the loss ℓ at x = −1.5?
3. What is the push at x = 3?"""),
        new_code_cell("""push = lambda x: -d.evaluate({"x": x}, "x")  # the card's gradient, negated: the push at x
answer_1 = ...  # the x where push(x) = 1/5
answer_2 = ...  # the loss at x = -1.5
answer_3 = ...  # the push at x = 3"""),
        new_code_cell("""check("basics-1", answer_1)
check("basics-2", answer_2)
check("basics-3", answer_3);"""),
    ],
    "01_sft_and_distillation": [
        new_markdown_cell(f"""# 01 · SFT and distillation

**Notation.** At each position the model gives logits z (one entry per vocabulary token);
p = softmax(z); e_y is the one-hot vector of the target token y. LSE(z) = log Σ_k e^{{z_k}} is the
log-sum-exp, so the cross-entropy of one position is −log p_y = LSE(z) − z_y. Labels of −100 mark
prompt and padding positions: they contribute nothing.

**GPTLMLoss** is next-token cross-entropy: position t predicts the token at t + 1, and the loss is
the mean over counted positions. For each counted position the gradient on the logits is
p − e_y (softmax minus one-hot), divided by the count.

**KDLoss** is the cross-entropy to a teacher's probabilities q: CE(q, p) = −Σ_k q_k log p_k, averaged
over positions whose label is not −100. Since KL(q‖p) = CE(q, p) − H(q) and the teacher entropy
H(q) does not depend on the student, minimising this cross-entropy minimises the KL, with the
gradient p − q. It is often mixed with the hard-label loss as a weighted sum. (Distillation with a
temperature, {ref("hinton2015", "Hinton et al. 2015, §2")}, divides both logits by T first; `KDLoss`
has no temperature.)"""),
        new_code_cell(SETUP),
        *derivations("gptlm", "kd"),
        *verification_section("gptlm", "kd"),
        new_markdown_cell("""## The production classes on a real batch

Two sequences of 6 positions over a vocabulary of 5; prompt and padding labels are −100. The
positions that predict a −100 label get no gradient."""),
        new_code_cell("""import torch
from lossviz.losses import GPTLMLoss, KDLoss

torch.manual_seed(0)
logits = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)           # [batch, positions, vocabulary]
labels = torch.tensor([[-100, -100, 1, 4, 2, 0], [-100, 3, 3, 1, -100, -100]])  # -100: prompt or padding
loss = GPTLMLoss()(logits, labels)
loss.backward()
print(f"GPTLMLoss = {loss.item():.4f}, a mean over {int((labels[:, 1:] != -100).sum())} counted positions")
print("largest gradient at position 0 of sequence 0 (it predicts a -100 label):", logits.grad[0, 0].abs().max().item())
teacher = torch.randn(2, 6, 5, dtype=torch.float64)
print(f"KDLoss = {KDLoss()(logits, teacher, labels).item():.4f}")"""),
        new_markdown_cell(f"""## The memory-lean forms

`GPTLMLoss(chunk_size=N)` and `KDLoss(chunk_size=N)` walk the tokens N at a time and compute each
chunk's loss *and* its gradient in closed form (p − e_y, p − q) during the forward pass. Only the
logits gradient outlives the forward pass, plus temporaries of N × vocabulary, instead of several
full [tokens × vocabulary] tensors. `FusedLinearGPTLMLoss` and `FusedLinearKDLoss` go further: they
take the last hidden states and the `lm_head` weight and form the logits one chunk at a time, so the
full logits never exist (the approach of Liger Kernel's fused linear losses,
{ref("liger", "Hsu et al. 2024")}, here in plain PyTorch). They compute the same function:"""),
        new_code_cell("""import torch.nn.functional as F
from lossviz.losses import FusedLinearGPTLMLoss, FusedLinearKDLoss

hidden = torch.randn(2, 6, 8, dtype=torch.float64, requires_grad=True)  # [batch, positions, hidden size]
weight = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)     # lm_head: [vocabulary, hidden size]
teacher_hidden, teacher_weight = torch.randn(2, 6, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)


def value_and_grads(loss):
    return loss.item(), torch.autograd.grad(loss, (hidden, weight))


def compare(title, plain, others):
    value, grads = value_and_grads(plain)
    print(f"{title}: plain {value:.12f}")
    for name, loss in others:
        v, g = value_and_grads(loss)
        diff = max((a - b).abs().max().item() for a, b in zip(g, grads))
        print(f"  {name:<22} {v:.12f}   largest gradient difference {diff:.1e}")


compare("cross-entropy", GPTLMLoss()(F.linear(hidden, weight), labels), [
    ("chunked (chunk_size=4)", GPTLMLoss(chunk_size=4)(F.linear(hidden, weight), labels)),
    ("fused linear", FusedLinearGPTLMLoss(chunk_size=4)(hidden, weight, labels)),
])
teacher_logits = F.linear(teacher_hidden, teacher_weight)
compare("distillation", KDLoss()(F.linear(hidden, weight), teacher_logits, labels), [
    ("chunked (chunk_size=4)", KDLoss(chunk_size=4)(F.linear(hidden, weight), teacher_logits, labels)),
    ("fused linear", FusedLinearKDLoss(chunk_size=4)(hidden, weight, teacher_hidden, teacher_weight, labels)),
])"""),
        *explore_section("gptlm", "kd", figures=["kd"]),
        new_markdown_cell(f"""## Exercises

{EXERCISE_HOWTO}

1. For logits z = (2, 0, −1) at one counted position with target 0, compute ∂L/∂z₀ by hand
   (softmax minus one-hot). You can confirm it with autograd of `GPTLMLoss`.
2. For the student and teacher logits below, compute KL(q‖p) from `KDLoss` and the teacher
   entropy H(q)."""),
        new_code_cell("""import math
z = [2.0, 0.0, -1.0]
answer_1 = ...  # ∂L/∂z₀
student = torch.tensor([[[0.5, -1.0, 2.0]]], dtype=torch.float64)  # one position
teacher = torch.tensor([[[1.0, 0.0, -1.0]]], dtype=torch.float64)
label = torch.zeros(1, 1, dtype=torch.long)  # not -100: the position counts
answer_2 = ...  # KL(q‖p)"""),
        new_code_cell("""check("sft-1", answer_1)
check("sft-2", answer_2);"""),
    ],
    "02_dpo_cdpo_ipo": [
        new_markdown_cell(f"""# 02 · DPO, cDPO and IPO

**Notation.** For a prompt with a chosen response y_c and a rejected one y_r, π^c = log π(y_c|x) and
π^r = log π(y_r|x) are the log-probabilities of the two responses (summed over their tokens) under
the policy being trained; π^c_ref and π^r_ref are the same under the frozen reference model.
h = (π^c − π^c_ref) − (π^r − π^r_ref) is the **log-ratio margin**. The implicit reward of a response
is β(π − π_ref) ({ref("dpo", "DPO, Eq. 5")}, up to a term that cancels within a pair), so βh is the
**implicit-reward margin**. β is the **KL strength**: DPO solves the KL-constrained reward
maximisation of Eq. 3, whose optimum is π* ∝ π_ref·exp(r/β) (Eq. 4), so a larger β keeps the policy
nearer the reference.

**DPO.** The loss is L = −log σ(βh) ({ref("dpo", "Eq. 7")}). Its push on π^c is −∂L/∂π^c = β σ(−βh),
and the push on π^r is the same with the opposite sign (the gradient analysis of the paper's §4). It
is largest (→ β) when the pair is ranked wrongly (h ≪ 0) and fades once the pair is ranked right.
When every label in the data prefers the same response, nothing stops the margin from growing
without bound, whatever β is ({ref("ipo", "Azar et al., §4.2")}); and it can grow while the chosen
response's log-probability falls ({ref("razin2024", "likelihood displacement, Razin et al. 2024")}).

**cDPO** ({ref("cdpo", "Mitchell 2023")}) assumes each label is flipped with probability ε:
L = −(1 − ε) log σ(βh) − ε log σ(−βh). For 0 < ε < 1/2 the loss has its minimum at
βh* = log((1 − ε)/ε), where the push stops. At ε = 1/2 it is log(2 cosh(βh/2)): still a function of the
margin, smallest at h = 0 (the production class takes ε < 1/2 only).

**IPO** ({ref("ipo", "Azar et al., Eq. 17")}) regresses the margin onto a target instead:
L = (h − 1/(2β))², zero gradient at h = 1/(2β)."""),
        new_code_cell(SETUP),
        *derivations("dpo", "cdpo", "ipo"),
        *verification_section("dpo", "cdpo", "ipo"),
        new_markdown_cell("""## The production class on a real batch

`DPOLoss` returns the mean loss and, per pair, the chosen and rejected implicit rewards
β(π − π_ref), detached (they are for logging; they carry no gradient). Their difference is βh."""),
        new_code_cell("""import torch
from lossviz.losses import DPOLoss

policy_chosen = torch.tensor([-12.0, -20.0, -7.5, -30.0], dtype=torch.float64, requires_grad=True)
policy_rejected = torch.tensor([-14.0, -18.0, -9.0, -31.0], dtype=torch.float64, requires_grad=True)
reference_chosen = torch.tensor([-13.0, -19.0, -8.0, -30.5], dtype=torch.float64)
reference_rejected = torch.tensor([-13.5, -18.5, -8.5, -30.0], dtype=torch.float64)
batch = (policy_chosen, policy_rejected, reference_chosen, reference_rejected)

loss, chosen_rewards, rejected_rewards = DPOLoss(beta=0.1)(*batch)
loss.backward()
margins = chosen_rewards - rejected_rewards  # βh
print(f"DPO loss {loss.item():.4f}; rewards require grad: {chosen_rewards.requires_grad}")
print("chosen rewards   β(π^c - π^c_ref):", [round(v, 3) for v in chosen_rewards.tolist()])
print("rejected rewards β(π^r - π^r_ref):", [round(v, 3) for v in rejected_rewards.tolist()])
print("implicit-reward margins βh:       ", [round(v, 3) for v in margins.tolist()])
print("push on π^c × N (autograd):       ", [round(v, 4) for v in (-policy_chosen.grad * 4).tolist()])
print("β σ(-βh):                         ", [round(v, 4) for v in (0.1 * torch.sigmoid(-margins)).tolist()])
print(f"cDPO (ε = 0.1) loss {DPOLoss(beta=0.1, label_smoothing=0.1)(*batch)[0].item():.4f}; "
      f"IPO loss {DPOLoss(beta=0.1, ipo=True)(*batch)[0].item():.4f}")"""),
        *explore_section("dpo", "cdpo", "ipo", figures=["cdpo"]),
        new_markdown_cell(f"""## Exercises

{EXERCISE_HOWTO}

1. What is DPO's push on π^c at h = 2 for β = 0.5?
2. For β = 0.3 and ε = 0.2, at which margin h does the cDPO gradient vanish?
3. At ε = 0.5, what is the cDPO loss at βh = 2? (By hand: the production class refuses ε = 0.5.)
4. Where is the IPO target for β = 0.4?"""),
        new_code_cell("""at = lambda h: {"policy_chosen_logps": h, "policy_rejected_logps": 0.0,
                "reference_chosen_logps": 0.0, "reference_rejected_logps": 0.0}  # a pair with margin h
dpo = lossviz.derive("dpo", beta=0.5)
cdpo = lossviz.derive("cdpo", beta=0.3, label_smoothing=0.2)
ipo = lossviz.derive("ipo", beta=0.4)
# x.evaluate(at(h), "policy_chosen_logps") is the gradient ∂L/∂π^c at margin h
answer_1 = ...  # the push at h = 2
answer_2 = ...  # the margin h* where the cDPO gradient is 0
answer_3 = ...  # the ε = 0.5 loss at βh = 2
answer_4 = ...  # the IPO target margin"""),
        new_code_cell("""check("dpo-1", answer_1)
check("dpo-2", answer_2)
check("dpo-3", answer_3)
check("dpo-4", answer_4);"""),
    ],
    "03_kto": [
        new_markdown_cell(f"""# 03 · KTO

**Notation.** KTO needs no pairs. For one example, Δ = π − π_ref is its log-ratio: the
log-probability of its response under the policy minus under the reference. Each example is
labelled desirable or undesirable and has its own loss around a reference point z:
ℓ_D = w_D (1 − σ(β(Δ − z))) or ℓ_U = w_U (1 − σ(β(z − Δ))), with weights w_D, w_U and β the KL
strength ({ref("kto", "Ethayarajh et al. 2024, §4")}).

**The reference point.** In the paper, z is an estimate of KL(π‖π_ref) that is not back-propagated
through. `KTOLoss` computes it as the mean log-ratio of a batch of mismatched prompt/response pairs
(`policy_KL_logps − reference_KL_logps`), averaged over devices, detached (no gradient flows through
it) and clamped at 0.

**The push is bell-shaped.** −∂ℓ_D/∂Δ = w_D β σ(u) σ(−u) with u = β(Δ − z): largest at Δ = z, and it
vanishes on both sides because the loss saturates. DPO's push, by contrast, tends to β for a pair
ranked badly wrongly.

**Vanilla KTO** (`VanillaKTOLoss`, balanced sampling) concatenates the chosen and rejected losses
1 − σ(β(Δ_c − z_r)) and 1 − σ(β(z_c − Δ_r)) and averages them. Its reference points are the batch means
of the *other* side's log-ratios, clamped at 0 and **not detached**: z_r = max(0, mean Δ_r),
z_c = max(0, mean Δ_c). So the sides are coupled through the reference points. With one example per
side and both log-ratios above 0 the loss is exactly σ(−βh), a function of DPO's margin h = Δ_c − Δ_r;
the sides decouple (∂²ℓ/∂Δ_c∂Δ_r = 0) only where both means are below 0 and both reference points are
clamped to 0. This departs from the paper's detached z₀; the facts below show both quadrants."""),
        new_code_cell(SETUP),
        *derivations("kto", "vanilla-kto"),
        *verification_section("kto", "vanilla-kto"),
        new_markdown_cell("""## The production classes on a real batch

`KTOLoss` takes the desirable and undesirable examples and the mismatched KL batch, and returns
the loss, the rewards β·Δ of each side (detached) and the reference point z it used."""),
        new_code_cell("""import torch
from lossviz.losses import KTOLoss, VanillaKTOLoss

f64 = lambda *v: torch.tensor(v, dtype=torch.float64)
policy_chosen = f64(-10.0, -12.0, -8.0).requires_grad_()  # 3 desirable examples
policy_rejected = f64(-15.0, -9.0).requires_grad_()       # 2 undesirable examples
policy_KL, reference_KL = f64(-20.0, -22.0, -18.0, -25.0, -21.0), f64(-21.0, -22.5, -19.0, -25.0, -21.5)
reference_chosen, reference_rejected = f64(-11.0, -12.5, -9.0), f64(-14.0, -10.0)
kto = KTOLoss(beta=0.1, desirable_weight=1.0, undesirable_weight=1.33, world_size=1, device="cpu")
loss, chosen_rewards, rejected_rewards, z = kto(policy_chosen, policy_rejected, policy_KL,
                                                reference_chosen, reference_rejected, reference_KL)
loss.backward()
print(f"KTO loss {loss.item():.4f}; reference point z = {z.item():.3f} (mean of the KL batch's log-ratios)")
print("chosen rewards βΔ:  ", [round(v, 3) for v in chosen_rewards.tolist()])
print("rejected rewards βΔ:", [round(v, 3) for v in rejected_rewards.tolist()])
print("push on the desirable examples:", [f"{v:.4g}" for v in (-policy_chosen.grad).tolist()])

# vanilla KTO, one example per side, both log-ratios above 0: the loss is σ(-βh)
delta_c, delta_r = 1.0, 0.5
vanilla, _, _ = VanillaKTOLoss(beta=1.0)(f64(delta_c), f64(delta_r), f64(0.0), f64(0.0))
print(f"vanilla KTO {vanilla.item():.6f} = σ(-βh) {torch.sigmoid(f64(-(delta_c - delta_r))).item():.6f}")"""),
        *explore_section("kto", figures=["kto", "vanilla-kto"]),
        new_markdown_cell("""In the vanilla-KTO explorer the plot runs along Δ_c while the slider holds the rejected example's
log-ratio Δ_r. Move Δ_r: the loss and the gradient along Δ_c change with it wherever either log-ratio
is above 0, because Δ_r couples the sides through the non-detached reference points. With Δ_r below 0,
the gradient left of Δ_c = 0 stops changing (the loss there only shifts by the rejected side's own
term): both reference points are clamped to 0 there."""),
        new_code_cell('lossviz.explore("vanilla-kto")'),
        new_markdown_cell(f"""## Exercises

{EXERCISE_HOWTO}

1. With β = 0.3, w_D = 1.5 and the reference point at z = 1, where is the desirable arm's push largest?
2. What is that largest push?
3. What does `VanillaKTOLoss(beta=0.5)` return for one pair with Δ_c = 2 and Δ_r = −1?"""),
        new_code_cell("""import numpy as np
k = lossviz.derive("kto", symbolic=False, beta=0.3, desirable_weight=1.5)  # the desirable arm
at = lambda delta: {"policy_chosen_logps": delta, "reference_chosen_logps": 0.0,
                    "policy_KL_logps": 1.0, "reference_KL_logps": 0.0}  # a KL batch whose mean log-ratio is z = 1
push = lambda delta: -k.evaluate(at(delta), "policy_chosen_logps")
answer_1 = ...  # the Δ where push(Δ) is largest
answer_2 = ...  # the largest push
answer_3 = ...  # the vanilla KTO loss"""),
        new_code_cell("""check("kto-1", answer_1)
check("kto-2", answer_2)
check("kto-3", answer_3);"""),
    ],
    "04_ppo_policy_and_value": [
        new_markdown_cell(f"""# 04 · PPO: the clipped policy loss and the clipped value loss

**Notation.** Per token: log π (`log_probs`) under the policy being trained, log π_old
(`old_log_probs`) under the policy that sampled it, the ratio r = π/π_old = e^{{log π − log π_old}}, the
advantage A, and the clip width ε. A, log π_old, the returns R and the old values v_old are
computed before the update and are constants in training; the derivations below differentiate
with respect to every input, but only log π and the values v are trained.

**The policy loss** is ℓ = −min(rA, clip(r, 1 − ε, 1 + ε)·A) ({ref("ppo", "Schulman et al. 2017, Eq. 7")}).
Where it is not clipped, ∂ℓ/∂log π = −rA, so the push rA raises log π when A > 0 and lowers it when
A < 0. Once r has left the trust region in the direction the advantage asks for (above 1 + ε for A > 0,
below 1 − ε for A < 0), the clipped term wins and the gradient is exactly zero.

- **Clip-higher** ({ref("dapo", "DAPO, §3.1")}): separate widths, [1 − ε_low, 1 + ε_high]; with
  ε_high > ε_low a token with A > 0 can grow further before its gradient stops.
- **Dual clip** ({ref("dualclip", "Ye et al. 2020")}), c > 1: for A < 0 the loss is capped at −cA. A ratio
  r > c means the policy has made a token with a negative advantage far *more* likely, against what A
  asks; without the cap its loss −rA grows without bound. With it, the loss there is the constant −cA
  and the gradient is zero.
- **Token-level mean** ({ref("dapo", "DAPO, §3.3")}): by default each sequence's unmasked tokens are
  averaged, then the sequences (every sequence weighs the same, so a token of a short sequence weighs
  more); `token_level_loss=True` takes one mean over all unmasked tokens of the batch (every token
  weighs the same).

**The value loss** is ½·max((v_c − R)², (v − R)²) with v_c = v_old + clip(v − v_old, −ε, ε), a code-level
choice of PPO implementations rather than the paper's squared error
({ref("engstrom2020", "Engstrom et al. 2020, §3")}). Why max and not min? The clip should bind only
when it makes the loss *larger*. If the new value has moved past the clip edge towards the return R,
the clipped error is the larger one and is constant, so there is no gradient: the critic gets no
credit for jumping beyond its trust region. With min, the unclipped error would win there and keep
pulling."""),
        new_code_cell(SETUP),
        *derivations("ppo-policy", "ppo-value", clip_eps=0.2),
        *verification_section("ppo-policy", "ppo-value"),
        new_markdown_cell("""## The production classes on a real batch

Two sequences of four tokens; the old log-probs are 0, so each ratio r is e^{log π}. Which tokens
still get a gradient under each option?"""),
        new_code_cell("""import torch
from lossviz.losses import PolicyLoss, ValueLoss

ratios = torch.tensor([[1.5, 0.9, 1.1, 4.0], [0.7, 1.0, 1.0, 1.0]], dtype=torch.float64)
log_probs = ratios.log().requires_grad_()
old_log_probs = torch.zeros(2, 4, dtype=torch.float64)
advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, 0.5, 0.5, 0.5]], dtype=torch.float64)
action_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
print("ratios:", ratios.tolist(), " advantages:", advantages.tolist(), " mask:", action_mask.tolist())
for options in ({"clip_eps": 0.2}, {"clip_eps_low": 0.2, "clip_eps_high": 0.6},
                {"clip_eps": 0.2, "dual_clip": 3.0}, {"clip_eps": 0.2, "token_level_loss": True}):
    loss = PolicyLoss(**options)(log_probs, old_log_probs, advantages, action_mask)
    (grad,) = torch.autograd.grad(loss, log_probs)
    print(f"{str(options):<45} loss {loss.item():7.4f}   tokens with a gradient: {(grad != 0).int().tolist()}")

values = torch.tensor([[0.1, 0.5, 1.9, 1.2]], dtype=torch.float64, requires_grad=True)
value_loss = ValueLoss(clip_eps=0.2)(values, torch.zeros(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64))
(value_grad,) = torch.autograd.grad(value_loss, values)
print(f"value loss {value_loss.item():.4f} (v_old = 0, R = 1); gradient on v: {[round(g, 3) for g in value_grad[0].tolist()]}")"""),
        *explore_section("ppo-policy", "ppo-value"),
        new_markdown_cell(f"""## Exercises

{EXERCISE_HOWTO}

1. For A = +1 and ε = 0.3, from which ratio on is the policy gradient zero?
2. The same with clip-higher, ε_low = 0.2 and ε_high = 0.28.
3. With dual clip c = 2.5 (ε = 0.2) and A = −1, above which ratio is the gradient zero again?
4. Every ratio of the batch below is 1. What is the token-level mean loss?
5. For v_old = 0, R = 1 and ε = 0.3, where does the value loss's flat (zero-gradient) zone above
   v_old + ε end?"""),
        new_code_cell("""import numpy as np
rs = np.linspace(0.5, 4.0, 350001)  # ratios r, with log π_old = 0


def policy_gradient(d, advantage):
    \"\"\"∂L/∂log π of a derivation along rs, for one advantage.\"\"\"
    return d.evaluate({"log_probs": np.log(rs), "old_log_probs": 0 * rs, "advantages": advantage + 0 * rs}, "log_probs")


symmetric = lossviz.derive("ppo-policy", clip_eps=0.3)
higher = lossviz.derive("ppo-policy", clip_eps_low=0.2, clip_eps_high=0.28, symbolic=False)  # clip_eps unused: its default
dual = lossviz.derive("ppo-policy", clip_eps=0.2, dual_clip=2.5)
answer_1 = ...  # first r with zero gradient, A = +1
answer_2 = ...  # the same with clip-higher
answer_3 = ...  # the r above which dual clip zeroes the A = -1 gradient

advantages = torch.tensor([[2.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 1.0, 0.5]], dtype=torch.float64)
action_mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
same = torch.zeros(2, 4, dtype=torch.float64)  # log π = log π_old: every ratio is 1
answer_4 = ...  # the token-level mean loss

v = lossviz.derive("ppo-value", clip_eps=0.3)
vs = np.linspace(0.25, 3.0, 275001)
value_gradient = v.evaluate({"values": vs, "old_values": 0 * vs, "returns": 1 + 0 * vs}, "values")
answer_5 = ...  # where the flat zone ends"""),
        new_code_cell("""check("ppo-1", answer_1)
check("ppo-2", answer_2)
check("ppo-3", answer_3)
check("ppo-4", answer_4)
check("ppo-5", answer_5);"""),
    ],
    "05_reward_models": [
        new_markdown_cell(f"""# 05 · Reward models: pairwise and log-exp

**Notation.** A reward model gives one number per response: r_c for the chosen, r_r for the rejected.
Here Δ = r_c − r_r is the reward gap (not KTO's log-ratio) and m an optional margin.

**PairWiseLoss** is the Bradley–Terry loss −log σ(Δ − m) ({ref("instructgpt", "Ouyang et al. 2022, Eq. 1")};
the margin as in {ref("llama2", "Touvron et al. 2023, Eq. 2")}): the basics curve applied to the gap.
Its push on r_c is σ(m − Δ). The margin moves the point where the push fades: it falls to 1/10 of its
largest value at Δ = m + log 9 ≈ m + 2.2. Constants inside the log-sigmoid decide where training
stops pushing.

**LogExpLoss** is the same function written as log(1 + e^{{r_r − r_c}}) = log(1 + e^{{−Δ}}).
Mathematically they are equal; numerically they are not. Computed literally in float32, e^{{−Δ}}
overflows to inf once −Δ exceeds log(float32 max) ≈ 88.72, i.e. for a pair ranked wrongly by more
than 88.7 (Δ < −88.7). lossviz evaluates both through logsigmoid, finite at any gap. OpenRLHF's
`LogExpLoss` ignores `margin`; lossviz's subtracts it as `PairWiseLoss` does, an extension: with a
margin the two libraries differ."""),
        new_code_cell(SETUP),
        *derivations("pairwise", "logexp"),
        *verification_section("pairwise", "logexp"),
        new_markdown_cell("""## The production classes on a real batch

A float32 batch with one pair ranked wrongly by 100: the production losses stay finite, the literal
formula does not."""),
        new_code_cell("""import torch
from lossviz.losses import LogExpLoss, PairWiseLoss

chosen = torch.tensor([1.0, 0.5, -3.0, -100.0], requires_grad=True)  # float32 rewards
rejected = torch.zeros(4)
for loss_class in (PairWiseLoss, LogExpLoss):
    loss = loss_class()(chosen, rejected)
    (grad,) = torch.autograd.grad(loss, chosen)
    print(f"{loss_class.__name__:<13} loss {loss.item():9.4f}  push on r_c × N {[round(g, 4) for g in (-grad * 4).tolist()]}")
naive = torch.log(1 + torch.exp(rejected - chosen))
print("literal log(1 + e^(r_r - r_c)) per pair:", naive.tolist())
print(f"PairWiseLoss with margin m = 2: {PairWiseLoss()(chosen, rejected, margin=2.0).item():.4f}")"""),
        *explore_section("pairwise", "logexp", figures=["pairwise"]),
        new_code_cell("""from lossviz.plots import request
from lossviz.plots.custom import logexp_overflow
show(logexp_overflow(request("logexp")))"""),
        new_markdown_cell(f"""## Exercises

{EXERCISE_HOWTO}

1. With margin m = 1.5, at which gap has the push on r_c fallen to 1/10 (of its largest value, 1)?
2. Mixed-precision training may compute the loss in float16 (largest value 65504). Below which gap Δ
   does the literal float16 log(1 + e^{{−Δ}}) return inf? (Scan the gaps below, or work it out from
   the float32 argument above.)"""),
        new_code_cell("""import numpy as np
r = lossviz.derive("pairwise", margin=1.5)
push = lambda gap: -r.evaluate({"chosen_reward": gap, "reject_reward": 0.0}, "chosen_reward")
answer_1 = ...  # the gap where push(gap) = 0.1
gaps = -np.arange(0, 20, 0.01).astype(np.float16)  # 0, -0.01, -0.02, ... in float16
with np.errstate(over="ignore"):
    literal = np.log(np.float16(1) + np.exp(-gaps))
answer_2 = ...  # the first gap where literal is inf"""),
        new_code_cell("""check("rm-1", answer_1)
check("rm-2", answer_2);"""),
    ],
    "06_process_reward_model": [
        new_markdown_cell(f"""# 06 · The process reward model

**Notation.** A PRM scores each reasoning step. In Math-Shepherd-style data
({ref("mathshepherd", "Wang et al. 2024, §3")}) every step ends in a placeholder, here "ки". The labels
hold the step's label token (+ or −) at the placeholder positions and −100 everywhere else, so only
placeholder positions count. `PRMLoss` finds them as the positions where the input id equals
`placeholder_token_id`; OpenRLHF's PRM dataset takes that id from the placeholder encoded alone
(`convert_token_to_id` in `openrlhf/utils/utils.py`).

With the logits restricted to the two reward tokens, the softmax has two entries, which makes a
logistic loss on the logit difference d = z₊ − z₋. A soft label p (the probability that the step is
good) targets [p, 1 − p], and the loss is smallest at d* = log(p/(1 − p)).

**The silent pitfall.** If the tokenizer merges the placeholder with a neighbour, that step has no
position whose id is `placeholder_token_id`, and it drops out of the loss without an error. Worse,
OpenRLHF's `ProcessRewardDataset` writes the step labels to the positions it does find, in order
(`labels[mask] = label_tensor[..., :num_placeholders]` in `openrlhf/datasets/process_reward_dataset.py`),
so after a lost step the surviving positions receive the labels of earlier steps. What has been
reported:

- [OpenRLHF issue #683](https://github.com/OpenRLHF/OpenRLHF/issues/683) (January 2025): training
  with the Mistral-7B-v0.1 tokenizer on Math-Shepherd with `--placeholder_token ки`, every label of a
  dataset item came out −100, so no step was scored. A
  [write-up of that issue](https://blog.gitcode.com/9ae2c2567ea3fd40fd99a089090d2ad9.html) explains
  that "ки" encoded alone gives one id, while inside a sentence it can merge with neighbouring
  characters into a different token.
- [OpenRLHF issue #740](https://github.com/OpenRLHF/OpenRLHF/issues/740) (February 2025): a PRM on
  Qwen2.5-7B (base) gave a NaN loss with each of the placeholders " $$", "@" and "ки". The thread does
  not establish the cause; the reporter later recalled switching to one of the tokenizer's special
  tokens.

Below, a tokenizer trained in this notebook shows the merge, and `check_placeholders` finds it."""),
        new_code_cell(SETUP),
        *derivations("prm"),
        *verification_section("prm"),
        new_markdown_cell("""## A placeholder merging with its neighbours

A byte-pair-encoding tokenizer is trained here with Hugging Face `tokenizers` on six
Math-Shepherd-style lines (nothing is downloaded). Its pre-tokenizer is `Metaspace`, the convention
of SentencePiece-style tokenizers: a space becomes "▁" and joins the following word. "ки" follows a
space in every step and a newline in every step but the last, so BPE learns merges across it:
"ки" encoded alone is "▁ки", which survives at the end of a text, while before a newline the
placeholder disappears into `"▁ки\\nStep"`."""),
        new_code_cell("""import inspect
from lossviz.teaching import MATH_SHEPHERD_STYLE, train_bpe
print(inspect.getsource(train_bpe))
text = MATH_SHEPHERD_STYLE[1]
print(repr(text))
naive = train_bpe()
print("unprotected:", naive.encode(text).tokens[-14:])
print('"ки" encoded alone:', naive.encode("ки").tokens)"""),
        new_markdown_cell("""`check_placeholders` tokenizes the texts as training will and reports every step whose
placeholder is not its own token. The tokenizer may be a `tokenizers.Tokenizer`, a `transformers`
tokenizer, or any function from a text to its tokens. Protecting the placeholder as a special token
(matched before any merge) keeps every step."""),
        new_code_cell("""from lossviz.losses import check_placeholders
print(check_placeholders(naive, MATH_SHEPHERD_STYLE, "ки"))
safe = train_bpe(special_tokens=["ки"])
print("protected:", safe.encode(text).tokens[-14:])
print(check_placeholders(safe, MATH_SHEPHERD_STYLE, "ки"))"""),
        new_markdown_cell("""## The production class on a real batch

`PRMLoss` on the protected tokenization of one text, with the tokens "+" and "-" as the two reward
tokens: hard labels (the second step is marked wrong), then soft labels. With the unprotected
tokenizer only the last step holds the placeholder's id."""),
        new_code_cell("""import torch
from lossviz.losses import PRMLoss

ids = torch.tensor([safe.encode(text).ids])
(placeholder,) = safe.encode("ки").ids  # the placeholder encoded alone
plus, minus = safe.token_to_id("+"), safe.token_to_id("-")
steps = ids == placeholder
torch.manual_seed(0)
logits = torch.randn(1, ids.shape[1], safe.get_vocab_size(), dtype=torch.float64)
hard = torch.full_like(ids, -100)
hard[steps] = torch.tensor([plus, minus, plus])
loss, acc = PRMLoss(placeholder, [plus, minus])(ids, logits, hard, return_acc=True)
print(f"{int(steps.sum())} steps; hard labels: loss {loss.item():.4f}, accuracy {acc.item():.2f}")
soft = torch.full(ids.shape, -100.0, dtype=torch.float64)
soft[steps] = torch.tensor([0.9, 0.2, 0.7], dtype=torch.float64)
print(f"soft labels: loss {PRMLoss(placeholder, [plus, minus])(ids, logits, soft).item():.4f}")

naive_ids = torch.tensor([naive.encode(text).ids])
(naive_placeholder,) = naive.encode("ки").ids
print(f"unprotected: {int((naive_ids == naive_placeholder).sum())} of {text.count('ки')} steps hold the placeholder's id")"""),
        *explore_section("prm"),
        new_markdown_cell(f"""## Exercises

{EXERCISE_HOWTO}

1. For a soft label p = 0.9, at which logit difference d is the loss smallest?
2. Two new lines, `NEW_LINES` below, are tokenized with the tokenizers trained above. How many steps
   do they hold?
3. How many of them would `PRMLoss` train on with the unprotected tokenizer? (Look at how the
   second line separates its steps.)
4. And with the protected one?"""),
        new_code_cell("""prm = lossviz.derive("prm", p=0.9)
gradient = lambda d: prm.evaluate({"logits_0": d, "logits_1": 0.0}, "logits_0")  # ∂ℓ/∂z₊ at d = z₊ - z₋
answer_1 = ...  # d* for p = 0.9
from lossviz.exercises import NEW_LINES
for line in NEW_LINES:
    print(repr(line))
answer_2 = ...  # steps in NEW_LINES
answer_3 = ...  # steps kept by the unprotected tokenizer
answer_4 = ...  # steps kept by the protected tokenizer"""),
        new_code_cell("""check("prm-1", answer_1)
check("prm-2", answer_2)
check("prm-3", answer_3)
check("prm-4", answer_4);"""),
    ],
}


def training_dynamics_cells():
    """The cells of notebook 07 from notebooks/training_dynamics.py, or None while that module is absent."""
    path = HERE / "training_dynamics.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("training_dynamics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cells()


_DYNAMICS = training_dynamics_cells()
if _DYNAMICS is not None:
    NOTEBOOKS["07_training_dynamics"] = _DYNAMICS


def _cells_of(module_name: str):
    """The cells of a notebook whose ``cells()`` live in notebooks/<module_name>.py (None while it is absent)."""
    path = HERE / f"{module_name}.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cells()


for _name, _module in (("10_preference_zoo", "preference_zoo"), ("11_distillation", "distillation")):
    _cells = _cells_of(_module)
    if _cells is not None:
        NOTEBOOKS[_name] = _cells

for _name, _module in (("08_grpo_family", "grpo_family"), ("09_kl_estimators", "kl_estimators")):
    _cells = _cells_of(_module)
    if _cells is not None:
        NOTEBOOKS[_name] = _cells


def main():
    for name, cells in NOTEBOOKS.items():
        for k, cell in enumerate(cells):  # nbformat draws random ids: derive them, so regenerating changes nothing
            cell["id"] = f"{name.split('_')[0]}-{k:03d}"
        nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                                   "language_info": {"name": "python"}})
        nbformat.write(nb, HERE / f"{name}.ipynb")
    print(f"wrote {len(NOTEBOOKS)} notebooks to {HERE}")


if __name__ == "__main__":
    main()
