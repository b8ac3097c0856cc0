"""Preference and distillation losses of issue #14 against independent float64 references.

Every DPO ``loss_type``, MPO weights, RPO's NLL term, SimPO, CPO, ORPO, KTO's
``apo_zero_unpaired``, GKD (β ∈ {0, 0.1, 0.5, 0.9, 1} and temperatures), chunked == unchunked,
``ignore_index``, KD's temperature: value and input gradients within rel 1e-10 of
``references_pref`` (plain float64 math). Then the sturdiness cases (margins of ±1e4 in
float32, ORPO at mean log-probs −1e-9 and −50) and the one-line errors.
"""

import math

import mpmath
import pytest
import torch

import references_pref as ref
from lossviz.losses import (
    CPOLoss, DPO_LOSS_TYPES, DPOLoss, GKDLoss, KDLoss, KTOLoss, ORPOLoss, ReverseKLLoss, SimPOLoss, gkd_per_token,
)

REL = 1e-10
F64 = torch.float64


def close(actual, expected, what, rel=REL):
    expected = torch.as_tensor(expected, dtype=F64)
    actual = torch.as_tensor(actual, dtype=F64)
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, 1e-300)
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale, msg=lambda m: f"{what}: {m}")


def leaves(n, seed, scale=3.0, shift=0.0, count=4):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, generator=gen, dtype=F64) * scale + shift).requires_grad_() for _ in range(count)]


def clones(xs):
    return [x.detach().clone().requires_grad_() for x in xs]


def check_against(out, expected, xs, ref_xs, what):
    """Outputs elementwise, then the gradients of the first output with respect to every leaf."""
    for k, (o, e) in enumerate(zip(out, expected)):
        close(o.detach(), e.detach(), f"{what} output {k}")
    grads = torch.autograd.grad(out[0], xs, allow_unused=True)
    ref_grads = torch.autograd.grad(expected[0], ref_xs, allow_unused=True)
    for k, (g, rg) in enumerate(zip(grads, ref_grads)):
        g = torch.zeros_like(xs[k]) if g is None else g
        rg = torch.zeros_like(xs[k]) if rg is None else rg
        close(g, rg, f"{what} gradient {k}")


LENGTHS_C = torch.tensor([3.0, 7.0, 12.0, 5.0, 9.0, 2.0], dtype=F64)
LENGTHS_R = torch.tensor([4.0, 2.0, 10.0, 6.0, 15.0, 8.0], dtype=F64)

# (id, constructor kwargs, reference kwargs)
DPO_VARIANTS = [(t, {"loss_type": t}, {}) for t in DPO_LOSS_TYPES if t not in ("exo_pair",)] + [
    ("cdpo", {"label_smoothing": 0.2}, {"eps": 0.2}),
    ("ipo-flag", {"ipo": True}, {"types": ["ipo"]}),
    ("robust-eps", {"loss_type": "robust", "label_smoothing": 0.2}, {"eps": 0.2}),
    ("exo_pair", {"loss_type": "exo_pair", "label_smoothing": 1e-3}, {"eps": 1e-3}),
    ("exo_pair-eps", {"loss_type": "exo_pair", "label_smoothing": 0.3}, {"eps": 0.3}),
    ("discopop-tau", {"loss_type": "discopop", "discopop_tau": 0.5}, {"tau": 0.5}),
    ("ipo-length-normalized", {"loss_type": "ipo", "length_normalized": True}, {"length_normalized": True}),
    ("hinge-length-normalized", {"loss_type": "hinge", "length_normalized": True}, {"length_normalized": True}),
    ("rpo", {"nll_loss_coef": 0.7}, {"nll_coef": 0.7}),
    ("mpo", {"loss_type": ["sigmoid", "bco_pair", "sft"], "loss_weights": [0.8, 0.2, 1.0]},
     {"weights": [0.8, 0.2, 1.0]}),
    ("list-default-weights", {"loss_type": ["apo_zero", "sigmoid_norm", "discopop"], "label_smoothing": 0.1},
     {"eps": 0.1}),
    ("mpo-rpo-smoothed", {"loss_type": ("sigmoid", "robust"), "loss_weights": (0.5, 2.0), "label_smoothing": 0.1,
                          "nll_loss_coef": 0.3}, {"weights": [0.5, 2.0], "eps": 0.1, "nll_coef": 0.3}),
]


