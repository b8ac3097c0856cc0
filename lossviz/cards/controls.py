"""What a card's explorer lets the learner move, beyond its parameters, declared as data.

The explorer (:mod:`lossviz.widgets`) reads the card's ``axis`` and ``figure`` (the cut, the
range, the marked facts) and gives every parameter a slider. A card adds the controls its
lesson is about in a class attribute ``controls``, a tuple of:

- :class:`Hold`: a variable the axis holds fixed becomes a slider (PPO's v_old and R, KTO's
  reference point z, KD's teacher logits), starting at the axis's value;
- :class:`Point`: a point on the axis, marked on both curves, with the loss, gradient and push
  there shown as facts (the basics explorer);
- :class:`Window`: a parameter's slider window, and the value an optional parameter takes when
  it is switched on (an optional parameter without one keeps its value and gets no switch);
- :class:`Labels`: a case that fixes a parameter to labels, offered as a dropdown (PRM's hard
  labels: p is 1 or 0);
- :class:`Formula` and :class:`Minimum`: facts that exist only on the explorer's cut (KD's
  teacher probability, the student's minimum along z₀);
- :class:`Guide`: a vertical line at a position computed from the parameters and controls (PPO's
  dual clip c); a :class:`~lossviz.cards.figure.Mark` marks a card fact in the explorer only;
- :class:`GradientOf`: the gradient printed below the figure, as a vector (the SFT cards' logits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Tuple

import sympy as sp


def control_symbol(name: str) -> sp.Symbol:
    """A control's sympy symbol, in its own name space: it never binds a card symbol of the same name (PPO's A)."""
    return sp.Symbol(f"control_{name}", real=True)


@dataclass(frozen=True)
class Hold:
    """A slider for ``variables``, which the axis holds fixed: ``name`` is the slider, e.g. ``Hold("old_values", "v_old", ...)``.

    ``default`` None starts at the axis's value. ``stands_for`` names symbols of the card's facts
    that mean this value (KTO's facts write the reference point as ``z_ref``).
    """

    variables: object  # a card variable, or a tuple of them set to the same value
    name: str
    low: float
    high: float
    doc: str
    default: Optional[float] = None
    step: float = 0.05
    stands_for: Tuple[str, ...] = ()

    @property
    def symbol(self) -> sp.Symbol:
        return control_symbol(self.name)

    @property
    def held(self) -> Tuple[str, ...]:
        return (self.variables,) if isinstance(self.variables, str) else tuple(self.variables)


@dataclass(frozen=True)
class Point:
    """A point ``name`` on the axis, marked on both curves; the loss, gradient and push there are shown as facts."""

    name: str
    default: float
    low: float
    high: float
    doc: str
    step: float = 0.05

    @property
    def symbol(self) -> sp.Symbol:
        return control_symbol(self.name)


@dataclass(frozen=True)
class Window:
    """The slider of parameter ``param``: (low, high, step); ``on``: the value an optional parameter takes when switched on."""

    param: str
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    on: Optional[float] = None


@dataclass(frozen=True)
class Labels:
    """In the case ``case`` the parameter ``param`` is a label: a dropdown of ``choices`` (text -> value)."""

    case: str
    param: str
    choices: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Formula:
    """A fact of the explorer: ``expression`` (sympy text) in the names of the parameters and controls."""

    name: str
    doc: str
    expression: str


@dataclass(frozen=True)
class Minimum:
    """A fact: where the loss along the axis is minimal (sympy solves ∂ℓ/∂x = 0 on the cut); with ``label`` also a line there."""

    name: str
    doc: str
    label: str = ""


@dataclass(frozen=True)
class Guide:
    """A vertical line ``label`` at ``position(values)``: ``values`` maps every parameter and control name
    to its sympy value (None: no line)."""

    label: str
    position: Callable[[Mapping[str, object]], object]


@dataclass(frozen=True)
class GradientOf:
    """The gradient the explorer prints: with respect to ``variables`` as a column (default: the variable the axis moves)."""

    variables: Tuple[str, ...]


CONTROL_KINDS = (Hold, Point, Window, Labels, Formula, Minimum, Guide, GradientOf)
