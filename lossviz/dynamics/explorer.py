"""The dynamics explorer: ``lossviz.explore_dynamics("likelihood-displacement")`` in JupyterLab.

One slider per scenario parameter (a change re-trains, in a fraction of a second to a few
seconds), and a step slider that scrubs through the recorded trajectory without re-training:
a cursor and a marker per curve move over a cached background (blitting), and the values
at that step are listed below the figure. ``benchmarks/bench_dynamics.py`` times a scrub.

The scenarios' figures have three or four panels across, sized for a page; a notebook's output
area is about 840 px wide at a 1280 px window, so the explorer re-flows the panels into rows of
two, each panel 3.5 x 2.9 in at 100 dpi (a 700 px wide image, as wide as the card explorers'),
lays the figure out again with :func:`lossviz.plots.placement.finish`, and shows it at exactly
its pixel size.
"""

from __future__ import annotations

import io
import math
from typing import Dict, List, Optional

import numpy as np

from .declare import get
from .engine import simulate

COLUMNS, PANEL_IN, DPI = 2, (3.5, 2.9), 100
MAX_WIDTH_PX = 820  # a notebook's output area is ~844 px wide at a 1280 px window with the file browser open
TITLE_IN = 0.45  # room for the two-line title above the panels


def reflow(fig, columns: int = COLUMNS, panel=PANEL_IN):
    """Re-arrange a finished figure's visible panels into rows of ``columns`` (a short last row centred) and lay it out again.

    Panels keep their reading order (top to bottom, left to right); hidden panels are removed;
    a legend outside the panels moves below them. Returns the figure.
    """
    from ..plots.placement import finish

    for ax in [ax for ax in fig.axes if not ax.get_visible()]:
        fig.delaxes(ax)
    panels = sorted(fig.axes, key=lambda ax: (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start))
    rows = math.ceil(len(panels) / columns)
    title = fig.get_suptitle().replace("\n", " ")
    fig.set_size_inches(panel[0] * columns, panel[1] * rows + TITLE_IN)
    # each panel spans two columns of a grid twice as fine, so a short last row can sit in the middle
    grid = fig.add_gridspec(rows, 2 * columns)
    for k, ax in enumerate(panels):
        row, col = divmod(k, columns)
        shift = columns - min(columns, len(panels) - row * columns)
        ax.set_subplotspec(grid[row, 2 * col + shift:2 * col + shift + 2])
        if col == 0 and ax.yaxis.get_tick_params().get("labelleft") is False:
            _show_shared_y(ax)  # it sat right of a panel sharing its y axis; now it starts a row
    outside = list(fig.legends)
    if outside:  # one legend below the panels, in as many columns as fit
        handles = [h for legend in outside for h in legend.legend_handles]
        labels = [t.get_text() for legend in outside for t in legend.get_texts()]
        for legend in outside:
            legend.remove()
        for ncol in range(min(len(labels), 4), 0, -1):  # from 4 columns down until it fits the width
            legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
            if ncol == 1 or legend.get_tightbbox(fig.canvas.get_renderer()).width <= 0.96 * fig.bbox.width:
                break
            legend.remove()
    return finish(fig, title)


def _show_shared_y(ax):
    ax.tick_params(labelleft=True)
    if not ax.get_ylabel():
        ax.set_ylabel(next((o.get_ylabel() for o in ax.get_shared_y_axes().get_siblings(ax) if o.get_ylabel()), ""))


