"""Interactive explorers for JupyterLab: ``lossviz.explore("dpo")`` is all a learner types.

An explorer reads only the card: its natural axis, cut and marked facts come from the card's
declaration (:func:`lossviz.plots.lessons.explorer_spec`), and what the learner moves beyond the
parameters is declared in the card's ``controls`` (:mod:`lossviz.cards.controls`: a variable
the axis holds fixed, a point on the axis, slider windows, label dropdowns, explorer-only facts
and lines). It shows one slider per real parameter, a switch for each optional one the card
offers (PPO's dual clip, clip-higher), a dropdown per case, and a figure of the loss and its
gradient along the axis with the marked facts. Below the figure the closed-form facts are
shown at the current values, and the loss and gradient are shown as sympy's LaTeX of the
derivation at the current parameter values.

Speed: everything symbolic happens when the explorer is built (or a case or switch changes).
The cut of the loss, its derivative, the facts and the markers are lowered to numpy as
functions of the axis and the sliders. A slider move evaluates numpy, blits the curves over a
cached background and encodes a PNG; the LaTeX at the new values is printed by sympy and
cached per value (``benchmarks/bench_widgets.py`` measures a move).
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
import string
import sys
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import sympy as sp

from .cards._common import solve_one
from .cards.base import Card, CardError, Derivation, Param, _tidy
from .cards.controls import CONTROL_KINDS, Formula, GradientOf, Guide, Hold, Labels, Minimum, Point, Window
from .cards.figure import Mark
from .plots.core import COLORS, SHADE, STYLE
from .plots.lessons import Along, explorer_spec, mark_value
from .registry import get
from .symbolic import elementary, lower

FIG_SIZE, FIG_DPI = (7.0, 3.1), 100  # the PNG is 700 x 310 px and is shown at exactly that size


class Declared:
    """A card's ``controls``, sorted by kind and checked once (a bad item is one line naming the card)."""

    def __init__(self, card: Card):
        items = tuple(getattr(card, "controls", None) or ())
        self.holds: List[Hold] = []
        self.point: Optional[Point] = None
        self.windows: Dict[str, Window] = {}
        self.labels: Dict[str, Labels] = {}
        self.formulas: List[Formula] = []
        self.minima: List[Minimum] = []
        self.guides: List[Guide] = []
        self.marks: List[Mark] = []  # card facts marked in the explorer only
        self.gradient: Tuple[str, ...] = ()  # the variables of the gradient printed (default: the one the axis moves)
        params = {p.name for p in card.params}
        for item in items:
            if isinstance(item, Hold):
                self.holds.append(item)
            elif isinstance(item, Point):
                if self.point is not None:
                    raise CardError(f"{card.name}: controls declare two Points ({self.point.name}, {item.name}); an explorer marks one")
                self.point = item
            elif isinstance(item, Window):
                if item.param not in params:
                    raise CardError(f"{card.name}: controls give a Window for {item.param!r}, which is not a parameter; parameters: {', '.join(sorted(params)) or 'none'}")
                self.windows[item.param] = item
            elif isinstance(item, Labels):
                if item.param not in params:
                    raise CardError(f"{card.name}: controls give Labels for {item.param!r}, which is not a parameter")
                self.labels[item.param] = item
            elif isinstance(item, Formula):
                self.formulas.append(item)
            elif isinstance(item, Minimum):
                self.minima.append(item)
            elif isinstance(item, Guide):
                self.guides.append(item)
            elif isinstance(item, Mark):
                self.marks.append(item)
            elif isinstance(item, GradientOf):
                self.gradient = tuple(item.variables)
            else:
                kinds = ", ".join(k.__name__ for k in CONTROL_KINDS + (Mark,))
                raise CardError(f"{card.name}: controls hold {item!r}; each item must be one of {kinds}")
        self.knobs: Dict[str, Union[Hold, Point]] = {}
        for knob in self.holds + ([self.point] if self.point else []):
            if knob.name in params or knob.name in self.knobs:
                raise CardError(f"{card.name}: the control {knob.name!r} is declared twice or shadows a parameter")
            if not knob.low < knob.high:
                raise CardError(f"{card.name}: the control {knob.name!r} needs low < high; got [{knob.low:g}, {knob.high:g}]")
            self.knobs[knob.name] = knob

    def switched_on(self, prm: Param) -> Optional[float]:
        """The value an optional parameter takes when switched on (None: the explorer offers no switch)."""
        window = self.windows.get(prm.name)
        return None if window is None else window.on


def _other_cases_variables(card: Card, present) -> set:
    """The variables the card has in some case but not in ``present`` (a Hold may name them: it does nothing there)."""
    found = set()
    for prm in card.params:
        for choice in (prm.choices or ()):
            try:
                found |= set(card.variables(card.resolve({prm.name: choice})))
            except CardError:  # a combination the card refuses on its own
                continue
    return found - set(present)


def _knob_default(card: Card, knob, cut: Mapping[str, sp.Expr]) -> float:
    """A Hold starts at the axis's value of its variable (or its own default); a Point at its default."""
    if isinstance(knob, Hold):
        # a Hold may name variables that only other cases have (kl-estimators' detached copies of k1+/k3+)
        missing = [v for v in knob.held if v not in cut and v not in _other_cases_variables(card, cut)]
        if missing:
            raise CardError(f"{card.name}: the control {knob.name!r} holds {missing[0]!r}, which is not on the axis; variables: {', '.join(cut)}")
    if isinstance(knob, Hold) and knob.default is None:
        value = cut.get(knob.held[0])
        if getattr(value, "free_symbols", None):
            raise CardError(f"{card.name}: the control {knob.name!r} holds {knob.held[0]!r}, which the axis does not hold at a number; "
                            f"give the Hold a default")
        return float(value)
    return float(knob.default)


def _spec(card: Card, params: Mapping[str, object], symbolic: bool = True):
    """``explorer_spec``; where a mark names a fact that this case lacks (PRM's optimum exists for soft labels
    only), the spec of the card with those marks left out."""
    try:
        return explorer_spec(card, params, symbolic=symbolic)
    except KeyError:
        if getattr(card.figure, "marks", None) is None:
            raise
        facts = {f.name for f in Derivation(card, card.resolve(dict(params), symbolic=symbolic)).facts}
        figure = card.figure
        kept = tuple(m for m in figure.marks if m.at is not None or m.fact in facts)
        lean = type(type(card).__name__, (type(card),), {"figure": dataclasses.replace(figure, marks=kept)})()
        return explorer_spec(lean, params, symbolic=symbolic)


