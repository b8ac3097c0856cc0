"""Training dynamics: each scenario's claim, checked against closed forms computed here in numpy."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from lossviz.cli import main
from lossviz.dynamics import DynamicsError, get, scenarios
from lossviz.dynamics.catalog import displacement_features
from lossviz.dynamics.engine import simulate


@pytest.fixture(scope="module")
def deterministic():
    return simulate("deterministic-preferences", steps=200)  # beta=0.5, label_smoothing=0.1


@pytest.fixture(scope="module")
def sweep():
    return simulate("beta-sweep", points=4, steps=200)


@pytest.fixture(scope="module")
def trust():
    return simulate("trust-region")


# ------------------------------------------------------------------ deterministic preferences


def test_ipo_and_cdpo_stop_at_their_fixed_points(deterministic):
    beta, eps = 0.5, 0.1
    assert deterministic["ipo"]["margin"][-1] == pytest.approx(1 / (2 * beta), rel=0.01)
    assert deterministic["cdpo"]["margin"][-1] == pytest.approx(math.log((1 - eps) / eps) / beta, rel=0.01)


def test_dpo_margin_keeps_growing_past_both(deterministic):
    margin = deterministic["dpo"]["margin"]
    tail = margin[-(len(margin) // 10):]
    assert np.all(np.diff(tail) > 0)
    assert margin[-1] > deterministic["ipo"]["margin"][-1]
    assert margin[-1] > deterministic["cdpo"]["margin"][-1]


def test_push_on_the_chosen_response_vanishes_only_at_a_fixed_point(deterministic):
    # IPO and cDPO: −∂ℓ/∂log π(y_c) → 0; DPO: β·σ(−βh) > 0 at the final margin
    assert abs(deterministic["ipo"]["push_chosen"][-1]) < 1e-3
    assert abs(deterministic["cdpo"]["push_chosen"][-1]) < 1e-3
    h = deterministic["dpo"]["margin"][-1]
    assert deterministic["dpo"]["push_chosen"][-1] == pytest.approx(0.5 / (1 + math.exp(0.5 * h)), rel=1e-9)


def test_dpo_kl_levels_off_at_the_point_mass_on_the_chosen_response():
    """The margin grows without bound, the KL does not: KL(δ_c‖π_ref) = −log π_ref(y_c) bounds it (claim, 0.436 / 0.446)."""
    run = simulate("deterministic-preferences", losses="dpo")["dpo"]  # 300 steps at the defaults
    bound = -math.log(run["p_chosen"][0])  # step 0 is the reference
    assert bound == pytest.approx(0.446, abs=5e-4)
    assert run["kl"][-1] == pytest.approx(0.436, abs=5e-4)
    assert np.all(run["kl"] < bound) and run["kl"][-1] > 0.97 * bound
    assert run["p_rejected"][-1] < 1e-5 and run["p_chosen"][-1] > 0.998  # π(y_r) → 0, π → δ_c
    assert run["push_chosen"][-1] > 0  # still pushing: the margin has not stopped


def _kl_at_margin(reference_logits, h):
    """KL(π‖π_ref) when the pair's two logits moved by +h/2 and −h/2 (Adam's steps on ±g are symmetric)."""
    ref = np.asarray(reference_logits, dtype=np.float64)
    logits = ref.copy()
    logits[0] += h / 2
    logits[1] -= h / 2
    log_q = ref - np.log(np.exp(ref).sum())
    log_p = logits - np.log(np.exp(logits).sum())
    return float((np.exp(log_p) * (log_p - log_q)).sum())


def test_final_kl_is_decreasing_in_beta_and_matches_the_fixed_point(sweep):
    import torch

    reference = torch.randn(1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)[0].numpy()
    eps = sweep.params["label_smoothing"]
    for loss in ("ipo", "cdpo"):
        kl = sweep[loss]["final_kl"]
        assert np.all(np.diff(kl) < 0), (loss, kl)
        for beta, value in zip(sweep[loss]["beta"], kl):
            h = 1 / (2 * beta) if loss == "ipo" else math.log((1 - eps) / eps) / beta
            assert value == pytest.approx(_kl_at_margin(reference, h), rel=0.02)
    # DPO's margin exceeds both fixed points at every β
    assert np.all(sweep["dpo"]["final_margin"] > sweep["cdpo"]["final_margin"])


def test_dpo_margin_still_grows_at_every_beta_of_the_default_sweep():
    sim = simulate("beta-sweep", losses="dpo")  # β = 0.25 … 4, 200 steps
    margin = sim["dpo"]["margin"]
    assert np.all(np.diff(margin, axis=1) > 0)  # every step, every β: what the log-scale panel shows
    late = margin[:, -1] - margin[:, -21]  # the claim's "last 20 of 200 steps"
    assert late[0] == pytest.approx(0.60, abs=0.005) and late[-1] == pytest.approx(0.009, abs=0.0005)
    ax = sim.figure().axes[2]
    growth = [line for line in ax.get_lines() if str(line.get_gid()).startswith("growth:dpo:margin:")]
    assert ax.get_yscale() == "log" and len(growth) == len(sim["dpo"]["beta"])


# ------------------------------------------------------------------ likelihood displacement


@pytest.mark.parametrize("ches, falls", [(0.5, True), (-0.5, False)])
def test_chosen_log_prob_falls_exactly_when_ches_is_positive(ches, falls):
    run = simulate("likelihood-displacement", ches=ches)["dpo"]
    assert np.all(np.diff(run["margin"]) > 0)  # the margin always grows
    assert (run["logp_chosen"][-1] < run["logp_chosen"][0]) == falls
    assert run["ches"][0] == pytest.approx(ches, abs=1e-12)


@pytest.mark.parametrize("ches", [0.7, -1.2])
def test_first_step_matches_the_first_order_prediction(ches):
    lr, beta = 1e-4, 0.5
    run = simulate("likelihood-displacement", ches=ches, beta=beta, steps=1, lr=lr)["dpo"]
    observed = run["logp_chosen"][1] - run["logp_chosen"][0]
    # at θ = 0: h = 0, w = β·σ(0) = β/2, φ̄ = 0, so η·w·(φ_c − φ_r)·(φ_c − φ̄) = −η·β·ches/2
    phi = displacement_features(ches, 1.0)
    closed = lr * (beta / 2) * (phi[0] - phi[1]) @ (phi[0] - phi.mean(axis=0))
    assert closed == pytest.approx(-lr * beta * ches / 2, rel=1e-12)
    assert observed == pytest.approx(closed, rel=1e-3)
    assert run["logp_chosen_first_order"][1] - run["logp_chosen"][0] == pytest.approx(closed, rel=1e-9)


def test_first_order_prediction_holds_along_the_trajectory():
    """Each step's change matches η·w·(φ_c − φ_r)·(φ_c − φ̄) at that step's φ̄, also far from the reference."""
    run = simulate("likelihood-displacement", lr=0.01, steps=300)["dpo"]
    observed = np.diff(run["logp_chosen"])
    predicted = run["logp_chosen_first_order"][1:] - run["logp_chosen"][:-1]
    np.testing.assert_allclose(predicted, observed, rtol=0.01)
    assert run["logp_chosen"][-1] < run["logp_chosen"][0] - 0.5  # the policy moved: φ̄ is far from its start
    assert abs(run["ches"][-1] - run["ches"][0]) > 0.3


def test_first_step_at_the_default_step_size_is_first_order_only():
    """The claim's numbers: at η = 0.25 the first step lowers log π(y_c) by 0.037, first order says 0.031."""
    run = simulate("likelihood-displacement", steps=1)["dpo"]
    observed = run["logp_chosen"][1] - run["logp_chosen"][0]
    predicted = run["logp_chosen_first_order"][1] - run["logp_chosen"][0]
    assert predicted == pytest.approx(-0.25 * 0.5 * 0.5 / 2, rel=1e-12)  # −η·β·ches/2 = −0.03125
    assert observed == pytest.approx(-0.0368, abs=5e-4)


