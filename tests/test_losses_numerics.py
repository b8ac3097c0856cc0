"""gradcheck, extreme inputs, half precision and property-based tests of the production losses."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import references as ref
from cases import first, make_cases
from lossviz import losses as L

CASES64 = make_cases(seed=1)


@pytest.mark.parametrize("case", CASES64, ids=[c.id for c in CASES64])
def test_gradcheck_float64(case):
    if case.id == "kd-inf-logits":
        pytest.skip("finite differences cannot step an infinite logit; the reference test covers it")
    # detached inputs (KTO's KL batch) move the loss but have zero gradient by design: held fixed here
    positions = [i for i, a in enumerate(case.args)
                 if isinstance(a, torch.Tensor) and a.requires_grad and i not in case.detached]

    def fn(*xs):
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in case.args]
        for i, x in zip(positions, xs):
            args[i] = x
        return first(case.module(*args, **case.kwargs))

    inputs = [case.args[i].detach().clone().requires_grad_() for i in positions]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_kto_kl_inputs_get_no_gradient():
    case = next(c for c in CASES64 if c.id == "kto")
    loss = first(case.module(*case.args))
    grads = torch.autograd.grad(loss, [case.args[i] for i in case.detached], allow_unused=True)
    assert all(g is None for g in grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case_id", [c.id for c in CASES64])
def test_extreme_inputs_stay_finite(case_id, dtype):
    """Every real input scaled by 1e4 (log-ratios far beyond 100): finite loss and gradients."""
    case = next(c for c in make_cases(seed=2, dtype=dtype, scale=1e4) if c.id == case_id)
    out = first(case.module(*case.args, **case.kwargs))
    assert torch.isfinite(out), f"{case_id}: loss {out}"
    if case.leaves:
        for g in torch.autograd.grad(out, case.leaves, allow_unused=True):
            assert g is None or torch.isfinite(g).all(), f"{case_id}: non-finite gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logexp_returns_the_gap_at_1e4(dtype):
    chosen = torch.tensor([0.0], dtype=dtype, requires_grad=True)
    reject = torch.tensor([1e4], dtype=dtype)
    loss = L.LogExpLoss()(chosen, reject)
    assert loss.item() == 1e4
    (g,) = torch.autograd.grad(loss, [chosen])
    assert g.item() == -1.0


def test_policy_log_ratio_of_100_is_finite_in_float32():
    for adv in (1.0, -1.0):
        lp = torch.full((1, 3), 100.0, requires_grad=True)
        loss = L.PolicyLoss(0.2)(lp, torch.zeros(1, 3), torch.full((1, 3), adv))
        (g,) = torch.autograd.grad(loss, [lp])
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    # below the float64 clamp (3/4 log(finfo.max) = 532.3) the seed's exact value is kept
    for x in (19.0, 21.0, 500.0):
        lp = torch.full((1, 1), x, dtype=torch.float64)
        assert L.PolicyLoss(0.2)(lp, torch.zeros(1, 1, dtype=torch.float64), -torch.ones(1, 1, dtype=torch.float64)).item() == pytest.approx(math.exp(x), rel=1e-14)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_vocabulary_losses_compute_in_float32(half):
    """KD, GPTLM and PRM upcast: the result is float32 and matches float64 math on the rounded inputs."""
    gen = torch.Generator().manual_seed(5)
    z = (torch.randn(2, 6, 500, generator=gen) * 3).to(half)
    t = (torch.randn(2, 6, 500, generator=gen) * 3).to(half)
    y = torch.randint(0, 500, (2, 6), generator=gen)
    for got, want in [
        (L.KDLoss()(z, t, y), ref.kd(z.double(), t.double(), y)),
        (L.GPTLMLoss()(z, y), ref.gptlm(z.double(), y)),
    ]:
        assert got.dtype == torch.float32
        # computed in the half type itself the error would be ~1e-2; in float32 it is ~1e-6
        assert got.item() == pytest.approx(want.item(), rel=2e-5)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_scalar_losses_keep_input_dtype(half):
    x = [torch.randn(4).to(half) for _ in range(4)]
    assert L.DPOLoss(0.1)(*x)[0].dtype == half
    assert L.PairWiseLoss()(x[0], x[1]).dtype == half
    assert L.PolicyLoss()(x[0][None], x[1][None], x[2][None]).dtype == half


finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), data=st.data(), beta=st.floats(0.01, 5.0), eps=st.floats(0.0, 0.49))
def test_property_dpo_matches_reference_and_is_antisymmetric(n, data, beta, eps):
    vals = [torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64, requires_grad=True) for _ in range(4)]
    loss, *_ = L.DPOLoss(beta, eps)(*vals)
    expected, *_ = ref.dpo(beta, eps, False, *[v.detach() for v in vals])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-12)
    g_c, g_r, g_rc, g_rr = torch.autograd.grad(loss, vals)
    torch.testing.assert_close(g_c, -g_r, rtol=0, atol=1e-15)  # the loss depends on the margin only
    torch.testing.assert_close(g_c, -g_rc, rtol=0, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), data=st.data(), m=st.floats(-5, 5))
def test_property_margin_is_a_shift(n, data, m):
    c = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64)
    r = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)), dtype=torch.float64)
    for cls in (L.PairWiseLoss, L.LogExpLoss):
        shifted = cls()(c - m, r)
        assert cls()(c, r, torch.full_like(c, m)).item() == pytest.approx(shifted.item(), rel=1e-12, abs=1e-14)
        assert cls()(c, r, m).item() == pytest.approx(shifted.item(), rel=1e-12, abs=1e-14)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 3), cols=st.integers(2, 5), vocab=st.integers(2, 9), shift=st.floats(-100, 100), seed=st.integers(0, 10**6))
def test_property_softmax_losses_ignore_a_constant_logit_shift(rows, cols, vocab, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, cols, vocab, generator=gen, dtype=torch.float64) * 5
    t = torch.randn(rows, cols, vocab, generator=gen, dtype=torch.float64) * 5
    y = torch.randint(0, vocab, (rows, cols), generator=gen)
    assert L.GPTLMLoss()(z + shift, y).item() == pytest.approx(L.GPTLMLoss()(z, y).item(), rel=1e-9, abs=1e-12)
    kd = L.KDLoss()(z, t, y)
    assert L.KDLoss()(z + shift, t - shift, y).item() == pytest.approx(kd.item(), rel=1e-9, abs=1e-12)
    # Gibbs: cross-entropy to the teacher is at least the teacher's entropy (reached at z = t)
    assert kd.item() >= L.KDLoss()(t, t, y).item() - 1e-12


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 3), cols=st.integers(1, 5), seed=st.integers(0, 10**6),
       eps=st.floats(0.05, 0.5), token_level=st.booleans(), dual=st.one_of(st.none(), st.floats(1.1, 4.0)))
def test_property_policy_matches_reference_and_clipped_tokens_have_no_gradient(rows, cols, seed, eps, token_level, dual):
    gen = torch.Generator().manual_seed(seed)
    lp = (torch.randn(rows, cols, generator=gen, dtype=torch.float64) * 0.7).requires_grad_()
    old = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * 0.7
    adv = torch.randn(rows, cols, generator=gen, dtype=torch.float64)
    mask = (torch.rand(rows, cols, generator=gen) > 0.3).float()
    loss = L.PolicyLoss(eps, dual_clip=dual, token_level_loss=token_level)(lp, old, adv, mask)
    expected = ref.policy(eps, eps, dual, token_level, lp.detach(), old, adv, mask)
    assert loss.item() == pytest.approx(float(expected), rel=1e-10, abs=1e-12)
    (g,) = torch.autograd.grad(loss, [lp])
    r = torch.exp(lp.detach() - old)
    clipped = ((adv >= 0) & (r > 1 + eps)) | ((adv < 0) & (r < 1 - eps))
    if dual is not None:
        clipped |= (adv < 0) & (r > dual)
    assert torch.all(g[clipped | (mask == 0)] == 0)
    assert torch.all(g[~clipped & (mask != 0) & (adv != 0)] != 0)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_property_unclipped_value_loss_is_half_mse(rows, cols, seed):
    gen = torch.Generator().manual_seed(seed)
    v, old, ret = (torch.randn(rows, cols, generator=gen, dtype=torch.float64) for _ in range(3))
    assert L.ValueLoss()(v, old, ret).item() == pytest.approx(0.5 * ((v - ret) ** 2).mean().item(), rel=1e-12)
    # the clipped loss is never below the unclipped one (pessimism)
    assert L.ValueLoss(0.1)(v, old, ret).item() >= L.ValueLoss()(v, old, ret).item() - 1e-15
