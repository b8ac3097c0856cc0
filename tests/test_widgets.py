"""Explorers in plain pytest: move the controls, and the line data, the facts, the LaTeX and the figure follow.

References are independent of the widget: the card's loss evaluated through its own Derivation
at the cut's values, or closed forms written out in numpy here.
"""

import asyncio
import math
import re
import struct

import numpy as np
import pytest
import sympy as sp

import lossviz
from lossviz.cards.base import CardError, Derivation
from lossviz.registry import get, names
from lossviz.cards.controls import GradientOf, Hold, Point, Window
from lossviz.widgets import FIG_DPI, FIG_SIZE, Explorer, Explorers, explore, latex_at, slider_range


def card_curve(e: Explorer, xs):
    """The card's loss along its declared axis at the explorer's current values, evaluated through the card alone:
    the axis's cut, with each variable the card's controls hold at its slider's value."""
    card = e.card
    given = {**e.cases, **{k: v for k, v in e.params.items() if k not in e.knobs}}
    given.update({k: v for k, v in e.fixed.items() if v is not None})
    for name, switch in e.switches.items():
        if not switch.value:
            given.pop(name, None)
    params = card.resolve(given)
    d = Derivation(card, params)
    cut = card.axis.values(params)
    for item in getattr(card, "controls", ()):
        if isinstance(item, Hold):
            for variable in item.held:
                cut[variable] = sp.Float(e.sliders[item.name].value)
    values = {v: np.broadcast_to(sp.lambdify(card.axis.x, cut[v], "numpy")(xs), xs.shape).astype(float) for v in d.variables}
    return d.evaluate(values)


def visible(e):
    return [n for n, s in e.sliders.items() if not s.disabled and s.layout.display != "none"]


def png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


# --- every entry -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", names())
def test_every_entry_has_an_explorer_whose_line_is_the_card_as_every_slider_moves(name):
    e = Explorer(name)
    np.testing.assert_allclose(e.loss_line.get_ydata(), card_curve(e, e.xs), rtol=1e-10, atol=1e-12)
    for slider_name in visible(e):
        slider = e.sliders[slider_name]
        before = e.image.value
        slider.value = slider.min + 0.7 * (slider.max - slider.min)
        np.testing.assert_allclose(e.loss_line.get_ydata(), card_curve(e, e.xs), rtol=1e-9, atol=1e-12, err_msg=slider_name)
        assert e.image.value != before, f"moving {slider_name} did not change the {name} figure"


# what each explorer's lesson needs to move (issue 10 §2); more controls are fine, fewer are not
LESSON_CONTROLS = {
    "basics": {"x0"}, "gptlm": {"label", "z_1", "z_2"}, "kd": {"t_0", "t_1", "t_2"},
    "dpo": {"beta"}, "cdpo": {"beta", "label_smoothing"}, "ipo": {"beta"},
    "kto": {"beta", "z", "arm", "desirable_weight", "undesirable_weight"}, "vanilla-kto": {"beta", "delta_r"},
    "ppo-policy": {"A", "clip_eps", "clip_eps_low", "clip_eps_high", "dual_clip"},
    "ppo-value": {"v_old", "R", "clip_eps", "clip_eps_low", "clip_eps_high"},
    "pairwise": {"margin"}, "logexp": {"margin"}, "prm": {"labels", "p"},
    "dpo-robust": {"beta", "label_smoothing"}, "dpo-hinge": {"beta"}, "dpo-exo": {"beta", "label_smoothing"}, "dpo-nca": {"beta"},
    "dpo-bco": {"beta"}, "dpo-sppo": {"beta"}, "dpo-apo-zero": {"beta"}, "dpo-apo-down": {"beta"}, "dpo-discopop": {"beta", "discopop_tau"},
    "dpo-ln": {"beta", "chosen_length", "rejected_length"}, "rpo": {"beta", "nll_loss_coef", "chosen_length"},
    "simpo": {"beta", "gamma", "label_smoothing"}, "cpo": {"beta", "alpha", "label_smoothing"}, "orpo": {"beta"},
    "kto-apo-zero": {"beta", "arm", "desirable_weight", "undesirable_weight"}, "gkd": {"beta", "temperature", "t_0", "t_1", "t_2"},
    "grpo": {"loss_agg_mode", "A_short", "A_long", "clip_eps"}, "dr-grpo": {"loss_scale_factor", "A_short", "A_long", "clip_eps"},
    "dapo": {"A", "clip_eps_low", "clip_eps_high", "dual_clip"}, "gspo": {"A", "x_rest", "clip_eps_low", "clip_eps_high"},
    "gmpo": {"A", "x_rest", "clip_eps_low", "clip_eps_high"}, "gpg": {"A"}, "sapo": {"A", "tau_pos", "tau_neg"},
    "cispo": {"A", "x_w", "clip_eps_high", "clip_eps_low"}, "kl-estimators": {"kl_estimator", "log_ref"},
    "group-advantages": {"method", "R_2", "eps"},
}


