"""Figures from the cards' stable numpy lowering (matplotlib only; no torch).

    from lossviz.plots import figure, save
    fig = figure("cdpo", sweep=("label_smoothing", [0.0, 0.1, 0.3]), beta=0.1)

The package imports nothing heavy itself: ``lossviz.plots.core`` (saving) and
``lossviz.plots.cache`` stay free of sympy, so a cached figure is written without it.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

from .core import FORMATS, PlotError, resolve_output, save, styled

__all__ = ["figure", "compare_figure", "save", "resolve_output", "PlotError", "FORMATS", "request", "FIGURES"]


def __getattr__(name):
    if name == "FIGURES":
        from .lessons import FIGURES

        return FIGURES
    raise AttributeError(f"module 'lossviz.plots' has no attribute {name!r}")


def request(name: str, sweep: Optional[Tuple[str, Sequence]] = None, x_range: Optional[Tuple[float, float]] = None, **params):
    """Validate everything (entry, parameters, sweep values, range) before any drawing."""
    import math

    from ..cards.base import CardError
    from ..errors import arg
    from ..registry import closest_first, get
    from .core import COLORS
    from .lessons import PlotRequest

    card = get(name)
    if x_range is not None:
        try:
            lo, hi = (float(v) for v in x_range)
        except (TypeError, ValueError):
            raise CardError(f"{arg('x_range')} must be two numbers (LO, HI); got {x_range!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise CardError(f"{arg('x_range')} must be finite; got {lo:g} {hi:g}")
        if not lo < hi:
            raise CardError(f"{arg('x_range')} needs LO < HI; got {lo:g} {hi:g}")
        x_range = (lo, hi)
    if sweep is None:
        return PlotRequest(card, [card.resolve(params)], None, x_range)
    key, values = sweep
    key = key.replace("-", "_")
    if key not in {p.name for p in card.params}:
        valid = ", ".join(closest_first(key, [p.name for p in card.params])) or "(none: it takes no parameters)"
        raise CardError(f"{arg('sweep')}: {card.name} has no parameter {key!r}; valid: {valid}")
    if key in params:
        raise CardError(f"{arg('sweep')} {key} and {arg(key)} both set {key}: give one")
    if not values:
        raise CardError(f"{arg('sweep')} needs at least one value: PARAM=v1,v2,...")
    if len(values) > len(COLORS):  # beyond the palette two curves would share a colour
        raise CardError(f"{arg('sweep')} has {len(values)} values; at most {len(COLORS)} get distinct colours")
    param_sets = [card.resolve({**params, key: v}) for v in values]
    swept = [p[key] for p in param_sets]
    repeated = sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in swept if swept.count(v) > 1})
    if repeated:
        raise CardError(f"{arg('sweep')} repeats {key}={', '.join(repeated)}: give each value once")
    return PlotRequest(card, param_sets, key, x_range)


def figure(name: str, sweep=None, x_range=None, **params):
    """The lesson figure of an entry (a matplotlib Figure)."""
    from .lessons import builder

    req = request(name, sweep, x_range, **params)
    return styled(builder(req.card), req)


def compare_figure(names: Sequence[str], what: str = "grad", x_range=None, **params):
    from .compare import compare

    return styled(compare, names, what, x_range, **params)
