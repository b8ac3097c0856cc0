"""Fused-linear sequence losses equal the unfused path (full logits, then the production module) in float64
to 1e-10, for outputs and for the gradients of hidden states, weight and bias; and the in-place chunked
CE/KD from logits."""

import math

import pytest
import torch
import torch.nn.functional as F

import lossviz.losses as L
from lossviz.losses import fused
from lossviz.losses.chunked import chunked_gptlm_loss, chunked_kd_loss

REL = 1e-10
DEV = torch.device("cpu")


def close(a, b, what):
    scale = max(float(b.detach().abs().max()), 1.0) if b.numel() else 1.0
    torch.testing.assert_close(a.detach(), b.detach(), rtol=REL, atol=REL * scale, msg=lambda m: f"{what}: {m}")


def make(seed, rows=6, steps=7, hidden=5, vocab=11):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, steps, hidden, generator=gen, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=gen, dtype=torch.float64)
    b = torch.randn(vocab, generator=gen, dtype=torch.float64)
    rh = torch.randn(rows, steps, hidden + 1, generator=gen, dtype=torch.float64)
    rw = torch.randn(vocab, hidden + 1, generator=gen, dtype=torch.float64)
    y = torch.randint(0, vocab, (rows, steps), generator=gen)
    y[:, :2] = -100  # prompts
    y[1, 4:] = -100  # padding
    return h, w, b, rh, rw, y


def unfused_token_logps(h, w, b, y):
    """Reference written from the definition: full logits, log-softmax, the next label's entry; 0 where ignored."""
    z = F.linear(h, w, b)  # (B, T, V): the full logits (half inputs: half logits, then float32)
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    logp = torch.log_softmax(z, dim=-1)
    nxt = torch.cat((y[:, 1:], torch.full_like(y[:, :1], -100)), dim=1)
    keep = nxt != -100
    picked = logp.gather(-1, torch.where(keep, nxt, 0).unsqueeze(-1)).squeeze(-1)
    return torch.where(keep, picked, 0.0)


def lengths_of(y):
    return (y[:, 1:] != -100).sum(-1).to(torch.float64)


def compare(got, want, leaves_got, leaves_want, upstream=1.7):
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for k, (g, w_) in enumerate(zip(got, want)):
        close(g, w_, f"output {k}")
    ga = torch.autograd.grad(got[0] * upstream, leaves_got, allow_unused=True)
    gb = torch.autograd.grad(want[0] * upstream, leaves_want, allow_unused=True)
    for name, x, r in zip(("hidden", "weight", "bias"), ga, gb):
        r = torch.zeros_like(x) if r is None else r
        close(x, r, f"{name} gradient")


MODES = [("recompute", 4), ("single", 2), ("auto", "auto")]


def leaves(h, w, b):
    return [x.clone().requires_grad_() for x in (h, w, b)]


# ----------------------------------------------------------------------------- the label log-probabilities


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_token_logps_equal_the_definition(chunk):
    h, w, b, _, _, y = make(0)
    la, lb = leaves(h, w, b), leaves(h, w, b)
    got = L.token_logps(*la[:2], y, la[2], chunk_size=chunk)
    want = unfused_token_logps(*lb, y)
    close(got, want, "log-probs")
    g = torch.randn_like(want)
    for name, x, r in zip(("hidden", "weight", "bias"), torch.autograd.grad(got, la, g), torch.autograd.grad(want, lb, g)):
        close(x, r, f"{name} gradient")
    # the log-probabilities really are log-probabilities: logsumexp over the vocabulary of the logits is subtracted
    z = F.linear(h, w, b)
    assert math.isclose(float(got[0, 2].detach()), float(z[0, 2, y[0, 3]] - torch.logsumexp(z[0, 2], -1)), rel_tol=1e-12)


# ----------------------------------------------------------------------------- pairwise losses


DPO_CASES = [dict(), dict(label_smoothing=0.2), dict(ipo=True)] + [
    dict(loss_type=t, label_smoothing=0.1) for t in L.DPO_LOSS_TYPES if t not in ("sigmoid",)
] + [dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]), dict(nll_loss_coef=0.5),
     dict(loss_type="ipo", length_normalized=True)]


