"""Figures: the plotted data equal the card's functions, lesson points sit at the closed forms,
output is deterministic and atomic, and bad requests fail with one line."""

import math
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from lossviz.cards.base import Derivation
from lossviz.cli import main
from lossviz.plots import compare_figure, figure
from lossviz.plots.gallery import README_MARK, gallery, items
from lossviz.registry import get, names


def by_gid(fig, gid):
    for ax in fig.axes:
        for artist in ax.get_children():
            if getattr(artist, "get_gid", lambda: None)() == gid:
                return artist
    raise AssertionError(f"no artist with gid {gid!r}; have {sorted({a.get_gid() for ax in fig.axes for a in ax.get_children() if a.get_gid()})}")


def span(artist):
    """(lo, hi) on the x axis of an axvspan (a Rectangle in matplotlib >= 3.9, a Polygon before)."""
    if hasattr(artist, "get_width"):
        return float(artist.get_x()), float(artist.get_x() + artist.get_width())
    corners = np.asarray(artist.get_xy())
    return float(corners[:, 0].min()), float(corners[:, 0].max())


def xy(line):
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def card_values(name, case=None):
    card = get(name)
    return Derivation(card, card.resolve(case or {}))


# entry -> (loss gid, grad gid, case, values at axis x, variable of the gradient, chain factor dx-> d var)
CUTS = {
    "basics": ("loss:-log sigmoid", "grad:-log sigmoid", {}, lambda x: {"x": x}, "x", None),
    "gptlm": ("loss:label=0", "grad:label=0", {"label": "0"}, lambda x: {"logits_0": x, "logits_1": 1 + 0 * x, "logits_2": -1 + 0 * x}, "logits_0", None),
    "kd": ("loss:cross-entropy", "grad:cross-entropy", {}, lambda x: {"logits_0": x, "logits_1": 0 * x, "logits_2": 0 * x,
                                                                       "teacher_logits_0": 1 + 0 * x, "teacher_logits_1": 0 * x, "teacher_logits_2": -1 + 0 * x}, "logits_0", None),
    "dpo": ("loss:loss", "grad:loss", {}, lambda x: {"policy_chosen_logps": x, "policy_rejected_logps": 0 * x, "reference_chosen_logps": 0 * x, "reference_rejected_logps": 0 * x}, "policy_chosen_logps", None),
    "kto": ("loss:desirable", "grad:desirable", {"arm": "desirable"}, lambda x: {"policy_chosen_logps": x, "reference_chosen_logps": 0 * x, "policy_KL_logps": 2 + 0 * x, "reference_KL_logps": 0 * x}, "policy_chosen_logps", None),
    "ppo-policy": ("loss:A_positive", "grad:A_positive", {}, lambda r: {"log_probs": np.log(r), "old_log_probs": 0 * r, "advantages": 1 + 0 * r}, "log_probs", lambda r: 1 / r),
    "ppo-value": ("loss:max", "grad:max", {}, lambda v: {"values": v, "old_values": 0 * v, "returns": 1 + 0 * v}, "values", None),
    "pairwise": ("loss:loss", "grad:loss", {}, lambda x: {"chosen_reward": x, "reject_reward": 0 * x}, "chosen_reward", None),
    "logexp": ("loss:logexp", "grad:logexp", {}, lambda x: {"chosen_reward": x, "reject_reward": 0 * x}, "chosen_reward", None),
    "prm": ("loss:soft p = 0.8", "grad:soft p = 0.8", {"labels": "soft"}, lambda x: {"logits_0": x, "logits_1": 0 * x}, "logits_0", None),
}
CUTS["cdpo"] = CUTS["ipo"] = CUTS["dpo"]


def test_every_entry_has_a_figure_and_a_data_test():
    """Hand-written cuts for the seed's entries and every custom figure; the generic lesson figures of the
    newer entries are checked against their cards by tests/test_entries.py."""
    from lossviz.cards.figure import CustomFigure
    from lossviz.registry import get

    custom = {n for n in names() if isinstance(get(n).figure, CustomFigure)}
    assert custom <= set(CUTS) | {"vanilla-kto", "cispo"}
    assert set(CUTS) | {"vanilla-kto"} <= set(names())


def test_cispo_figure_is_the_clipped_detached_weight():
    """∂ℓ/∂log π = -min(r, 1+ε_h)·A for CISPO (never 0), and PPO's -r·A inside its trust region, 0 outside."""
    fig = figure("cispo", clip_eps_high=1.0)
    for sign in (1, -1):
        tag = "+" if sign > 0 else "-"
        r, g = xy(by_gid(fig, f"grad:cispo:A{tag}"))
        np.testing.assert_allclose(g, -np.minimum(r, 2.0) * sign, rtol=1e-12)
        assert np.all(np.abs(g) > 0)
        r, g = xy(by_gid(fig, f"grad:ppo:A{tag}"))
        clipped = r > 1.2 if sign > 0 else r < 0.8
        np.testing.assert_allclose(g, np.where(clipped, 0.0, -r * sign), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(CUTS))
def test_plotted_curves_equal_the_card_functions(name):
    loss_gid, grad_gid, case, values, var, chain = CUTS[name]
    fig = figure(name, **{k: v for k, v in case.items() if k != "labels" or name == "prm"})
    d = card_values(name, case)
    x, y = xy(by_gid(fig, loss_gid))
    np.testing.assert_allclose(y, d.evaluate(values(x)), rtol=1e-12, atol=1e-12)
    x, g = xy(by_gid(fig, grad_gid))
    expected = d.evaluate(values(x), var) * (1 if chain is None else chain(x))
    np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-12)


