"""Put legends and lesson labels where they fit: off the curves, off each other, on the canvas.

``finish(fig, title)`` ends every lossviz figure:

1. the title is wrapped and the axes are laid out by matplotlib's constrained layout, once,
   then frozen (later draws cost nothing extra);
2. each axes legend goes to the first corner or edge of its axes where it covers no plotted
   line and no text; an axes with no such place gives its entries to one legend below the
   panels (entries with the same label are shown once, so a figure must style a label the
   same way in every panel);
3. each lesson label made by :func:`label_point`, :func:`label_vline` or :func:`label_hline`
   tries a list of positions around what it labels, nearest first, and takes the first that
   collides with nothing (measured with :mod:`.layout_check`); a label that fits nowhere
   takes the position with the fewest collisions, which the layout test then reports.

Placement is deterministic: the same figure always gets the same positions.
"""

from __future__ import annotations

import re
from typing import List, Optional

import numpy as np

from .layout_check import _is_guide, leader, line_hits, renderer_of, segment_hits, text_boxes, text_extent

LEGEND_LOCS = ("upper right", "upper left", "lower left", "lower right", "center right", "center left", "upper center", "lower center")
MEASURE_DPI = 200
ARROW = dict(arrowstyle="-", color="0.45", linewidth=0.6, shrinkA=1, shrinkB=3)


# ----------------------------------------------------------------------------- labels


def label_point(ax, x: float, y: float, text: str, color: str = "k", fontsize: float = 7.5):
    """A movable label for the point (x, y) in data coordinates (placed by :func:`finish`)."""
    ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=fontsize, color=color,
                      arrowprops=dict(ARROW, color=color))
    ann.arrow_patch.set_visible(False)
    ann.lossviz_place = "point"
    return ann


def label_vline(ax, x: float, text: str, color: str = "0.35", fontsize: float = 7):
    """A movable label beside the vertical line at data x (top or bottom of the axes)."""
    ann = ax.annotate(text, (x, 0.94), xycoords=("data", "axes fraction"), textcoords="offset points", xytext=(3, 0),
                      fontsize=fontsize, color=color, va="center", arrowprops=dict(ARROW, color=color))
    ann.arrow_patch.set_visible(False)
    ann.lossviz_place = "vline"
    return ann


def label_hline(ax, y: float, text: str, color: str = "0.25", fontsize: float = 7):
    """A movable label along the horizontal line at data y."""
    ann = ax.annotate(text, (0, y), xycoords=("axes fraction", "data"), textcoords="offset points", xytext=(4, 3),
                      fontsize=fontsize, color=color, va="bottom")
    ann.lossviz_place = "hline"
    return ann


