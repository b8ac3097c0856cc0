"""`derive` marks the inputs that get no gradient in training: constants of the trainer (the frozen
reference and teacher, the rollout's old policy, old values, advantages and returns) and the inputs
the loss itself detaches (KTO's KL batch). Their gradient is still shown, with the note beside it."""

import itertools
import json

import pytest

from lossviz.cards.base import CONSTANT_NOTE, DETACHED_NOTE
from lossviz.cli import main
from lossviz.registry import cards, derive, names
from lossviz.render import as_dict, as_latex, as_text

REFERENCE = {"reference_chosen_logps", "reference_rejected_logps"}
# written out here, independently of the cards: what a trainer feeds each loss without gradient
CONSTANTS = {
    "basics": set(),
    "gptlm": set(),
    "kd": {"teacher_logits_0", "teacher_logits_1", "teacher_logits_2"},
    "dpo": REFERENCE,
    "cdpo": REFERENCE,
    "ipo": REFERENCE,
    "kto": REFERENCE,  # reference_KL_logps is detached, which says more
    "vanilla-kto": REFERENCE,
    "ppo-policy": {"old_log_probs", "advantages"},
    "ppo-value": {"old_values", "returns"},
    "pairwise": set(),  # both rewards come from the model being trained
    "logexp": set(),
    "prm": set(),
    **{name: REFERENCE for name in ("dpo-robust", "dpo-hinge", "dpo-exo", "dpo-nca", "dpo-bco", "dpo-sppo", "dpo-apo-zero",
                                    "dpo-apo-down", "dpo-discopop", "dpo-ln", "rpo", "kto-apo-zero")},
    "simpo": set(), "cpo": set(), "orpo": set(),  # reference-free: every input comes from the model being trained
    "gkd": {"teacher_logits_0", "teacher_logits_1", "teacher_logits_2"},
    # the rollout's old policy and the advantage estimates; a frozen reference; rewards from a reward function
    "grpo": {"old_log_probs_0_0", "old_log_probs_1_0", "old_log_probs_1_1", "advantages_0", "advantages_1"},
    "dr-grpo": {"old_log_probs_0_0", "old_log_probs_1_0", "old_log_probs_1_1", "advantages_0", "advantages_1"},
    "gspo": {"old_log_probs_0", "old_log_probs_1", "old_log_probs_2", "advantages"},
    "gmpo": {"old_log_probs_0", "old_log_probs_1", "old_log_probs_2", "advantages"},
    "dapo": {"old_log_probs", "advantages"}, "gpg": {"old_log_probs", "advantages"}, "sapo": {"old_log_probs", "advantages"},
    "cispo": {"advantages"},  # old_log_probs is detached, which says more
    "kl-estimators": {"log_probs_base"},
    "group-advantages": {"rewards_0", "rewards_1", "rewards_2", "rewards_3"},
}
DETACHED = {"kto": {"policy_KL_logps", "reference_KL_logps"}}
DETACHED["cispo"] = {"old_log_probs", "log_probs_detached"}  # read only inside CISPO's detached weight
DETACHED["kl-estimators"] = {"log_probs_detached", "log_probs_base_detached"}  # k1+ / k3+: read only inside the detached value


def cases(card):
    """Every derivation of a card at default numbers, one per combination of its case parameters."""
    choices = [[(p.name, c) for c in p.choices] for p in card.params if p.is_case]
    for combo in itertools.product(*choices):
        yield derive(card.name, symbolic=False, **dict(combo))


def test_every_entry_is_listed_here():
    assert set(CONSTANTS) == set(names())


@pytest.mark.parametrize("card", cards(), ids=lambda c: c.name)
def test_declared_constants_are_real_variables(card):
    used = set().union(*(set(d.variables) for d in cases(card)))
    assert set(card.constants) <= used and set(card.detached) <= used, (card.constants, used)


@pytest.mark.parametrize("card", cards(), ids=lambda c: c.name)
def test_json_marks_exactly_the_constants(card):
    for d in cases(card):
        data = as_dict(d)
        present = set(d.variables)
        assert set(data["constants"]) == CONSTANTS[card.name] & present
        assert set(data["detached"]) == DETACHED.get(card.name, set()) & present
        notes = data["gradient_notes"]
        assert {v for v, n in notes.items() if n == CONSTANT_NOTE} == set(data["constants"])
        assert {v for v, n in notes.items() if n == DETACHED_NOTE} == set(data["detached"])
        assert set(data["gradient"]) == present  # the gradient is still shown for every input


@pytest.mark.parametrize("card", cards(), ids=lambda c: c.name)
def test_text_and_latex_put_the_note_beside_each_marked_gradient(card):
    d = next(cases(card))
    lines = as_text(d).splitlines()
    for v in d.variables:
        i = next(k for k, line in enumerate(lines) if line.startswith(f"  d/d{v} = "))
        note = card.gradient_note(v)
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        assert (following == note) if note else not following.startswith(("constant in training", "detached in the loss"))
    latex = as_latex(d)
    marked = CONSTANTS[card.name] & set(d.variables)
    assert latex.count(r"\text{" + CONSTANT_NOTE + "}") == len(marked - DETACHED.get(card.name, set()))


def test_the_command_line_shows_the_notes(capsys):
    assert main(["derive", "ppo-value", "--defaults"]) == 0
    out = capsys.readouterr().out
    assert out.count(CONSTANT_NOTE) == 2
    assert main(["derive", "kto", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gradient_notes"]["policy_KL_logps"] == DETACHED_NOTE
    assert data["gradient_notes"]["reference_chosen_logps"] == CONSTANT_NOTE
    assert "policy_chosen_logps" not in data["gradient_notes"]
