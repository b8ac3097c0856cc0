"""1-D cuts of a derivation along a natural axis, lowered to numpy (this is where sympy enters a figure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import sympy as sp

from ..symbolic import lower


@dataclass
class AxisCurve:
    """A 1-D cut of a derivation: ``loss(x)`` and ``d loss / dx`` along the axis symbol."""

    x: sp.Symbol
    loss_expr: sp.Expr
    grad_expr: sp.Expr

    def __post_init__(self):
        self._loss = lower(self.loss_expr, [self.x.name], "numpy")
        self._grad = lower(self.grad_expr, [self.x.name], "numpy")

    def loss(self, xs):
        return self._loss(np.asarray(xs, dtype=float))

    def grad(self, xs):
        return self._grad(np.asarray(xs, dtype=float))


def along(d, x: sp.Symbol, values: Mapping[str, object]) -> AxisCurve:
    """Cut ``d.loss`` along ``x``: ``values`` gives each variable as a number or an expression in ``x``."""
    subs = {d.symbols[v]: sp.sympify(e) for v, e in values.items()}
    loss = d.loss.subs(subs)
    return AxisCurve(x, loss, sp.diff(loss, x))
