"""The lesson figure of every entry (see the curriculum), drawn from the card's declaration.

A card declares its figure as data (:mod:`lossviz.cards.figure`): the natural axis, the panels
(loss, gradient or push, each possibly a second case with its own cut), reference curves
(σ(x), the unclipped surrogate, another entry's loss) and the facts to mark. :func:`draw_lesson`
draws every such figure; a card whose figure needs its own drawing names its builder
(``CustomFigure``, see :mod:`.custom`). Nothing here lists entries: :func:`builder` reads the
card, and :func:`explorer_spec` gives the explorer the same axis, cut and marks.

Every curve is a sympy expression cut along the axis and lowered to numpy (a gradient panel
shows its derivative, which sympy takes); every marked point comes from a fact sympy computed,
a position the card computes in sympy, or the lowered curve at that point. Lines carry a ``gid``
(``loss:<tag>``, ``grad:<tag>``, ``marker:<fact>``, ``zone:<fact>``, ``limit:<fact>``) so that
tests can find them. Each builder ends with :func:`suptitle`, which lays the figure out and
places its legends and lesson labels (:mod:`.placement`). In a sweep, each value's lesson point
is named in that value's legend entry, one readable label per value.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import sympy as sp

from ..cards.base import Card, CardError, Derivation
from ..cards.figure import Axis, Curve, CustomFigure, LessonFigure, Mark, Panel
from .core import COLORS, format_params, mark, new_figure, sample_axis, shade, vline, zero_line
from .cut import AxisCurve, along
from .placement import finish, label_hline, label_point

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


def _plot_curve(ax, xs, ys, label, gid, color=None, **kw):
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
    ys = curve.loss(xs) if kind == "loss" else curve.grad(xs) if kind == "grad" else -curve.grad(xs)
    return np.broadcast_to(np.asarray(ys, dtype=float), np.shape(xs))  # a constant lowers to a scalar


@dataclass
class Along:
    """What a declaration's functions receive (see :mod:`lossviz.cards.figure`): one parameter set on one panel."""

    p: Mapping[str, object]
    x: sp.Symbol
    cut: Dict[str, sp.Expr]
    loss: sp.Expr
    d: Derivation
    lo: float
    hi: float
    tag: str

    def other(self, name: str) -> sp.Expr:
        """Entry ``name``'s loss along its own axis, written in this axis symbol, at the parameters it shares with this one."""
        from ..registry import get

        card = get(name)
        params = card.resolve({k: v for k, v in self.p.items() if k in {q.name for q in card.params}})
        other = Derivation(card, params)
        values = card.axis.values(params)
        loss = other.loss.subs({other.symbols[v]: e for v, e in values.items()})
        return loss.subs(card.axis.x, self.x)


class _Values(dict):
    """Format keys of a label: the parameters, x, y, the drawn marks' ``<name>_x``/``<name>_y``, and every fact (a float, computed on first use)."""

    def __init__(self, d: Derivation):
        super().__init__({k: v for k, v in d.params.items() if v is not None})
        self.d = d

    def __missing__(self, key):
        value = float(self.d.fact(key).value)
        self[key] = value
        return value


def _text(label, values: Mapping, ctx: Along) -> str:
    if callable(label):
        return label(ctx)
    return label.format_map(values) if label else ""


def _by_name(expr, values: Mapping[str, object]):
    """``expr`` with each free symbol named in ``values`` replaced (by name: assumptions may differ)."""
    expr = sp.sympify(expr)
    subs = {s: values[s.name] for s in expr.free_symbols if s.name in values}
    return expr.subs(subs) if subs else expr


def mark_value(m: Mark, ctx: Along):
    """The value a mark shows (a position, a set or a y value), with parameters and card variables at their values
    along the axis (``given`` first); None: not marked."""
    if m.at is not None:
        raw = m.at(ctx) if callable(m.at) else sp.sympify(m.at)
        if raw is None:
            return None
    else:
        raw = ctx.d.fact(m.fact).value
    known = {**{k: v for k, v in ctx.p.items() if isinstance(v, (int, float, sp.Basic)) and not isinstance(v, bool)}, **ctx.cut}
    given = {k: _by_name(v(ctx) if callable(v) else v, known) for k, v in m.given.items()}
    raw = _by_name(_by_name(raw, given), known)
    return sp.nsimplify(m.scale) * raw if m.kind == "limit" else raw


def _along_expr(expr, kind: str, x):
    return expr if kind == "loss" else (sp.diff(expr, x) if kind == "grad" else -sp.diff(expr, x))


def _style(style, arg) -> dict:
    out = dict((style(arg) if callable(style) else style) or {})
    if isinstance(out.get("color"), int):  # an index into the palette: cards name no colours of their own
        out["color"] = COLORS[out["color"]]
    return out


