"""Interactive explorers for JupyterLab: ``lossviz.explore("dpo")`` is all a learner types.

An explorer is built from a card and a *view* (below): the entry's natural axis, the values
the other variables hold along it (some of them as sliders, e.g. the PPO value loss's v_old
and R), and what to mark on the axis. It shows one slider per real parameter, a switch for
each optional one (PPO's dual clip, clip-higher), a dropdown per case, and a figure of the
loss and its gradient along the axis with the lesson points sympy found. Below the figure
the closed-form facts are shown at the current values, and the loss and gradient are shown
as sympy's LaTeX of the derivation at the current parameter values.

Speed: everything symbolic happens when the explorer is built (or a case or switch changes).
The cut of the loss, its derivative, the facts and the markers are lowered to numpy as
functions of the axis and the sliders. A slider move evaluates numpy, blits the curves over a
cached background and encodes a PNG; the LaTeX at the new values is printed by sympy and
cached per value (``benchmarks/bench_widgets.py`` measures a move).
"""

from __future__ import annotations

import html
import io
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import sympy as sp

from .cards._common import solve_one
from .cards.base import Card, CardError, Derivation, Param
from .plots.core import COLORS, SHADE, STYLE
from .registry import get
from .symbolic import elementary, lower

X = sp.Symbol("x", real=True)  # the position on the explorer's axis
FIG_SIZE, FIG_DPI = (7.0, 3.1), 100  # the PNG is 700 x 310 px and is shown at exactly that size


@dataclass(frozen=True)
class Knob:
    """A value the learner moves that is not a card parameter: a variable held fixed along the axis."""

    name: str
    default: float
    low: float
    high: float
    doc: str
    step: float = 0.05

    @property
    def symbol(self) -> sp.Symbol:
        return _k(self.name)


@dataclass(frozen=True)
class Marker:
    """A vertical line on the axis: a card fact that is a position, or a position from the card's own bounds."""

    label: str
    fact: Optional[str] = None
    position: Optional[Callable] = None  # (card, sympy params) -> expression in parameter and knob symbols, or None


@dataclass(frozen=True)
class View:
    """What an explorer shows for one entry: the axis, the cut through the other variables, the controls."""

    axis: str  # the axis as mathtext, e.g. r"$h$ (log-ratio margin)"
    symbol: str  # the axis variable in mathtext, for the gradient's title, e.g. "h"
    x_range: Tuple[float, float]
    cut: Mapping[str, object]  # card variable -> expression in X and knob symbols
    knobs: Tuple[Knob, ...] = ()
    markers: Tuple[Marker, ...] = ()
    zones: Tuple[Tuple[str, str], ...] = ()  # (fact name, legend text): interval facts shaded on the axis
    point: Optional[str] = None  # a knob whose value is marked as a point on both curves
    windows: Mapping[str, Tuple[float, float, float]] = field(default_factory=dict)  # slider (min, max, step) per parameter
    switched_on: Mapping[str, float] = field(default_factory=dict)  # the value an optional parameter takes when switched on
    label_choices: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)  # case value -> parameter -> {text: value}
    fact_symbols: Mapping[str, str] = field(default_factory=dict)  # a symbol named in a fact -> the knob it stands for
    extra_facts: Optional[Callable] = None  # (derivation, cut loss) -> [(name, doc, expression in parameters/knobs)]


def _k(name):
    """A knob's sympy symbol: its own name space, so it never binds a card symbol of the same name (PPO's A)."""
    return sp.Symbol(f"knob_{name}", real=True)


PAIR_CUT = {"policy_chosen_logps": X, "policy_rejected_logps": 0, "reference_chosen_logps": 0, "reference_rejected_logps": 0}
REWARD_CUT = {"chosen_reward": X, "reject_reward": 0}


