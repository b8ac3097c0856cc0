"""Training dynamics of the preference losses of issue #14: fixed points, positive terms, label noise, length.

Every expected value is a closed form computed here in numpy/math from the loss's formula (catalogue §5),
not read from the production code; the simulations train with the production losses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossviz.dynamics.catalog import LENGTHS
from lossviz.dynamics.engine import simulate


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def tabular():
    """β = 0.5, ε = 0.1 (the defaults), 300 Adam steps."""
    return simulate("deterministic-preferences", losses="cdpo,exo,hinge,discopop,robust,sppo", progress=False)


@pytest.fixture(scope="module")
def tabular_beta2():
    return simulate("deterministic-preferences", losses="sppo,nca", beta=2.0, progress=False)


@pytest.fixture(scope="module")
def length():
    return simulate("length", progress=False)  # dpo, ln-dpo, simpo; β = 1, γ = 0.5, 200 SGD steps


# ------------------------------------------------------------------ deterministic preferences: where each loss stops


def test_exo_stops_where_cdpo_does(tabular):
    """KL([σ(βh), σ(−βh)] ‖ [1−ε, ε]) is 0 exactly where σ(βh) = 1 − ε: cDPO's minimum log((1−ε)/ε)/β."""
    beta, eps = 0.5, 0.1
    target = math.log((1 - eps) / eps) / beta
    for loss in ("exo", "cdpo"):
        assert tabular[loss]["margin"][-1] == pytest.approx(target, rel=1e-4), loss
        assert abs(tabular[loss]["push_chosen"][-1]) < 1e-5


def test_sppo_regresses_each_log_ratio_on_its_target(tabular_beta2):
    """(ρ_c − 1/(2β))² + (ρ_r + 1/(2β))²: ρ_c → 1/(2β), ρ_r → −1/(2β), so h → 1/β (β = 2)."""
    run = tabular_beta2["sppo"]
    assert run["logratio_chosen"][-1] == pytest.approx(0.25, abs=1e-4)
    assert run["logratio_rejected"][-1] == pytest.approx(-0.25, abs=1e-4)
    assert run["margin"][-1] == pytest.approx(0.5, abs=2e-4)


def test_sppo_chosen_target_is_out_of_reach_at_small_beta(tabular):
    """ρ_c ≤ −log π_ref(y_c) (π(y_c) ≤ 1): at β = 0.5 the target 1/(2β) = 1 lies beyond it, and y_c's push stays on."""
    run = tabular["sppo"]
    ceiling = -math.log(run["p_chosen"][0])  # step 0 is the reference
    assert run["p_chosen"][0] == pytest.approx(0.640, abs=5e-4)  # notebook 10 states π_ref(y_c) = 0.64
    assert ceiling < 1.0
    assert run["logratio_chosen"][-1] < ceiling and run["logratio_chosen"][-1] > ceiling - 0.05
    assert run["push_chosen"][-1] > 0.5  # −∂ℓ/∂ρ_c = −2(ρ_c − 1) > 2(1 − ceiling)
    assert math.isnan(run.params["fixed_point_margin"])


def test_nca_stops_the_chosen_log_ratio_at_log2_over_beta(tabular_beta2):
    """d/dx[−log σ(x) − ½ log σ(−x)] = −σ(−x) + ½σ(x) = 0 at x = βρ_c = log 2; ρ_r keeps falling."""
    run = tabular_beta2["nca"]
    assert run["logratio_chosen"][-1] == pytest.approx(math.log(2) / 2.0, rel=2e-3)
    tail = run["logratio_rejected"][-30:]
    assert np.all(np.diff(tail) < 0)


def test_hinge_stops_once_past_its_edge(tabular):
    """max(0, 1 − βh): the gradient is exactly 0 from βh = 1 on; Adam's momentum carries h past 1/β, then it stays."""
    run = tabular["hinge"]
    beta = 0.5
    assert run["push_chosen"][-1] == 0.0
    assert beta * run["margin"][-1] >= 1.0
    assert np.ptp(run["margin"][-30:]) < 1e-9
    assert np.any(run["push_chosen"][:10] == pytest.approx(beta, rel=1e-12))  # while βh < 1 the push is β


