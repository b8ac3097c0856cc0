"""The RL scenarios (length-bias, kl-estimators): each claim against closed forms and enumerations written here in numpy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lossviz.cli import main
from lossviz.dynamics import DynamicsError
from lossviz.dynamics.engine import simulate


# ------------------------------------------------------------------ references written from the formulas

def ref_advantages(rewards: np.ndarray, method: str, eps: float = 1e-6) -> np.ndarray:
    """One group: GRPO (R − mean)/(sample std + ε), Dr. GRPO R − mean, RLOO R − mean of the others."""
    g = len(rewards)
    if method == "grpo":
        return (rewards - rewards.mean()) / (rewards.std(ddof=1) + eps)
    if method == "dr_grpo":
        return rewards - rewards.mean()
    if method == "rloo":
        return np.array([rewards[i] - np.delete(rewards, i).mean() for i in range(g)])
    raise ValueError(method)


def ref_outcomes(ell: float, T: int):
    """Every way an answer with continue-probability σ(ℓ) can end: (probability, length L, ∂log p/∂ℓ)."""
    c = 1 / (1 + math.exp(-ell))
    out = []
    for t in range(1, T):  # the stop at position t: t − 1 fillers, L = t + 1
        out.append((c ** (t - 1) * (1 - c), t + 1, (t - 1) * (1 - c) - c))
    out.append((c ** (T - 1), T, (T - 1) * (1 - c)))  # no stop: T − 1 fillers, L = T
    return out


def brute_force_push(method, mode, G, groups, T, p_correct, ell_correct, ell_wrong):
    """−E[∂loss/∂ℓ_wrong] over every batch (answer kinds and outcomes of all B answers), the loss's weights per mode."""
    B = G * groups
    kinds = [(True, o) for o in ref_outcomes(ell_correct, T)] + [(False, o) for o in ref_outcomes(ell_wrong, T)]
    total = 0.0
    for batch in itertools.product(kinds, repeat=B):
        prob = np.prod([(p_correct if ok else 1 - p_correct) * o[0] for ok, o in batch])
        rewards = np.array([1.0 if ok else 0.0 for ok, _ in batch])
        adv = np.concatenate([ref_advantages(rewards[g * G:(g + 1) * G], method) for g in range(groups)])
        lengths = np.array([o[1] for _, o in batch], dtype=float)
        weights = {"seq-mean-token-mean": 1 / (B * lengths), "token-mean": np.full(B, 1 / lengths.sum()),
                   "seq-mean-token-sum": np.full(B, 1 / B), "seq-mean-token-sum-norm": np.full(B, 1 / (B * T))}[mode]
        # at ratio 1 the loss is −Σ w_i A_i Σ_t log π(y_it): the push on ℓ_wrong is Σ_i w_i A_i s_i over wrong answers
        push = sum(w * a * o[2] for w, a, (ok, o) in zip(weights, adv, batch) if not ok)
        total += prob * push
    return total


def reverse_optimum(q, r, beta):
    w = q * np.exp(r / beta)
    return w / w.sum()


def forward_optimum_binary(q_star, beta):
    """π(y*) maximising π(y*) − β·KL(π_ref‖π) for a reward 1 on y* only: r + β q/π = μ, so π_y = βq_y/μ off y*,
    π(y*) = βq*/(μ − 1), and Σπ = 1 gives μ² − (1 + β)μ + β(1 − q*) = 0 (the root above 1)."""
    mu = ((1 + beta) + math.sqrt((1 + beta) ** 2 - 4 * beta * (1 - q_star))) / 2
    return beta * q_star / (mu - 1)


def kl(p, q):
    return float((p * np.log(p / q)).sum())


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def numeric_gradient(f, x, h=1e-6):
    g = np.zeros_like(x)
    for j in range(len(x)):
        e = np.zeros_like(x)
        e[j] = h
        g[j] = (f(x + e) - f(x - e)) / (2 * h)
    return g


# ------------------------------------------------------------------ length-bias


@pytest.fixture(scope="module")
def lengths():
    return simulate("length-bias", losses="grpo/seq-mean-token-mean,dr_grpo/seq-mean-token-sum-norm")


def test_wrong_answers_grow_under_seq_mean_token_mean_and_not_under_dr_grpo(lengths):
    grpo, dr = lengths["grpo/seq-mean-token-mean"], lengths["dr_grpo/seq-mean-token-sum-norm"]
    start = float(grpo["length_wrong"][0])
    assert start == pytest.approx(sum(p * L for p, L, _ in ref_outcomes(math.log(3), 16)), rel=1e-12)
    assert grpo["length_wrong"][-1] > 14 and grpo["length_correct"][-1] < 2.5  # wrong → T = 16, correct → 2
    assert np.all(np.diff(grpo["length_logit_wrong"][:50]) > 0)  # pushed up at every early step, not by chance
    assert abs(dr["length_wrong"][-1] - start) < 0.6 and abs(dr["length_correct"][-1] - start) < 0.6
    assert np.all(dr["push_length_wrong_exact"] == 0.0)
    assert np.all(grpo["push_length_wrong_exact"] > 0)