# ------------------------------------------------------------------ noisy labels


def test_gradient_weights_at_the_reference():
    # at θ = 0 every h is 0: DPO's weight is β·σ(0) = β/2; KTO's (z = 0, Δ = 0) is β·σ(0)·σ(0) = β/4
    sim = simulate("noisy-labels", losses="dpo,kto", steps=1, beta=0.5)
    assert sim["dpo"]["weight_clean"][0] == pytest.approx(0.25, rel=1e-12)
    assert sim["dpo"]["weight_flipped"][0] == pytest.approx(0.25, rel=1e-12)
    assert sim["kto"]["weight_clean"][0] == pytest.approx(0.125, rel=1e-12)



def test_dpo_pulls_hardest_on_flipped_pairs():
    sim = simulate("noisy-labels")  # dpo, cdpo, kto at flip = 0.2, beta = 0.5
    dpo, cdpo, kto = sim["dpo"], sim["cdpo"], sim["kto"]
    assert dpo["weight_flipped"][-1] > 2 * dpo["weight_clean"][-1]
    assert np.all(dpo["weight_flipped"] < 0.5)  # β·σ(−βh) < β
    assert cdpo["weight_flipped"][-1] < dpo["weight_flipped"][-1]
    assert kto["weight_flipped"][-1] == pytest.approx(kto["weight_clean"][-1], rel=0.1)
    assert kto["accuracy"][-1] > 0.6
    # the claim's numbers: KTO ranks worst at the end (0.82 against 0.93 and 0.92)
    assert kto["accuracy"][-1] == pytest.approx(0.82, abs=0.005)
    assert dpo["accuracy"][-1] == pytest.approx(0.93, abs=0.005)
    assert cdpo["accuracy"][-1] == pytest.approx(0.92, abs=0.005)