def _discopop_slope(z, tau=0.05):
    w = 1 / (1 + np.exp(-z / tau))
    dw = w * (1 - w) / tau
    return -dw * np.log1p(np.exp(-z)) - (1 - w) * (1 / (1 + np.exp(z))) + dw * np.exp(-z) - w * np.exp(-z)


def test_discopop_rests_on_the_wrong_side(tabular):
    """DiscoPOP's slope at z = βh = 0 is +0.78 (catalogue §5): from the reference it descends to its local minimum z* < 0."""
    assert _discopop_slope(0.0) == pytest.approx(0.784, abs=1e-3)
    grid = np.linspace(-0.5, 0.0, 500_001)
    slope = _discopop_slope(grid)
    z_star = grid[np.nonzero(np.diff(np.sign(slope)))[0][0]]  # the first sign change, − to +
    assert z_star == pytest.approx(-0.1186, abs=1e-3)
    run = tabular["discopop"]
    assert run["margin"][-1] == pytest.approx(z_star / 0.5, abs=1e-5)
    assert run["margin"][-1] < 0 and abs(run["push_chosen"][-1]) < 1e-5


def test_rdpo_never_stops_on_clean_data(tabular):
    """rDPO's push β[(1−ε)σ(−βh) + εσ(βh)]/(1−2ε) tends to βε/(1−2ε) > 0: the margin grows linearly."""
    beta, eps = 0.5, 0.1
    run = tabular["robust"]
    assert run["push_chosen"][-1] == pytest.approx(beta * eps / (1 - 2 * eps), rel=1e-3)
    growth = np.diff(run["margin"][-50:])
    assert np.all(growth > 0.1)
    assert run["margin"][-1] > 5 * tabular["cdpo"]["margin"][-1]


