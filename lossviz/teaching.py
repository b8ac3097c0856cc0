"""Helpers for the notebooks: exercises that check an answer, and figures as images.

The exercise API (the notebooks call only these)::

    from lossviz.teaching import exercise, check, solution, reveal
    exercise("dpo-1", expected=lambda: ..., hint="...", what="the push at h = 0")  # in lossviz, not in a cell
    answer_1 = ...              # the student's cell: a blank until answered
    check("dpo-1", answer_1)    # "not answered yet" + hint, one friendly line when wrong, "✓ ..." when right
    reveal("dpo-1")             # prints the solution; solution("dpo-1") returns it

``check`` never raises: a notebook keeps running whatever the student typed. Expected values
may be zero-argument callables; they are computed on first use (most come from a sympy
derivation) and kept. The exercises of the notebooks are registered in :mod:`lossviz.exercises`,
which is imported the first time an unknown key is asked for, so no solution sits in a cell.
"""

from __future__ import annotations

import importlib
import io
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

#: modules that register exercises when imported, tried in order for an unknown key
#: (a module that does not exist is skipped: notebook 07's may not be installed)
PROVIDERS = ("lossviz.exercises", "lossviz.dynamics.exercises")


class ExerciseError(ValueError):
    """A bad exercise definition or an unknown key (raised by ``exercise`` and ``solution``, never by ``check``)."""


_UNSET = object()


@dataclass
class Exercise:
    key: str
    expected: Any  # a value, or a zero-argument callable computing it
    hint: str
    tolerance: float
    what: str
    _value: Any = _UNSET

    def value(self):
        """The expected value (computed once from a callable)."""
        if self._value is _UNSET:
            value = self.expected() if callable(self.expected) else self.expected
            self._value = _normalise_expected(self.key, value)
        return self._value


_EXERCISES: Dict[str, Exercise] = {}


def exercise(key: str, expected, hint: str, tolerance: float = 1e-6, what: str = "your answer") -> Exercise:
    """Register an exercise (a later registration under the same key replaces it).

    ``expected``: a number, a string, a tuple/list of numbers, or a zero-argument callable
    returning one of those. ``tolerance`` is relative for numbers: ``|got - want| <= tol·max(1, |want|)``.
    """
    if not isinstance(key, str) or not key.strip():
        raise ExerciseError(f"key must be a non-empty string, got {key!r}")
    if not isinstance(hint, str) or not isinstance(what, str):
        raise ExerciseError(f"hint and what must be strings (exercise {key!r})")
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not tolerance >= 0:
        raise ExerciseError(f"tolerance must be a number >= 0, got {tolerance!r} (exercise {key!r})")
    if not callable(expected):
        _normalise_expected(key, expected)  # fail now, not when a student checks
    item = Exercise(key, expected, hint, float(tolerance), what)
    _EXERCISES[key] = item
    return item


def _load_providers() -> None:
    for module in PROVIDERS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise  # a real import error inside a provider, not a missing provider


def _get(key) -> Exercise:
    if not isinstance(key, str):
        raise ExerciseError(f"the exercise key must be a string such as 'dpo-1', got {type(key).__name__} {_short(key)}")
    if key not in _EXERCISES:
        _load_providers()
    if key not in _EXERCISES:
        known = ", ".join(sorted(_EXERCISES)) or "none"
        raise ExerciseError(f"no exercise named {key!r}; known: {known}")
    return _EXERCISES[key]


def keys() -> List[str]:
    """Every registered exercise key."""
    _load_providers()
    return sorted(_EXERCISES)


def solution(key: str):
    """The expected value of an exercise (a float, a string or a tuple of floats)."""
    return _get(key).value()


def reveal(key: str) -> None:
    """Print the solution of an exercise."""
    item = _get(key)
    print(f"{item.what} = {_format(item.value())}")


def check(key, answer) -> bool:
    """Check an answer; print one line and return True when it is right. Never raises."""
    try:
        item = _get(key)
    except ExerciseError as exc:
        print(f"✗ {exc}")
        return False
    if answer is Ellipsis:
        print(f"… {item.what}: not answered yet. Hint: {item.hint}")
        return False
    try:
        want = item.value()
    except Exception as exc:  # a broken definition must not stop the notebook either
        print(f"✗ {item.what}: the expected value could not be computed ({type(exc).__name__}: {exc})")
        return False
    try:
        problem = _compare(answer, want, item.tolerance)
    except Exception as exc:
        problem = f"could not be compared ({type(exc).__name__}: {exc})"
    if problem is None:
        print(f"✓ {item.what} = {_format(_plain(answer, want))}: right.")
        return True
    print(f"✗ {item.what}: {problem}. Hint: {item.hint}")
    return False


# --- comparison -------------------------------------------------------------------------------

class _WrongType(Exception):
    pass