# ------------------------------------------------------------------ trust region


def test_clipping_keeps_the_ratios_nearer_one(trust):
    clipped, free = trust["ppo"]["max_abs_log_ratio"][-1], trust["ppo-noclip"]["max_abs_log_ratio"][-1]
    assert clipped < 0.8 * free
    # the unclipped run never reaches the widened trust region's lower edge 1e-9 (no token's log r falls below log 1e-9)
    assert trust["ppo-noclip"]["max_abs_log_ratio"].max() < -math.log(1e-9)


def test_clip_fraction_is_where_the_production_loss_stops_pushing(trust):
    for loss in ("ppo", "ppo-dualclip", "ppo-noclip"):
        fraction = trust[loss]["clip_fraction"]
        assert fraction[0] == 0.0  # epoch 0: every ratio is 1
        assert np.all((fraction >= 0) & (fraction <= 1))
    # the tokens beyond the clip edge (in the direction the advantage favours) are exactly those with zero gradient
    np.testing.assert_array_equal(trust["ppo"]["clip_fraction"], trust["ppo"]["zero_grad_fraction"])
    np.testing.assert_array_equal(trust["ppo-dualclip"]["clip_fraction"], trust["ppo-dualclip"]["zero_grad_fraction"])
    assert np.all(trust["ppo-noclip"]["zero_grad_fraction"] == 0)
    assert trust["ppo"]["clip_fraction"][-1] > 0


def test_dual_clip_caps_the_push_on_negative_advantage_tokens(trust):
    """Dual clip (c = 1.5 at the defaults) stops pushing A < 0 tokens whose ratio passed c; plain clipping pushes them with r."""
    c = trust.params["dual_clip"]
    plain, dual = trust["ppo"], trust["ppo-dualclip"]
    # at the defaults some A < 0 ratios do pass c, and the dual-clip run caps them
    assert dual["dual_clip_fraction"].max() > 0.005
    # plain clipping: the A < 0 token with the largest ratio is pushed with |push| = w·r·|A|, i.e. r in units of w·|A|
    np.testing.assert_allclose(plain["max_push_negative"], np.exp(plain["max_log_ratio_negative"]), rtol=1e-9)
    assert plain["max_push_negative"].max() > 1.5 * c
    # dual clip: no A < 0 token is pushed with more than c in those units, at any epoch
    assert np.all(dual["max_push_negative"] <= c * (1 + 1e-12))
    # the capped tokens are no longer pushed down, so the runs part, and the largest log r among
    # A < 0 tokens ends higher with dual clip than with plain clipping (dual clip bounds the loss, not the ratio)
    assert not np.array_equal(plain["log_ratio_median"], dual["log_ratio_median"])
    assert dual["max_log_ratio_negative"][-1] > plain["max_log_ratio_negative"][-1] + 0.1


# ------------------------------------------------------------------ determinism, API, CLI, figures


def test_runs_are_deterministic_for_a_seed():
    a = simulate("trust-region", steps=2, seed=3)
    b = simulate("trust-region", steps=2, seed=3)
    c = simulate("trust-region", steps=2, seed=4)
    assert a.to_json() == b.to_json()
    assert a.to_json() != c.to_json()


# scenarios without a chosen/rejected pair (policy-gradient and KL-estimator runs)
UNPAIRED = ("trust-region", "length-bias", "kl-estimators")