def test_rdpo_on_flipped_labels_trains_like_dpo_on_clean_ones():
    """rDPO's unbiasedness (Chowdhury et al. 2024): a batch with a fraction ε of its labels flipped gives rDPO the
    clean DPO loss exactly, ¾ℓ_r(h) + ¼ℓ_r(−h) = −log σ(βh) at ε = ¼, so the two trainings coincide step for step;
    DPO on the same noisy batch stops at the Bradley-Terry margin log 3/β instead."""
    import torch

    from lossviz.dynamics.catalog import train_pairs
    from lossviz.dynamics.declare import get
    from lossviz.dynamics.engine import Context
    from lossviz.dynamics.policies import TabularSoftmax

    class Quiet:
        def update(self, n=1):
            pass

    beta, eps = 0.5, 0.25
    reference = torch.randn(1, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    zeros = torch.zeros(4, dtype=torch.long)
    noisy = (torch.tensor([0, 0, 0, 1]), torch.tensor([1, 1, 1, 0]))  # one of four copies flipped
    clean = (torch.tensor([0]), torch.tensor([1]))
    trained, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # as simulate() runs: threads only add overhead on tensors of four numbers
    for name, loss, (chosen, rejected) in (("rdpo-noisy", "robust", noisy), ("dpo-clean", "dpo", clean),
                                           ("dpo-noisy", "dpo", noisy)):
        ctx = Context(get("deterministic-preferences"), (loss,), 150, 0.1, 0, {"beta": beta, "label_smoothing": eps}, Quiet())
        policy = TabularSoftmax(reference)
        train_pairs(ctx, loss, policy, zeros[: len(chosen)], chosen, rejected)
        logits = policy.logits.detach()[0]
        trained[name] = ((logits[0] - logits[1]) - (reference[0, 0] - reference[0, 1])).item()  # the margin h
    torch.set_num_threads(threads)
    assert trained["rdpo-noisy"] == pytest.approx(trained["dpo-clean"], rel=1e-9)
    assert trained["dpo-clean"] > 5
    assert trained["dpo-noisy"] == pytest.approx(math.log(3) / beta, rel=1e-3)


# ------------------------------------------------------------------ likelihood displacement: positive terms


@pytest.mark.parametrize("loss, weights", [
    ("apo-zero", lambda b, a, g: (b / 4, b / 4)),            # β σ(0) σ(0) on each log-ratio
    ("rpo", lambda b, a, g: (b / 2 + a, b / 2)),             # DPO's β/2 plus α from the NLL −log π(y_c)/1
    ("simpo", lambda b, a, g: (b * sigmoid(g), b * sigmoid(g))),  # β σ(−(β·0 − γ))
    ("sppo", lambda b, a, g: (1 / b, 1 / b)),                # −2(0 − 1/(2β)), 2(0 + 1/(2β))
    ("cpo", lambda b, a, g: (b / 2 + a, b / 2)),             # at the uniform reference CPO is RPO
])
@pytest.mark.parametrize("ches", [0.5, -0.7])
def test_first_step_of_losses_that_weigh_chosen_and_rejected_apart(loss, weights, ches):
    """At θ = 0 (uniform, φ̄ = 0): Δlog π(y_c) = η[w_c‖φ_c‖² − w_r φ_r·φ_c] = η[w_c − w_r(1 + ches)]."""
    beta, alpha, gamma, lr = 0.5, 1.0, 0.5, 1e-4
    w_c, w_r = weights(beta, alpha, gamma)
    closed = lr * (w_c - w_r * (1 + ches))
    run = simulate("likelihood-displacement", losses=loss, ches=ches, steps=1, lr=lr, progress=False)[loss]
    observed = run["logp_chosen"][1] - run["logp_chosen"][0]
    assert run["logp_chosen_first_order"][1] - run["logp_chosen"][0] == pytest.approx(closed, rel=1e-9)
    assert observed == pytest.approx(closed, rel=2e-3)


@pytest.mark.parametrize("alpha, rises", [(0.10, False), (0.15, True)])
def test_rpo_needs_alpha_above_beta_ches_over_two(alpha, rises):
    """RPO's first step raises log π(y_c) iff β/2 + α > (β/2)(1 + ches), i.e. α > β·ches/2 = 0.125 here."""
    run = simulate("likelihood-displacement", losses="rpo", alpha=alpha, steps=1, lr=1e-4, progress=False)["rpo"]
    assert (run["logp_chosen"][1] > run["logp_chosen"][0]) == rises


def test_positive_terms_stop_the_displacement():
    """At CHES = 0.5 DPO, SimPO and hinge lower log π(y_c); an NLL term on y_c (RPO, CPO, ORPO, α = 1, λ = 0.1) raises it."""
    sim = simulate("likelihood-displacement", losses="dpo,simpo,hinge,rpo,cpo,orpo", progress=False)
    for loss in ("dpo", "simpo", "hinge"):
        assert sim[loss]["logp_chosen"][-1] < sim[loss]["logp_chosen"][0] - 1, loss
    for loss in ("rpo", "cpo", "orpo"):
        run = sim[loss]
        assert run["logp_chosen"][-1] > -0.2 > run["logp_chosen"][0], loss  # π(y_c) from 1/3 to above 0.8
        assert run["margin"][-1] > 2


# ------------------------------------------------------------------ noisy labels


def test_weights_at_the_reference_match_each_loss():
    """At θ = 0 every log-ratio is 0; the per-pair weight ½(|∂ℓ_i/∂log π_c| + |∂ℓ_i/∂log π_r|)·N of each loss in closed form."""
    beta, eps, gamma = 0.5, 0.2, 0.5
    expected = {
        "robust": beta * ((1 - eps) * 0.5 + eps * 0.5) / (1 - 2 * eps),
        "hinge": beta,
        "exo": beta * 0.25 * math.log((1 - eps) / eps),  # σ(0)σ(0)·|0 − log((1−ε)/ε)|
        "sppo": 1 / beta,
        "apo-zero": beta / 4,
        "bco": beta / 2,
        "nca": beta / 4,  # y_c: β(σ(0) − ½σ(0)); y_r: ½βσ(0)
        "simpo": beta * sigmoid(gamma),
        "ipo": 2 * (1 / (2 * beta)),
    }
    sim = simulate("noisy-labels", losses=",".join(expected), steps=1, progress=False)
    for loss, value in expected.items():
        assert sim[loss]["weight_clean"][0] == pytest.approx(value, rel=1e-12), loss
        assert sim[loss]["weight_flipped"][0] == pytest.approx(value, rel=1e-12), loss


@pytest.fixture(scope="module")
def noisy():
    return simulate("noisy-labels", losses="dpo,kto,robust,hinge,apo-zero,ipo,sppo", progress=False)


def test_hinge_pulls_every_flipped_pair_with_its_full_weight(noisy):
    """hinge's weight is β·1[βh < 1]: the flipped pairs (h < 0) keep β to the end, the clean ones drop out."""
    run = noisy["hinge"]
    np.testing.assert_allclose(run["weight_flipped"], 0.5, rtol=1e-12)
    assert run["weight_clean"][-1] < 0.5 * run["weight_clean"][0]


def test_apo_zero_is_kto_with_its_reference_point_at_zero(noisy):
    for series in ("accuracy", "margin", "kl", "weight_flipped", "weight_clean"):
        np.testing.assert_allclose(noisy["apo-zero"][series], noisy["kto"][series], atol=1e-5)


def test_label_noise_claims(noisy):
    """The numbers of the scenario's claim (defaults: flip = 0.2, β = 0.5, ε = 0.2)."""
    beta, eps = 0.5, 0.2
    rdpo, dpo = noisy["robust"], noisy["dpo"]
    assert rdpo["accuracy"][-1] == pytest.approx(0.93, abs=0.005)
    assert rdpo["kl"][-1] == pytest.approx(1.54, abs=0.005) and dpo["kl"][-1] == pytest.approx(0.83, abs=0.005)
    assert np.all(rdpo["weight_clean"] > beta * eps / (1 - 2 * eps))  # the floor of rDPO's weight
    assert noisy["ipo"]["kl"][-1] == pytest.approx(0.05, abs=0.005)
    assert noisy["sppo"]["kl"][-1] == pytest.approx(0.06, abs=0.005)
    for loss in ("ipo", "sppo"):  # unbounded weights: the flipped pairs pull harder as they are ranked worse
        assert noisy[loss]["weight_flipped"][-1] > noisy[loss]["weight_flipped"][0]


# ------------------------------------------------------------------ length


def test_each_pair_pushes_in_proportion_to_its_length_under_dpo_only(length):
    """Step 0 (h = 0): DPO's push on each token is β σ(0)/N for every pair, so pair L gets L/ΣL of it;
    LN-DPO's is β σ(0)/(N·L), the same total for every pair."""
    beta, n = 1.0, len(LENGTHS)
    for k, L in enumerate(LENGTHS):
        assert length["dpo"][f"push_L{L}"][0] == pytest.approx(beta * 0.5 / n, rel=1e-12)
        assert length["ln-dpo"][f"push_L{L}"][0] == pytest.approx(beta * 0.5 / (n * L), rel=1e-12)
        assert length["dpo"][f"share_L{L}"][0] == pytest.approx(L / sum(LENGTHS), rel=1e-12)
        assert length["ln-dpo"][f"share_L{L}"][0] == pytest.approx(1 / n, rel=1e-12)


def test_the_margin_dpo_sees_grows_with_length_and_the_normalised_ones_hardly(length):
    """The claim's numbers: DPO's βh 3.5 → 46.9 from L = 4 to 32; LN-DPO's βh/L 1.7 → 2.9; SimPO's 1.5 → 3.0."""
    first, last = LENGTHS[0], LENGTHS[-1]
    end = {loss: (length[loss][f"seen_L{first}"][-1], length[loss][f"seen_L{last}"][-1]) for loss in length.runs}
    assert end["dpo"] == pytest.approx((3.465, 46.91), abs=0.01)
    assert end["ln-dpo"] == pytest.approx((1.688, 2.948), abs=0.01)
    assert end["simpo"] == pytest.approx((1.507, 2.987), abs=0.01)
    assert end["dpo"][1] / end["dpo"][0] > 10
    for loss in ("ln-dpo", "simpo"):
        assert end[loss][1] / end[loss][0] < 2.1
        seen = [length[loss][f"seen_L{L}"][-1] for L in LENGTHS]
        assert np.all(np.diff(seen) > 0)  # what is left: the first and stop tokens weigh more in a short response
    # DPO is done with the long pairs first: at the end almost all of its push comes from the shortest
    assert length["dpo"][f"share_L{first}"][-1] > 0.99


def test_the_bigram_margin_is_affine_in_length(length):
    """Without positions, log π(y_c) = log π(1|start) + (L−2)·log π(1|1) + log π(0|1): h is affine in L at every step."""
    for loss in length.runs:
        h = np.stack([length[loss][f"margin_L{L}"] for L in LENGTHS])  # (lengths, steps)
        slopes = np.diff(h, axis=0) / np.diff(np.asarray(LENGTHS, dtype=float))[:, None]
        np.testing.assert_allclose(slopes[1:], slopes[:1].repeat(len(LENGTHS) - 2, axis=0), rtol=1e-8, atol=1e-10)
    for k, L in enumerate(LENGTHS):  # what the loss sees, from the margin: βh, βh/L
        np.testing.assert_allclose(length["dpo"][f"seen_L{L}"], length["dpo"][f"margin_L{L}"], rtol=1e-12)
        np.testing.assert_allclose(length["ln-dpo"][f"seen_L{L}"], length["ln-dpo"][f"margin_L{L}"] / L, rtol=1e-12)


# ------------------------------------------------------------------ figures


@pytest.mark.parametrize("scenario, kwargs", [
    ("length", {}),
    ("deterministic-preferences", {"losses": "ipo,cdpo,hinge,sppo,exo,discopop", "beta": 2.0}),
    ("likelihood-displacement", {"losses": "dpo,rpo,apo-zero,simpo,orpo,sppo", "steps": 40}),
    ("noisy-labels", {"losses": "dpo,cdpo,kto,robust,hinge,sppo,apo-zero,simpo", "steps": 40}),
])
def test_figures_with_many_losses_are_clean(scenario, kwargs):
    from lossviz.plots.layout_check import collisions

    sim = simulate(scenario, progress=False, **kwargs)
    fig = sim.figure()
    assert collisions(fig) == [], scenario
    assert fig.get_figwidth() * 150 >= 1200
    if len(sim.runs) > 3:  # a legend outside the panels names every loss once, each in its own colour
        from lossviz.dynamics.figures import LOSS_LABELS

        texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        for loss in sim.runs:
            assert sum(t.startswith(LOSS_LABELS[loss]) and not t.startswith(LOSS_LABELS[loss] + "-") for t in texts) == 1, (loss, texts)
        colours = [line.get_color() for legend in fig.legends for line in legend.get_lines()][:len(sim.runs)]
        assert len(set(colours)) == len(sim.runs), colours


# ------------------------------------------------------------------ notebook 11's distillation claims


def _one_bump_student(beta, steps=300, lr=0.05):
    """Notebook 11's run: a one-bump student (centre μ, width s) of a two-mode teacher, trained by GKDLoss with Adam."""
    import torch

    from lossviz.losses import GKDLoss

    v = torch.arange(21, dtype=torch.float64)
    teacher = torch.logaddexp(-(v - 5) ** 2 / 2, -(v - 15) ** 2 / 2 + math.log(0.8)).reshape(1, 1, -1)
    mu = torch.tensor(12.5, dtype=torch.float64, requires_grad=True)
    log_s = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([mu, log_s], lr=lr)
    loss = GKDLoss(beta=beta)
    for _ in range(steps):
        value = loss((-(v - mu) ** 2 / (2 * log_s.exp() ** 2)).reshape(1, 1, -1), teacher, torch.zeros(1, 1, dtype=torch.long))
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return mu.item(), log_s.exp().item(), value.item()


@pytest.mark.slow  # ten Adam runs of 300 steps and torch.optim's import: 3–8 s on the 2-core machine
def test_forward_kl_covers_and_reverse_kl_seeks_the_nearer_mode():
    """Forward KL (β = 0): between the modes and wide; reverse KL (β = 1): exactly the component at 15 (σ = 1),
    whose reverse KL is log(1.8/0.8), worse than the heavier mode's log 1.8 (notebook 11, exercise 1)."""
    mu, s, _ = _one_bump_student(0.0)
    assert 8 < mu < 12 and s > 4
    mu, s, value = _one_bump_student(1.0)
    assert mu == pytest.approx(15.0, abs=0.01) and s == pytest.approx(1.0, abs=0.01)
    assert value == pytest.approx(math.log(1.8 / 0.8), abs=1e-3)
    from lossviz.teaching import solution

    assert solution("gkd-1") == pytest.approx(math.log(1.8), abs=1e-6) and solution("gkd-1") < value
    assert solution("gkd-5") == pytest.approx(9.0, rel=1e-12)  # τ² at τ = 3
