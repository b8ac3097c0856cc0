"""The lesson figure of every entry (see the curriculum), drawn from the card's declaration.

A card declares its figure as data (:mod:`lossviz.cards.figure`): the natural axis, the panels
(loss, gradient or push) and the facts to mark. :func:`draw_lesson` draws every such figure;
a card whose figure needs its own drawing names its builder (``CustomFigure``, see
:mod:`.custom`). Nothing here lists entries: :func:`builder` reads the card, and
:func:`explorer_spec` gives the explorer the same axis, cut and marks.

Every curve is the card's loss cut along the axis and lowered to numpy; every marked point
comes from a fact sympy computed or from the card's lowered loss at that point. Lines carry a
``gid`` (``loss:<label>``, ``grad:<label>``, ``marker:<fact>``, ``zone:<fact>``) so that tests
can find them. Each builder ends with :func:`suptitle`, which lays the figure out and places
its legends and lesson labels (:mod:`.placement`). In a sweep, each value's lesson point is
named in that value's legend entry, one readable label per value.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import sympy as sp

from ..cards.base import Card, CardError, Derivation
from ..cards.figure import Axis, CustomFigure, LessonFigure, Mark, Panel
from .core import COLORS, format_params, mark, new_figure, sample_axis, shade, vline, zero_line
from .cut import AxisCurve, along
from .placement import finish, label_hline

MAX_SWEEP = len(COLORS)  # one distinct colour per swept value


@dataclass
class PlotRequest:
    """What to draw: one parameter set per swept value (or one), an optional x-range."""

    card: Card
    param_sets: List[Dict[str, object]]
    sweep: Optional[str] = None
    x_range: Optional[Tuple[float, float]] = None
    derivations: List[Derivation] = field(init=False)

    def __post_init__(self):
        if len(self.param_sets) > MAX_SWEEP:
            raise CardError(f"--sweep takes at most {MAX_SWEEP} values (one colour each); got {len(self.param_sets)}")
        self.derivations = [Derivation(self.card, p) for p in self.param_sets]

    @property
    def base(self) -> Dict[str, object]:
        return self.param_sets[0]

    def label(self, i: int) -> str:
        if not self.sweep:
            return ""
        prm = self.card.param(self.sweep)
        symbol = prm.latex or prm.name
        value = self.param_sets[i][self.sweep]
        return f"${symbol}$={value:g}" if isinstance(value, float) else f"{prm.name}={value}"

    def title(self, extra: str = "") -> str:
        shown = format_params(self.base, skip=[self.sweep] if self.sweep else [])
        if self.sweep:
            values = ", ".join(f"{p[self.sweep]:g}" if isinstance(p[self.sweep], float) else str(p[self.sweep]) for p in self.param_sets)
            shown = ", ".join(s for s in (shown, f"{self.sweep} ∈ {{{values}}}") if s)
        return f"{self.card.title}" + (f" ({shown})" if shown else "") + (f": {extra}" if extra else "")

    def xs(self, default: Tuple[float, float], n: int = 801) -> np.ndarray:
        lo, hi = self.x_range or default
        return sample_axis(lo, hi, n)


def suptitle(fig, text: str):
    """The figure title, then the layout and the placement of legends and labels (see placement.finish)."""
    finish(fig, text)


def _fact(d: Derivation, name: str) -> float:
    return float(d.fact(name).value)


def _plot_curve(ax, xs, ys, label, gid, color, **kw):
    (line,) = ax.plot(xs, ys, color=color, label=label, **kw)
    line.set_gid(gid)
    return line


def _finish_panels(fig, ax_loss, ax_grad, xlabel: str, loss_label: str, grad_label: str, title: str, legend: bool = True):
    """Axis labels, legends and the title of a loss panel beside a gradient panel."""
    for ax in (ax_loss, ax_grad):
        ax.set_xlabel(xlabel)
        if legend and ax.get_legend_handles_labels()[0]:
            ax.legend()
    ax_loss.set_ylabel(loss_label)
    ax_grad.set_ylabel(grad_label)
    suptitle(fig, title)
    return fig



def _interval_bounds(interval, lo: float, hi: float):
    """Finite pieces (a, b) of a sympy set, clipped to [lo, hi]."""
    pieces = interval.args if isinstance(interval, sp.Union) else (interval,)
    out = []
    for piece in pieces:
        if isinstance(piece, sp.Interval):
            a, b = float(piece.start), float(min(piece.end, sp.Float(hi)))
            if b > a:
                out.append((max(a, lo), min(b, hi)))
    return out


# ----------------------------------------------------------------------------- the card's axis


def on_axis(req: PlotRequest, d: Derivation) -> AxisCurve:
    """``d`` cut along its card's declared axis."""
    axis = req.card.axis
    return along(d, axis.x, axis.values(d.params))