@pytest.mark.parametrize("beta", [0.1, 1.3])
@pytest.mark.parametrize("tag,kw,ref_kw", DPO_VARIANTS, ids=[v[0] for v in DPO_VARIANTS])
def test_dpo_types_match_reference(tag, kw, ref_kw, beta):
    # pc, pr are summed log-probs (negative); the reference log-probs differ by a few nats
    pc, pr = leaves(6, seed=1, scale=4.0, shift=-20.0, count=2)
    rc, rr = leaves(6, seed=2, scale=4.0, shift=-20.0, count=2)
    xs = [pc, pr, rc, rr]
    ref_xs = clones(xs)
    out = DPOLoss(beta, **kw)(*xs, chosen_lengths=LENGTHS_C, rejected_lengths=LENGTHS_R)
    ref_kw = dict(ref_kw)
    types = ref_kw.pop("types", None) or ([kw["loss_type"]] if isinstance(kw.get("loss_type"), str)
                                           else list(kw.get("loss_type", ["sigmoid"])))
    expected = ref.dpo(types, beta, *ref_xs, lc=LENGTHS_C, lr=LENGTHS_R, **ref_kw)
    check_against(out, expected, xs, ref_xs, tag)


def test_default_reproduces_v053_bit_for_bit():
    """loss_type='sigmoid' (and an equal one-entry list) give the v0.5.3 computation exactly."""
    xs = leaves(5, seed=3, scale=10.0)
    for eps in (0.0, 0.2):
        base = DPOLoss(0.1, eps)(*xs)
        for other in (DPOLoss(0.1, eps, loss_type="sigmoid"), DPOLoss(beta=0.1, label_smoothing=eps, loss_type=["sigmoid"])):
            out = other(*xs)
            assert all(torch.equal(a, b) for a, b in zip(base, out))
    assert torch.equal(DPOLoss(0.1, ipo=True)(*xs)[0], DPOLoss(0.1, loss_type="ipo")(*xs)[0])


def test_rpo_nll_is_openrlhf_token_mean_per_sequence():
    """nll_loss_coef = α adds α · mean_i(−π_c,i / L_c,i): the DPO loss plus that closed form."""
    pc, pr, rc, rr = leaves(6, seed=4, scale=5.0, shift=-30.0)
    plain = DPOLoss(0.1)(pc, pr, rc, rr)[0]
    rpo = DPOLoss(0.1, nll_loss_coef=0.5)(pc, pr, rc, rr, chosen_lengths=LENGTHS_C)[0]
    close(rpo - plain, 0.5 * (-pc.detach() / LENGTHS_C).mean(), "RPO NLL term")
    as_int = DPOLoss(0.1, nll_loss_coef=0.5)(pc, pr, rc, rr, chosen_lengths=LENGTHS_C.long())[0]
    assert torch.equal(as_int, rpo)  # integer token counts are accepted


def test_length_normalized_rewards_are_per_token():
    pc, pr, rc, rr = leaves(6, seed=5)
    _, c, r = DPOLoss(0.2, loss_type="ipo", length_normalized=True)(pc, pr, rc, rr, chosen_lengths=LENGTHS_C,
                                                                      rejected_lengths=LENGTHS_R)
    close(c, 0.2 * (pc - rc).detach() / LENGTHS_C, "chosen rewards")
    close(r, 0.2 * (pr - rr).detach() / LENGTHS_R, "rejected rewards")


