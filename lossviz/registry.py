"""The registry: the one list of loss entries that the CLI, tests, figures and docs read.

It is discovered, never written by hand:

- **built-in cards**: every :class:`~lossviz.cards.base.Card` subclass that sets its own ``name``
  in a module of the package ``lossviz.cards``. They come in teaching order: by family in the
  order of :data:`FAMILIES` (a family not listed there follows, alphabetically), then by the
  card's ``order`` (an int, default 0, lower first), then by module name, then in the order the
  classes are written in their module;
- **plugin cards**: each entry point of the group ``lossviz.cards`` (see :mod:`lossviz.plugins`)
  names a ``Card`` subclass in another distribution. They follow the built-in entries.

A plugin that cannot be used (it fails to import, names something that is not a ``Card``
subclass, declares invalid class attributes, or takes a name or alias that is already taken)
is skipped with one :class:`~lossviz.errors.PluginWarning` naming it; :func:`problems` lists
them as :class:`~lossviz.errors.PluginError`. The built-in entries never depend on a plugin.
Discovery runs once per process; :func:`reset` forgets it (tests, or a plugin installed into a
running session).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Mapping, Sequence, Tuple

from .cards.base import Card, CardError, Derivation, Param
from .errors import PluginError, PluginWarning, closest_first

#: the families in teaching order (the order of the notebooks); a family not listed follows them
FAMILIES = ("basics", "sft", "dpo", "reference-free", "kto", "ppo", "grpo", "kl", "reward", "prm")
#: the options of `lossviz derive`, `plot` and `compare`: a card parameter may not take one of these
#: flags, nor a prefix of one (argparse would read ``--d`` as an abbreviation of ``--dpi``)
CLI_FLAGS = ("--help", "--format", "--defaults", "--sweep", "--no-cache", "--out", "--dpi", "--x-range", "--force", "--what")
_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_PRODUCTION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
BUILTIN = "built-in"


@dataclass
class _Loaded:
    cards: Tuple[Card, ...]
    table: Dict[str, Card]  # normalised name or alias -> card
    origin: Dict[str, str]  # card name -> BUILTIN or the plugin's description
    problems: List[PluginError] = field(default_factory=list)
    skipped: Dict[str, PluginError] = field(default_factory=dict)  # a name a skipped plugin declared -> why


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


# --- checking a card class ----------------------------------------------------------------------------
def check_card_class(cls) -> None:
    """Raise :class:`CardError` (one line) when ``cls`` is not a usable card class.

    Checks what every face relies on before a card is first used: a ``Card`` subclass that
    implements ``variables`` and ``loss``, a name fit for a command line and a file name, text
    for the listing, a production path ``"module:Class"``, and parameters whose names are
    distinct, free on the command line, and whose defaults lie in their own ranges.
    """
    if not isinstance(cls, type):
        raise CardError(f"{cls!r} is a {type(cls).__name__}, not a Card subclass")
    if not issubclass(cls, Card) or cls is Card:
        raise CardError(f"{cls.__module__}.{cls.__qualname__} is not a subclass of lossviz.cards.base.Card")
    name = cls.name
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CardError(f"name must be lower-case letters and digits joined by single hyphens (e.g. 'squared-hinge'); got {name!r}")
    for method in ("variables", "loss"):
        if getattr(cls, method) is getattr(Card, method):
            raise CardError(f"{name}: the card does not implement {method}()")
    for attribute in ("family", "title", "lesson"):
        value = getattr(cls, attribute)
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            raise CardError(f"{name}: {attribute} must be a one-line, non-empty string; got {value!r}")
    if not isinstance(cls.order, int) or isinstance(cls.order, bool):
        raise CardError(f"{name}: order must be an int (the rank inside the family, lower first); got {cls.order!r}")
    if not isinstance(cls.aliases, (tuple, list)) or not all(isinstance(a, str) and a.strip() for a in cls.aliases):
        raise CardError(f"{name}: aliases must be a tuple of non-empty strings; got {cls.aliases!r}")
    if cls.production is not None and not (isinstance(cls.production, str) and _PRODUCTION.fullmatch(cls.production)):
        raise CardError(f"{name}: production must be 'module:Class' (or None); got {cls.production!r}")
    for attribute in ("detached", "constants", "references"):
        value = getattr(cls, attribute)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise CardError(f"{name}: {attribute} must be a tuple of strings; got {value!r}")
    if not isinstance(cls.variable_latex, Mapping):
        raise CardError(f"{name}: variable_latex must be a mapping from variable to LaTeX; got {cls.variable_latex!r}")
    if not isinstance(cls.params, (tuple, list)):
        raise CardError(f"{name}: params must be a tuple of Param; got {cls.params!r}")
    seen = set()
    for prm in cls.params:
        _check_param(name, prm, seen)
    _check_figure_declaration(cls)


def _check_param(card: str, prm, seen: set) -> None:
    if not isinstance(prm, Param):
        raise CardError(f"{card}: params must hold Param objects; got {prm!r}")
    if not prm.name.isidentifier() or prm.name.startswith("_"):
        raise CardError(f"{card}: parameter name {prm.name!r} is not a Python identifier without a leading underscore")
    if prm.name in seen:
        raise CardError(f"{card}: parameter {prm.name!r} is declared twice")
    seen.add(prm.name)
    taken = [f for f in CLI_FLAGS if f.startswith(prm.flag)]
    if taken:
        raise CardError(f"{card}: parameter {prm.name!r} would be read as the command-line option {taken[0]}; rename it")
    if prm.is_case:
        if not prm.choices or prm.default not in prm.choices:
            raise CardError(f"{card}: case parameter {prm.name!r} has default {prm.default!r}, not one of its choices {prm.choices!r}")
        return
    if prm.low is not None and prm.high is not None and not prm.low <= prm.high:
        raise CardError(f"{card}: parameter {prm.name!r} has low {prm.low!r} > high {prm.high!r}")
    try:
        prm.check(prm.default)
    except CardError as exc:
        raise CardError(f"{card}: the default of parameter {prm.name!r} is invalid ({exc})") from None


def _check_figure_declaration(cls) -> None:
    """``axis``, ``figure`` and ``gallery`` hold the types of :mod:`lossviz.cards.figure` (when a card sets them)."""
    from .cards.figure import Axis, CustomFigure, LessonFigure, Shot

    if cls.axis is not None and not isinstance(cls.axis, Axis):
        raise CardError(f"{cls.name}: axis must be an Axis (lossviz.cards.figure); got {cls.axis!r}")
    if cls.figure is not None and not isinstance(cls.figure, (LessonFigure, CustomFigure)):
        raise CardError(f"{cls.name}: figure must be a LessonFigure or CustomFigure (lossviz.cards.figure); got {cls.figure!r}")
    if not isinstance(cls.gallery, (tuple, list)) or not all(isinstance(s, Shot) for s in cls.gallery):
        raise CardError(f"{cls.name}: gallery must be a tuple of Shot (lossviz.cards.figure); got {cls.gallery!r}")


# --- discovery ----------------------------------------------------------------------------------------
def builtin_classes() -> List[type]:
    """Every card class of the package ``lossviz.cards``, in teaching order (see the module docstring):
    family, then ``order``, then module name, then position in the module."""
    from . import cards as package

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for position, obj in enumerate(vars(module).values()):  # a module's dict keeps definition order
            if isinstance(obj, type) and issubclass(obj, Card) and obj.__module__ == module.__name__ and vars(obj).get("name"):
                found.append(((_family_rank(obj.family), obj.family, obj.order, info.name, position), obj))
    return [cls for _, cls in sorted(found, key=lambda pair: pair[0])]


def _family_rank(family: str) -> int:
    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def _keys(card: Card) -> List[str]:
    return list(dict.fromkeys(_normalise(k) for k in (card.name, *card.aliases)))


def _load_plugin(plugin, loaded: _Loaded) -> Card:
    """The card an entry point names, checked against the cards loaded so far.

    Raises :class:`PluginError` naming the plugin; its ``names`` are the names the plugin's
    class declares (when it could be imported), so that asking for one says why it is missing.
    """
    names = [_normalise(plugin.name)]
    try:
        obj = plugin.entry_point.load()
    except Exception as exc:  # anything a foreign import raises: the built-in entries must survive it
        raise _plugin_error(plugin, f"importing it failed: {_one_line(exc)}", names) from None
    if isinstance(obj, type):
        names += [_normalise(k) for k in (getattr(obj, "name", ""), *getattr(obj, "aliases", ())) if isinstance(k, str) and k]
    try:
        check_card_class(obj)
        card = obj()
    except Exception as exc:
        raise _plugin_error(plugin, _one_line(exc), names) from None
    for kind, spelled in [("name", card.name)] + [("alias", a) for a in card.aliases]:
        owner = loaded.table.get(_normalise(spelled))
        if owner is not None:
            where = loaded.origin[owner.name]
            whose = f"the built-in entry {owner.name}" if where == BUILTIN else f"the entry {owner.name} of {where}"
            raise _plugin_error(plugin, f"its {kind} {spelled!r} is already taken by {whose}", names)
    return card


def _plugin_error(plugin, why: str, names: List[str]) -> PluginError:
    error = PluginError(f"{plugin.describe()} skipped: {why}")
    error.names = names
    return error


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its first line, with its type unless it is lossviz's own message."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return first if isinstance(exc, CardError) and first else f"{type(exc).__name__}: {first}".rstrip(": ")


@lru_cache(maxsize=1)
def _loaded() -> _Loaded:
    builtins = []
    for cls in builtin_classes():
        check_card_class(cls)  # a broken built-in card is a bug in lossviz: fail loudly
        builtins.append(cls())
    loaded = _Loaded((), {}, {})
    for card in builtins:
        for key in _keys(card):
            if key in loaded.table:
                raise CardError(f"built-in cards {loaded.table[key].name} and {card.name} both claim the name {key!r}")
        _add(loaded, card, BUILTIN)
    from .plugins import discover

    for plugin in discover():
        try:
            card = _load_plugin(plugin, loaded)
        except PluginError as problem:
            loaded.problems.append(problem)
            for key in problem.names:
                loaded.skipped.setdefault(key, problem)
            warnings.warn(str(problem), PluginWarning, stacklevel=3)
            continue
        _add(loaded, card, plugin.describe())
    return loaded


def _add(loaded: _Loaded, card: Card, where: str) -> None:
    loaded.cards += (card,)
    for key in _keys(card):
        loaded.table[key] = card
    loaded.origin[card.name] = where


def reset() -> None:
    """Forget the discovered cards: the next call discovers them again (tests; a plugin installed meanwhile)."""
    _loaded.cache_clear()
    importlib.invalidate_caches()  # importlib.metadata then sees a distribution added since


# --- reading ------------------------------------------------------------------------------------------
def cards() -> List[Card]:
    """Every card: the built-in ones in teaching order, then the plugins'."""
    return list(_loaded().cards)