class DynamicsExplorer:
    """``.widget`` is what a notebook displays; ``.set(ches=-0.5)`` and ``.show_step(40)`` move the sliders."""

    def __init__(self, scenario, losses=None, steps: Optional[int] = None, seed: int = 0, lr: Optional[float] = None, **params):
        import ipywidgets as w

        self.scenario = get(scenario)
        self.losses, self.steps, self.seed, self.lr = losses, steps, seed, lr
        resolved = self.scenario.resolve(params)
        self.sliders: Dict[str, object] = {}
        for prm in self.scenario.params:
            cls = w.IntSlider if prm.integer else w.FloatSlider
            step = 1 if prm.integer else (prm.slider_step or (prm.high - prm.low) / 100)
            slider = cls(value=resolved[prm.name], min=prm.low, max=prm.high, step=step, description=prm.name,
                         continuous_update=False, style={"description_width": "initial"})
            slider.observe(self._retrain, names="value")
            self.sliders[prm.name] = slider
        self.step_slider = w.IntSlider(value=0, min=0, max=1, description=self.scenario.step_name, continuous_update=True)
        self.step_slider.observe(self._scrub, names="value")
        self.image = w.Image(format="png")
        self.values_view = w.HTML()
        self._train()  # sizes the image
        header = w.HTML(f"<b>{self.scenario.name}</b>: {self.scenario.claim}<br><i>Source: {self.scenario.source}</i>")
        self.widget = w.VBox([header, w.VBox(list(self.sliders.values())), self.step_slider, self.image, self.values_view])

    @property
    def params(self) -> Dict[str, float]:
        return {name: s.value for name, s in self.sliders.items()}

    # --- training: on a parameter change ---------------------------------------------------
    def _train(self):
        self.sim = simulate(self.scenario, losses=self.losses, steps=self.steps, seed=self.seed, lr=self.lr,
                            progress=False, **self.params)
        last = len(self.sim.steps) - 1
        self.step_slider.max = last
        self._build()
        if self.step_slider.value > last:
            self.step_slider.value = last  # triggers a scrub
        else:
            self.show_step(self.step_slider.value)

    def _retrain(self, change):
        self._train()

    def _build(self):
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        from ..plots.core import STYLE

        with matplotlib.rc_context(STYLE):
            self.figure = reflow(self.sim.figure())
            self.figure.set_dpi(min(DPI, MAX_WIDTH_PX / self.figure.get_figwidth()))
            self.canvas = FigureCanvasAgg(self.figure)
            width, height = self.canvas.get_width_height()
            self._pin_image(width, height)
            self.cursors: List[object] = []
            self.markers: List[tuple] = []
            steps = np.asarray(self.sim.steps, dtype=float)
            for ax in self.figure.axes:
                traced = [(line, ys) for line in ax.get_lines() if str(line.get_gid()).startswith("run:")
                          for ys in [self._per_step(line, steps)] if ys is not None]
                if not traced:
                    continue
                # the cursor sweeps over everything, legends included: a guide for the layout check
                self.cursors.append(ax.axvline(0, color="0.2", linewidth=0.8, animated=True, gid="guide:step-cursor"))
                for line, ys in traced:
                    (dot,) = ax.plot([0], [0], "o", color=line.get_color(), markersize=4, animated=True, gid="guide:step-marker")
                    self.markers.append((dot, ys))
            self.canvas.draw()  # everything not animated, once per training
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)

    def _pin_image(self, width: int, height: int):
        """Show the PNG at exactly its pixel size: the page neither squeezes nor stretches it."""
        import ipywidgets as w

        self.image.width, self.image.height = width, height
        self.image.layout = w.Layout(width=f"{width}px", height=f"{height}px", min_width=f"{width}px",
                                     max_width=f"{width}px", flex="0 0 auto")

    @staticmethod
    def _per_step(line, steps):
        """A plotted series' value at every step (NaN at step 0 for a per-step change, drawn from step 1), or None."""
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if np.array_equal(x, steps):
            return y
        if np.array_equal(x, steps[1:]):
            return np.concatenate([[np.nan], y])
        return None

    # --- scrubbing: on a step change, no training -------------------------------------------
    def _scrub(self, change):
        self.show_step(change["new"])

    def show_step(self, k: int):
        """Move the cursor to step ``k`` and list every series' value there."""
        from PIL import Image

        k = int(k)
        self.canvas.restore_region(self._background)
        for cursor in self.cursors:
            cursor.set_xdata([k, k])
            cursor.axes.draw_artist(cursor)
        for dot, ys in self.markers:
            dot.set_data([k], [ys[k]])
            dot.axes.draw_artist(dot)
        width, height = self.canvas.get_width_height()
        buffer = io.BytesIO()
        # the PNG encoding dominates a scrub: the fastest zlib level, and RGB (the figure is opaque) is ~15% faster than RGBA
        rgba = Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        rgba.convert("RGB").save(buffer, format="PNG", compress_level=1)
        self.image.value = buffer.getvalue()
        self.values_view.value = self._values_html(k)
        if self.step_slider.value != k:
            self.step_slider.value = k

    def values_at(self, k: int) -> Dict[str, Dict[str, float]]:
        """{loss: {series: value at step k}} for the per-step series (1-D, one value per step)."""
        n = len(self.sim.steps)
        return {loss: {name: float(v[k]) for name, v in run.series.items() if v.ndim == 1 and len(v) == n}
                for loss, run in self.sim.runs.items()}

    def _values_html(self, k: int) -> str:
        values = self.values_at(k)
        names = sorted({name for row in values.values() for name in row})
        if not names:
            return ""
        head = "".join(f"<th>{loss}</th>" for loss in values)
        rows = "".join(f"<tr><td><code>{name}</code></td>" + "".join(
            f"<td style='text-align:right'>{values[loss].get(name, float('nan')):.4g}</td>" for loss in values) + "</tr>"
            for name in names)
        return f"<table style='font-size:90%'><tr><th>{self.scenario.step_name} {k}</th>{head}</tr>{rows}</table>"

    def set(self, **params):
        """Move parameter sliders (each change re-trains); a value outside the range is refused."""
        for name, value in params.items():
            prm = self.scenario.param(name)
            self.sliders[name].value = prm.check(value, self.scenario.name)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def explore_dynamics(scenario, **kwargs) -> DynamicsExplorer:
    """An explorer of a scenario: parameter sliders (re-train) and a step slider (scrubs the trajectory)."""
    return DynamicsExplorer(scenario, **kwargs)


__all__ = ["DynamicsExplorer", "explore_dynamics"]