@pytest.mark.parametrize("method", ["grpo", "dr_grpo", "rloo"])
def test_exact_push_equals_the_enumeration_of_every_batch(method):
    """Two groups of two answers, T = 3: all 6⁴ batches enumerated, weights written from the modes' definitions."""
    import torch

    from lossviz.dynamics.catalog_rl import exact_length_push
    from lossviz.dynamics.policies import AnswerLengthPolicy

    G, groups, T, p_correct, ell_c, ell_w = 2, 2, 3, 0.3, -0.4, 0.7
    policy = AnswerLengthPolicy(p_correct, 0.0, T)
    with torch.no_grad():
        policy.length_logits.copy_(torch.tensor([ell_c, ell_w], dtype=torch.float64))
    for mode in ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        want = brute_force_push(method, mode, G, groups, T, p_correct, ell_c, ell_w)
        got = exact_length_push(policy, method, mode, G, G * groups, p_correct)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15), mode
        if mode.startswith("seq-mean-token-sum"):
            assert want == pytest.approx(0.0, abs=1e-15)


def test_exact_push_at_the_start_every_mode(lengths):
    table = lengths.extra["exact_table"]
    for method in ("grpo", "dr_grpo", "rloo"):
        assert table[(method, "seq-mean-token-sum")] == 0 and table[(method, "seq-mean-token-sum-norm")] == 0
        biased = table[(method, "seq-mean-token-mean")]
        assert biased > 0.02
        # token-mean couples an answer to the whole batch of B = 64: the same sign, 1/B of the size or less
        assert 0 < table[(method, "token-mean")] < biased / 20
    # RLOO = G/(G−1)·Dr. GRPO, so its push is G/(G−1) = 8/7 times Dr. GRPO's in every mode
    assert table[("rloo", "seq-mean-token-mean")] == pytest.approx(8 / 7 * table[("dr_grpo", "seq-mean-token-mean")], rel=1e-12)


def test_measured_push_of_a_large_batch_matches_the_exact_one():
    """The production loss on 64 000 answers (8 000 groups): its gradient is a Monte Carlo mean of the per-answer pushes."""
    import torch

    import lossviz.losses as L
    from lossviz.dynamics.catalog_rl import exact_length_push
    from lossviz.dynamics.policies import DTYPE, AnswerLengthPolicy

    G, n, T = 8, 8000, 16
    policy = AnswerLengthPolicy(0.5, math.log(3), T)
    tokens, mask, wrong = policy.sample(G * n, torch.Generator().manual_seed(7))
    for mode, tolerance in (("seq-mean-token-mean", 2.5e-3), ("seq-mean-token-sum-norm", 5e-4)):
        policy.zero_grad()
        adv = L.group_advantages((~wrong).to(DTYPE), G, method="grpo")
        logp = policy.token_log_probs(tokens)
        L.PolicyLoss(loss_agg_mode=mode)(logp, logp.detach(), adv.unsqueeze(1) * mask, mask).backward()
        measured = -float(policy.length_logits.grad[1])
        assert measured == pytest.approx(exact_length_push(policy, "grpo", mode, G, 64, 0.5), abs=tolerance), mode


def test_policy_samples_and_log_probs_follow_the_outcomes():
    import torch

    from lossviz.dynamics.policies import AnswerLengthPolicy

    T = 6
    policy = AnswerLengthPolicy(0.25, 0.5, T)
    tokens, mask, wrong = policy.sample(40000, torch.Generator().manual_seed(1))
    assert wrong.double().mean().item() == pytest.approx(0.75, abs=0.01)
    lengths = mask.sum(dim=1).numpy()
    counts = {L: 0.0 for L in range(2, T + 1)}
    for p, L, _ in ref_outcomes(0.5, T):
        counts[L] += p
    for L, p in counts.items():
        assert (lengths == L).mean() == pytest.approx(p, abs=0.01), L
    logp = policy.token_log_probs(tokens[:200]).detach().numpy()
    m = mask[:200].numpy()
    assert np.all(logp[m == 0] == 0)
    c = 1 / (1 + math.exp(-0.5))
    for row, length, w in zip(logp, lengths[:200], wrong[:200].numpy()):
        stopped = length < T or row[T - 1] == pytest.approx(math.log(1 - c))
        fillers = length - 1 - (1 if stopped else 0)
        want = math.log(0.75 if w else 0.25) + fillers * math.log(c) + (math.log(1 - c) if stopped else 0)
        assert row.sum() == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------ kl-estimators


@pytest.fixture(scope="module")
def kls():
    return simulate("kl-estimators", losses="no-kl,k1,k2,k3,k1-in-reward")


def test_expected_gradients_of_the_estimators_are_the_two_kl_gradients():
    from lossviz.dynamics.catalog_rl import expected_kl_term_gradient

    rng = np.random.default_rng(0)
    theta, ref = rng.normal(size=5), rng.normal(size=5)
    q = softmax(ref)
    reverse = numeric_gradient(lambda x: kl(softmax(x), q), theta)
    forward = numeric_gradient(lambda x: kl(q, softmax(x)), theta)
    assert np.abs(expected_kl_term_gradient("k1", theta, ref)).max() < 1e-15
    for est, want in (("k2", reverse), ("k3", forward), ("k1+", reverse), ("k3+", reverse)):
        assert expected_kl_term_gradient(est, theta, ref) == pytest.approx(want, abs=1e-8), est
    assert np.abs(reverse - forward).max() > 0.05  # the two directions differ here