def _id(case):
    return ",".join(f"{k}={v}" for k, v in case.items()) or "default"


@pytest.mark.parametrize("case", DPO_CASES, ids=_id)
@pytest.mark.parametrize("mode,chunk", [("recompute", 4), ("single", 1)])
def test_fused_dpo_every_loss_type_equals_unfused(case, mode, chunk):
    h, w, b, rh, rw, y = make(1)
    n = h.shape[0] // 2
    la, lb = leaves(h, w, b), leaves(h, w, b)
    got = L.FusedLinearDPOLoss(0.3, mode=mode, chunk_size=chunk, **case)(la[0], la[1], y, rh, rw, la[2])
    seq = unfused_token_logps(*lb, y).sum(-1)
    ref = unfused_token_logps(rh, rw, None, y).sum(-1)
    lens = lengths_of(y)
    want = L.DPOLoss(0.3, **case)(seq[:n], seq[n:], ref[:n], ref[n:], chosen_lengths=lens[:n], rejected_lengths=lens[n:])
    compare(got, want, la, lb)


def test_fused_dpo_value_from_the_formula():
    """Independent check of the default (sigmoid) value: mean over pairs of -log σ(β h)."""
    h, w, b, rh, rw, y = make(2)
    n = h.shape[0] // 2
    got = L.FusedLinearDPOLoss(0.5)(h, w, y, rh, rw, b)[0]
    pi = unfused_token_logps(h, w, b, y).sum(-1).tolist()
    rf = unfused_token_logps(rh, rw, None, y).sum(-1).tolist()
    want = sum(math.log1p(math.exp(-0.5 * ((pi[i] - pi[i + n]) - (rf[i] - rf[i + n])))) for i in range(n)) / n
    assert math.isclose(float(got.detach()), want, rel_tol=1e-12)


REFERENCE_FREE = [
    (L.FusedLinearSimPOLoss, L.SimPOLoss, dict(beta=2.0, gamma=0.5, label_smoothing=0.1), lambda m, c, r, lc, lr: m(c, r, lc, lr)),
    (L.FusedLinearCPOLoss, L.CPOLoss, dict(beta=0.2, alpha=1.0), lambda m, c, r, lc, lr: m(c, r, chosen_lengths=lc)),
    (L.FusedLinearCPOLoss, L.CPOLoss, dict(beta=0.2, alpha=0.0, label_smoothing=0.1), lambda m, c, r, lc, lr: m(c, r)),
    (L.FusedLinearORPOLoss, L.ORPOLoss, dict(lambda_=0.3), lambda m, c, r, lc, lr: m(c, r, lc, lr)),
]


@pytest.mark.parametrize("fused_cls,cls,kwargs,call", REFERENCE_FREE, ids=["simpo", "cpo", "cpo-alpha0", "orpo"])
@pytest.mark.parametrize("mode,chunk", MODES)
def test_fused_reference_free_equals_unfused(fused_cls, cls, kwargs, call, mode, chunk):
    h, w, b, _, _, y = make(3)
    n = h.shape[0] // 2
    la, lb = leaves(h, w, b), leaves(h, w, b)
    got = fused_cls(mode=mode, chunk_size=chunk, **kwargs)(la[0], la[1], y, la[2])
    seq = unfused_token_logps(*lb, y).sum(-1)
    lens = lengths_of(y)
    want = call(cls(**kwargs), seq[:n], seq[n:], lens[:n], lens[n:])
    compare(got, want, la, lb)


# ----------------------------------------------------------------------------- KTO