def axis_xs(req: PlotRequest, n: int = 801):
    """Samples of the card's axis: the given x-range, else the union of the declared ranges of the parameter sets."""
    return req.xs(_union(req.card.axis.default_range(p) for p in req.param_sets), n)


# ----------------------------------------------------------------------------- the generic builder

DEFAULT_PANELS = (Panel("loss", "loss"), Panel("grad", "gradient"))


def declaration(card: Card) -> LessonFigure:
    """The card's :class:`LessonFigure`; a card with only an ``axis`` gets loss and gradient panels."""
    spec = card.figure
    if isinstance(spec, LessonFigure):
        return spec
    if card.axis is None:
        raise CardError(f"{card.name} declares no lesson figure: set `axis` (and optionally `figure`) on the card")
    x = sp.latex(card.axis.x)
    return LessonFigure(panels=(Panel("loss", r"loss $\ell$"), Panel("grad", rf"gradient $\partial\ell/\partial {x}$")), title="",
                        marks=spec.marks if isinstance(spec, CustomFigure) else ())


def _axis(card: Card, spec: LessonFigure) -> Axis:
    axis = spec.axis or card.axis
    if axis is None:
        raise CardError(f"{card.name}'s lesson figure has no axis: set `axis` on the card or on its LessonFigure")
    return axis


def _union(ranges):
    ranges = list(ranges)
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _along_panel(curve: AxisCurve, kind: str, xs):
    if kind == "loss":
        return curve.loss(xs)
    return curve.grad(xs) if kind == "grad" else -curve.grad(xs)


class _Values(dict):
    """Format keys of a mark's label: x, y, the drawn marks' ``<name>_x``/``<name>_y``, and every fact (a float, computed on first use)."""

    def __init__(self, d: Derivation):
        super().__init__()
        self.d = d

    def __missing__(self, key):
        value = float(self.d.fact(key).value)
        self[key] = value
        return value


def _draw_marks(spec: LessonFigure, d: Derivation, curve: AxisCurve, axes, i: int, color: str, labelled: bool, xs) -> str:
    """Draw ``spec.marks`` for one parameter set; return the text for a sweep's legend entry."""
    kinds = [p.kind for p in spec.panels]
    values = _Values(d)
    notes = []
    for m in spec.marks:
        ax = axes[kinds.index(m.panel)] if m.panel in kinds else axes[0]
        kind = m.panel if m.panel in kinds else kinds[0]
        if m.kind == "zone":
            for a, b in _interval_bounds(d.fact(m.fact).value, xs[0], xs[-1]):
                for each in axes:
                    shade(each, a, b, m.label, f"zone:{m.fact}:{i}")
            continue
        raw = sp.sympify(m.at) if m.at is not None else d.fact(m.fact).value
        if not raw.is_finite:
            notes.append(m.missing)
            continue
        if m.kind == "limit":
            y = m.scale * float(raw)
            values.update({"y": y, f"{m.fact}_y": y})
            line = ax.axhline(y, color=color, linestyle=":", linewidth=1)
            line.set_gid(f"limit:{m.fact}:{i}")
            text = m.label.format_map(values)
            if labelled and text:
                label_hline(ax, y, text, color=color)
        elif m.kind == "edge":
            x = float(raw)
            values.update({"x": x, f"{m.fact}_x": x})
            text = m.label.format_map(values)
            for each in axes:
                vline(each, x, text if labelled else "", f"marker:{m.fact}:{i}", color=color)
        else:
            x = float(raw)
            y = 0.0 if m.y == "zero" else float(_along_panel(curve, kind, np.array([x]))[0])
            values.update({"x": x, "y": y, f"{m.fact}_x": x, f"{m.fact}_y": y})
            text = m.label.format_map(values)
            mark(ax, x, y, text if labelled else None, f"marker:{m.fact}:{i}", color=color)
            if m.zero_gradient and "grad" in kinds:  # where the loss is extremal the gradient is zero
                mark(axes[kinds.index("grad")], x, 0.0, "", f"marker:{m.fact}_gradient:{i}", color=color)
        notes.append(text)
    if spec.sweep_note is not None:
        return spec.sweep_note.format_map(values)
    return next((n for n in notes if n), "")


