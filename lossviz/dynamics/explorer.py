"""The dynamics explorer: ``lossviz.explore_dynamics("likelihood-displacement")`` in JupyterLab.

One slider per scenario parameter (a change re-trains, in a fraction of a second to a few
seconds), and a step slider that scrubs through the recorded trajectory without re-training:
a cursor and a marker per curve move over a cached background (blitting), and the values
at that step are listed beside the figure. ``benchmarks/bench_dynamics.py`` times a scrub.
"""

from __future__ import annotations

import io
from typing import Dict, List, Optional

import numpy as np

from .declare import get
from .engine import simulate

# every scrub re-encodes the whole canvas as PNG, which dominates the redraw: wide figures are shown smaller
WIDTH_PX, DPI = 880, 80


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
        self._train()
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
            self.figure = self.sim.figure()
            self.figure.set_dpi(min(DPI, WIDTH_PX / self.figure.get_figwidth()))
            self.canvas = FigureCanvasAgg(self.figure)
            self.cursors: List[object] = []
            self.markers: List[tuple] = []
            steps = np.asarray(self.sim.steps, dtype=float)
            for ax in self.figure.axes:
                traced = [line for line in ax.get_lines() if str(line.get_gid()).startswith("run:")
                          and len(line.get_xdata()) == len(steps) and np.array_equal(np.asarray(line.get_xdata(), float), steps)]
                if not traced:
                    continue
                self.cursors.append(ax.axvline(0, color="0.2", linewidth=0.8, animated=True))
                for line in traced:
                    (dot,) = ax.plot([0], [0], "o", color=line.get_color(), markersize=4, animated=True)
                    self.markers.append((dot, np.asarray(line.get_ydata(), float)))
            self.canvas.draw()  # everything not animated, once per training
            self._background = self.canvas.copy_from_bbox(self.figure.bbox)

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
        Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1).save(buffer, format="PNG", compress_level=1)
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