def test_every_run_records_the_common_series(deterministic):
    for item in scenarios():
        sim = simulate(item.name, steps=2, **({"points": 2} if item.name == "beta-sweep" else {}))
        for loss, run in sim.runs.items():
            required = ["loss", "kl", *item.series] + ([] if item.name in UNPAIRED else ["margin", "logp_chosen", "logp_rejected"])
            missing = [name for name in required if name not in run.series]
            assert not missing, (item.name, loss, missing)
        data = json.loads(sim.to_json())  # strict JSON: DPO's infinite fixed point and NaNs become null
        assert data["steps"] == [0, 1, 2] and set(data["runs"]) == set(sim.runs)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(DynamicsError, match="unknown scenario"):
        get("deterministic")
    with pytest.raises(DynamicsError, match="--losses"):
        simulate("deterministic-preferences", losses="dpo,kto", steps=1)
    with pytest.raises(DynamicsError, match="--beta must be"):
        simulate("deterministic-preferences", beta=0, steps=1)
    with pytest.raises(DynamicsError, match="no parameter 'ches'"):
        simulate("deterministic-preferences", ches=1)


@pytest.mark.parametrize("argv, message", [
    (["simulate", "nope"], "unknown scenario 'nope'"),
    (["simulate", "deterministic-preferences", "--losses", "dpo,foo"], "--losses has 'foo'"),
    (["simulate", "deterministic-preferences", "--bta", "1"], "no parameter --bta"),
    (["simulate", "deterministic-preferences", "--beta", "big"], "--beta must be a number"),
    (["simulate", "trust-region", "--minibatches", "2.5"], "--minibatches must be an integer"),
    (["simulate", "deterministic-preferences", "--steps", "0"], "--steps must be"),
    (["simulate", "deterministic-preferences", "--out", "x.txt"], "cannot tell the format"),
])
def test_cli_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_list_and_error_name_the_scenarios_in_the_same_order(capsys):
    order = [item.name for item in scenarios()]
    assert main(["simulate", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line and not line.startswith(" ")]
    assert listed == order
    assert main(["simulate", "trust"]) == 2
    err = capsys.readouterr().err
    assert "did you mean trust-region?" in err and err.rstrip().endswith("valid: " + ", ".join(order)), err


def test_cli_json_and_list(capsys, tmp_path):
    assert main(["simulate", "likelihood-displacement", "--steps", "3", "--ches", "-0.5", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"] == "likelihood-displacement" and data["steps"] == [0, 1, 2, 3]
    assert set(data["runs"]["dpo"]["series"]) >= {"loss", "margin", "logp_chosen", "logp_rejected", "kl"}
    assert data["runs"]["dpo"]["params"]["beta"] == 0.5
    assert main(["simulate", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(item.name in listed for item in scenarios())
    mine = tmp_path / "mine.json"
    mine.write_text("keep me")
    assert main(["simulate", "trust-region", "--steps", "1", "--out", str(mine)]) == 2
    assert mine.read_text() == "keep me"


def test_json_output_never_replaces_a_fifo_even_with_force(capsys, tmp_path):
    """--format json goes through the same atomic writer as the figures: nothing but a regular file is replaced."""
    import os
    import stat

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    assert main(["simulate", "likelihood-displacement", "--steps", "1", "--out", str(fifo), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fifo" in err, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_figures_are_clean_and_deterministic(tmp_path):
    from lossviz.plots.core import save
    from lossviz.plots.layout_check import collisions

    for item in scenarios():
        sim = simulate(item.name, steps=20 if item.name != "trust-region" else 3,
                       **({"points": 3} if item.name == "beta-sweep" else {}))
        fig = sim.figure()
        assert collisions(fig) == [], item.name
        assert fig.get_figwidth() * 150 >= 1200
        if item.name == "likelihood-displacement":
            a, b = tmp_path / "a.png", tmp_path / "b.png"
            save(fig, a, "png")
            save(sim.figure(), b, "png")
            assert a.read_bytes() == b.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", [item.name for item in scenarios()])
def test_published_figures_are_current(name, tmp_path):
    """figures/dynamics-<name>.png is byte for byte what `lossviz simulate <name>` draws today."""
    from pathlib import Path

    published = Path(__file__).resolve().parents[1] / "figures" / f"dynamics-{name}.png"
    fresh = tmp_path / published.name
    assert main(["simulate", name, "--out", str(fresh)]) == 0
    assert published.read_bytes() == fresh.read_bytes(), (
        f"{published} is stale; regenerate: lossviz simulate {name} --force --out figures/{published.name}")


def test_importing_lossviz_stays_light():
    code = "import sys, lossviz; lossviz.simulate; import lossviz.dynamics.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_explorer_scrubs_without_retraining():
    pytest.importorskip("ipywidgets")
    from lossviz.dynamics.explorer import DynamicsExplorer

    explorer = DynamicsExplorer("likelihood-displacement", steps=20)
    sim = explorer.sim
    first = explorer.image.value
    explorer.step_slider.value = 20
    assert explorer.sim is sim and explorer.image.value != first  # scrubbing redraws, the run stays
    assert explorer.values_at(20)["dpo"]["margin"] == sim["dpo"]["margin"][20]
    explorer.set(ches=-0.5)  # a parameter change re-trains
    assert explorer.sim is not sim and explorer.sim["dpo"]["logp_chosen"][-1] > explorer.sim["dpo"]["logp_chosen"][0]
    with pytest.raises(DynamicsError, match="--ches must be"):
        explorer.set(ches=5)


@pytest.mark.parametrize("name, steps", [("likelihood-displacement", 20), ("trust-region", 3)])
def test_explorer_image_fits_a_notebook_at_its_pixel_size(name, steps):
    """A notebook's output area is ~844 px wide at a 1280 px window: the PNG is narrower and pinned to its size."""
    pytest.importorskip("ipywidgets")
    import io

    from PIL import Image

    from lossviz.dynamics.explorer import MAX_WIDTH_PX, DynamicsExplorer
    from lossviz.plots.layout_check import collisions

    explorer = DynamicsExplorer(name, steps=steps)
    width, height = Image.open(io.BytesIO(explorer.image.value)).size
    assert width <= MAX_WIDTH_PX <= 844
    assert (explorer.image.width, explorer.image.height) == (str(width), str(height))
    layout = explorer.image.layout
    assert (layout.width, layout.min_width, layout.max_width, layout.height) == (f"{width}px",) * 3 + (f"{height}px",)
    fig = explorer.figure
    assert 9 * fig.dpi / 72 >= 12  # the 9 pt texts are drawn at least 12 px tall, as in the card explorers
    assert collisions(fig) == []
    boxes = [ax.get_position() for ax in fig.axes]
    lefts = sorted({round(b.x0, 3) for b in boxes})
    assert len(lefts) >= 2 and max(b.x1 for b in boxes) - min(b.x0 for b in boxes) > 0.8  # rows of panels side by side
    renderer = fig.canvas.get_renderer()
    for ax, box in zip(fig.axes, boxes):
        if box.x0 < min(lefts) + 0.05:  # a panel starting a row names its y axis, shared or not
            shown = [t for t in ax.get_yticklabels() if t.get_visible() and t.get_text()]
            assert shown and ax.get_ylabel(), f"{ax.get_title()!r}: no y tick labels or y label"
            assert all(t.get_window_extent(renderer).x0 >= 0 for t in shown)


def test_explorer_cursor_on_every_panel_over_steps():
    """Panels drawn against the step (a per-step change starts at step 1) get the scrubbing cursor; the features panel not."""
    pytest.importorskip("ipywidgets")
    from lossviz.dynamics.explorer import DynamicsExplorer

    explorer = DynamicsExplorer("likelihood-displacement", steps=20)
    titles = sorted(cursor.axes.get_title() for cursor in explorer.cursors)
    assert titles == ["log-probabilities", "one step's change of log π(y_c)", "the margin grows"]
    explorer.show_step(10)
    change = explorer.sim["dpo"]["logp_chosen"][10] - explorer.sim["dpo"]["logp_chosen"][9]
    assert any(dot.get_ydata()[0] == pytest.approx(change, rel=1e-9) for dot, _ in explorer.markers)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    import io

    from lossviz.dynamics import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # the built-in bar, whether or not tqdm is installed
    shown, hidden = Terminal(), io.StringIO()
    for stream in (shown, hidden):
        bar = progress.Progress(total=10, label="simulate x", stream=stream)
        for _ in range(10):
            bar.update()
        bar.close()
    assert "10/10" in shown.getvalue()
    assert hidden.getvalue() == ""


def test_adam_matches_torch_optim():
    """The simulations' Adam (written out to keep torch.optim's import cost away) is torch's Adam."""
    import torch

    from lossviz.dynamics.engine import Optimizer

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(5, generator=gen, dtype=torch.float64)
    target = torch.randn(5, generator=gen, dtype=torch.float64)
    ours, theirs = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    mine, reference = Optimizer([ours], "adam", 0.1), torch.optim.Adam([theirs], lr=0.1)
    for _ in range(50):
        for p, opt in ((ours, mine), (theirs, reference)):
            opt.zero_grad()
            (((p - target) ** 4).sum()).backward()
            opt.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