@pytest.mark.parametrize("desirable", [[1, 0, 1, 1, 0, 0], [1] * 6, [0] * 6], ids=["mixed", "no undesirable", "no desirable"])
@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
@pytest.mark.parametrize("mode,chunk", MODES)
def test_fused_kto_equals_unfused_with_empty_sides(desirable, loss_type, mode, chunk):
    h, w, b, rh, rw, y = make(4)
    d = torch.tensor(desirable, dtype=torch.bool)
    gen = torch.Generator().manual_seed(5)
    pkl, rkl = (torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(2))
    la, lb = leaves(h, w, b), leaves(h, w, b)
    got = L.FusedLinearKTOLoss(0.4, 1.0, 1.33, 1, DEV, loss_type=loss_type, mode=mode, chunk_size=chunk)(
        la[0], la[1], y, d, rh, rw, pkl, rkl, la[2])
    seq = unfused_token_logps(*lb, y).sum(-1)
    ref = unfused_token_logps(rh, rw, None, y).sum(-1)
    want = L.KTOLoss(0.4, 1.0, 1.33, 1, DEV, loss_type=loss_type)(seq[d], seq[~d], pkl, ref[d], ref[~d], rkl)
    compare(got, want, la, lb)


# ----------------------------------------------------------------------------- PPO / GRPO family


POLICY_CASES = [dict(policy_loss_type=t) for t in L.POLICY_LOSS_TYPES] + [
    dict(loss_agg_mode=m) for m in L.AGG_MODES] + [dict(token_level_loss=True, dual_clip=3.0),
                                                  dict(loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=5.0)]


@pytest.mark.parametrize("case", POLICY_CASES, ids=_id)
@pytest.mark.parametrize("mode,chunk", [("recompute", 3), ("single", 2), ("auto", "auto")])
def test_fused_policy_every_type_and_aggregation_equals_unfused(case, mode, chunk):
    h, w, b, _, _, y = make(6)
    y[3, 2:] = -100  # a fully masked sequence
    gen = torch.Generator().manual_seed(7)
    old = unfused_token_logps(h, w, b, y).detach() + 0.3 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    adv = torch.randn(y.shape[0], 1, generator=gen, dtype=torch.float64)
    la, lb = leaves(h, w, b), leaves(h, w, b)
    fused_loss = L.FusedLinearPolicyLoss(chunk_size=chunk, mode=mode, **case)
    got = fused_loss(la[0], la[1], y, old, adv, la[2])
    assert fused_loss.last_schedule == {"recompute": ("recompute", 3), "single": ("single", 2), "auto": ("single", 6)}[mode]
    mask = torch.cat((y[:, 1:] != -100, torch.zeros_like(y[:, :1], dtype=torch.bool)), 1)
    want = L.PolicyLoss(**case)(unfused_token_logps(*lb, y), old, adv, mask)
    compare(got, want, la, lb)


def test_fused_policy_single_pass_returns_the_metrics_of_the_whole_batch():
    h, w, b, _, _, y = make(23)
    gen = torch.Generator().manual_seed(24)
    old = unfused_token_logps(h, w, b, y).detach() + 0.3 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    adv = torch.randn(y.shape[0], 1, generator=gen, dtype=torch.float64)
    la, lb = leaves(h, w, b), leaves(h, w, b)
    got = L.FusedLinearPolicyLoss(mode="single", chunk_size=1)(la[0], la[1], y, old, adv, la[2], return_metrics=True)
    mask = torch.cat((y[:, 1:] != -100, torch.zeros_like(y[:, :1], dtype=torch.bool)), 1)
    want = L.PolicyLoss()(unfused_token_logps(*lb, y), old, adv, mask, return_metrics=True)
    assert isinstance(got, tuple) and len(got) == len(want)
    close(got[0], want[0], "loss")
    for g, w_ in zip(got[1:], want[1:]):
        assert type(g) is type(w_)
        if isinstance(w_, torch.Tensor):
            close(g, w_, "metric")
        elif isinstance(w_, dict):
            assert g.keys() == w_.keys()
            for key in w_:
                close(torch.as_tensor(g[key]), torch.as_tensor(w_[key]), f"metric {key}")
    compare(got[0], want[0], la, lb)


# ----------------------------------------------------------------------------- GKD / JSD


