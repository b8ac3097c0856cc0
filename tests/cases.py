"""Random, seeded inputs for every production loss, each paired with its float64 reference.

``make_cases(seed, dtype, scale)`` returns one :class:`Case` per variant (masks, margins,
ignored labels, empty KTO sides, soft and hard PRM labels, with and without
``reward_token_ids``). ``scale`` multiplies every real-valued input, for the extreme tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List

import torch

import references as ref
from lossviz import losses as L

VOCAB = 7
PLACEHOLDER = 6
REWARD_IDS = [4, 5]


@dataclass
class Case:
    id: str
    module: torch.nn.Module
    args: List
    reference: Callable  # same positional args as the module -> output(s)
    kwargs: dict = None
    detached: tuple = ()  # positions of inputs that the loss reads but never differentiates (KTO's KL batch)

    def __post_init__(self):
        self.kwargs = self.kwargs or {}

    @property
    def leaves(self):
        return [a for a in self.args if isinstance(a, torch.Tensor) and a.requires_grad]


def make_cases(seed: int = 0, dtype=torch.float64, scale: float = 1.0) -> List[Case]:
    gen = torch.Generator().manual_seed(seed)

    def real(*shape, s=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * s * scale).to(dtype).requires_grad_()

    def mask(rows, cols):
        m = (torch.rand(rows, cols, generator=gen) > 0.3).float()
        m[:, 0] = 1.0  # every sequence keeps at least one token
        return m

    def labels(rows, cols, prompt=2):
        y = torch.randint(0, VOCAB, (rows, cols), generator=gen)
        y[:, :prompt] = -100
        return y

    def prm_batch():
        inputs = torch.randint(0, 4, (2, 8), generator=gen)
        inputs[:, 1::2] = PLACEHOLDER
        hard = torch.where(inputs == PLACEHOLDER, torch.tensor(REWARD_IDS)[torch.randint(0, 2, (2, 8), generator=gen)], -100)
        soft = torch.where(inputs == PLACEHOLDER, torch.rand(2, 8, generator=gen, dtype=torch.float64), -100.0)
        return inputs, hard, soft

    cases: List[Case] = []
    add = cases.append

    lm_labels = labels(2, 6)
    add(Case("gptlm", L.GPTLMLoss(), [real(2, 6, VOCAB), lm_labels], ref.gptlm))
    add(Case("gptlm-all-ignored", L.GPTLMLoss(), [real(2, 6, VOCAB), torch.full((2, 6), -100)], ref.gptlm))

    add(Case("kd", L.KDLoss(), [real(2, 5, VOCAB), real(2, 5, VOCAB), labels(2, 5)], ref.kd))
    student = real(2, 5, VOCAB).detach()
    student[0, 1, 3] = float("-inf")  # a vocabulary entry masked out of the student
    add(Case("kd-inf-logits", L.KDLoss(), [student.requires_grad_(), real(2, 5, VOCAB), labels(2, 5)], ref.kd))
    add(Case("kd-all-ignored", L.KDLoss(), [real(2, 5, VOCAB), real(2, 5, VOCAB), torch.full((2, 5), -100)], ref.kd))

    for tag, kw in [("dpo", {}), ("cdpo", dict(label_smoothing=0.2)), ("ipo", dict(ipo=True))]:
        full = {"label_smoothing": 0.0, "ipo": False, **kw}
        add(Case(tag, L.DPOLoss(0.1, **kw), [real(5, s=10) for _ in range(4)],
                 lambda *a, f=full: ref.dpo(0.1, f["label_smoothing"], f["ipo"], *a)))

    for tag, n_c, n_r in [("kto", 3, 2), ("kto-no-chosen", 0, 4), ("kto-no-rejected", 4, 0)]:
        args = [real(n_c, s=5), real(n_r, s=5), real(6, s=5), real(n_c, s=5), real(n_r, s=5), real(6, s=5)]
        add(Case(tag, L.KTOLoss(0.1, 1.0, 1.33, 1, torch.device("cpu")), args,
                 lambda *a: ref.kto(0.1, 1.0, 1.33, *a), detached=(2, 5)))

    add(Case("vanilla-kto", L.VanillaKTOLoss(0.2), [real(3, s=5), real(4, s=5), real(3, s=5), real(4, s=5)],
             lambda *a: ref.vanilla_kto(0.2, *a)))

    def shifted(policy, reference, mean):
        """policy log-probs moved so that the side's mean log-ratio is ``mean`` (a positive reference point)."""
        with torch.no_grad():
            policy += mean * scale - (policy - reference).mean()
        return policy

    # positive reference points: gradients flow through the other side's (not detached) mean
    for tag, mean_c, mean_r in [("vanilla-kto-both-positive", 1.5, 2.0), ("vanilla-kto-chosen-positive", 1.5, -2.0)]:
        rc, rr = real(3, s=5).detach(), real(4, s=5).detach()
        pc, pr = shifted(real(3, s=5), rc, mean_c), shifted(real(4, s=5), rr, mean_r)
        add(Case(tag, L.VanillaKTOLoss(0.2), [pc, pr, rc.requires_grad_(), rr.requires_grad_()], lambda *a: ref.vanilla_kto(0.2, *a)))

    policy_variants = [
        ("policy", dict(clip_eps=0.2), (0.2, 0.2, None, False), True),
        ("policy-nomask", dict(clip_eps=0.2), (0.2, 0.2, None, False), False),
        ("policy-asym-dual", dict(clip_eps=0.2, clip_eps_low=0.1, clip_eps_high=0.3, dual_clip=1.5), (0.1, 0.3, 1.5, False), True),
        ("policy-token-level", dict(clip_eps=0.2, token_level_loss=True), (0.2, 0.2, None, True), True),
    ]
    for tag, kw, (lo, hi, dual, tok), masked in policy_variants:
        ctor = dict(kw)
        eps = ctor.pop("clip_eps")
        # log-ratios of spread 0.5 so that some tokens sit inside, some beyond the clip (and past c = 1.5)
        args = [real(3, 5, s=0.5), real(3, 5, s=0.5), real(3, 5), mask(3, 5) if masked else None]
        add(Case(tag, L.PolicyLoss(eps, **ctor), args,
                 lambda *a, p=(lo, hi, dual, tok): ref.policy(*p, *a)))

    value_variants = [
        ("value", dict(), (None, None, False)),
        ("value-clip", dict(clip_eps=0.2), (0.2, 0.2, False)),
        ("value-asym-token-level", dict(clip_eps_low=0.1, clip_eps_high=0.3, token_level_loss=True), (0.1, 0.3, True)),
    ]
    for tag, kw, (lo, hi, tok) in value_variants:
        args = [real(3, 5), real(3, 5), real(3, 5), mask(3, 5)]
        add(Case(tag, L.ValueLoss(**kw), args, lambda *a, p=(lo, hi, tok): ref.value(*p, *a)))

    for cls, tag in [(L.PairWiseLoss, "pairwise"), (L.LogExpLoss, "logexp")]:
        add(Case(tag, cls(), [real(6, s=3), real(6, s=3)], ref.pairwise))
        add(Case(f"{tag}-margin", cls(), [real(6, s=3), real(6, s=3), real(6).abs()], ref.pairwise))

    inputs, hard, soft = prm_batch()
    hard_ids = hard.clone()
    hard_ids[0, 3] = -100  # an ignored step
    soft_ign = soft.clone()
    soft_ign[1, 1] = -100.0
    add(Case("prm-hard", L.PRMLoss(PLACEHOLDER, REWARD_IDS), [inputs, real(2, 8, VOCAB), hard_ids],
             lambda *a: ref.prm(PLACEHOLDER, REWARD_IDS, *a)))
    add(Case("prm-hard-full-vocab", L.PRMLoss(PLACEHOLDER), [inputs, real(2, 8, VOCAB), hard],
             lambda *a: ref.prm(PLACEHOLDER, None, *a)))
    add(Case("prm-soft", L.PRMLoss(PLACEHOLDER, REWARD_IDS), [inputs, real(2, 8, VOCAB), soft_ign],
             lambda *a: ref.prm(PLACEHOLDER, REWARD_IDS, *a)))
    add(Case("prm-soft-float32-labels", L.PRMLoss(PLACEHOLDER, REWARD_IDS), [inputs, real(2, 8, VOCAB), soft.float()],
             lambda *a: ref.prm(PLACEHOLDER, REWARD_IDS, *a)))
    return cases


def first(output):
    """The loss of a module output (a tensor, or the first item of a tuple)."""
    return output[0] if isinstance(output, tuple) else output