def draw_lesson(req: PlotRequest):
    """The lesson figure a card declares as a :class:`LessonFigure`: one panel per ``panels`` entry,
    one curve per parameter set, the ``marks``, the axis label, the lesson title."""
    spec = declaration(req.card)
    axis = _axis(req.card, spec)
    xs = req.xs(_union(axis.default_range(p) for p in req.param_sets))
    fig, axes = new_figure(1, len(spec.panels))
    row = list(axes[0])
    for ax, panel in zip(row, spec.panels):
        if panel.kind != "loss":
            zero_line(ax)
    for i, d in enumerate(req.derivations):
        curve = along(d, axis.x, axis.values(d.params))
        tag = req.label(i) or "loss"
        lines = [_plot_curve(ax, xs, _along_panel(curve, panel.kind, xs), req.label(i) or None, f"{panel.kind}:{tag}", COLORS[i])
                 for ax, panel in zip(row, spec.panels)]
        note = _draw_marks(spec, d, curve, row, i, COLORS[i], not req.sweep, xs)
        if note and req.sweep:  # a sweep names each value's lesson point in the legend: one readable label per value
            for line in lines:
                line.set_label(f"{req.label(i)}: {note}")
    for ax, panel in zip(row, spec.panels):
        ax.set_xlabel(axis.label)
        ax.set_ylabel(panel.ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    for ax, panel in zip(row, spec.panels):
        if panel.ylim is not None:
            ax.set_ylim(*_union(panel.ylim(p) for p in req.param_sets))
    suptitle(fig, req.title(spec.title))
    return fig


def builder(card: Card) -> Callable[[PlotRequest], object]:
    """The function that draws ``card``'s lesson figure: the card's ``CustomFigure`` builder, else :func:`draw_lesson`."""
    spec = card.figure
    if isinstance(spec, CustomFigure):
        return resolve_builder(spec, card.name)
    declaration(card)  # a clear error when the card declares nothing to draw
    return draw_lesson


def resolve_builder(spec: CustomFigure, owner: str) -> Callable:
    """Import the ``"module:function"`` a ``CustomFigure`` names; a bad path is one line naming the card."""
    module, _, name = spec.builder.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CardError(f"{owner}: its figure builder {spec.builder!r} cannot be imported ({exc})") from None


class _Figures(MappingABC):
    """entry name -> figure builder, read from the registry (kept for ``lossviz.plots.FIGURES``)."""

    def _names(self):
        from ..registry import names

        return names()

    def __getitem__(self, name):
        from ..registry import get

        if name not in self._names():
            raise KeyError(name)
        return builder(get(name))

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())


FIGURES: Mapping[str, Callable[[PlotRequest], object]] = _Figures()


# ----------------------------------------------------------------------------- the explorer's view of the declaration


@dataclass
class ExplorerSpec:
    """What an explorer needs from a card's declaration, at given (possibly symbolic) parameters.

    ``loss`` and ``grad`` are sympy expressions in ``x`` and the parameter symbols that were not
    given a value; ``marks`` are ``(mark, value)`` pairs, the value a sympy expression in the same
    symbols (an x position for point and edge marks, a set for zones, a y value for limits).
    """

    x: sp.Symbol
    cut: Dict[str, sp.Expr]
    loss: sp.Expr
    grad: sp.Expr
    x_range: Tuple[float, float]
    xlabel: str
    marks: List[Tuple[Mark, sp.Expr]]
    derivation: Derivation


def explorer_spec(card: Card, params: Optional[Mapping[str, object]] = None, symbolic: bool = True) -> ExplorerSpec:
    """The card's axis, cut, loss and gradient along it, default range and marked facts.

    Real parameters not in ``params`` stay sympy symbols when ``symbolic`` (lower with
    ``lossviz.symbolic.lower(spec.loss, ["x", *names])``); case parameters take their default.
    The range is the declared default at the parameter defaults.
    """
    spec = declaration(card)
    axis = _axis(card, spec)
    values = card.resolve(dict(params or {}), symbolic=symbolic)
    d = Derivation(card, values)
    cut = axis.values(values)
    curve_loss = d.loss.subs({d.symbols[v]: e for v, e in cut.items()})
    marks = []
    for m in spec.marks:
        if m.at is not None:
            marks.append((m, sp.sympify(m.at)))
        else:
            marks.append((m, sp.nsimplify(m.scale) * d.fact(m.fact).value if m.kind == "limit" else d.fact(m.fact).value))
    defaults = card.resolve({k: v for k, v in (params or {}).items()})
    return ExplorerSpec(axis.x, cut, curve_loss, sp.diff(curve_loss, axis.x), axis.default_range(defaults), axis.label, marks, d)