def test_sppo_targets_and_apo_zero_independence():
    """SPPO's minimum sits at ρ_c = 1/(2β), ρ_r = −1/(2β); APO-zero's chosen gradient ignores ρ_r."""
    beta = 0.25
    rc = torch.tensor([1 / (2 * beta)], dtype=F64, requires_grad=True)
    rr = torch.tensor([-1 / (2 * beta)], dtype=F64, requires_grad=True)
    zero = torch.zeros(1, dtype=F64)
    loss = DPOLoss(beta, loss_type="sppo_hard")(rc, rr, zero, zero)[0]
    assert loss.item() == 0.0
    assert all(g.item() == 0.0 for g in torch.autograd.grad(loss, [rc, rr]))
    grads = []
    for other in (-3.0, 4.0):
        pc = torch.tensor([0.7], dtype=F64, requires_grad=True)
        loss = DPOLoss(beta, loss_type="apo_zero")(pc, torch.tensor([other], dtype=F64), zero, zero)[0]
        grads.append(torch.autograd.grad(loss, [pc])[0].item())
    assert grads[0] == grads[1] and grads[0] < 0  # pushes the chosen log-ratio up whatever the rejected does
    close(grads[0], -beta * ref.sig(torch.tensor(beta * 0.7, dtype=F64)) * ref.sig(torch.tensor(-beta * 0.7, dtype=F64)), "APO-zero slope")


def _discopop_slope(z, tau=0.05):
    h = torch.tensor([z], dtype=F64, requires_grad=True)
    zero = torch.zeros(1, dtype=F64)
    loss = DPOLoss(1.0, loss_type="discopop", discopop_tau=tau)(h, zero, zero, zero)[0]
    return torch.autograd.grad(loss, [h])[0].item()


def test_discopop_is_not_monotone():
    """Slope at z = 0 is 5 − 5 log 2 − 3/4 (from the formula, τ = 0.05) > 0; it changes sign twice near 0."""
    close(_discopop_slope(0.0), 5 - 5 * math.log(2) - 0.75, "DiscoPOP slope at 0")
    assert _discopop_slope(-0.3) < 0 < _discopop_slope(0.0) and _discopop_slope(0.3) < 0


SIDES = [(1e4, 0.0), (-1e4, 0.0), (0.0, 1e4), (0.0, -1e4), (1e4, -1e4), (-1e4, 1e4)]


@pytest.mark.parametrize("beta", [0.1, 1.0])
@pytest.mark.parametrize("kind", DPO_LOSS_TYPES)
def test_every_type_finite_at_margins_1e4_float32(kind, beta):
    eps = 0.1 if kind == "exo_pair" else 0.0
    lengths = torch.tensor([1.0, 3.0])
    for a, b in SIDES:
        pc = torch.tensor([a, a / 2], requires_grad=True)
        pr = torch.tensor([b, b / 2], requires_grad=True)
        zero = torch.zeros(2)
        out = DPOLoss(beta, eps, loss_type=kind, nll_loss_coef=0.1)(pc, pr, zero, zero, chosen_lengths=lengths, rejected_lengths=lengths)
        grads = torch.autograd.grad(out[0], [pc, pr], allow_unused=True)
        assert torch.isfinite(out[0]), (kind, a, b, out[0])
        assert all(g is None or torch.isfinite(g).all() for g in grads), (kind, a, b, grads)


def test_reference_free_and_kto_finite_at_1e4_float32():
    lengths = torch.tensor([1.0, 4.0])
    for a, b in SIDES:
        pc = torch.tensor([-abs(a), -abs(a) / 2], requires_grad=True)
        pr = torch.tensor([-abs(b), -abs(b) / 2], requires_grad=True)
        zero = torch.zeros(2)
        for out in (SimPOLoss()(pc, pr, lengths, lengths), CPOLoss()(pc, pr, lengths), ORPOLoss()(pc, pr, lengths, lengths),
                    KTOLoss(1.0, 1.0, 1.0, 1, None, loss_type="apo_zero_unpaired")(pc + a, pr + b, None, zero, zero, None)):
            grads = torch.autograd.grad(out[0], [pc, pr])
            assert torch.isfinite(out[0]) and all(torch.isfinite(g).all() for g in grads), (a, b, out)


