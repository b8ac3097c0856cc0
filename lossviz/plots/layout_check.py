"""Measure a drawn figure's texts and report collisions: what a reader would see as broken.

    from lossviz.plots.layout_check import collisions
    problems = collisions(fig)      # [] when the figure is clean

The figure is drawn with the Agg renderer (the one that writes PNG) at its own dpi, and the
window extent of every visible text is measured: the figure's texts (suptitle included),
each axes' titles, axis labels, offset texts and the tick labels actually drawn, the texts
and annotations placed in the axes, and every legend as one box. Three kinds of problem are
reported, one line each:

- ``overlap``: two of those boxes intersect (by more than ``tolerance`` pixels both ways);
- ``off canvas``: a box runs past the edge of the figure;
- ``outside its axes``: a text placed in an axes (a label, an annotation) sticks out of it;
- ``on curve``: a plotted line of an axes passes through one of its texts or its legend
  (only the part of the line drawn inside the axes counts; a line made of markers only
  counts where a marker sits inside the box);
- ``leader through text``: the leader line (arrow) of an annotation runs through another
  text or legend box (its own text box does not count).

Every visible ``Line2D`` counts as a plotted line, except lines whose gid starts with
``guide`` (give a reference line such as ``axhline(0)`` that gid when labels may cross it).
The functions below (``text_boxes``, ``line_hits``) are the measuring parts, reused by the
label placement in :mod:`.core`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional

import numpy as np

__all__ = ["collisions", "text_boxes", "text_extent", "line_hits", "leader", "segment_hits", "renderer_of", "Box"]


@dataclass
class Box:
    """A measured text or legend: its window extent in pixels and a name a reader recognises."""

    name: str
    bbox: object  # matplotlib.transforms.Bbox in display pixels
    artist: object
    axes: Optional[object]  # the axes it belongs to (None for figure texts)
    kind: str  # "text" (placed in the axes), "legend", "title", "label", "tick", "figure"


def renderer_of(fig, rc: Optional[dict] = None, draw: bool = True):
    """Draw ``fig`` on an Agg canvas under the style ``rc`` (default: lossviz's) and return the renderer.

    With ``draw=False`` the canvas is attached but nothing is drawn (the caller lays out first).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .core import STYLE

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    if draw:
        with matplotlib.rc_context(STYLE if rc is None else rc):
            canvas.draw()
    return canvas.get_renderer()


def _short(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _axes_name(fig, ax) -> str:
    k = fig.axes.index(ax)
    title = ax.get_title() or ax.get_ylabel() or ax.get_label()
    return f"axes {k}" + (f" ({_short(title, 24)})" if title else "")


def _drawn(artist, renderer) -> bool:
    if not artist.get_visible():
        return False
    if hasattr(artist, "get_text") and not artist.get_text().strip():
        return False
    check = getattr(artist, "_check_xy", None)  # an annotation whose point is outside its axes is not drawn
    if check is not None and not check(renderer):
        return False
    return True


def text_extent(text, renderer):
    """The window extent of a text's own box: for an annotation without its arrow (an arrow is a line, not text)."""
    from matplotlib.text import Annotation, Text

    if isinstance(text, Annotation):
        text.update_positions(renderer)
        return Text.get_window_extent(text, renderer)
    return text.get_window_extent(renderer)


def _ticks(axis):
    """The major and minor ticks the axis draws now (inside the view interval)."""
    update = getattr(axis, "_update_ticks", None)
    if update is not None:
        return update()
    lo, hi = sorted(axis.get_view_interval())
    return [t for t in axis.get_major_ticks() if lo <= t.get_loc() <= hi]


def text_boxes(fig, renderer) -> List[Box]:
    """Every visible text of ``fig`` and every legend, measured with ``renderer``."""
    boxes: List[Box] = []

    def add(artist, name, axes, kind):
        if artist is not None and _drawn(artist, renderer):
            bbox = text_extent(artist, renderer) if kind != "legend" else artist.get_window_extent(renderer)
            if bbox.width > 0 and bbox.height > 0:
                boxes.append(Box(name, bbox, artist, axes, kind))

    for t in fig.texts:
        add(t, f"figure text {_short(t.get_text())}", None, "figure")
    for leg in fig.legends:
        add(leg, "figure legend", None, "legend")
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        where = _axes_name(fig, ax)
        for loc in ("left", "center", "right"):
            title = ax.get_title(loc)
            if title:
                add({"left": ax._left_title, "center": ax.title, "right": ax._right_title}[loc], f"{where}: title", ax, "title")
        if ax.axison:
            for axis, letter in ((ax.xaxis, "x"), (ax.yaxis, "y")):
                add(axis.label, f"{where}: {letter}-label {_short(axis.label.get_text())}", ax, "label")
                add(axis.offsetText, f"{where}: {letter} offset text", ax, "label")
                for tick in _ticks(axis):
                    for lab in (tick.label1, tick.label2):
                        add(lab, f"{where}: {letter}-tick {_short(lab.get_text(), 12)}", ax, "tick")
        for t in ax.texts:
            add(t, f"{where}: text {_short(t.get_text())}", ax, "text")
        leg = ax.get_legend()
        if leg is not None:
            add(leg, f"{where}: legend", ax, "legend")
    return boxes


def _is_guide(line) -> bool:
    gid = line.get_gid()
    return isinstance(gid, str) and gid.startswith("guide")


def _segments_hit(xy: np.ndarray, x0, y0, x1, y1) -> bool:
    """Whether any segment of the polyline ``xy`` (display pixels, NaN breaks it) meets the rectangle."""
    a, b = xy[:-1], xy[1:]
    ok = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    a, b = a[ok], b[ok]
    if len(a) == 0:
        return False
    d = b - a
    t0, t1 = np.zeros(len(a)), np.ones(len(a))
    alive = np.ones(len(a), dtype=bool)
    # Liang-Barsky clipping of every segment against the rectangle at once
    for p, q in ((-d[:, 0], a[:, 0] - x0), (d[:, 0], x1 - a[:, 0]), (-d[:, 1], a[:, 1] - y0), (d[:, 1], y1 - a[:, 1])):
        parallel = p == 0
        alive &= ~(parallel & (q < 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(parallel, 0.0, q / np.where(parallel, 1.0, p))
        t0 = np.where(~parallel & (p < 0), np.maximum(t0, r), t0)
        t1 = np.where(~parallel & (p > 0), np.minimum(t1, r), t1)
    return bool(np.any(alive & (t0 <= t1)))


def line_hits(ax, bbox, shrink: float = 1.0, skip: Iterable = (), guides: bool = False) -> List[str]:
    """The plotted lines of ``ax`` drawn through ``bbox`` (display pixels), as gid or label names (``guides``: those too)."""
    clip = ax.get_window_extent()
    x0, y0 = max(bbox.x0, clip.x0) + shrink, max(bbox.y0, clip.y0) + shrink
    x1, y1 = min(bbox.x1, clip.x1) - shrink, min(bbox.y1, clip.y1) - shrink
    if x0 >= x1 or y0 >= y1:
        return []
    skip = set(id(s) for s in skip)
    hits = []
    for line in ax.get_lines():
        if not line.get_visible() or (_is_guide(line) and not guides) or id(line) in skip:
            continue
        x = np.asarray(line.get_xdata(orig=False), dtype=float)
        y = np.asarray(line.get_ydata(orig=False), dtype=float)
        if x.size == 0:
            continue
        xy = line.get_transform().transform(np.column_stack([x, y]))
        name = line.get_gid() or line.get_label()
        if line.get_linestyle() in ("None", "none", "", " ") or xy.shape[0] == 1:
            if line.get_marker() in (None, "None", "none", "", " "):
                continue
            r = line.get_markersize() * ax.figure.dpi / 72 / 2
            inside = (xy[:, 0] + r > x0) & (xy[:, 0] - r < x1) & (xy[:, 1] + r > y0) & (xy[:, 1] - r < y1)
            if np.any(inside & np.all(np.isfinite(xy), axis=1)):
                hits.append(str(name))
        elif _segments_hit(xy, x0, y0, x1, y1):
            hits.append(str(name))
    return hits


def leader(ann, renderer) -> Optional[np.ndarray]:
    """The leader line of an annotation in display pixels, as a 2x2 array (text anchor, point); None without one.

    Matplotlib draws the arrow from the centre of the text box (clipped at its edge) to the
    annotated point, so the segment centre → point covers every pixel the arrow can take.
    """
    from matplotlib.text import Annotation, Text

    patch = getattr(ann, "arrow_patch", None)
    if not isinstance(ann, Annotation) or patch is None or not patch.get_visible() or not ann.get_visible():
        return None
    ann.update_positions(renderer)
    box = Text.get_window_extent(ann, renderer)
    start = ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
    end = ann._get_xy(renderer, ann.xy, ann.xycoords)  # the annotated point (Text._get_xy_display is the text's own)
    return np.array([start, end], dtype=float)


def segment_hits(seg: np.ndarray, bbox, shrink: float = 1.0) -> bool:
    """Whether the segment ``seg`` (2x2, display pixels) meets ``bbox`` shrunk by ``shrink`` pixels on every side."""
    x0, y0, x1, y1 = bbox.x0 + shrink, bbox.y0 + shrink, bbox.x1 - shrink, bbox.y1 - shrink
    if x0 >= x1 or y0 >= y1:
        return False
    return _segments_hit(seg, x0, y0, x1, y1)


def _overlap(a, b, tolerance: float) -> bool:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w > tolerance and h > tolerance


def collisions(fig, tolerance: float = 0.5, rc: Optional[dict] = None) -> List[str]:
    """Every text collision of ``fig``: overlaps, texts off the canvas, texts and legends on a curve.

    ``tolerance`` (pixels) forgives anti-aliasing-sized touches. ``rc`` is the style the figure
    is saved under (default: lossviz's ``core.STYLE``); ticks that a draw creates take their
    font from it, so measuring under another style would measure other texts. Returns one
    line per problem, an empty list when the figure is clean.
    """
    import matplotlib

    from .core import STYLE

    with matplotlib.rc_context(STYLE if rc is None else rc):
        renderer = renderer_of(fig, rc)
        boxes = text_boxes(fig, renderer)
    canvas = fig.bbox
    problems: List[str] = []
    for box in boxes:
        b = box.bbox
        if b.x0 < canvas.x0 - tolerance or b.y0 < canvas.y0 - tolerance or b.x1 > canvas.x1 + tolerance or b.y1 > canvas.y1 + tolerance:
            problems.append(f"off canvas: {box.name} spans x {b.x0:.0f}..{b.x1:.0f}, y {b.y0:.0f}..{b.y1:.0f} "
                            f"of a {canvas.width:.0f}x{canvas.height:.0f} canvas")
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if _overlap(a.bbox, b.bbox, tolerance):
                problems.append(f"overlap: {a.name} and {b.name}")
    for box in boxes:
        if box.axes is not None and box.kind == "text":
            inside = box.axes.get_window_extent(renderer)
            b = box.bbox
            if b.x0 < inside.x0 - tolerance or b.y0 < inside.y0 - tolerance or b.x1 > inside.x1 + tolerance or b.y1 > inside.y1 + tolerance:
                problems.append(f"outside its axes: {box.name}")
    for box in boxes:
        if box.axes is not None and box.kind in ("text", "legend"):
            for line in line_hits(box.axes, box.bbox):
                problems.append(f"on curve: {box.name} is crossed by the line {line!r}")
    with matplotlib.rc_context(STYLE if rc is None else rc):
        for ax in fig.axes:
            for k, ann in enumerate(ax.texts):
                seg = leader(ann, renderer)
                if seg is None:
                    continue
                name = f"{_axes_name(fig, ax)}: " + (f"text {_short(ann.get_text())}" if ann.get_text().strip() else f"arrow {k}")
                for box in boxes:
                    if box.artist is not ann and segment_hits(seg, box.bbox, shrink=tolerance):
                        problems.append(f"leader through text: the leader line of {name} runs through {box.name}")
    return problems
