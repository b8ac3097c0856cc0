r"""SFT cards on an explicit 3-token vocabulary: next-token cross-entropy (GPTLM) and distillation (KD)."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSumExp, elementary
from ._common import sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .figure import Axis, CustomFigure, Shot

VOCAB = 3
STUDENT = tuple(f"logits_{k}" for k in range(VOCAB))
TEACHER = tuple(f"teacher_logits_{k}" for k in range(VOCAB))


def _softmax(names, k):
    z = [sym(n) for n in names]
    return sp.exp(z[k]) / sp.Add(*[sp.exp(v) for v in z])


class GPTLM(Card):
    name = "gptlm"
    axis = Axis("z_0", {"logits_0": "z_0", "logits_1": 1.0, "logits_2": -1.0}, (-6.0, 6.0), r"logit $z_0$ ($z_1 = 1$, $z_2 = -1$)")
    figure = CustomFigure("lossviz.plots.custom:gptlm")  # one curve per target token and the masked position's zero gradient
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
    axis = Axis("z_0", {"logits_0": "z_0", "logits_1": 0, "logits_2": 0, "teacher_logits_0": 1.0, "teacher_logits_1": 0, "teacher_logits_2": -1.0},
                (-6.0, 6.0), r"student logit $z_0$ (teacher logits $t$ = (1, 0, -1))")
    figure = CustomFigure("lossviz.plots.custom:kd")  # CE and KL side by side with their constant gap H(q)
    gallery = (Shot("kd", "CE to the teacher's soft labels = KL(q‖p) + H(q): same minimiser, gradient p_S - p_T"),)
    references = ("hinton2015",)
    aliases = ("distillation", "KDLoss")
    family = "sft"
    title = "knowledge distillation"
    lesson = "CE to the teacher's soft labels = KL(p_T‖p_S) + H(p_T); ∂/∂z_k = p_S,k - p_T,k"
    production = "lossviz.losses:KDLoss"
    variable_latex = {**{n: f"z_{k}" for k, n in enumerate(STUDENT)}, **{n: f"t_{k}" for k, n in enumerate(TEACHER)}}
    constants = TEACHER  # the frozen teacher's logits

    def variables(self, p):
        return STUDENT + TEACHER

    def loss(self, p):
        z = [sym(n) for n in STUDENT]
        t = [sym(n) for n in TEACHER]
        lse_z, lse_t = LogSumExp(*z), LogSumExp(*t)
        return -sp.Add(*[sp.exp(t[k] - lse_t) * (z[k] - lse_z) for k in range(VOCAB)])

    def facts(self, d):
        student_minus_teacher = sp.Matrix([_softmax(STUDENT, k) - _softmax(TEACHER, k) for k in range(VOCAB)])
        grad = lambda: sp.Matrix([elementary(d.gradient[n]) for n in STUDENT])
        q = [_softmax(TEACHER, k) for k in range(VOCAB)]
        p_s = [_softmax(STUDENT, k) for k in range(VOCAB)]
        cross_entropy = -sp.Add(*[q[k] * sp.log(p_s[k]) for k in range(VOCAB)])
        teacher_entropy = -sp.Add(*[q[k] * sp.log(q[k]) for k in range(VOCAB)])
        kl = sp.Add(*[q[k] * (sp.log(q[k]) - sp.log(p_s[k])) for k in range(VOCAB)])
        return [
            Fact("gradient_minus_student_minus_teacher", "simplify(∂L/∂z - (p_S - p_T)): zero", lambda: sp.simplify(grad() - student_minus_teacher)),
            Fact("kl_minus_ce_plus_entropy", "simplify(KL(p_T‖p_S) - (CE - H(p_T))): zero, so minimising CE minimises KL",
                 lambda: sp.simplify(sp.expand_log(kl - (cross_entropy - teacher_entropy), force=True))),
            Fact("loss_minus_ce", "simplify(card loss - CE(p_T, p_S)): zero", lambda: sp.simplify(sp.expand_log(elementary(d.loss) - cross_entropy, force=True))),
        ]

    def example(self, values, p, dtype=None, device=None):
        import torch

        from lossviz.losses import KDLoss

        logits = tensor([[[values[n] for n in STUDENT]]], dtype, device)
        teacher = tensor([[[values[n] for n in TEACHER]]], dtype, device)
        where = {**{n: (0, (0, 0, k)) for k, n in enumerate(STUDENT)}, **{n: (1, (0, 0, k)) for k, n in enumerate(TEACHER)}}
        return Example(KDLoss(), [logits, teacher, torch.zeros(1, 1, dtype=torch.long, device=device)], where)

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
        return [BatchSpec("ignored labels", lambda device: KDLoss(), [logits, teacher, label], ["logits", "teacher_logits", "label"], [0, 1], terms)]