# ----------------------------------------------------------------------------- reference-free


@pytest.mark.parametrize("beta,gamma,eps", [(2.0, 0.5, 0.0), (2.5, 1.4, 0.0), (0.7, 0.0, 0.15)])
def test_simpo_matches_reference(beta, gamma, eps):
    pc, pr = leaves(6, seed=6, scale=6.0, shift=-15.0, count=2)
    ref_xs = clones([pc, pr])
    out = SimPOLoss(beta, gamma, label_smoothing=eps)(pc, pr, LENGTHS_C, LENGTHS_R)
    check_against(out, ref.simpo(beta, gamma, eps, *ref_xs, LENGTHS_C, LENGTHS_R), [pc, pr], ref_xs, "SimPO")


def test_simpo_gamma_beta_ratio_is_halos_parametrisation():
    pc, pr = leaves(6, seed=7, scale=6.0, shift=-15.0, count=2)
    a = SimPOLoss(2.5, gamma_beta_ratio=0.4)
    assert a.gamma == pytest.approx(1.0)
    assert torch.equal(a(pc, pr, LENGTHS_C, LENGTHS_R)[0], SimPOLoss(2.5, 1.0)(pc, pr, LENGTHS_C, LENGTHS_R)[0])


@pytest.mark.parametrize("beta,alpha,eps", [(0.1, 1.0, 0.0), (0.5, 0.0, 0.0), (0.3, 0.4, 0.2)])
def test_cpo_matches_reference(beta, alpha, eps):
    pc, pr = leaves(6, seed=8, scale=6.0, shift=-15.0, count=2)
    ref_xs = clones([pc, pr])
    out = CPOLoss(beta, alpha, label_smoothing=eps)(pc, pr, LENGTHS_C)
    check_against(out, ref.cpo(beta, alpha, eps, *ref_xs, LENGTHS_C), [pc, pr], ref_xs, "CPO")


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_matches_reference(lam):
    pc, pr = leaves(6, seed=9, scale=3.0, shift=-8.0, count=2)
    pc, pr = (-(pc.detach().abs() + 0.5)).requires_grad_(), (-(pr.detach().abs() + 0.5)).requires_grad_()
    ref_xs = clones([pc, pr])
    out = ORPOLoss(lam)(pc, pr, LENGTHS_C, LENGTHS_R)
    check_against(out, ref.orpo(lam, *ref_xs, LENGTHS_C, LENGTHS_R), [pc, pr], ref_xs, "ORPO")
    assert torch.equal(ORPOLoss(beta=lam)(pc, pr, LENGTHS_C, LENGTHS_R)[0], out[0])


def _orpo_exact(xc, xr, lam):
    """ORPO at one pair of mean log-probs in 50-digit arithmetic: (loss, d/dxc, d/dxr)."""
    mpmath.mp.dps = 50

    def loss(a, b):
        odds = lambda x: x - mpmath.log(-mpmath.expm1(x))
        return -a - lam * mpmath.log(1 / (1 + mpmath.exp(-(odds(a) - odds(b)))))

    a, b = mpmath.mpf(xc), mpmath.mpf(xr)
    return float(loss(a, b)), float(mpmath.diff(lambda u: loss(u, b), a)), float(mpmath.diff(lambda u: loss(a, u), b))


@pytest.mark.parametrize("xc,xr", [(-1e-9, -50.0), (-50.0, -1e-9), (-1e-9, -1e-9 * 3), (-50.0, -49.0), (-0.69, -0.7)])
def test_orpo_float32_near_0_and_far_below(xc, xr):
    """Mean log-probs −1e-9 and −50 in float32: finite, and equal to 50-digit arithmetic (rel 1e-5)."""
    pc = torch.tensor([xc], dtype=torch.float32, requires_grad=True)
    pr = torch.tensor([xr], dtype=torch.float32, requires_grad=True)
    one = torch.ones(1)
    loss = ORPOLoss(0.1)(pc, pr, one, one)[0]
    g_c, g_r = torch.autograd.grad(loss, [pc, pr])
    value, d_c, d_r = _orpo_exact(pc.item(), pr.item(), 0.1)
    assert math.isfinite(loss.item()) and math.isfinite(g_c.item()) and math.isfinite(g_r.item())
    assert loss.item() == pytest.approx(value, rel=1e-5)
    assert g_c.item() == pytest.approx(d_c, rel=1e-4)
    assert g_r.item() == pytest.approx(d_r, rel=1e-4)


