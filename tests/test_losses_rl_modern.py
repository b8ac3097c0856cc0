"""The RL losses of 2025-26 (issue #13): PolicyLoss types and aggregation modes, agg_loss,
compute_approx_kl, group_advantages == independent float64 references (tests/references_rl.py),
the worked example of the length bias, sturdiness at extreme log-ratios and masked NaNs, metrics,
bad inputs."""

import math

import pytest
import torch

import references as ref_seed
import references_rl as ref
from lossviz import losses as L

REL = 1e-10
F64 = torch.float64


def close(actual, expected, what, rel=REL):
    expected = torch.as_tensor(expected, dtype=F64)
    actual = torch.as_tensor(actual, dtype=F64)
    scale = max(expected.abs().max().item(), 1e-300) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale, msg=lambda m: f"{what}: {m}")


def batch(seed, rows=3, cols=5, spread=0.5, per_seq_adv=False, masked=True, empty_row=False):
    gen = torch.Generator().manual_seed(seed)
    lp = (torch.randn(rows, cols, generator=gen, dtype=F64) * spread - 1.0).requires_grad_()
    old = torch.randn(rows, cols, generator=gen, dtype=F64) * spread - 1.0
    adv = torch.randn(rows, 1 if per_seq_adv else cols, generator=gen, dtype=F64)
    mask = None
    if masked:
        mask = (torch.rand(rows, cols, generator=gen) > 0.3).to(F64)
        mask[:, 0] = 1.0
        if empty_row:
            mask[1] = 0.0
    return lp, old, adv, mask


def loss_and_grad(module, lp, old, adv, mask):
    loss = module(lp, old, adv, mask)
    (g,) = torch.autograd.grad(loss, [lp])
    return loss.detach(), g


def ref_loss_and_grad(kind, lp, old, adv, mask, **kw):
    leaf = lp.detach().clone().requires_grad_()
    loss = ref.policy(kind, leaf, old, adv, mask, **kw)
    (g,) = torch.autograd.grad(loss, [leaf])
    return loss.detach(), g


# ----------------------------------------------------------------------------- every type and mode vs the reference

TOKEN_TYPES = ("ppo", "cispo", "sapo", "gpg")
CONFIGS = []
for kind in TOKEN_TYPES:
    for mode in (None,) + ref.MODES:
        CONFIGS.append((kind, mode))
for kind in ("gspo", "gmpo"):
    for mode in (None, "seq-mean-token-mean"):
        CONFIGS.append((kind, mode))


def ctor_and_ref(kind):
    """Constructor kwargs and the reference's clip bounds for a type, with a clip that binds."""
    if kind == "cispo":
        return dict(clip_eps=0.2, clip_eps_high=0.28), dict(eps_low=None, eps_high=0.28)
    if kind == "gmpo":
        return dict(clip_eps=0.4), dict(eps_low=0.4, eps_high=0.4)
    if kind == "sapo":
        return dict(tau_pos=0.7, tau_neg=1.3), dict(tau_pos=0.7, tau_neg=1.3)
    return dict(clip_eps=0.2, clip_eps_high=0.28), dict(eps_low=0.2, eps_high=0.28)


@pytest.mark.parametrize("kind,mode", CONFIGS, ids=[f"{k}-{m}" for k, m in CONFIGS])
@pytest.mark.parametrize("variant", ["mask", "no-mask", "empty-row", "per-seq-adv"])
def test_policy_type_and_mode_match_reference(kind, mode, variant):
    lp, old, adv, mask = batch(
        seed=hash((kind, str(mode), variant)) % 1000 + 1,
        masked=variant != "no-mask",
        empty_row=variant == "empty-row",
        per_seq_adv=variant == "per-seq-adv" or kind in ("gspo", "gmpo") and variant == "mask",
    )
    kw, ref_kw = ctor_and_ref(kind)
    module = L.PolicyLoss(policy_loss_type=kind, loss_agg_mode=mode, **kw)
    loss, g = loss_and_grad(module, lp, old, adv, mask)
    want, want_g = ref_loss_and_grad(kind, lp, old, adv, mask, mode=mode, **ref_kw)
    assert torch.isfinite(g).all()
    close(loss, want, f"{kind} {mode} loss")
    close(g, want_g, f"{kind} {mode} gradient")


