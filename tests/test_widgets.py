"""Explorers in plain pytest: move sliders, and the line data, the displayed facts and the LaTeX follow."""

import math

import numpy as np
import pytest

import lossviz
from lossviz.cards.base import CardError, Derivation
from lossviz.plots.compare import CUTS
from lossviz.registry import get, names
from lossviz.widgets import Explorer, explore, slider_range


def card_curve(name, params, xs, case=None):
    """The card's loss along the explorer's axis, evaluated independently of the widget."""
    card = get(name)
    d = Derivation(card, card.resolve({**params, **(case or {})}))
    values = {v: (xs if e is not None and str(e) == "x" else np.full_like(xs, float(e))) for v, e in CUTS[name].items()}
    return d.evaluate(values)


@pytest.mark.parametrize("name", names())
def test_every_entry_has_an_explorer_whose_line_is_the_card(name):
    e = Explorer(name)
    assert e.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    ys = np.asarray(e.loss_line.get_ydata())
    np.testing.assert_allclose(ys, card_curve(name, e.params, e.xs, e.cases), rtol=1e-10, atol=1e-12)


def test_moving_beta_changes_line_facts_and_latex():
    e = Explorer("cdpo")
    before_line = np.asarray(e.loss_line.get_ydata()).copy()
    before_facts, before_latex, before_png = e.facts_view.value, e.latex_view.value, e.image.value
    e.sliders["beta"].value = 0.5
    after = np.asarray(e.loss_line.get_ydata())
    assert not np.allclose(after, before_line)
    np.testing.assert_allclose(after, card_curve("cdpo", {"beta": 0.5, "label_smoothing": 0.1}, e.xs), rtol=1e-10)
    assert e.facts_view.value != before_facts and e.latex_view.value != before_latex and e.image.value != before_png
    assert e.fact_values()["minimum"] == pytest.approx(math.log(9) / 0.5, rel=1e-12)
    assert "0.5" in e.latex_view.value
    marker = e.marker_lines[0][0]
    assert float(marker.get_xdata()[0]) == pytest.approx(math.log(9) / 0.5)


def test_label_smoothing_slider_moves_the_minimum():
    e = Explorer("cdpo", beta=0.2)
    for eps in (0.05, 0.2, 0.4):
        e.sliders["label_smoothing"].value = eps
        assert e.fact_values()["beta_times_minimum"] == pytest.approx(math.log((1 - eps) / eps), rel=1e-12)
        assert f"{math.log((1 - eps) / eps) / 0.2:.4g}" in e.facts_view.value


def test_case_dropdown_switches_the_arm():
    e = Explorer("kto")
    desirable = np.asarray(e.loss_line.get_ydata()).copy()
    e.dropdowns["arm"].value = "undesirable"
    undesirable = np.asarray(e.loss_line.get_ydata())
    assert desirable[0] > desirable[-1] and undesirable[0] < undesirable[-1]  # falling vs rising in Δ


def test_out_of_range_values_are_clamped_by_sliders_and_refused_by_set():
    e = Explorer("cdpo")
    e.sliders["label_smoothing"].value = 0.9  # a slider clamps to its range
    assert e.sliders["label_smoothing"].value == pytest.approx(slider_range(get("cdpo").param("label_smoothing"), 0.1)[1])
    assert e.sliders["label_smoothing"].value < 0.5
    with pytest.raises(CardError, match=r"--label-smoothing must be in \[0, 0.5\)"):
        e.set(label_smoothing=0.7)
    with pytest.raises(CardError, match="no slider 'gamma'"):
        e.set(gamma=1)
    e.set(beta=5.0)  # valid but beyond the slider window: the window grows
    assert e.sliders["beta"].value == 5.0


def test_explore_side_by_side_and_top_level_api():
    box = lossviz.explore(["dpo", "cdpo", "ipo"])
    assert [x.card.name for x in box.explorers] == ["dpo", "cdpo", "ipo"]
    assert len(box.children) == 3
    single = explore("pairwise", margin=1.0)
    assert single.params["margin"] == 1.0 and single.fact_values()["fade_point"] == pytest.approx(1 + math.log(9))
