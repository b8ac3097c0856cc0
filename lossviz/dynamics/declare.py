"""Scenario declarations: what a simulation trains, on what, with which losses, and why.

A scenario is one :class:`Scenario` registered with :func:`scenario` (a decorator on the
function that runs it). Everything else (the CLI, ``lossviz.simulate``, the explorer, the
notebook) reads the registry. This module imports neither torch nor matplotlib, so
``lossviz simulate --list`` and argument checks stay fast.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import closest_first


class DynamicsError(ValueError):
    """A bad scenario name, loss, parameter or step count: one line for the user."""


@dataclass(frozen=True)
class SimParam:
    """A scenario parameter: a real (or integer) number in ``[low, high]``."""

    name: str
    default: float
    low: float
    high: float
    doc: str
    integer: bool = False
    slider_step: Optional[float] = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"{kind} in [{self.low:g}, {self.high:g}]"

    def check(self, value, owner: str):
        """The value as float (or int), or a one-line DynamicsError naming the parameter."""
        where = f"{owner}: {self.flag}"
        if isinstance(value, bool):
            raise DynamicsError(f"{where} must be {self.range_text()}, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DynamicsError(f"{where} must be {self.range_text()}, got {value!r}") from None
        if not math.isfinite(number) or not self.low <= number <= self.high:
            raise DynamicsError(f"{where} must be {self.range_text()}, got {value!r}")
        if self.integer:
            if number != int(number):
                raise DynamicsError(f"{where} must be {self.range_text()}, got {value!r}")
            return int(number)
        return number


@dataclass(frozen=True)
class Scenario:
    """One simulation, declared like a card.

    ``run(ctx)`` trains every loss of ``ctx.losses`` and returns ``{loss: {"params": ..., "series": ...}}``;
    ``figure(sim)`` draws a finished :class:`~lossviz.dynamics.engine.Simulation`.
    """

    name: str
    title: str
    policy: str  # "tabular softmax", "log-linear", "tiny autoregressive"
    data: str  # what the policy is trained on, one sentence
    losses: Tuple[str, ...]  # the losses this scenario can train (see engine.LOSSES)
    default_losses: Tuple[str, ...]
    params: Tuple[SimParam, ...]
    series: Tuple[str, ...]  # the scenario's own series, besides loss/margin/logp_chosen/logp_rejected/kl
    claim: str
    source: str  # paper + section/figure
    steps: int
    lr: float
    optimizer: str  # "sgd" or "adam"
    step_name: str = "step"
    run: Optional[Callable] = field(default=None, compare=False, repr=False)
    figure: Optional[Callable] = field(default=None, compare=False, repr=False)

    def param(self, name: str) -> SimParam:
        for prm in self.params:
            if prm.name == name:
                return prm
        valid = ", ".join(closest_first(name, [p.name for p in self.params])) or "(none)"
        raise DynamicsError(f"scenario {self.name} has no parameter {name!r}; valid: {valid}")

    def resolve(self, params: Dict[str, object]) -> Dict[str, float]:
        """Defaults filled in, every given value checked against its range."""
        given = {k.replace("-", "_"): v for k, v in params.items()}
        for name in given:
            self.param(name)
        return {p.name: p.check(given.get(p.name, p.default), self.name) for p in self.params}

    def resolve_losses(self, losses) -> Tuple[str, ...]:
        if losses is None:
            return self.default_losses
        if isinstance(losses, str):
            losses = [s.strip() for s in losses.split(",") if s.strip()]
        losses = tuple(losses)
        if not losses:
            raise DynamicsError(f"{self.name}: --losses needs at least one of {', '.join(self.losses)}")
        for loss in losses:
            if loss not in self.losses:
                valid = ", ".join(closest_first(str(loss), self.losses))
                raise DynamicsError(f"{self.name}: --losses has {loss!r}, which this scenario does not train; valid: {valid}")
        if len(set(losses)) != len(losses):
            raise DynamicsError(f"{self.name}: --losses names a loss twice: {','.join(losses)}")
        return losses


REGISTRY: Dict[str, Scenario] = {}


def scenario(**declaration):
    """Register the decorated ``run(ctx)`` function as a scenario: ``@scenario(name=..., ...)``."""

    def register(run):
        item = Scenario(run=run, **declaration)
        if item.name in REGISTRY:
            raise ValueError(f"scenario {item.name!r} declared twice")
        unknown = set(item.default_losses) - set(item.losses)
        if unknown:
            raise ValueError(f"{item.name}: default losses {sorted(unknown)} are not among its losses")
        REGISTRY[item.name] = item
        return run

    return register


def scenarios() -> List[Scenario]:
    from . import catalog  # noqa: F401  (registers the scenarios on import)
    from . import catalog_rl  # noqa: F401  (the RL scenarios of the GRPO family)

    return list(REGISTRY.values())


def get(name) -> Scenario:
    if isinstance(name, Scenario):
        return name
    if not isinstance(name, str):
        raise DynamicsError(f"a scenario name must be a string, got {type(name).__name__}")
    known = {s.name: s for s in scenarios()}
    found = known.get(name.strip().lower().replace("_", "-"))
    if found is None:
        # the valid names in --list order; the nearest one, if any, as a suggestion before them
        near = difflib.get_close_matches(name.strip().lower(), list(known), n=1, cutoff=0.4)
        hint = f"did you mean {near[0]}? " if near else ""
        raise DynamicsError(f"unknown scenario {name!r}; {hint}valid: {', '.join(known)}")
    return found
