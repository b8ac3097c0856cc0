r"""ORPO: the chosen response's NLL plus λ times the log-sigmoid of the log odds ratio, no reference model."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary
from ._common import once, sym, tensor
from ._pairwise import CHOSEN_LENGTH, REJECTED_LENGTH
from .base import Card, Example, Fact, Param
from .figure import Axis, LessonFigure, Panel, Shot
from .simpo import LOGPS, LOGPS_LATEX

#: production clamps the mean log-prob at minus the smallest normal number of its dtype (float64: 2^-1022)
TOP = -sp.Float("2.2250738585072014e-308")
LC, LR = sp.Symbol("lbar_c", negative=True), sp.Symbol("lbar_r", negative=True)


def log_odds(mean):
    r"""log(P/(1-P)) at P = e^{mean}: mean - log(1 - e^{mean}) below the clamp, its value at the clamp above it
    (there log(1 - e^{-2^{-1022}}) = -1022 log 2 to 300 digits)."""
    return sp.Piecewise((mean - sp.log(1 - sp.exp(mean)), mean < TOP), (TOP + 1022 * sp.log(2), True))  # -2^-1022 = TOP


def orpo_loss(lam, mean_c, mean_r):
    return -mean_c - lam * LogSigmoid(log_odds(mean_c) - log_odds(mean_r))


class ORPO(Card):
    name = "orpo"
    order = 3
    family = "reference-free"
    production = "lossviz.losses:ORPOLoss"
    references = ("orpo",)
    aliases = ("ORPOLoss",)
    title = "ORPO"
    lesson = ("-ℓ̄_c - λ log σ(o_c - o_r), o = ℓ̄ - log(1 - e^{ℓ̄}) the log odds of the mean log-prob ℓ̄: the NLL plus an odds-ratio "
              "term whose push down on a rejected response grows without bound, as 1/(1 - e^{ℓ̄_r}), when that response is likely")
    params = (Param("beta", 0.1, "weight λ of the odds-ratio term (TRL's beta; ORPOLoss(lambda_=...))", r"\lambda", low=0.0, low_open=True),
              CHOSEN_LENGTH, REJECTED_LENGTH)
    variable_latex = LOGPS_LATEX
    # the rejected response's summed log-prob moves; the chosen one's stays at -10 (-1 nat per token at L_c = 10)
    axis = Axis("x", {"policy_chosen_logps": -10, "policy_rejected_logps": "x"},
                lambda p: (-4.0 * p["rejected_length"], -0.05 * p["rejected_length"]), r"rejected summed log-prob $\pi^r$ ($\pi^c = -10$)")
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\bar\ell_c - \lambda\log\sigma(o_c - o_r)$"), Panel("grad", r"gradient $\partial\mathcal{L}/\partial\pi^r$")),
        title="the push down on the rejected response, λσ(o_r - o_c)/(1 - exp ℓ̄_r), grows without bound as ℓ̄_r nears 0")
    gallery = (Shot("orpo", "ORPO: the chosen response's NLL plus λ times the odds-ratio term; the push down on a rejected response "
                    "grows as 1/(1 - e^{ℓ̄_r}) when its mean log-prob nears 0", sweep=("beta", (0.1, 1.0))),)

    def variables(self, p):
        return LOGPS

    def loss(self, p):
        return orpo_loss(p["beta"], sym("policy_chosen_logps") / p["chosen_length"], sym("policy_rejected_logps") / p["rejected_length"])

    def production_kwargs(self, p):
        return {"lambda_": float(p["beta"])}

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import ORPOLoss

        args = [tensor([values[n]], dtype, device) for n in LOGPS] + [tensor([float(p[k])], dtype, device) for k in ("chosen_length", "rejected_length")]
        return Example(ORPOLoss(**self.production_kwargs(p)), args, {n: (i, (0,)) for i, n in enumerate(LOGPS)})

    def sample(self, rng, p):
        # summed log-probs of real responses: mean log-probs in (-3, -0.05), away from the clamp at 0
        return {n: -float(rng.uniform(0.05, 3.0) * p[k]) for n, k in zip(LOGPS, ("chosen_length", "rejected_length"))}

    def batches(self, rng, p):
        import numpy as np

        from lossviz.losses import ORPOLoss

        rows = 8
        lengths = [rng.integers(1, 60, size=rows).astype(np.float64) for _ in range(2)]
        means = -rng.uniform(0.05, 3.0, size=(2, rows))
        means[0, :2] = -rng.uniform(0.05, 0.2, size=2)  # near 0, where the odds' slope 1/(1 - e^ℓ̄) is large
        from .batch import BatchSpec, Term

        args = [means[0] * lengths[0], means[1] * lengths[1], lengths[0], lengths[1]]
        terms = [Term({n: (k, (i,)) for k, n in enumerate(LOGPS)}, 1 / rows, extra={"chosen_length": (2, (i,)), "rejected_length": (3, (i,))})
                 for i in range(rows)]
        return [BatchSpec("mean over pairs, two chosen responses with mean log-prob near 0", lambda device: ORPOLoss(**self.production_kwargs(p)),
                          args, ["policy_chosen_logps", "policy_rejected_logps", "chosen_lengths", "rejected_lengths"], [0, 1], terms,
                          symbolic=("chosen_length", "rejected_length"))]

    def facts(self, d):
        lam, lc, lr = d.p["beta"], d.p["chosen_length"], d.p["rejected_length"]

        def below_clamp():
            # the loss in the mean log-probs, on the branch where both lie below the clamp (every real response)
            loss = d.loss.subs({sym("policy_chosen_logps"): LC * lc, sym("policy_rejected_logps"): LR * lr})
            return loss.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[0][0])

        loss = once(below_clamp)
        rejected = once(lambda: sp.factor_terms(sp.together(sp.diff(loss(), LR))))
        odds = lambda m: m - sp.log(1 - sp.exp(m))
        return [
            Fact("odds_slope", "∂o/∂ℓ̄ of the log odds o = ℓ̄ - log(1 - e^ℓ̄): 1/(1 - e^ℓ̄)", lambda: sp.simplify(sp.diff(odds(LC), LC))),
            Fact("chosen_gradient", "∂L/∂ℓ̄_c: -1 (the NLL) - λσ(o_r - o_c)/(1 - e^{ℓ̄_c}) (the odds ratio, ORPO Eq. 10-11)",
                 lambda: sp.factor_terms(sp.together(sp.diff(loss(), LC)))),
            Fact("rejected_gradient", "∂L/∂ℓ̄_r: +λσ(o_r - o_c)/(1 - e^{ℓ̄_r})", rejected),
            Fact("rejected_push_near_zero", "∂L/∂ℓ̄_r as ℓ̄_r -> 0-: oo (a likely rejected response is pushed down without bound)",
                 lambda: sp.limit(elementary(rejected()), LR, 0, "-")),
            Fact("nll_term", "the loss at λ = 0: -ℓ̄_c, the chosen response's NLL per token", lambda: sp.simplify(loss().subs(lam, 0))),
        ]