def test_every_explorer_has_the_controls_of_its_lesson():
    assert set(LESSON_CONTROLS) == set(names())
    for name, wanted in LESSON_CONTROLS.items():
        e = Explorer(name)
        assert wanted <= set(e.controls()), (name, wanted - set(e.controls()))
    policy = Explorer("ppo-policy")
    assert set(policy.switches) == {"clip_eps_low", "clip_eps_high", "dual_clip"}  # options switch on and off


# --- LaTeX at the current values ------------------------------------------------------------------------
NUMBER = r"\d+(?:\.\d+)?"
# a number followed by something it would multiply without a product sign: "0.1 \sigma", "{0.1} {1}", "2 x"
PASTED = re.compile(rf"(?<![\^_{{\w.]){NUMBER}\}}?\s+(?!\\cdot|\\right|\\wedge|\\vee|\\leq|\\geq|\\text|\\end|\\\\|\\infty|&|[-+=<>,)\]}}|])\S")
BRACED = re.compile(rf"(?<![\^_}}a-zA-Z]){{-?{NUMBER}}}")  # a value pasted in braces, as a template would


def latex_texts(e):
    """The math of the formula and the facts (the $...$ and $$...$$ segments; prose may say "ε = 0 minus")."""
    text = e.latex_view.value + " " + e.facts_view.value
    segments = [a or b for a, b in re.findall(r"\$\$(.+?)\$\$|\$(.+?)\$", text, flags=re.S)]
    assert segments, "no math shown"
    return segments


def assert_typeset(text, where):
    assert not PASTED.search(text), f"{where}: pasted product {PASTED.search(text).group(0)!r} in {text[:300]}"
    assert not BRACED.search(text), f"{where}: braced value {BRACED.search(text).group(0)!r}"
    assert not re.search(r"[+-]\s+[+-]\s", text.replace(r"\pm", "")), f"{where}: a sign pasted after a sign"
    assert "Matrix(" not in text and "{0.1} {1}" not in text


@pytest.mark.parametrize("name", names())
def test_latex_is_sympy_at_the_current_values_with_no_pasted_products(name):
    e = Explorer(name)
    # segments joined by ", ": a formula may end in a number (k3's "+ 0.89") and the next begin with \displaystyle
    assert_typeset(", ".join(latex_texts(e)), f"{name} at defaults")
    for slider_name in visible(e):
        slider = e.sliders[slider_name]
        slider.value = slider.min + 0.37 * (slider.max - slider.min)
        assert_typeset(", ".join(latex_texts(e)), f"{name} with {slider_name}={slider.value}")


def test_the_pattern_catches_the_old_pasted_latex():
    # what string replacement used to show (issue 10): each must be refused
    for bad in [r"- {0.1} {1} \sigma\left(x\right)", r"\frac{1}{2 {0.1}}", r"e^{- r_c + {-2} + r_r}", r"0.3 \sigma\left(x\right)"]:
        with pytest.raises(AssertionError):
            assert_typeset(bad, "old")