@pytest.mark.parametrize("beta,chunk", [(0.0, 4), (0.5, 1), (0.5, "auto"), (1.0, 4)])
def test_fused_gkd_equals_unfused(beta, chunk):
    h, w, b, rh, rw, y = make(8)
    y[2, :] = -100  # a whole row ignored: all-ignored chunks
    gen = torch.Generator().manual_seed(9)
    tb = torch.randn(w.shape[0], generator=gen, dtype=torch.float64)
    la, lb = leaves(h, w, b), leaves(h, w, b)
    got = L.FusedLinearGKDLoss(beta, temperature=1.5, chunk_size=chunk)(la[0], la[1], rh, rw, y, la[2], tb)
    want = L.GKDLoss(beta, temperature=1.5)(F.linear(lb[0], lb[1], lb[2]), F.linear(rh, rw, tb), y)
    compare(got, want, la, lb)


# ----------------------------------------------------------------------------- corners


def test_all_ignored_labels_give_an_attached_zero_gradient():
    h, w, b, rh, rw, y = make(10)
    none = torch.full_like(y, -100)
    for mode in ("recompute", "single"):
        la = leaves(h, w, b)
        loss = L.FusedLinearDPOLoss(0.1, loss_type="hinge", mode=mode, chunk_size=2)(la[0], la[1], none, rh, rw, la[2])[0]
        assert loss.requires_grad
        assert all(torch.count_nonzero(g) == 0 for g in torch.autograd.grad(loss, la))
    la = leaves(h, w, b)
    loss = L.FusedLinearGKDLoss(chunk_size=3)(la[0], la[1], rh, rw, none, la[2])
    assert float(loss.detach()) == 0.0 and all(torch.count_nonzero(g) == 0 for g in torch.autograd.grad(loss, la))


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_within_tolerance(half):
    """Half inputs are computed in float32; against the float32 unfused path: loss to 1e-5 relative, gradients to 2e-2."""
    h, w, b, rh, rw, y = make(11, rows=4, steps=9, hidden=16, vocab=50)
    n = 2
    hh, wh = h.to(half).requires_grad_(), w.to(half).requires_grad_()
    got = L.FusedLinearDPOLoss(0.3, chunk_size=5, mode="recompute")(hh, wh, y, rh.to(half), rw.to(half))[0]
    assert got.dtype == torch.float32
    hf, wf = hh.detach().clone().requires_grad_(), wh.detach().clone().requires_grad_()
    seq = unfused_token_logps(hf, wf, None, y).sum(-1)  # the unfused path in half: half logits
    ref = unfused_token_logps(rh.to(half), rw.to(half), None, y).sum(-1)
    want = L.DPOLoss(0.3)(seq[:n], seq[n:], ref[:n], ref[n:])[0]
    assert math.isclose(float(got.detach()), float(want.detach()), rel_tol=1e-5)
    gh, gw = torch.autograd.grad(got, [hh, wh])
    rgh, rgw = (g.float() for g in torch.autograd.grad(want, [hf, wf]))
    assert gh.dtype == gw.dtype == half
    for x, r in ((gh, rgh), (gw, rgw)):
        assert float((x.float() - r).abs().max()) <= 2e-2 * max(float(r.abs().max()), 1e-3)


