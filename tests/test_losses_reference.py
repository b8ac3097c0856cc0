"""Production losses == independent float64 references (outputs and input gradients, rel 1e-10)."""

import pytest
import torch

from cases import first, make_cases

CASES = make_cases(seed=0)
REL = 1e-10


def assert_rel_close(actual, expected, what):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    actual = torch.as_tensor(actual, dtype=torch.float64)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=REL, atol=REL * max(scale, 1e-300), msg=lambda m: f"{what}: {m}")


def _clone_leaves(args):
    return [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_outputs_and_gradients_match_reference(case):
    out = case.module(*case.args, **case.kwargs)
    ref_args = _clone_leaves(case.args)
    expected = case.reference(*ref_args)
    outs = out if isinstance(out, tuple) else (out,)
    exps = expected if isinstance(expected, tuple) else (expected,)
    if case.id.startswith("prm"):
        exps = exps[:1]  # the reference also returns accuracy; checked in its own test
    for i, (o, e) in enumerate(zip(outs, exps)):
        assert_rel_close(o.detach(), e.detach() if isinstance(e, torch.Tensor) else e, f"{case.id} output {i}")
    assert first(out).dtype == torch.float64
    grads = torch.autograd.grad(first(out), case.leaves, allow_unused=True)
    ref_grads = torch.autograd.grad(first(expected), [a for a in ref_args if isinstance(a, torch.Tensor) and a.requires_grad], allow_unused=True)
    for k, (g, rg) in enumerate(zip(grads, ref_grads)):
        g = torch.zeros_like(case.leaves[k]) if g is None else g
        rg = torch.zeros_like(case.leaves[k]) if rg is None else rg
        assert torch.isfinite(g).all(), f"{case.id}: non-finite gradient of input {k}"
        assert_rel_close(g, rg, f"{case.id} gradient of input {k}")


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith("prm")], ids=lambda c: c.id)
def test_prm_accuracy_matches_reference(case):
    loss, acc = case.module(*case.args, return_acc=True)
    _, expected_acc = case.reference(*case.args)
    assert acc.item() == pytest.approx(expected_acc, abs=1e-12)


def test_dpo_gradient_is_paper_eq7():
    """DPO paper Eq. 7: dL/d(pi_c) = -beta * sigma(-beta h) / N = -dL/d(pi_r)."""
    from lossviz.losses import DPOLoss

    beta = 0.3
    pc, pr, rc, rr = (torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) * 4 for k in range(4))
    pc.requires_grad_(), pr.requires_grad_()
    loss, *_ = DPOLoss(beta)(pc, pr, rc, rr)
    g_c, g_r = torch.autograd.grad(loss, [pc, pr])
    h = (pc - pr - rc + rr).detach()
    expected = -beta * torch.sigmoid(-beta * h) / 5
    assert_rel_close(g_c, expected, "d/d pi_c")
    assert_rel_close(g_r, -expected, "d/d pi_r")


def test_kd_gradient_is_student_minus_teacher_probs():
    from lossviz.losses import KDLoss

    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, 4, 9, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.randn(1, 4, 9, dtype=torch.float64, generator=gen)
    label = torch.zeros(1, 4, dtype=torch.long)
    (g,) = torch.autograd.grad(KDLoss()(z, t, label), [z])
    assert_rel_close(g, (torch.softmax(z, -1) - torch.softmax(t, -1)).detach() / 4, "dKD/dz")


def test_all_ignored_returns_attached_zero():
    from lossviz.losses import GPTLMLoss, KDLoss

    z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    none = torch.full((2, 3), -100)
    for loss in (GPTLMLoss()(z, none), KDLoss()(z, z.detach(), none)):
        assert loss.item() == 0.0 and loss.requires_grad
        (g,) = torch.autograd.grad(loss, [z])
        assert torch.count_nonzero(g) == 0


def test_masked_mean_matches_definition_and_guards_empty_slices():
    from lossviz.losses import masked_mean

    x = torch.tensor([[1.0, 2.0, 7.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(x, m, dim=-1).tolist() == [1.5, 0.0]  # an empty row gives 0, not 0/0
    assert masked_mean(x[1:], None, dim=-1).tolist() == [5.0]
    assert masked_mean(x, m).item() == 1.5
    w = torch.tensor([[0.5, 1.5, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)  # fractional weights
    assert masked_mean(x, w, dim=-1).tolist() == [(0.5 + 3.0) / 2.0, 5.0]