def test_vanilla_kto_surface_equals_the_card():
    fig = figure("vanilla-kto", beta=0.2)
    mesh = by_gid(fig, "surface:vanilla-kto")
    coords = mesh.get_coordinates()  # (rows+1, cols+1, 2) cell corners for shading="auto" centres
    values = np.asarray(mesh.get_array()).reshape(coords.shape[0] - 1, coords.shape[1] - 1) if mesh.get_array().ndim == 1 else np.asarray(mesh.get_array())
    d = card_values("vanilla-kto", {"beta": 0.2})
    grid = np.linspace(-40, 40, 161)
    gc, gr = np.meshgrid(grid, grid)
    np.testing.assert_allclose(values, d.function("loss")(gc, gr, 0 * gc, 0 * gc), rtol=1e-12)


def _marker_x(fig, gid):
    return float(np.asarray(by_gid(fig, gid).get_xdata())[0])


def test_cdpo_minimum_markers_at_log_ratio_over_beta():
    fig = figure("cdpo", sweep=("label_smoothing", [0.05, 0.1, 0.3]), beta=0.2)
    for i, eps in enumerate([0.05, 0.1, 0.3]):
        assert _marker_x(fig, f"marker:minimum:{i}") == pytest.approx(math.log((1 - eps) / eps) / 0.2, rel=1e-12)


def test_cdpo_without_smoothing_has_no_minimum_marker():
    fig = figure("cdpo", label_smoothing=0.0)
    with pytest.raises(AssertionError):
        by_gid(fig, "marker:minimum:0")


def test_ipo_target_markers():
    fig = figure("ipo", sweep=("beta", [0.1, 0.5, 1.0]))
    for i, beta in enumerate([0.1, 0.5, 1.0]):
        assert _marker_x(fig, f"marker:target:{i}") == pytest.approx(1 / (2 * beta), rel=1e-12)


def test_ipo_sweep_targets_stay_apart():
    """Each swept β's target is its own marker: markers that do not touch (centres 1.5 widths apart) in the gallery and the common sweep."""
    from lossviz.plots.gallery import build

    gallery_ipo = next(i for i in items() if i.stem == "ipo")
    for fig, n in ((build(gallery_ipo), len(gallery_ipo.sweep[1])), (figure("ipo", sweep=("beta", [0.1, 0.5, 1.0])), 3)):
        lines = [by_gid(fig, f"marker:target:{i}") for i in range(n)]
        px = sorted(float(l.get_transform().transform((l.get_xdata()[0], l.get_ydata()[0]))[0]) for l in lines)
        width = lines[0].get_markersize() * fig.dpi / 72
        assert min(b - a for a, b in zip(px, px[1:])) > 1.5 * width, px


def test_prm_soft_optimum_marker():
    fig = figure("prm", p=0.7)
    assert _marker_x(fig, "marker:optimum:0") == pytest.approx(math.log(0.7 / 0.3), rel=1e-12)


def test_pairwise_fade_points_shift_with_the_margin():
    fig = figure("pairwise", sweep=("margin", [0.0, 1.0, 2.0]))
    for i, m in enumerate([0.0, 1.0, 2.0]):
        line = by_gid(fig, f"marker:fade_point:{i}")
        assert float(line.get_xdata()[0]) == pytest.approx(m + math.log(9), rel=1e-12)
        assert float(line.get_ydata()[0]) == pytest.approx(-0.1, rel=1e-9)  # the gradient there is -1/10


def test_kto_reference_point_and_bell_peak():
    fig = figure("kto", beta=0.1, desirable_weight=1.5)
    assert float(by_gid(fig, "marker:reference_point").get_xdata()[0]) == 2.0
    peak = by_gid(fig, "marker:gradient_peak:desirable")
    assert float(peak.get_xdata()[0]) == pytest.approx(2.0) and float(peak.get_ydata()[0]) == pytest.approx(-1.5 * 0.1 / 4)


def test_ppo_gradient_is_zero_exactly_in_the_shaded_clip_region():
    fig = figure("ppo-policy", clip_eps=0.2)
    for label, inside in (("positive", lambda r: r > 1.2), ("negative", lambda r: r < 0.8)):
        r, g = xy(by_gid(fig, f"grad:A_{label}"))
        assert np.all(g[inside(r)] == 0)
        assert np.all(np.abs(g[~inside(r)]) == pytest.approx(1.0))  # -A inside the trust region
        lo, hi = span(by_gid(fig, f"zone:zero_gradient_ratios_A_{label}"))
        assert (lo, hi) == ((pytest.approx(1.2), pytest.approx(r[-1])) if label == "positive" else (pytest.approx(r[0]), pytest.approx(0.8)))


def test_ppo_dual_clip_adds_a_second_zero_region():
    fig = figure("ppo-policy", clip_eps=0.2, dual_clip=3.0)
    r, g = xy(by_gid(fig, "grad:A_negative"))
    assert np.all(g[r > 3.0] == 0) and np.all(g[(r > 0.8) & (r < 3.0)] == pytest.approx(1.0))