def _draw_marks(spec: LessonFigure, panels, ctxs, curves, axes, i: int, color: str, labelled: bool, xs, tags) -> str:
    """Draw ``spec.marks`` for one parameter set; return the text for a sweep's legend entry."""
    d = ctxs[0].d
    values = _Values(d)
    notes = []
    for m in spec.marks:
        if not m.drawn or (m.once and i > 0):
            continue
        chosen = [k for k, p in enumerate(panels) if m.on is None or p.tag == m.on]
        if not chosen:
            continue
        ctx = ctxs[chosen[0]]
        if m.when is not None and not m.when(ctx):
            continue
        suffix = (m.gid or ("{fact}" if m.once else "{fact}:{i}")).format(fact=m.fact, i=i, tag=tags[chosen[0]])
        tint = COLORS[m.color] if isinstance(m.color, int) else m.color or (None if m.once else color)
        labelled_here = labelled or m.once
        if m.kind == "zone":
            text = _text(m.label, values, ctx)
            for a, b in _interval_bounds(mark_value(m, ctx), xs[0], xs[-1]):
                for k in chosen:
                    shade(axes[k], a, b, text, f"zone:{suffix}")
            continue
        raw = mark_value(m, ctx)
        if raw is None or not raw.is_finite:
            notes.append(m.missing)
            continue
        on_kind = [k for k in chosen if panels[k].kind == m.panel] or chosen[:1]
        if m.kind == "limit":
            y = float(raw)
            values.update({"y": y, f"{m.fact}_y": y})
            text = _text(m.label, values, ctx)
            for k in on_kind:
                line = axes[k].axhline(y, color=tint or "0.5", linestyle=":", linewidth=1)
                line.set_gid(f"limit:{suffix}")
                if labelled_here and text:
                    label_hline(axes[k], y, text, color=tint or "0.25")
        elif m.kind == "edge":
            x = float(raw)
            values.update({"x": x, f"{m.fact}_x": x})
            text = _text(m.label, values, ctx)
            for k in chosen:
                vline(axes[k], x, text if labelled_here else "", f"marker:{suffix}", color=tint or "0.35")
        elif m.kind == "gap":
            x = float(raw)
            for k in on_kind:
                top = float(_along_panel(curves[k], panels[k].kind, np.array([x]))[0])
                low = float(_along_panel(_extra(m.to, ctxs[k]), panels[k].kind, np.array([x]))[0])
                values.update({"x": x, "gap": top - low})
                axes[k].annotate("", (x, top), xytext=(x, low), arrowprops=dict(arrowstyle="<->", color="0.3", linewidth=0.8, shrinkA=0, shrinkB=0))
                label_point(axes[k], x, (top + low) / 2, _text(m.label, values, ctx), color="0.25")
            continue
        else:
            x = float(raw)
            for k in on_kind:
                y = 0.0 if m.y == "zero" else float(_along_panel(curves[k], panels[k].kind, np.array([x]))[0]) if m.y == "curve" \
                    else float(_by_name(ctx.d.fact(m.y).value, ctx.cut))
                values.update({"x": x, "y": y, f"{m.fact}_x": x, f"{m.fact}_y": y})
                text = _text(m.label, values, ctx)
                mark(axes[k], x, y, text if labelled_here else None, f"marker:{suffix}", color=tint or "k")
            if m.zero_gradient:  # where the loss is extremal the gradient is zero
                for k in chosen:
                    if panels[k].kind == "grad":
                        mark(axes[k], x, 0.0, "", f"marker:{m.fact}_gradient:{i}", color=tint or "k")
        notes.append(text)
    if spec.sweep_note is not None:
        return spec.sweep_note.format_map(values)
    return next((n for n in notes if n), "")


def _extra(name: str, ctx: Along) -> AxisCurve:
    """The figure's reference :class:`Curve` called ``name`` (for a gap mark), along this panel."""
    spec = declaration(ctx.d.card)
    curve = next(c for c in spec.curves if c.name == name)
    return _reference(curve, ctx)


def _reference(curve: Curve, ctx: Along) -> Optional[AxisCurve]:
    y = curve.y(ctx) if callable(curve.y) else sp.sympify(curve.y, locals={ctx.x.name: ctx.x, **{k: v for k, v in ctx.p.items() if v is not None}})
    if y is None:
        return None
    y = sp.sympify(y)
    return AxisCurve(ctx.x, y, sp.diff(y, ctx.x))


def _line_labels(spec: LessonFigure, req: PlotRequest, ctxs_per_set, k: int) -> List[Optional[str]]:
    """The legend text of the card's curve on panel ``k`` for each parameter set."""
    panel = spec.panels[k]
    declared = panel.label if panel.label is not None else spec.label
    if declared is None:
        return [req.label(i) or None for i in range(len(req.param_sets))]
    texts = [declared(ctxs[k]) if callable(declared) else declared for ctxs in ctxs_per_set]
    if req.sweep and len(set(texts)) < len(texts):  # the declared text does not tell the swept values apart
        texts = [f"{t} ({req.label(i)})" for i, t in enumerate(texts)]
    return texts


def curve_gid(card: Card, panel: Panel, params: Mapping[str, object]) -> str:
    """The gid of the card's own curve on ``panel`` for one parameter set (no sweep): ``<kind>:<tag>``."""
    return f"{panel.kind}:{panel.tag or declaration(card).tag.format_map({k: v for k, v in params.items() if v is not None})}"


