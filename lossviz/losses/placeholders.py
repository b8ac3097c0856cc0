"""Does every PRM step placeholder survive tokenization as its own token?

:class:`~lossviz.losses.PRMLoss` scores only the positions where ``inputs ==
placeholder_token_id``. A tokenizer that merges the placeholder with a neighbour (the text ``" ки\\nStep"``
becoming the one token ``"▁ки\\nStep"``, say) leaves no such position for that step: the step
silently drops out of the loss, and a text that loses all its steps contributes nothing.
:func:`check_placeholders` tokenizes the texts the way training will and reports every step
whose placeholder is not its own token::

    from lossviz.losses import check_placeholders
    report = check_placeholders(tokenizer, texts, "ки")
    print(report)               # "'ки' (token id 57): 6 of 13 steps keep the placeholder's token ...", then each lost step
    report.raise_if_lost()      # a ValueError naming the first lost step, for a data pipeline

The placeholder's token id is, by default, the id of the placeholder encoded alone (it must be
one token): the way OpenRLHF's ``ProcessRewardDataset`` finds ``placeholder_token_id``
(``convert_token_to_id`` in ``openrlhf/utils/utils.py``). ``token_id=`` sets it instead, e.g.
to ``convert_tokens_to_ids(placeholder)``. A step is kept when a token with that id covers its
placeholder. ``tokenizer`` may be

- a ``tokenizers.Tokenizer``: each step is located exactly through the encoding's offsets;
- a ``transformers`` tokenizer (anything with ``convert_tokens_to_ids``): fast tokenizers give
  offsets; slow ones only the count of lost steps per text;
- any callable ``text -> list of token strings`` or ``text -> list of token ids``. Ids give
  counts per text. Strings are matched to the text in order (each token is searched from the
  end of the previous match; pieces that are not literal text, such as ``"▁ки"``, are passed
  over), which locates each step when the placeholder's token is the placeholder itself, and
  gives counts otherwise.

Neither ``tokenizers`` nor ``transformers`` is imported here: the tokenizer is duck-typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["check_placeholders", "PlaceholderReport", "LostStep"]


@dataclass(frozen=True)
class LostStep:
    """One step whose placeholder is not its own token."""

    text: int  # index of the text in ``texts``
    step: Optional[int]  # 1-based index of the placeholder in that text; None when the tokenizer gives no positions
    tokens: Tuple[str, ...] = ()  # the tokens that cover the placeholder, when known

    def __str__(self) -> str:
        where = f"text {self.text}, step {self.step}" if self.step is not None else f"text {self.text}, a step"
        covered = f": the placeholder sits inside {', '.join(repr(t) for t in self.tokens)}" if self.tokens else ""
        return f"{where}{covered}"


@dataclass
class PlaceholderReport:
    """What :func:`check_placeholders` found: ``steps`` placeholders in the texts, ``kept`` as their own token."""

    placeholder: str
    token_id: Optional[int]
    texts: int
    steps: int
    kept: int
    lost: List[LostStep] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when every step's placeholder is its own token."""
        return not self.lost

    def summary(self) -> str:
        token = f" (token id {self.token_id})" if self.token_id is not None else ""
        head = f"{self.placeholder!r}{token}: {self.kept} of {self.steps} steps keep the placeholder's token in {self.texts} texts"
        if self.lost:
            head += f"; {len(self.lost)} lost: a PRM run would score {self.kept} steps, not {self.steps}"
        return head + (f" ({self.note})" if self.note else "")

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  lost: {step}" for step in self.lost[:20]]
        if len(self.lost) > 20:
            lines.append(f"  ... and {len(self.lost) - 20} more")
        return "\n".join(lines)

    def raise_if_lost(self) -> None:
        """Raise a ValueError naming the first lost step (and how many), if any step is lost."""
        if self.lost:
            raise ValueError(f"{len(self.lost)} of {self.steps} PRM steps lose their placeholder {self.placeholder!r} "
                             f"in tokenization (first: {self.lost[0]}); protect it as a special token")


# --- the three kinds of tokenizer ---------------------------------------------------------------

@dataclass
class _Tokens:
    ids: Optional[List[int]] = None
    strings: Optional[List[str]] = None
    offsets: Optional[List[Tuple[int, int]]] = None


def _is_tokenizers(tok) -> bool:
    return all(hasattr(tok, name) for name in ("token_to_id", "id_to_token", "encode"))


def _is_transformers(tok) -> bool:
    return hasattr(tok, "convert_tokens_to_ids") and callable(tok)


def _tokenizers_encode(tok, text: str) -> _Tokens:
    enc = tok.encode(text, add_special_tokens=False)
    return _Tokens(list(enc.ids), list(enc.tokens), [tuple(o) for o in enc.offsets])


def _transformers_encode(tok, text: str) -> _Tokens:
    try:
        out = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in out["offset_mapping"]]
    except NotImplementedError:  # slow (Python) tokenizers have no offsets
        out, offsets = tok(text, add_special_tokens=False), None
    ids = [int(i) for i in out["input_ids"]]
    strings = list(tok.convert_ids_to_tokens(ids)) if hasattr(tok, "convert_ids_to_tokens") else None
    return _Tokens(ids, strings, offsets)