def test_latex_values_are_computed_by_sympy():
    ipo = Explorer("ipo", beta=0.1)
    assert r"- 5\right)^{2}" in ipo.latex_view.value  # the IPO target 1/(2β) = 5, not 1/(2·0.1)
    kto = Explorer("kto", beta=0.3)
    assert r"- 0.3 \cdot \left(" in kto.latex_view.value and "0.31" not in kto.latex_view.value
    pairwise = Explorer("pairwise", margin=2.0)
    assert r"r_c - r_r - 2" in pairwise.latex_view.value
    policy = Explorer("ppo-policy", clip_eps=0.2)
    assert r"\log{\left(1.2 \right)}" in policy.latex_view.value  # the clip edge log(1 + ε)
    gptlm = Explorer("gptlm")
    assert r"\nabla_{z}\mathcal{L} = \left[\begin{matrix}" in gptlm.latex_view.value  # the gradient as a column
    x = sp.Symbol("x")
    assert latex_at(sp.Symbol("b", positive=True) * x, {sp.Symbol("b", positive=True): 0.37}, {}) == r"0.37 \cdot x"
    assert latex_at(1 / (2 * sp.Symbol("b", positive=True)), {sp.Symbol("b", positive=True): 0.37}, {}) == "1.351"


def test_a_new_value_in_a_running_kernel_prints_its_latex_once_the_slider_rests():
    async def drag():
        e = Explorer("ipo")
        e.latex_delay = 0.05
        shown = e.latex_view.value
        e.sliders["beta"].value = 0.25
        during = e.latex_view.value, e.facts_view.value, e.fact_values()["target"]
        await asyncio.sleep(0.2)
        return shown, during, e.latex_view.value

    shown, (latex_during, facts_during, target), after = asyncio.run(drag())
    assert latex_during == shown and "beta = 0.1" in latex_during  # the formula still names the values it shows
    assert target == pytest.approx(2.0) and "2" in facts_during  # the numbers follow the slider at once
    assert "beta = 0.25" in after and r"- 2\right)^{2}" in after


# --- the lessons ------------------------------------------------------------------------------------------
def at(e, line, x):
    return float(np.interp(x, e.xs, np.asarray(line.get_ydata())))


def test_clip_eps_changes_the_value_loss_and_the_flat_zone_is_where_the_clip_binds():
    e = Explorer("ppo-value")  # v_old = 0, R = 1
    assert (e.sliders["v_old"].value, e.sliders["R"].value) == (0.0, 1.0)
    before = np.asarray(e.loss_line.get_ydata()).copy()
    assert e.fact_values()["flat_zone_above"] == pytest.approx((0.2, 1.8))  # (v_old + ε, 2R - v_old - ε)
    assert at(e, e.grad_line, 1.0) == 0.0 and at(e, e.grad_line, 2.5) == pytest.approx(1.5)
    e.set(clip_eps=0.5)
    assert not np.allclose(e.loss_line.get_ydata(), before)
    assert e.fact_values()["flat_zone_above"] == pytest.approx((0.5, 1.5))
    assert at(e, e.grad_line, 0.4) == pytest.approx(0.4 - 1.0)  # inside the clip: the unclipped error v - R
    assert at(e, e.grad_line, 1.2) == 0.0
    zone = [p for _, p in e.zone_patches if p.get_visible()]
    assert zone and zone[0].get_x() == pytest.approx(0.5) and zone[0].get_width() == pytest.approx(1.0)
    e.set(v_old=1.0, R=1.0)  # the return at the old value: the clip never binds, the loss is (v - R)²/2
    np.testing.assert_allclose(e.loss_line.get_ydata(), (e.xs - 1.0) ** 2 / 2, rtol=1e-12, atol=1e-12)
    e.set(R=-1.0, clip_eps=None)  # switched off: unclipped
    np.testing.assert_allclose(e.loss_line.get_ydata(), (e.xs + 1.0) ** 2 / 2, rtol=1e-12, atol=1e-12)


