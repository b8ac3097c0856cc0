"""What a loss card declares, and the :class:`Derivation` computed from it.

A card is the single declaration of one loss entry: its parameters (with ranges and
symbols), its sympy variables (named after the production forward arguments), its
per-example loss, the closed-form facts of its lesson, and how to call the production
class on one example. Everything else (CLI, verification, figures, widgets, docs) reads cards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import sympy as sp

from ..errors import LossvizError, arg
from ..symbolic import LogSumExp, elementary, lower


class CardError(LossvizError):
    """A bad name, parameter or value given to a card (message names the culprit)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a card.

    A real parameter has a range and a sympy symbol; a *case* parameter (``choices``) picks
    one of several per-example losses (e.g. KTO's desirable or undesirable arm). An
    ``optional`` real parameter may be ``None`` (the feature is off or falls back).
    """

    name: str
    default: object
    doc: str
    latex: str = ""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: Optional[Tuple[str, ...]] = None
    optional: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_case(self) -> bool:
        return self.choices is not None

    @property
    def symbol(self) -> sp.Symbol:
        """A sympy symbol carrying the sign the range implies (limits and solve need it)."""
        if self.low is not None and self.low >= 0:
            if self.low > 0 or self.low_open:
                return sp.Symbol(self.name, positive=True)
            return sp.Symbol(self.name, nonnegative=True)
        return sp.Symbol(self.name, real=True)

    def range_text(self) -> str:
        if self.is_case:
            return "|".join(self.choices)
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        text = f"{'(' if self.low_open or self.low is None else '['}{lo}, {hi}{')' if self.high_open or self.high is None else ']'}"
        return text + (" or none" if self.optional else "")

    def check(self, value):
        """Return the validated value, or raise :class:`CardError` naming the parameter and the range."""
        name = arg(self.name)
        if self.is_case:
            if value not in self.choices:
                raise CardError(f"{name} must be one of {', '.join(self.choices)}; got {value!r}")
            return value
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if self.optional:
                return None
            raise CardError(f"{name} needs a number in {self.range_text()}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise CardError(f"{name} must be a number in {self.range_text()}; got {value!r}") from None
        if not math.isfinite(number):
            raise CardError(f"{name} must be finite; got {value!r}")
        too_low = self.low is not None and (number < self.low or (self.low_open and number == self.low))
        too_high = self.high is not None and (number > self.high or (self.high_open and number == self.high))
        if too_low or too_high:
            raise CardError(f"{name} must be in {self.range_text()}; got {number:g}")
        return number


class Fact:
    """A closed-form fact of a lesson, as sympy found it (``value``), with a one-line meaning.

    ``value`` may be given as a zero-argument function: it is then computed on first read, so a
    figure that marks one fact does not pay for the others.
    """

    def __init__(self, name: str, doc: str, value):
        self.name, self.doc, self._value = name, doc, value

    @property
    def value(self) -> sp.Basic:
        if callable(self._value) and not isinstance(self._value, sp.Basic):
            self._value = self._value()
        return self._value

    @property
    def latex(self) -> str:
        return sp.latex(self.value)

    def __repr__(self):
        return f"Fact({self.name!r}, {self.value!r})"


@dataclass
class Example:
    """One example run through the production class: ``module(*args)``; ``where[var] = (arg, index)``."""

    module: object
    args: list
    where: Dict[str, Tuple[int, tuple]]


DETACHED_NOTE = "detached in the loss (the production code stops its gradient: 0 by construction)"
CONSTANT_NOTE = "constant in training (no gradient flows into it in the trainer)"


class Card:
    """Base class: subclasses set the class attributes and implement :meth:`loss`."""

    name: str = ""
    aliases: Tuple[str, ...] = ()
    family: str = ""
    order: int = 0  # rank inside the family (lower first; ties by module name): the teaching order of the listing
    title: str = ""
    lesson: str = ""
    production: Optional[str] = None  # "module:Class" of the production implementation
    params: Tuple[Param, ...] = ()
    variable_latex: Mapping[str, str] = {}
    detached: Tuple[str, ...] = ()  # variables the production code reads but never differentiates
    # inputs that a trainer computes without gradient (a frozen reference or teacher model, the rollout's
    # old policy and values, advantages, returns): the loss is differentiable in them, but no gradient
    # reaches them in training; `derive` shows their gradient and marks it (see gradient_note)
    constants: Tuple[str, ...] = ()
    cases_doc: str = ""
    references: Tuple[str, ...] = ()  # anchors of docs/references.md: the papers whose equations the card uses
    controls: Tuple[object, ...] = ()  # explorer-only controls (lossviz.cards.controls): held variables, points, guides
    # the lesson figure as data (see .figure): the natural axis, the figure (a LessonFigure the generic
    # builder draws, or a CustomFigure naming its own builder) and the gallery shots
    axis = None  # Optional[figure.Axis]
    figure = None  # Optional[figure.LessonFigure | figure.CustomFigure]
    gallery: tuple = ()  # figure.Shot, ...; empty: one shot at the defaults

    # --- to implement -------------------------------------------------------------
    def variables(self, p: Mapping[str, object]) -> Tuple[str, ...]:
        raise NotImplementedError

    def loss(self, p: Mapping[str, object]) -> sp.Expr:
        """The per-example loss in the variables; ``p`` maps parameter name -> sympy value."""
        raise NotImplementedError

    def facts(self, d: "Derivation") -> List[Fact]:
        return []

    def production_kwargs(self, p: Mapping[str, object]) -> dict:
        return {}

    def example(self, values: Mapping[str, float], p: Mapping[str, object], dtype=None, device=None) -> Example:
        """Build the production module and a one-example batch holding ``values``."""
        raise NotImplementedError(f"{self.name} has no production example")

    def sample(self, rng, p: Mapping[str, object]) -> Dict[str, float]:
        """A random point of the variables, away from kinks (default: standard normal)."""
        return {v: float(rng.normal()) for v in self.variables(p)}

    def batches(self, rng, p: Mapping[str, object]) -> list:
        """Random production batches with the terms of this card's loss (see :mod:`.batch`)."""
        raise NotImplementedError(f"{self.name} has no verification batches")

    def resolve_extra(self, values: Dict[str, object], given: Mapping[str, object]) -> Dict[str, object]:
        """Hook for parameters whose meaning depends on another (e.g. a PRM hard label)."""
        return values

    # --- shared machinery -------------------------------------------------------------
    def gradient_note(self, variable: str) -> Optional[str]:
        """Why the gradient into ``variable`` does not train anything, or None when it does."""
        if variable in self.detached:
            return DETACHED_NOTE
        if variable in self.constants:
            return CONSTANT_NOTE
        return None

    def param(self, name: str) -> Param:
        for prm in self.params:
            if prm.name == name:
                return prm
        raise KeyError(name)

    def resolve(self, given: Mapping[str, object], symbolic: bool = False) -> Dict[str, object]:
        """Validated parameter values; unknown names raise :class:`CardError` with the choices.

        With ``symbolic=True`` real parameters that were not given stay as sympy symbols.
        """
        known = {prm.name for prm in self.params}
        for key in given:
            if key not in known:
                from ..registry import closest_first

                if not known:
                    raise CardError(f"{self.name} takes no parameters; got {arg(str(key))}")
                valid = ", ".join(arg(c) for c in closest_first(str(key), sorted(known)))
                raise CardError(f"{self.name} has no parameter {arg(str(key))}; valid: {valid}")
        values: Dict[str, object] = {}
        for prm in self.params:
            if prm.name in given:
                values[prm.name] = prm.check(given[prm.name])
            elif symbolic and not prm.is_case and not prm.optional:
                values[prm.name] = prm.symbol
            else:
                values[prm.name] = prm.default
        return self.resolve_extra(values, given)

    def sympy_params(self, values: Mapping[str, object]) -> Dict[str, object]:
        """Numbers become exact rationals (0.1 -> 1/10): solve and simplify stay exact, and no
        15-digit float constant (exp(-0.5) = 0.6065...) ends up inside a 50-digit evaluation."""
        return {k: sp.Rational(repr(v)) if isinstance(v, float) else v for k, v in values.items()}


def _symbols(names: Sequence[str]) -> Dict[str, sp.Symbol]:
    return {n: sp.Symbol(n, real=True) for n in names}


@dataclass
class Derivation:
    """The loss of one card at given parameters, its gradient, LaTeX, facts and lowerings."""

    card: Card
    params: Dict[str, object]
    _cache: Dict[tuple, Callable] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.card.name

    @cached_property
    def p(self) -> Dict[str, object]:
        return self.card.sympy_params(self.params)

    @cached_property
    def variables(self) -> Tuple[str, ...]:
        return tuple(self.card.variables(self.params))

    @cached_property
    def symbols(self) -> Dict[str, sp.Symbol]:
        return _symbols(self.variables)

    @cached_property
    def loss(self) -> sp.Expr:
        return self.card.loss(self.p)

    @cached_property
    def symbolic_params(self) -> Tuple[str, ...]:
        return tuple(k for k, v in self.params.items() if isinstance(v, sp.Symbol))

    @cached_property
    def raw_gradient(self) -> Mapping[str, sp.Expr]:
        """``sympy.diff`` of the loss, detached variables set to zero (stop-gradient)."""
        return _Lazy(self.variables, lambda v: sp.S.Zero if v in self.card.detached else sp.diff(self.loss, self.symbols[v]))

    @cached_property
    def gradient(self) -> Mapping[str, sp.Expr]:
        """The simplified gradient with respect to every variable (each computed when first read)."""
        return _Lazy(self.variables, lambda v: _tidy(self.raw_gradient[v]))

    @cached_property
    def facts(self) -> List[Fact]:
        return self.card.facts(self)

    def fact(self, name: str) -> Fact:
        for f in self.facts:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no fact {name!r}; facts: {[f.name for f in self.facts]}")

    # --- text -----------------------------------------------------------------------
    def _latex_names(self) -> Dict[sp.Symbol, str]:
        names = {self.symbols[v]: self.card.variable_latex.get(v, v) for v in self.variables}
        for prm in self.card.params:
            if prm.latex:
                names[prm.symbol] = prm.latex
        return names

    def latex(self, expr: sp.Basic) -> str:
        return sp.latex(expr, symbol_names=self._latex_names())

    @property
    def loss_latex(self) -> str:
        return self.latex(self.loss)

    @property
    def gradient_latex(self) -> Dict[str, str]:
        return {v: self.latex(g) for v, g in self.gradient.items()}

    @staticmethod
    def plain(expr: sp.Basic) -> str:
        """Text that ``sympy.sympify`` parses back (stable primitives written out as exp/log)."""
        return sp.sstr(elementary(expr))

    # --- numbers --------------------------------------------------------------------
    def _numeric_args(self) -> List[str]:
        return list(self.variables) + list(self.symbolic_params)

    def function(self, expr_key: str = "loss", backend: str = "numpy") -> Callable:
        """``f(*variables[, *symbolic params])`` for the loss (``"loss"``) or a gradient (a variable name)."""
        key = (expr_key, backend)
        if key not in self._cache:
            expr = self.loss if expr_key == "loss" else self.gradient[expr_key]
            self._cache[key] = lower(expr, self._numeric_args(), backend)
        return self._cache[key]

    def evaluate(self, values: Mapping[str, float], expr_key: str = "loss", backend: str = "numpy"):
        return self.function(expr_key, backend)(*[values[a] for a in self._numeric_args()])


class _Lazy(Mapping):
    """A read-only mapping whose values are computed on first access (a plot needs one gradient, not all)."""

    def __init__(self, keys, compute):
        self._keys, self._compute, self._done = tuple(keys), compute, {}

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._done:
            self._done[key] = self._compute(key)
        return self._done[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def __repr__(self):
        return repr(dict(self))


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Light simplification that keeps Piecewise branches and the stable primitives intact."""
    if isinstance(expr, sp.Piecewise):
        # branch by branch; no expand, which would split exp(a - b) into exp(a)*exp(-b) (0*inf at |a|=1e4)
        return sp.Piecewise(*[(_tidy(e), c) for e, c in expr.args])
    if expr.has(sp.Piecewise):
        folded = sp.piecewise_fold(expr)  # a Piecewise inside a sigmoid: lift it to the top
        return _tidy(folded) if isinstance(folded, sp.Piecewise) else folded
    if expr.has(LogSumExp):
        # simplify cannot use sum(softmax) = 1 here and costs ~0.1 s per entry; the card's facts
        # prove the textbook forms on the elementary rewrite instead
        return sp.factor_terms(expr)
    return sp.factor_terms(sp.simplify(expr))
