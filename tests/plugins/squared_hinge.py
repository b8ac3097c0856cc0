r"""A loss entry shipped outside lossviz: the squared hinge on a reward gap.

tests/test_plugins.py copies this file into a temporary folder as the module
``lossviz_squared_hinge`` and registers ``SquaredHinge`` through a ``*.dist-info`` whose
``entry_points.txt`` names it in the group ``lossviz.cards``, as an installed package would.
It uses only lossviz's public card API: a production ``nn.Module``, a card with parameters,
loss, facts, a production example, verification batches and a lesson figure declared as data.

The loss of one pair is ℓ = max(0, m - Δ)² with Δ = r_c - r_r: ∂ℓ/∂r_c = -2(m - Δ) for Δ < m
and 0 beyond, so the gradient falls linearly to exactly 0 at the hinge Δ = m, where the
gradient of the pairwise loss -log σ(Δ - m) only fades.
"""

from __future__ import annotations

import sympy as sp
import torch
from torch import nn

from lossviz.cards.base import Card, Example, Fact, Param
from lossviz.cards.batch import BatchSpec, Term
from lossviz.cards.figure import Axis, LessonFigure, Mark, Panel, Shot

REWARDS = ("chosen_reward", "reject_reward")
GAP = sp.Symbol("Delta", real=True)


class SquaredHingeLoss(nn.Module):
    """Mean over pairs of max(0, margin - (chosen_reward - reject_reward))²."""

    def __init__(self, margin: float = 1.0):
        super().__init__()
        if not isinstance(margin, (int, float)) or not margin >= 0:
            raise ValueError(f"margin must be a number >= 0; got {margin!r}")
        self.margin = float(margin)

    def forward(self, chosen_reward: torch.Tensor, reject_reward: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.margin - (chosen_reward - reject_reward), min=0).pow(2).mean()


def _sym(name):
    return sp.Symbol(name, real=True)


class SquaredHinge(Card):
    name = "squared-hinge"
    aliases = ("SquaredHingeLoss",)
    family = "reward"
    title = "squared hinge on the reward gap"
    lesson = "max(0, m - Δ)²: the gradient -2(m - Δ) falls linearly to exactly 0 at the hinge Δ = m and stays 0 beyond"
    production = "lossviz_squared_hinge:SquaredHingeLoss"
    params = (Param("margin", 1.0, "the gap m by which the chosen reward should beat the rejected one", "m", low=0.0),)
    variable_latex = {"chosen_reward": "r_c", "reject_reward": "r_r"}
    axis = Axis("Delta", {"chosen_reward": "Delta", "reject_reward": 0}, lambda p: (p["margin"] - 3, p["margin"] + 2),
                r"reward gap $\Delta = r_c - r_r$")
    figure = LessonFigure(
        panels=(Panel("loss", r"$\max(0, m - \Delta)^2$"), Panel("grad", r"gradient $\partial\ell/\partial r_c$")),
        title="the gradient reaches 0 at the hinge Δ = m",
        marks=(Mark("hinge", kind="edge", label="hinge Δ = m = {x:g}"),))
    gallery = (Shot("squared-hinge", "max(0, m - Δ)²: the gradient reaches 0 at the hinge Δ = m", sweep=("margin", (0.5, 1.0))),)

    def variables(self, p):
        return REWARDS

    def loss(self, p):
        gap = _sym("chosen_reward") - _sym("reject_reward")
        return sp.Piecewise(((p["margin"] - gap) ** 2, gap < p["margin"]), (0, True))

    def facts(self, d):
        in_gap = d.loss.subs(_sym("chosen_reward"), GAP + _sym("reject_reward"))
        return [
            Fact("hinge", "the gap where the loss reaches 0 (sympy solves the active branch = 0): Δ = m",
                 lambda: sp.solve(in_gap.args[0][0], GAP)[0]),
            Fact("gradient_at_zero_gap", "∂ℓ/∂r_c at Δ = 0: -2m, the steepest pull of a tied pair",
                 lambda: sp.simplify(sp.diff(in_gap, GAP).subs(GAP, 0))),
        ]

    def sample(self, rng, p):
        m = float(p["margin"])
        while True:  # finite differences must not straddle the kink at Δ = m
            point = {n: float(rng.normal() * 2) for n in REWARDS}
            if abs(point["chosen_reward"] - point["reject_reward"] - m) > 0.05:
                return point

    def example(self, values, p, dtype=None, device=None):
        args = [torch.tensor([values[n]], dtype=dtype or torch.float64, device=device) for n in REWARDS]
        return Example(SquaredHingeLoss(float(p["margin"])), args, {n: (k, (0,)) for k, n in enumerate(REWARDS)})

    def batches(self, rng, p):
        import numpy as np

        pairs = 8
        rows = [self.sample(rng, p) for _ in range(pairs)]
        args = [np.array([r[n] for r in rows]) for n in REWARDS]
        terms = [Term({n: (k, (i,)) for k, n in enumerate(REWARDS)}, 1 / pairs) for i in range(pairs)]
        margin = float(p["margin"])
        return [BatchSpec(f"mean over {pairs} pairs", lambda device: SquaredHingeLoss(margin), args, list(REWARDS), [0, 1], terms)]