def reference_policy_loss(r, A, low, high, dual):
    """PPO's clipped surrogate per token at the ratio r, written out in numpy (dual clip for A < 0)."""
    loss = np.maximum(-A * r, -A * np.clip(r, 1 - low, 1 + high))
    if dual is not None and A < 0:
        loss = np.minimum(loss, -dual * A)
    return loss


def test_policy_explorer_shows_the_sign_of_a_dual_clip_and_clip_higher():
    e = Explorer("ppo-policy")  # along the card's axis, the ratio r
    assert e.xs[0] > 0 and e.x_range == get("ppo-policy").axis.default_range(get("ppo-policy").resolve({}))
    np.testing.assert_allclose(e.loss_line.get_ydata(), reference_policy_loss(e.xs, 1.0, 0.2, 0.2, None), rtol=1e-12)
    e.set(A=-1.0)
    np.testing.assert_allclose(e.loss_line.get_ydata(), reference_policy_loss(e.xs, -1.0, 0.2, 0.2, None), rtol=1e-12)
    e.set(dual_clip=3.0)
    assert e.switches["dual_clip"].value
    assert e.x_range[1] == pytest.approx(4.0)  # the card's range widens to c + 1 once dual clip is on
    np.testing.assert_allclose(e.loss_line.get_ydata(), reference_policy_loss(e.xs, -1.0, 0.2, 0.2, 3.0), rtol=1e-12)
    assert at(e, e.grad_line, 3.5) == 0.0  # above c: capped, no gradient
    marks = sorted(float(line.get_xdata()[0]) for _, line in e.marker_lines[::2])
    assert marks == pytest.approx([0.8, 1.2, 3.0])  # the clip edges 1 ± ε and c, from the card's Guides
    e.set(clip_eps_low=0.1, clip_eps_high=0.28, A=1.0)  # clip-higher
    np.testing.assert_allclose(e.loss_line.get_ydata(), reference_policy_loss(e.xs, 1.0, 0.1, 0.28, 3.0), rtol=1e-12)
    assert sorted(float(line.get_xdata()[0]) for _, line in e.marker_lines[::2]) == pytest.approx([0.9, 1.28, 3.0])
    assert "clip_eps" not in e.params  # both sides overridden: the symmetric width changes nothing, so it is hidden
    e.set(dual_clip=None)
    assert not e.switches["dual_clip"].value and "dual_clip" not in e.params


def test_prm_hard_dropdown_shows_the_hard_label_loss():
    e = Explorer("prm")
    d = e.xs
    np.testing.assert_allclose(e.loss_line.get_ydata(), 0.8 * np.logaddexp(0, -d) + 0.2 * np.logaddexp(0, d), rtol=1e-12)
    soft_png = e.image.value
    e.dropdowns["labels"].value = "hard"
    np.testing.assert_allclose(e.loss_line.get_ydata(), np.logaddexp(0, -d), rtol=1e-12)  # label '+': -log σ(d)
    assert e.image.value != soft_png and e.params == {"p": 1.0}
    assert e.sliders["p"].layout.display == "none" and e.label_dropdowns["p"].layout.display != "none"
    e.set(p=0.0)  # label '-'
    np.testing.assert_allclose(e.loss_line.get_ydata(), np.logaddexp(0, d), rtol=1e-12)
    with pytest.raises(CardError, match="p must be one of 1, 0"):
        e.set(p=0.5)
    e.dropdowns["labels"].value = "soft"
    assert e.sliders["p"].layout.display != "none" and "optimum" in e.fact_values()


def test_kto_reference_point_moves_the_bell():
    e = Explorer("kto", beta=0.5)
    for z in (0.0, 4.0, 9.0):
        e.set(z=z)
        grad = np.asarray(e.grad_line.get_ydata())
        assert e.xs[np.argmin(grad)] == pytest.approx(z, abs=0.11)  # the bell is centred on Δ = z
        assert e.fact_values()["gradient_peak"] == pytest.approx(z)
        assert float(e.marker_lines[0][1].get_xdata()[0]) == pytest.approx(z)
        np.testing.assert_allclose(e.loss_line.get_ydata(), 1 / (1 + np.exp(0.5 * (e.xs - z))), rtol=1e-12)
    assert "undesirable_weight" not in e.params  # the desirable arm does not read w_U
    e.set(arm="undesirable")
    assert "undesirable_weight" in e.params and "desirable_weight" not in e.params