@pytest.mark.parametrize("variant", [dict(dual_clip=1.5), dict(clip_eps_low=0.1, clip_eps_high=0.3, dual_clip=2.0),
                                     dict(token_level_loss=True), dict(loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=7.0)])
def test_ppo_options_match_reference(variant):
    lp, old, adv, mask = batch(seed=11, spread=0.6, empty_row=True)
    module = L.PolicyLoss(0.2, **variant)
    loss, g = loss_and_grad(module, lp, old, adv, mask)
    want, want_g = ref_loss_and_grad(
        "ppo", lp, old, adv, mask, eps_low=variant.get("clip_eps_low", 0.2), eps_high=variant.get("clip_eps_high", 0.2),
        dual_clip=variant.get("dual_clip"), mode=variant.get("loss_agg_mode"), token_level=variant.get("token_level_loss", False),
        scale_factor=variant.get("loss_scale_factor"))
    close(loss, want, f"{variant} loss")
    close(g, want_g, f"{variant} gradient")


def test_default_is_v053_and_token_level_alias():
    lp, old, adv, mask = batch(seed=5, spread=0.6)
    default, _ = loss_and_grad(L.PolicyLoss(0.2), lp, old, adv, mask)
    close(default, ref_seed.policy(0.2, 0.2, None, False, lp.detach(), old, adv, mask), "default == v0.5.3 reference")
    alias = L.PolicyLoss(0.2, token_level_loss=True)(lp, old, adv, mask)
    named = L.PolicyLoss(0.2, loss_agg_mode="token-mean")(lp, old, adv, mask)
    assert alias.item() == named.item()


def test_cispo_lower_bound_when_given():
    lp, old, adv, mask = batch(seed=8, spread=0.8)
    loss, g = loss_and_grad(L.PolicyLoss(0.2, clip_eps_low=0.1, policy_loss_type="cispo"), lp, old, adv, mask)
    want, want_g = ref_loss_and_grad("cispo", lp, old, adv, mask, eps_low=0.1, eps_high=0.2)
    close(loss, want, "cispo with a lower bound")
    close(g, want_g, "cispo with a lower bound, gradient")


def test_gspo_equals_the_paper_sequence_form_for_sequence_advantages():
    """verl's token form with a constant advantage per sequence == GSPO §4 (gradient through s_i)."""
    lp, old, adv, mask = batch(seed=21, spread=0.3, per_seq_adv=True, empty_row=True)
    kw = dict(clip_eps_low=0.05, clip_eps_high=0.08)
    loss, g = loss_and_grad(L.PolicyLoss(0.2, policy_loss_type="gspo", **kw), lp, old, adv, mask)
    leaf = lp.detach().clone().requires_grad_()
    want = ref.gspo_sequence(leaf, old, adv, mask, 0.05, 0.08)
    (want_g,) = torch.autograd.grad(want, [leaf])
    close(loss, want, "gspo vs sequence form")
    close(g, want_g, "gspo vs sequence form, gradient")


def test_sapo_gate_facts():
    """f(1) = 2/tau and f'(1) = 1: at r = 1 the loss is -2A/tau and its gradient -A, PPO's."""
    lp = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    adv = torch.tensor([[1.5, -2.0]], dtype=F64)
    loss = L.PolicyLoss(policy_loss_type="sapo", tau_pos=0.5, tau_neg=2.0, loss_agg_mode="seq-mean-token-sum")(lp, lp.detach(), adv)
    close(loss, -2 * 1.5 / 0.5 + 2 * 2.0 / 2.0, "f(1) = 2/tau")
    (g,) = torch.autograd.grad(loss, [lp])
    close(g, -adv, "f'(1) = 1")


def test_cispo_gradient_never_vanishes():
    """At r = e^3, far past the clip, CISPO still pushes: -(1 + eps_h) A per token; PPO gives 0."""
    lp = torch.full((1, 1), 3.0, dtype=F64, requires_grad=True)
    old, adv = torch.zeros(1, 1, dtype=F64), torch.ones(1, 1, dtype=F64)
    (g,) = torch.autograd.grad(L.PolicyLoss(0.2, policy_loss_type="cispo")(lp, old, adv), [lp])
    assert g.item() == pytest.approx(-1.2, rel=1e-15)
    (g_ppo,) = torch.autograd.grad(L.PolicyLoss(0.2)(lp, old, adv), [lp])
    assert g_ppo.item() == 0.0