def test_orpo_finite_at_probability_one():
    pc = torch.zeros(2, requires_grad=True)
    pr = torch.tensor([-3.0, -0.0], requires_grad=True)
    one = torch.ones(2)
    loss = ORPOLoss()(pc, pr, one, one)[0]
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, [pc, pr]))


@pytest.mark.parametrize("w_d,w_u,n_d,n_u", [(1.0, 1.0, 4, 3), (1.5, 0.5, 3, 0), (1.0, 2.0, 0, 2)])
def test_kto_apo_zero_unpaired_matches_reference(w_d, w_u, n_d, n_u):
    gen = torch.Generator().manual_seed(10)
    pc, rc = (torch.randn(n_d, generator=gen, dtype=F64) * 5 for _ in range(2))
    pr, rr = (torch.randn(n_u, generator=gen, dtype=F64) * 5 for _ in range(2))
    xs = [x.requires_grad_() for x in (pc, pr, rc, rr)]
    ref_xs = clones(xs)
    kl_p, kl_r = torch.randn(3, dtype=F64, generator=gen), torch.randn(3, dtype=F64, generator=gen)
    module = KTOLoss(0.3, w_d, w_u, 1, torch.device("cpu"), loss_type="apo_zero_unpaired")
    loss, c, r, kl = module(xs[0], xs[1], kl_p, xs[2], xs[3], kl_r)
    assert kl.item() == max(0.0, (kl_p - kl_r).mean().item())  # still returned as a diagnostic
    check_against((loss, c, r), ref.kto_apo_zero_unpaired(0.3, w_d, w_u, *ref_xs), xs, ref_xs, "KTO apo_zero_unpaired")
    loss_none, *_, kl_none = module(xs[0], xs[1], None, xs[2], xs[3], None)
    assert torch.equal(loss_none, loss) and kl_none.item() == 0.0


# ----------------------------------------------------------------------------- distillation

def distill_inputs(seed, vocab=6, shape=(2, 4), scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(*shape, vocab, generator=gen, dtype=F64) * scale).requires_grad_()
    t = (torch.randn(*shape, vocab, generator=gen, dtype=F64) * scale).requires_grad_()
    label = torch.randint(0, vocab, shape, generator=gen)
    label[0, 1] = -100
    label[1, 3] = -100
    return z, t, label


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_gkd_matches_reference(beta, tau):
    z, t, label = distill_inputs(11)
    ref_xs = clones([z, t])
    out = GKDLoss(beta, tau)(z, t, label)
    check_against((out,), (ref.gkd(beta, tau, *ref_xs, label),), [z, t], ref_xs, f"GKD beta={beta} tau={tau}")


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_gkd_chunked_equals_unchunked(beta, chunk):
    z, t, label = distill_inputs(12, shape=(2, 5))
    z2, t2 = clones([z, t])
    plain = GKDLoss(beta, 1.5)(z, t, label)
    chunked = GKDLoss(beta, 1.5, chunk_size=chunk)(z2, t2, label)
    close(chunked.detach(), plain.detach(), "chunked value", rel=1e-12)
    for g, g2 in zip(torch.autograd.grad(plain, [z, t]), torch.autograd.grad(3.0 * chunked, [z2, t2])):
        close(g2, 3.0 * g, "chunked gradient (upstream 3)", rel=1e-12)