def slider_range(prm: Param, default: float) -> tuple:
    """(min, max, step) of a slider: the parameter's valid range, narrowed to a useful window."""
    lo = prm.low if prm.low is not None else -5.0
    hi = prm.high if prm.high is not None else max(5.0, 4 * abs(default))
    if prm.low_open:
        lo = lo + (0.01 if hi - lo <= 10 else 0.05)
    if prm.high_open:
        hi = hi - 0.01
    if hi - lo > 10:  # e.g. beta in (0, 100]: a window around the default
        hi = min(hi, max(2.0, 10 * abs(default)))
    step = 0.01 if hi - lo <= 5 else 0.05
    return float(lo), float(hi), step


# --- LaTeX at values ------------------------------------------------------------------------------
def _shown(r: sp.Rational) -> sp.Expr:
    """How a number is typeset: integers and halves exactly, everything else as a short decimal."""
    if r.is_Integer or r.q <= 2:
        return r
    return sp.Float(f"{float(r):.4g}")


def latex_at(expr: sp.Basic, values: Mapping[sp.Symbol, float], names: Mapping[sp.Symbol, str]) -> str:
    """sympy's LaTeX of ``expr`` with ``values`` put in: sympy does the arithmetic, a product gets a ``\\cdot``.

    The values go in as exact rationals, so 1/(2β) at β = 0.1 becomes 5 and log(1 + ε) stays log(1.2);
    a number is not distributed over a sum (β(h - z) stays a product), and the rationals left are
    typeset as 4-digit decimals.
    """
    from sympy.core.parameters import distribute

    exact = {s: sp.Rational(repr(float(v))) for s, v in values.items()}
    with distribute(False):
        at = expr.xreplace(exact) if exact else expr
    with sp.evaluate(False):
        at = at.xreplace({r: _shown(r) for r in at.atoms(sp.Rational) if not (r.is_Integer or r.q <= 2)})
        at = at.xreplace({f: sp.Float(f"{float(f):.4g}") for f in at.atoms(sp.Float)})
    return sp.latex(at, symbol_names=dict(names), mul_symbol="dot")




def _without_held_values(label: str) -> str:
    """The axis label without its closing parenthesis, which states the values the axis holds fixed
    ("value $v$ ($v_{old}$ = 0, R = 1)"): in the explorer those values are sliders, and they move."""
    text = label.rstrip()
    if not text.endswith(")"):
        return label
    depth = 0
    for i in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return text[:i].rstrip() or label
    return label


def _legend(m: Mark, along, at_numbers) -> str:
    """A mark's legend in the explorer: its label up to the first value it prints (the values move with the sliders).

    A label function gets the parameters as symbols, or as numbers (``at_numbers``) where it needs them."""
    label = m.label
    if callable(label):
        label = ""
        for ctx in (along, at_numbers):
            try:
                label = str(m.label(ctx))
                break
            except (TypeError, ValueError, AttributeError, KeyError):
                continue
    text = ""
    try:
        for literal, field, _, _ in string.Formatter().parse(label or ""):
            text += literal
            if field is not None:
                break
    except ValueError:  # not a format string
        text = label
    text = text.strip(" =:")
    if text.count("$") % 2:  # cut inside mathtext
        text = text[:text.rindex("$")].strip(" =:")
    return text or m.fact.replace("_", " ")


