"""Every bad input gets a lossviz ValueError/TypeError whose message names the argument."""

import pytest
import torch

from lossviz import losses as L

f = torch.zeros(3)
cpu = torch.device("cpu")


def raises(exc, *names):
    """Context manager asserting ``exc`` with every name in the message."""

    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(exc)
            self.info = self.cm.__enter__()

        def __exit__(self, *a):
            handled = self.cm.__exit__(*a)
            msg = str(self.info.value)
            for n in names:
                assert n in msg, f"message {msg!r} does not name {n!r}"
            return handled

    return _Ctx()


CTOR_CASES = [
    ("dpo beta 0", lambda: L.DPOLoss(0.0), ValueError, ["beta"]),
    ("dpo beta negative", lambda: L.DPOLoss(-1.0), ValueError, ["beta"]),
    ("dpo beta nan", lambda: L.DPOLoss(float("nan")), ValueError, ["beta"]),
    ("dpo beta str", lambda: L.DPOLoss("0.1"), TypeError, ["beta"]),
    ("dpo smoothing 0.5", lambda: L.DPOLoss(0.1, 0.5), ValueError, ["label_smoothing", "0.5"]),
    ("dpo smoothing negative", lambda: L.DPOLoss(0.1, -0.1), ValueError, ["label_smoothing"]),
    ("kto beta", lambda: L.KTOLoss(0, 1.0, 1.0, 1, cpu), ValueError, ["beta"]),
    ("kto weight", lambda: L.KTOLoss(0.1, -1.0, 1.0, 1, cpu), ValueError, ["desirable_weight"]),
    ("kto undesirable weight", lambda: L.KTOLoss(0.1, 1.0, -0.5, 1, cpu), ValueError, ["undesirable_weight", ">= 0", "-0.5"]),
    ("kto undesirable weight nan", lambda: L.KTOLoss(0.1, 1.0, float("nan"), 1, cpu), ValueError, ["undesirable_weight"]),
    ("kto world size", lambda: L.KTOLoss(0.1, 1.0, 1.0, 0, cpu), ValueError, ["world_size"]),
    ("vanilla kto beta", lambda: L.VanillaKTOLoss(-0.1), ValueError, ["beta"]),
    ("policy clip 0", lambda: L.PolicyLoss(0.0), ValueError, ["clip_eps"]),
    ("policy clip negative", lambda: L.PolicyLoss(-0.2), ValueError, ["clip_eps"]),
    ("policy clip low >= 1", lambda: L.PolicyLoss(0.2, clip_eps_low=1.0), ValueError, ["clip_eps_low"]),
    ("policy clip high 0", lambda: L.PolicyLoss(0.2, clip_eps_high=0.0), ValueError, ["clip_eps_high"]),
    ("policy dual clip 1", lambda: L.PolicyLoss(0.2, dual_clip=1.0), ValueError, ["dual_clip"]),
    ("policy dual clip 0.5", lambda: L.PolicyLoss(0.2, dual_clip=0.5), ValueError, ["dual_clip"]),
    ("policy token level", lambda: L.PolicyLoss(0.2, token_level_loss="yes"), TypeError, ["token_level_loss"]),
    ("value clip 0", lambda: L.ValueLoss(0.0), ValueError, ["clip_eps"]),
    ("value half asym", lambda: L.ValueLoss(clip_eps_low=0.1), ValueError, ["clip_eps_high"]),
    ("value dual clip", lambda: L.ValueLoss(0.2, dual_clip=2.0), ValueError, ["dual_clip"]),
    ("prm placeholder", lambda: L.PRMLoss("ки"), TypeError, ["placeholder_token_id"]),
    ("prm reward ids one", lambda: L.PRMLoss(1, [3]), ValueError, ["reward_token_ids"]),
    ("prm reward ids repeated", lambda: L.PRMLoss(1, [3, 3]), ValueError, ["reward_token_ids"]),
    ("prm reward id -1", lambda: L.PRMLoss(1, [-1, 3]), ValueError, ["reward_token_ids", ">= 0", "-1"]),
    ("prm reward id not an int", lambda: L.PRMLoss(1, [2.0, 3]), TypeError, ["reward_token_ids"]),
    ("policy log_ratio_max str", lambda: L.PolicyLoss(0.2, log_ratio_max="20"), TypeError, ["log_ratio_max"]),
]