# ----------------------------------------------------------------------------- agg_loss and the worked example


@pytest.mark.parametrize("mode", ref.MODES)
@pytest.mark.parametrize("mask_kind", ["binary-empty-row", "fractional", "none", "bool"])
def test_agg_loss_matches_reference(mode, mask_kind):
    gen = torch.Generator().manual_seed(3)
    loss_mat = torch.randn(4, 6, generator=gen, dtype=F64, requires_grad=True)
    mask = (torch.rand(4, 6, generator=gen) > 0.4).to(F64)
    mask[:, 0] = 1.0
    if mask_kind == "binary-empty-row":
        mask[2] = 0.0
    elif mask_kind == "fractional":
        mask = mask * torch.rand(4, 6, generator=gen, dtype=F64)
    elif mask_kind == "none":
        mask = None
    factor = 9.0 if mode == "seq-mean-token-sum-norm" and mask_kind == "fractional" else None
    call_mask = mask.bool() if mask_kind == "bool" else mask
    got = L.agg_loss(loss_mat, call_mask, mode, loss_scale_factor=factor)
    leaf = loss_mat.detach().clone().requires_grad_()
    want = ref.agg(leaf, mask, mode, factor)
    close(got, want, f"agg_loss {mode}")
    (g,) = torch.autograd.grad(got, [loss_mat])
    (want_g,) = torch.autograd.grad(want, [leaf])
    close(g, want_g, f"agg_loss {mode} weights")


def test_fully_masked_sequences_are_not_counted():
    """verl: a fully masked sequence leaves the sequence count; the default (None) counts it (v0.5.3 form)."""
    ones = torch.ones(3, 4, dtype=F64)
    mask = torch.ones(3, 4, dtype=F64)
    mask[1] = 0.0
    assert L.agg_loss(ones, mask, "seq-mean-token-mean").item() == 1.0  # 2 sequences of mean 1
    assert L.agg_loss(ones, mask, "seq-mean-token-sum").item() == 4.0
    assert L.agg_loss(ones, mask, "seq-mean-token-sum-norm").item() == 1.0  # 4 tokens / (2 * T = 4)
    assert L.agg_loss(ones, torch.zeros(3, 4), "seq-mean-token-mean").item() == 0.0
    # PolicyLoss: gpg with A = -1 and log pi = 1 per token: token loss 1
    lp = torch.ones(3, 4, dtype=F64)
    adv = -torch.ones(3, 1, dtype=F64)
    named = L.PolicyLoss(policy_loss_type="gpg", loss_agg_mode="seq-mean-token-mean")(lp, lp, adv, mask)
    legacy = L.PolicyLoss(policy_loss_type="gpg")(lp, lp, adv, mask)
    assert named.item() == 1.0 and legacy.item() == pytest.approx(2.0 / 3.0, rel=1e-15)


WORKED = {  # per-token weight of the correct (10 tokens) and the wrong (100 tokens) answer
    "seq-mean-token-mean": (1 / 20, 1 / 200),
    "token-mean": (1 / 110, 1 / 110),
    "seq-mean-token-sum-norm": (1 / 200, 1 / 200),
}


@pytest.mark.parametrize("mode", list(WORKED))
def test_worked_example_weights(mode):
    """Catalogue §2 / Dr. GRPO §3.1: one group, correct 10 tokens A=+1, wrong 100 tokens A=-1,
    padded to 100: weights 10:1 under seq-mean-token-mean, 1:1 under token-mean and Dr. GRPO."""
    mask = torch.zeros(2, 100, dtype=F64)
    mask[0, :10] = 1.0
    mask[1] = 1.0
    adv = torch.tensor([[1.0], [-1.0]], dtype=F64)
    lp = torch.full((2, 100), -1.0, dtype=F64, requires_grad=True)
    loss = L.PolicyLoss(policy_loss_type="gpg", loss_agg_mode=mode)(lp, lp.detach(), adv, mask)
    (g,) = torch.autograd.grad(loss, [lp])
    correct, wrong = WORKED[mode]
    close(g[0, :10], torch.full((10,), -correct, dtype=F64), f"{mode} correct")
    close(g[1], torch.full((100,), wrong, dtype=F64), f"{mode} wrong")
    assert (g[0, 10:] == 0).all()
    w = ref.agg_weights(mask, (2, 100), mode)
    assert w[0][0] == pytest.approx(correct, rel=1e-15) and w[1][0] == pytest.approx(wrong, rel=1e-15)
    assert (-g[0, 0] / g[1, 0]).item() == pytest.approx({"seq-mean-token-mean": 10.0}.get(mode, 1.0), rel=1e-12)