def test_auto_chunk_size_follows_the_memory_budget():
    assert fused.DEFAULT_MEMORY_BUDGET == 64 * 2**20
    assert fused.auto_chunk_rows(32000, torch.float32) == 64 * 2**20 // (32000 * 4) == 524  # one float32 chunk
    # half: the float32 chunk plus its bfloat16 matmul output, 6 bytes per entry
    assert fused.auto_chunk_rows(32000, torch.bfloat16) == 64 * 2**20 // (32000 * 6) == 349
    assert fused.auto_chunk_rows(32000, torch.float64) == 262
    assert fused.auto_chunk_rows(10**9, torch.float32, 1) == 1
    h, w, b, rh, rw, y = make(12, rows=4, steps=8, hidden=4, vocab=100)
    budget_one_pair = 100 * 8 * 16  # rows = 16 = one pair of 2 x 8 rows, one float64 chunk
    loss = L.FusedLinearDPOLoss(0.1, memory_budget=budget_one_pair)
    loss(h, w, y, rh, rw)
    assert loss.last_schedule == ("single", 1)
    loss = L.FusedLinearDPOLoss(0.1, memory_budget=budget_one_pair - 1)  # a pair no longer fits: token chunks
    loss(h, w, y, rh, rw)
    assert loss.last_schedule == ("recompute", 15)
    h32, rh32 = h.float(), rh.float()
    loss = L.FusedLinearDPOLoss(0.1, memory_budget=budget_one_pair // 2)  # float32 items are half the size
    loss(h32, w.float(), y, rh32, rw.float())
    assert loss.last_schedule == ("single", 1)
    # "auto": chunks sized by 64 MiB; one group may be single-pass up to the weight's size (H x V entries)
    loss = L.FusedLinearDPOLoss(0.1)
    assert loss.memory_budget == "auto"
    loss(h, w, y, rh, rw)
    assert loss.last_schedule == ("single", 2)  # 64 MiB holds both pairs
    assert loss._schedule(1, 2049, 32000, torch.float32, 2048) == ("recompute", 524)  # 2049 rows > H = 2048
    assert loss._schedule(4, 2048, 32000, torch.float32, 2048) == ("single", 1)  # one pair as large as the weight
    assert loss._schedule(4, 2048, 128000, torch.float32, 2048) == ("single", 1)
    assert L.FusedLinearDPOLoss(0.1, memory_budget=64 * 2**20)._schedule(4, 2048, 32000, torch.float32, 2048) == ("recompute", 524)


class _LargestLogits:
    """Records the largest last-axis-V tensor produced by F.linear (where the logits come from)."""

    def __init__(self, vocab):
        self.vocab, self.rows, self._orig = vocab, 0, F.linear

    def __enter__(self):
        def spy(x, weight, bias=None):
            out = self._orig(x, weight, bias)
            if out.shape[-1] == self.vocab:
                self.rows = max(self.rows, out.numel() // self.vocab)
            return out

        fused.F.linear = spy
        return self

    def __exit__(self, *exc):
        fused.F.linear = self._orig


@pytest.mark.parametrize("mode", ["recompute", "single"])
def test_full_logits_never_exist(mode):
    h, w, b, rh, rw, y = make(13, rows=8, steps=10, hidden=4, vocab=37)
    la = leaves(h, w, b)
    with _LargestLogits(37) as spy:
        loss = L.FusedLinearDPOLoss(0.1, mode=mode, chunk_size=1 if mode == "single" else 7)(la[0], la[1], y, rh, rw, la[2])[0]
        loss.backward()
    assert spy.rows == (20 if mode == "single" else 7), spy.rows  # one pair (2 x 10 rows) or 7 rows, never 80
    with _LargestLogits(37) as spy:
        L.FusedLinearGKDLoss(chunk_size=6)(la[0], la[1], rh, rw, y, la[2]).backward()
    assert spy.rows == 6


@pytest.mark.parametrize("make_bad,needle", [
    (lambda h, w, b, rh, rw, y: L.FusedLinearDPOLoss(0.1, chunk_size=0), "chunk_size"),
    (lambda h, w, b, rh, rw, y: L.FusedLinearDPOLoss(0.1, memory_budget=-5), "memory_budget"),
    (lambda h, w, b, rh, rw, y: L.FusedLinearDPOLoss(0.1, mode="fast"), "mode"),
    (lambda h, w, b, rh, rw, y: L.FusedLinearDPOLoss(0.1)(h[:5], w, y[:5], rh[:5], rw), "chosen"),
    (lambda h, w, b, rh, rw, y: L.FusedLinearDPOLoss(0.1)(h, w, y, rh[:4], rw), "ref_hidden"),
    (lambda h, w, b, rh, rw, y: L.FusedLinearSimPOLoss()(h, w[:, :3], y), "hidden"),
    (lambda h, w, b, rh, rw, y: L.FusedLinearKTOLoss(0.1, 1, 1, 1, DEV)(h, w, y, torch.ones(6), rh, rw), "desirable"),
])
def test_bad_arguments_name_themselves(make_bad, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        make_bad(*make(14))


# ----------------------------------------------------------------------------- in-place chunked CE / KD from logits


def _logits(seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(3, 9, 13, generator=gen, dtype=torch.float64) * 3
    t = torch.randn(3, 9, 13, generator=gen, dtype=torch.float64) * 3
    y = torch.randint(0, 13, (3, 9), generator=gen)
    y[2] = -100
    return z.to(dtype), t.to(dtype), y


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_in_place_ce_and_kd_equal_the_default_and_reuse_the_storage(chunk):
    z, t, y = _logits(15)
    a = z.clone().requires_grad_()
    want = L.GPTLMLoss()(a, y)
    (ga,) = torch.autograd.grad(want * 0.7, [a])
    b = z.clone().requires_grad_()
    got = chunked_gptlm_loss(b, y, chunk, in_place=True)
    close(got, want, "CE loss")
    got.backward(torch.tensor(0.7, dtype=torch.float64))
    close(b.grad, ga, "CE gradient")
    assert b.grad.data_ptr() == b.data_ptr()  # the gradient lives in the logits' storage
    a = z.clone().requires_grad_()
    want = L.KDLoss()(a, t, y)
    (ga,) = torch.autograd.grad(want, [a])
    b = z.clone().requires_grad_()
    x = b * 1.0  # logits as a non-leaf, as they come out of lm_head
    got = chunked_kd_loss(x, t, y, chunk, in_place=True)
    close(got, want, "KD loss")
    (gb,) = torch.autograd.grad(got, [b])
    close(gb, ga, "KD gradient")


def test_in_place_half_precision():
    z, t, y = _logits(16, torch.bfloat16)
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    want = L.GPTLMLoss()(a, y)
    got = chunked_gptlm_loss(b, y, 4, in_place=True)
    assert got.dtype == torch.float32 and math.isclose(float(got.detach()), float(want.detach()), rel_tol=1e-6)
    got.backward()
    (ga,) = torch.autograd.grad(want, [a])
    assert b.grad.dtype == torch.bfloat16
    torch.testing.assert_close(b.grad.float(), ga.float(), rtol=0, atol=2e-3)


def test_in_place_logits_used_again_are_refused():
    z, t, y = _logits(17)
    b = z.clone().requires_grad_()
    chunked_gptlm_loss(b, y, 4, in_place=True)
    with pytest.raises(RuntimeError, match="overwritten by an in-place chunked loss"):
        chunked_gptlm_loss(b, y, 4)
    with pytest.raises(RuntimeError, match="overwritten by an in-place chunked loss"):
        chunked_kd_loss(b[:, :5], t[:, :5], y[:, :5], 4)  # a view of them too
    x = z.clone().requires_grad_() * 1.0
    loss = chunked_kd_loss(x, t, y, 4, in_place=True)
    x.mul_(2.0)  # changed before backward: the gradient they held is gone
    with pytest.raises(RuntimeError, match="modified after the in-place chunked loss"):
        loss.backward()
    fresh = z.clone().requires_grad_()
    chunked_gptlm_loss(fresh, y, 4)  # other tensors are not affected


def test_in_place_refuses_non_contiguous_logits():
    z, t, y = _logits(18)
    zt = z.transpose(0, 1).contiguous().transpose(0, 1).detach().requires_grad_()
    assert not zt.is_contiguous()
    with pytest.raises(ValueError, match="contiguous"):
        chunked_gptlm_loss(zt, y, 4, in_place=True)


@pytest.mark.parametrize("estimator,agg", [("k3", "token-mean"), ("k1", "seq-mean-token-mean"), ("k2", "seq-mean-token-sum-norm")])
def test_fused_policy_with_reference_kl_equals_unfused(estimator, agg):
    h, w, b, rh, rw, y = make(19)
    gen = torch.Generator().manual_seed(20)
    old = unfused_token_logps(h, w, b, y).detach() + 0.3 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    adv = torch.randn(y.shape[0], 1, generator=gen, dtype=torch.float64)
    la, lb = leaves(h, w, b), leaves(h, w, b)
    got = L.FusedLinearPolicyLoss(kl_coef=0.04, kl_estimator=estimator, loss_agg_mode=agg, chunk_size=5)(
        la[0], la[1], y, old, adv, la[2], ref_hidden=rh, ref_weight=rw)
    mask = torch.cat((y[:, 1:] != -100, torch.zeros_like(y[:, :1], dtype=torch.bool)), 1)
    lp = unfused_token_logps(*lb, y)
    ref = unfused_token_logps(rh, rw, None, y)
    d = lp - ref  # the per-token KL estimators, from their definitions
    k = {"k1": d, "k2": 0.5 * d ** 2, "k3": torch.exp(-d) - 1 + d}[estimator]
    want = L.PolicyLoss(loss_agg_mode=agg)(lp, old, adv, mask) + 0.04 * L.agg_loss(k, mask, agg)
    compare(got, want, la, lb)


@pytest.mark.parametrize("chunk", [1, 4])
def test_module_in_place_hook_equals_the_plain_modules(chunk):
    """GPTLMLoss / KDLoss(chunk_size=..., in_place=True) against an independent float64 formula."""
    z, t, y = _logits(21)
    nxt = torch.cat((y[:, 1:], torch.full_like(y[:, :1], -100)), dim=1)
    keep = nxt != -100
    logp = torch.log_softmax(z, dim=-1)
    n = keep.sum()
    want_ce = -torch.where(keep, logp.gather(-1, torch.where(keep, nxt, 0).unsqueeze(-1)).squeeze(-1), 0.0).sum() / n
    onehot = F.one_hot(torch.where(keep, nxt, 0), 13).to(torch.float64)
    want_ce_grad = torch.where(keep.unsqueeze(-1), logp.exp() - onehot, 0.0) / n  # (p - e_y) / N
    b = z.clone().requires_grad_()
    got = L.GPTLMLoss(chunk_size=chunk, in_place=True)(b, y)
    close(got, want_ce, "CE loss")
    got.backward()
    close(b.grad, want_ce_grad, "CE gradient")
    assert b.grad.data_ptr() == b.data_ptr()
    keep_kd = y != -100
    q = torch.softmax(t, dim=-1)
    nk = keep_kd.sum()
    want_kd = -torch.where(keep_kd, (q * logp).sum(-1), 0.0).sum() / nk
    want_kd_grad = torch.where(keep_kd.unsqueeze(-1), logp.exp() - q, 0.0) / nk  # (p - q) / N
    b = z.clone().requires_grad_()
    got = L.KDLoss(chunk_size=chunk, in_place=True)(b, t, y)
    close(got, want_kd, "KD loss")
    got.backward()
    close(b.grad, want_kd_grad, "KD gradient")
    assert b.grad.data_ptr() == b.data_ptr()
    assert not L.GPTLMLoss(chunk_size=chunk).in_place  # opt-in


def test_module_in_place_hook_refuses_reuse_and_a_missing_chunk():
    z, t, y = _logits(22)
    with pytest.raises(ValueError, match="in_place=True needs chunk_size"):
        L.GPTLMLoss(in_place=True)
    with pytest.raises(ValueError, match="in_place=True needs chunk_size"):
        L.KDLoss(in_place=True)
    with pytest.raises(TypeError, match="in_place must be a bool"):
        L.KDLoss(chunk_size=4, in_place="yes")
    b = z.clone().requires_grad_()
    L.GPTLMLoss(chunk_size=4, in_place=True)(b, y)
    for again in (L.GPTLMLoss(), L.GPTLMLoss(chunk_size=4)):
        with pytest.raises(RuntimeError, match="overwritten by an in-place chunked loss"):
            again(b, y)
    with pytest.raises(RuntimeError, match="overwritten by an in-place chunked loss"):
        L.KDLoss()(b, t, y)
    x = z.clone().requires_grad_()
    L.KDLoss(chunk_size=4, in_place=True)(x, t, y)
    with pytest.raises(RuntimeError, match="overwritten by an in-place chunked loss"):
        L.KDLoss(chunk_size=4)(x, t, y)
    with pytest.raises(RuntimeError, match="overwritten by an in-place chunked loss"):
        L.KDLoss()(t.clone(), x, y)  # as the teacher too
