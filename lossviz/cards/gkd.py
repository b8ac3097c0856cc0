r"""GKD on an explicit 3-token vocabulary: the generalised Jensen-Shannon divergence between teacher and student."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSumExp
from ._common import sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .controls import GradientOf, Hold
from .figure import Axis, LessonFigure, Panel, Shot
from .sft import STUDENT, TEACHER, VOCAB


def log_softmax(names, tau):
    z = [sym(n) / tau for n in names]
    lse = LogSumExp(*z)
    return [zk - lse for zk in z]


def kl(log_p, log_q):
    """KL(p‖q) = Σ_k p_k (log p_k - log q_k), from log-probabilities."""
    return sp.Add(*[sp.exp(a) * (a - b) for a, b in zip(log_p, log_q)])


def generalised_jsd(beta, tau):
    """β = 0: KL(p_T‖p_S); β = 1: KL(p_S‖p_T); otherwise β KL(p_T‖m) + (1-β) KL(p_S‖m), m = β p_T + (1-β) p_S."""
    log_s, log_t = log_softmax(STUDENT, tau), log_softmax(TEACHER, tau)
    if beta == 0:
        return kl(log_t, log_s)
    if beta == 1:
        return kl(log_s, log_t)
    log_m = [LogSumExp(sp.log(beta) + t, sp.log(1 - beta) + s) for s, t in zip(log_s, log_t)]
    interior = beta * kl(log_t, log_m) + (1 - beta) * kl(log_s, log_m)
    if isinstance(beta, sp.Symbol):  # β kept symbolic (derive, verify): both ends as production computes them
        return sp.Piecewise((kl(log_t, log_s), beta <= 0), (kl(log_s, log_t), beta >= 1), (interior, True))
    return interior


class GKD(Card):
    name = "gkd"
    family = "sft"
    order = 1  # after gptlm and kd (order 0): the generalised form of kd
    production = "lossviz.losses:GKDLoss"
    references = ("gkd", "minillm")
    aliases = ("GKDLoss", "generalised-jsd", "jsd")
    title = "GKD (generalised JSD)"
    lesson = ("β KL(p_T‖m) + (1-β) KL(p_S‖m), m = β p_T + (1-β) p_S, on softmax(logits/τ): β = 0 is the forward KL(p_T‖p_S) "
              "(mass-covering), β = 1 the reverse KL(p_S‖p_T) (mode-seeking)")
    params = (Param("beta", 0.5, "interpolation β of the generalised JSD: 0 forward KL, 1 reverse KL", r"\beta", low=0.0, high=1.0),
              Param("temperature", 1.0, "temperature τ dividing both the student's and the teacher's logits (no τ² factor)", r"\tau",
                    low=0.0, low_open=True, high=100.0))
    variable_latex = {**{n: f"z_{k}" for k, n in enumerate(STUDENT)}, **{n: f"t_{k}" for k, n in enumerate(TEACHER)}}
    constants = TEACHER  # the frozen teacher's logits
    controls = (Hold("teacher_logits_0", "t_0", -5.0, 5.0, "teacher logit of token 0"), Hold("teacher_logits_1", "t_1", -5.0, 5.0, "teacher logit of token 1"),
                Hold("teacher_logits_2", "t_2", -5.0, 5.0, "teacher logit of token 2"), GradientOf(STUDENT))
    axis = Axis("z_0", {"logits_0": "z_0", "logits_1": 0, "logits_2": 0, "teacher_logits_0": 1.0, "teacher_logits_1": 0, "teacher_logits_2": -1.0},
                (-6.0, 6.0), r"student logit $z_0$ (student $z_1 = z_2 = 0$)" + "\n" + r"teacher logits $t$ = (1, 0, −1)")
    figure = LessonFigure(
        panels=(Panel("loss", r"$\mathrm{JSD}_\beta(p_T, p_S)$"), Panel("grad", r"$\partial\mathcal{L}/\partial z_0$")),
        title="β = 0 is the forward KL(p_T‖p_S), β = 1 the reverse KL(p_S‖p_T), computed as such; in between the generalised JSD")
    gallery = (Shot("gkd", "GKD's generalised JSD on 3 tokens: β = 0 is the forward KL(p_T‖p_S), β = 1 the reverse KL(p_S‖p_T); "
                    "in between the mixture m = βp_T + (1-β)p_S", sweep=("beta", (0.0, 0.5, 1.0))),)

    def variables(self, p):
        return STUDENT + TEACHER

    def loss(self, p):
        return generalised_jsd(p["beta"], p["temperature"])

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "temperature": float(p["temperature"])}

    def facts(self, d):
        beta, tau = d.p["beta"], d.p["temperature"]
        log_s, log_t = log_softmax(STUDENT, tau), log_softmax(TEACHER, tau)
        forward, reverse = kl(log_t, log_s), kl(log_s, log_t)
        facts = [Fact("gradient", "∂L/∂z_k, k = 0, 1, 2, as sympy differentiates it", lambda: sp.Matrix([d.gradient[n] for n in STUDENT]))]
        if isinstance(beta, sp.Symbol):
            facts += [
                Fact("beta_zero", "the card's loss at β = 0 minus KL(p_T‖p_S): zero (the forward KL, computed as such)",
                     lambda: sp.simplify(generalised_jsd(0, tau) - forward)),
                Fact("beta_one", "the card's loss at β = 1 minus KL(p_S‖p_T): zero (the reverse KL)",
                     lambda: sp.simplify(generalised_jsd(1, tau) - reverse)),
            ]
        return facts

    def example(self, values, p, dtype=None, device=None):
        import torch

        from lossviz.losses import GKDLoss

        logits = tensor([[[values[n] for n in STUDENT]]], dtype, device)
        teacher = tensor([[[values[n] for n in TEACHER]]], dtype, device)
        where = {**{n: (0, (0, 0, k)) for k, n in enumerate(STUDENT)}, **{n: (1, (0, 0, k)) for k, n in enumerate(TEACHER)}}
        return Example(GKDLoss(**self.production_kwargs(p)), [logits, teacher, torch.zeros(1, 1, dtype=torch.long, device=device)], where)

    def sample(self, rng, p):
        return {n: float(rng.normal() * 2) for n in STUDENT + TEACHER}

    def batches(self, rng, p):
        from lossviz.losses import GKDLoss

        rows, steps = 2, 4
        logits, teacher = rng.normal(size=(rows, steps, VOCAB)) * 2, rng.normal(size=(rows, steps, VOCAB)) * 2
        label = rng.integers(0, VOCAB, size=(rows, steps))
        label[0, 0] = label[1, 2] = -100
        kept = [(b, t) for b in range(rows) for t in range(steps) if label[b, t] != -100]
        where = lambda b, t: {**{n: (0, (b, t, k)) for k, n in enumerate(STUDENT)}, **{n: (1, (b, t, k)) for k, n in enumerate(TEACHER)}}
        terms = [Term(where(b, t), 1 / len(kept)) for b, t in kept]
        make = lambda device: GKDLoss(**self.production_kwargs(p))
        return [BatchSpec("ignored labels", make, [logits, teacher, label], ["logits", "teacher_logits", "label"], [0, 1], terms)]
