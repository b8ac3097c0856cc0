r"""SFT cards on an explicit 3-token vocabulary: next-token cross-entropy (GPTLM) and distillation (KD)."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSumExp, elementary
from ._common import solve_one, sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .controls import Formula, GradientOf, Hold, Minimum
from .figure import Axis, Curve, LessonFigure, Mark, Panel, Shot

VOCAB = 3
STUDENT = tuple(f"logits_{k}" for k in range(VOCAB))
TEACHER = tuple(f"teacher_logits_{k}" for k in range(VOCAB))


def _softmax(names, k, tau=1):
    z = [sym(n) / tau for n in names]
    return sp.exp(z[k]) / sp.Add(*[sp.exp(v) for v in z])


def _teacher_entropy(cut, tau=1):
    """H(q) of the teacher's softmax q = softmax(t/τ) at its logits along the axis."""
    t = [sp.sympify(cut[n]) / tau for n in TEACHER]
    q = [sp.exp(tk) / sp.Add(*[sp.exp(v) for v in t]) for tk in t]
    return -sp.Add(*[qk * sp.log(qk) for qk in q])


def _stationary(c):
    """The z_0 where the loss along the axis is stationary (sympy solves ∂ℓ/∂z_0 = 0): where p_S,0 = q_0."""
    return solve_one(elementary(sp.diff(c.loss, c.x)), c.x)


class GPTLM(Card):
    name = "gptlm"
    controls = (Hold("logits_1", "z_1", -5.0, 5.0, "logit of token 1"), Hold("logits_2", "z_2", -5.0, 5.0, "logit of token 2"), GradientOf(STUDENT))
    axis = Axis("z_0", {"logits_0": "z_0", "logits_1": 1.0, "logits_2": -1.0}, (-6.0, 6.0), r"logit $z_0$ ($z_1 = 1$, $z_2 = -1$)")
    figure = LessonFigure(  # one curve per target token and the masked position's zero gradient
        panels=(Panel("loss", r"$\mathcal{L} = \mathrm{LSE}(z) - z_y$",
                      label=lambda c: f"target y = {c.p['label']}" + (" (the moving logit)" if c.p["label"] == "0" else "")),
                Panel("grad", r"gradient $\partial\mathcal{L}/\partial z_0$" + "\n" + r"$= p_0 - 1[y = 0]$",
                      label=lambda c: r"$y = 0$: $p_0 - 1$" if c.p["label"] == "0" else rf"$y = {c.p['label']}$: $p_0$",
                      style=lambda i: {"linestyle": "-" if i == 0 else (0, (4, 2 + i))})),  # dashes tell apart y = 1 and 2, whose gradients coincide
        title=r"over 3 tokens, $\partial\mathcal{L}/\partial z_0$ is $p_0 - 1$ when token 0 is the target and $p_0$ when another is", tag="label={label}",
        curves=(Curve("0", "masked", "label -100 (prompt): no gradient", panels=("grad",), style={"color": "0.4", "linestyle": ":"}),))
    gallery = (Shot("gptlm", "next-token CE: ∂L/∂z_k = p_k - 1[k = y], so ∂L/∂z_0 is p_0 - 1 when token 0 is the target and p_0 when another is; "
                    "positions labelled -100 get no gradient", sweep=("label", ("0", "2"))),)
    aliases = ("sft", "GPTLMLoss")
    family = "sft"
    title = "next-token cross-entropy"
    lesson = "shifted next-token CE; ∂L/∂z_k = p_k - 1[k = y]; positions labelled -100 contribute nothing"
    production = "lossviz.losses:GPTLMLoss"
    params = (Param("label", "0", "index of the target token in the 3-token vocabulary", choices=("0", "1", "2")),)
    variable_latex = {n: f"z_{k}" for k, n in enumerate(STUDENT)}
    cases_doc = "label=0|1|2 (target token)"

    def variables(self, p):
        return STUDENT

    def loss(self, p):
        z = [sym(n) for n in STUDENT]
        return LogSumExp(*z) - z[int(p["label"])]

    def facts(self, d):
        y = int(d.params["label"])
        softmax_minus_onehot = lambda: sp.Matrix([_softmax(STUDENT, k) - (1 if k == y else 0) for k in range(VOCAB)])
        grad = lambda: sp.Matrix([elementary(d.gradient[n]) for n in STUDENT])
        return [
            Fact("gradient", "∂L/∂z_k as sympy differentiates it", lambda: sp.Matrix([d.gradient[n] for n in STUDENT])),
            Fact("gradient_minus_softmax_onehot", "simplify(∂L/∂z - (softmax(z) - onehot(y))): zero", lambda: sp.simplify(grad() - softmax_minus_onehot())),
        ]

    def example(self, values, p, dtype=None, device=None):
        import torch

        from lossviz.losses import GPTLMLoss

        # position 0 holds the variables and predicts the label at position 1
        logits = tensor([[[values[n] for n in STUDENT], [0.0] * VOCAB]], dtype, device)
        labels = torch.tensor([[-100, int(p["label"])]], device=device)
        return Example(GPTLMLoss(), [logits, labels], {n: (0, (0, 0, k)) for k, n in enumerate(STUDENT)})

    def sample(self, rng, p):
        return {n: float(rng.normal() * 2) for n in STUDENT}

    def batches(self, rng, p):
        import numpy as np

        from lossviz.losses import GPTLMLoss

        rows, steps = 2, 5
        logits = rng.normal(size=(rows, steps, VOCAB)) * 2
        labels = rng.integers(0, VOCAB, size=(rows, steps))
        labels[0, :2] = -100  # a prompt
        labels[1, 3] = -100
        # position t predicts the label at t + 1; the last position predicts nothing
        kept = [(b, t) for b in range(rows) for t in range(steps - 1) if labels[b, t + 1] != -100]
        terms = [Term({n: (0, (b, t, k)) for k, n in enumerate(STUDENT)}, 1 / len(kept), case={"label": str(labels[b, t + 1])})
                 for b, t in kept]
        ignored = np.full((rows, steps), -100)
        return [
            BatchSpec("prompt and padding ignored", lambda device: GPTLMLoss(), [logits, labels], ["logits", "labels"], [0], terms),
            BatchSpec("all labels ignored", lambda device: GPTLMLoss(), [logits.copy(), ignored], ["logits", "labels"], [0], []),
        ]


