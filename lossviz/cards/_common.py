"""Small helpers shared by the cards: symbols, tensors for production examples, kink avoidance."""

from __future__ import annotations

from typing import Iterable, Sequence

import sympy as sp


def sym(name: str) -> sp.Symbol:
    """The sympy variable for a production forward argument (real, as in the Derivation)."""
    return sp.Symbol(name, real=True)


def tensor(values, dtype=None, device=None):
    """A production input tensor (float64 on CPU unless told otherwise); imports torch lazily."""
    import torch

    return torch.tensor(values, dtype=dtype or torch.float64, device=device)


def far_from(value: float, kinks: Iterable[float], gap: float = 0.05) -> bool:
    """True when ``value`` is at least ``gap`` away from every kink (sample points avoid kinks)."""
    return all(abs(value - k) >= gap for k in kinks)


def draw(rng, names: Sequence[str], scale: float, accept) -> dict:
    """Normal samples of the named variables, redrawn until ``accept(point)`` holds."""
    for _ in range(1000):
        point = {n: float(rng.normal() * scale) for n in names}
        if accept(point):
            return point
    raise RuntimeError("could not sample a point away from the kinks")  # pragma: no cover


def once(compute):
    """A zero-argument function that computes its value on the first call only."""
    cache = []

    def value():
        if not cache:
            cache.append(compute())
        return cache[0]

    return value


def solve_one(equation, unknown):
    """The single real solution of ``equation = 0`` (sympy ``solve``), or ``None`` if there is none."""
    solutions = [s for s in sp.solve(equation, unknown) if s.is_real is not False]
    return solutions[0] if solutions else None