def mark_gid(m: Mark, i: int = 0) -> str:
    """The gid of a point or edge mark's line for parameter set ``i`` (a mark whose ``gid`` names a tag has none to give)."""
    return "marker:" + (m.gid or ("{fact}" if m.once else "{fact}:{i}")).format(fact=m.fact, i=i, tag="")


def draw_lesson(req: PlotRequest):
    """The lesson figure a card declares as a :class:`LessonFigure`: the panels laid out in ``rows``,
    the card's curve on each per parameter set, the reference curves, the marks, the axis label, the title."""
    spec = declaration(req.card)
    axis = _axis(req.card, spec)
    xs = req.xs(_union(axis.default_range(p) for p in req.param_sets))
    panels = spec.panels
    cols = -(-len(panels) // spec.rows)
    fig, grid = new_figure(spec.rows, cols, *(spec.size or ()))
    axes = [grid[k // cols][k % cols] for k in range(len(panels))]
    for ax, panel in zip(axes, panels):
        if panel.title:
            ax.set_title(panel.title)
    ctxs_per_set, curves_per_set, tags_per_set = [], [], []
    for i, d in enumerate(req.derivations):
        base = axis.values(d.params)
        tag = req.label(i) or spec.tag.format_map(_Values(d))
        ctxs, curves, tags, cache = [], [], [], {}
        for panel in panels:
            cut = {**base, **{k: sp.sympify(v) for k, v in panel.cut.items()}}
            key = tuple(sorted(panel.cut.items()))
            if key not in cache:
                cache[key] = along(d, axis.x, cut)
            curves.append(cache[key])
            tags.append(panel.tag if panel.tag and not req.sweep else f"{panel.tag}:{req.label(i)}" if panel.tag else tag)
            ctxs.append(Along(d.params, axis.x, cut, cache[key].loss_expr, d, float(xs[0]), float(xs[-1]), tags[-1]))
        ctxs_per_set.append(ctxs)
        curves_per_set.append(curves)
        tags_per_set.append(tags)
    for i, (ctxs, curves, tags) in enumerate(zip(ctxs_per_set, curves_per_set, tags_per_set)):  # the card's curves first
        lines = []
        for k, (ax, panel) in enumerate(zip(axes, panels)):
            style = {"color": COLORS[i], **_style(panel.style, i)}
            text = _line_labels(spec, req, ctxs_per_set, k)[i]
            lines.append(_plot_curve(ax, xs, _along_panel(curves[k], panel.kind, xs), text, f"{panel.kind}:{tags[k]}", **style))
        note = _draw_marks(spec, panels, ctxs, curves, axes, i, COLORS[i], not req.sweep, xs, tags)
        if note and req.sweep:  # a sweep names each value's lesson point in the legend: one readable label per value
            for line in lines:
                line.set_label(f"{line.get_label()}: {note}")
    drawn = set()
    for i, (ctxs, tags) in enumerate(zip(ctxs_per_set, tags_per_set)):  # then the references, each once
        for k, (ax, panel) in enumerate(zip(axes, panels)):
            for ref in spec.curves:
                if panel.kind not in ref.panels:
                    continue
                gid = f"{panel.kind}:{ref.name.format_map({**_Values(ctxs[k].d), 'tag': tags[k]})}"
                if gid in drawn:
                    continue
                along_ref = _reference(ref, ctxs[k])
                if along_ref is None:
                    continue
                drawn.add(gid)
                label = ref.label.get(panel.kind, "") if isinstance(ref.label, MappingABC) else ref.label(ctxs[k]) if callable(ref.label) else ref.label
                _plot_curve(ax, xs, _along_panel(along_ref, panel.kind, xs), label or None, gid, **{"color": COLORS[i], **_style(ref.style, ctxs[k])})
    for ax, panel in zip(axes, panels):
        if panel.kind != "loss" and not any(len(line.get_ydata()) == len(xs) and np.all(np.asarray(line.get_ydata(), float) == 0)
                                           for line in ax.get_lines()):
            zero_line(ax)  # the y = 0 guide, unless a curve drawn there is zero everywhere (GPTLM's masked position)
        ax.set_xlabel(axis.label)
        ax.set_ylabel(panel.ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    for ax, panel in zip(axes, panels):
        if panel.ylim is not None:
            ax.set_ylim(*_union(panel.ylim(p) for p in req.param_sets))
    suptitle(fig, req.title(spec.title(ctxs_per_set[0][0]) if callable(spec.title) else spec.title))
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
    defaults = card.resolve({k: v for k, v in (params or {}).items()})
    x_range = axis.default_range(defaults)
    main = spec.panels[0].tag if spec.panels else None  # the explorer shows the first panel's case
    ctx = Along(values, axis.x, cut, curve_loss, d, x_range[0], x_range[1], main or spec.tag)
    marks = []
    for m in spec.marks:
        if m.kind == "gap" or (m.on is not None and m.on != main) or (m.when is not None and not m.when(ctx)):
            continue
        value = mark_value(m, ctx)
        if value is not None:
            marks.append((m, value))
    return ExplorerSpec(axis.x, cut, curve_loss, sp.diff(curve_loss, axis.x), x_range, axis.label, marks, d)