class _Lowered:
    """Everything numeric about one structure (cases, switched-on options): built once, reused.

    The axis, the cut and the marks come from :func:`explorer_spec`; the variables the card's
    controls hold become their sliders' symbols. An optional parameter that is switched on is
    a symbol too (``explorer_spec`` resolves its parameters through the card, which takes numbers),
    so its derivation is rebuilt with that symbol in it."""

    def __init__(self, card: Card, declared: Declared, structure: Mapping[str, object], sliding: Sequence[Param],
                 options: Mapping[str, float]):
        self.card = card
        spec = _spec(card, {**structure, **options})
        d = spec.derivation
        if options:
            d = Derivation(card, {**d.params, **{name: card.param(name).symbol for name in options}})
        self.derivation = d
        self.x = x = spec.x
        self.xlabel = _without_held_values(spec.xlabel) if declared.holds else spec.xlabel
        knobs = list(declared.knobs.values())
        self.arg_sliders = [p.name for p in sliding] + [k.name for k in knobs]  # the slider behind each argument
        arg_symbols = [p.symbol for p in sliding] + [k.symbol for k in knobs]
        self.arg_names = [s.name for s in arg_symbols]
        if x.name in self.arg_names:
            raise CardError(f"{card.name}: the axis symbol {x.name!r} is also a parameter's name; rename one")
        self.arg_symbols = set(arg_symbols)
        self.symbol_of = dict(zip(self.arg_sliders, arg_symbols))
        self.slider_of = {s: n for n, s in self.symbol_of.items()}
        cut = dict(spec.cut)
        for hold in declared.holds:
            others = _other_cases_variables(card, d.symbols)
            for variable in hold.held:
                if variable not in cut and variable in others:
                    continue  # a variable only other cases have (kl-estimators' detached copies of k1+/k3+)
                if variable not in cut:
                    raise CardError(f"{card.name}: the control {hold.name!r} holds {variable!r}, which is not on the axis; "
                                    f"variables: {', '.join(cut)}")
                cut[variable] = hold.symbol
        cut_map = {d.symbols[v]: e for v, e in cut.items() if v in d.symbols}
        # the printed formula: a variable a slider holds is that slider (put in at its value); the variables the
        # axis fixes at numbers stay symbols in the formula, and the header names their values
        self.held_subs = {d.symbols[v]: h.symbol for h in declared.holds for v in h.held if v in d.symbols}
        self.held_names = [h.name for h in declared.holds if any(v in d.symbols for v in h.held)]
        self.axis_fixed = {v: float(e) for v, e in spec.cut.items()
                           if v in d.symbols and d.symbols[v] not in self.held_subs and getattr(e, "is_number", False)}
        self.cut = d.loss.subs(cut_map)
        names = [x.name] + self.arg_names
        self.loss = lower(self.cut, names, "numpy")
        self.grad = lower(sp.diff(self.cut, x), names, "numpy")
        # a fact's variables take their values on the cut; a symbol a control stands for (KTO's z_ref) is that control
        fixed = {d.symbols[v]: e for v, e in cut.items() if v in d.symbols and not e.has(x)}
        renamed = {s: h.symbol for h in declared.holds for s in _all_symbols(d) if s.name in h.stands_for}
        subs = {**fixed, **renamed}
        self.latex_names = {**d._latex_names(), **{k.symbol: sp.latex(sp.Symbol(k.name)) for k in knobs}}
        self.facts: List[dict] = []
        for fact in d.facts:
            self._add_fact(fact.name, fact.doc, fact.value, subs, formula_subs=renamed)
        self._add_declared_facts(declared, d)
        self.markers: List[tuple] = []  # (legend, x position)
        self.marker_panels: List[Optional[str]] = []  # per marker: None (both panels) or "grad" (the gradient panel only)
        self.hlines: List[tuple] = []  # (legend, panel, y)
        self.zones: List[tuple] = []  # (legend, (start, end))
        self._marker_symbols = set()
        self._positions: List[sp.Expr] = []
        # the marks explorer_spec chose, valued again here: along this cut the held variables are sliders
        along = Along(p=d.params, x=x, cut=cut, loss=self.cut, d=d, lo=spec.x_range[0], hi=spec.x_range[1], tag="")
        at_numbers = dataclasses.replace(along, p=card.resolve({**structure, **options}))
        shown = {m.fact for m in declared.marks}
        for m in [m for m, _ in spec.marks if m.fact not in shown] + list(declared.marks):
            try:
                value = mark_value(m, along)
            except KeyError:  # a fact of another case (PPO's flat zones exist only while the clip is on): nothing to mark
                continue
            if value is not None:
                self._add_mark(m, value.xreplace(renamed) if isinstance(value, sp.Basic) else value, along, at_numbers)
        values = {**d.params, **{k.name: k.symbol for k in knobs}}
        for guide in declared.guides:
            position = guide.position(values)
            if position is not None:
                self._add_position(guide.label, sp.sympify(position))
        for minimum in declared.minima:
            if minimum.label:
                self._add_position(minimum.label, next(f["value"] for f in self.facts if f["name"] == minimum.name))
        used = set(self.cut.free_symbols) | set(d.loss.free_symbols) | set(self._marker_symbols)
        for f in self.facts:
            used |= f["symbols"]
        self.used = {self.slider_of[s] for s in used if s in self.slider_of}  # the sliders that change something
        moving = [v for v, e in spec.cut.items() if e.has(x)] or list(d.variables)
        unknown = [v for v in declared.gradient if v not in d.variables]
        if unknown:
            raise CardError(f"{card.name}: GradientOf names {unknown[0]!r}, which is not a variable; variables: {', '.join(d.variables)}")
        self.gradient_variables = list(declared.gradient) or moving[:1]  # the gradient printed below the figure
        # the printed loss: a card whose loss carries a numerical guard (PPO's float64 clamp of the log-ratio, far
        # beyond every ratio shown) is printed as its surrogate without it, with a note; the curves use the loss itself
        self.shown_loss, self.guard_note = d.loss, ""
        surrogate = getattr(card, "surrogate", None)
        if callable(surrogate) and "log_ratio_max" in d.params and d.params["log_ratio_max"] is None:
            from .cards.ppo import FLOAT64_LOG_RATIO_MAX

            self.shown_loss = surrogate(d.p, clamp=False)
            self.guard_note = (f"printed without the overflow guard: the loss clamps log π − log π_old at "
                               f"¾·log(float64 max) = {FLOAT64_LOG_RATIO_MAX:.1f}, beyond every ratio shown")
        else:  # the same guard in the other cards that carry it (GRPO family, k3): every branch it guards is dropped
            stripped = strip_overflow_guard(d.loss)
            if stripped != d.loss:
                self.shown_loss = stripped
                self.guard_note = (f"printed without the overflow guard: the loss clamps its log-ratio at "
                                   f"±¾·log(float64 max) = ±{FLOAT64_GUARD:.1f}, beyond every ratio shown")
        self.shown_gradient = {v: _tidy(sp.diff(self.shown_loss, d.symbols[v])) if self.shown_loss is not d.loss else d.gradient[v]
                               for v in self.gradient_variables}

    def _lower(self, expr):
        return lower(expr, self.arg_names, "numpy")

    def _lowerable(self, value) -> bool:
        return isinstance(value, sp.Expr) and not getattr(value, "is_Matrix", False) and value.free_symbols <= self.arg_symbols

    def _add_position(self, label, value, panel=None):
        """A vertical line at ``value`` on both panels, or on the gradient panel only (``panel`` "grad")."""
        if not self._lowerable(value):
            return
        same = [i for i, seen in enumerate(self._positions) if sp.simplify(value - seen) == 0]
        if same:  # one line per position, on both panels if any mark there asks for both (KTO's reference point z)
            if panel is None:
                self.marker_panels[same[0]] = None
            return
        self._positions.append(value)
        self._marker_symbols |= value.free_symbols
        self.markers.append((label, self._lower(value)))
        self.marker_panels.append(panel)

    def _add_mark(self, m: Mark, value, along, at_numbers):
        label = _legend(m, along, at_numbers)
        if m.kind in ("point", "edge"):
            # a point the card marks on the gradient (basics' "x = 0: gradient") belongs to that panel only
            self._add_position(label, value, "grad" if m.kind == "point" and m.panel in ("grad", "push") else None)
        elif m.kind == "limit" and self._lowerable(value):
            self._marker_symbols |= value.free_symbols
            self.hlines.append((label, m.panel, self._lower(value)))
        elif m.kind == "zone" and isinstance(value, sp.Interval) and value.free_symbols <= self.arg_symbols:
            # a zone whose form depends on a control's sign (PPO's policy loss) is not a single interval: not shaded
            self._marker_symbols |= value.free_symbols
            start, end = self._lower(value.start), self._lower(value.end)
            self.zones.append((label, lambda *a: (start(*a), end(*a))))

    def _add_declared_facts(self, declared: Declared, d: Derivation):
        x = self.x
        point = declared.point
        if point is not None:
            x0 = point.symbol
            grad = sp.diff(self.cut, x).subs(x, x0)
            name = point.name
            self._add_fact(f"loss_at_{name}", f"ℓ at {name}", self.cut.subs(x, x0), {})
            self._add_fact(f"gradient_at_{name}", f"∂ℓ/∂{x.name} at {name}", grad, {})
            self._add_fact(f"push_at_{name}", f"push = -∂ℓ/∂{x.name} at {name}: the step gradient descent takes, per unit learning rate", -grad, {})
        names = {**{s.name: s for s in self.arg_symbols}, **{k.name: k.symbol for k in declared.knobs.values()},
                 **{p.name: p.symbol for p in self.card.params if not p.is_case}}
        for formula in declared.formulas:
            try:
                value = sp.sympify(formula.expression, locals=names)
            except (sp.SympifyError, SyntaxError, TypeError) as exc:
                raise CardError(f"{self.card.name}: the explorer fact {formula.name!r} is not a formula sympy reads ({exc})") from None
            self._add_fact(formula.name, formula.doc, value, {})
        for minimum in declared.minima:
            found = solve_one(elementary(sp.diff(self.cut, x)), x)
            value = sp.nan if found is None else sp.simplify(found)
            self._add_fact(minimum.name, minimum.doc, value, {})

    def _add_fact(self, name, doc, value, subs, formula_subs=None):
        """A fact valued on the cut (``subs``: the variables the axis fixes, the controls). A fact that
        stays a formula in the card's variables is printed before the cut (``formula_subs`` only):
        logexp's stable form is -log σ(r_c - r_r - m), not its value at the axis's r_r = 0."""
        entry = {"name": name, "doc": doc}
        original = value
        if isinstance(value, sp.Basic) and subs:
            value = value.xreplace(subs)
        if (formula_subs is not None and isinstance(original, sp.Basic) and not self._lowerable(value)
                and not (isinstance(value, sp.Interval) and value.free_symbols <= self.arg_symbols)):
            value = original.xreplace(formula_subs)
        entry["value"] = value
        entry["symbols"] = set(getattr(value, "free_symbols", ()))
        if self._lowerable(value):
            entry.update(kind="number", fn=self._lower(value))
        elif isinstance(value, sp.Interval) and value.free_symbols <= self.arg_symbols:
            start, end = self._lower(value.start), self._lower(value.end)
            entry.update(kind="interval", fn=lambda *a: (start(*a), end(*a)), open=(value.left_open, value.right_open))
        else:
            entry.update(kind="latex", expr=value, depends=sorted(self.slider_of[s] for s in getattr(value, "free_symbols", ()) if s in self.arg_symbols))
        self.facts.append(entry)