def names() -> List[str]:
    return [c.name for c in cards()]


def problems() -> List[PluginError]:
    """The plugins that were skipped, one :class:`PluginError` each (empty when all loaded)."""
    return list(_loaded().problems)


def origin(name: str) -> str:
    """``"built-in"``, or the plugin that provides the entry (``plugin 'x' (module:Class from dist 1.0)``)."""
    return _loaded().origin[get(name).name]


def get(name: str) -> Card:
    """The card for a name, an alias (underscores allowed) or a production class name."""
    if not isinstance(name, str):
        raise CardError(f"a loss name must be a string, got {type(name).__name__}")
    loaded = _loaded()
    key = _normalise(name)
    card = loaded.table.get(key)
    if card is None:
        if key in loaded.skipped:
            raise CardError(f"loss {name!r} is not available: {loaded.skipped[key]}")
        valid = ", ".join(closest_first(key, names()))
        raise CardError(f"unknown loss {name!r}; valid: {valid}")
    return card


def derive(name: str, symbolic: bool = True, **params) -> Derivation:
    """Derive one entry: ``lossviz.derive("dpo", beta=0.1)``.

    Real parameters that are not given stay symbolic (``symbolic=True``) or take their
    defaults (``symbolic=False``); case parameters always take their default.
    """
    card = get(name)
    return Derivation(card, card.resolve(params, symbolic=symbolic))


__all__ = ["FAMILIES", "CLI_FLAGS", "builtin_classes", "check_card_class", "cards", "names", "get", "derive", "problems",
           "origin", "reset", "closest_first"]