# ----------------------------------------------------------------------------- KL estimators

D_GRID = [-100.0, -20.0, -3.0, -0.5, -1e-3, 0.0, 1e-3, 0.7, 4.0, 100.0]


@pytest.mark.parametrize("name", ["k1", "k2", "k3", "abs", "k1+", "k3+"])
def test_kl_estimators_value_and_gradient(name):
    d = torch.tensor(D_GRID, dtype=F64)
    base = torch.linspace(-2.0, -0.5, len(D_GRID), dtype=F64)
    lp = (base + d).requires_grad_()
    value = L.compute_approx_kl(lp, base, kl_estimator=name)
    assert value.shape == d.shape and value.dtype == F64
    (g,) = torch.autograd.grad(value.sum(), [lp])
    for k, x in enumerate((lp - base).detach().tolist()):
        want, want_g = ref.kl_value_and_gradient(name, x)
        assert value[k].item() == pytest.approx(want, rel=1e-9, abs=1e-12), f"{name} value at d={x}"
        assert g[k].item() == pytest.approx(want_g, rel=1e-9, abs=1e-12), f"{name} gradient at d={x}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["k1", "k2", "k3", "abs", "k1+", "k3+"])
def test_kl_estimators_finite_at_plus_minus_100(dtype, name):
    """OpenRLHF's k3 at d = -100 overflows inside exp and its gradient is NaN; here value and gradient are finite."""
    lp = torch.tensor([-100.0, 100.0], dtype=dtype, requires_grad=True)
    value = L.compute_approx_kl(lp, torch.zeros(2, dtype=dtype), name)
    (g,) = torch.autograd.grad(value.sum(), [lp])
    assert torch.isfinite(value).all() and torch.isfinite(g).all(), (value, g)
    assert value.dtype == torch.float32
    if name == "k3":  # the documented clamp: below -x_max = -66.5 the value is k3(-66.5), the gradient 0
        x_max = L.log_ratio_limit(torch.float32)
        assert value[0].item() == pytest.approx(math.expm1(x_max) - x_max, rel=1e-6)
        assert g[0].item() == 0.0 and g[1].item() == 1.0
    if name == "k3+":
        assert g[0].item() == -100.0


@pytest.mark.parametrize("name,expected", [("k1", "zero"), ("k2", "reverse"), ("k3", "forward"), ("k1+", "reverse"), ("k3+", "reverse")])
def test_kl_estimator_expected_gradient_on_a_tabular_policy(name, expected):
    """Summing over the 6 actions of a softmax policy: E_pi[grad k] is 0 (k1), grad KL(pi||ref)
    (k2 and the straight-through k1+, k3+) or grad KL(ref||pi) (k3), as the kl module derives."""
    gen = torch.Generator().manual_seed(12)
    theta = torch.randn(6, generator=gen, dtype=F64, requires_grad=True)
    ref_logp = torch.log_softmax(torch.randn(6, generator=gen, dtype=F64), 0)
    logp = torch.log_softmax(theta, 0)
    probs = logp.exp().detach()  # the sampling distribution is not differentiated
    (g,) = torch.autograd.grad((probs * L.compute_approx_kl(logp, ref_logp, name)).sum(), [theta])
    if expected == "zero":
        assert g.abs().max().item() < 1e-15, g
        return
    logp2 = torch.log_softmax(theta, 0)
    kl = (logp2.exp() * (logp2 - ref_logp)).sum() if expected == "reverse" else (ref_logp.exp() * (ref_logp - logp2)).sum()
    (want,) = torch.autograd.grad(kl, [theta])
    close(g, want, f"{name}: {expected} KL gradient", rel=1e-12)


# ----------------------------------------------------------------------------- group advantages


