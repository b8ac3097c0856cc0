"""README.md's tables of entries and facts are generated from the registry and must be current."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lossviz import readme_tables as rt
from lossviz.cards.base import Derivation
from lossviz.registry import cards

ROOT = Path(__file__).resolve().parent.parent
MARKED = f"""# title

intro stays as it is | with a pipe

{rt.opening("entries")}
| stale | table |
{rt.closing("entries")}

between

{rt.opening("facts")}
{rt.closing("facts")}
trailing text without a newline"""


def test_readme_tables_are_current():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    present = rt.markers_present(text)
    if not present:
        pytest.skip(f"README.md has no generated tables yet: put {rt.opening('entries')} ... {rt.closing('entries')} "
                    f"and {rt.opening('facts')} ... {rt.closing('facts')} where they belong")
    assert rt.update(text, present) == text, f"README.md's generated tables are out of date: run `{rt.COMMAND}`"


def test_update_rewrites_only_the_blocks():
    new = rt.update(MARKED)
    assert rt.update(new) == new  # idempotent
    before_entries, rest = new.split(rt.opening("entries"))
    assert before_entries == MARKED.split(rt.opening("entries"))[0]
    assert new.split(rt.closing("facts"))[1] == "\ntrailing text without a newline"
    assert "| stale | table |" not in new and "\nbetween\n" in new


def _rows(table: str):
    lines = table.splitlines()
    assert lines[1].startswith("|---")
    return lines[2:]


def test_entries_table_has_every_entry_with_its_parameters():
    rows = _rows(rt.entries_table())
    assert len(rows) == len(cards())
    for card, row in zip(cards(), rows):
        assert row.startswith(f"| `{card.name}`") and f"| {card.family} |" in row
        assert (f"`{card.production}`" if card.production else "| - |") in row
        for prm in card.params:
            assert f"`{prm.flag}`" in row
    dpo = next(r for r in rows if r.startswith("| `dpo`"))
    assert "`--beta` 0.1 in (0, 100]" in dpo
    kto = next(r for r in rows if r.startswith("| `kto`"))
    assert r"`--arm` desirable\|undesirable (default desirable)" in kto  # a pipe inside a cell is escaped
    assert all(len(re.split(r"(?<!\\)\|", row)) == 7 for row in rows)  # five cells in every row (outer pipes split off two empties)


def test_facts_table_has_every_fact_with_its_meaning():
    rows = _rows(rt.facts_table())
    for card in cards():
        d = Derivation(card, card.resolve({}, symbolic=True))
        for fact in d.facts:
            assert any(r.startswith(f"| `{card.name}` | `{fact.name}` | ") for r in rows), (card.name, fact.name)
    optimum = next(r for r in rows if r.startswith("| `prm` | `optimum`"))
    assert optimum.endswith("(only labels=soft) |")  # hard labels have no finite optimum
    fade = next(r for r in rows if r.startswith("| `pairwise` | `fade_point`"))
    assert r"\|∂ℓ/∂r_c\|" in fade


@pytest.mark.parametrize("text,needle", [
    (MARKED.replace(rt.closing("facts"), ""), "must hold <!-- lossviz:table facts --> and <!-- /lossviz:table facts --> once each; found 1 and 0"),
    (MARKED + "\n" + rt.opening("entries"), "found 2 and 1"),
    (MARKED.replace(rt.opening("facts"), "X").replace(rt.closing("facts"), rt.closing("facts") + "\n" + rt.opening("facts")),
     "has <!-- /lossviz:table facts --> before <!-- lossviz:table facts -->"),
])
def test_broken_markers_are_one_line_errors(text, needle):
    with pytest.raises(rt.ReadmeError) as info:
        rt.update(text)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_command_checks_then_rewrites_a_copy(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text(MARKED, encoding="utf-8")
    command = [sys.executable, "-m", "lossviz.readme_tables"]
    check = subprocess.run(command + [str(copy), "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and f"run `{rt.COMMAND}`" in check.stderr
    assert copy.read_text(encoding="utf-8") == MARKED  # --check changes nothing
    write = subprocess.run(command + [str(copy)], capture_output=True, text=True, timeout=120)
    assert write.returncode == 0 and "rewrote tables entries, facts" in write.stdout
    assert copy.read_text(encoding="utf-8") == rt.update(MARKED)
    again = subprocess.run(command + [str(copy), "--check"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "are current" in again.stdout
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    refused = subprocess.run(command + [str(bare)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "has none of the markers" in refused.stderr