def test_value_flat_zone_of_the_max_and_min_comparison():
    fig = figure("ppo-value", clip_eps=0.2)
    assert span(by_gid(fig, "zone:flat_zone_above")) == (pytest.approx(0.2), pytest.approx(1.8))  # (v_old+ε, 2R-v_old-ε)
    v, g = xy(by_gid(fig, "grad:max"))
    assert np.all(g[(v > 0.2 + 1e-9) & (v < 1.8 - 1e-9)] == 0)
    _, g_min = xy(by_gid(fig, "grad:min"))
    assert np.any(np.abs(g_min[(v > 0.3) & (v < 0.9)]) > 0.1)  # the min would keep pulling there


def test_dpo_limit_lines_at_minus_beta():
    fig = figure("dpo", sweep=("beta", [0.1, 0.5]))
    for i, beta in enumerate([0.1, 0.5]):
        assert float(by_gid(fig, f"limit:weight_wrong_order:{i}").get_ydata()[0]) == pytest.approx(-beta)


def test_basics_limits():
    fig = figure("basics")
    assert float(by_gid(fig, "limit:gradient_limit_neg_inf").get_ydata()[0]) == -1.0
    assert float(by_gid(fig, "limit:gradient_limit_pos_inf").get_ydata()[0]) == 0.0


def test_logexp_overflow_figure_shows_naive_inf_and_stable_finite():
    from lossviz.plots import request
    from lossviz.plots.custom import logexp_overflow

    fig = logexp_overflow(request("logexp"))
    x, naive = xy(by_gid(fig, "loss:naive"))
    _, stable = xy(by_gid(fig, "loss:stable"))
    assert np.all(np.isfinite(stable))
    overflow = -math.log(np.finfo(np.float32).max)
    assert np.all(np.isnan(naive[x < overflow - 0.5])) and np.all(np.isfinite(naive[x > overflow + 0.5]))
    # equal to float32 rounding (the naive form also loses relative precision where 1 + e^{-x} rounds to 1)
    np.testing.assert_allclose(naive[x > 0], stable[x > 0], rtol=0, atol=2e-7)


