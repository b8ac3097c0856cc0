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

The functions a declaration may hold (a curve, a position, a label, a title) receive an
``Along`` (:class:`lossviz.plots.lessons.Along`): the parameter values ``p``, the axis symbol
``x``, the value of every variable on the panel ``cut``, the card's loss along it ``loss`` (sympy)
and ``other(name)``, another entry's loss along the same axis at the same parameters.
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


Label = Union[str, Callable[["Along"], str]]  # a text (a mark's: a format string, see Mark) or a function of the Along
Style = Union[Mapping[str, object], Callable[["Along"], Mapping[str, object]]]  # matplotlib line properties; a colour may be an index into the lossviz palette


@dataclass(frozen=True)
class Panel:
    """One panel over the axis: ``loss``, ``grad`` (∂ℓ/∂x) or ``push`` (−∂ℓ/∂x), with its y-label.

    ``cut`` overrides the axis values of some variables on this panel (a second case beside the
    first, e.g. PPO's ``{"advantages": -1}``); ``tag`` then names the panel's curves in their gids
    (``loss:<tag>``) and in :attr:`Mark.on`. ``label`` is the legend text of the card's curve
    (default: the figure's ``label``), ``style`` its line properties (or a function of the
    parameter set's index, for a sweep), ``title`` the axes title.
    """

    kind: str
    ylabel: str
    ylim: Optional[Callable[[Mapping[str, object]], Tuple[float, float]]] = None  # per parameter set; a sweep takes the union
    label: Optional[Label] = None
    style: Union[Mapping[str, object], Callable[[int], Mapping[str, object]], None] = None
    cut: Mapping[str, object] = field(default_factory=dict)
    tag: Optional[str] = None
    title: Optional[str] = None

    def __post_init__(self):
        if self.kind not in ("loss", "grad", "push"):
            raise ValueError(f"Panel kind must be loss, grad or push; got {self.kind!r}")


@dataclass(frozen=True)
class Curve:
    """A curve beside the card's own: a reference (σ(x), the unclipped surrogate, another entry's loss).

    ``y`` is a sympy expression (a string in the axis symbol and the parameters) or a function of
    the :class:`Along` returning one, or None where the curve does not apply (clipping off). On a
    ``loss`` panel the builder draws ``y``, on a ``grad`` panel dy/dx, on a ``push`` panel −dy/dx
    (sympy differentiates). Its gid is ``<panel kind>:<name>``, ``name`` a format string of the
    parameters and ``tag`` (the panel's); a gid already drawn is not drawn again (one reference
    per distinct case in a sweep). ``label`` may differ per panel kind (a mapping). Without a
    colour in ``style`` the curve takes its parameter set's colour.
    """

    y: Union[str, Callable[["Along"], object]]
    name: str
    label: Union[Label, Mapping[str, str]] = ""
    panels: Tuple[str, ...] = ("loss",)
    style: Style = field(default_factory=dict)


@dataclass(frozen=True)
class Mark:
    """A fact marked on the figure; its line carries the gid ``marker:<fact>:<i>`` (``limit:`` / ``zone:`` for those kinds).

    kind ``point``: a dot at x = the fact's value (or at ``at``), on the curve of ``panel``
    (``y="zero"``: at y = 0; ``y`` naming a fact: at that fact's value); with ``zero_gradient`` also a dot at y = 0 on the gradient panel
    (gid ``marker:<fact>_gradient:<i>``). ``edge``: a dashed vertical line at x = the fact.
    ``zone``: the fact is an interval (a sympy set), shaded. ``limit``: a horizontal line on
    ``panel`` at y = ``scale`` × the fact. ``gap``: a double arrow at x = ``at`` from the card's
    curve to the :class:`Curve` named ``to``, labelled with ``{gap}``, their distance there.

    ``label`` is a format string: ``{x}``, ``{y}``, every parameter and every fact of the card by
    name (as a float), e.g. ``"target 1/(2β) = {x:g}"`` (LaTeX braces doubled: ``$v_{{old}}$``);
    or a function of the :class:`Along`. ``color`` is a colour or an index into the palette.
    ``at`` is a position instead of a fact (a number, a sympy string, or a function of the
    :class:`Along`; None from the function: not marked), and then ``fact`` only names the gid.
    Symbols of a value that are card variables take their values along the axis; ``given`` sets
    other symbols (KTO's reference point z). ``once``: drawn for the first parameter set only, in
    grey, with the gid ``marker:<fact>``; ``gid`` sets the gid's suffix instead (format keys
    ``fact``, ``i``, ``tag``). ``on`` restricts the mark to the panels of that tag; ``when`` (a
    function of the :class:`Along`) to where it applies. ``drawn=False``: only the explorer marks
    it. A fact that is not finite is not marked; ``missing`` is then the text for a sweep's legend.
    """

    fact: str
    kind: str = "point"
    panel: str = "loss"
    label: Label = ""
    at: Union[float, str, Callable[["Along"], object], None] = None
    y: str = "curve"
    zero_gradient: bool = False
    scale: float = 1.0
    missing: str = ""
    given: Mapping[str, Union[str, Callable[["Along"], object]]] = field(default_factory=dict)
    once: bool = False
    gid: Optional[str] = None
    on: Optional[str] = None
    when: Optional[Callable[["Along"], bool]] = None
    color: Union[str, int, None] = None
    to: Optional[str] = None
    drawn: bool = True

    def __post_init__(self):
        if self.kind not in ("point", "edge", "zone", "limit", "gap"):
            raise ValueError(f"Mark kind must be point, edge, zone, limit or gap; got {self.kind!r}")
        if self.kind == "gap" and (self.to is None or self.at is None):
            raise ValueError("a gap Mark needs `to` (a Curve's name) and `at` (its x)")

    @property
    def legend(self) -> str:
        """A short name for an explorer's legend: the label up to its first value (or the fact's name)."""
        return (self.label.split("{")[0].strip(" =:") if isinstance(self.label, str) else "") or self.fact


@dataclass(frozen=True)
class LessonFigure:
    """A lesson figure the generic builder draws: the card's curve on each panel per parameter set,
    the reference ``curves`` and the ``marks``.

    ``title`` is the lesson line after the card's title and parameters (a text, or a function of the
    :class:`Along` of the first parameter set). ``tag`` names the card's curves in their gids
    (``loss:<tag>``, a format string of the parameters; a sweep uses each value's label) and
    ``label`` is their legend text (a sweep whose labels do not tell the values apart adds the
    value). ``sweep_note`` is the text each swept value's legend entry carries (format keys as in
    :class:`Mark`); by default the label of the first labelled mark, so a sweep names every
    value's lesson point once. ``rows`` lays the panels out row by row; ``size`` is one panel's
    (width, height) in inches. ``axis`` defaults to the card's ``axis``.
    """

    panels: Tuple[Panel, ...]
    title: Label
    marks: Tuple[Mark, ...] = ()
    sweep_note: Optional[str] = None
    axis: Optional[Axis] = None
    curves: Tuple[Curve, ...] = ()
    tag: str = "loss"
    label: Optional[Label] = None
    rows: int = 1
    size: Optional[Tuple[float, float]] = None


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
