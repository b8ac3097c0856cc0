"""Figure plumbing: style, layout, markers, deterministic atomic saving.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot: no backend
selection, no global state). Nothing here imports torch or sympy, so a cached figure is
saved without either (see :mod:`.cache`).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from ..errors import LossvizError, arg, in_cli

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


class PlotError(LossvizError):
    """A bad output request (format, directory, existing file): one line for the user."""


def new_figure(rows: int, cols: int, width: float = 3.6, height: float = 3.0):
    from matplotlib.figure import Figure

    # constrained layout from the start (colorbars take their room from it); placement.finish runs it once and freezes it
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def styled(build, *args, **kwargs):
    """Run a figure builder under the lossviz style (fonts, legend size, grid)."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        return build(*args, **kwargs)


def mark(ax, x: float, y: float, label: str, gid: str, color: str = "k"):
    """A lesson point: a marker and (if ``label``) a label placed where it fits; ``gid`` names the fact (tests read it)."""
    from .placement import label_point

    (line,) = ax.plot([x], [y], "o", color=color, markersize=5, zorder=5, label="_" + (label or gid))
    line.set_gid(gid)
    if label:
        label_point(ax, x, y, label, color=color)
    return line


def vline(ax, x: float, label: str, gid: str, color: str = "0.35", left: bool = False):
    """A dashed vertical line at data x with a label placed beside it (``left`` is kept for callers; placement decides)."""
    from .placement import label_vline

    line = ax.axvline(x, color=color, linestyle="--", linewidth=1.0)
    line.set_gid(gid)
    if label:
        label_vline(ax, x, label, color=color)
    return line


def zero_line(ax):
    """The y = 0 reference line: a guide that labels may cross (see layout_check)."""
    line = ax.axhline(0, color="0.6", linewidth=0.8, zorder=1)
    line.set_gid("guide:zero")
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
    """(path, format): the format from ``fmt``, else ``out``'s suffix, else png.

    Checks, before anything is drawn, that the file can be written: the folder exists and takes a
    new file, and ``out`` is not a directory, a device, a fifo, a socket or a symbolic link.
    """
    if fmt is not None and fmt not in FORMATS:
        raise PlotError(f"{arg('fmt', '--format')} must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if out is None:
        path = Path.cwd() / f"{default_stem}.{fmt or 'png'}"
    else:
        path = Path(out)
        _refuse_special(path, arg("out"))  # before the suffix: `--out /dev/null` is a device, not a missing suffix
        suffix = path.suffix.lower().lstrip(".")
        if fmt is None:
            if suffix not in FORMATS:
                raise PlotError(f"cannot tell the format from {out!r}: use a .png, .svg or .pdf name, or {arg('fmt', '--format')}")
            fmt = suffix
    fmt = fmt or "png"
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise PlotError(f"{arg('out')}: output directory {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise PlotError(f"{arg('out')}: output directory {str(parent)!r} is not a directory")
    _refuse_special(path, arg("out"))
    try:  # the one sure test that a file can be made there (/proc, /sys, read-only mounts, permissions)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(parent))
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PlotError(f"cannot write {arg('out')} {str(path)!r}: cannot create a file in {str(parent)!r} ({exc.strerror or exc})") from None
    return path, fmt


def _kind(path: Path, name: str) -> Optional[str]:
    """What is at ``path`` now (not following a symbolic link): None when nothing is."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a missing folder is reported by the caller)
        return None
    except OSError as exc:
        raise PlotError(f"cannot inspect {name} {str(path)!r}: {exc.strerror or exc}") from None
    kinds = [(stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISFIFO, "a fifo (named pipe)"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _refuse_special(path: Path, name: str) -> None:
    """Refuse to write over anything but a regular file: ``force`` never replaces a device or a link."""
    kind = _kind(path, name)
    if kind == "a directory":
        raise PlotError(f"{name} {str(path)!r} is a directory; give a file name")
    if kind not in (None, "a regular file"):
        raise PlotError(f"{name} {str(path)!r} is {kind}; lossviz writes only regular files")


def written_by_lossviz(path: Path) -> bool:
    try:
        return SIGNATURE.encode() in path.read_bytes()
    except OSError:
        return False


def save(fig, path, fmt: str, dpi: int = 150, force: bool = False) -> Path:
    """Write ``fig`` deterministically and atomically: a crash never leaves a half-written file.

    An existing regular file that lossviz did not write is kept unless ``force``; anything else
    (a directory, a device, a fifo, a symbolic link) is never replaced.
    """
    if fmt not in FORMATS:
        raise PlotError(f"{arg('fmt', '--format')} must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise PlotError(f"{arg('dpi')} must be a whole number in [10, 1200]; got {dpi!r}")
    import matplotlib

    def draw(handle):
        with matplotlib.rc_context(STYLE):
            fig.savefig(handle, format=fmt, dpi=dpi, metadata=METADATA[fmt])

    return write_atomically(path, draw, force)


def write_atomically(path, write, force: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then rename it into place.

    A crash never leaves a half-written file. An existing regular file that lossviz did not write
    is kept unless ``force``; anything else (a directory, a device, a fifo, a symbolic link) is
    never replaced, ``force`` or not.
    """
    path = Path(path)
    _refuse_special(path, arg("path", "--out"))
    if path.exists() and not force and not written_by_lossviz(path):
        raise PlotError(f"{str(path)!r} exists and was not written by lossviz; pass {'--force' if in_cli() else 'force=True'} to replace it")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    except OSError as exc:
        raise PlotError(f"cannot write {arg('path', '--out')} {str(path)!r}: cannot create a file in {str(path.parent)!r} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file gets the usual mode
        _refuse_special(path, arg("path", "--out"))  # again just before the swap: something may have appeared meanwhile
        os.replace(tmp, path)
    except OSError as exc:
        raise PlotError(f"cannot write {arg('path', '--out')} {str(path)!r}: {exc.strerror or exc}") from None
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