@pytest.mark.parametrize("make,exc,names", [c[1:] for c in CTOR_CASES], ids=[c[0] for c in CTOR_CASES])
def test_bad_constructor_arguments(make, exc, names):
    with raises(exc, *names):
        make()


i3 = torch.zeros(3, dtype=torch.long)
logits = torch.zeros(2, 4, 7)
FORWARD_CASES = [
    ("dpo shapes", lambda: L.DPOLoss(0.1)(f, torch.zeros(4), f, f), ValueError, ["policy_rejected_logps", "(4,)"]),
    ("dpo integer", lambda: L.DPOLoss(0.1)(f, f, i3, f), TypeError, ["reference_chosen_logps", "floating"]),
    ("dpo empty", lambda: L.DPOLoss(0.1)(*(torch.zeros(0),) * 4), ValueError, ["policy_chosen_logps", "empty"]),
    ("dpo not a tensor", lambda: L.DPOLoss(0.1)([0.0], f, f, f), TypeError, ["policy_chosen_logps"]),
    ("kto both empty", lambda: L.KTOLoss(0.1, 1, 1, 1, cpu)(torch.zeros(0), torch.zeros(0), f, torch.zeros(0), torch.zeros(0), f),
     ValueError, ["policy_chosen_logps", "policy_rejected_logps", "empty"]),
    ("kto shapes", lambda: L.KTOLoss(0.1, 1, 1, 1, cpu)(f, f, f, torch.zeros(2), f, f), ValueError, ["reference_chosen_logps"]),
    ("kto no KL batch", lambda: L.KTOLoss(0.1, 1, 1, 1, cpu)(f, f, torch.zeros(0), f, f, torch.zeros(0)), ValueError, ["policy_KL_logps"]),
    ("vanilla kto empty", lambda: L.VanillaKTOLoss(0.1)(f, torch.zeros(0), f, torch.zeros(0)), ValueError, ["policy_rejected_logps"]),
    ("policy shapes", lambda: L.PolicyLoss()(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 2)), ValueError, ["advantages"]),
    ("policy advantages (B, T, 1)", lambda: L.PolicyLoss()(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3, 1)), ValueError, ["advantages", "(2, 3)"]),
    ("policy advantages integer", lambda: L.PolicyLoss()(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long)), TypeError, ["advantages"]),
    ("policy old shapes", lambda: L.PolicyLoss()(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 1)), ValueError, ["old_log_probs"]),
    ("policy mask shape", lambda: L.PolicyLoss()(*(torch.zeros(2, 3),) * 3, torch.ones(3)), ValueError, ["action_mask"]),
    ("policy integer", lambda: L.PolicyLoss()(torch.zeros(2, 3, dtype=torch.long), *(torch.zeros(2, 3),) * 2), TypeError, ["log_probs"]),
    ("value shapes", lambda: L.ValueLoss()(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, ["returns"]),
    ("pairwise shapes", lambda: L.PairWiseLoss()(f, torch.zeros(2)), ValueError, ["reject_reward"]),
    ("pairwise margin shape", lambda: L.PairWiseLoss()(f, f, torch.zeros(2)), ValueError, ["margin"]),
    ("logexp integer", lambda: L.LogExpLoss()(i3, f), TypeError, ["chosen_reward"]),
    ("gptlm label shape", lambda: L.GPTLMLoss()(logits, torch.zeros(2, 5, dtype=torch.long)), ValueError, ["labels"]),
    ("gptlm float labels", lambda: L.GPTLMLoss()(logits, torch.zeros(2, 4)), TypeError, ["labels", "integer"]),
    ("gptlm label range", lambda: L.GPTLMLoss()(logits, torch.full((2, 4), 7)), ValueError, ["labels", "7"]),
    ("gptlm integer logits", lambda: L.GPTLMLoss()(logits.long(), torch.zeros(2, 4, dtype=torch.long)), TypeError, ["logits"]),
    ("kd teacher shape", lambda: L.KDLoss()(logits, torch.zeros(2, 4, 6), torch.zeros(2, 4, dtype=torch.long)), ValueError, ["teacher_logits"]),
    ("prm soft without ids", lambda: L.PRMLoss(1)(torch.ones(2, 4, dtype=torch.long), logits, torch.full((2, 4), 0.5)),
     ValueError, ["reward_token_ids", "2"]),
    ("prm soft with 3 ids", lambda: L.PRMLoss(1, [2, 3, 4])(torch.ones(2, 4, dtype=torch.long), logits, torch.full((2, 4), 0.5)),
     ValueError, ["reward_token_ids", "2"]),
    ("prm no placeholder", lambda: L.PRMLoss(1, [2, 3])(torch.zeros(2, 4, dtype=torch.long), logits, torch.full((2, 4), 2)),
     ValueError, ["placeholder_token_id"]),
    ("prm label not a reward token", lambda: L.PRMLoss(1, [2, 3])(torch.ones(2, 4, dtype=torch.long), logits, torch.full((2, 4), 5)),
     ValueError, ["labels", "reward_token_ids"]),
    ("prm soft label range", lambda: L.PRMLoss(1, [2, 3])(torch.ones(2, 4, dtype=torch.long), logits, torch.full((2, 4), 1.5)),
     ValueError, ["labels"]),
    ("prm reward id past vocab", lambda: L.PRMLoss(1, [2, 9])(torch.ones(2, 4, dtype=torch.long), logits, torch.full((2, 4), 2)),
     ValueError, ["reward_token_ids"]),
    ("prm shapes", lambda: L.PRMLoss(1, [2, 3])(torch.ones(2, 5, dtype=torch.long), logits, torch.full((2, 4), 2)),
     ValueError, ["inputs"]),
]