@pytest.mark.parametrize("method", ["grpo", "dr_grpo", "rloo", "reinforce_baseline"])
@pytest.mark.parametrize("shape", ["flat", "2d"])
def test_group_advantages_match_reference(method, shape):
    gen = torch.Generator().manual_seed(4)
    rewards = torch.randn(3 * 5, generator=gen, dtype=F64)
    rewards[10:15] = 0.5  # a group whose rewards are all equal
    call = rewards if shape == "flat" else rewards.reshape(3, 5)
    got = L.group_advantages(call, 5, method, eps=1e-3)
    assert got.shape == call.shape
    want = ref.advantages(rewards.tolist(), 5, method, eps=1e-3)
    close(got.reshape(-1), torch.tensor(want, dtype=F64), f"{method} {shape}")


def test_rloo_identity_and_grpo_eps():
    gen = torch.Generator().manual_seed(9)
    rewards = torch.rand(4, 6, generator=gen, dtype=F64)
    G = 6
    close(L.group_advantages(rewards, G, "rloo"), G / (G - 1) * (rewards - rewards.mean(-1, keepdim=True)), "RLOO identity")
    flat = torch.tensor([1.0, 0.0], dtype=F64)  # std (divisor G-1) = sqrt(1/2)
    assert L.group_advantages(flat, 2, "grpo", eps=0.5).tolist() == pytest.approx(
        [0.5 / (math.sqrt(0.5) + 0.5), -0.5 / (math.sqrt(0.5) + 0.5)], rel=1e-15)
    assert L.group_advantages(torch.ones(4), 2, "grpo").tolist() == [0.0] * 4


# ----------------------------------------------------------------------------- sturdiness

ALL_TYPES = ("ppo", "gspo", "cispo", "sapo", "gmpo", "gpg")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ALL_TYPES)
def test_log_ratio_of_plus_minus_100_is_finite(kind, dtype):
    """OpenRLHF HEAD's GSPO gives NaN gradients at a log-ratio of 100; every type here is finite."""
    x = torch.tensor([[100.0, 100.0], [-100.0, -100.0], [100.0, -100.0], [100.0, 100.0], [-100.0, -100.0]])
    adv = torch.tensor([[1.0], [1.0], [-1.0], [-1.0], [-1.0]])
    for sign in (1.0, -1.0):
        lp = x.to(dtype).requires_grad_()
        old = torch.zeros_like(lp)
        mode = {"ppo": "token-mean", "sapo": "seq-mean-token-sum-norm"}.get(kind)
        loss, metrics = L.PolicyLoss(0.2, policy_loss_type=kind, loss_agg_mode=mode)(
            lp, old, (sign * adv).to(dtype), return_metrics=True)
        (g,) = torch.autograd.grad(loss, [lp])
        assert torch.isfinite(loss) and torch.isfinite(g).all(), (kind, dtype, sign, loss, g)
        assert all(torch.isfinite(v) for v in metrics.values())


def test_log_ratio_clamp_zeroes_the_gradient_beyond_it():
    """The documented clamp of GSPO/GMPO: log s above log_ratio_max counts as log_ratio_max, gradient 0."""
    for kind in ("gspo", "gmpo"):
        lp = torch.full((1, 3), 25.0, dtype=F64, requires_grad=True)
        adv = -torch.ones(1, 1, dtype=F64)
        loss = L.PolicyLoss(0.2, policy_loss_type=kind, log_ratio_max=20.0)(lp, torch.zeros(1, 3, dtype=F64), adv)
        (g,) = torch.autograd.grad(loss, [lp])
        assert loss.item() == pytest.approx(math.exp(20.0), rel=1e-14) and (g == 0).all()


POISONS = [float("nan"), float("inf"), -float("inf")]


@pytest.mark.parametrize("kind,mode", CONFIGS, ids=[f"{k}-{m}" for k, m in CONFIGS])
def test_masked_nan_and_inf_never_reach_loss_or_gradient(kind, mode):
    lp, old, adv, mask = batch(seed=31, empty_row=True)
    kw, _ = ctor_and_ref(kind)
    module = L.PolicyLoss(policy_loss_type=kind, loss_agg_mode=mode, **kw)
    clean, clean_g = loss_and_grad(module, lp, old, adv, mask)
    clean_metrics = module(lp, old, adv, mask, return_metrics=True)[1]
    hidden = mask == 0
    for k, poison in enumerate(POISONS):
        lp2, old2, adv2 = lp.detach().clone(), old.clone(), adv.clone()
        for j, t in enumerate((lp2, old2, adv2)):
            t[hidden] = POISONS[(k + j) % 3]
        lp2.requires_grad_()
        loss, g = loss_and_grad(module, lp2, old2, adv2, mask)
        assert torch.isfinite(loss) and torch.isfinite(g).all(), (kind, mode, poison)
        close(loss, clean, f"{kind} {mode} loss with masked {poison}")
        close(g, clean_g, f"{kind} {mode} gradient with masked {poison}")
        metrics = module(lp2, old2, adv2, mask, return_metrics=True)[1]
        for name, value in metrics.items():
            close(value, clean_metrics[name], f"{kind} metric {name} with masked {poison}")