def _kd_facts(d, cut):
    """The student's minimum along z_0 (sympy solves ∂ℓ/∂z_0 = 0) and the teacher's probability of token 0."""
    t = [_k(f"t_{k}") for k in range(3)]
    minimum = solve_one(elementary(sp.diff(cut, X)), X)
    teacher_p0 = sp.exp(t[0]) / (sp.exp(t[0]) + sp.exp(t[1]) + sp.exp(t[2]))
    facts = [("teacher_p0", "the teacher's probability of token 0: softmax(t)₀", teacher_p0)]
    if minimum is not None:
        facts.append(("student_minimum", "the z₀ where the loss is minimal along the axis (sympy solves ∂ℓ/∂z₀ = 0): "
                      "where the student's p₀ equals the teacher's", sp.simplify(minimum)))
    return facts


def _basics_facts(d, cut):
    x0 = _k("x0")
    grad = sp.diff(cut, X).subs(X, x0)
    return [("loss_at_x0", "-log σ(x₀)", cut.subs(X, x0)),
            ("gradient_at_x0", "∂ℓ/∂x at x₀ (the card's gradient σ(x₀) - 1)", grad),
            ("push_at_x0", "push = -∂ℓ/∂x at x₀: the step gradient descent takes, per unit learning rate", -grad)]


VIEWS: Dict[str, View] = {
    "basics": View(r"$x$", "x", (-8.0, 8.0), {"x": X}, knobs=(Knob("x0", -2.0, -8.0, 8.0, "the point x₀ marked on both curves"),),
                   point="x0", extra_facts=_basics_facts),
    "gptlm": View(r"$z_0$ (logit of token 0)", "z_0", (-6.0, 6.0), {"logits_0": X, "logits_1": _k("z_1"), "logits_2": _k("z_2")},
                  knobs=(Knob("z_1", 0.0, -5.0, 5.0, "logit of token 1"), Knob("z_2", 0.0, -5.0, 5.0, "logit of token 2"))),
    "kd": View(r"$z_0$ (student logit of token 0)", "z_0", (-6.0, 6.0),
               {"logits_0": X, "logits_1": 0, "logits_2": 0, "teacher_logits_0": _k("t_0"), "teacher_logits_1": _k("t_1"), "teacher_logits_2": _k("t_2")},
               knobs=(Knob("t_0", 1.0, -5.0, 5.0, "teacher logit of token 0"), Knob("t_1", 0.0, -5.0, 5.0, "teacher logit of token 1"),
                      Knob("t_2", -1.0, -5.0, 5.0, "teacher logit of token 2")),
               markers=(Marker("student minimum", fact="student_minimum"),), extra_facts=_kd_facts),
    "dpo": View(r"$h$ (log-ratio margin)", "h", (-20.0, 20.0), PAIR_CUT),
    "cdpo": View(r"$h$ (log-ratio margin)", "h", (-20.0, 20.0), PAIR_CUT, markers=(Marker("minimum h*", fact="minimum"),)),
    "ipo": View(r"$h$ (log-ratio margin)", "h", (-20.0, 20.0), PAIR_CUT, markers=(Marker("target 1/(2β)", fact="target"),)),
    "kto": View(r"$\Delta = \log\pi - \log\pi_{ref}$", r"\Delta", (-20.0, 20.0),
                {"policy_chosen_logps": X, "reference_chosen_logps": 0, "policy_rejected_logps": X, "reference_rejected_logps": 0,
                 "policy_KL_logps": _k("z"), "reference_KL_logps": 0},
                knobs=(Knob("z", 0.0, 0.0, 15.0, "the reference point z (the KL estimate, clamped at 0, detached)"),),
                markers=(Marker("gradient peak (Δ = z)", fact="gradient_peak"),), fact_symbols={"z_ref": "z"}),
    "vanilla-kto": View(r"$\Delta_c$ (chosen log-ratio)", r"\Delta_c", (-20.0, 20.0),
                        {"policy_chosen_logps": X, "reference_chosen_logps": 0, "policy_rejected_logps": _k("delta_r"), "reference_rejected_logps": 0},
                        knobs=(Knob("delta_r", 0.0, -10.0, 10.0, "the rejected example's log-ratio Δ_r (its reference point for the chosen side is max(Δ_r, 0))"),)),
    "ppo-policy": View(r"$\log r = \log\pi - \log\pi_{old}$", r"\log r", (-1.0, 1.75), {"log_probs": X, "old_log_probs": 0, "advantages": _k("A")},
                       knobs=(Knob("A", 1.0, -2.0, 2.0, "the advantage A (its sign picks the side that is clipped)"),),
                       markers=(Marker("lower clip edge log(1 - ε_low)", position=lambda c, p: sp.log(1 - c.bounds(p)[0])),
                                Marker("upper clip edge log(1 + ε_high)", position=lambda c, p: sp.log(1 + c.bounds(p)[1])),
                                Marker("log c (dual clip)", position=lambda c, p: None if p["dual_clip"] is None else sp.log(p["dual_clip"]))),
                       windows={"clip_eps": (0.01, 0.9, 0.01), "clip_eps_low": (0.01, 0.9, 0.01), "clip_eps_high": (0.01, 2.0, 0.01),
                                "dual_clip": (1.05, 5.0, 0.05)},
                       switched_on={"clip_eps_low": 0.2, "clip_eps_high": 0.28, "dual_clip": 3.0}),
    "ppo-value": View(r"$v$ (new value)", "v", (-3.0, 3.0), {"values": X, "old_values": _k("v_old"), "returns": _k("R")},
                      knobs=(Knob("v_old", 0.0, -2.0, 2.0, "the old value v_old (the clip is centred on it)"),
                             Knob("R", 1.0, -2.0, 2.0, "the return R (the regression target)")),
                      markers=(Marker("lower clip edge", position=lambda c, p: None if c.bounds(p)[0] is None else _k("v_old") - c.bounds(p)[0]),
                               Marker("upper clip edge", position=lambda c, p: None if c.bounds(p)[1] is None else _k("v_old") + c.bounds(p)[1]),
                               Marker("return R", position=lambda c, p: _k("R"))),
                      zones=(("flat_zone_above", "zero gradient (clip binds)"), ("flat_zone_below", "zero gradient (clip binds)")),
                      windows={"clip_eps": (0.05, 2.0, 0.05), "clip_eps_low": (0.05, 2.0, 0.05), "clip_eps_high": (0.05, 2.0, 0.05)},
                      switched_on={"clip_eps": 0.2, "clip_eps_low": 0.2, "clip_eps_high": 0.5}),
    "pairwise": View(r"$\Delta = r_c - r_r$ (reward gap)", r"\Delta", (-8.0, 8.0), REWARD_CUT, markers=(Marker("fade point", fact="fade_point"),)),
    "logexp": View(r"$\Delta = r_c - r_r$ (reward gap)", r"\Delta", (-8.0, 8.0), REWARD_CUT, markers=(Marker("fade point", fact="fade_point"),)),
    "prm": View(r"$d = z_+ - z_-$", "d", (-8.0, 8.0), {"logits_0": X, "logits_1": 0}, markers=(Marker("optimum d*", fact="optimum"),),
                label_choices={"hard": {"p": {"+ (p = 1)": 1.0, "− (p = 0)": 0.0}}}),
}


