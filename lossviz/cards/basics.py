r"""Basics: the three curves to know by heart, :math:`\sigma(x)`, :math:`-\log\sigma(x)` and its derivative."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, Sigmoid, elementary
from ._common import sym, tensor
from .base import Card, Example, Fact
from .batch import BatchSpec, Term, sample_rows
from .controls import Point
from .figure import Axis, Curve, LessonFigure, Mark, Panel, Shot


class _NegLogSigmoid:
    """The production primitive every sigmoid-shaped loss is built on: ``-F.logsigmoid(x).mean()``."""

    def __call__(self, x):
        import torch.nn.functional as F

        return -F.logsigmoid(x).mean()


class Basics(Card):
    name = "basics"
    controls = (Point("x0", -2.0, -8.0, 8.0, "the point x₀ marked on both curves"),)  # the explorer: a point to move
    axis = Axis("x", {"x": "x"}, (-8.0, 8.0), "$x$")
    figure = LessonFigure(
        panels=(Panel("loss", "value", label=r"$-\log\sigma(x)$"),
                Panel("grad", r"gradient $\frac{d}{dx}[-\log\sigma(x)]$", ylim=lambda p: (-1.3, 0.3),  # room for the limit labels
                      label=r"$\sigma(x) - 1$", style={"color": 1})),
        title="the three curves to know by heart", tag="-log sigmoid",
        curves=(Curve(lambda c: Sigmoid(c.x), "sigmoid", r"$\sigma(x)$", style={"color": 2}),),
        marks=(Mark("gradient_limit_neg_inf", kind="limit", panel="grad", label="→ -1 as x → -∞", once=True),
               Mark("gradient_limit_pos_inf", kind="limit", panel="grad", label="→ 0 as x → +∞", once=True),
               Mark("gradient_at_zero", at=0.0, panel="grad", label="x = 0: gradient {y:g}", once=True, color="k")))
    gallery = (Shot("basics", "σ(x), -log σ(x) and its gradient σ(x) - 1: the gradient → -1 as x → -∞ and → 0 as x → +∞"),)
    aliases = ("sigmoid", "logsigmoid")
    family = "basics"
    title = r"-log σ(x)"
    lesson = "d/dx[-log σ(x)] = σ(x) - 1: the push 1 - σ(x) = -dℓ/dx is strongest (→ 1) when x is very negative, and vanishes as x grows"
    production = "torch.nn.functional:logsigmoid"
    variable_latex = {"x": "x"}

    def variables(self, p):
        return ("x",)

    def loss(self, p):
        return -LogSigmoid(sym("x"))

    def facts(self, d):
        x = sym("x")
        g = lambda: d.gradient["x"]
        naive = sp.log(1 + sp.exp(-x))
        return [
            Fact("gradient", "d/dx -log σ(x), which equals σ(x) - 1 = -σ(-x)", g),
            Fact("gradient_minus_sigmoid_plus_one", "simplify(gradient - (σ(x) - 1)): zero", lambda: sp.simplify(elementary(g() - (Sigmoid(x) - 1)))),
            Fact("identity", "simplify(log(1 + e^{-x}) - (-log σ(x))): the two forms are one function", lambda: sp.simplify(naive - elementary(d.loss))),
            Fact("gradient_limit_neg_inf", "the gradient as x -> -oo", lambda: sp.limit(elementary(g()), x, -sp.oo)),
            Fact("gradient_limit_pos_inf", "the gradient as x -> +oo", lambda: sp.limit(elementary(g()), x, sp.oo)),
        ]

    def example(self, values, p, dtype=None, device=None):
        return Example(_NegLogSigmoid(), [tensor([values["x"]], dtype, device)], {"x": (0, (0,))})

    def sample(self, rng, p):
        return {"x": float(rng.normal() * 3)}

    def batches(self, rng, p):
        import numpy as np

        x = np.array([row["x"] for row in sample_rows(self, rng, p, 8)])
        terms = [Term({"x": (0, (i,))}, 1 / 8) for i in range(8)]
        return [BatchSpec("mean over 8", lambda device: _NegLogSigmoid(), [x], ["x"], [0], terms)]
