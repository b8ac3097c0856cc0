"""The README's tables of entries, written from the registry: ``python -m lossviz.readme_tables``.

README.md holds each generated table between a pair of markers::

    <!-- lossviz:table entries -->
    ...generated, do not edit...
    <!-- /lossviz:table entries -->

``entries`` lists every built-in entry with its family, title, production class and
parameters (default and valid range); ``facts`` lists the closed-form facts each entry's lesson
rests on, with their one-line meaning. The command rewrites only what lies between the
markers and leaves every other byte of the file as it was; ``--check`` rewrites nothing and
exits with status 1 when a table is out of date (tests/test_readme_tables.py runs it).
Plugin cards are not listed: the README documents lossviz itself.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .errors import LossvizError

TABLES = ("entries", "facts")
COMMAND = "python -m lossviz.readme_tables"
README = Path(__file__).resolve().parent.parent / "README.md"


class ReadmeError(LossvizError):
    """A README whose markers are missing, unpaired or out of order (the message names the marker)."""


def opening(table: str) -> str:
    return f"<!-- lossviz:table {table} -->"


def closing(table: str) -> str:
    return f"<!-- /lossviz:table {table} -->"


def _cell(text: object) -> str:
    """Text for a Markdown table cell: pipes escaped, one line."""
    return " ".join(str(text).split()).replace("|", r"\|")


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _builtin_cards():
    from .registry import BUILTIN, cards, origin

    return [c for c in cards() if origin(c.name) == BUILTIN]


def _parameter(prm) -> str:
    if prm.is_case:
        return f"`{prm.flag}` {prm.range_text()} (default {prm.default})"
    default = "none" if prm.default is None else f"{prm.default:g}" if isinstance(prm.default, float) else str(prm.default)
    return f"`{prm.flag}` {default} in {prm.range_text()}"


def entries_table(cards=None) -> str:
    """One row per entry: name (and aliases), family, title, production class, parameters."""
    rows = [_row(["entry", "family", "title", "production class", "parameters: default in range"]), "|---|---|---|---|---|"]
    for card in _builtin_cards() if cards is None else cards:
        name = f"`{card.name}`" + (f" ({', '.join(card.aliases)})" if card.aliases else "")
        production = f"`{card.production}`" if card.production else "-"
        params = "; ".join(_parameter(p) for p in card.params) or "-"
        rows.append(_row([name, card.family, card.title, production, params]))
    return "\n".join(rows)


def _facts_by_case(card) -> Dict[str, List[str]]:
    """fact name -> its meaning and the cases that have it (a case parameter may change the facts)."""
    from .cards.base import Derivation

    case_params = [p for p in card.params if p.is_case]
    combos = list(itertools.product(*[p.choices for p in case_params]))
    found: Dict[str, List] = {}
    for combo in combos:
        given = dict(zip((p.name for p in case_params), combo))
        derivation = Derivation(card, card.resolve(given, symbolic=True))
        for fact in derivation.facts:  # names and meanings only: no fact value is computed
            doc, cases = found.setdefault(fact.name, [fact.doc, []])
            cases.append(", ".join(f"{k}={v}" for k, v in given.items()))
    return {name: [doc, cases if len(cases) < len(combos) else []] for name, (doc, cases) in found.items()}


def facts_table(cards=None) -> str:
    """One row per fact of each entry, with its meaning (and the case it belongs to, when not every case has it)."""
    rows = [_row(["entry", "fact", "meaning"]), "|---|---|---|"]
    for card in _builtin_cards() if cards is None else cards:
        for name, (doc, cases) in _facts_by_case(card).items():
            where = f" (only {'; '.join(cases)})" if cases else ""
            rows.append(_row([f"`{card.name}`", f"`{name}`", doc + where]))
    return "\n".join(rows)


RENDER: Dict[str, Callable[[], str]] = {"entries": entries_table, "facts": facts_table}


def _block(text: str, table: str) -> Optional[tuple]:
    """(start, end) of the text between the table's markers, or None when the README has neither marker."""
    starts = [m.end() for m in re.finditer(re.escape(opening(table)), text)]
    ends = [m.start() for m in re.finditer(re.escape(closing(table)), text)]
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1:
        raise ReadmeError(f"README.md must hold {opening(table)} and {closing(table)} once each; "
                          f"found {len(starts)} and {len(ends)}")
    if not starts[0] <= ends[0]:
        raise ReadmeError(f"README.md has {closing(table)} before {opening(table)}")
    return starts[0], ends[0]


def markers_present(text: str) -> List[str]:
    """The tables whose markers the text holds (raises :class:`ReadmeError` on unpaired markers)."""
    return [t for t in TABLES if _block(text, t) is not None]


def update(text: str, tables: Sequence[str] = TABLES) -> str:
    """``text`` with each table's block rewritten from the registry; everything outside the blocks unchanged."""
    for table in tables:
        span = _block(text, table)
        if span is None:
            raise ReadmeError(f"README.md has no {opening(table)} ... {closing(table)} block")
        start, end = span
        text = text[:start] + "\n" + RENDER[table]() + "\n" + text[end:]
    return text


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description="Rewrite the generated tables of README.md from the registry.")
    parser.add_argument("readme", nargs="?", default=str(README), help="the file to update (default: the repository's README.md)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table is out of date")
    args = parser.parse_args(argv)
    path = Path(args.readme)
    try:
        text = path.read_text(encoding="utf-8")
        tables = markers_present(text)
        if not tables:
            raise ReadmeError(f"{path} has none of the markers {', '.join(opening(t) for t in TABLES)}")
        new = update(text, tables)
    except (OSError, ReadmeError) as exc:
        print(f"{COMMAND}: error: {exc}", file=sys.stderr)
        return 2
    if new == text:
        print(f"{path}: tables {', '.join(tables)} are current")
        return 0
    if args.check:
        print(f"{path}: the generated tables are out of date; run `{COMMAND}`", file=sys.stderr)
        return 1
    _write_atomically(path, new)
    print(f"{path}: rewrote tables {', '.join(tables)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