class KD(Card):
    name = "kd"
    # the explorer: the teacher to move, and where the student is best along z_0
    controls = (Hold("teacher_logits_0", "t_0", -5.0, 5.0, "teacher logit of token 0"), Hold("teacher_logits_1", "t_1", -5.0, 5.0, "teacher logit of token 1"),
                Hold("teacher_logits_2", "t_2", -5.0, 5.0, "teacher logit of token 2"), GradientOf(STUDENT),
                Formula("teacher_p0", "the teacher's probability of token 0 at temperature τ: softmax(t/τ)₀",
                        "exp(t_0/temperature) / (exp(t_0/temperature) + exp(t_1/temperature) + exp(t_2/temperature))"),
                Minimum("student_minimum", "the z₀ where the loss is minimal along the axis (sympy solves ∂ℓ/∂z₀ = 0): where the student's p₀ equals the teacher's"))
    axis = Axis("z_0", {"logits_0": "z_0", "logits_1": 0, "logits_2": 0, "teacher_logits_0": 1.0, "teacher_logits_1": 0, "teacher_logits_2": -1.0},
                (-6.0, 6.0), r"student logit $z_0$ (student $z_1 = z_2 = 0$)" + "\n" + r"teacher logits $t$ = (1, 0, −1)")
    figure = LessonFigure(  # CE and KL side by side with their constant gap H(q)
        panels=(Panel("loss", "loss", label=r"CE $-\sum_k q_k \log p_k$ (KDLoss)"),
                Panel("grad", r"$\partial\mathcal{L}/\partial z_0$", label=r"$p_{S,0} - q_0$", style={"color": 1})),
        title="minimising CE to the teacher minimises KL(q‖p)", tag="cross-entropy",
        curves=(Curve(lambda c: c.loss - c.p["temperature"] ** 2 * _teacher_entropy(c.cut, c.p["temperature"]), "kl",
                      lambda c: r"$\mathrm{KL}(q\,\|\,p)$ = CE $- H(q)$" if c.p["temperature"] == 1 else r"$\tau^2\mathrm{KL}(q^\tau\|p^\tau)$",
                      style={"color": 2, "linestyle": "--"}),),
        marks=(Mark("student_matches_teacher", at=lambda c: _stationary(c), label=r"minimum: $p_{{S,0}} = q_0$ at $z_0$ = {x:.3g}", once=True),
               Mark("gradient_zero", at=lambda c: _stationary(c), panel="grad", y="zero", label=r"gradient 0 at $z_0$ = {x:.3g}", once=True),
               Mark("teacher_entropy", kind="gap", at=lambda c: c.lo + 0.2 * (c.hi - c.lo), to="kl", label=r"constant gap $H(q)$ = {gap:.3f}", once=True)))
    gallery = (Shot("kd", "CE to the teacher's soft labels = KL(q‖p) + H(q): same minimiser, gradient p_S - p_T"),)
    references = ("hinton2015",)
    aliases = ("distillation", "KDLoss")
    family = "sft"
    title = "knowledge distillation"
    lesson = ("CE to the teacher's soft labels = KL(p_T‖p_S) + H(p_T); ∂/∂z_k = p_S,k - p_T,k; with a temperature τ both softmaxes "
              "take logits/τ and the loss is multiplied by τ², so the gradient is τ(p_S - p_T) at temperature τ")
    params = (Param("temperature", 1.0, "temperature τ dividing the student's and the teacher's logits; the loss is multiplied by τ² "
                    "(Hinton et al. 2015, §2)", r"\tau", low=0.0, low_open=True, high=100.0),)
    production = "lossviz.losses:KDLoss"
    variable_latex = {**{n: f"z_{k}" for k, n in enumerate(STUDENT)}, **{n: f"t_{k}" for k, n in enumerate(TEACHER)}}
    constants = TEACHER  # the frozen teacher's logits

    def variables(self, p):
        return STUDENT + TEACHER

    def loss(self, p):
        tau = p["temperature"]
        z = [sym(n) / tau for n in STUDENT]
        t = [sym(n) / tau for n in TEACHER]
        lse_z, lse_t = LogSumExp(*z), LogSumExp(*t)
        return -tau ** 2 * sp.Add(*[sp.exp(t[k] - lse_t) * (z[k] - lse_z) for k in range(VOCAB)])

    def facts(self, d):
        tau = d.p["temperature"]
        # at temperature τ: p_S = softmax(z/τ), p_T = softmax(t/τ); the gradient of τ²·CE is τ(p_S - p_T)
        student_minus_teacher = sp.Matrix([tau * (_softmax(STUDENT, k, tau) - _softmax(TEACHER, k, tau)) for k in range(VOCAB)])
        grad = lambda: sp.Matrix([elementary(d.gradient[n]) for n in STUDENT])
        q = [_softmax(TEACHER, k, tau) for k in range(VOCAB)]
        p_s = [_softmax(STUDENT, k, tau) for k in range(VOCAB)]
        cross_entropy = -sp.Add(*[q[k] * sp.log(p_s[k]) for k in range(VOCAB)])
        teacher_entropy = -sp.Add(*[q[k] * sp.log(q[k]) for k in range(VOCAB)])
        kl = sp.Add(*[q[k] * (sp.log(q[k]) - sp.log(p_s[k])) for k in range(VOCAB)])
        return [
            Fact("gradient_minus_student_minus_teacher", "simplify(∂L/∂z - τ(p_S - p_T)): zero (τ = 1: p_S - p_T)",
                 lambda: sp.simplify(grad() - student_minus_teacher)),
            Fact("kl_minus_ce_plus_entropy", "simplify(KL(p_T‖p_S) - (CE - H(p_T))): zero, so minimising CE minimises KL",
                 lambda: sp.simplify(sp.expand_log(kl - (cross_entropy - teacher_entropy), force=True))),
            Fact("loss_minus_ce", "simplify(card loss - τ²·CE(p_T, p_S)): zero",
                 lambda: sp.simplify(sp.expand_log(elementary(d.loss) - tau ** 2 * cross_entropy, force=True))),
        ]

    def example(self, values, p, dtype=None, device=None):
        import torch

        from lossviz.losses import KDLoss

        logits = tensor([[[values[n] for n in STUDENT]]], dtype, device)
        teacher = tensor([[[values[n] for n in TEACHER]]], dtype, device)
        where = {**{n: (0, (0, 0, k)) for k, n in enumerate(STUDENT)}, **{n: (1, (0, 0, k)) for k, n in enumerate(TEACHER)}}
        return Example(KDLoss(temperature=float(p["temperature"])), [logits, teacher, torch.zeros(1, 1, dtype=torch.long, device=device)], where)

    def sample(self, rng, p):
        return {n: float(rng.normal() * 2) for n in STUDENT + TEACHER}

    def batches(self, rng, p):
        from lossviz.losses import KDLoss

        rows, steps = 2, 4
        logits, teacher = rng.normal(size=(rows, steps, VOCAB)) * 2, rng.normal(size=(rows, steps, VOCAB)) * 2
        label = rng.integers(0, VOCAB, size=(rows, steps))
        label[0, 0] = label[1, 2] = -100
        kept = [(b, t) for b in range(rows) for t in range(steps) if label[b, t] != -100]
        where = lambda b, t: {**{n: (0, (b, t, k)) for k, n in enumerate(STUDENT)}, **{n: (1, (b, t, k)) for k, n in enumerate(TEACHER)}}
        terms = [Term(where(b, t), 1 / len(kept)) for b, t in kept]
        make = lambda device: KDLoss(temperature=float(p["temperature"]))
        return [BatchSpec("ignored labels", make, [logits, teacher, label], ["logits", "teacher_logits", "label"], [0, 1], terms)]
