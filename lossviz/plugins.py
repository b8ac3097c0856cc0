"""Cards from other packages: the entry-point group ``lossviz.cards``.

A distribution ships a loss entry by naming its :class:`~lossviz.cards.base.Card` subclass in
its metadata (``pyproject.toml``)::

    [project.entry-points."lossviz.cards"]
    squared-hinge = "lossviz_hinge.card:SquaredHinge"

:mod:`lossviz.registry` loads and checks these cards; this module only lists the entry points
and fingerprints them for the figure cache. It imports neither sympy nor torch, so a cached
``lossviz plot`` stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import List, Optional

GROUP = "lossviz.cards"


@dataclass(frozen=True)
class Plugin:
    """One entry point of the group: ``name = "module:Class"`` in a distribution."""

    name: str
    value: str
    distribution: str  # "name version", or "an unknown distribution"
    entry_point: metadata.EntryPoint

    def describe(self) -> str:
        """How messages name the plugin: ``plugin 'squared-hinge' (lossviz_hinge.card:SquaredHinge from lossviz-hinge 0.1)``."""
        return f"plugin {self.name!r} ({self.value} from {self.distribution})"

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()


def _distribution(entry_point) -> str:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"{dist.metadata['Name'] or '?'} {dist.version}"


def discover() -> List[Plugin]:
    """The entry points of :data:`GROUP`, ordered by distribution and entry-point name (stable across runs)."""
    found = [Plugin(ep.name, ep.value, _distribution(ep), ep) for ep in metadata.entry_points(group=GROUP)]
    return sorted(found, key=lambda p: (p.distribution.lower(), p.name, p.value))


def _module_file(module: str) -> Optional[str]:
    """The source file of ``module``, found without importing it (nor its parent packages)."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return getattr(loaded, "__file__", None)
    path = None
    spec = None
    parts = module.split(".")
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), path)
        if spec is None:
            return None
        path = spec.submodule_search_locations
    return spec.origin if spec is not None else None


def fingerprint() -> List[List[str]]:
    """What the figure cache must know about the plugins: each entry point, its distribution's
    version, and a hash of the module that defines the card (so editing a plugin card in
    development misses the cache; an edit to a helper module it imports needs ``--no-cache``)."""
    out = []
    for plugin in discover():
        digest = "-"
        try:
            file = _module_file(plugin.module)
            if file:
                with open(file, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
        except (OSError, ImportError, ValueError):  # unreadable or unfindable: the registry will say so
            pass
        out.append([plugin.name, plugin.value, plugin.distribution, digest])
    return out


__all__ = ["GROUP", "Plugin", "discover", "fingerprint"]