def test_k2_and_k3_stop_at_their_optima_and_k1_does_not_hold_back(kls):
    beta, q = 0.5, np.array([0.1] + [0.18] * 5)
    r = np.array([1.0, 0, 0, 0, 0, 0])
    rev, fwd = reverse_optimum(q, r, beta)[0], forward_optimum_binary(0.1, beta)
    assert kls.extra["reverse_optimum"][0] == pytest.approx(rev, rel=1e-12)
    assert kls.extra["forward_optimum"][0] == pytest.approx(fwd, rel=1e-9)
    tail = lambda loss, s="p_rewarded": float(kls[loss][s][-100:].mean())  # noqa: E731
    assert tail("k2") == pytest.approx(rev, abs=0.02)
    assert tail("k3") == pytest.approx(fwd, abs=0.02)
    assert tail("k1-in-reward") == pytest.approx(rev, abs=0.02)  # k1 in the reward is the reverse KL
    assert tail("k1") > 0.98 and tail("no-kl") > 0.98
    assert kls["k1"]["kl"][-1] == pytest.approx(kls["no-kl"]["kl"][-1], rel=0.02)
    assert kls["k1"]["kl"][-1] > 4 * kls["k2"]["kl"][-1]
    assert fwd - rev > 0.1  # far enough apart for the runs to tell them apart


def test_kl_figure_bars_are_the_expected_gradients(kls):
    fig = kls.figure()
    ax = fig.axes[2]
    bars = {p.get_gid(): p.get_height() for p in ax.patches if p.get_gid()}
    for est in ("k1", "k2", "k3"):
        got = np.array([bars[f"expected:{est}:{a}"] for a in range(6)])
        assert got == pytest.approx(kls.extra["grads"][est], abs=1e-15)
    assert np.array([bars[f"expected:k2:{a}"] for a in range(6)]) == pytest.approx(kls.extra["reverse_grad"], abs=1e-12)
    assert np.array([bars[f"expected:k3:{a}"] for a in range(6)]) == pytest.approx(kls.extra["forward_grad"], abs=1e-12)


# ------------------------------------------------------------------ API, CLI, figures


def test_figures_are_clean(lengths, kls, tmp_path):
    from lossviz.plots.layout_check import collisions

    for sim in (lengths, kls):
        fig = sim.figure()
        assert collisions(fig) == [], sim.scenario.name
        assert fig.get_figwidth() * 150 >= 1200


def test_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(DynamicsError, match="--losses has 'grpo/mean'"):
        simulate("length-bias", losses="grpo/mean", steps=1)
    with pytest.raises(DynamicsError, match="--group-size must be an integer"):
        simulate("length-bias", group_size=2.5, steps=1)
    assert main(["simulate", "kl-estimators", "--losses", "k4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--losses has 'k4'" in err, err


def test_runs_are_deterministic_for_a_seed():
    a = simulate("length-bias", steps=3, seed=2, losses="grpo/token-mean")
    b = simulate("length-bias", steps=3, seed=2, losses="grpo/token-mean")
    assert a.to_json() == b.to_json()
    c = simulate("kl-estimators", steps=3, seed=2)
    d = simulate("kl-estimators", steps=3, seed=2)
    assert c.to_json() == d.to_json()


def test_the_numbers_stated_in_the_claims(lengths, kls):
    """Every number in the two scenarios' claims, measured (the claims are printed in notebooks 08 and 09)."""
    grpo, dr = lengths["grpo/seq-mean-token-mean"], lengths["dr_grpo/seq-mean-token-sum-norm"]
    assert f"{grpo['length_wrong'][0]:.1f}" == "4.9" and f"{dr['length_wrong'][-1]:.1f}" == "4.7"
    assert f"{grpo['length_wrong'][-1]:.1f}" == "15.5" and f"{grpo['length_correct'][-1]:.1f}" == "2.0"
    table = lengths.extra["exact_table"]
    biased, coupled = table[("grpo", "seq-mean-token-mean")], table[("grpo", "token-mean")]
    assert round(biased / coupled) == 58 and f"{coupled:.4f}" == "0.0008" and f"{biased:.3f}" == "0.045"
    assert f"{kls['k1']['p_rewarded'][-1]:.3f}" == "0.999"
    assert f"{kls.extra['reverse_optimum'][0]:.3f}" == "0.451" and f"{kls['k2']['p_rewarded'][-1]:.3f}" == "0.443"
    assert f"{kls.extra['forward_optimum'][0]:.3f}" == "0.585" and f"{kls['k3']['p_rewarded'][-1]:.3f}" == "0.583"
    for name, text in (("length-bias", "15.5 tokens"), ("kl-estimators", "0.583")):
        from lossviz.dynamics import get

        assert text in get(name).claim