def test_agg_loss_keeps_masked_nan_out():
    loss_mat = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]], requires_grad=True)
    mask = torch.tensor([[1, 0], [0, 1]])
    for mode in ref.MODES:
        out = L.agg_loss(loss_mat, mask, mode)
        (g,) = torch.autograd.grad(out, [loss_mat])
        assert torch.isfinite(out) and torch.isfinite(g).all() and (g[mask == 0] == 0).all()


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("kind,extra", [("ppo", {}), ("ppo", dict(dual_clip=1.3)), ("gspo", dict(clip_eps=0.05)), ("cispo", {}),
                                        ("gmpo", dict(clip_eps=0.3)), ("sapo", {}), ("gpg", {})])
def test_metrics_match_reference(kind, extra):
    lp, old, adv, mask = batch(seed=41, spread=0.3, rows=4, cols=8, empty_row=True, per_seq_adv=kind in ("gspo", "gmpo"))
    module = L.PolicyLoss(**{"clip_eps": 0.2, **extra}, policy_loss_type=kind)
    plain = module(lp, old, adv, mask)
    loss, metrics = module(lp, old, adv, mask, return_metrics=True)
    assert isinstance(plain, torch.Tensor) and plain.item() == loss.item()
    assert set(metrics) == {"clip_fraction", "clip_fraction_low", "approx_kl"}
    eps = extra.get("clip_eps", 0.2)
    want = ref.metrics(kind, lp.detach(), old, adv, mask, eps_low=None if kind == "cispo" else eps, eps_high=eps,
                       dual_clip=extra.get("dual_clip"))
    for name, value in metrics.items():
        assert value.dim() == 0 and not value.requires_grad
        assert value.item() == pytest.approx(want[name], rel=1e-12, abs=1e-15), name
    if kind in ("ppo", "gspo", "cispo", "gmpo"):
        assert 0.0 < metrics["clip_fraction"].item() < 1.0  # the case exercises the clip
    if "dual_clip" in extra:
        assert metrics["clip_fraction_low"].item() > 0.0


def test_metrics_worked_values():
    """Hand-counted: A=+1 at x in {0, 0.5, -0.5}, A=-1 at x in {0, -0.5, 0.5, 2}; eps 0.2, c 1.5.
    Clipped: (A=+1, x=0.5) and (A=-1, x=-0.5): 2/7. The dual clip acts where A=-1 and r > c: x=2 and
    x=0.5 (e^0.5 = 1.65 > 1.5): 2/7. approx_kl: the token mean of r - 1 - x."""
    x = torch.tensor([[0.0, 0.5, -0.5, 0.0, -0.5, 0.5, 2.0]], dtype=F64)
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]], dtype=F64)
    _, metrics = L.PolicyLoss(0.2, dual_clip=1.5)(x, torch.zeros_like(x), adv, return_metrics=True)
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 7, rel=1e-15)
    assert metrics["clip_fraction_low"].item() == pytest.approx(2 / 7, rel=1e-15)
    kl = sum(math.expm1(v) - v for v in x[0].tolist()) / 7
    assert metrics["approx_kl"].item() == pytest.approx(kl, rel=1e-14)


# ----------------------------------------------------------------------------- bad input

