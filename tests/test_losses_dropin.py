"""Drop-in behaviour of PolicyLoss: OpenRLHF v0.5.3's outputs and gradients up to the documented clamp,
advantages of shape [B, 1], and the explicit ``log_ratio_max`` option."""

import math

import pytest
import torch

import references as ref
from lossviz import losses as L

F64 = torch.float64


def seed_policy(log_probs, old_log_probs, advantages, mask, eps=0.2):
    """The v0.5.3 formula with no clamp at all: exp of the raw log-ratio, per-sequence masked mean."""
    ratio = torch.exp(log_probs - old_log_probs)
    loss = -torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)
    return ((loss * mask).sum(-1) / mask.sum(-1)).mean()


@pytest.mark.parametrize("log_ratio", [19.0, 21.0, 100.0, 500.0, 532.0])
@pytest.mark.parametrize("adv", [-1.0, -0.5, 1.0])
def test_float64_equals_the_seed_up_to_the_clamp(log_ratio, adv):
    """The issue's case: log-ratio 21 with A = -1 gives e^21/2 and gradient e^21/2 (the seed's), not e^20/2 and 0."""
    lp = torch.tensor([[log_ratio, 0.3]], dtype=F64, requires_grad=True)
    old = torch.zeros(1, 2, dtype=F64)
    a = torch.full((1, 2), adv, dtype=F64)
    mask = torch.ones(1, 2, dtype=F64)
    got = L.PolicyLoss(0.2)(lp, old, a, mask)
    (g,) = torch.autograd.grad(got, [lp])
    lp_ref = lp.detach().clone().requires_grad_()
    want = seed_policy(lp_ref, old, a, mask)
    (g_ref,) = torch.autograd.grad(want, [lp_ref])
    assert torch.isfinite(want)
    assert got.item() == pytest.approx(want.item(), rel=1e-14)
    torch.testing.assert_close(g, g_ref, rtol=1e-14, atol=0)
    if adv == -1.0 and log_ratio == 21.0:
        assert got.item() == pytest.approx((math.exp(21) + math.exp(0.3)) / 2, rel=1e-14)
        assert g[0, 0].item() == pytest.approx(math.exp(21) / 2, rel=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_default_clamp_is_three_quarters_of_log_finfo_max(dtype):
    limit = L.log_ratio_limit(dtype)
    assert limit == 0.75 * math.log(torch.finfo(dtype).max)
    policy = L.PolicyLoss(0.2)
    old, a = torch.zeros(1, 1, dtype=dtype), -torch.ones(1, 1, dtype=dtype)
    below = torch.tensor([[limit - 1.0]], dtype=dtype, requires_grad=True)
    above = torch.tensor([[limit + 1.0]], dtype=dtype, requires_grad=True)
    (g_below,) = torch.autograd.grad(policy(below, old, a), [below])
    loss_above = policy(above, old, a)
    (g_above,) = torch.autograd.grad(loss_above, [above])
    assert g_below.item() > 0 and g_above.item() == 0  # flat beyond the clamp, not before it
    # the loss at the clamp is e^{limit} (rounded to the dtype), with room to spare below overflow
    assert torch.isfinite(loss_above) and loss_above.item() == pytest.approx(math.exp(float(torch.tensor(limit, dtype=dtype))), rel=1e-2)


def test_log_ratio_max_option_clamps_where_asked():
    policy = L.PolicyLoss(0.2, log_ratio_max=20.0)
    old, a = torch.zeros(1, 1, dtype=F64), -torch.ones(1, 1, dtype=F64)
    lp = torch.tensor([[21.0]], dtype=F64, requires_grad=True)
    loss = policy(lp, old, a)
    (g,) = torch.autograd.grad(loss, [lp])
    assert loss.item() == pytest.approx(math.exp(20), rel=1e-15) and g.item() == 0.0
    lp = torch.tensor([[19.0]], dtype=F64, requires_grad=True)
    loss = policy(lp, old, a)
    (g,) = torch.autograd.grad(loss, [lp])
    assert loss.item() == pytest.approx(math.exp(19), rel=1e-15) and g.item() == pytest.approx(math.exp(19), rel=1e-15)
    # A > 0 above a clamp below the trust region's edge: the ratio stops at e^c, no gradient
    lp = torch.tensor([[0.5]], dtype=F64, requires_grad=True)
    loss = L.PolicyLoss(0.2, log_ratio_max=0.1)(lp, old, -a)
    (g,) = torch.autograd.grad(loss, [lp])
    assert loss.item() == pytest.approx(-math.exp(0.1), rel=1e-15) and g.item() == 0.0


@pytest.mark.parametrize("bad,exc", [("20", TypeError), (float("nan"), ValueError), (float("inf"), ValueError)])
def test_log_ratio_max_bad_values_name_the_argument(bad, exc):
    with pytest.raises(exc, match="log_ratio_max"):
        L.PolicyLoss(0.2, log_ratio_max=bad)


@pytest.mark.parametrize("kwargs", [{}, {"dual_clip": 1.5}, {"token_level_loss": True}, {"clip_eps_low": 0.1, "clip_eps_high": 0.4}])
def test_advantages_per_sequence_broadcast(kwargs):
    """advantages [B, 1] == the same advantage repeated over the tokens (loss and every gradient)."""
    gen = torch.Generator().manual_seed(4)
    lp = (torch.randn(3, 5, generator=gen, dtype=F64) * 0.5).requires_grad_()
    old = torch.randn(3, 5, generator=gen, dtype=F64) * 0.5
    adv = torch.randn(3, 1, generator=gen, dtype=F64).requires_grad_()
    mask = (torch.rand(3, 5, generator=gen) > 0.3).to(F64)
    mask[:, 0] = 1.0
    policy = L.PolicyLoss(0.2, **kwargs)
    got = policy(lp, old, adv, mask)
    g_lp, g_adv = torch.autograd.grad(got, [lp, adv])
    lp2, adv2 = lp.detach().clone().requires_grad_(), adv.detach().clone().requires_grad_()
    want = policy(lp2, old, adv2.expand(3, 5), mask)
    w_lp, w_adv = torch.autograd.grad(want, [lp2, adv2])
    assert got.item() == pytest.approx(want.item(), rel=1e-15)
    torch.testing.assert_close(g_lp, w_lp, rtol=1e-15, atol=0)
    torch.testing.assert_close(g_adv, w_adv, rtol=1e-15, atol=0)
    # and against the independent reference
    lo = kwargs.get("clip_eps_low", 0.2)
    hi = kwargs.get("clip_eps_high", 0.2)
    expected = ref.policy(lo, hi, kwargs.get("dual_clip"), kwargs.get("token_level_loss", False), lp.detach(), old, adv.detach().expand(3, 5), mask)
    assert got.item() == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("shape", [(3, 5, 1), (2, 1), (3, 4)])
def test_advantages_that_do_not_broadcast_to_log_probs_are_refused(shape):
    """[3, 5, 1] would broadcast the loss to [3, 5, 5]: refused like any shape that is not log_probs' after broadcasting."""
    with pytest.raises(ValueError, match=r"advantages must have the shape of log_probs \(3, 5\) or broadcast to it"):
        L.PolicyLoss()(torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(*shape))