@pytest.mark.parametrize("call,exc,names", [c[1:] for c in FORWARD_CASES], ids=[c[0] for c in FORWARD_CASES])
def test_bad_forward_arguments(call, exc, names):
    with raises(exc, *names):
        call()


def test_degenerate_inputs_give_documented_results():
    # an empty KTO side: the mean runs over the other side alone
    kto = L.KTOLoss(0.1, 1.0, 2.0, 1, cpu)
    loss, chosen, rejected, kl = kto(torch.zeros(0), torch.ones(2), torch.zeros(3), torch.zeros(0), torch.zeros(2), torch.zeros(3))
    assert chosen.shape == (0,) and kl.item() == 0.0
    assert loss.item() == pytest.approx(2.0 * torch.sigmoid(torch.tensor(0.1)).item())
    # a PRM batch whose steps are all ignored
    loss, acc = L.PRMLoss(1, [2, 3])(torch.ones(1, 3, dtype=torch.long), torch.zeros(1, 3, 5), torch.full((1, 3), -100), return_acc=True)
    assert loss.item() == 0.0 and acc.item() == 0.0


def test_prm_maps_small_reward_ids_at_once():
    """reward_token_ids=[1, 0]: the seed's sequential replacement would map every label to index 1."""
    logits = torch.tensor([[[0.0, 3.0], [0.0, 3.0]]])  # both steps predict id 1
    labels = torch.tensor([[1, 0]])
    inputs = torch.tensor([[7, 7]])
    loss, acc = L.PRMLoss(7, [1, 0])(inputs, logits, labels, return_acc=True)
    assert acc.item() == 0.5  # id 1 is index 0 (predicted: index 0 after restriction -> logit 3.0)
