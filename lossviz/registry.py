"""The registry: the one list of loss entries that the CLI, tests, figures and docs read."""

from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Dict, List, Sequence

from .cards.base import Card, CardError, Derivation


@lru_cache(maxsize=1)
def cards() -> List[Card]:
    """Every card, in teaching order."""
    from .cards import basics, dpo, kto, ppo, prm, reward, sft

    return [
        basics.Basics(),
        sft.GPTLM(),
        sft.KD(),
        dpo.DPO(),
        dpo.CDPO(),
        dpo.IPO(),
        kto.KTO(),
        kto.VanillaKTO(),
        ppo.PPOPolicy(),
        ppo.PPOValue(),
        reward.PairWise(),
        reward.LogExp(),
        prm.PRM(),
    ]


def names() -> List[str]:
    return [c.name for c in cards()]


@lru_cache(maxsize=1)
def _lookup() -> Dict[str, Card]:
    table: Dict[str, Card] = {}
    for card in cards():
        for key in (card.name, *card.aliases):
            table[_normalise(key)] = card
    return table


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def closest_first(word: str, choices: Sequence[str]) -> List[str]:
    """``choices`` with the closest matches to ``word`` first, then the rest in order."""
    if not choices:  # difflib refuses n=0
        return []
    close = difflib.get_close_matches(word, choices, n=len(choices), cutoff=0.4)
    return close + [c for c in choices if c not in close]


def get(name: str) -> Card:
    """The card for a name, an alias (underscores allowed) or a production class name."""
    if not isinstance(name, str):
        raise CardError(f"a loss name must be a string, got {type(name).__name__}")
    card = _lookup().get(_normalise(name))
    if card is None:
        valid = ", ".join(closest_first(_normalise(name), names()))
        raise CardError(f"unknown loss {name!r}; valid: {valid}")
    return card


def derive(name: str, symbolic: bool = True, **params) -> Derivation:
    """Derive one entry: ``lossviz.derive("dpo", beta=0.1)``.

    Real parameters that are not given stay symbolic (``symbolic=True``) or take their
    defaults (``symbolic=False``); case parameters always take their default.
    """
    card = get(name)
    return Derivation(card, card.resolve(params, symbolic=symbolic))