def test_logexp_and_pairwise_draw_the_same_picture():
    """The naive log-exp form and the stable pairwise form are one function: identical pixels (compared in memory)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lossviz.plots.cut import along
    from lossviz.cards.reward import GAP

    xs = np.linspace(-6, 8, 400)
    pixels = []
    for name in ("logexp", "pairwise"):
        fig = Figure(figsize=(3, 2), dpi=100)
        d = card_values(name)
        fig.subplots().plot(xs, along(d, GAP, {"chosen_reward": GAP, "reject_reward": 0}).loss(xs))
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        pixels.append(np.asarray(canvas.buffer_rgba()).copy())
    assert np.array_equal(pixels[0], pixels[1])


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_compare_puts_the_preference_losses_on_the_reward_margin():
    """dpo at βh, pairwise at r_c - r_r, kto at β(Δ - z): dpo and pairwise are one curve; IPO gets its own linear panel."""
    fig = compare_figure(["dpo", "cdpo", "ipo", "kto", "pairwise"], "grad", beta=0.2)
    u, dpo = xy(by_gid(fig, "grad:dpo"))
    np.testing.assert_allclose(dpo, _sigmoid(-u), rtol=1e-12)  # -∂(-log σ(u))/∂u with u = βh
    np.testing.assert_allclose(xy(by_gid(fig, "grad:pairwise"))[1], dpo, rtol=1e-12)
    np.testing.assert_allclose(xy(by_gid(fig, "grad:kto"))[1], _sigmoid(u) * _sigmoid(-u), rtol=1e-10)  # ℓ = σ(-u) at z = 0
    eps = 0.1  # cDPO: -∂ℓ/∂u = (1-ε)σ(-u) - εσ(u)
    np.testing.assert_allclose(xy(by_gid(fig, "grad:cdpo"))[1], (1 - eps) * _sigmoid(-u) - eps * _sigmoid(u), rtol=1e-10, atol=1e-14)
    u_ipo, ipo = xy(by_gid(fig, "grad:ipo"))  # ℓ = (u/β - 1/(2β))², so -∂ℓ/∂u = -2(u - 1/2)/β²
    np.testing.assert_allclose(ipo, -2 * (u_ipo - 0.5) / 0.2 ** 2, rtol=1e-10)
    ipo_axes = by_gid(fig, "grad:ipo").axes
    assert by_gid(fig, "grad:dpo").axes is not ipo_axes and by_gid(fig, "grad:pairwise").axes is by_gid(fig, "grad:dpo").axes
    assert all(ax.get_yscale() == "linear" for ax in fig.axes)
    assert any("the dpo curve" in t.get_text() for leg in fig.legends for t in leg.get_texts())


def test_compare_names_only_what_it_shows_in_u():
    """Title and legends read the u axis for the entries drawn; a push plot does not quote a loss; IPO is drawn around its target."""
    fig = compare_figure(["pairwise", "logexp"], "grad")
    title = fig._suptitle.get_text()
    assert "r_c - r_r" in title and "beta" not in title and "kto" not in title.lower() and "dpo" not in title.lower()
    fig = compare_figure(["dpo", "cdpo", "ipo", "kto", "pairwise"], "grad", beta=0.2)
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()] + \
             [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend and all("$u$ = " in t and "x =" not in t for t in legend)
    assert not any("log" in t for t in legend)  # the push, not the loss, is drawn
    u_ipo = xy(by_gid(fig, "grad:ipo"))[0]  # IPO's target: h* = 1/(2β), so u* = βh* = 1/2
    target = xy(by_gid(fig, "marker:ipo_target"))
    assert target[0][0] == pytest.approx(0.5, abs=1e-12) and target[1][0] == 0.0
    assert u_ipo.min() == pytest.approx(0.5 - 3.0) and u_ipo.max() == pytest.approx(0.5 + 3.0)
    fig = compare_figure(["dpo", "pairwise"], "loss")
    assert any(r"\log\sigma" in t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())


def test_compare_losses_coincide_and_other_axes_get_their_own_panel():
    fig = compare_figure(["pairwise", "logexp", "ppo-value"], "loss")
    np.testing.assert_allclose(xy(by_gid(fig, "loss:pairwise"))[1], xy(by_gid(fig, "loss:logexp"))[1], rtol=1e-12)
    v, value = xy(by_gid(fig, "loss:ppo-value"))
    assert by_gid(fig, "loss:ppo-value").axes is not by_gid(fig, "loss:pairwise").axes
    np.testing.assert_allclose(value, 0.5 * v ** 2, rtol=1e-12)  # v_old = R = 0: the clip never binds on v - R


def test_compare_refuses_a_repeated_entry():
    from lossviz.cards.base import CardError

    with pytest.raises(CardError, match="named twice"):
        compare_figure(["dpo", "dpo"])


# --- case parameters change the plotted data, as the math says ------------------------------


def _lse(*zs):
    return np.log(sum(np.exp(z) for z in zs))


def test_gptlm_label_moves_the_target():
    (x, loss0), (_, grad0) = xy(by_gid(figure("gptlm"), "loss:label=0")), xy(by_gid(figure("gptlm"), "grad:label=0"))
    fig = figure("gptlm", label="2")
    _, loss2 = xy(by_gid(fig, "loss:label=2"))
    _, grad2 = xy(by_gid(fig, "grad:label=2"))
    p0 = np.exp(x) / (np.exp(x) + np.exp(1) + np.exp(-1))  # z = (z_0, 1, -1)
    np.testing.assert_allclose(loss0, _lse(x, 1, -1) - x, rtol=1e-12)
    np.testing.assert_allclose(loss2, _lse(x, 1, -1) + 1, rtol=1e-12)  # - z_2 = +1
    np.testing.assert_allclose(grad0, p0 - 1, atol=1e-12)
    np.testing.assert_allclose(grad2, p0, atol=1e-12)  # z_0 is not the target
    _, loss1 = xy(by_gid(figure("gptlm", label="1"), "loss:label=1"))
    np.testing.assert_allclose(loss2 - loss1, 2.0, rtol=1e-12)  # z_1 - z_2


def test_kto_arm_picks_the_plotted_loss():
    beta, z = 0.1, 2.0
    fig = figure("kto", arm="undesirable", undesirable_weight=0.5)
    d, loss = xy(by_gid(fig, "loss:undesirable"))
    _, grad = xy(by_gid(fig, "grad:undesirable"))
    np.testing.assert_allclose(loss, 0.5 * _sigmoid(-beta * (z - d)), rtol=1e-12)  # w_U (1 - σ(β(z - Δ)))
    np.testing.assert_allclose(grad, 0.5 * beta * _sigmoid(beta * (d - z)) * _sigmoid(-beta * (d - z)), rtol=1e-10)
    with pytest.raises(AssertionError):
        by_gid(fig, "loss:desirable")
    fig = figure("kto", sweep=("arm", ["desirable", "undesirable"]))
    d, desirable = xy(by_gid(fig, "loss:arm=desirable"))
    np.testing.assert_allclose(desirable, _sigmoid(-beta * (d - z)), rtol=1e-12)
    np.testing.assert_allclose(xy(by_gid(fig, "loss:arm=undesirable"))[1], 1 - desirable, rtol=1e-10)


def test_prm_hard_labels_draw_the_hard_loss_without_an_optimum():
    fig = figure("prm", labels="hard")
    d, loss = xy(by_gid(fig, "loss:hard '+' (p = 1)"))
    np.testing.assert_allclose(loss, np.log1p(np.exp(-d)), rtol=1e-12)  # -log σ(d)
    assert by_gid(fig, "loss:hard '+' (p = 1)").get_color() != "0.5"  # the requested case, in colour
    with pytest.raises(AssertionError):
        by_gid(fig, "marker:optimum:0")
    d, minus = xy(by_gid(figure("prm", labels="hard", p=0.0), "loss:hard '-' (p = 0)"))
    np.testing.assert_allclose(minus, np.log1p(np.exp(d)), rtol=1e-12)  # -log σ(-d)
    _, soft = xy(by_gid(figure("prm"), "loss:soft p = 0.8"))
    np.testing.assert_allclose(soft, 0.8 * np.log1p(np.exp(-d)) + 0.2 * np.log1p(np.exp(d)), rtol=1e-12)


def test_a_sweep_of_more_than_seven_values_is_refused():
    from lossviz.cards.base import CardError

    with pytest.raises(CardError, match="at most 7"):
        figure("dpo", sweep=("beta", [0.1 * k for k in range(1, 9)]))


# --- figure texts say what the math says --------------------------------------------------------


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def test_dpo_limit_label_names_the_gradient_at_minus_beta():
    fig = figure("dpo", beta=0.3)
    limit = float(by_gid(fig, "limit:weight_wrong_order:0").get_ydata()[0])
    assert limit == pytest.approx(-0.3)
    assert any(t.startswith("→ -β = -0.3") for t in _texts(fig))  # the gradient's limit, at its own height
    assert float(by_gid(fig, "marker:weight_at_zero:0").get_ydata()[0]) == pytest.approx(-0.15, rel=1e-12)  # -β/2
    assert "gradient" in fig.axes[1].get_ylabel()
    assert not any("push → β" in t for t in _texts(fig))


def test_overflow_figure_states_the_sign_of_the_gap():
    from lossviz.plots import request
    from lossviz.plots.custom import logexp_overflow

    fig = logexp_overflow(request("logexp"))
    threshold = -math.log(float(np.finfo(np.float32).max))
    assert f"Δ < {threshold:.1f}" in fig.get_suptitle() and threshold == pytest.approx(-88.72, abs=0.01)
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(np.float32(-(threshold - 0.01)))) and np.isfinite(np.exp(np.float32(-(threshold + 0.01))))


def test_cdpo_at_one_half_still_depends_on_the_margin():
    """The gallery says: at ε = 1/2 the cDPO loss is log 2cosh(βh/2), minimal at h = 0 (not flat)."""
    import sympy as sp

    beta, h = sp.Symbol("beta", positive=True), sp.Symbol("h", real=True)
    card = get("cdpo")
    d = Derivation(card, card.resolve({"beta": 0.5}))
    loss = d.loss.subs(d.symbols["policy_chosen_logps"], h).subs({d.symbols[v]: 0 for v in d.variables if v != "policy_chosen_logps"})
    half = card.loss({"beta": beta, "label_smoothing": sp.Rational(1, 2)}).subs({d.symbols["policy_chosen_logps"]: h}).subs(
        {d.symbols[v]: 0 for v in d.variables if v != "policy_chosen_logps"})
    from lossviz.symbolic import elementary

    for b, x in ((0.5, 3.0), (0.1, -7.0), (2.0, 0.25)):
        value = float(elementary(half).subs({beta: b, h: x}))
        assert value == pytest.approx(math.log(2 * math.cosh(b * x / 2)), rel=1e-12)
    assert loss is not None


def test_vanilla_kto_is_dpos_sigmoid_where_both_log_ratios_are_positive():
    beta = 0.2
    fig = figure("vanilla-kto", beta=beta)
    mesh = by_gid(fig, "surface:vanilla-kto")
    grid = np.linspace(-40, 40, 161)
    gc, gr = np.meshgrid(grid, grid)
    values = np.asarray(mesh.get_array()).reshape(gc.shape)
    both_positive = (gc > 0) & (gr > 0)
    np.testing.assert_allclose(values[both_positive], _sigmoid(-beta * (gc - gr))[both_positive], rtol=1e-12)
    both_negative = (gc < 0) & (gr < 0)
    np.testing.assert_allclose(values[both_negative], 0.5 * (_sigmoid(-beta * gc) + _sigmoid(beta * gr))[both_negative], rtol=1e-12)
    assert not any("no interaction" in t for t in _texts(fig) + [fig.get_suptitle()])


def test_dual_clip_text_describes_a_negative_advantage():
    title = figure("ppo-policy", dual_clip=3.0).get_suptitle().replace("\n", " ").replace("\u00a0", " ")
    assert "for A < 0 and r > c" in title and "capped at c|A|" in title
    r, g = xy(by_gid(figure("ppo-policy", dual_clip=3.0), "grad:A_negative"))
    _, loss = xy(by_gid(figure("ppo-policy", dual_clip=3.0), "loss:A_negative"))
    assert np.all(loss[r > 3.0] == pytest.approx(3.0)) and np.all(g[r > 3.0] == 0)  # c|A| with A = -1


# --- command line ---------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_plot_writes_a_valid_file_of_the_requested_size(tmp_path, capsys, fmt):
    out = tmp_path / f"dpo.{fmt}"
    code, stdout, _ = run(capsys, "plot", "dpo", "--beta", "0.1", "--out", str(out), "--dpi", "100")
    assert code == 0 and stdout.strip() == str(out)
    data = out.read_bytes()
    if fmt == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (720, 300)  # 7.2 in x 3 in at 100 dpi
    elif fmt == "svg":
        root = ET.fromstring(data)
        assert root.tag.endswith("svg") and root.attrib["width"] == "518.4pt" and root.attrib["height"] == "216pt"
    else:
        assert data.startswith(b"%PDF") and b"/MediaBox [ 0 0 518.4 216 ]" in data


def test_format_flag_overrides_the_suffix(tmp_path, capsys):
    out = tmp_path / "figure.png"
    assert run(capsys, "plot", "ipo", "--out", str(out), "--format", "svg")[0] == 0
    assert out.read_bytes().lstrip().startswith(b"<?xml")


def test_default_output_name_in_the_current_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(capsys, "plot", "cdpo", "--sweep", "label_smoothing=0.1,0.3")
    assert code == 0 and stdout.strip() == str(tmp_path / "cdpo_beta-0.1_label_smoothing-0.1-0.3.png")
    assert (tmp_path / "cdpo_beta-0.1_label_smoothing-0.1-0.3.png").exists()


def test_subprocess_plot_is_byte_identical_and_torch_free(tmp_path):
    cmd = [sys.executable, "-m", "lossviz", "plot", "dpo", "--beta", "0.1"]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True)
    png = tmp_path / "dpo_beta-0.1.png"
    before = png.read_bytes()
    subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert first.stdout.strip() == str(png) and png.read_bytes() == before
    probe = "import sys\nfrom lossviz.cli import main\nmain(['plot', 'kto', '--out', 'k.svg'])\nprint('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.splitlines()[-1] == "False"


@pytest.mark.parametrize("argv,needle", [
    (["plot", "dpx"], "unknown loss 'dpx'"),
    (["plot", "dpo", "--bta", "1"], "dpo has no parameter --bta; valid: --beta"),
    (["plot", "dpo", "--beta", "-1"], "--beta must be in (0, 100]; got -1"),
    (["plot", "cdpo", "--label-smoothing", "0.7"], "--label-smoothing must be in [0, 0.5); got 0.7"),
    (["plot", "cdpo", "--sweep", "label_smoothing=0.1,0.6"], "--label-smoothing must be in [0, 0.5); got 0.6"),
    (["plot", "dpo", "--sweep", "gamma=1,2"], "--sweep: dpo has no parameter 'gamma'"),
    (["plot", "dpo", "--sweep", "beta"], "--sweep must look like PARAM=v1,v2"),
    (["plot", "dpo", "--x-range", "5", "1"], "--x-range needs LO < HI"),
    (["plot", "dpo", "--format", "gif"], "invalid choice: 'gif'"),
    (["plot", "dpo", "--out", "{tmp}/figure.gif"], "cannot tell the format"),
    (["plot", "dpo", "--out", "{tmp}/missing/figure.png"], "does not exist"),
    (["plot", "dpo", "--out", "{tmp}/afile/figure.png"], "is not a directory"),
    (["plot", "dpo", "--dpi", "5", "--out", "{tmp}/x.png"], "--dpi must be"),
    (["compare", "dpo", "nope"], "unknown loss 'nope'"),
    (["compare", "dpo", "--what", "hessian"], "invalid choice: 'hessian'"),
    (["compare", "dpo", "ipo", "--margin", "1"], "has no parameter --margin"),
])
def test_bad_plot_requests_exit_2_with_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_file_lossviz_did_not_write_is_kept_unless_forced(tmp_path, capsys):
    target = tmp_path / "notes.png"
    target.write_bytes(b"my own picture")
    code, _, err = run(capsys, "plot", "dpo", "--out", str(target))
    assert code == 2 and "was not written by lossviz" in err and target.read_bytes() == b"my own picture"
    assert run(capsys, "plot", "dpo", "--out", str(target), "--force")[0] == 0
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert run(capsys, "plot", "dpo", "--beta", "0.3", "--out", str(target))[0] == 0  # ours now: replaced freely


def test_a_crash_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from lossviz.plots.core import PlotError, save

    def broken(self, handle, **kwargs):
        handle.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(PlotError, match="No space left"):
        save(figure("dpo"), tmp_path / "x.png", "png")
    assert list(tmp_path.iterdir()) == []


def test_gallery_writes_every_item_and_a_readme(tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["gallery", "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    ITEMS = items()
    assert files == {f"{i.stem}.png" for i in ITEMS} | {f"{i.stem}.svg" for i in ITEMS if i.svg} | {"README.md"}
    for item in ITEMS:  # wide enough to read: at least 1200 px
        data = (out / f"{item.stem}.png").read_bytes()
        assert int.from_bytes(data[16:20], "big") >= 1200, item.stem
    readme = (out / "README.md").read_text()
    assert readme.startswith(README_MARK)
    for item in ITEMS:
        assert f"[{item.stem}.png]({item.stem}.png)" in readme and f" | {item.lesson} |" in readme
    assert {i.name for i in ITEMS} >= set(names()) | {"compare"}  # every entry, read from the registry
    assert {i.stem for i in ITEMS} >= {"logexp-overflow", "ppo-policy_dual-clip"}  # and the extra figures cards declare
    assert "\r" not in capsys.readouterr().err  # stderr is captured, not a terminal: no progress bar


def test_gallery_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    import io

    import lossviz.plots.gallery as gal

    monkeypatch.setattr(gal, "items", lambda: [i for i in items() if i.stem == "basics"])

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    log, tty = io.StringIO(), Terminal()
    gallery(tmp_path / "log", stream=log)
    gallery(tmp_path / "tty", stream=tty)
    assert log.getvalue() == ""
    assert tty.getvalue().count("\r") == 2 and "1/1 done" in tty.getvalue()


def test_committed_gallery_lists_every_item():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "figures"
    readme = (root / "README.md").read_text()
    for item in items():
        assert f"({item.stem}.png)" in readme and (root / f"{item.stem}.png").exists()


def _probe(tmp_path, env_extra=None, argv="['plot', 'dpo', '--beta', '0.2', '--out', 'c.png']"):
    import os

    code = f"import sys\nfrom lossviz.cli import main\nrc = main({argv})\nprint(rc, 'sympy' in sys.modules)"
    env = {**os.environ, "LOSSVIZ_CACHE_DIR": str(tmp_path / "cache"), **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    return out.stdout.split()[-2:], out.stderr


def test_a_repeated_plot_comes_from_the_cache_without_sympy_and_is_identical(tmp_path):
    assert _probe(tmp_path)[0] == ["0", "True"]  # built: sympy needed
    first = (tmp_path / "c.png").read_bytes()
    assert _probe(tmp_path)[0] == ["0", "False"]  # cached: rendered and saved without sympy
    assert (tmp_path / "c.png").read_bytes() == first
    assert _probe(tmp_path, {"LOSSVIZ_NO_CACHE": "1"})[0] == ["0", "True"]
    assert (tmp_path / "c.png").read_bytes() == first


def test_a_corrupt_cache_entry_is_a_miss_and_errors_are_not_cached(tmp_path):
    _probe(tmp_path)
    for entry in (tmp_path / "cache" / "figures").glob("*.pickle"):
        entry.write_bytes(b"garbage")
    assert _probe(tmp_path)[0] == ["0", "True"]
    bad = "['plot', 'dpo', '--beta', '-1', '--out', 'd.png']"
    for _ in range(2):
        (rc, _), err = _probe(tmp_path, argv=bad)
        assert rc == "2" and "--beta must be in" in err
    assert not (tmp_path / "d.png").exists()


def test_cache_hits_still_check_the_output(tmp_path):
    _probe(tmp_path)
    (rc, _), err = _probe(tmp_path, argv="['plot', 'dpo', '--beta', '0.2', '--out', 'missing/c.png']")
    assert rc == "2" and "does not exist" in err


# --- a new entry is one card: its figure declared as data, drawn by the generic builder -------------


def _new_card():
    import sympy as sp

    from lossviz.cards._common import sym
    from lossviz.cards.base import Card, Fact, Param
    from lossviz.cards.figure import Axis, LessonFigure, Mark, Panel
    from lossviz.symbolic import LogSigmoid, elementary

    class Hinge(Card):  # -log σ(u - m): a softplus whose push halves at u = m, declared here and nowhere else
        name = "shifted-logistic"
        title = "shifted logistic"
        params = (Param("m", 1.0, "the shift m", "m"),)
        axis = Axis("u", {"u": "u"}, lambda p: (p["m"] - 6.0, p["m"] + 6.0), "score $u$")
        figure = LessonFigure(panels=(Panel("loss", r"$-\log\sigma(u - m)$"), Panel("push", r"push $-\partial\ell/\partial u$")),
                              title="the push halves where u = m",
                              marks=(Mark("half_push", panel="push", label="push 1/2 at u = m = {x:g}"),
                                     Mark("push_limit", kind="limit", panel="push", label="→ {y:g} as u → -∞"),
                                     Mark("shift", kind="edge", label="m"),
                                     Mark("strong_push", kind="zone", label="push > 0.9")))

        def variables(self, p):
            return ("u",)

        def loss(self, p):
            return -LogSigmoid(sym("u") - p["m"])

        def facts(self, d):
            u, m = sym("u"), d.p["m"]
            push = lambda: -elementary(sp.diff(d.loss, u))
            return [Fact("half_push", "the u where the push is 1/2", lambda: sp.solve(push() - sp.Rational(1, 2), u)[0]),
                    Fact("push_limit", "the push as u -> -oo", lambda: sp.limit(push(), u, -sp.oo)),
                    Fact("shift", "m", lambda: m),
                    Fact("strong_push", "where the push exceeds 0.9", lambda: sp.solveset(push() > sp.Rational(9, 10), u, sp.S.Reals))]

    return Hinge()


def _draw(card, param_sets, sweep=None):
    from lossviz.plots.core import styled
    from lossviz.plots.lessons import PlotRequest, builder

    return styled(builder(card), PlotRequest(card, [card.resolve(p) for p in param_sets], sweep))


def test_a_card_with_only_a_figure_declaration_gets_a_clean_lesson_figure():
    from lossviz.plots.layout_check import collisions

    card = _new_card()
    fig = _draw(card, [{"m": 1.5}])
    x, y = xy(by_gid(fig, "loss:loss"))
    assert x[0] == pytest.approx(-4.5) and x[-1] == pytest.approx(7.5)  # the declared default range around m
    np.testing.assert_allclose(y, np.logaddexp(0.0, -(x - 1.5)), rtol=1e-12)
    x, push = xy(by_gid(fig, "push:loss"))
    np.testing.assert_allclose(push, 1 / (1 + np.exp(x - 1.5)), rtol=1e-10)  # push = minus the gradient, σ(m - u)
    half = by_gid(fig, "marker:half_push:0")
    assert float(half.get_xdata()[0]) == pytest.approx(1.5) and float(half.get_ydata()[0]) == pytest.approx(0.5)
    assert float(by_gid(fig, "limit:push_limit:0").get_ydata()[0]) == 1.0
    assert float(by_gid(fig, "marker:shift:0").get_xdata()[0]) == 1.5
    assert span(by_gid(fig, "zone:strong_push:0")) == (pytest.approx(-4.5), pytest.approx(1.5 - math.log(9)))  # σ(m - u) > 0.9 ⇔ u < m - log 9
    assert collisions(fig) == []
    fig = _draw(card, [{"m": 0.0}, {"m": 2.0}], sweep="m")  # a sweep names each value's lesson point in its legend
    assert collisions(fig) == []
    assert float(by_gid(fig, "marker:half_push:1").get_xdata()[0]) == pytest.approx(2.0)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)  # placement may move a crowded legend below
    assert any(t.get_text() == "$m$=2: push 1/2 at u = m = 2" for legend in legends for t in legend.get_texts())


def test_a_card_with_only_an_axis_gets_loss_and_gradient_panels_and_one_without_gets_a_clear_error():
    from lossviz.cards.base import CardError

    card = _new_card()
    type(card).figure = None
    try:
        fig = _draw(card, [{}])
        x, g = xy(by_gid(fig, "grad:loss"))
        np.testing.assert_allclose(g, -1 / (1 + np.exp(x - 1.0)), rtol=1e-10)
        type(card).axis = None
        with pytest.raises(CardError, match="shifted-logistic declares no lesson figure"):
            _draw(card, [{}])
    finally:
        del type(card).figure, type(card).axis


def test_explorer_spec_reads_the_declaration():
    import sympy as sp

    from lossviz.plots.lessons import explorer_spec

    spec = explorer_spec(get("ipo"))  # β stays a symbol: the cut and the marks are functions of it
    beta = sp.Symbol("beta", positive=True)
    assert spec.x_range == pytest.approx((-1.0, 8.0))  # the declared range at the default β = 0.1: the target 5 ± 3, and h = 0
    assert sp.simplify(spec.loss - (spec.x - 1 / (2 * beta)) ** 2) == 0
    assert sp.simplify(spec.grad - 2 * (spec.x - 1 / (2 * beta))) == 0
    (mark, value), = spec.marks
    assert mark.fact == "target" and sp.simplify(value - 1 / (2 * beta)) == 0
    spec = explorer_spec(get("dpo"), {"beta": 0.5})
    values = {m.fact: v for m, v in spec.marks}
    assert float(values["weight_wrong_order"]) == -0.5 and float(values["weight_at_zero"]) == 0.0  # the gradient's limit -β; h = 0
    assert spec.cut["policy_chosen_logps"] == spec.x and spec.cut["reference_rejected_logps"] == 0


def _two_case_card():
    from lossviz.cards._common import sym
    from lossviz.cards.base import Card, Fact, Param
    from lossviz.cards.figure import Axis, Curve, LessonFigure, Mark, Panel
    from lossviz.symbolic import LogSigmoid

    class Signed(Card):  # -log σ(s·u - m): the sign s picks the side, a second case beside the first
        name = "signed-logistic"
        title = "signed logistic"
        params = (Param("m", 1.0, "the shift m", "m"),)
        axis = Axis("u", {"u": "u", "s": 1}, (-6.0, 6.0), "score $u$")
        figure = LessonFigure(
            panels=(Panel("loss", "loss", tag="s_plus", title="s = +1"), Panel("loss", "loss", tag="s_minus", title="s = -1", cut={"s": -1}),
                    Panel("grad", "gradient", tag="s_plus")),
            title="each side approaches its asymptote m - s·u", rows=1,
            curves=(Curve(lambda c: c.p["m"] - c.cut["s"] * c.x, "asymptote_{tag}", "asymptote $m - su$", panels=("loss", "grad"),
                          style={"color": "0.5", "linestyle": ":"}),),
            marks=(Mark("shift", kind="edge", at="m", label="u = m", once=True),
                   Mark("gap", kind="gap", at=lambda c: c.lo + 0.25 * (c.hi - c.lo), to="asymptote_{tag}", on="s_plus",
                        label="gap {gap:.4f}", once=True)))

        def variables(self, p):
            return ("u", "s")

        def loss(self, p):
            return -LogSigmoid(sym("s") * sym("u") - p["m"])

        def facts(self, d):
            return [Fact("shift", "m", lambda: d.p["m"])]

    return Signed()


def test_reference_curves_second_cases_and_once_marks_are_data():
    """A Curve is drawn with its derivative on a gradient panel; a Panel's cut shows a second case; a once mark has a bare gid."""
    from lossviz.plots.layout_check import collisions

    card = _two_case_card()
    fig = _draw(card, [{"m": 1.5}])
    u, plus = xy(by_gid(fig, "loss:s_plus"))
    np.testing.assert_allclose(plus, np.logaddexp(0.0, -(u - 1.5)), rtol=1e-12)
    _, minus = xy(by_gid(fig, "loss:s_minus"))
    np.testing.assert_allclose(minus, np.logaddexp(0.0, -(-u - 1.5)), rtol=1e-12)  # the panel's own cut: s = -1
    _, grad = xy(by_gid(fig, "grad:s_plus"))
    np.testing.assert_allclose(grad, -1 / (1 + np.exp(u - 1.5)), rtol=1e-10)
    np.testing.assert_allclose(xy(by_gid(fig, "loss:asymptote_s_minus"))[1], 1.5 + u, rtol=1e-12)
    np.testing.assert_allclose(xy(by_gid(fig, "grad:asymptote_s_plus"))[1], -1.0)  # the reference's derivative on the gradient panel
    edges = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == "marker:shift"]
    assert len(edges) == 3 and all(float(line.get_xdata()[0]) == 1.5 for line in edges)  # the parameter m, on every panel
    x = -6.0 + 0.25 * 12.0
    gap = math.log1p(math.exp(-(x - 1.5))) - (1.5 - x)  # -log σ(u - m) - (m - u) = log(1 + e^{u - m})
    assert f"gap {gap:.4f}" in _texts(fig)
    assert [ax.get_title() for ax in fig.axes] == ["s = +1", "s = -1", ""]
    assert collisions(fig) == []