z = torch.zeros(2, 3)
BAD = [
    ("unknown type", lambda: L.PolicyLoss(policy_loss_type="grpo"), ValueError, ["policy_loss_type", "'gspo'", "'grpo'"]),
    ("unknown mode", lambda: L.PolicyLoss(loss_agg_mode="mean"), ValueError, ["loss_agg_mode", "'token-mean'", "'mean'"]),
    ("mode and token_level_loss", lambda: L.PolicyLoss(token_level_loss=True, loss_agg_mode="seq-mean-token-sum"),
     ValueError, ["token_level_loss", "loss_agg_mode"]),
    ("gspo token-mean", lambda: L.PolicyLoss(policy_loss_type="gspo", loss_agg_mode="token-mean"), ValueError, ["gspo", "loss_agg_mode"]),
    ("gmpo token level", lambda: L.PolicyLoss(policy_loss_type="gmpo", token_level_loss=True), ValueError, ["gmpo", "token_level_loss"]),
    ("scale factor without norm", lambda: L.PolicyLoss(loss_scale_factor=10.0), ValueError, ["loss_scale_factor", "seq-mean-token-sum-norm"]),
    ("scale factor 0", lambda: L.PolicyLoss(loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=0), ValueError, ["loss_scale_factor"]),
    ("tau_pos 0", lambda: L.PolicyLoss(policy_loss_type="sapo", tau_pos=0.0), ValueError, ["tau_pos", "> 0"]),
    ("tau_neg negative", lambda: L.PolicyLoss(policy_loss_type="sapo", tau_neg=-1.0), ValueError, ["tau_neg"]),
    ("tau str", lambda: L.PolicyLoss(tau_pos="1"), TypeError, ["tau_pos"]),
    ("dual clip gspo", lambda: L.PolicyLoss(policy_loss_type="gspo", dual_clip=3.0), ValueError, ["dual_clip", "ppo"]),
    ("cispo low >= 1", lambda: L.PolicyLoss(policy_loss_type="cispo", clip_eps_low=1.0), ValueError, ["clip_eps_low"]),
    ("metrics flag", lambda: L.PolicyLoss()(z, z, z, return_metrics="yes") , TypeError, ["return_metrics"]),
    ("agg unknown mode", lambda: L.agg_loss(z, None, "sum"), ValueError, ["loss_agg_mode", "'seq-mean-token-sum-norm'"]),
    ("agg mask shape", lambda: L.agg_loss(z, torch.ones(3, 2), "token-mean"), ValueError, ["loss_mask", "(2, 3)"]),
    ("agg integer loss", lambda: L.agg_loss(z.long(), None, "token-mean"), TypeError, ["loss_mat"]),
    ("agg empty", lambda: L.agg_loss(torch.zeros(0, 3), None, "token-mean"), ValueError, ["loss_mat", "empty"]),
    ("agg factor other mode", lambda: L.agg_loss(z, None, "token-mean", loss_scale_factor=4.0), ValueError, ["loss_scale_factor"]),
    ("kl unknown", lambda: L.compute_approx_kl(z, z, "k4"), ValueError, ["kl_estimator", "'k3+'", "'k4'"]),
    ("kl shapes", lambda: L.compute_approx_kl(z, torch.zeros(3, 2)), ValueError, ["log_probs_base"]),
    ("kl integer", lambda: L.compute_approx_kl(z.long(), z), TypeError, ["log_probs"]),
    ("adv unknown", lambda: L.group_advantages(torch.zeros(4), 2, "ppo"), ValueError, ["method", "'rloo'", "'ppo'"]),
    ("adv not dividing", lambda: L.group_advantages(torch.zeros(5), 2), ValueError, ["group_size", "5"]),
    ("adv 2d columns", lambda: L.group_advantages(torch.zeros(2, 3), 2), ValueError, ["group_size", "(2, 3)"]),
    ("adv group 1", lambda: L.group_advantages(torch.zeros(4), 1), ValueError, ["group_size", ">= 2"]),
    ("adv group float", lambda: L.group_advantages(torch.zeros(4), 2.0), TypeError, ["group_size"]),
    ("adv eps 0", lambda: L.group_advantages(torch.zeros(4), 2, eps=0.0), ValueError, ["eps"]),
    ("adv 3d", lambda: L.group_advantages(torch.zeros(2, 2, 2), 2), ValueError, ["rewards", "(2, 2, 2)"]),
    ("adv empty", lambda: L.group_advantages(torch.zeros(0), 2), ValueError, ["rewards", "empty"]),
    ("adv integer", lambda: L.group_advantages(torch.zeros(4, dtype=torch.long), 2), TypeError, ["rewards"]),
]


@pytest.mark.parametrize("call,exc,names", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_one_line_error(call, exc, names):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg
    for n in names:
        assert n in msg, f"message {msg!r} does not name {n!r}"
