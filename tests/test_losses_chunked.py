"""Chunked and fused-linear losses equal the default path (float64, within 1e-10), in every corner."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossviz.losses import FusedLinearGPTLMLoss, FusedLinearKDLoss, GPTLMLoss, KDLoss

REL = 1e-10


def close(a, b, what):
    scale = max(float(b.detach().abs().max()), 1e-300) if b.numel() else 1.0
    torch.testing.assert_close(a, b, rtol=REL, atol=REL * scale, msg=lambda m: f"{what}: {m}")


def batch(seed, rows=3, steps=9, vocab=13, hidden=6):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, steps, vocab, generator=gen, dtype=torch.float64) * 3
    t = torch.randn(rows, steps, vocab, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, vocab, (rows, steps), generator=gen)
    y[0, :4] = -100  # a prompt
    y[2, :] = -100  # a row with nothing to learn: whole chunks are ignored
    h = torch.randn(rows, steps, hidden, generator=gen, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=gen, dtype=torch.float64)
    b = torch.randn(vocab, generator=gen, dtype=torch.float64)
    return z, t, y, h, w, b


CHUNKS = [1, 2, 5, 64]


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("scale_out", [1.0, 0.37])
def test_chunked_gptlm_equals_default(chunk, scale_out):
    z, _, y, *_ = batch(0)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    want, got = GPTLMLoss()(a, y), GPTLMLoss(chunk_size=chunk)(b, y)
    close(got, want, "loss")
    (ga,), (gb,) = torch.autograd.grad(want * scale_out, [a]), torch.autograd.grad(got * scale_out, [b])
    close(gb, ga, "logits gradient")


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("with_inf", [False, True], ids=["finite", "-inf logits"])
def test_chunked_kd_equals_default_for_student_and_teacher(chunk, with_inf):
    z, t, y, *_ = batch(1)
    if with_inf:
        z[0, 5, 3] = z[1, 2, 0] = float("-inf")  # vocabulary entries masked out of the student
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    ta, tb = t.clone().requires_grad_(), t.clone().requires_grad_()
    want, got = KDLoss()(a, ta, y), KDLoss(chunk_size=chunk)(b, tb, y)
    close(got, want, "loss")
    ga, gb = torch.autograd.grad(want * 1.7, [a, ta]), torch.autograd.grad(got * 1.7, [b, tb])
    close(gb[0], ga[0], "student gradient")
    close(gb[1], ga[1], "teacher gradient")
    assert torch.isfinite(gb[0]).all() and torch.isfinite(gb[1]).all()


def test_all_ignored_gives_attached_zero_in_every_form():
    z, t, y, h, w, b = batch(2)
    none = torch.full_like(y, -100)
    zr, hr, wr = z.clone().requires_grad_(), h.clone().requires_grad_(), w.clone().requires_grad_()
    for loss, leaves in [
        (GPTLMLoss(chunk_size=4)(zr, none), [zr]),
        (KDLoss(chunk_size=4)(zr, t, none), [zr]),
        (FusedLinearGPTLMLoss(chunk_size=4)(hr, wr, none), [hr, wr]),
        (FusedLinearKDLoss(chunk_size=4)(hr, wr, h, w, none), [hr, wr]),
    ]:
        assert loss.item() == 0.0 and loss.requires_grad
        assert all(torch.count_nonzero(g) == 0 for g in torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no bias", "bias"])
def test_fused_gptlm_equals_default_on_hidden_weight_and_bias(chunk, with_bias):
    _, _, y, h, w, b = batch(3)
    leaves_a = [x.clone().requires_grad_() for x in (h, w, b)]
    leaves_b = [x.clone().requires_grad_() for x in (h, w, b)]
    bias_a, bias_b = (leaves_a[2], leaves_b[2]) if with_bias else (None, None)
    want = GPTLMLoss()(F.linear(leaves_a[0], leaves_a[1], bias_a), y)
    got = FusedLinearGPTLMLoss(chunk_size=chunk)(leaves_b[0], leaves_b[1], y, bias_b)
    close(got, want, "loss")
    used = 3 if with_bias else 2
    ga = torch.autograd.grad(want * 2.0, leaves_a[:used])
    gb = torch.autograd.grad(got * 2.0, leaves_b[:used])
    for name, x, r in zip(("hidden", "weight", "bias"), gb, ga):
        close(x, r, f"{name} gradient")


@pytest.mark.parametrize("chunk", CHUNKS)
def test_fused_kd_equals_default_on_student_head(chunk):
    _, _, y, h, w, b = batch(4)
    gen = torch.Generator().manual_seed(9)
    h_t = torch.randn(3, 9, 4, generator=gen, dtype=torch.float64)
    w_t = torch.randn(13, 4, generator=gen, dtype=torch.float64)
    b_t = torch.randn(13, generator=gen, dtype=torch.float64)
    la = [x.clone().requires_grad_() for x in (h, w, b)]
    lb = [x.clone().requires_grad_() for x in (h, w, b)]
    want = KDLoss()(F.linear(la[0], la[1], la[2]), F.linear(h_t, w_t, b_t), y)
    got = FusedLinearKDLoss(chunk_size=chunk)(lb[0], lb[1], h_t, w_t, y, lb[2], b_t)
    close(got, want, "loss")
    for name, x, r in zip(("hidden", "weight", "bias"), torch.autograd.grad(got, lb), torch.autograd.grad(want, la)):
        close(x, r, f"{name} gradient")


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_chunked_matches_default(half):
    z, t, y, *_ = batch(5)
    z, t = z.to(half), t.to(half)
    for make in (lambda c: GPTLMLoss(chunk_size=c), lambda c: KDLoss(chunk_size=c)):
        a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
        args = (y,) if isinstance(make(None), GPTLMLoss) else (t, y)
        want, got = make(None)(a, *args), make(3)(b, *args)
        assert got.dtype == want.dtype == torch.float32
        assert got.item() == pytest.approx(want.item(), rel=1e-6)
        (ga,), (gb,) = torch.autograd.grad(want, [a]), torch.autograd.grad(got, [b])
        assert gb.dtype == half
        torch.testing.assert_close(gb.float(), ga.float(), rtol=0, atol=2e-3)


def test_second_backward_is_refused_clearly():
    z, _, y, *_ = batch(6)
    z.requires_grad_()
    loss = GPTLMLoss(chunk_size=4)(z, y)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


def test_no_gradient_work_without_requires_grad():
    z, t, y, *_ = batch(7)
    with torch.no_grad():
        assert GPTLMLoss(chunk_size=4)(z, y).item() == pytest.approx(GPTLMLoss()(z, y).item(), rel=1e-12)
        assert KDLoss(chunk_size=4)(z, t, y).item() == pytest.approx(KDLoss()(z, t, y).item(), rel=1e-12)


@pytest.mark.parametrize("make,exc,needle", [
    (lambda: GPTLMLoss(chunk_size=0), ValueError, "chunk_size"),
    (lambda: KDLoss(chunk_size=2.5), ValueError, "chunk_size"),
    (lambda: FusedLinearGPTLMLoss(chunk_size=-1), ValueError, "chunk_size"),
    (lambda: FusedLinearGPTLMLoss()(torch.zeros(2, 3, 4), torch.zeros(5, 6), torch.zeros(2, 3, dtype=torch.long)), ValueError, "hidden"),
    (lambda: FusedLinearGPTLMLoss()(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, 4, dtype=torch.long)), ValueError, "labels"),
    (lambda: FusedLinearGPTLMLoss()(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.full((2, 3), 9)), ValueError, "labels"),
    (lambda: FusedLinearGPTLMLoss()(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, 3, dtype=torch.long), torch.zeros(4)), ValueError, "bias"),
    (lambda: FusedLinearKDLoss()(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, 3, 4), torch.zeros(6, 4), torch.zeros(2, 3, dtype=torch.long)), ValueError, "teacher_weight"),
])
def test_bad_arguments_name_themselves(make, exc, needle):
    with pytest.raises(exc, match=needle):
        make()


def test_benchmark_smoke_run():
    """The benchmark is not part of pass/fail; a tiny run of it is: it runs and its gradients agree."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_losses.py"
    out = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "gradient checks: all agree" in out.stdout
    for row in ("GPTLM", "KD", "from hidden", "DPO", "KTO", "PolicyLoss", "ValueLoss"):
        assert row in out.stdout