@pytest.mark.parametrize("chunk", [None, 2])
def test_gkd_ignore_index_and_nan_padding(chunk):
    z, t, label = distill_inputs(13)
    z_pad, t_pad = z.detach().clone(), t.detach().clone()
    keep = label != -100
    z_pad[~keep] = float("nan")
    t_pad[~keep] = float("inf")
    z_pad.requires_grad_()
    loss = GKDLoss(0.5, chunk_size=chunk)(z_pad, t_pad, label)
    close(loss.detach(), GKDLoss(0.5)(z, t, label).detach(), "NaN padding ignored")
    (g,) = torch.autograd.grad(loss, [z_pad])
    assert torch.isfinite(g).all() and torch.count_nonzero(g[~keep]) == 0
    other = torch.where(keep, label, -1)  # a custom ignore index
    close(GKDLoss(0.5, ignore_index=-1, chunk_size=chunk)(z, t, other).detach(), GKDLoss(0.5)(z, t, label).detach(),
          "ignore_index=-1")
    none = torch.full_like(label, -100)
    zero = GKDLoss(0.5, chunk_size=chunk)(z, t, none)
    assert zero.item() == 0.0 and zero.requires_grad


def test_gkd_ends_are_the_two_kls_and_their_gradients():
    """β = 0: ∂/∂z = (p_S − p_T)/N (forward KL); β = 1 is ReverseKLLoss with ∂/∂z_k = p_S,k(log p_S,k/p_T,k − KL)/N."""
    z, t, _ = distill_inputs(14)
    label = torch.zeros(2, 4, dtype=torch.long)
    p_s, p_t = torch.softmax(z.detach(), -1), torch.softmax(t.detach(), -1)
    (g0,) = torch.autograd.grad(GKDLoss(0.0)(z, t, label), [z])
    close(g0, (p_s - p_t) / 8, "forward KL gradient")
    rev = ReverseKLLoss()(z, t, label)
    assert torch.equal(rev, GKDLoss(1.0)(z, t, label))
    (g1,) = torch.autograd.grad(rev, [z])
    log_ratio = torch.log(p_s / p_t)
    kl = (p_s * log_ratio).sum(-1, keepdim=True)
    close(g1, p_s * (log_ratio - kl) / 8, "reverse KL gradient")
    # forward KL = KD cross-entropy minus the teacher's entropy
    entropy = -(p_t * torch.log(p_t)).sum(-1).mean()
    close(GKDLoss(0.0)(z, t, label).detach(), KDLoss()(z, t, label).detach() - entropy, "KL = CE - H")


def test_gkd_interior_tends_to_beta_times_kl():
    """To first order JSD_β ≈ β KL(p_T‖p_S) near 0 and (1−β) KL(p_S‖p_T) near 1 (the ends drop that factor)."""
    z, t, label = distill_inputs(15)
    forward, reverse = GKDLoss(0.0)(z, t, label).item(), GKDLoss(1.0)(z, t, label).item()
    for small in (1e-3, 1e-4):
        assert GKDLoss(small)(z, t, label).item() / small == pytest.approx(forward, rel=20 * small)
        assert GKDLoss(1 - small)(z, t, label).item() / small == pytest.approx(reverse, rel=20 * small)


def test_gkd_per_token_is_the_unreduced_loss():
    z, t, _ = distill_inputs(16)
    per = gkd_per_token(z, t, 0.3, 2.0)
    assert per.shape == (2, 4)
    label = torch.zeros(2, 4, dtype=torch.long)
    close(per.mean().detach(), GKDLoss(0.3, 2.0)(z, t, label).detach(), "per-token mean")