def _all_symbols(d: Derivation):
    symbols = set()
    for fact in d.facts:
        symbols |= getattr(fact.value, "free_symbols", set())
    return symbols


#: the production's float64 clamp of a log-ratio, ¾·log(finfo(float64).max) (lossviz.losses.log_ratio_limit)
FLOAT64_GUARD = 0.75 * math.log(sys.float_info.max)


def _is_guard(condition) -> bool:
    """A Piecewise condition that tests a log-ratio against ±FLOAT64_GUARD (the overflow clamp, not a lesson's clip)."""
    numbers = getattr(condition, "atoms", lambda *_: ())(sp.Float)
    return any(math.isclose(abs(float(n)), FLOAT64_GUARD, rel_tol=1e-9) for n in numbers)


def strip_overflow_guard(expr: sp.Basic) -> sp.Basic:
    """``expr`` with every Piecewise branch guarded by the float64 log-ratio clamp removed.

    The production clamps log-ratios at ¾·log(float64 max) ≈ 532.3 before ``exp`` (a constant beyond it, zero
    gradient); the cards carry that branch so that their loss equals the production everywhere, but it lies far
    beyond any ratio an explorer shows, so the formula printed to the learner leaves it out (with a note)."""
    def strip(pw):
        kept = [(e, c) for e, c in pw.args if not _is_guard(c)]
        if len(kept) == len(pw.args):
            return pw
        if len(kept) == 1 and kept[0][1] == sp.true:
            return kept[0][0]
        return sp.Piecewise(*kept)

    if not isinstance(expr, sp.Basic) or not expr.has(sp.Piecewise):
        return expr
    return expr.replace(lambda e: isinstance(e, sp.Piecewise) and any(_is_guard(c) for _, c in e.args), strip)


# built structures, shared by every explorer of the same card: a second explorer (or a re-run cell) costs no sympy
_LOWERED: Dict[tuple, _Lowered] = {}


