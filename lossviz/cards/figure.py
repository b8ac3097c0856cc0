"""How a card declares its lesson figure, as data (no matplotlib here).

A card sets up to three class attributes:

- ``axis``: its natural axis, an :class:`Axis` (the variable that moves, the values the other
  variables hold along it, the default range, the label). The lesson figure, the explorer
  (:func:`lossviz.plots.lessons.explorer_spec`) and the notebooks read it.
- ``figure``: a :class:`LessonFigure` (panels and marked facts, drawn by the generic builder
  :func:`lossviz.plots.lessons.draw_lesson`) or a :class:`CustomFigure` naming a builder for a
  figure that needs its own drawing. A card with an ``axis`` and no ``figure`` gets the generic
  loss and gradient panels.
- ``gallery``: the :class:`Shot` s of ``lossviz gallery`` (default: one, at the defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Tuple, Union

import sympy as sp

Range = Union[Tuple[float, float], Callable[[Mapping[str, object]], Tuple[float, float]]]


@dataclass(frozen=True)
class Axis:
    """The natural axis: ``symbol`` moves, ``cut`` gives every card variable along it.

    ``cut`` maps each variable to a number or a sympy expression in ``symbol`` (a string is
    parsed by sympy); it may be a function of the parameter values when the cut depends on a
    case (KTO's arm). ``range`` is the default x-range, or a function of the parameter values.
    """

    symbol: str
    cut: Union[Mapping[str, object], Callable[[Mapping[str, object]], Mapping[str, object]]]
    range: Range
    label: str
    positive: bool = False  # the axis symbol is positive (a ratio r)

    @property
    def x(self) -> sp.Symbol:
        return sp.Symbol(self.symbol, positive=True) if self.positive else sp.Symbol(self.symbol, real=True)

    def values(self, params: Mapping[str, object]) -> dict:
        """Every variable along the axis: name -> number or sympy expression in :attr:`x`."""
        cut = self.cut(params) if callable(self.cut) else self.cut
        return {k: sp.sympify(v, locals={self.symbol: self.x}) for k, v in cut.items()}

    def default_range(self, params: Mapping[str, object]) -> Tuple[float, float]:
        lo, hi = self.range(params) if callable(self.range) else self.range
        return float(lo), float(hi)

    def moving(self, params: Mapping[str, object]) -> str:
        """The first variable that moves along the axis (the one whose gradient the figure shows)."""
        return next(k for k, v in self.values(params).items() if v.has(self.x))


@dataclass(frozen=True)
class Panel:
    """One panel over the axis: ``loss``, ``grad`` (∂ℓ/∂x) or ``push`` (−∂ℓ/∂x), with its y-label."""

    kind: str
    ylabel: str
    ylim: Optional[Callable[[Mapping[str, object]], Tuple[float, float]]] = None  # per parameter set; a sweep takes the union

    def __post_init__(self):
        if self.kind not in ("loss", "grad", "push"):
            raise ValueError(f"Panel kind must be loss, grad or push; got {self.kind!r}")


@dataclass(frozen=True)
class Mark:
    """A fact marked on the figure; its line carries the gid ``marker:<fact>:<i>`` (``limit:`` / ``zone:`` for those kinds).

    kind ``point``: a dot at x = the fact's value (or at the fixed ``at``), on the curve of
    ``panel`` (``y="zero"``: at y = 0); with ``zero_gradient`` also a dot at y = 0 on the gradient
    panel (gid ``marker:<fact>_gradient:<i>``). ``edge``: a dashed vertical line at x = the fact.
    ``zone``: the fact is an interval (a sympy set), shaded. ``limit``: a horizontal line on
    ``panel`` at y = ``scale`` × the fact. ``label`` is a format string: ``{x}``, ``{y}`` and every
    fact of the card by name (as a float), e.g. ``"target 1/(2β) = {x:g}"``. A fact that is not
    finite is not marked; ``missing`` is then the text for a sweep's legend.
    """

    fact: str
    kind: str = "point"
    panel: str = "loss"
    label: str = ""
    at: Optional[float] = None
    y: str = "curve"
    zero_gradient: bool = False
    scale: float = 1.0
    missing: str = ""

    def __post_init__(self):
        if self.kind not in ("point", "edge", "zone", "limit"):
            raise ValueError(f"Mark kind must be point, edge, zone or limit; got {self.kind!r}")

    @property
    def legend(self) -> str:
        """A short name for an explorer's legend: the label up to its first value (or the fact's name)."""
        return self.label.split("{")[0].strip(" =:") or self.fact


@dataclass(frozen=True)
class LessonFigure:
    """A lesson figure the generic builder draws: one curve per panel per parameter set, and the marks.

    ``title`` is the lesson line after the card's title and parameters. ``sweep_note`` is the
    text each swept value's legend entry carries (format keys as in :class:`Mark`); by default
    the label of the first labelled mark, so a sweep names every value's lesson point once.
    ``axis`` defaults to the card's ``axis``.
    """

    panels: Tuple[Panel, ...]
    title: str
    marks: Tuple[Mark, ...] = ()
    sweep_note: Optional[str] = None
    axis: Optional[Axis] = None


@dataclass(frozen=True)
class CustomFigure:
    """A figure that needs its own drawing: ``"module:function"``, the function taking a ``PlotRequest``."""

    builder: str
    marks: Tuple[Mark, ...] = ()  # the facts the explorer marks on the card's axis


@dataclass(frozen=True)
class Shot:
    """One figure of ``lossviz gallery``: the file stem, its lesson line, parameters or a sweep, and
    ``figure`` when it is not the card's lesson figure (e.g. the LogExp overflow panel)."""

    stem: str
    lesson: str
    params: Mapping[str, object] = field(default_factory=dict)
    sweep: Optional[Tuple[str, tuple]] = None
    svg: bool = False
    figure: Optional[CustomFigure] = None