def test_gkd_float32_extreme_logits_finite():
    gen = torch.Generator().manual_seed(17)
    z = (torch.randn(3, 50, generator=gen) * 1e4).requires_grad_()
    t = torch.randn(3, 50, generator=gen) * 1e4
    t[0, 5] = float("-inf")  # a token the teacher forbids
    z.data[1, 7] = t[1, 7] = float("-inf")  # a token both forbid (logaddexp(-inf, -inf) has a NaN gradient)
    label = torch.zeros(3, dtype=torch.long)
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        for chunk in (None, 2):
            loss = GKDLoss(beta, 0.7, chunk_size=chunk)(z, t, label)
            (g,) = torch.autograd.grad(loss, [z])
            assert torch.isfinite(loss) and torch.isfinite(g).all(), (beta, chunk)


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("tau", [0.5, 2.0, 4.0])
def test_kd_temperature_matches_reference(tau, chunk):
    z, t, label = distill_inputs(18)
    t = t.detach()
    ref_z = z.detach().clone().requires_grad_()
    out = KDLoss(temperature=tau, chunk_size=chunk)(z, t, label)
    check_against((out,), (ref.kd_temperature(tau, ref_z, t, label),), [z], [ref_z], f"KD tau={tau}")


def test_kd_temperature_one_is_v053():
    z, t, label = distill_inputs(19)
    assert torch.equal(KDLoss(temperature=1.0)(z, t, label), KDLoss()(z, t, label))


def test_kd_tau_squared_keeps_gradient_scale():
    """Hinton §2: without τ² the gradient shrinks like 1/τ² at high τ; with it, it tends to (z − t)/(V N) (zero-mean logits)."""
    gen = torch.Generator().manual_seed(20)
    z, t = (torch.randn(1, 1, 6, generator=gen, dtype=F64) for _ in range(2))
    label = torch.zeros(1, 1, dtype=torch.long)
    zc, tc = z - z.mean(), t - t.mean()
    zc.requires_grad_()
    (g,) = torch.autograd.grad(KDLoss(temperature=1e3)(zc, tc, label), [zc])
    close(g, (zc.detach() - tc) / 6, "high-temperature limit", rel=1e-2)


# ----------------------------------------------------------------------------- errors


def _raises(exc, match, fn):
    with pytest.raises(exc, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_one_line_errors():
    x = [torch.randn(3) for _ in range(4)]
    n = torch.ones(3)
    _raises(ValueError, "loss_type 'dpo' is unknown; choose from sigmoid, ipo, robust", lambda: DPOLoss(0.1, loss_type="dpo"))
    _raises(ValueError, "chosen_lengths is required for loss_type 'sigmoid_norm'", lambda: DPOLoss(0.1, loss_type="sigmoid_norm")(*x))
    _raises(ValueError, "rejected_lengths is required", lambda: DPOLoss(0.1, loss_type="sigmoid_norm")(*x, chosen_lengths=n))
    _raises(ValueError, "chosen_lengths is required for length_normalized", lambda: DPOLoss(0.1, loss_type="ipo", length_normalized=True)(*x))
    _raises(ValueError, "chosen_lengths is required for nll_loss_coef", lambda: DPOLoss(0.1, nll_loss_coef=1.0)(*x))
    _raises(ValueError, "chosen_lengths must be finite and > 0", lambda: DPOLoss(0.1, nll_loss_coef=1.0)(*x, chosen_lengths=torch.tensor([1.0, 0.0, 2.0])))
    _raises(ValueError, "chosen_lengths must have the shape", lambda: DPOLoss(0.1, nll_loss_coef=1.0)(*x, chosen_lengths=torch.ones(2)))
    _raises(ValueError, "beta must be > 0.0", lambda: DPOLoss(0.0, loss_type="hinge"))
    _raises(ValueError, "label_smoothing must be > 0 for loss_type 'exo_pair'", lambda: DPOLoss(0.1, loss_type="exo_pair"))
    _raises(ValueError, "loss_weights has 1 entries but loss_type has 2", lambda: DPOLoss(0.1, loss_type=["sigmoid", "hinge"], loss_weights=[1.0]))
    _raises(ValueError, "loss_weights\\[1\\] must be >= 0.0", lambda: DPOLoss(0.1, loss_type=["sigmoid", "hinge"], loss_weights=[1.0, -1.0]))
    _raises(ValueError, "loss_type lists a type twice", lambda: DPOLoss(0.1, loss_type=["sigmoid", "sigmoid"]))
    _raises(ValueError, "ipo=True contradicts loss_type='hinge'", lambda: DPOLoss(0.1, ipo=True, loss_type="hinge"))
    _raises(ValueError, "discopop_tau must be > 0.0", lambda: DPOLoss(0.1, loss_type="discopop", discopop_tau=0))
    _raises(ValueError, "gamma must be >= 0.0", lambda: SimPOLoss(2.0, -0.5))
    _raises(ValueError, "beta must be > 0.0", lambda: SimPOLoss(0.0))
    _raises(ValueError, "give gamma or gamma_beta_ratio, not both", lambda: SimPOLoss(2.0, 0.5, gamma_beta_ratio=0.25))
    _raises(ValueError, "chosen_lengths is required: SimPO", lambda: SimPOLoss()(x[0], x[1]))
    _raises(ValueError, "chosen_lengths is required: alpha > 0", lambda: CPOLoss()(x[0], x[1]))
    _raises(ValueError, "rejected_lengths is required: ORPO", lambda: ORPOLoss()(x[0], x[1], n))
    _raises(ValueError, "give lambda_ or its TRL name beta", lambda: ORPOLoss(0.1, beta=0.2))
    _raises(ValueError, "beta must be > 0.0", lambda: ORPOLoss(beta=-1.0))
    _raises(ValueError, "loss_type 'kto_pair' is unknown; choose from kto, apo_zero_unpaired",
            lambda: KTOLoss(0.1, 1.0, 1.0, 1, None, loss_type="kto_pair"))
    _raises(ValueError, "beta must be <= 1.0", lambda: GKDLoss(1.5))
    _raises(ValueError, "beta must be >= 0.0", lambda: GKDLoss(-0.1))
    _raises(ValueError, "temperature must be > 0.0", lambda: GKDLoss(0.5, 0.0))
    _raises(ValueError, "temperature must be > 0.0", lambda: KDLoss(temperature=-1.0))
    _raises(ValueError, "teacher_logits must have the shape of logits", lambda: GKDLoss()(torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)))