def test_kd_teacher_sliders_move_the_student_minimum():
    e = Explorer("kd")
    for t in [(1.0, 0.0, -1.0), (-2.0, 1.5, 0.5)]:
        e.set(t_0=t[0], t_1=t[1], t_2=t[2])
        # along z_0 with z_1 = z_2 = 0 the minimum is where p_S,0 = e^z/(e^z + 2) equals p_T,0
        q0 = math.exp(t[0]) / sum(math.exp(v) for v in t)
        assert e.fact_values()["student_minimum"] == pytest.approx(math.log(2 * q0 / (1 - q0)), rel=1e-12)
        assert e.fact_values()["teacher_p0"] == pytest.approx(q0, rel=1e-12)
        loss = np.asarray(e.loss_line.get_ydata())
        assert e.xs[np.argmin(loss)] == pytest.approx(math.log(2 * q0 / (1 - q0)), abs=0.05)


def test_basics_point_sits_on_both_curves():
    e = Explorer("basics")
    for x0 in (-5.0, 0.0, 3.0):
        e.set(x0=x0)
        loss_dot, grad_dot = e.point_dots
        assert float(loss_dot.get_ydata()[0]) == pytest.approx(math.log1p(math.exp(-x0)), rel=1e-12)
        assert float(grad_dot.get_ydata()[0]) == pytest.approx(1 / (1 + math.exp(-x0)) - 1, rel=1e-12)
        assert e.fact_values()["push_at_x0"] == pytest.approx(1 / (1 + math.exp(x0)), rel=1e-12)


def test_vanilla_kto_rejected_log_ratio_couples_the_chosen_curve():
    sigmoid = lambda u: 1 / (1 + np.exp(-u))
    e = Explorer("vanilla-kto", beta=0.5)
    for delta_r in (-3.0, 0.0, 4.0):
        e.set(delta_r=delta_r)
        # one chosen and one rejected example, each scored against the other side's clamped mean log-ratio
        dc = e.xs
        expected = (sigmoid(-0.5 * (dc - max(delta_r, 0.0))) + sigmoid(-0.5 * (np.maximum(dc, 0.0) - delta_r))) / 2
        np.testing.assert_allclose(e.loss_line.get_ydata(), expected, rtol=1e-12)


# --- sizes and layout ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", names())
def test_image_has_a_fixed_natural_size_and_the_figure_has_no_collisions(name):
    from lossviz.plots.layout_check import collisions

    e = Explorer(name)
    width, height = png_size(e.image.value)
    assert (width, height) == (round(FIG_SIZE[0] * FIG_DPI), round(FIG_SIZE[1] * FIG_DPI))
    layout = e.image.layout
    assert (layout.width, layout.height, layout.min_width, layout.max_width) == (f"{width}px", f"{height}px", f"{width}px", f"{width}px")
    assert layout.flex == "0 0 auto"  # never grown or shrunk by the row it sits in
    assert collisions(e.figure) == [], "defaults"
    for slider_name in visible(e):
        slider = e.sliders[slider_name]
        for value in (slider.min, slider.max):
            slider.value = value
            assert collisions(e.figure) == [], f"{slider_name}={value}"
        slider.value = slider.min + 0.5 * (slider.max - slider.min)