def view_of(card: Card) -> View:
    try:
        return VIEWS[card.name]
    except KeyError:
        raise CardError(f"no explorer view for {card.name!r}; explorers: {', '.join(VIEWS)}") from None


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


class _Lowered:
    """Everything numeric about one structure (cases, switched-on options): built once, reused."""

    def __init__(self, card: Card, view: View, structure: Mapping[str, object], sliding: Sequence[Param], knobs: Sequence[Knob]):
        self.card, self.view = card, view
        values = dict(structure)
        for prm in sliding:
            values[prm.name] = prm.symbol
        self.derivation = d = Derivation(card, values)
        self.arg_sliders = [p.name for p in sliding] + [k.name for k in knobs]  # the slider behind each argument
        arg_symbols = [p.symbol for p in sliding] + [k.symbol for k in knobs]
        self.arg_names = [s.name for s in arg_symbols]
        self.arg_symbols = set(arg_symbols)
        self.symbol_of = dict(zip(self.arg_sliders, arg_symbols))
        self.slider_of = {s: n for n, s in self.symbol_of.items()}
        cut_map = {d.symbols[v]: sp.sympify(e) for v, e in view.cut.items() if v in d.symbols}
        self.cut = d.loss.subs(cut_map)
        names = ["x"] + self.arg_names
        self.loss = lower(self.cut, names, "numpy")
        self.grad = lower(sp.diff(self.cut, X), names, "numpy")
        # a fact's variables take their values on the cut; a named symbol (KTO's z_ref) is a knob
        fixed = {d.symbols[v]: sp.sympify(e) for v, e in view.cut.items() if v in d.symbols and X not in sp.sympify(e).free_symbols}
        renamed = {s: _k(view.fact_symbols[s.name]) for s in _all_symbols(d) if s.name in view.fact_symbols}
        self.latex_names = {**d._latex_names(), **{k.symbol: k.name for k in knobs}}
        self.facts: List[dict] = []
        for fact in d.facts:
            self._add_fact(fact.name, fact.doc, fact.value, {**fixed, **renamed})
        if view.extra_facts is not None:
            for name, doc, value in view.extra_facts(d, self.cut):
                self._add_fact(name, doc, value, {})
        p = d.p
        self.markers = []
        self._marker_symbols = set()
        for marker in view.markers:
            if marker.fact is not None:
                found = [f for f in self.facts if f["name"] == marker.fact and f["kind"] == "number"]
                if found:
                    self.markers.append((marker.label, found[0]["fn"]))
            else:
                position = marker.position(card, p)
                if position is not None:
                    self._marker_symbols |= sp.sympify(position).free_symbols
                    self.markers.append((marker.label, self._lower(sp.sympify(position))))
        used = set(self.cut.free_symbols) | set(d.loss.free_symbols) | set(self._marker_symbols)
        for f in self.facts:
            used |= f["symbols"]
        self.used = {self.slider_of[s] for s in used if s in self.slider_of}  # the sliders that change something
        self.zones = [(label, f["fn"]) for name, label in view.zones for f in self.facts if f["name"] == name and f["kind"] == "interval"]
        self.gradient_variables = [v for v in d.variables if v.startswith("logits_")] if card.family == "sft" else [d.variables[0]]

    def _lower(self, expr):
        return lower(expr, self.arg_names, "numpy")

    def _add_fact(self, name, doc, value, subs):
        entry = {"name": name, "doc": doc}
        if isinstance(value, sp.Basic) and subs:
            value = value.xreplace(subs)
        entry["symbols"] = set(getattr(value, "free_symbols", ()))
        if isinstance(value, sp.Expr) and not getattr(value, "is_Matrix", False) and value.free_symbols <= self.arg_symbols:
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


