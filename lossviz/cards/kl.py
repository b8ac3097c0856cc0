r"""The per-token KL estimators k1, k2, k3 and |d|, as values and as loss terms (Schulman 2020; Tang & Munos 2025).

With :math:`d = \log\pi(y) - \log\pi_{\mathrm{ref}}(y)` on a token sampled from π: k1 = d, k2 = d²/2,
k3 = e^{-d} - 1 + d, abs = |d|. As values k1 and k3 are unbiased estimates of KL(π‖π_ref).
As a *loss term* (the sample held fixed, the gradient taken through log π) their expected
gradients differ; the card derives them by sympy on a tabular policy π = softmax(θ) over three
actions, summing over the actions: k1 gives 0, k2 gives ∇KL(π‖π_ref), k3 gives ∇KL(π_ref‖π).
The production's k3 clamps the exponent at d ≥ -x_max (x_max = 532.3 in float64): below it the
value is constant and the gradient zero.

verl's straight-through ``k1+`` and ``k3+`` take the *value* of k1 or k3 and the *gradient* of k2:
k_n(sg(d)) + k2(d) - sg(k2(d)). The card writes the stop-gradient with detached copies of the two
inputs (``log_probs_detached``, ``log_probs_base_detached``: equal to ``log_probs`` and
``log_probs_base`` at every point the production sees, gradient 0 by construction), as the cispo
card does; so their expected gradient as a loss term is k2's, ∇KL(π‖π_ref), while the expected
value stays KL(π‖π_ref).
"""

from __future__ import annotations

import sympy as sp

from ._common import once, sym, tensor
from ._rl import FLOAT64_LOG_RATIO_MAX, TOP, draw_point
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .controls import Hold
from .figure import Axis, LessonFigure, Panel, Shot
from .grpo import _dashed

ESTIMATORS = ("k1", "k2", "k3", "abs", "k1+", "k3+")
STRAIGHT_THROUGH = ("k1+", "k3+")  # value of k1 / k3, gradient of k2 (verl)
VARS = ("log_probs", "log_probs_base")
DETACHED = ("log_probs_detached", "log_probs_base_detached")
D = sp.Symbol("d", real=True)
ACTIONS = 3
THETA = tuple(sp.Symbol(f"theta_{a}", real=True) for a in range(ACTIONS))
# a tabular policy and reference: probabilities p_a, q_a (the last one is 1 - the others)
P = tuple(sp.Symbol(f"p_{a}", positive=True) for a in range(ACTIONS - 1))
Q = tuple(sp.Symbol(f"q_{a}", positive=True) for a in range(ACTIONS - 1))


def estimator(name: str, d, top=TOP):
    """k(d) of ``name``; k3 with the production's clamp of d at -top (``top`` = sp.oo: unclamped)."""
    if name == "k1":
        return d
    if name == "k2":
        return d ** 2 / 2
    if name == "abs":
        return sp.Piecewise((d, d >= 0), (-d, True))
    k3 = lambda d: sp.exp(-d) - 1 + d
    return k3(d) if top is sp.oo else sp.Piecewise((k3(-top), d < -top), (k3(d), True))


def tabular(k, grad_k=None):
    """(E_π[k(d)], E_π[∇_θ k(d)]) on π = softmax(θ) over the actions, the sample a ~ π held fixed,
    written in the probabilities p (π at θ = log p) and q (π_ref). ``grad_k``: the function whose
    gradient a straight-through estimator takes (default ``k``)."""
    grad_k = k if grad_k is None else grad_k
    probs = [sp.exp(t) for t in THETA]
    pi = [e / sum(probs) for e in probs]
    p = list(P) + [1 - sum(P)]
    q = list(Q) + [1 - sum(Q)]
    at = {t: sp.log(pa) for t, pa in zip(THETA, p)}
    d = [sp.log(pi[a]) - sp.log(q[a]) for a in range(ACTIONS)]
    value = sum(p[a] * k(sp.log(p[a]) - sp.log(q[a])) for a in range(ACTIONS))
    grad = [sum(p[a] * sp.diff(grad_k(d[a]), t).subs(at) for a in range(ACTIONS)) for t in THETA]
    return sp.simplify(value), sp.Matrix([sp.simplify(g) for g in grad])