# ----------------------------------------------------------------------------- docstring gradients


def test_docstring_gradients_simpo_orpo_kd():
    """SimPO ∂ℓ/∂ℓ̄_c = −βσ(−u)/N; ORPO ∂/∂ℓ̄_c = −(1 + λσ(o_r − o_c)/(1 − e^{ℓ̄_c}))/N; KD_τ ∂/∂z = τ(p^τ − q^τ)/N."""
    one = torch.ones(3, dtype=F64)
    pc = torch.tensor([-0.3, -1.2, -2.5], dtype=F64, requires_grad=True)
    pr = torch.tensor([-0.9, -0.4, -3.0], dtype=F64)
    (g,) = torch.autograd.grad(SimPOLoss(2.0, 0.5)(pc, pr, one, one)[0], [pc])
    u = 2.0 * (pc.detach() - pr) - 0.5
    close(g, -2.0 * torch.sigmoid(-u) / 3, "SimPO gradient")
    (g,) = torch.autograd.grad(ORPOLoss(0.2)(pc, pr, one, one)[0], [pc])
    x_c, x_r = pc.detach(), pr
    o_c, o_r = x_c - torch.log(1 - torch.exp(x_c)), x_r - torch.log(1 - torch.exp(x_r))
    close(g, -(1 + 0.2 * torch.sigmoid(o_r - o_c) / (1 - torch.exp(x_c))) / 3, "ORPO gradient")
    z, t, label = distill_inputs(21)
    keep = (label != -100).unsqueeze(-1)
    (g,) = torch.autograd.grad(KDLoss(temperature=3.0)(z, t.detach(), label), [z])
    expected = 3.0 * (torch.softmax(z.detach() / 3, -1) - torch.softmax(t.detach() / 3, -1)) * keep / keep.sum()
    close(g, expected, "KD temperature gradient")
