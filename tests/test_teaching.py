"""The exercise API of lossviz.teaching: blanks, wrong answers and wrong types give one line and never raise."""

import math

import numpy as np
import pytest

from lossviz import teaching
from lossviz.teaching import ExerciseError, check, exercise, reveal, solution


@pytest.fixture
def ex():
    calls = []

    def expensive():
        calls.append(1)
        return math.log(9) / 0.1

    exercise("t-lazy", expensive, hint="solve βh* = log((1-ε)/ε)", what="h*")
    exercise("t-pair", (1.0, 2.5), hint="two numbers", what="the pair", tolerance=1e-6)
    exercise("t-word", "ки", hint="the placeholder", what="the tag")
    yield calls
    for key in ("t-lazy", "t-pair", "t-word"):
        teaching._EXERCISES.pop(key, None)


def one_line(capsys):
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


def test_blank_says_not_answered_with_the_hint(ex, capsys):
    assert check("t-lazy", ...) is False
    line = one_line(capsys)
    assert "not answered yet" in line and "solve βh* = log((1-ε)/ε)" in line
    assert ex == []  # a blank does not compute the expected value


def test_right_answer_ticks_and_the_value_is_computed_once(ex, capsys):
    assert check("t-lazy", 21.9722457733622) is True
    assert one_line(capsys).startswith("✓ h* = 21.9722")
    assert check("t-lazy", np.float32(21.972246)) is True  # float32 rounding is within the relative 1e-6
    capsys.readouterr()
    assert solution("t-lazy") == pytest.approx(10 * math.log(9), rel=1e-15)
    assert ex == [1]


@pytest.mark.parametrize("answer, says", [
    (25.0, "too large"), (20.0, "too small"), (-21.9722457733622, "wrong sign"), (float("nan"), "nan"),
    (float("inf"), "overflowed"), ("21.97", "a number was expected, got str"), (True, "got bool"),
    ([21.97], "got list"), (None, "got NoneType"),
])
def test_wrong_answers_get_one_friendly_line(ex, capsys, answer, says):
    assert check("t-lazy", answer) is False
    line = one_line(capsys)
    assert line.startswith("✗ h*: ") and says in line and "Hint: solve" in line


def test_tensors_and_numpy_scalars_are_numbers(ex, capsys):
    torch = pytest.importorskip("torch")
    assert check("t-lazy", torch.tensor(10 * math.log(9), dtype=torch.float64)) is True
    assert check("t-lazy", torch.tensor([1.0, 2.0])) is False
    assert "tensor of shape (2,)" in capsys.readouterr().out


def test_tuples_and_strings(ex, capsys):
    assert check("t-pair", (1.0, 2.5)) and check("t-pair", np.array([1.0, 2.5])) and check("t-word", " ки ")
    capsys.readouterr()
    assert not check("t-pair", (1.0, 3.0))
    assert "item 2: 3 is too large" in one_line(capsys)
    assert not check("t-pair", (1.0,))
    assert "2 numbers were expected, got 1" in one_line(capsys)
    assert not check("t-word", "+")
    assert "'+' is not it" in one_line(capsys)


def test_unknown_keys_and_swapped_arguments_never_raise(capsys):
    assert check("no-such-exercise", 1.0) is False
    assert "no exercise named 'no-such-exercise'" in one_line(capsys)
    assert check(0.15, 0.15) is False  # the old check(answer, expected) call
    assert "key must be a string" in one_line(capsys)


def test_a_broken_definition_is_reported_not_raised(capsys):
    exercise("t-broken", lambda: 1 / 0, hint="h", what="w")
    try:
        assert check("t-broken", 1.0) is False
        assert "could not be computed (ZeroDivisionError" in one_line(capsys)
        with pytest.raises(ZeroDivisionError):
            solution("t-broken")
    finally:
        teaching._EXERCISES.pop("t-broken")


def test_bad_definitions_raise_one_line_errors():
    with pytest.raises(ExerciseError, match="key must be a non-empty string"):
        exercise("", 1.0, hint="h")
    with pytest.raises(ExerciseError, match="tolerance must be a number >= 0"):
        exercise("t-x", 1.0, hint="h", tolerance=-1)
    with pytest.raises(ExerciseError, match="not a finite number"):
        exercise("t-x", float("inf"), hint="h")
    with pytest.raises(ExerciseError, match="no exercise named 'nope'"):
        solution("nope")


def test_reveal_prints_the_solution(ex, capsys):
    reveal("t-pair")
    assert one_line(capsys) == "the pair = (1, 2.5)"


@pytest.mark.parametrize("key, value", [
    ("basics-1", math.log(4)), ("basics-2", math.log(1 + math.exp(1.5))), ("basics-3", 1 / (1 + math.exp(3))),
    ("sft-1", math.exp(2) / (math.exp(2) + 1 + math.exp(-1)) - 1),
    ("dpo-1", 0.5 / (1 + math.exp(1))), ("dpo-2", math.log(4) / 0.3), ("dpo-3", math.log(2 * math.cosh(1.0))), ("dpo-4", 1.25),
    # vanilla KTO, Δ_c = 2, Δ_r = -1, β = 0.5: z_r clamped to 0, z_c = 2: mean of 1 - σ(0.5·2) and 1 - σ(0.5·3)
    ("kto-1", 1.0), ("kto-2", 1.5 * 0.3 / 4), ("kto-3", (1 / (1 + math.exp(1.0)) + 1 / (1 + math.exp(1.5))) / 2),
    # value flat zone above v_old + ε ends where |v - R| = |v_old + ε - R|: v = 2R - v_old - ε
    ("ppo-1", 1.3), ("ppo-2", 1.28), ("ppo-3", 2.5), ("ppo-4", -0.6), ("ppo-5", 1.7),
    ("rm-1", 1.5 + math.log(9)), ("rm-2", -math.log(65504.0)),  # 65504: the largest float16
    # NEW_LINES: 3 + 2 steps; unprotected, the placeholders before "\nStep" merge (2 of the first line's 3), the
    # space-separated ones of the second line survive
    ("prm-1", math.log(9)), ("prm-2", 5), ("prm-3", 3), ("prm-4", 5),
])
def test_the_notebook_solutions_match_closed_forms(key, value):
    """Solutions come from the derivations; here they meet an independent closed form."""
    assert solution(key) == pytest.approx(value, rel=1e-12, abs=1e-12)


def test_the_kl_solution_is_the_kl():
    q = np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()
    logp = np.array([0.5, -1.0, 2.0]) - np.log(np.exp([0.5, -1.0, 2.0]).sum())
    assert solution("sft-2") == pytest.approx(float(np.sum(q * (np.log(q) - logp))), rel=1e-12)


def test_bisect_refuses_a_bracket_without_a_sign_change():
    assert teaching.bisect(lambda x: x - 1.5, 0, 4) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="opposite signs"):
        teaching.bisect(lambda x: x * x + 1, -1, 1)