# --- several explorers, and errors -------------------------------------------------------------------------------
def test_explore_several_returns_explorers_whose_set_moves_every_one():
    box = lossviz.explore(["dpo", "cdpo", "ipo"])
    assert isinstance(box, Explorers) and [x.card.name for x in box.explorers] == ["dpo", "cdpo", "ipo"]
    assert len(box.widget.children) == 3 and box["cdpo"] is box.explorers[1]
    box.set(beta=0.5)
    for e in box:
        assert e.sliders["beta"].value == 0.5
        np.testing.assert_allclose(e.loss_line.get_ydata(), card_curve(e, e.xs), rtol=1e-10)
    assert box["ipo"].fact_values()["target"] == pytest.approx(1.0)
    assert box["cdpo"].fact_values()["minimum"] == pytest.approx(math.log(9) / 0.5)
    box.set(label_smoothing=0.2)  # only cdpo has it
    assert box["cdpo"].sliders["label_smoothing"].value == 0.2
    with pytest.raises(CardError, match="no explorer among dpo, cdpo, ipo has the control 'gamma'"):
        box.set(gamma=1.0)
    with pytest.raises(CardError, match=r"label_smoothing must be in \[0, 0.5\)"):
        box.set(beta=0.3, label_smoothing=0.7)
    assert all(e.sliders["beta"].value == 0.5 for e in box)  # a refused call changed nothing


def test_explore_passes_values_on_and_refuses_unknown_ones():
    single = explore("pairwise", margin=1.0)
    assert single.params["margin"] == 1.0 and single.fact_values()["fade_point"] == pytest.approx(1 + math.log(9))
    both = explore(["ppo-policy", "ppo-value"], clip_eps=0.3, R=0.5)
    assert both["ppo-policy"].params["clip_eps"] == 0.3 and both["ppo-value"].params == {"clip_eps": 0.3, "v_old": 0.0, "R": 0.5}
    with pytest.raises(CardError, match="has the parameter 'gamma'"):
        explore(["dpo", "ipo"], gamma=1)
    with pytest.raises(CardError, match="at least one"):
        explore([])
    with pytest.raises(CardError, match=r"v_old must be in \[-1, 2\] in the ppo-value explorer"):
        Explorer("ppo-value", v_old=5)
    with pytest.raises(CardError, match="x_range must be finite with low < high"):
        Explorer("dpo", x_range=(2, 1))
    assert Explorer("dpo", x_range=(-5, 5)).xs[[0, -1]].tolist() == [-5.0, 5.0]


def test_out_of_range_values_are_clamped_by_sliders_and_refused_by_set():
    e = Explorer("cdpo")
    e.sliders["label_smoothing"].value = 0.9  # a slider clamps to its range
    assert e.sliders["label_smoothing"].value == pytest.approx(slider_range(get("cdpo").param("label_smoothing"), 0.1)[1])
    assert e.sliders["label_smoothing"].value < 0.5
    with pytest.raises(CardError, match=r"^label_smoothing must be in \[0, 0.5\)"):  # the Python argument, not the CLI flag
        e.set(label_smoothing=0.7)
    with pytest.raises(CardError, match="no control 'gamma'"):
        e.set(gamma=1)
    e.set(beta=5.0)  # valid but beyond the slider window: the window grows
    assert e.sliders["beta"].value == 5.0


# --- the card is the only declaration ------------------------------------------------------------------------
@pytest.mark.parametrize("name", names())
def test_axis_range_label_and_controls_come_from_the_card(name):
    from lossviz.plots.lessons import explorer_spec

    card = get(name)
    e = Explorer(name)
    spec = explorer_spec(card, card.resolve({}), symbolic=False)
    declared = getattr(card, "controls", ())
    xlabel = e.ax_loss.get_xlabel()
    assert e.x_range == spec.x_range and xlabel == e.ax_grad.get_xlabel() and spec.xlabel.startswith(xlabel)
    if any(isinstance(c, Hold) for c in declared):  # the values the axis label states are sliders here: not printed
        assert not re.search(r"\(.*=.*\)\s*$", xlabel), xlabel
    else:
        assert xlabel == spec.xlabel
    assert list(e.knobs) == [c.name for c in declared if isinstance(c, (Hold, Point))]
    for c in declared:
        if isinstance(c, Hold):  # starts at the axis's value of the variable it holds
            assert e.sliders[c.name].value == pytest.approx(float(spec.cut[c.held[0]]))
        if isinstance(c, Window) and c.high is not None:
            assert (e.sliders[c.param].min, e.sliders[c.param].max) == (c.low, c.high)
    real = {p.name for p in card.params if not p.is_case and not (p.optional and p.name in e.fixed)}
    assert real <= set(e.sliders) and {p.name for p in card.params if p.is_case} == set(e.dropdowns)