class Explorer:
    """The widget for one entry. ``.widget`` is what a notebook displays; ``.set(beta=0.3)`` moves sliders."""

    def __init__(self, card: Union[str, Card], x_range=None, **params):
        import ipywidgets as w

        self.card = get(card) if isinstance(card, str) else card
        self.declared = declared = Declared(self.card)
        self.given_x_range = _x_range(x_range) if x_range is not None else None
        self.knobs = declared.knobs  # the controls that are not parameters: held variables and the point
        card_params = {k: v for k, v in params.items() if k not in self.knobs}
        for name, value in params.items():
            if name in self.knobs:
                _check_knob(self.card.name, self.knobs[name], value)
        # a fixed-label case (PRM hard) gets its label dropdown; the card checks the combination
        resolved = self.card.resolve(card_params)
        self.cases = {p.name: resolved[p.name] for p in self.card.params if p.is_case}
        spec = _spec(self.card, resolved, symbolic=False)  # the axis's values start the held variables
        self.x_range = self.given_x_range or spec.x_range
        self.xs = np.linspace(*self.x_range, 401)

        self.sliders: Dict[str, object] = {}
        self.switches: Dict[str, object] = {}
        self.dropdowns: Dict[str, object] = {}
        self.label_dropdowns: Dict[str, object] = {}
        rows = []
        # an optional parameter the card offers no switch for (PPO's overflow clamp) keeps the value given or its default
        self.fixed = {p.name: resolved[p.name] for p in self.card.params if p.optional and declared.switched_on(p) is None}
        for prm in self.card.params:
            if prm.name in self.fixed:
                continue
            if prm.is_case:
                box = w.Dropdown(options=list(prm.choices), value=self.cases[prm.name], description=prm.name,
                                 style={"description_width": "initial"}, layout=w.Layout(width="300px"))
                box.observe(self._structure_changed, names="value")
                self.dropdowns[prm.name] = box
                rows.append(box)
                continue
            default = resolved[prm.name]
            on = default is not None
            start = float(default) if on else float(declared.switched_on(prm))
            window = declared.windows.get(prm.name)
            lo, hi, step = slider_range(prm, start)
            if window is not None:
                lo, hi, step = (lo if window.low is None else window.low, hi if window.high is None else window.high,
                                step if window.step is None else window.step)
            slider = w.FloatSlider(value=float(min(max(start, lo), hi)), min=lo, max=hi, step=step, description=prm.name,
                                   continuous_update=True, readout_format=".3g", style={"description_width": "initial"},
                                   layout=w.Layout(width="300px"))
            slider.observe(self._changed, names="value")
            self.sliders[prm.name] = slider
            if prm.optional:
                switch = w.Checkbox(value=on, description="on", indent=False, layout=w.Layout(width="50px"))
                switch.observe(self._structure_changed, names="value")
                self.switches[prm.name] = switch
                slider.disabled = not on
                # a row of its own, switch first: in a wrapping row it would sit after the previous slider's value
                rows.append(w.HBox([switch, slider], layout=w.Layout(width="100%")))
            else:
                rows.append(slider)
        for name, labels in declared.labels.items():
            box = w.Dropdown(options=list(labels.choices.items()), description=f"{name} (label)", style={"description_width": "initial"},
                             layout=w.Layout(width="300px"))
            value = resolved.get(name)
            if value in labels.choices.values():
                box.value = float(value)
            box.observe(self._structure_changed, names="value")
            self.label_dropdowns[name] = box
            rows.append(box)
        for knob in self.knobs.values():
            start = params.get(knob.name, _knob_default(self.card, knob, spec.cut))
            slider = w.FloatSlider(value=float(start), min=knob.low, max=knob.high, step=knob.step,
                                   description=knob.name, continuous_update=True, readout_format=".3g",
                                   style={"description_width": "initial"}, layout=w.Layout(width="300px"), tooltip=knob.doc)
            slider.observe(self._changed, names="value")
            self.sliders[knob.name] = slider
            rows.append(slider)
        for name, value in card_params.items():  # values given to the constructor that the window does not hold
            if name in self.sliders and value is not None:
                self._place(name, float(value))

        width, height = int(FIG_SIZE[0] * FIG_DPI), int(FIG_SIZE[1] * FIG_DPI)
        # fixed pixel size and no flex growth: the PNG is never stretched or squeezed by the page
        self.image = w.Image(format="png", width=width, height=height,
                             layout=w.Layout(width=f"{width}px", height=f"{height}px", min_width=f"{width}px", max_width=f"{width}px",
                                             flex="0 0 auto", object_fit="contain"))
        self.image.add_class("lossviz-plot")
        self.facts_view = w.HTMLMath(layout=w.Layout(width=f"{width}px", flex="0 0 auto"))
        self.facts_view.add_class("lossviz-facts")
        # min_width 0: the flex column may not grow to the widest formula; each formula scrolls on its own
        self.latex_view = w.HTMLMath(layout=w.Layout(width="100%", min_width="0", max_width="100%", overflow="hidden"))
        self.latex_view.add_class("lossviz-latex")
        self._text_width = width  # the formulas' own width: a definite max-width lets a long one scroll, not run off the page
        self._latex_cache: Dict[tuple, str] = {}
        self._latex_timer = None
        self.latex_delay = 0.25  # seconds a slider rests before a new value's LaTeX is printed (0: at once)
        self._rebuild()
        controls = w.Box(rows, layout=w.Layout(display="flex", flex_flow="row wrap", width=f"{width + 40}px", max_width="100%"))
        title = w.HTML(f"<b>{html.escape(self.card.name)}</b>: {html.escape(self.card.lesson)}",
                       layout=w.Layout(width=f"{width}px"))
        self.widget = w.VBox([title, controls, self.image, self.facts_view, self.latex_view],
                             layout=w.Layout(width="100%", min_width="0", align_items="flex-start", margin="0 0 16px 0"))
        self.widget.add_class("lossviz-explorer")

    # --- structure: cases, switches, fixed labels; symbolic work --------------------------------
    def _structure(self) -> Dict[str, object]:
        structure = {**self.cases, **self.fixed}
        for prm in self.card.params:
            if prm.is_case:
                continue
            if prm.name in self.switches and not self.switches[prm.name].value:
                structure[prm.name] = None
        for name, labels in self.declared.labels.items():  # a case that fixes a parameter to a label (PRM hard: p is 1 or 0)
            if labels.case in self.cases.values():
                structure[name] = self.label_dropdowns[name].value
        return structure

    def _current(self, structure) -> Dict[str, object]:
        """Every parameter at its current value: the structure and the sliders that move."""
        return {**{k: v for k, v in structure.items()}, **{p.name: float(self.sliders[p.name].value) for p in self.sliding}}

    def _rebuild(self, refit_x: bool = False):
        structure = self._structure()
        self.sliding = [p for p in self.card.params if not p.is_case and p.name not in structure]
        key = (self.card.name, id(self.card), tuple(sorted(structure.items(), key=lambda kv: kv[0])))
        # the card validates the combination (e.g. PRM hard labels need p in {0, 1})
        current = self.card.resolve(self._current(structure))
        if refit_x and self.given_x_range is None:  # a case or switch may move the declared range (PPO's dual clip c)
            self.x_range = _spec(self.card, current, symbolic=False).x_range
            self.xs = np.linspace(*self.x_range, 401)
        if key not in _LOWERED:
            options = {p.name: current[p.name] for p in self.sliding if p.optional}
            _LOWERED[key] = _Lowered(self.card, self.declared, structure, self.sliding, options)
        self.lowered = _LOWERED[key]
        for name, box in self.label_dropdowns.items():
            box.layout.display = None if name in structure else "none"
        for name, slider in self.sliders.items():
            if name in self.switches:  # an option is always offered; its slider moves only while it is on
                slider.disabled = name in structure
            else:  # a slider that changes nothing in this case is hidden (KTO's w_U on the desirable arm)
                slider.layout.display = None if name in self.lowered.used and name not in structure else "none"
        self._build_figure()
        self.redraw(text_now=True)

    def _build_figure(self):
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch, Rectangle

        low = self.lowered
        with matplotlib.rc_context(STYLE):
            self.figure = Figure(figsize=FIG_SIZE, dpi=FIG_DPI)
            self.canvas = FigureCanvasAgg(self.figure)
            self.ax_loss, self.ax_grad = self.figure.subplots(1, 2)
            self.figure.subplots_adjust(left=0.085, right=0.985, bottom=0.27, top=0.83, wspace=0.28)
            # animated artists are left out of the background and drawn over it on every move (blitting)
            self.zone_patches = []
            for k, _ in enumerate(low.zones):
                for ax in (self.ax_loss, self.ax_grad):
                    patch = Rectangle((0, 0), 0, 1, transform=ax.get_xaxis_transform(), color=SHADE, alpha=0.35, linewidth=0, animated=True)
                    ax.add_patch(patch)
                    self.zone_patches.append((k, patch))
            (self.loss_line,) = self.ax_loss.plot(self.xs, self.xs * 0, color=COLORS[0], animated=True, gid="loss")
            (self.grad_line,) = self.ax_grad.plot(self.xs, self.xs * 0, color=COLORS[1], animated=True, gid="grad")
            styles = ["--", ":", "-."]
            self.marker_lines = []
            for k, ((label, _), panel) in enumerate(zip(low.markers, low.marker_panels)):
                color = COLORS[2 + k % (len(COLORS) - 2)]
                for ax in ((self.ax_grad,) if panel == "grad" else (self.ax_loss, self.ax_grad)):
                    line = ax.axvline(0, color=color, linestyle=styles[k % 3], linewidth=1.2, animated=True, gid=f"guide-marker:{label}")
                    self.marker_lines.append((k, line))
            self.hline_artists = []
            for k, (label, panel, _) in enumerate(low.hlines):
                color = COLORS[2 + (len(low.markers) + k) % (len(COLORS) - 2)]
                ax = self.ax_loss if panel == "loss" else self.ax_grad
                line = ax.axhline(0, color=color, linestyle=":", linewidth=1.2, animated=True, gid=f"guide-limit:{label}")
                self.hline_artists.append((k, line))
            self.point_dots = []
            if self.declared.point:
                for ax, color in ((self.ax_loss, COLORS[0]), (self.ax_grad, COLORS[1])):
                    (dot,) = ax.plot([0], [0], "o", color=color, markersize=6, animated=True, gid="point")
                    self.point_dots.append(dot)
            self.ax_grad.axhline(0, color="0.6", linewidth=0.8, gid="guide-zero")
            for ax in (self.ax_loss, self.ax_grad):
                ax.set_xlim(*self.x_range)
                ax.set_xlabel(low.xlabel)
            self.ax_loss.set_title(r"loss $\ell$")
            self.ax_grad.set_title(rf"gradient $\partial\ell/\partial {sp.latex(low.x)}$")
            self.figure.suptitle(f"{self.card.title}: loss and gradient along the axis", fontsize=9.5)
            handles = [Line2D([], [], color=COLORS[0], label="loss"), Line2D([], [], color=COLORS[1], label="gradient")]
            handles += [Line2D([], [], color=COLORS[2 + k % (len(COLORS) - 2)], linestyle=styles[k % 3], label=label)
                        for k, (label, _) in enumerate(low.markers)]
            handles += [Line2D([], [], color=COLORS[2 + (len(low.markers) + k) % (len(COLORS) - 2)], linestyle=":", label=label)
                        for k, (label, _, _) in enumerate(low.hlines)]
            if low.zones:
                handles.append(Patch(color=SHADE, alpha=0.35, label=low.zones[0][0]))
            if self.declared.point:
                handles.append(Line2D([], [], marker="o", linestyle="none", color="0.3", label=f"the point {self.declared.point.name}"))
            self.legend = self.figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False,
                                             bbox_to_anchor=(0.5, 0.0))
        self._background = None

    # --- reacting ------------------------------------------------------------------------------
    @property
    def params(self) -> Dict[str, float]:
        """The current slider values: card parameters that are on, and the knobs."""
        values = {name: float(s.value) for name, s in self.sliders.items() if not s.disabled and s.layout.display != "none"}
        values.update({name: float(box.value) for name, box in self.label_dropdowns.items() if box.layout.display != "none"})
        return values

    def _args(self):
        # numpy scalars: a fact like log(p/(1-p)) at p = 1 is inf, not a ZeroDivisionError
        return [np.float64(self.sliders[n].value) for n in self.lowered.arg_sliders]

    def redraw(self, text_now: bool = False):
        """Re-evaluate the curves, markers and facts at the current slider values and re-render.

        ``text_now`` prints the LaTeX in this call even inside a running kernel (a build or a case change)."""
        args = self._args()
        with np.errstate(all="ignore"):
            self._redraw(args, text_now)

    def _redraw(self, args, text_now=False):
        low = self.lowered
        loss, grad = np.broadcast_to(low.loss(self.xs, *args), self.xs.shape), np.broadcast_to(low.grad(self.xs, *args), self.xs.shape)
        self.loss_line.set_ydata(loss)
        self.grad_line.set_ydata(grad)
        rescaled = False
        for ax, ys, floor in ((self.ax_loss, loss, 0.0), (self.ax_grad, grad, None)):
            rescaled |= _fit_ylim(ax, ys, fresh=self._background is None, floor=floor)
        for k, line in self.marker_lines:
            x = float(low.markers[k][1](*args))
            line.set_xdata([x, x])
            line.set_visible(bool(np.isfinite(x)))
        for k, line in self.hline_artists:
            _, panel, fn = low.hlines[k]
            y = float(fn(*args)) * (-1 if panel == "push" else 1)  # the explorer draws the gradient; a push panel's limit is minus it
            line.set_ydata([y, y])
            line.set_visible(bool(np.isfinite(y)))
        for k, patch in self.zone_patches:
            start, end = (float(v) for v in low.zones[k][1](*args))
            start, end = max(start, self.x_range[0]), min(end, self.x_range[1])  # a zone that runs on forever is shaded to the frame
            ok = np.isfinite(start) and np.isfinite(end) and end > start
            patch.set_visible(bool(ok))
            if ok:
                patch.set_x(start)
                patch.set_width(end - start)
        if self.point_dots:
            x0 = np.float64(self.sliders[self.declared.point.name].value)
            for dot, fn in zip(self.point_dots, (low.loss, low.grad)):
                dot.set_data([x0], [float(fn(np.array([x0]), *args)[0])])
        self.image.value = self._render(full=rescaled or self._background is None)
        self._show_text(args, text_now)

    def _show_text(self, args, text_now=False):
        """Facts and LaTeX at the current values. A value not printed before is printed by sympy
        (5-100 ms); inside a running kernel that print waits until the slider has rested for
        ``latex_delay`` seconds, and meanwhile the facts show their general form and the formula
        keeps the values it names, so what is shown is always true."""
        if self._latex_timer is not None:
            self._latex_timer.cancel()
            self._latex_timer = None
        loop = _running_loop() if self.latex_delay > 0 and not text_now else None
        if loop is None or self._latex_ready():
            self.facts_view.value = self._facts_html(args)
            self.latex_view.value = self._latex_html()
            return
        self.facts_view.value = self._facts_html(args, general=True)
        self._latex_timer = loop.call_later(self.latex_delay, self._print_latex)

    def _print_latex(self):
        self._latex_timer = None
        with np.errstate(all="ignore"):
            args = self._args()
            self.facts_view.value = self._facts_html(args)
            self.latex_view.value = self._latex_html()

    def _latex_items(self):
        """(cache key, expression, sliders it depends on) of every LaTeX text shown."""
        low, d = self.lowered, self.lowered.derivation
        params = self._shown_params() + low.held_names
        items = [("loss", low.shown_loss.xreplace(low.held_subs), params), ("gradient", self._gradient_expr(), params)]
        items += [("fact:" + f["name"], f["expr"], f["depends"]) for f in low.facts if f["kind"] == "latex"]
        return items

    def _shown_params(self) -> List[str]:
        """The parameters the formula is printed at: those that change something in this case."""
        return [p.name for p in self.sliding if p.name in self.lowered.used]

    def _latex_ready(self) -> bool:
        return all(self._latex_key(key, depends) in self._latex_cache for key, _, depends in self._latex_items())

    def _latex_key(self, key, depends):
        return (id(self.lowered), key, tuple(float(self.sliders[n].value) for n in depends))

    def _gradient_expr(self):
        low, d = self.lowered, self.lowered.derivation
        if len(low.gradient_variables) > 1:  # the whole gradient vector, typeset as a column
            return sp.Matrix([low.shown_gradient[v] for v in low.gradient_variables]).xreplace(low.held_subs)
        return low.shown_gradient[low.gradient_variables[0]].xreplace(low.held_subs)

    def _render(self, full: bool) -> bytes:
        """PNG of the figure: a full draw when the axes changed, else the cached background plus the curves."""
        from PIL import Image

        if full:
            self.canvas.draw()  # axes, ticks, labels: everything not animated
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        else:
            self.canvas.restore_region(self._background)
        animated = [p for _, p in self.zone_patches] + [self.loss_line, self.grad_line] + [l for _, l in self.marker_lines]
        animated += [l for _, l in self.hline_artists] + self.point_dots
        for artist in animated:
            if artist.get_visible():
                artist.axes.draw_artist(artist)
        width, height = self.canvas.get_width_height()
        buffer = io.BytesIO()
        Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def fact_values(self) -> Dict[str, object]:
        """The facts at the current slider values: numbers, and intervals as (start, end)."""
        args = self._args()
        out = {}
        with np.errstate(all="ignore"):
            for f in self.lowered.facts:
                if f["kind"] == "number":
                    out[f["name"]] = float(f["fn"](*args))
                elif f["kind"] == "interval":
                    out[f["name"]] = tuple(float(v) for v in f["fn"](*args))
        return out

    def _slider_values(self, names) -> Dict[sp.Symbol, float]:
        return {self.lowered.symbol_of[n]: float(self.sliders[n].value) for n in names}

    def _latex_of(self, key: str, expr, depends: Sequence[str]) -> str:
        """LaTeX of ``expr`` at the current values of the sliders it depends on, cached per value."""
        cache_key = self._latex_key(key, depends)
        text = self._latex_cache.get(cache_key)
        if text is None:
            if len(self._latex_cache) > 4096:
                self._latex_cache.clear()
            text = latex_at(expr, self._slider_values(depends), self.lowered.latex_names)
            self._latex_cache[cache_key] = text
        return text

    def _facts_html(self, args, general: bool = False) -> str:
        rows = []
        for f in self.lowered.facts:
            if f["kind"] == "number":
                shown = _num(float(f["fn"](*args)))  # evaluated under the caller's errstate
            elif f["kind"] == "interval":
                start, end = (float(v) for v in f["fn"](*args))
                left, right = f["open"]
                shown = "empty" if not end > start else f"{'(' if left else '['}{_num(start)}, {_num(end)}{')' if right else ']'}"
            else:
                # general: the form with the parameters as symbols (true at every value) while a new value waits
                shown = f"${self._latex_of('fact:' + f['name'], f['expr'], [] if general else f['depends'])}$"
                # a long formula scrolls inside its own cell instead of widening the table past the output
                shown = f"<div style='max-width:330px;overflow-x:auto;white-space:nowrap'>{shown}</div>"
            # a long fact name may wrap anywhere (overflow-wrap: anywhere counts in the table's minimum width), never
            # widening the table past the output; 150 px keeps a name of up to ~18 characters on one line
            rows.append(f"<tr><td style='padding-right:8px;overflow-wrap:anywhere;min-width:150px'><code>{html.escape(f['name'])}</code></td>"
                        f"<td style='text-align:right;padding-right:8px;white-space:nowrap'>{shown}</td><td>{html.escape(f['doc'])}</td></tr>")
        if not rows:
            return "<i>no facts for this entry</i>"
        return "<table class='lossviz-facts-table' style='font-size:90%;width:100%'>" + "".join(rows) + "</table>"

    def _latex_html(self) -> str:
        low, d = self.lowered, self.lowered.derivation
        params = self._shown_params() + low.held_names
        loss = self._latex_of("loss", low.shown_loss.xreplace(low.held_subs), params)
        if len(low.gradient_variables) > 1:
            symbol = r"\nabla_{z}\mathcal{L}"
        else:
            v = low.gradient_variables[0]
            symbol = rf"\frac{{\partial\mathcal{{L}}}}{{\partial {self.card.variable_latex.get(v, v)}}}"
        grad = self._latex_of("gradient", self._gradient_expr(), params)
        at = ", ".join([f"{html.escape(n)} = {self.sliders[n].value:.4g}" for n in params] +
                       [f"{html.escape(n)} = {box.value:g} (hard label)" for n, box in self.label_dropdowns.items()
                        if box.layout.display != "none"])
        names = self.card.variable_latex
        formula_symbols = {s.name for s in d.loss.free_symbols}
        held = [f"${names.get(v, v)}$" + ("" if sp.latex(sp.Symbol(h.name)).replace("{", "").replace("}", "") == names.get(v, v).replace("{", "").replace("}", "") else f" (slider {html.escape(h.name)})")
                for h in self.declared.holds for v in h.held if v in d.symbols]
        if held:
            at += f"; slider values put in for {', '.join(held)}"
        fixed = [f"${names.get(v, v)}$ = {value:g}" for v, value in low.axis_fixed.items() if d.symbols[v].name in formula_symbols]
        if fixed:
            at += ("; " if at else "") + f"the figure's axis also holds {', '.join(fixed)}"
        # the width of the figure, in pixels: inside the flex column a percentage would follow the widest formula
        box = f"max-width:{self._text_width}px"
        head = f"<div style='{box}'>loss and gradient (sympy) at {at}:</div>" if at else f"<div style='{box}'>loss and gradient (sympy):</div>"
        # left-aligned, one formula per line; a long Piecewise scrolls sideways instead of being cut
        line = f"<div style='overflow-x:auto;white-space:nowrap;padding:3px 0;{box}'>$\\displaystyle {{}}$</div>"
        note = f"<div style='font-size:90%;{box}'>{html.escape(low.guard_note)}</div>" if low.guard_note else ""
        return head + line.format(rf"\mathcal{{L}} = {loss}") + line.format(rf"{symbol} = {grad}") + note

    def _changed(self, change):
        if hasattr(self, "lowered"):  # values placed while the explorer is being built wait for the first draw
            self.redraw()

    def _structure_changed(self, change):
        if not hasattr(self, "lowered"):
            return
        self.cases = {name: box.value for name, box in self.dropdowns.items()}
        for name, switch in self.switches.items():
            self.sliders[name].disabled = not switch.value
        self._rebuild(refit_x=True)

    def _place(self, name: str, value: float):
        slider = self.sliders[name]
        if value > slider.max:
            slider.max = value
        if value < slider.min:
            slider.min = value
        slider.value = value

    def controls(self) -> List[str]:
        return [*self.dropdowns, *self.sliders, *self.label_dropdowns]

    def _checked(self, params: Mapping[str, object]) -> Dict[str, object]:
        """Validate every value before any is applied: a refused call changes nothing."""
        checked = {}
        for name, value in params.items():
            if name in self.knobs:
                checked[name] = _check_knob(self.card.name, self.knobs[name], value)
                continue
            if name not in self.sliders and name not in self.dropdowns:
                raise CardError(f"{self.card.name} explorer has no control {name!r}; controls: {', '.join(self.controls())}")
            prm = self.card.param(name)
            try:
                checked[name] = prm.check(value)
            except CardError as error:
                raise CardError(str(error).replace(prm.flag, name)) from None
        return checked

    def set(self, **params):
        """Move sliders and dropdowns programmatically; a value outside the valid range is refused.

        ``None`` switches an optional parameter off (e.g. ``dual_clip=None``); a number switches it on.
        """
        for name, value in self._checked(params).items():
            if name in self.dropdowns:
                self.dropdowns[name].value = value
            elif name in self.label_dropdowns and self.label_dropdowns[name].layout.display != "none":
                box = self.label_dropdowns[name]
                if float(value) not in [v for _, v in box.options]:
                    raise CardError(f"{name} must be one of {', '.join(f'{v:g}' for _, v in box.options)} with these labels; got {value!r}")
                box.value = float(value)
            elif name in self.switches:
                if value is None:
                    self.switches[name].value = False
                else:
                    self._place(name, float(value))
                    self.switches[name].value = True
            else:
                self._place(name, float(value))
        return self

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _x_range(given) -> Tuple[float, float]:
    try:
        low, high = (float(v) for v in given)
    except (TypeError, ValueError):
        raise CardError(f"x_range must be two numbers (low, high); got {given!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise CardError(f"x_range must be finite with low < high; got {given!r}")
    return low, high


def _check_knob(entry: str, knob, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CardError(f"{knob.name} must be a number in [{knob.low:g}, {knob.high:g}]; got {value!r}") from None
    if not (knob.low <= number <= knob.high):
        raise CardError(f"{knob.name} must be in [{knob.low:g}, {knob.high:g}] in the {entry} explorer; got {number:g}")
    return number


def _running_loop():
    """The event loop of the running kernel, or None (plain Python, tests): then text is printed at once."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _fit_ylim(ax, ys, fresh: bool = False, floor: Optional[float] = None) -> bool:
    """Refit the y-limits when the curve leaves them or fills less than 40 % of them; True if changed.

    The new limits are rounded out to tick steps, so a small move does not redraw the axes
    (a full draw costs about 100 ms, a move that only blits the curves about 15 ms).
    A curve that stays at or above ``floor`` (a loss that is never negative) gets only a 4 %
    margin below it, not a range of values it never takes.
    """
    from matplotlib.ticker import MaxNLocator

    finite = ys[np.isfinite(ys)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo or max(abs(hi), 1.0)
    current_lo, current_hi = ax.get_ylim()
    edge = 0.02 * (current_hi - current_lo)  # a curve on the frame is hard to read: keep it inside
    inside = current_lo + edge <= lo and hi <= current_hi - edge
    if inside and (hi - lo) >= 0.4 * (current_hi - current_lo):
        return False
    # a curve that left the limits is likely still moving that way (a drag): room for it to go on without a redraw
    pad = 0.06 if fresh or inside else 0.25
    lo, hi = lo - pad * span, hi + pad * span
    ticks = MaxNLocator(nbins=5).tick_values(lo, hi)
    half = (ticks[1] - ticks[0]) / 2 if len(ticks) > 1 else span
    low, high = math.floor(lo / half) * half, math.ceil(hi / half) * half
    if floor is not None and finite.size and float(finite.min()) >= floor:
        low = max(low, floor - 0.04 * (high - floor))
    ax.set_ylim(low, high)
    return True


def _num(x: float) -> str:
    if math.isnan(x):
        return "undefined"
    return ("-∞" if x < 0 else "∞") if math.isinf(x) else f"{x:.4g}"


class Explorers:
    """Several explorers stacked; ``.set(beta=0.3)`` moves that slider in every explorer that has it."""

    def __init__(self, explorers: Sequence[Explorer]):
        import ipywidgets as w

        self.explorers = list(explorers)
        self.widget = w.VBox([e.widget for e in self.explorers], layout=w.Layout(width="100%", min_width="0", align_items="flex-start"))
        self.widget.add_class("lossviz-explorers")

    def __getitem__(self, name: str) -> Explorer:
        for e in self.explorers:
            if e.card.name == name:
                return e
        raise KeyError(f"no explorer {name!r} here; explorers: {', '.join(e.card.name for e in self.explorers)}")

    def __iter__(self):
        return iter(self.explorers)

    def __len__(self):
        return len(self.explorers)

    @property
    def params(self) -> Dict[str, Dict[str, float]]:
        return {e.card.name: e.params for e in self.explorers}

    def set(self, **params):
        """Set each value in every explorer that has the control; a name none of them has is refused."""
        for name in params:
            if not any(name in e.controls() or name in e.knobs for e in self.explorers):
                raise CardError(f"no explorer among {', '.join(e.card.name for e in self.explorers)} has the control {name!r}")
        plans = []
        for e in self.explorers:  # validate everywhere first: a refused call changes nothing
            own = {k: v for k, v in params.items() if k in e.controls() or k in e.knobs}
            plans.append((e, e._checked(own)))
        for e, own in plans:
            e.set(**own)
        return self

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explore(names: Union[str, Sequence[str]], **params):
    """An explorer for one entry, or several stacked: ``explore(["dpo", "cdpo", "ipo"])``.

    Keyword values go to every explorer that has that parameter or slider; a name that none of
    them has is refused.
    """
    if isinstance(names, str):
        return Explorer(names, **params)
    names = list(names)
    if not names:
        raise CardError("explore needs at least one entry name")
    cards = [get(n) for n in names]
    own_names = [{p.name for p in c.params} | set(Declared(c).knobs) for c in cards]
    for key in params:
        if not any(key in own for own in own_names):
            raise CardError(f"no explorer among {', '.join(c.name for c in cards)} has the parameter {key!r}")
    return Explorers([Explorer(c, **{k: v for k, v in params.items() if k in own}) for c, own in zip(cards, own_names)])


__all__ = ["Explorer", "Explorers", "explore", "slider_range", "latex_at"]
