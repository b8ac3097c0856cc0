"""Interactive explorers for JupyterLab: ``lossviz.explore("dpo")`` is all a learner types.

An explorer is built from a card. It has one slider per real parameter (ranges from the card),
a dropdown per case parameter, and a figure of the loss and its gradient along the entry's
natural axis. The lesson points sympy found are marked and move with the sliders. Beside the
figure, the closed-form facts are shown as numbers, with the loss and gradient in LaTeX.

Speed: everything symbolic happens once, when the explorer is built. The cut of the loss,
its derivative and the facts are lowered to numpy as functions of the axis and the
parameters. A slider change only evaluates numpy, updates the line data, and re-renders one
small figure (``benchmarks/bench_widgets.py`` measures it).
"""

from __future__ import annotations

import io
import math
from typing import Dict, Sequence, Union

import numpy as np
import sympy as sp

from .cards.base import Card, CardError, Derivation, Param
from .plots.compare import AXIS_NAMES, CUTS, X
from .plots.core import COLORS, STYLE
from .registry import get
from .symbolic import lower

# facts that are positions on the entry's natural axis: drawn as moving markers
AXIS_FACTS = {"cdpo": ["minimum"], "ipo": ["target"], "prm": ["optimum"], "pairwise": ["fade_point"], "logexp": ["fade_point"]}
X_RANGES = {"ppo-policy": (-1.0, 1.0), "ppo-value": (-2.0, 2.0), "basics": (-8.0, 8.0), "prm": (-8.0, 8.0), "gptlm": (-6.0, 6.0), "kd": (-6.0, 6.0)}


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


