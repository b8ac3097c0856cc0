"""Tests for the gaps a mutation run found: each pins one behaviour that a one-line change could break unseen."""

import math

import pytest
import torch
import torch.nn.functional as F

import references as ref
from lossviz import losses as L

F64 = torch.float64


# ----------------------------------------------------------------------------- masked_mean


def test_masked_mean_without_mask_or_dim_is_the_mean_of_every_element():
    x = torch.tensor([[1.0, 2.0, 7.0], [4.0, 5.0, 9.0]], dtype=F64)
    assert L.masked_mean(x, None).item() == 28.0 / 6
    assert L.masked_mean(x, None, dim=0).tolist() == [2.5, 3.5, 8.0]


def test_masked_mean_with_weights_summing_below_one():
    """Fractional weights: divide by their sum (0.5 here), not by max(sum, 1) and not by the count."""
    x = torch.tensor([[2.0, 6.0, 100.0], [1.0, 3.0, 5.0]], dtype=F64)
    w = torch.tensor([[0.25, 0.25, 0.0], [0.1, 0.0, 0.1]], dtype=F64)
    assert L.masked_mean(x, w, dim=-1).tolist() == pytest.approx([(0.5 + 1.5) / 0.5, (0.1 + 0.5) / 0.2], rel=1e-15)
    assert L.masked_mean(x, w).item() == pytest.approx((0.5 + 1.5 + 0.1 + 0.5) / 0.7, rel=1e-15)


# ----------------------------------------------------------------------------- preference losses


def test_rewards_and_kl_carry_no_gradient():
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr, pkl, rkl = (torch.randn(4, generator=gen, dtype=F64).requires_grad_() for _ in range(6))
    loss, chosen, rejected = L.DPOLoss(0.3)(pc, pr, rc, rr)
    assert loss.requires_grad and not chosen.requires_grad and not rejected.requires_grad
    torch.testing.assert_close(chosen, 0.3 * (pc - rc).detach(), rtol=1e-15, atol=0)
    torch.testing.assert_close(rejected, 0.3 * (pr - rr).detach(), rtol=1e-15, atol=0)
    out = L.KTOLoss(0.3, 1.0, 1.0, 1, torch.device("cpu"))(pc, pr, pkl, rc, rr, rkl)
    assert [t.requires_grad for t in out] == [True, False, False, False]
    out = L.VanillaKTOLoss(0.3)(pc, pr, rc, rr)
    assert [t.requires_grad for t in out] == [True, False, False]


def test_kto_weights_scale_each_side():
    """w_D multiplies only desirable losses and w_U only undesirable ones (swapping them changes the loss)."""
    gen = torch.Generator().manual_seed(1)
    pc, pr, pkl, rc, rr, rkl = (torch.randn(n, generator=gen, dtype=F64) * 3 for n in (3, 2, 4, 3, 2, 4))
    args = (pc, pr, pkl, rc, rr, rkl)
    got = L.KTOLoss(0.2, 2.5, 0.4, 1, torch.device("cpu"))(*args)[0]
    assert got.item() == pytest.approx(ref.kto(0.2, 2.5, 0.4, *args)[0].item(), rel=1e-13)
    assert got.item() != pytest.approx(L.KTOLoss(0.2, 0.4, 2.5, 1, torch.device("cpu"))(*args)[0].item(), rel=1e-3)


# ----------------------------------------------------------------------------- PRM


def _prm_batch(labels, logits):
    steps = len(labels)
    inputs = torch.full((1, steps), 9)
    return inputs, torch.tensor([logits], dtype=F64), torch.tensor([labels], dtype=F64)


def test_prm_soft_labels_half_and_one():
    """p = 0.5 is a tie: its target is the first reward token (index 0, as torch.argmax of [0.5, 0.5]);
    p = 1 and p = 0 are hard targets. Loss: -p log σ(d) - (1-p) log σ(-d) with d = z+ - z-."""
    # vocabulary of 3: reward tokens 1 (+) and 2 (-)
    logits = [[0.0, 2.0, 0.5], [0.0, 1.0, 0.2], [0.0, 1.0, 1.5], [0.0, -1.0, 0.0]]
    labels = [0.5, 0.5, 1.0, 0.0]
    inputs, z, y = _prm_batch(labels, logits)
    loss, acc = L.PRMLoss(9, [1, 2])(inputs, z, y, return_acc=True)
    d = [r[1] - r[2] for r in logits]
    nls = lambda x: math.log1p(math.exp(-x))  # -log σ(x)
    want = sum(p * nls(di) + (1 - p) * nls(-di) for p, di in zip(labels, d)) / 4
    assert loss.item() == pytest.approx(want, rel=1e-14)
    # predictions (argmax of [z+, z-]): +, +, -, - ; targets: +, + (the ties), +, -
    assert acc.item() == 0.75


@pytest.mark.parametrize("ids", [[-1, 2], [2, -1]])
def test_prm_negative_reward_id_is_a_clear_error(ids):
    with pytest.raises((TypeError, ValueError), match="reward_token_ids"):
        L.PRMLoss(9, ids)


