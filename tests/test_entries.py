"""Tests every entry gets without writing one, parametrised over the registry (a plugin card's too):

- the command line refuses each parameter's bad values, an unknown flag and a missing value
  with one line naming the flag, for `derive` and `plot`;
- a lesson figure the card declares as data (a ``LessonFigure``) plots exactly the card's loss
  and its derivative along the declared axis, and puts each marked fact where sympy says.

The other per-entry tests live with their subject and read the registry the same way:
derivation vs autograd and the mpmath oracle (test_cards.py), production verification
(test_verify.py), text collisions of every figure (test_figure_layout.py), the explorers
(test_widgets.py, test_browser.py), `derive` in every format (test_cli_derive.py).
"""

import numpy as np
import pytest
import sympy as sp

from lossviz.cards.base import Derivation
from lossviz.cards.figure import LessonFigure
from lossviz.cli import main
from lossviz.plots.lessons import curve_gid, mark_gid
from lossviz.registry import cards, names

CARDS = cards()


def refused(capsys, *argv):
    """Run the CLI, expect exit status 2 and exactly one line on stderr; return that line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2 and out == "", (argv, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lossviz: error: "), (argv, err)
    return lines[0]


def _out_of_range(prm):
    """A number just outside the parameter's range, or None when the range is the whole line."""
    if prm.low is not None:
        return prm.low if prm.low_open else prm.low - 1.0
    if prm.high is not None:
        return prm.high if prm.high_open else prm.high + 1.0
    return None


def _bad_values(card):
    """(parameter, bad value, what the one line must say) for each parameter of the card."""
    out = []
    for prm in card.params:
        if prm.is_case:
            out.append((prm, "no-such-case", f"{prm.flag} must be one of {', '.join(prm.choices)}"))
            continue
        out.append((prm, "abc", f"{prm.flag} must be a number"))
        out.append((prm, "nan", f"{prm.flag} must be finite"))
        bad = _out_of_range(prm)
        if bad is not None:
            out.append((prm, f"{bad:g}", f"{prm.flag} must be in {prm.range_text()}"))
    return out


@pytest.mark.parametrize("command", ["derive", "plot"])
@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_every_bad_parameter_value_is_one_line_naming_its_flag(capsys, card, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a plot that wrongly succeeds writes here, not into the repository
    for prm, value, needle in _bad_values(card):
        line = refused(capsys, command, card.name, prm.flag, value)
        assert needle in line, (prm.name, value, line)
        line = refused(capsys, command, card.name, prm.flag)
        assert f"{prm.flag} needs a value" in line


@pytest.mark.parametrize("card", CARDS, ids=lambda c: c.name)
def test_an_unknown_flag_lists_the_entry_flags(capsys, card, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, "derive", card.name, "--no-such-parameter", "1")
    if card.params:
        assert f"{card.name} has no parameter --no-such-parameter; valid: " in line
        assert all(prm.flag in line for prm in card.params)
    else:
        assert f"{card.name} takes no parameters" in line
    line = refused(capsys, "plot", card.name, "--sweep", "no_such_parameter=1,2")
    assert f"{card.name} has no parameter 'no_such_parameter'" in line


# --- lesson figures declared as data ------------------------------------------------------------------
DECLARED = [c for c in CARDS if isinstance(c.figure, LessonFigure)]


def _line(fig, gid):
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid() == gid:
                return tuple(np.asarray(v, dtype=float) for v in line.get_data())
    raise AssertionError(f"no line {gid!r}")


def _expected_along_axis(card, d: Derivation, xs):
    """The loss along the card's axis and its derivative d/dx = Σ_v ∂ℓ/∂v · dv/dx, from the card's own gradient."""
    axis = card.figure.axis or card.axis
    cut = axis.values(d.params)
    columns = {v: sp.lambdify(axis.x, e, "numpy")(xs) * np.ones_like(xs) for v, e in cut.items()}
    slopes = {v: sp.lambdify(axis.x, sp.diff(e, axis.x), "numpy")(xs) * np.ones_like(xs) for v, e in cut.items()}
    loss = d.evaluate(columns)
    grad = sum(d.evaluate(columns, v) * slopes[v] for v in d.variables)
    return loss, grad


@pytest.mark.parametrize("card", DECLARED, ids=lambda c: c.name)
def test_declared_lesson_figure_plots_the_card(card):
    from lossviz.plots import figure

    fig = figure(card.name)
    d = Derivation(card, card.resolve({}))
    panels = [p for p in card.figure.panels if not p.cut]  # a panel with its own cut shows a second case
    xs, ys = _line(fig, curve_gid(card, panels[0], d.params))
    loss, grad = _expected_along_axis(card, d, xs)
    want = {"loss": loss, "grad": grad, "push": -grad}
    for panel in panels:
        x, y = _line(fig, curve_gid(card, panel, d.params))
        np.testing.assert_allclose(y, want[panel.kind], rtol=1e-9, atol=1e-12, err_msg=f"{card.name} {panel.kind} panel")
    for mark in card.figure.marks:
        if mark.kind in ("point", "edge") and mark.at is None and not mark.given and mark.drawn and mark.when is None:
            value = d.fact(mark.fact).value
            if value.is_finite:
                x, _ = _line(fig, mark_gid(mark))
                assert x[0] == pytest.approx(float(value), rel=1e-12, abs=1e-12), (card.name, mark.fact)


def test_every_entry_is_covered_here():
    assert [c.name for c in CARDS] == names()