class Explorer:
    """The widget for one entry. ``.widget`` is what a notebook displays; ``.set(beta=0.3)`` moves sliders."""

    def __init__(self, card: Union[str, Card], x_range=None, **params):
        import ipywidgets as w

        self.card = get(card) if isinstance(card, str) else card
        self.x_range = x_range or X_RANGES.get(self.card.name, (-20.0, 20.0) if self.card.family in ("dpo", "kto") else (-8.0, 8.0))
        self.xs = np.linspace(*self.x_range, 401)
        resolved = self.card.resolve(params)  # numeric defaults, validated
        self.resolved = resolved
        self.real = [p for p in self.card.params if not p.is_case and resolved[p.name] is not None]
        self.cases = {p.name: resolved[p.name] for p in self.card.params if p.is_case}
        self.sliders: Dict[str, object] = {}
        for prm in self.real:
            lo, hi, step = slider_range(prm, float(resolved[prm.name]))
            value = float(min(max(resolved[prm.name], lo), hi))
            slider = w.FloatSlider(value=value, min=lo, max=hi, step=step, description=prm.name, continuous_update=True,
                                   readout_format=".3g", style={"description_width": "initial"})
            slider.observe(self._changed, names="value")
            self.sliders[prm.name] = slider
        self.dropdowns = {}
        for prm in self.card.params:
            if prm.is_case:
                box = w.Dropdown(options=list(prm.choices), value=self.cases[prm.name], description=prm.name)
                box.observe(self._case_changed, names="value")
                self.dropdowns[prm.name] = box
        self.image = w.Image(format="png")
        self.facts_view = w.HTML()
        self.latex_view = w.HTMLMath()
        self._lower()
        self._build_figure()
        self.redraw()
        controls = w.VBox([*self.sliders.values(), *self.dropdowns.values()])
        self.widget = w.VBox([w.HTML(f"<b>{self.card.name}</b>: {self.card.lesson}"), controls,
                              w.HBox([self.image, self.facts_view]), self.latex_view])

    # --- symbolic work, once per case ------------------------------------------------------
    def _lower(self):
        values = {**self.resolved, **self.cases}  # optional parameters left off stay None
        for prm in self.real:
            values[prm.name] = prm.symbol
        self.derivation = Derivation(self.card, values)
        symbols = self.derivation.symbols
        cut = self.derivation.loss.subs({symbols[v]: sp.sympify(e) for v, e in CUTS[self.card.name].items() if v in symbols})
        names = ["x"] + [p.name for p in self.real]
        self._loss = lower(cut, names, "numpy")
        self._grad = lower(sp.diff(cut, X), names, "numpy")
        self._facts = []
        for fact in self.derivation.facts:
            value = fact.value
            scalar = isinstance(value, sp.Expr) and not getattr(value, "is_Matrix", False)
            if scalar and value.free_symbols <= {p.symbol for p in self.real}:
                self._facts.append((fact, lower(value, [p.name for p in self.real], "numpy")))
        self._markers = [(f, fn) for f, fn in self._facts if f.name in AXIS_FACTS.get(self.card.name, [])]
        self._latex_template_text = self._latex_template()

    def _build_figure(self):
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        with matplotlib.rc_context(STYLE):
            self.figure = Figure(figsize=(6.4, 2.5), dpi=80)
            self.canvas = FigureCanvasAgg(self.figure)
            self.ax_loss, self.ax_grad = self.figure.subplots(1, 2)
            self.figure.subplots_adjust(left=0.09, right=0.98, bottom=0.2, top=0.8, wspace=0.3)
            # animated artists are left out of the background and drawn over it on every move (blitting)
            (self.loss_line,) = self.ax_loss.plot(self.xs, self.xs * 0, color=COLORS[0], animated=True)
            (self.grad_line,) = self.ax_grad.plot(self.xs, self.xs * 0, color=COLORS[1], animated=True)
            self.marker_lines = [(ax.axvline(0, color="0.35", linestyle="--", linewidth=1, animated=True), ax)
                                 for _ in self._markers for ax in (self.ax_loss, self.ax_grad)]
            self.figure.suptitle(f"{self.card.title}: loss and gradient along {AXIS_NAMES[self.card.name]}", fontsize=8)
            self.ax_grad.axhline(0, color="0.6", linewidth=0.8)
            axis = AXIS_NAMES[self.card.name]
            self.ax_loss.set_xlabel(axis)
            self.ax_grad.set_xlabel(axis)
            self.ax_loss.set_title("loss", fontsize=8)
            self.ax_grad.set_title("gradient along the axis", fontsize=8)
        self._background = None

    # --- reacting -----------------------------------------------------------------------------
    @property
    def params(self) -> Dict[str, float]:
        return {name: float(s.value) for name, s in self.sliders.items()}

    def _args(self):
        # numpy scalars: a fact like log(p/(1-p)) at p = 1 is inf, not a ZeroDivisionError
        return [np.float64(self.params[p.name]) for p in self.real]

    def redraw(self):
        """Re-evaluate the curves, markers and facts at the current slider values and re-render."""
        args = self._args()
        with np.errstate(all="ignore"):
            self._redraw(args)

    def _redraw(self, args):
        loss, grad = self._loss(self.xs, *args), self._grad(self.xs, *args)
        self.loss_line.set_ydata(loss)
        self.grad_line.set_ydata(grad)
        rescaled = False
        for ax, ys in ((self.ax_loss, loss), (self.ax_grad, grad)):
            rescaled |= _fit_ylim(ax, ys)
        for k, (fact, fn) in enumerate(self._markers):
            x = float(fn(*args))
            for line, _ in self.marker_lines[2 * k: 2 * k + 2]:
                line.set_xdata([x, x])
                line.set_visible(bool(np.isfinite(x)))
        self.image.value = self._render(full=rescaled or self._background is None)
        self.facts_view.value = self._facts_html(args)
        self.latex_view.value = self._latex_html()

    def _render(self, full: bool) -> bytes:
        """PNG of the figure: a full draw when the axes changed, else the cached background plus the curves."""
        from PIL import Image

        if full:
            self.canvas.draw()  # axes, ticks, labels: everything not animated
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        else:
            self.canvas.restore_region(self._background)
        for artist in (self.loss_line, self.grad_line, *[line for line, _ in self.marker_lines]):
            artist.axes.draw_artist(artist)
        width, height = self.canvas.get_width_height()
        buffer = io.BytesIO()
        Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def fact_values(self) -> Dict[str, float]:
        """The closed-form facts at the current slider values (numbers)."""
        args = self._args()
        with np.errstate(all="ignore"):
            return {fact.name: float(fn(*args)) for fact, fn in self._facts}

    def _facts_html(self, args) -> str:
        rows = "".join(f"<tr><td><code>{f.name}</code></td><td style='text-align:right'>{_num(float(fn(*args)))}</td><td>{f.doc}</td></tr>"
                       for f, fn in self._facts)  # evaluated under the caller's errstate
        return f"<table style='font-size:90%'>{rows}</table>" if rows else "<i>no numeric facts for this entry</i>"

    def _latex_template(self) -> str:
        """The loss and first gradient in LaTeX, with a placeholder token per parameter (printed once)."""
        d = self.derivation
        names = {**d._latex_names(), **{p.symbol: f"PARAM{k}X" for k, p in enumerate(self.real)}}
        first = d.variables[0]
        loss = sp.latex(d.loss, symbol_names=names)
        grad = sp.latex(d.gradient[first], symbol_names=names)
        symbol = self.card.variable_latex.get(first, first)
        return rf"$$\mathcal{{L}} = {loss}$$ $$\frac{{\partial\mathcal{{L}}}}{{\partial {symbol}}} = {grad}$$"

    def _latex_html(self) -> str:
        # the current values go in by string replacement: no sympy work on a slider move
        text = self._latex_template_text
        for k, p in enumerate(self.real):
            text = text.replace(f"PARAM{k}X", f"{{{self.params[p.name]:.4g}}}")
        return text

    def _changed(self, change):
        self.redraw()

    def _case_changed(self, change):
        self.cases = {name: box.value for name, box in self.dropdowns.items()}
        self._lower()
        self._build_figure()
        self.redraw()

    def set(self, **params):
        """Move sliders programmatically; a value outside the parameter's valid range is refused."""
        for name, value in params.items():
            if name not in self.sliders:
                raise CardError(f"{self.card.name} explorer has no slider {name!r}; sliders: {', '.join(self.sliders)}")
            value = self.card.param(name).check(value)
            slider = self.sliders[name]
            if value > slider.max:
                slider.max = value
            if value < slider.min:
                slider.min = value
            slider.value = value

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _fit_ylim(ax, ys) -> bool:
    """Refit the y-limits when the curve leaves them or fills less than half of them; True if changed."""
    finite = ys[np.isfinite(ys)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    span = hi - lo or max(abs(hi), 1.0)
    current_lo, current_hi = ax.get_ylim()
    inside = current_lo <= lo and hi <= current_hi
    if inside and (hi - lo) >= 0.5 * (current_hi - current_lo):
        return False
    ax.set_ylim(lo - 0.08 * span, hi + 0.08 * span)
    return True


def _num(x: float) -> str:
    if math.isnan(x):
        return "undefined"
    return ("-∞" if x < 0 else "∞") if math.isinf(x) else f"{x:.4g}"


def explore(names: Union[str, Sequence[str]], **params):
    """An explorer for one entry, or several side by side: ``explore(["dpo", "cdpo", "ipo"])``."""
    import ipywidgets as w

    if isinstance(names, str):
        return Explorer(names, **params)
    explorers = [Explorer(n, **{k: v for k, v in params.items() if k in {p.name for p in get(n).params}}) for n in names]
    box = w.HBox([e.widget for e in explorers])
    box.explorers = explorers
    return box


__all__ = ["Explorer", "explore", "slider_range"]
