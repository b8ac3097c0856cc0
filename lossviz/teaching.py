"""Helpers for the notebooks: exercise checks, figures as images, and a tiny BPE tokenizer.

The notebooks stay thin; what they compute lives here or in the rest of lossviz.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple


def check(answer, expected, tolerance: float = 1e-6, what: str = "your answer") -> bool:
    """An exercise check: passes quietly with a tick, or fails with what was expected."""
    try:
        got = float(answer)
    except (TypeError, ValueError):
        raise AssertionError(f"{what} should be a number, got {answer!r}") from None
    want = float(expected)
    if not abs(got - want) <= tolerance * max(1.0, abs(want)):
        raise AssertionError(f"{what} = {got:.6g}, but the derivation gives {want:.6g}")
    print(f"✓ {what} = {got:.6g} agrees with the derivation ({want:.6g})")
    return True


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


def bisect(f, lo: float, hi: float, steps: int = 200) -> float:
    """A root of ``f`` in [lo, hi] by bisection (the notebooks' way of finding answers numerically)."""
    f_lo = f(lo)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass
class TinyBPE:
    """A character-level byte-pair-encoding tokenizer, small enough to read in one sitting.

    ``train(text, merges)`` learns the most frequent adjacent pairs; ``specials`` are kept
    whole and never merged (as a PRM pipeline should keep its step placeholder).
    """

    merges: List[Tuple[str, str]] = field(default_factory=list)
    vocab: Dict[str, int] = field(default_factory=dict)
    specials: Tuple[str, ...] = ()

    @classmethod
    def train(cls, text: str, merges: int, specials: Sequence[str] = ()) -> "TinyBPE":
        tokenizer = cls(specials=tuple(specials))
        words = tokenizer._pieces(text)
        sequences = [[c for c in w] if w not in tokenizer.specials else [w] for w in words]
        for _ in range(merges):
            pairs = Counter()
            for seq in sequences:
                pairs.update(zip(seq, seq[1:]))
            if not pairs:
                break
            best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties broken by the pair itself: deterministic
            tokenizer.merges.append(best)
            sequences = [tokenizer._merge(seq, best) for seq in sequences]
        symbols = sorted({s for seq in sequences for s in seq} | set(text) | set(tokenizer.specials))
        tokenizer.vocab = {s: i for i, s in enumerate(symbols)}
        return tokenizer

    def _pieces(self, text: str) -> List[str]:
        """Split off the specials so that they are never merged with their neighbours."""
        pieces = [text]
        for special in self.specials:
            split = []
            for piece in pieces:
                if piece in self.specials:
                    split.append(piece)
                    continue
                parts = piece.split(special)
                for k, part in enumerate(parts):
                    if part:
                        split.append(part)
                    if k < len(parts) - 1:
                        split.append(special)
            pieces = split
        return pieces

    @staticmethod
    def _merge(seq: List[str], pair: Tuple[str, str]) -> List[str]:
        out, i = [], 0
        while i < len(seq):
            if i + 1 < len(seq) and (seq[i], seq[i + 1]) == pair:
                out.append(seq[i] + seq[i + 1])
                i += 2
            else:
                out.append(seq[i])
                i += 1
        return out

    def tokenize(self, text: str) -> List[str]:
        tokens = []
        for piece in self._pieces(text):
            if piece in self.specials:
                tokens.append(piece)
                continue
            seq = list(piece)
            for pair in self.merges:
                seq = self._merge(seq, pair)
            tokens.extend(seq)
        return tokens

    def encode(self, text: str) -> List[int]:
        return [self.vocab[t] for t in self.tokenize(text)]
