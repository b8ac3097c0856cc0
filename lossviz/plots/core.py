"""Figure plumbing: style, layout, markers, deterministic atomic saving.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot: no backend
selection, no global state). Nothing here imports torch or sympy, so a cached figure is
saved without either (see :mod:`.cache`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

FORMATS = ("png", "svg", "pdf")
SIGNATURE = "lossviz"  # written into every file's metadata; an existing file without it is not ours
STYLE = {
    "svg.hashsalt": "lossviz",  # fixed ids in SVG output
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "legend.framealpha": 0.85,
    "figure.titlesize": 9.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.6,
}
METADATA = {
    "png": {"Software": SIGNATURE},
    "svg": {"Creator": SIGNATURE, "Date": None},
    "pdf": {"Creator": SIGNATURE, "Producer": SIGNATURE, "CreationDate": None, "ModDate": None},
}
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
SHADE = "#f2c14e"


class PlotError(ValueError):
    """A bad output request (format, directory, existing file): one line for the user."""


def new_figure(rows: int, cols: int, width: float = 3.4, height: float = 2.6):
    from matplotlib.figure import Figure

    # fixed margins (see finish_layout) instead of constrained layout: 0.2-0.3 s less per figure
    fig = Figure(figsize=(width * cols, height * rows))
    return fig, fig.subplots(rows, cols, squeeze=False)


def finish_layout(fig, title_lines: int):
    """Place the axes with fixed margins in inches: room for tick labels, axis labels and the title."""
    width, height = fig.get_size_inches()
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    rows = len({round(ax.get_position().y0, 3) for ax in axes}) or 1
    cols = len({round(ax.get_position().x0, 3) for ax in axes}) or 1
    has_titles = any(ax.get_title() for ax in axes)
    top = 0.12 + 0.19 * title_lines + (0.2 if has_titles else 0.0)
    left, right, bottom = 0.68, 0.15, 0.45
    col_gap, row_gap = 0.85, 0.55 + (0.2 if has_titles else 0.0)
    panel_w = (width - left - right - col_gap * (cols - 1)) / cols
    panel_h = (height - top - bottom - row_gap * (rows - 1)) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=col_gap / panel_w, hspace=row_gap / panel_h)


def styled(build, *args, **kwargs):
    """Run a figure builder under the lossviz style (fonts, legend size, grid)."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        return build(*args, **kwargs)


def mark(ax, x: float, y: float, label: str, gid: str, color: str = "k", text_offset=(6, 8)):
    """A lesson point: a marker with an annotation; ``gid`` names the fact it shows (tests read it)."""
    (line,) = ax.plot([x], [y], "o", color=color, markersize=5, zorder=5, label="_" + label)
    line.set_gid(gid)
    ax.annotate(label, (x, y), textcoords="offset points", xytext=text_offset, fontsize=7.5, color=color)
    return line


def vline(ax, x: float, label: str, gid: str, color: str = "0.35", left: bool = False):
    line = ax.axvline(x, color=color, linestyle="--", linewidth=1.0)
    line.set_gid(gid)
    ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), xytext=(-3 if left else 3, -10), textcoords="offset points",
                fontsize=7, color=color, ha="right" if left else "left")
    return line


def shade(ax, lo: float, hi: float, label: str, gid: str):
    patch = ax.axvspan(lo, hi, color=SHADE, alpha=0.25, linewidth=0, label=label)
    patch.set_gid(gid)
    return patch


def format_params(params: Mapping[str, object], skip: Sequence[str] = ()) -> str:
    shown = [f"{k}={_fmt(v)}" for k, v in params.items() if v is not None and k not in skip]
    return ", ".join(shown)


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def resolve_output(out: Optional[str], fmt: Optional[str], default_stem: str) -> tuple:
    """(path, format): the format from ``fmt``, else ``out``'s suffix, else png; checks the directory."""
    if fmt is not None and fmt not in FORMATS:
        raise PlotError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if out is None:
        path = Path.cwd() / f"{default_stem}.{fmt or 'png'}"
    else:
        path = Path(out)
        suffix = path.suffix.lower().lstrip(".")
        if fmt is None:
            if suffix not in FORMATS:
                raise PlotError(f"cannot tell the format from {out!r}: use a .png, .svg or .pdf name, or --format")
            fmt = suffix
    fmt = fmt or "png"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise PlotError(f"output directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise PlotError(f"output directory {str(parent)!r} is not a directory")
    if path.is_dir():
        raise PlotError(f"--out {str(path)!r} is a directory; give a file name")
    return path, fmt


def written_by_lossviz(path: Path) -> bool:
    try:
        return SIGNATURE.encode() in path.read_bytes()
    except OSError:
        return False


def save(fig, path, fmt: str, dpi: int = 150, force: bool = False) -> Path:
    """Write ``fig`` deterministically and atomically: a crash never leaves a half-written file.

    An existing file that lossviz did not write is kept unless ``force``.
    """
    import matplotlib

    path = Path(path)
    if fmt not in FORMATS:
        raise PlotError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise PlotError(f"--dpi must be a whole number in [10, 1200]; got {dpi!r}")
    if path.exists() and not force and not written_by_lossviz(path):
        raise PlotError(f"{str(path)!r} exists and was not written by lossviz; pass --force to replace it")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle, matplotlib.rc_context(STYLE):
            fig.savefig(handle, format=fmt, dpi=dpi, metadata=METADATA[fmt])
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved figure gets the usual mode
        os.replace(tmp, path)
    except OSError as exc:
        raise PlotError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sample_axis(lo: float, hi: float, n: int = 801) -> np.ndarray:
    return np.linspace(lo, hi, n)