def test_a_control_declared_on_a_new_card_is_a_slider_that_moves_its_variable():
    from lossviz.cards.reward import PairWise

    class HeldPairwise(PairWise):
        name = "held-pairwise"
        controls = (Hold("reject_reward", "r_r", -3.0, 3.0, "the rejected reward"),)

    e = Explorer(HeldPairwise(), margin=1.0)
    assert e.sliders["r_r"].value == 0.0  # the axis holds r_r at 0
    for r_r in (-2.0, 2.5):
        e.set(r_r=r_r)  # -log σ(Δ - r_r - m): the curve shifts right by r_r
        np.testing.assert_allclose(e.loss_line.get_ydata(), np.logaddexp(0, -(e.xs - r_r - 1.0)), rtol=1e-12)
        assert e.fact_values()["fade_point"] == pytest.approx(1.0 + math.log(9))  # the card's fact is in the gap Δ, not in r_c


@pytest.mark.parametrize("controls, needle", [
    ((object(),), "each item must be one of Hold, Point"),
    ((Hold("policy_KL_logps", "z", 0.0, 1.0, "not on this axis"),), "holds 'policy_KL_logps', which is not on the axis"),
    ((Window("gamma", 0.0, 1.0),), "Window for 'gamma', which is not a parameter"),
    ((Hold("reject_reward", "margin", -1.0, 1.0, "shadows"),), "'margin' is declared twice or shadows a parameter"),
    ((GradientOf(("logits_0",)),), "GradientOf names 'logits_0', which is not a variable"),
])
def test_a_bad_control_declaration_is_one_line_naming_the_card(controls, needle):
    from lossviz.cards.reward import PairWise

    class Bad(PairWise):
        name = "bad-controls"

    Bad.controls = controls
    with pytest.raises(CardError, match=re.escape(needle)) as info:
        Explorer(Bad())
    assert str(info.value).startswith("bad-controls: ") and "\n" not in str(info.value)


# --- review fixes: facts that are formulas, held values in the formula, axes, layout ---------------------
def test_a_fact_that_is_a_formula_is_printed_before_the_axis_cut():
    e = Explorer("logexp", margin=0.75)  # the axis holds r_r = 0; the stable form is -log σ(r_c - r_r - m)
    shown = e.facts_view.value.split("<code>stable_form</code>")[1].split("</tr>")[0]
    assert "r_r" in shown and "r_c" in shown and "0.75" in shown
    value = next(f["expr"] for f in e.lowered.facts if f["name"] == "stable_form")
    r_c, r_r = (next(s for s in value.free_symbols if s.name == n) for n in ("chosen_reward", "reject_reward"))
    at = float(value.subs({r_c: 1.3, r_r: 0.4, next(s for s in value.free_symbols if s.name == "margin"): 0.75}))
    assert at == pytest.approx(math.log1p(math.exp(-(1.3 - 0.4 - 0.75))), rel=1e-12)


def test_the_formula_puts_in_the_values_the_sliders_hold():
    e = Explorer("gptlm", z_1=1.25, z_2=-0.75)
    loss_line = e.latex_view.value.split(r"\mathcal{L} =")[1].split("</div>")[0]
    assert r"\operatorname{LSE}\left(z_0, 1.25, -0.75\right)" in loss_line and "z_1" not in loss_line
    kd = Explorer("kd", t_0=2.0, t_1=0.25, t_2=-1.0)
    assert "t_0" not in kd.latex_view.value.split("</div>", 1)[1] and r"\operatorname{LSE}\left(2, 0.25, -1\right)" in kd.latex_view.value
    assert "$z_1$ = 0" in kd.latex_view.value  # the student's logits the axis holds are named in the header
    kto = Explorer("kto", z=3.0)
    assert r"3 - \pi^{KL}_{\mathrm{ref}}" in kto.latex_view.value and r"\pi^{KL} -" not in kto.latex_view.value


