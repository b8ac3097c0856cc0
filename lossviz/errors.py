"""lossviz's user errors, and how their messages name an argument.

A message names the argument the user wrote: ``label_smoothing`` when the mistake came
through the Python API (``lossviz.derive("cdpo", label_smoothing=0.7)``), ``--label-smoothing``
when it came from the command line. Code that raises writes ``arg("label_smoothing")``; the
command line sets the spelling for the duration of one command with :func:`cli_spelling`.
This module imports nothing heavy (the figure cache path stays free of sympy and torch).
"""

from __future__ import annotations

import contextvars
import difflib
from contextlib import contextmanager
from typing import List, Optional, Sequence

_CLI = contextvars.ContextVar("lossviz_cli_spelling", default=False)


class LossvizError(ValueError):
    """A user mistake (a bad name, parameter, value or output): the message is one line naming the argument."""


class PluginError(LossvizError):
    """A third-party card (entry-point group ``lossviz.cards``) that cannot be used: it failed to
    import, is not a ``Card`` subclass, declares invalid class attributes, or its name clashes.
    The message is one line naming the plugin; the built-in entries are unaffected."""


class PluginWarning(UserWarning):
    """Issued once per skipped plugin when the registry loads; its message is a :class:`PluginError`'s."""


def flag(name: str) -> str:
    """``label_smoothing`` -> ``--label-smoothing``."""
    return "--" + name.replace("_", "-")


def arg(name: str, cli: Optional[str] = None) -> str:
    """How a message names the argument ``name``: as written in Python, or as the command-line flag
    (``cli`` when the flag is not simply ``name`` spelled with dashes, e.g. ``path`` -> ``--out``)."""
    if _CLI.get():
        return cli or flag(name)
    return name


def in_cli() -> bool:
    """True while a command-line command runs (messages then name --flags)."""
    return _CLI.get()


@contextmanager
def cli_spelling():
    """Messages raised inside name arguments as command-line flags."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def closest_first(word: str, choices: Sequence[str]) -> List[str]:
    """``choices`` with the closest matches to ``word`` first, then the rest in order (for "valid: ..." lists)."""
    choices = list(choices)
    if not choices:  # difflib refuses n=0
        return []
    close = difflib.get_close_matches(word, choices, n=len(choices), cutoff=0.4)
    return close + [c for c in choices if c not in close]
