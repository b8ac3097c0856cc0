r"""Reward-model cards: the pairwise (Bradley-Terry) loss with a margin, and its log-exp form."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary, stabilize
from ._common import once, solve_one, sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term, sample_rows
from .figure import Axis, Curve, CustomFigure, LessonFigure, Mark, Panel, Shot

REWARDS = ("chosen_reward", "reject_reward")
GAP = sp.Symbol("Delta", real=True)  # the reward gap r_c - r_r
MARGIN = Param("margin", 0.0, "margin m that the reward gap must exceed", "m")
GAP_AXIS = Axis("Delta", {"chosen_reward": "Delta", "reject_reward": 0}, lambda p: (p["margin"] - 6, p["margin"] + 8), r"reward gap $\Delta = r_c - r_r$")
FADE = sp.Rational(1, 10)  # "no longer trains": the gradient's magnitude has fallen to 1/10


def in_gap(expr):
    return expr.subs(sym("chosen_reward"), GAP + sym("reject_reward"))


class _RewardCard(Card):
    family = "reward"
    params = (MARGIN,)
    variable_latex = {"chosen_reward": "r_c", "reject_reward": "r_r"}
    axis = GAP_AXIS

    def variables(self, p):
        return REWARDS

    def example(self, values, p, dtype=None, device=None):
        module = self._module()
        args = [tensor([values[n]], dtype, device) for n in REWARDS] + [tensor([float(p["margin"])], dtype, device)]
        return Example(module, args, {n: (i, (0,)) for i, n in enumerate(REWARDS)})

    def sample(self, rng, p):
        return {n: float(rng.normal() * 3) for n in REWARDS}

    def batches(self, rng, p):
        import numpy as np

        pairs = 6
        rows = sample_rows(self, rng, p, pairs)
        margins = float(p["margin"]) + rng.choice([0.0, 1.0], size=pairs)  # a per-pair margin tensor
        args = [np.array([r[n] for r in rows]) for n in REWARDS] + [margins]
        terms = [Term({n: (k, (i,)) for k, n in enumerate(REWARDS)}, 1 / pairs, extra={"margin": (2, (i,))}) for i in range(pairs)]
        return [BatchSpec(f"mean over {pairs} pairs, per-pair margins", lambda device: self._module(), args,
                          [*REWARDS, "margin"], [0, 1], terms, symbolic=("margin",))]

    def shared_facts(self, d):
        m = d.p["margin"]
        slope = once(lambda: stabilize(sp.simplify(sp.diff(in_gap(d.loss), GAP))))
        at_zero_margin = in_gap(-LogSigmoid(sym("chosen_reward") - sym("reject_reward")))
        return [
            Fact("gradient_in_gap", "∂ℓ/∂r_c as a function of the gap Δ: -σ(m - Δ)", slope),
            Fact("shift", "ℓ_m(Δ) - ℓ_0(Δ - m): zero, the margin shifts the curve by m",
                 lambda: sp.simplify(elementary(stabilize(in_gap(d.loss)) - at_zero_margin.subs(GAP, GAP - m)))),
            Fact("fade_point", "the gap where |∂ℓ/∂r_c| has fallen to 1/10: m + log 9 ≈ m + 2.2",
                 lambda: sp.simplify(solve_one(elementary(-slope() - FADE), GAP))),
        ]


class PairWise(_RewardCard):
    name = "pairwise"
    references = ("instructgpt", "llama2")
    aliases = ("PairWiseLoss", "bradley-terry")
    title = "pairwise reward-model loss"
    lesson = "-log σ(Δ - m): the margin moves the point where the gradient fades from about 2 to about 2 + m"
    production = "lossviz.losses:PairWiseLoss"
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\log\sigma(\Delta - m)$"), Panel("grad", r"gradient $\partial\ell/\partial r_c$" + "\n" + r"$= -\sigma(m - \Delta)$")),
        title="the margin m shifts the curve: the gradient fades at m + log 9",
        marks=(Mark("fade_point", panel="grad", label="|gradient| = 0.1 at m + log 9 = {x:.2f}"),))
    gallery = (Shot("pairwise", "the margin m shifts the curve: the gradient fades at m + log 9 instead of log 9", sweep=("margin", (0.0, 1.0, 2.0))),)

    def _module(self):
        from lossviz.losses import PairWiseLoss

        return PairWiseLoss()

    def loss(self, p):
        return -LogSigmoid(sym("chosen_reward") - sym("reject_reward") - p["margin"])

    def facts(self, d):
        return self.shared_facts(d)


class LogExp(_RewardCard):
    name = "logexp"
    references = ("instructgpt", "llama2")
    aliases = ("LogExpLoss", "log-exp")
    title = "log-exp reward-model loss"
    lesson = "log(1 + e^{r_r - r_c}) is the pairwise loss written naively: equal in math, but the naive form overflows"
    production = "lossviz.losses:LogExpLoss"
    figure = LessonFigure(  # the pairwise card's curve drawn over it: they coincide
        panels=(Panel("loss", "loss", label=r"$\log(1 + e^{r_r - r_c + m})$ (LogExp)"),
                Panel("grad", r"gradient $\partial\ell/\partial r_c$", label="LogExp")),
        title="the same function in math (curves coincide)", tag="logexp",
        curves=(Curve(lambda c: c.other("pairwise"), "pairwise", {"loss": r"$-\log\sigma(r_c - r_r - m)$ (PairWise)", "grad": "PairWise"},
                      panels=("loss", "grad"), style={"color": 1, "linestyle": "--"}),),
        marks=(Mark("fade_point", panel="grad", label="fade point", drawn=False),))  # the explorer marks it
    gallery = (Shot("logexp", "log(1 + e^{r_r - r_c}) is the pairwise loss written naively: the curves coincide"),
               Shot("logexp-overflow", "…but in float32 the naive form overflows for Δ = r_c - r_r < -88.7: inf loss, NaN gradient",
                    figure=CustomFigure("lossviz.plots.custom:logexp_overflow")))

    def _module(self):
        from lossviz.losses import LogExpLoss

        return LogExpLoss()

    def loss(self, p):
        # written naively, as OpenRLHF v0.5.3 computes it; the lowering rewrites it stably
        return sp.log(1 + sp.exp(sym("reject_reward") - sym("chosen_reward") + p["margin"]))

    def facts(self, d):
        pairwise = -LogSigmoid(sym("chosen_reward") - sym("reject_reward") - d.p["margin"])
        return self.shared_facts(d) + [
            Fact("equals_pairwise", "log(1 + e^{r_r - r_c + m}) - (-log σ(r_c - r_r - m)): zero", lambda: sp.simplify(d.loss - elementary(pairwise))),
            Fact("stable_form", "what the stable lowering evaluates instead of the naive form", lambda: stabilize(d.loss)),
        ]