def test_prm_reward_id_equal_to_the_vocabulary_size_is_a_clear_error():
    inputs, z, y = _prm_batch([1.0], [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match=r"reward_token_ids \[1, 3\] must be < the vocabulary size 3"):
        L.PRMLoss(9, [1, 3])(inputs, z, y)
    assert torch.isfinite(L.PRMLoss(9, [1, 2])(inputs, z, y))  # the largest valid id, V - 1


@pytest.mark.parametrize("label", [-1, 3])
def test_prm_hard_label_outside_the_vocabulary_is_a_clear_error(label):
    inputs, z, _ = _prm_batch([1.0], [[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match=f"labels holds {label}"):
        L.PRMLoss(9)(inputs, z, torch.tensor([[label]]))


# ----------------------------------------------------------------------------- KD


@pytest.mark.parametrize("chunk", [None, 2])
def test_kd_float32_student_float64_teacher(chunk):
    """Computed in float64 (the wider dtype), equal to the reference on the float32 values; gradient in float32."""
    gen = torch.Generator().manual_seed(2)
    z = (torch.randn(2, 3, 6, generator=gen) * 3).requires_grad_()
    t = torch.randn(2, 3, 6, generator=gen, dtype=F64) * 3
    y = torch.tensor([[1, -100, 2], [0, 5, -100]])
    loss = L.KDLoss(chunk_size=chunk)(z, t, y)
    assert loss.dtype == F64
    z64 = z.detach().double().requires_grad_()
    want = ref.kd(z64, t, y)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    (g,) = torch.autograd.grad(loss, [z])
    (g64,) = torch.autograd.grad(want, [z64])
    assert g.dtype == torch.float32
    torch.testing.assert_close(g.double(), g64, rtol=0, atol=1e-7)


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("who", ["student", "teacher"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_kd_non_finite_row_at_an_ignored_position(chunk, who, bad):
    """Padding rows (label -100) may hold NaN or inf: the loss ignores them and every gradient stays finite, 0 there."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 3, 6, generator=gen, dtype=F64)
    t = torch.randn(2, 3, 6, generator=gen, dtype=F64)
    y = torch.tensor([[1, -100, 2], [0, 5, -100]])
    clean = L.KDLoss()(z, t, y).item()
    (z if who == "student" else t)[0, 1, :] = bad
    (z if who == "student" else t)[1, 2, 3] = bad
    zr, tr = z.clone().requires_grad_(), t.clone().requires_grad_()
    loss = L.KDLoss(chunk_size=chunk)(zr, tr, y)
    assert loss.item() == pytest.approx(clean, rel=1e-14)
    gz, gt = torch.autograd.grad(loss, [zr, tr])
    for g in (gz, gt):
        assert torch.isfinite(g).all()
        assert g[0, 1].abs().max() == 0 and g[1, 2].abs().max() == 0


# ----------------------------------------------------------------------------- fused linear losses


def _fused_inputs():
    gen = torch.Generator().manual_seed(4)
    h = torch.randn(2, 5, 4, generator=gen, dtype=F64)
    w = torch.randn(7, 4, generator=gen, dtype=F64)
    b = torch.randn(7, generator=gen, dtype=F64)
    h_t = torch.randn(2, 5, 3, generator=gen, dtype=F64)
    w_t = torch.randn(7, 3, generator=gen, dtype=F64)
    y = torch.randint(0, 7, (2, 5), generator=gen)
    y[0, :2] = -100
    return h, w, b, h_t, w_t, y


@pytest.mark.parametrize("trainable", [("bias",), ("hidden", "bias"), ("weight",), ("hidden",)])
@pytest.mark.parametrize("form", ["gptlm", "kd"])
def test_fused_losses_with_some_inputs_frozen(form, trainable):
    """A frozen lm_head weight with a trainable bias (and the other mixes): each trainable input gets the unfused gradient."""
    h, w, b, h_t, w_t, y = _fused_inputs()
    names = ("hidden", "weight", "bias")
    ours = [x.clone().requires_grad_(n in trainable) for n, x in zip(names, (h, w, b))]
    theirs = [x.clone().requires_grad_(n in trainable) for n, x in zip(names, (h, w, b))]
    if form == "gptlm":
        got = L.FusedLinearGPTLMLoss(chunk_size=3)(ours[0], ours[1], y, ours[2])
        want = L.GPTLMLoss()(F.linear(*theirs), y)
    else:
        got = L.FusedLinearKDLoss(chunk_size=3)(ours[0], ours[1], h_t, w_t, y, ours[2])
        want = L.KDLoss()(F.linear(*theirs), F.linear(h_t, w_t), y)
    assert got.item() == pytest.approx(want.item(), rel=1e-13)
    picked = [k for k, n in enumerate(names) if n in trainable]
    grads = torch.autograd.grad(got, [ours[k] for k in picked])
    wants = torch.autograd.grad(want, [theirs[k] for k in picked])
    for k, g, wg in zip(picked, grads, wants):
        torch.testing.assert_close(g, wg, rtol=1e-12, atol=1e-15, msg=lambda m: f"{names[k]}: {m}")
