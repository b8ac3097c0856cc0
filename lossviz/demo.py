"""A short tour of the production losses: each one on a small seeded batch, with its gradient norm."""

from __future__ import annotations

from typing import Callable


def run_demo(emit: Callable[[str], None]) -> None:
    import torch

    from . import losses as L

    gen = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    batch, steps, vocab = 2, 6, 11
    labels = torch.randint(0, vocab, (batch, steps), generator=gen)
    labels[:, :2] = -100  # the prompt: masked out of the loss
    mask = torch.ones(batch, steps)
    mask[1, -2:] = 0  # padding after the second response
    prm_inputs = torch.randint(0, 8, (batch, steps), generator=gen)
    prm_inputs[:, 2::2] = 10  # a placeholder after each step
    prm_labels = torch.where(prm_inputs == 10, torch.randint(8, 10, (batch, steps), generator=gen), -100)

    cases = [
        ("GPTLMLoss()", L.GPTLMLoss(), lambda: (randn(batch, steps, vocab), labels)),
        ("KDLoss()", L.KDLoss(), lambda: (randn(batch, steps, vocab), randn(batch, steps, vocab), labels)),
        ("DPOLoss(beta=0.1)", L.DPOLoss(0.1), lambda: tuple(randn(4, scale=10) for _ in range(4))),
        ("DPOLoss(beta=0.1, label_smoothing=0.1)", L.DPOLoss(0.1, 0.1), lambda: tuple(randn(4, scale=10) for _ in range(4))),
        ("DPOLoss(beta=0.1, ipo=True)", L.DPOLoss(0.1, ipo=True), lambda: tuple(randn(4, scale=10) for _ in range(4))),
        (
            "KTOLoss(beta=0.1, 1.0, 1.33, world_size=1)",
            L.KTOLoss(0.1, 1.0, 1.33, 1, torch.device("cpu")),
            lambda: (randn(3, scale=10), randn(2, scale=10), randn(5, scale=10), randn(3, scale=10), randn(2, scale=10), randn(5, scale=10)),
        ),
        ("VanillaKTOLoss(beta=0.1)", L.VanillaKTOLoss(0.1), lambda: tuple(randn(4, scale=10) for _ in range(4))),
        ("PolicyLoss(clip_eps=0.2)", L.PolicyLoss(0.2), lambda: (randn(batch, steps, scale=0.3), randn(batch, steps, scale=0.3), randn(batch, steps), mask)),
        ("ValueLoss(clip_eps=0.2)", L.ValueLoss(0.2), lambda: (randn(batch, steps), randn(batch, steps), randn(batch, steps), mask)),
        ("PairWiseLoss()", L.PairWiseLoss(), lambda: (randn(4), randn(4))),
        ("LogExpLoss()", L.LogExpLoss(), lambda: (randn(4), randn(4))),
        ("PRMLoss(10, reward_token_ids=[8, 9])", L.PRMLoss(10, [8, 9]), lambda: (prm_inputs, randn(batch, steps, vocab), prm_labels)),
    ]
    emit(f"{'loss':<44} {'value':>12} {'|grad|':>12}")
    emit("-" * 70)
    for title, module, make in cases:
        args = make()
        out = module(*args)
        loss = out[0] if isinstance(out, tuple) else out
        leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
        emit(f"{title:<44} {loss.item():>12.6f} {norm.item():>12.6f}")
    emit("")
    emit("The LogExp overflow that lossviz fixes: a reward gap of 1e4 gives the gap, not inf.")
    gap = L.LogExpLoss()(torch.tensor([0.0]), torch.tensor([1e4]))
    emit(f"LogExpLoss()(chosen=0, reject=1e4) = {gap.item():g}")