def _callable_encode(tok, text: str) -> _Tokens:
    out = tok(text)
    try:
        items = list(out)
    except TypeError:
        raise TypeError(f"tokenizer(text) must return a list of token strings or ids, got {type(out).__name__}") from None
    if all(isinstance(t, str) for t in items):
        return _Tokens(strings=items)
    if all(isinstance(t, Integral) and not isinstance(t, bool) for t in items):
        return _Tokens(ids=[int(t) for t in items])
    kinds = sorted({type(t).__name__ for t in items})
    raise TypeError(f"tokenizer(text) must return a list of token strings or of int ids, got items of type {', '.join(kinds)}")


def _placeholder_token(encode, placeholder: str) -> Tuple[object, str]:
    """The placeholder encoded alone: its one id (or token string), and a note when it is not one token."""
    alone = encode(placeholder)
    pieces = alone.ids if alone.ids is not None else alone.strings
    if len(pieces) != 1:
        shown = alone.strings if alone.strings is not None else pieces
        return None, f"{placeholder!r} alone encodes to {len(pieces)} tokens {shown}, so no step can keep it as one token"
    return pieces[0], ""


# --- locating the steps --------------------------------------------------------------------------

def _occurrences(text: str, placeholder: str) -> List[Tuple[int, int]]:
    spans, start = [], text.find(placeholder)
    while start >= 0:
        spans.append((start, start + len(placeholder)))
        start = text.find(placeholder, start + len(placeholder))
    return spans


def _aligned_offsets(text: str, strings: Sequence[str]) -> List[Optional[Tuple[int, int]]]:
    """Offsets of token strings found literally in the text, in order (None for pieces that are not literal)."""
    spans, cursor = [], 0
    for piece in strings:
        at = text.find(piece, cursor) if piece else -1
        if at < 0:
            spans.append(None)
            continue
        spans.append((at, at + len(piece)))
        cursor = at + len(piece)
    return spans


def _is_placeholder(tokens: _Tokens, j: int, target) -> bool:
    """Token j is the placeholder's token (``target``: an id, or a token string for callables returning strings)."""
    if target is None:
        return False
    if isinstance(target, str):
        return tokens.strings[j] == target
    return tokens.ids[j] == target


def _lost_steps(index: int, text: str, tokens: _Tokens, placeholder: str, target) -> Tuple[int, List[LostStep]]:
    spans = _occurrences(text, placeholder)
    count = len(tokens.ids if tokens.ids is not None else tokens.strings)
    offsets = tokens.offsets
    if offsets is None and tokens.ids is None and target == placeholder:  # literal tokens can be placed in the text
        offsets = _aligned_offsets(text, tokens.strings)
    if offsets is None:  # ids without positions: only how many steps are lost
        found = sum(_is_placeholder(tokens, j, target) for j in range(count))
        missing = max(0, len(spans) - found)
        return len(spans) - missing, [LostStep(index, None) for _ in range(missing)]
    lost = []
    for step, (start, end) in enumerate(spans, 1):
        covering = [j for j in range(count) if offsets[j] is not None and offsets[j][0] < end and start < offsets[j][1]]
        if not any(_is_placeholder(tokens, j, target) for j in covering):
            pieces = tuple(tokens.strings[j] for j in covering) if tokens.strings is not None else ()
            lost.append(LostStep(index, step, pieces))
    return len(spans) - len(lost), lost


def check_placeholders(tokenizer, texts: Sequence[str], placeholder: str, *, token_id: Optional[int] = None) -> PlaceholderReport:
    """Tokenize ``texts`` and report every step whose ``placeholder`` is not its own token.

    ``token_id``: the ``placeholder_token_id`` that ``PRMLoss`` will look for; by default the
    id of the placeholder encoded alone (as OpenRLHF's PRM dataset finds it).
    """
    if not isinstance(placeholder, str) or not placeholder:
        raise TypeError(f"placeholder must be a non-empty string (the step tag as it appears in the texts), got {placeholder!r}")
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, got a single string; wrap it in a list: [text]")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    bad = next((k for k, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] must be a string, got {type(texts[bad]).__name__}")
    if token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, Integral) or token_id < 0):
        raise TypeError(f"token_id must be a non-negative int or None, got {token_id!r}")

    if _is_tokenizers(tokenizer):
        encode: Callable[[str], _Tokens] = lambda text: _tokenizers_encode(tokenizer, text)
    elif _is_transformers(tokenizer):
        encode = lambda text: _transformers_encode(tokenizer, text)
    elif callable(tokenizer):
        encode = lambda text: _callable_encode(tokenizer, text)
    else:
        raise TypeError("tokenizer must be a tokenizers.Tokenizer, a transformers tokenizer, or a callable "
                        f"text -> token strings or ids; got {type(tokenizer).__name__}")
    if token_id is None:
        target, note = _placeholder_token(encode, placeholder)
    else:
        target, note = int(token_id), ""

    steps = kept = 0
    lost: List[LostStep] = []
    for index, text in enumerate(texts):
        tokens = encode(text)
        if isinstance(target, int) and tokens.ids is None:
            raise TypeError("token_id= needs a tokenizer that returns token ids; this one returns token strings")
        text_kept, text_lost = _lost_steps(index, text, tokens, placeholder, target)
        steps += text_kept + len(text_lost)
        kept += text_kept
        lost += text_lost
    shown_id = target if isinstance(target, int) else None
    return PlaceholderReport(placeholder, shown_id, len(texts), steps, kept, lost, note)