def test_the_policy_formula_is_printed_without_the_overflow_guard():
    e = Explorer("ppo-policy")
    assert "10^{" not in e.latex_view.value and "532" not in e.latex_view.value.split("printed without")[0]
    assert "532.3" in e.latex_view.value  # the note says where the guard sits
    # the curves keep the card's loss, guard included
    assert any(abs(float(f) - 532.3) < 0.1 for f in e.lowered.derivation.loss.atoms(sp.Float))


@pytest.mark.parametrize("name", ["pairwise", "logexp", "prm", "ppo-value", "basics", "dpo"])
def test_a_loss_that_is_never_negative_gets_no_negative_axis(name):
    e = Explorer(name)
    low, high = e.ax_loss.get_ylim()
    assert np.nanmin(e.loss_line.get_ydata()) >= 0
    assert -0.05 * high <= low <= 0  # a small margin below 0, not a range the loss never takes
    policy = Explorer("ppo-policy")  # -rA is negative for A > 0: its axis still goes below 0
    assert policy.ax_loss.get_ylim()[0] < np.nanmin(policy.loss_line.get_ydata()) < 0


def test_a_gradient_mark_is_drawn_on_the_gradient_panel_only():
    e = Explorer("basics")
    lines = {line.get_gid(): line for _, line in e.marker_lines}
    assert [line.axes for _, line in e.marker_lines if "x = 0" in line.get_gid()] == [e.ax_grad]
    kto = Explorer("kto")  # the reference point z is an edge of both panels, and the gradient's peak sits on it
    assert {line.axes for _, line in kto.marker_lines} == {kto.ax_loss, kto.ax_grad}
    assert lines


def test_each_switch_shares_a_row_with_its_own_slider_only():
    e = Explorer("ppo-policy")
    rows = e.widget.children[1].children
    for name, switch in e.switches.items():
        row = next(r for r in rows if switch in getattr(r, "children", ()))
        assert list(row.children) == [switch, e.sliders[name]] and row.layout.width == "100%"


@pytest.mark.parametrize("name", ["ppo-policy", "dapo", "grpo", "gspo", "sapo", "gmpo", "kl-estimators"])
def test_the_float64_overflow_guard_is_not_printed(name):
    """The cards carry the production's clamp of the log-ratio at ±¾·log(float64 max) ≈ ±532.3 (exp of it ≈ 1.55e231);
    the explorer prints the formula without that branch, with a note, as ppo-policy does."""
    import math
    import sys

    e = Explorer(name)
    formula, _, note = e.latex_view.value.partition("printed without the overflow guard")
    top = 0.75 * math.log(sys.float_info.max)
    assert f"{top:.1f}" in note and f"{top:.1f}" not in formula and "10^{231}" not in formula, formula[-400:]
    assert any(f"{top:.4g}"[:5] in str(a) for a in e.lowered.derivation.loss.atoms(sp.Float))  # the card keeps it


def test_zero_gradient_sets_with_sliding_bounds_are_intervals():
    """GSPO's and GMPO's zero-gradient ratios, solved with ε as symbols, are intervals the facts table prints as numbers."""
    import math

    g = Explorer("gspo").set(clip_eps_low=0.2, clip_eps_high=0.28).fact_values()
    assert g["zero_gradient_one_token_ratios_A_positive"] == pytest.approx((1.28 ** 3, math.inf))
    assert g["zero_gradient_one_token_ratios_A_negative"] == pytest.approx((0.0, 0.8 ** 3))
    m = Explorer("gmpo").set(clip_eps_low=0.4, clip_eps_high=0.3).fact_values()
    assert m["zero_gradient_token_ratios_A_positive"] == pytest.approx((math.exp(0.3), math.inf))
    assert m["zero_gradient_token_ratios_A_negative"] == pytest.approx((0.0, math.exp(-0.4)))