def _point_candidates():
    # (dx, dy) in points, nearest first; the text grows away from the point
    directions = [(1, 1), (-1, 1), (1, -1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    for r in (6, 12, 20, 30, 44, 60, 80):
        for ux, uy in directions:
            ha = "left" if ux > 0 else "right" if ux < 0 else "center"
            va = "bottom" if uy > 0 else "top" if uy < 0 else "center"
            yield None, (ux * r, uy * r), ha, va, r >= 20


def _vline_candidates(x):
    # beside the line at a height (axes fraction); farther out with a leader line when the line's sides are crowded
    for dx in (3, 24, 48):
        for frac in (0.94, 0.82, 0.7, 0.5, 0.3, 0.18, 0.06):  # from the top down: the labels of one figure line up
            for side in (1, -1):
                yield (x, frac), (side * dx, 0), "left" if side > 0 else "right", "center", dx > 3


def _hline_candidates(y):
    for frac in (0.0, 1.0, 0.25, 0.75, 0.5, 0.1, 0.9, 0.4, 0.6):
        ha = "left" if frac < 0.5 else "right" if frac > 0.5 else "center"
        dx = 4 if frac < 0.5 else -4 if frac > 0.5 else 0
        for dy, va in ((3, "bottom"), (-3, "top")):
            yield (frac, y), (dx, dy), ha, va, False


def _candidates(ann):
    kind = ann.lossviz_place
    if kind == "point":
        return _point_candidates()
    if kind == "vline":
        return _vline_candidates(ann.xy[0])
    return _hline_candidates(ann.xy[1])


def _apply(ann, candidate):
    xy, offset, ha, va, arrow = candidate
    if xy is not None:
        ann.xy = xy
    ann.xyann = offset
    ann.set_ha(ha)
    ann.set_va(va)
    if ann.arrow_patch is not None:
        ann.arrow_patch.set_visible(arrow)


def _cost(box, ax, others, canvas, renderer, skip=()) -> int:
    # a margin of 2 px at 100 dpi, scaled: text metrics differ a little between resolutions, a saved figure must stay clean
    m = 2.0 * ax.figure.dpi / 100
    inside = ax.get_window_extent(renderer)
    cost = 0
    if box.x0 < canvas.x0 + m or box.y0 < canvas.y0 + m or box.x1 > canvas.x1 - m or box.y1 > canvas.y1 - m:
        cost += 1000
    if box.x0 < inside.x0 + m or box.y0 < inside.y0 + m or box.x1 > inside.x1 - m or box.y1 > inside.y1 - m:
        cost += 50  # labels belong inside their axes; a free spot outside still beats a collision
    cost += 100 * sum(1 for o in others if _overlaps(box, o, pad=m))
    hits = line_hits(ax, box, shrink=-m, skip=skip)
    cost += 100 * len(hits)
    # a label may cross a guide (the zero line), but one beside it reads better
    cost += 10 * (len(line_hits(ax, box, shrink=-m, skip=skip, guides=True)) - len(hits))
    return cost


def _leader_cost(ann, box, ax, others, leaders, renderer) -> int:
    """What the candidate's leader line (if drawn) costs: through a text box as much as an overlap, across a curve less.

    Also a box placed on a leader already drawn costs like an overlap.
    """
    m = 2.0 * ax.figure.dpi / 100
    cost = 100 * sum(1 for seg in leaders if segment_hits(seg, box, shrink=-m))
    if not (ann.arrow_patch is not None and ann.arrow_patch.get_visible()):
        return cost
    seg = _candidate_leader(ann, box, renderer)
    cost += 100 * sum(1 for o in others if segment_hits(seg, o, shrink=-m))
    # a leader across a plotted line reads as part of it; the first few pixels by the point are on that line anyway
    p, q = seg
    length = float(np.hypot(*(q - p)))
    if length > 8:
        cost += 20 * _lines_crossed(ax, np.array([p, p + (q - p) * (length - 6) / length]))
    return cost


def _candidate_leader(ann, box, renderer) -> np.ndarray:
    start = ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
    return np.array([start, ann._get_xy(renderer, ann.xy, ann.xycoords)], dtype=float)


def _lines_crossed(ax, seg: np.ndarray) -> int:
    """How many plotted (non-guide) lines of ``ax`` the segment crosses (display pixels)."""
    (px, py), (qx, qy) = seg
    count = 0
    for line in ax.get_lines():
        if not line.get_visible() or _is_guide(line) or line.get_linestyle() in ("None", "none", "", " "):
            continue
        xy = line.get_transform().transform(np.column_stack([np.asarray(line.get_xdata(orig=False), float),
                                                             np.asarray(line.get_ydata(orig=False), float)]))
        a, b = xy[:-1], xy[1:]
        ok = np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
        a, b = a[ok], b[ok]
        if len(a) == 0:
            continue

        def side(ox, oy, ux, uy, wx, wy):  # sign of the cross product (u - o) x (w - o)
            return np.sign((ux - ox) * (wy - oy) - (uy - oy) * (wx - ox))

        s1 = side(px, py, qx, qy, a[:, 0], a[:, 1]) * side(px, py, qx, qy, b[:, 0], b[:, 1])
        s2 = side(a[:, 0], a[:, 1], b[:, 0], b[:, 1], px, py) * side(a[:, 0], a[:, 1], b[:, 0], b[:, 1], qx, qy)
        count += bool(np.any((s1 < 0) & (s2 < 0)))
    return count


def _overlaps(a, b, pad: float = 1.0) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > -pad and min(a.y1, b.y1) - max(a.y0, b.y0) > -pad


def _place_labels(fig, renderer):
    movable = [t for ax in fig.axes for t in ax.texts if getattr(t, "lossviz_place", None)]
    if not movable:
        return
    fixed = [b.bbox for b in text_boxes(fig, renderer) if not getattr(b.artist, "lossviz_place", None)]
    leaders = [seg for ax in fig.axes for t in ax.texts if not getattr(t, "lossviz_place", None)
               for seg in [leader(t, renderer)] if seg is not None]
    canvas = fig.bbox
    for ann in movable:
        ax = ann.axes
        arrowprops, ann.arrowprops = ann.arrowprops, None  # no arrow geometry while searching: only the text box counts
        best, best_cost = None, None
        for text in _wordings(ann.get_text()):  # as written, then on two lines where one line fits nowhere
            ann.set_text(text)
            for candidate in _candidates(ann):
                _apply(ann, candidate)
                box = text_extent(ann, renderer)
                cost = _cost(box, ax, fixed, canvas, renderer) + _leader_cost(ann, box, ax, fixed, leaders, renderer)
                if best_cost is None or cost < best_cost:
                    best, best_cost = (text, candidate), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        ann.arrowprops = arrowprops
        ann.set_text(best[0])
        _apply(ann, best[1])
        box = text_extent(ann, renderer)
        fixed.append(box)
        if ann.arrow_patch is not None and ann.arrow_patch.get_visible():
            leaders.append(_candidate_leader(ann, box, renderer))


def _wordings(text: str):
    yield text
    words = text.split(" ")
    if "\n" not in text and len(words) > 2:
        # break at the space nearest the middle, outside any $...$ math
        spaces = [k for k in range(1, len(words)) if " ".join(words[:k]).count("$") % 2 == 0]
        if spaces:
            k = min(spaces, key=lambda k: abs(len(" ".join(words[:k])) - len(text) / 2))
            yield " ".join(words[:k]) + "\n" + " ".join(words[k:])


# ----------------------------------------------------------------------------- legends


def _legend_fits(ax, legend, renderer, fixed) -> bool:
    m = 2.0 * ax.figure.dpi / 100
    box = legend.get_window_extent(renderer)
    inside = ax.get_window_extent(renderer)
    if box.x0 < inside.x0 or box.y0 < inside.y0 or box.x1 > inside.x1 or box.y1 > inside.y1:
        return False
    # a legend keeps a clear gap to the labels (a frame touching a label reads as one box)
    return not any(_overlaps(box, o, pad=3 * m) for o in fixed) and not line_hits(ax, box, shrink=-m)


def _place_legends(fig, renderer) -> List:
    """Each axes legend to a free spot of its axes; returns the axes whose legend fits nowhere."""
    fixed = [b.bbox for b in text_boxes(fig, renderer) if b.kind != "legend"]
    crowded = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        for loc in LEGEND_LOCS:
            legend.set_loc(loc)
            if _legend_fits(ax, legend, renderer, fixed):
                fixed.append(legend.get_window_extent(renderer))
                break
        else:
            crowded.append(ax)
    return crowded


def _labels(legend) -> set:
    return {t.get_text() for t in legend.get_texts()}


def _drop_repeated(fig, axes_list, below: bool = False) -> list:
    """Remove the legends of ``axes_list`` that repeat a legend already shown (in a free spot, or below with ``below``).

    Returns the axes whose legend is still there.
    """
    shown = [_labels(leg) for leg in fig.legends] if below else \
        [_labels(ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None and ax not in axes_list]
    kept = []
    for ax in axes_list:
        if any(_labels(ax.get_legend()) <= other for other in shown):
            ax.get_legend().remove()
        else:
            kept.append(ax)
    return kept


def _legend_below(fig, crowded):
    """Move the legends of ``crowded`` axes into one legend below the panels (merged with one already there)."""
    handles, labels = [], []
    for legend in list(fig.legends) + [ax.get_legend() for ax in crowded]:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            if text.get_text() not in labels:
                handles.append(handle)
                labels.append(text.get_text())
        legend.remove()
    renderer = renderer_of(fig, draw=False)
    for ncol in range(len(labels), 0, -1):  # as many columns as fit the figure's width
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False)
        if ncol == 1 or legend.get_window_extent(renderer).width <= 0.96 * fig.bbox.width:
            break
        legend.remove()


# ----------------------------------------------------------------------------- the whole pass


def _shown_length(word: str) -> int:
    """About how many characters ``word`` shows: a mathtext command (\\beta) is one glyph, $ { } _ ^ none."""
    return len(re.sub(r"[${}_^]", "", re.sub(r"\\[A-Za-z]+", "x", word)))


def wrap_title(fig, text: str) -> str:
    """The figure title wrapped to the figure's width (about 11 characters per inch at 9.5 pt), never inside $...$ math."""
    width = int(fig.get_figwidth() * 11)
    words, inside = [], False  # split at the spaces outside math
    for part in re.split(r"( )", text):
        if part == " " and not inside:
            words.append("")
            continue
        words[-1:] = [(words[-1] if words else "") + part]
        inside ^= part.count("$") % 2 == 1
    lines: List[str] = []
    for word in words:
        if lines and _shown_length(lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines) or text


def _layout(fig):
    """Run constrained layout once and freeze its result; return a renderer measuring the laid-out figure."""
    fig.set_layout_engine("constrained", w_pad=0.06, h_pad=0.06, wspace=0.04, hspace=0.06)
    renderer = renderer_of(fig, draw=False)
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")  # later draws keep these positions and cost no layout
    fig.draw_without_rendering()  # tick labels and axis labels at their final places, nothing rasterised
    return renderer


def finish(fig, title: Optional[str] = None):
    """Title, layout, labels and legends of a built figure (see the module docstring)."""
    if title:
        fig.suptitle(wrap_title(fig, title))
    for ax in fig.axes:  # movable labels are placed after the layout, which must not make room for them
        for t in ax.texts:
            if getattr(t, "lossviz_place", None):
                t.set_in_layout(False)
    # measure at a fine resolution: hinted text at 100 dpi is up to ~8 % narrower than at 200 dpi or in SVG/PDF
    dpi = fig.dpi
    fig.set_dpi(max(dpi, MEASURE_DPI))
    try:
        _arrange(fig)
    finally:
        fig.set_dpi(dpi)
    return fig


def _arrange(fig):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend in legends:  # labels first: they must sit by their point, a legend can go anywhere
        legend.set_visible(False)
    renderer = _layout(fig)
    _place_labels(fig, renderer)
    for legend in legends:
        legend.set_visible(True)
    for _ in range(3):  # a legend below the panels shrinks them: the others are placed again
        crowded = _drop_repeated(fig, _place_legends(fig, renderer))
        if not crowded:
            break
        _legend_below(fig, crowded)
        _drop_repeated(fig, [ax for ax in fig.axes if ax.get_legend() is not None], below=True)
        renderer = _layout(fig)
        _place_labels(fig, renderer)
