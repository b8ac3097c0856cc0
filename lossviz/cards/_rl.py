r"""Shared pieces of the GRPO-family cards: the PPO token loss with the production's clamp, the
aggregation weights of verl's ``loss_agg_mode`` names, and the small batches a sequence-level
card declares its loss on.

The aggregation modes reduce a per-token loss as :math:`L = \sum_{i,t} w_{i,t}\,\ell_{i,t}` and
differ only in the weights (catalogue §2; Dr. GRPO, Liu et al. 2025, §3.1):

==========================  =============================  ==========================
mode                        :math:`w_{i,t}`                follows
==========================  =============================  ==========================
token-mean                  :math:`1/\sum m`               DAPO, TRL ``dapo``
seq-mean-token-mean         :math:`1/(B\,L_i)`             GRPO, OpenRLHF v0.5.3
seq-mean-token-sum          :math:`1/B`                    verl
seq-mean-token-sum-norm     :math:`1/(B\,C)`, C a constant  Dr. GRPO, TRL ``dr_grpo``
==========================  =============================  ==========================

B counts the sequences with at least one unmasked token (verl), C defaults to the padded
length T (``loss_scale_factor``).
"""

from __future__ import annotations

import math
import sys
from typing import Dict, List, Sequence, Tuple

import sympy as sp

from ._common import far_from, sym

MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
# the production's default clamp of the log-ratio in float64: 3/4 log(finfo.max) (lossviz.losses.log_ratio_limit)
FLOAT64_LOG_RATIO_MAX = 0.75 * math.log(sys.float_info.max)
TOP = sp.Float(FLOAT64_LOG_RATIO_MAX)


def agg_weights(mode: str, lengths: Sequence[object], padded: object, scale=None) -> List[object]:
    """The weight of one token of each sequence under ``mode`` (exact when the lengths are numbers or symbols).

    ``lengths`` are the unmasked token counts L_i (a sequence of length 0 is fully masked: excluded
    from B), ``padded`` the padded length T, ``scale`` the Dr. GRPO constant (default T).
    """
    if mode not in MODES:
        raise ValueError(f"loss_agg_mode must be one of {', '.join(MODES)}; got {mode!r}")
    lengths = [sp.sympify(n) for n in lengths]
    count = sum(1 for n in lengths if n != 0)
    if mode == "token-mean":
        return [1 / sum(lengths) for _ in lengths]
    if mode == "seq-mean-token-mean":
        return [1 / (count * n) if n != 0 else sp.S.Zero for n in lengths]
    if mode == "seq-mean-token-sum":
        return [sp.S.One / count for _ in lengths]
    return [1 / (count * sp.sympify(padded if scale is None else scale)) for _ in lengths]


def ppo_token(lp, old, adv, low, high, top=TOP):
    r"""-min(rA, clip(r, 1-ε_l, 1+ε_h)A) of one token, r = e^{log π - log π_old}; above ``top`` the
    log-ratio is clamped (the production clamps before exp: a constant, zero gradient)."""
    x = lp - old
    branches = lambda x: sp.Piecewise((-adv * (1 + high), (adv >= 0) & (x > sp.log(1 + high))),
                                      (-adv * (1 - low), (adv < 0) & (x < sp.log(1 - low))),
                                      (-adv * sp.exp(x), True))
    if top is sp.oo:
        return branches(x)
    at_clamp = sp.Piecewise((-adv * (1 + high), adv >= 0), (-adv * sp.exp(top), True))
    return sp.Piecewise((at_clamp, x > top), (branches(x), True))


def clip_kinks(low, high) -> List[float]:
    """The log-ratios where the clipped token loss has a kink."""
    return [math.log(1 - float(low)), math.log(1 + float(high))]


def draw_point(rng, names: Sequence[str], accept, scale: float = 0.5) -> Dict[str, float]:
    """Normal samples of the named variables (advantages of size about 1), redrawn until ``accept``."""
    for _ in range(2000):
        point = {n: float(rng.normal() * (1.0 if n.startswith("advantages") or n.startswith("rewards") else scale)) for n in names}
        if accept(point):
            return point
    raise RuntimeError("could not sample a point away from the kinks")  # pragma: no cover


def away(values: Sequence[float], kinks: Sequence[float], gap: float = 0.02) -> bool:
    return all(far_from(v, kinks, gap) for v in values)


def seq_names(prefix: str, length: int) -> Tuple[str, ...]:
    return tuple(f"{prefix}_{t}" for t in range(length))


def zero_set(expr, cond_subs, value_subs, var, domain=sp.Interval.open(0, sp.oo)):
    """The set of ``var`` (in ``domain``) where the Piecewise ``expr`` is 0, branch by branch.

    ``cond_subs`` substitutes into the conditions (e.g. the sign of A), ``value_subs`` into the
    values; each branch's condition is solved for ``var`` by ``solveset`` (earlier branches win).
    """
    region, taken = sp.EmptySet, sp.EmptySet
    expr = sp.piecewise_fold(expr.subs(cond_subs))
    pieces = expr.args if isinstance(expr, sp.Piecewise) else ((expr, sp.true),)
    for value, cond in pieces:
        cond = cond.subs(cond_subs)
        here = domain if cond == sp.true else (sp.EmptySet if cond == sp.false else _solve_cond(cond, var, domain))
        here = sp.Complement(here, taken)
        if sp.simplify(value.subs(value_subs)) == 0:
            region = sp.Union(region, here)
        taken = sp.Union(taken, here)
    if isinstance(region, sp.Union):  # absorption, which sympy leaves undone with symbolic bounds: S ∪ (S ∩ T) = S
        parts = region.args
        region = sp.Union(*[a for a in parts if not (isinstance(a, sp.Intersection) and any(b in a.args for b in parts if b != a))])
    return sp.simplify(region)


def _solve_cond(cond, var, domain):
    if isinstance(cond, sp.And):
        return sp.Intersection(*[_solve_cond(c, var, domain) for c in cond.args])
    if isinstance(cond, sp.Or):
        return sp.Union(*[_solve_cond(c, var, domain) for c in cond.args])
    if cond == sp.true:
        return domain
    if cond == sp.false:
        return sp.EmptySet
    found = sp.solveset(cond, var, domain)
    if isinstance(found, sp.ConditionSet) and domain == sp.Interval.open(0, sp.oo):
        # log r > 3 log(1 + ε_h) with a symbolic ε_h: solveset gives up; solved in y = log r it is an interval
        y = sp.Dummy("y", real=True)
        if isinstance(cond, sp.core.relational.Relational):
            gap = sp.expand(sp.expand_log((cond.lhs - cond.rhs).subs(var, sp.exp(y)), force=True))  # a·y + b
            a, b = gap.coeff(y, 1), gap.coeff(y, 0)
            if a.is_number and a != 0 and not gap.has(var) and sp.expand(gap - a * y - b) == 0 and not b.has(y):
                above = isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan)) == (a > 0)  # y above -b/a
                strict = isinstance(cond, (sp.StrictGreaterThan, sp.StrictLessThan))
                edge = sp.powsimp(sp.exp(-b / a), force=True)
                return sp.Interval(edge, sp.oo, strict, True) if above else sp.Interval(0, edge, True, strict)
    return found


def policy_symbols(prefix_names: Sequence[str]):
    return [sym(n) for n in prefix_names]