# built structures, shared by every explorer of the same card: a second explorer (or a re-run cell) costs no sympy
_LOWERED: Dict[tuple, _Lowered] = {}


class Explorer:
    """The widget for one entry. ``.widget`` is what a notebook displays; ``.set(beta=0.3)`` moves sliders."""

    def __init__(self, card: Union[str, Card], x_range=None, **params):
        import ipywidgets as w

        self.card = get(card) if isinstance(card, str) else card
        self.view = view_of(self.card)
        self.x_range = _x_range(x_range) if x_range is not None else self.view.x_range
        self.xs = np.linspace(*self.x_range, 401)
        self.knobs = {k.name: k for k in self.view.knobs}
        card_params = {k: v for k, v in params.items() if k not in self.knobs}
        for name, value in params.items():
            if name in self.knobs:
                _check_knob(self.card.name, self.knobs[name], value)
        # a fixed-label case (PRM hard) gets its label dropdown; the card checks the combination
        resolved = self.card.resolve(card_params)
        self.cases = {p.name: resolved[p.name] for p in self.card.params if p.is_case}

        self.sliders: Dict[str, object] = {}
        self.switches: Dict[str, object] = {}
        self.dropdowns: Dict[str, object] = {}
        self.label_dropdowns: Dict[str, object] = {}
        rows = []
        # an optional parameter the view does not offer (PPO's overflow clamp) keeps the value given or its default
        self.fixed = {p.name: resolved[p.name] for p in self.card.params if p.optional and p.name not in self.view.switched_on}
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
            start = float(default) if on else float(self.view.switched_on.get(prm.name, prm.low if prm.low is not None else 0.0))
            lo, hi, step = self.view.windows.get(prm.name) or slider_range(prm, start)
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
                rows.append(w.HBox([switch, slider], layout=w.Layout(width="360px")))
            else:
                rows.append(slider)
        for case, per_param in self.view.label_choices.items():
            for name, choices in per_param.items():
                box = w.Dropdown(options=list(choices.items()), description=f"{name} (label)", style={"description_width": "initial"},
                                 layout=w.Layout(width="300px"))
                value = resolved.get(name)
                if value in choices.values():
                    box.value = float(value)
                box.observe(self._structure_changed, names="value")
                self.label_dropdowns[name] = box
                rows.append(box)
        for knob in self.view.knobs:
            slider = w.FloatSlider(value=float(params.get(knob.name, knob.default)), min=knob.low, max=knob.high, step=knob.step,
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
        for case_value in self.cases.values():  # a case that fixes a parameter to a label (PRM hard: p is 1 or 0)
            for name in self.view.label_choices.get(case_value, {}):
                structure[name] = self.label_dropdowns[name].value
        return structure

    def _rebuild(self):
        structure = self._structure()
        self.sliding = [p for p in self.card.params if not p.is_case and p.name not in structure]
        key = (self.card.name, id(self.card), tuple(sorted(structure.items(), key=lambda kv: kv[0])))
        # the card validates the combination (e.g. PRM hard labels need p in {0, 1})
        given = {k: v for k, v in structure.items() if v is not None}
        self.card.resolve({**given, **{p.name: self.sliders[p.name].value for p in self.sliding}})
        if key not in _LOWERED:
            _LOWERED[key] = _Lowered(self.card, self.view, structure, self.sliding, self.view.knobs)
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
            for k, (label, _) in enumerate(low.markers):
                color = COLORS[2 + k % (len(COLORS) - 2)]
                for ax in (self.ax_loss, self.ax_grad):
                    line = ax.axvline(0, color=color, linestyle=styles[k % 3], linewidth=1.2, animated=True, gid=f"guide-marker:{label}")
                    self.marker_lines.append((k, line))
            self.point_dots = []
            if self.view.point:
                for ax, color in ((self.ax_loss, COLORS[0]), (self.ax_grad, COLORS[1])):
                    (dot,) = ax.plot([0], [0], "o", color=color, markersize=6, animated=True, gid="point")
                    self.point_dots.append(dot)
            self.ax_grad.axhline(0, color="0.6", linewidth=0.8, gid="guide-zero")
            for ax in (self.ax_loss, self.ax_grad):
                ax.set_xlim(*self.x_range)
                ax.set_xlabel(self.view.axis)
            self.ax_loss.set_title(r"loss $\ell$")
            self.ax_grad.set_title(rf"gradient $\partial\ell/\partial {self.view.symbol}$")
            self.figure.suptitle(f"{self.card.title}: loss and gradient along the axis", fontsize=9.5)
            handles = [Line2D([], [], color=COLORS[0], label="loss"), Line2D([], [], color=COLORS[1], label="gradient")]
            handles += [Line2D([], [], color=COLORS[2 + k % (len(COLORS) - 2)], linestyle=styles[k % 3], label=label)
                        for k, (label, _) in enumerate(low.markers)]
            if low.zones:
                handles.append(Patch(color=SHADE, alpha=0.35, label=low.zones[0][0]))
            if self.view.point:
                handles.append(Line2D([], [], marker="o", linestyle="none", color="0.3", label=f"the point {self.view.point}"))
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
        for ax, ys in ((self.ax_loss, loss), (self.ax_grad, grad)):
            rescaled |= _fit_ylim(ax, ys, fresh=self._background is None)
        for k, line in self.marker_lines:
            x = float(low.markers[k][1](*args))
            line.set_xdata([x, x])
            line.set_visible(bool(np.isfinite(x)))
        for k, patch in self.zone_patches:
            start, end = (float(v) for v in low.zones[k][1](*args))
            ok = np.isfinite(start) and np.isfinite(end) and end > start
            patch.set_visible(bool(ok))
            if ok:
                patch.set_x(start)
                patch.set_width(end - start)
        if self.point_dots:
            x0 = np.float64(self.sliders[self.view.point].value)
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
        params = self._shown_params()
        items = [("loss", d.loss, params), ("gradient", self._gradient_expr(), params)]
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
            return sp.Matrix([d.gradient[v] for v in low.gradient_variables])
        return d.gradient[low.gradient_variables[0]]

    def _render(self, full: bool) -> bytes:
        """PNG of the figure: a full draw when the axes changed, else the cached background plus the curves."""
        from PIL import Image

        if full:
            self.canvas.draw()  # axes, ticks, labels: everything not animated
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        else:
            self.canvas.restore_region(self._background)
        animated = [p for _, p in self.zone_patches] + [self.loss_line, self.grad_line] + [l for _, l in self.marker_lines] + self.point_dots
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
            rows.append(f"<tr><td style='padding-right:8px'><code>{html.escape(f['name'])}</code></td>"
                        f"<td style='text-align:right;padding-right:8px;white-space:nowrap'>{shown}</td><td>{html.escape(f['doc'])}</td></tr>")
        if not rows:
            return "<i>no facts for this entry</i>"
        return "<table class='lossviz-facts-table' style='font-size:90%;width:100%'>" + "".join(rows) + "</table>"

    def _latex_html(self) -> str:
        low, d = self.lowered, self.lowered.derivation
        params = self._shown_params()
        loss = self._latex_of("loss", d.loss, params)
        if len(low.gradient_variables) > 1:
            symbol = r"\nabla_{z}\mathcal{L}"
        else:
            v = low.gradient_variables[0]
            symbol = rf"\frac{{\partial\mathcal{{L}}}}{{\partial {self.card.variable_latex.get(v, v)}}}"
        grad = self._latex_of("gradient", self._gradient_expr(), params)
        at = ", ".join([f"{html.escape(n)} = {self.sliders[n].value:.4g}" for n in params] +
                       [f"{html.escape(n)} = {box.value:g} (hard label)" for n, box in self.label_dropdowns.items()
                        if box.layout.display != "none"])
        head = f"<div>loss and gradient (sympy) at {at}:</div>" if at else "<div>loss and gradient (sympy):</div>"
        # left-aligned, one formula per line; a long Piecewise scrolls sideways instead of being cut
        line = "<div style='overflow-x:auto;white-space:nowrap;padding:3px 0'>$\\displaystyle {}$</div>"
        return head + line.format(rf"\mathcal{{L}} = {loss}") + line.format(rf"{symbol} = {grad}")

    def _changed(self, change):
        if hasattr(self, "lowered"):  # values placed while the explorer is being built wait for the first draw
            self.redraw()

    def _structure_changed(self, change):
        if not hasattr(self, "lowered"):
            return
        self.cases = {name: box.value for name, box in self.dropdowns.items()}
        for name, switch in self.switches.items():
            self.sliders[name].disabled = not switch.value
        self._rebuild()

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


def _check_knob(entry: str, knob: Knob, value) -> float:
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


def _fit_ylim(ax, ys, fresh: bool = False) -> bool:
    """Refit the y-limits when the curve leaves them or fills less than 40 % of them; True if changed.

    The new limits are rounded out to tick steps, so a small move does not redraw the axes
    (a full draw costs about 100 ms, a move that only blits the curves about 15 ms).
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
    ax.set_ylim(math.floor(lo / half) * half, math.ceil(hi / half) * half)
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
    own_names = [{p.name for p in c.params} | {k.name for k in view_of(c).knobs} for c in cards]
    for key in params:
        if not any(key in own for own in own_names):
            raise CardError(f"no explorer among {', '.join(c.name for c in cards)} has the parameter {key!r}")
    return Explorers([Explorer(c, **{k: v for k, v in params.items() if k in own}) for c, own in zip(cards, own_names)])


__all__ = ["Explorer", "Explorers", "explore", "slider_range", "latex_at", "VIEWS"]
