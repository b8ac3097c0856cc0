r"""SimPO: a reference-free margin of per-token log-probs, shifted by a target reward margin γ."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary
from ._common import once, solve_one, sym, tensor
from ._pairwise import CHOSEN_LENGTH, REJECTED_LENGTH
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .figure import Axis, LessonFigure, Mark, Panel, Shot

LOGPS = ("policy_chosen_logps", "policy_rejected_logps")
LOGPS_LATEX = {"policy_chosen_logps": r"\pi^{c}", "policy_rejected_logps": r"\pi^{r}"}
M = sp.Symbol("m", real=True)


def per_token_margin(p):
    return sym("policy_chosen_logps") / p["chosen_length"] - sym("policy_rejected_logps") / p["rejected_length"]


def in_m(expr, p):
    """A function of the two summed log-probs along the per-token margin m (rejected at 0)."""
    return expr.subs({sym("policy_chosen_logps"): M * p["chosen_length"], sym("policy_rejected_logps"): 0})


def logps_batch(card, rng, p, make_module, scaled, pairs_label="mean over pairs"):
    """Pairs of summed log-probs (negative) at per-token margins ``scaled`` (in units of 1/β), with random lengths."""
    import numpy as np

    beta = float(p["beta"])
    rows, lengths = [], []
    for u in scaled:
        lc, lr = float(rng.integers(1, 60)), float(rng.integers(1, 60))
        m = (u + rng.uniform(-0.05, 0.05)) / beta
        mean_r = -rng.uniform(0.05, 3.0)
        mean_c = mean_r + m
        rows.append((mean_c * lc, mean_r * lr))
        lengths.append((lc, lr))
    args = [np.array([r[0] for r in rows]), np.array([r[1] for r in rows])]
    terms = [Term({n: (k, (i,)) for k, n in enumerate(LOGPS)}, 1 / len(rows)) for i in range(len(rows))]
    spec = BatchSpec(pairs_label, make_module, args, LOGPS, [0, 1], terms)
    return spec, [np.array([l[0] for l in lengths]), np.array([l[1] for l in lengths])]


class SimPO(Card):
    name = "simpo"
    order = 1  # teaching order: simpo, cpo, orpo
    family = "reference-free"
    production = "lossviz.losses:SimPOLoss"
    references = ("simpo",)
    aliases = ("SimPOLoss",)
    title = "SimPO"
    lesson = ("-log σ(β(π_c/L_c - π_r/L_r) - γ): no reference model, per-token log-probs, and a target reward margin γ: "
              "the push is half its largest at the per-token margin γ/β")
    params = (Param("beta", 2.0, "scale β of the per-token log-prob margin (SimPO's reward is β/L·log π)", r"\beta", low=0.0, low_open=True, high=100.0),
              Param("gamma", 0.5, "target reward margin γ (TRL's and Liger's γ; HALOs' gamma_beta_ratio is γ/β)", r"\gamma", low=0.0, high=100.0),
              Param("label_smoothing", 0.0, "probability ε that a preference label is flipped", r"\varepsilon", low=0.0, high=0.5, high_open=True),
              CHOSEN_LENGTH, REJECTED_LENGTH)
    variable_latex = LOGPS_LATEX
    # the chosen summed log-prob moves, the rejected one stays at -40 (-4 nats per token at L_r = 10): m = π_c/L_c + 40/L_r
    axis = Axis("x", {"policy_chosen_logps": "x", "policy_rejected_logps": -40},
                lambda p: (p["chosen_length"] * ((p["gamma"] - 6.0) / p["beta"] - 40 / p["rejected_length"]),
                           p["chosen_length"] * ((p["gamma"] + 6.0) / p["beta"] - 40 / p["rejected_length"])),
                r"chosen summed log-prob $\pi^c$ ($\pi^r = -40$)")
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\log\sigma(\beta m - \gamma)$, $m = \pi^c/L_c - \pi^r/L_r$"), Panel("grad", r"gradient $\partial\mathcal{L}/\partial\pi^c$")),
        title="the DPO-shaped curve shifted by the target margin: a pair counts as ranked right only beyond m = γ/β",
        marks=(Mark("target_margin", kind="edge", at=lambda c: c.p["chosen_length"] * (c.p["gamma"] / c.p["beta"] - 40 / c.p["rejected_length"]),
                    label=r"target m = γ/β at $\pi^c$ = {x:.3g}"),))
    gallery = (Shot("simpo", "SimPO: -log σ(βm - γ) on the per-token margin m, with no reference model; the target reward margin γ "
                    "moves the curve right by γ/β", sweep=("gamma", (0.0, 0.5, 1.5))),)

    def variables(self, p):
        return LOGPS

    def loss(self, p):
        u = p["beta"] * per_token_margin(p) - p["gamma"]
        eps = p["label_smoothing"]
        return -(1 - eps) * LogSigmoid(u) - eps * LogSigmoid(-u)

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "gamma": float(p["gamma"]), "label_smoothing": float(p["label_smoothing"])}

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import SimPOLoss

        args = [tensor([values[n]], dtype, device) for n in LOGPS] + [tensor([float(p[k])], dtype, device) for k in ("chosen_length", "rejected_length")]
        return Example(SimPOLoss(**self.production_kwargs(p)), args, {n: (i, (0,)) for i, n in enumerate(LOGPS)})

    def sample(self, rng, p):
        # summed log-probs of real responses: negative
        return {n: -float(rng.uniform(0.1, 3.0) * p[k]) for n, k in zip(LOGPS, ("chosen_length", "rejected_length"))}

    def batches(self, rng, p):
        from lossviz.losses import SimPOLoss

        gamma = float(p["gamma"])
        spec, lengths = logps_batch(self, rng, p, lambda device: SimPOLoss(**self.production_kwargs(p)),
                                    [gamma + u for u in (-6.0, -1.0, -0.3, 0.3, 1.0, 6.0)])
        spec.args += lengths
        spec.arg_names = list(spec.arg_names) + ["chosen_lengths", "rejected_lengths"]
        for t in spec.terms:
            i = t.where["policy_chosen_logps"][1]
            t.extra = {"chosen_length": (2, i), "rejected_length": (3, i)}
        spec.symbolic = ("chosen_length", "rejected_length")
        return [spec]

    def facts(self, d):
        beta, gamma = d.p["beta"], d.p["gamma"]
        slope = once(lambda: sp.diff(in_m(d.loss, d.p), M))
        clean = once(lambda: slope().subs(d.p["label_smoothing"], 0) if isinstance(d.p["label_smoothing"], sp.Symbol) else slope())
        return [
            Fact("gradient_in_m", "∂L/∂m along the per-token margin", slope),
            Fact("target_margin", "the per-token margin where the push -∂L/∂m is half its largest, β/2 (ε = 0): γ/β",
                 lambda: solve_one(elementary(clean() + beta / 2), M)),
            Fact("shift", "L(m) - L_{γ=0}(m - γ/β): zero, γ moves the whole curve right by γ/β",
                 lambda: sp.simplify(in_m(d.loss, d.p) - in_m(d.loss, d.p).subs(gamma, 0).subs(M, M - gamma / beta)) if isinstance(gamma, sp.Symbol)
                 else sp.simplify(in_m(d.loss, d.p) - in_m(self.loss({**d.p, "gamma": 0}), d.p).subs(M, M - gamma / beta))),
            Fact("chosen_gradient_times_length", "L_c·∂L/∂π_c = -L_r·∂L/∂π_r: each response's gradient is divided by its length",
                 lambda: sp.simplify(d.p["chosen_length"] * d.gradient["policy_chosen_logps"] + d.p["rejected_length"] * d.gradient["policy_rejected_logps"])),
        ]