def _figure_title(c) -> str:
    if c.p["kl_estimator"] in STRAIGHT_THROUGH:  # the drawn value is the surrogate autograd differentiates
        k = c.p["kl_estimator"][:-1]
        return (f"straight-through: the surrogate {k}(sg(d)) + k2(d) − sg(k2(d)) with sg(d) held at 1 "
                f"(= {k}'s value at d = 1 only) and its gradient, k2's (= d)")
    return "as loss terms their expected gradients are 0 (k1), ∇KL(π‖π_ref) (k2) and ∇KL(π_ref‖π) (k3)"


class _Summed:
    """compute_approx_kl(...) summed over its elements (it returns per-token values): a scalar to differentiate."""

    def __init__(self, kl_estimator):
        self.kl_estimator = kl_estimator

    def __call__(self, log_probs, log_probs_base):
        from lossviz.losses import compute_approx_kl

        return compute_approx_kl(log_probs, log_probs_base, kl_estimator=self.kl_estimator).sum()


class KLEstimators(Card):
    name = "kl-estimators"
    aliases = ("kl", "compute_approx_kl")
    family = "kl"
    title = "KL estimators k1, k2, k3, |d|, k1+, k3+"
    lesson = ("per-token estimates of KL(π‖π_ref) from d = log π - log π_ref: as loss terms k1's expected gradient is 0, "
              "k2's is ∇KL(π‖π_ref) and k3's is ∇KL(π_ref‖π); the straight-through k1+ and k3+ keep k1's or k3's value with k2's gradient")
    production = "lossviz.losses:compute_approx_kl"
    params = (Param("kl_estimator", "k3", "the estimator (OpenRLHF / verl names)", choices=ESTIMATORS),)
    variable_latex = {"log_probs": r"\log\pi", "log_probs_base": r"\log\pi_{\mathrm{ref}}",
                      "log_probs_detached": r"\mathrm{sg}(\log\pi)", "log_probs_base_detached": r"\mathrm{sg}(\log\pi_{\mathrm{ref}})"}
    constants = ("log_probs_base",)
    detached = DETACHED  # read only by k1+ / k3+, inside the detached value
    references = ("schulman2020", "tangmunos2025", "openrlhf", "verl")
    cases_doc = "kl_estimator picks the estimator k(d)"
    # the axis moves log π with the detached copies held (what autograd differentiates, as in the cispo card): a
    # straight-through curve is k2's parabola shifted to meet k_n's value at log π = sg(log π) = 1; its slope is k2's, d
    controls = (Hold(("log_probs_base", "log_probs_base_detached"), "log_ref", -3.0, 0.0, "log π_ref of the token (d = log π - log π_ref)",
                     default=0.0),)
    axis = Axis("d", lambda p: {"log_probs": "d", "log_probs_base": 0,
                                **({"log_probs_detached": 1, "log_probs_base_detached": 0} if p["kl_estimator"] in STRAIGHT_THROUGH else {})},
                (-2.0, 2.0), r"sampled token's $\log\pi$ ($= d$ at $\log\pi_{\mathrm{ref}} = 0$)")
    figure = LessonFigure(
        panels=(Panel("loss", "estimate $k(d)$", style=_dashed), Panel("grad", r"gradient $\partial k/\partial d$", style=_dashed)),
        title=lambda c: _figure_title(c),
        tag="{kl_estimator}", label=lambda c: c.p["kl_estimator"], sweep_note="")
    gallery = (Shot("kl-estimators", "KL estimators: k1 = d, k2 = d²/2, k3 = e^-d - 1 + d, |d|; as loss terms their expected gradients "
                    "are 0, ∇KL(π‖π_ref) and ∇KL(π_ref‖π)", sweep=("kl_estimator", ESTIMATORS[:4])),)  # k1+ / k3+ repeat k1, k3 and k2

    def variables(self, p):
        return VARS + (DETACHED if p["kl_estimator"] in STRAIGHT_THROUGH else ())

    def loss(self, p):
        name = p["kl_estimator"]
        d = sym("log_probs") - sym("log_probs_base")
        if name not in STRAIGHT_THROUGH:
            return estimator(name, d)
        held = sym("log_probs_detached") - sym("log_probs_base_detached")  # sg(d)
        return estimator(name[:-1], held) + estimator("k2", d) - estimator("k2", held)

    def facts(self, d):
        name = d.params["kl_estimator"]
        value_of = name[:-1] if name in STRAIGHT_THROUGH else name  # k1+ / k3+: the value of k1 / k3 ...
        grad_of = "k2" if name in STRAIGHT_THROUGH else name  # ... and the gradient of k2
        both = once(lambda: tabular(lambda x: estimator(value_of, x, sp.oo), lambda x: estimator(grad_of, x, sp.oo)))
        facts = [Fact("estimator", "k(d) (unclamped)" + (f": the value of {value_of}" if name in STRAIGHT_THROUGH else ""),
                      lambda: estimator(value_of, D, sp.oo)),
                 Fact("gradient_in_d", "∂k/∂d: how hard one token is pulled back towards π_ref"
                      + (" (straight-through: k2's, d)" if name in STRAIGHT_THROUGH else ""),
                      lambda: sp.piecewise_fold(sp.diff(estimator(grad_of, D, sp.oo), D)))]
        if name == "abs":  # |d| has no closed form worth reading on the tabular policy
            return facts
        return facts + [
            Fact("expected_gradient", "E_{a~π}[∇_θ k(d_a)], the sample held fixed, on a 3-action tabular policy π = softmax(θ) "
                 "at π = (p_0, p_1, 1-p_0-p_1), π_ref = (q_0, q_1, 1-q_0-q_1): 0 for k1, ∇KL(π‖π_ref) for k2, k1+ and k3+, "
                 "∇KL(π_ref‖π) for k3",
                 lambda: both()[1]),
            Fact("expected_value", "E_π[k(d)] on the same policy: KL(π‖π_ref) for k1, k3, k1+ and k3+ (unbiased)", lambda: both()[0]),
        ]

    def example(self, values, p, dtype=None, device=None):
        args = [tensor([[values[n]]], dtype, device) for n in VARS]
        return Example(_Summed(p["kl_estimator"]), args, {n: (i, (0, 0)) for i, n in enumerate(VARS)})

    def sample(self, rng, p):
        point = draw_point(rng, VARS, lambda v: abs(v["log_probs"] - v["log_probs_base"]) > 0.05, scale=1.0)
        if p["kl_estimator"] in STRAIGHT_THROUGH:  # the production's detached copies read the same inputs
            point.update({held: point[v] for held, v in zip(DETACHED, VARS)})
        return point

    def batches(self, rng, p):
        """For each estimator, a (3, 4) batch of token log-probs, the estimate summed over every token (weight 1).

        k1+ / k3+ differentiate k2 but return k1 / k3, so finite differences of their value cannot match their
        gradient by design: their batches give every token one log π and one log π_ref (three batches: d < 0,
        d > 0, d near 0), and the detached copies read the batch means (``("mean", arg)``, as the cispo card
        does); verification then compares value and gradient with the card and skips the differencing."""
        import numpy as np

        specs = []
        for name in STRAIGHT_THROUGH:
            for label, gap in (("d < 0", -float(rng.uniform(0.3, 2.0))), ("d > 0", float(rng.uniform(0.3, 2.0))),
                               ("d near 0", float(rng.uniform(-0.1, 0.1)))):
                rows, steps = 2, 3
                base_value = float(rng.normal() - 1.0)
                lp, base = np.full((rows, steps), base_value + gap), np.full((rows, steps), base_value)
                terms = [Term({"log_probs": (0, (b, t)), "log_probs_base": (1, (b, t)), "log_probs_detached": ("mean", 0),
                               "log_probs_base_detached": ("mean", 1)}, 1.0, case={"kl_estimator": name})
                         for b in range(rows) for t in range(steps)]
                specs.append(BatchSpec(f"{name} summed over a (2, 3) batch, every token at d = {gap:.3g} ({label})",
                                       lambda device, name=name: _Summed(name), [lp, base], list(VARS), [0, 1], terms))
        for name in ESTIMATORS[:4]:
            rows, steps = 3, 4
            points = [self.sample(rng, p) for _ in range(rows * steps)]
            lp, base = (np.array([pt[n] for pt in points]).reshape(rows, steps) for n in VARS)
            terms = [Term({"log_probs": (0, (b, t)), "log_probs_base": (1, (b, t))}, 1.0, case={"kl_estimator": name})
                     for b in range(rows) for t in range(steps)]
            specs.append(BatchSpec(f"{name} summed over a (3, 4) batch", lambda device, name=name: _Summed(name),
                                   [lp, base], list(VARS), [0, 1], terms))
        return specs
