"""Random production batches for verification, and how the card's per-example loss maps onto them.

A :class:`BatchSpec` holds production inputs (numpy, float64 for real values) and a list of
:class:`Term`: one per example that the reduction sums, saying which case of the card applies,
where each of the card's variables sits in the inputs, and the example's weight in the
reduction (``1/N`` for a mean over pairs, ``1/(B·n_b)`` for a per-sequence masked mean,
``1/N_valid`` for a token-level mean). Then

    expected loss      = Σ_terms weight · ℓ(values)
    expected gradient  = Σ_terms weight · ∂ℓ/∂variable, placed where the variable sits,

and every other input position (masked, ignored, padding) must have zero gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

Location = Union[Tuple[int, tuple], Tuple[str, int]]  # (arg, index) or ("mean", arg)


@dataclass
class Term:
    """One example of the reduction."""

    where: Dict[str, Location]
    weight: float
    case: Dict[str, str] = field(default_factory=dict)  # values of the card's case parameters
    # per-example values of symbolic parameters: a number, or a location in the inputs (read after rounding)
    extra: Dict[str, object] = field(default_factory=dict)

    def key(self):
        return tuple(sorted(self.case.items()))


@dataclass
class BatchSpec:
    """Production inputs and the terms of the card's loss they hold."""

    label: str
    make_module: Callable[[object], object]  # device -> production module
    args: List[Optional[np.ndarray]]
    arg_names: Sequence[str]
    grad_args: Sequence[int]  # real-valued inputs whose gradients are compared
    terms: List[Term] = field(default_factory=list)
    symbolic: Tuple[str, ...] = ()  # parameters that vary per example (passed through Term.extra)
    # for losses whose examples are coupled (vanilla KTO): arrays -> (loss, {arg: gradient})
    expectation: Optional[Callable[[List[np.ndarray]], Tuple[float, Dict[int, np.ndarray]]]] = None

    @property
    def points(self) -> int:
        return len(self.terms) if self.expectation is None else int(sum(np.size(self.args[i]) for i in self.grad_args))


def sample_rows(card, rng, p, count: int) -> List[Dict[str, float]]:
    """``count`` independent per-example points, each away from the card's kinks."""
    return [card.sample(rng, p) for _ in range(count)]


def mask_rows(rng, rows: int, cols: int, keep: float = 0.7) -> np.ndarray:
    """A 0/1 mask with at least one kept position per row."""
    mask = (rng.random((rows, cols)) < keep).astype(np.float64)
    mask[:, 0] = 1.0
    return mask