def _short(value, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value) -> float:
    """A real number from a Python/numpy/sympy/torch scalar; _WrongType otherwise."""
    if isinstance(value, bool) or isinstance(value, str):
        raise _WrongType(f"a number was expected, got {type(value).__name__} {_short(value)}")
    if hasattr(value, "numel") and hasattr(value, "item"):  # a torch tensor
        if value.numel() != 1:
            raise _WrongType(f"a number was expected, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    elif hasattr(value, "shape") and hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy scalar/0-d
        value = value.item()
    try:
        number = complex(value)
    except (TypeError, ValueError):
        raise _WrongType(f"a number was expected, got {type(value).__name__} {_short(value)}") from None
    if number.imag != 0:
        raise _WrongType(f"a real number was expected, got {_short(value)}")
    return number.real


def _normalise_expected(key: str, value):
    if isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        try:
            return tuple(_number(v) for v in value)
        except _WrongType as exc:
            raise ExerciseError(f"exercise {key!r}: every expected item must be a number ({exc})") from None
    try:
        number = _number(value)
    except _WrongType as exc:
        raise ExerciseError(f"exercise {key!r}: the expected value must be a number, string or tuple of numbers ({exc})") from None
    if not math.isfinite(number):
        raise ExerciseError(f"exercise {key!r}: the expected value is {number}, not a finite number")
    return number


def _compare_number(got, want: float, tolerance: float) -> Optional[str]:
    got = _number(got)
    if math.isnan(got):
        return "got nan, which is not a number (a 0/0 or the log of a negative number somewhere?)"
    if math.isinf(got):
        return f"got {got}: something overflowed"
    allowed = tolerance * max(1.0, abs(want))
    if abs(got - want) <= allowed:
        return None
    if want != 0 and abs(got + want) <= allowed:
        return f"{got:.6g} has the wrong sign"
    side = "too large" if got > want else "too small"
    return f"{got:.6g} is {side} (allowed error {allowed:.2g})"


def _compare(answer, want, tolerance: float) -> Optional[str]:
    if isinstance(want, str):
        if not isinstance(answer, str):
            return f"a string was expected, got {type(answer).__name__} {_short(answer)}"
        return None if answer.strip() == want.strip() else f"{_short(answer)} is not it"
    if isinstance(want, tuple):
        if isinstance(answer, (str, bytes)) or not hasattr(answer, "__len__"):
            return f"{len(want)} numbers were expected (a tuple), got {type(answer).__name__} {_short(answer)}"
        items = list(answer.tolist() if hasattr(answer, "tolist") else answer)
        if len(items) != len(want):
            return f"{len(want)} numbers were expected, got {len(items)}"
        for k, (g, w) in enumerate(zip(items, want)):
            try:
                problem = _compare_number(g, w, tolerance)
            except _WrongType as exc:
                return f"item {k + 1}: {exc}"
            if problem:
                return f"item {k + 1}: {problem}"
        return None
    try:
        return _compare_number(answer, want, tolerance)
    except _WrongType as exc:
        return str(exc)


def _plain(answer, want):
    if isinstance(want, tuple):
        return tuple(_number(v) for v in (answer.tolist() if hasattr(answer, "tolist") else answer))
    return answer if isinstance(want, str) else _number(answer)


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(f"{v:.6g}" for v in value) + ")"
    return repr(value)


# --- figures and small numeric tools used by the cells ----------------------------------------

def png(fig, dpi: int = 90) -> bytes:
    """A figure's PNG bytes (deterministic metadata)."""
    from .plots.core import METADATA

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata=METADATA["png"])
    return buffer.getvalue()


def show(fig, dpi: int = 90):
    """Display a lossviz figure in a notebook (works with any matplotlib backend)."""
    from IPython.display import Image

    return Image(data=png(fig, dpi))


def bisect(f: Callable[[float], float], lo: float, hi: float, steps: int = 200) -> float:
    """A root of ``f`` in [lo, hi] by bisection; ``f(lo)`` and ``f(hi)`` must have opposite signs."""
    f_lo, f_hi = f(lo), f(hi)
    if (f_lo > 0) == (f_hi > 0):
        raise ValueError(f"bisect needs f(lo) and f(hi) of opposite signs; got f({lo:g}) = {f_lo:.3g} and f({hi:g}) = {f_hi:.3g}")
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)



# --- the PRM lesson's tokenizer ----------------------------------------------------------------

#: Math-Shepherd-style training lines: a question, then steps each ending in the tag "ки"
#: (the data format of Wang et al. 2024, §3; the questions are made up)
MATH_SHEPHERD_STYLE = (
    "Janet has 3 apples and buys 2 more. How many apples does she have? "
    "Step 1: 3 + 2 = 5 ки\nStep 2: The answer is 5 ки",
    "A pen costs 4 dollars. Tom buys 3 pens. How much does he pay? "
    "Step 1: 3 * 4 = 12 ки\nStep 2: He pays 12 dollars ки\nStep 3: The answer is 12 ки",
    "Sam reads 10 pages a day for 7 days. How many pages does he read? "
    "Step 1: 10 * 7 = 70 ки\nStep 2: The answer is 70 ки",
    "A class of 24 pupils sits in 4 equal rows. How many pupils sit in a row? "
    "Step 1: 24 / 4 = 6 ки\nStep 2: The answer is 6 ки",
    "Mia had 15 stickers and gave away 6. How many are left? "
    "Step 1: 15 - 6 = 9 ки\nStep 2: The answer is 9 ки",
    "A box holds 8 eggs. How many eggs are in 5 boxes? "
    "Step 1: 8 * 5 = 40 ки\nStep 2: The answer is 40 ки",
)


def train_bpe(lines=MATH_SHEPHERD_STYLE, vocab_size: int = 100, special_tokens=()):
    """A byte-pair-encoding tokenizer trained in-process with Hugging Face ``tokenizers`` (nothing downloaded).

    The pre-tokenizer is ``Metaspace``: spaces become "▁" and belong to the following word, the
    convention of SentencePiece-style tokenizers. ``special_tokens`` are added after training;
    the tokenizer then matches them before any merge, so each stays one token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(list(lines), trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False))
    if special_tokens:
        tokenizer.add_special_tokens(list(special_tokens))
    return tokenizer
