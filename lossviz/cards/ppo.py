r"""PPO cards: the clipped policy surrogate (with asymmetric and dual clip) and the clipped value loss."""

from __future__ import annotations

import math
import sys

import sympy as sp

from ._common import draw, far_from, once, sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term, mask_rows, sample_rows
from .controls import Guide, Hold, Window
from .figure import Axis, Curve, LessonFigure, Mark, Panel, Shot

POLICY_VARS = ("log_probs", "old_log_probs", "advantages")
VALUE_VARS = ("values", "old_values", "returns")
RATIO = sp.Symbol("r", positive=True)
SIGNED_ADVANTAGE = sp.Symbol("A", real=True)
# the production's default clamp of the log-ratio in float64: 3/4 log(finfo.max) (lossviz.losses.log_ratio_limit)
FLOAT64_LOG_RATIO_MAX = 0.75 * math.log(sys.float_info.max)


def clip_bounds(p):
    """(ε_l, ε_h): the asymmetric overrides, else the symmetric clip_eps (None when clipping is off)."""
    low = p["clip_eps_low"] if p["clip_eps_low"] is not None else p["clip_eps"]
    high = p["clip_eps_high"] if p["clip_eps_high"] is not None else p["clip_eps"]
    return low, high


def _opt(name, doc, latex, low, high, low_open=True):
    return Param(name, None, doc, latex, low=low, high=high, low_open=low_open, optional=True)


def _symmetric(p) -> bool:
    low, high = clip_bounds(p)
    return float(low) == float(high)


def _surrogate_label(c) -> str:
    return r"$-\min(rA, \mathrm{clip}(r)A)$" + (" with dual clip" if c.p["dual_clip"] is not None else "")


def _policy_title(c) -> str:
    if c.p["dual_clip"] is not None:  # short: the parameter list already takes a line of the title
        # no-break spaces keep "A < 0" and "r > c" on one line of the wrapped title
        return "zero gradient once r leaves the trust region in A's direction; dual clip: for A\u00a0<\u00a00 and r\u00a0>\u00a0c the loss is capped at c|A|"
    return "the gradient is zero once r leaves the trust region in the direction A favours"


class PPOPolicy(Card):
    name = "ppo-policy"
    # the explorer: the advantage's sign picks the clipped side; clip-higher and dual clip switch on
    controls = (Hold("advantages", "A", -2.0, 2.0, "the advantage A (its sign picks the side that is clipped)"),
                Window("clip_eps", 0.01, 0.9, 0.01), Window("clip_eps_low", 0.01, 0.9, 0.01, on=0.2),
                Window("clip_eps_high", 0.01, 2.0, 0.01, on=0.28), Window("dual_clip", 1.05, 5.0, 0.05, on=3.0),
                Guide("dual clip c", lambda v: v["dual_clip"]))  # the figure marks c on its A < 0 panels only
    axis = Axis("r", {"log_probs": "log(r)", "old_log_probs": 0, "advantages": 1}, lambda p: (0.01, 2.5 if p["dual_clip"] is None else float(p["dual_clip"]) + 1.0),
                "ratio $r = \\pi/\\pi_{old}$", positive=True)
    figure = LessonFigure(  # A > 0 and A < 0 side by side, each with the unclipped surrogate
        panels=(Panel("loss", "loss", label=lambda c: _surrogate_label(c), tag="A_positive", title="A > 0 (A = +1)"),
                Panel("loss", "loss", label=lambda c: _surrogate_label(c), tag="A_negative", title="A < 0 (A = -1)", cut={"advantages": -1}),
                Panel("grad", r"$\partial\mathcal{L}/\partial r$", label=r"gradient $\partial\mathcal{L}/\partial r$", style={"color": 1}, tag="A_positive"),
                Panel("grad", r"$\partial\mathcal{L}/\partial r$", label=r"gradient $\partial\mathcal{L}/\partial r$", style={"color": 1}, tag="A_negative",
                      cut={"advantages": -1})),
        rows=2, size=(3.4, 2.3), title=lambda c: _policy_title(c),
        curves=(Curve(lambda c: -c.cut["advantages"] * c.x, "unclipped_{tag}", r"unclipped $-rA$", style={"color": "0.55", "linestyle": ":"}),),
        marks=(Mark("zero_gradient_ratios_A_positive", kind="zone", label="zero gradient", once=True, on="A_positive"),
               Mark("zero_gradient_ratios_A_negative", kind="zone", label="zero gradient", once=True, on="A_negative"),
               Mark("clip_low", kind="edge", at=lambda c: 1 - clip_bounds(c.p)[0], once=True,
                    label=lambda c: r"$1-\varepsilon$" if _symmetric(c.p) else r"$1-\varepsilon_l$"),
               Mark("clip_high", kind="edge", at=lambda c: 1 + clip_bounds(c.p)[1], once=True,
                    label=lambda c: r"$1+\varepsilon$" if _symmetric(c.p) else r"$1+\varepsilon_h$"),
               Mark("dual_clip", kind="edge", at=lambda c: c.p["dual_clip"], label="c = {dual_clip:g}", once=True, on="A_negative", color=3)))
    gallery = (Shot("ppo-policy", "PPO clip: zero gradient once r leaves [1-ε, 1+ε] in the direction the advantage favours", svg=True),
               Shot("ppo-policy_dual-clip", "dual clip c, A < 0: for r > c (the ratio grew although the advantage is negative) the loss "
                    "is capped at -cA = c|A| and the gradient is zero; without it the loss grows without bound in r",
                    params={"clip_eps": 0.2, "clip_eps_high": 0.28, "dual_clip": 3.0}))
    references = ("ppo", "dualclip", "dapo")
    aliases = ("policy", "ppo", "PolicyLoss")
    family = "ppo"
    title = "PPO clipped policy loss"
    lesson = ("-min(rA, clip(r, 1-ε, 1+ε)A): once r leaves the trust region in the direction A favours, the gradient is zero; "
              "dual clip caps the loss at -cA for A < 0, so a ratio above c (moved against the advantage) gets no gradient either")
    production = "lossviz.losses:PolicyLoss"
    params = (
        Param("clip_eps", 0.2, "trust-region half-width ε", r"\varepsilon", low=0.0, high=1.0, low_open=True, high_open=True),
        _opt("clip_eps_low", "lower half-width ε_l (default: clip_eps)", r"\varepsilon_l", 0.0, 1.0),
        _opt("clip_eps_high", "upper half-width ε_h (default: clip_eps)", r"\varepsilon_h", 0.0, 10.0),
        _opt("dual_clip", "dual-clip constant c > 1 bounding the loss for A < 0 (default: off)", "c", 1.0, 100.0),
        Param("log_ratio_max", None, "clamp of the log-ratio before exp: above it the loss is flat (default: 3/4 of log(finfo.max) "
              "of the input dtype; the card uses float64's, 532.3, beyond every range shown)", r"x_{\max}", optional=True),
    )
    variable_latex = {"log_probs": r"\log\pi", "old_log_probs": r"\log\pi_{\mathrm{old}}", "advantages": "A"}
    constants = ("old_log_probs", "advantages")  # from the rollout: the old policy and the advantage estimate

    def variables(self, p):
        return POLICY_VARS

    def bounds(self, p):
        return clip_bounds(p)

    def loss(self, p):
        return self.surrogate(p, clamp=True)

    def surrogate(self, p, clamp: bool):
        """The loss as Piecewise; ``clamp`` applies the production's clamp of the log-ratio (``log_ratio_max``, by
        default float64's): every log-ratio above it counts as it."""
        lp, old, adv = (sym(n) for n in POLICY_VARS)
        x = lp - old  # log-ratio; r = e^x
        if clamp:
            if p["log_ratio_max"] is not None:
                top = p["log_ratio_max"]
                at_clamp = self._branches(p, adv, top)  # constant in log π: zero gradient
            else:  # float64's clamp lies above log(1 + ε_h) and log c for every allowed ε_h <= 10 and c <= 100
                top = sp.Float(FLOAT64_LOG_RATIO_MAX)
                at_clamp = sp.Piecewise((-adv * (1 + self.bounds(p)[1]), adv >= 0),
                                        *([(-p["dual_clip"] * adv, True)] if p["dual_clip"] is not None else []),
                                        (-adv * sp.exp(top), True))
            return sp.Piecewise((at_clamp, x > top), (self._branches(p, adv, x), True))
        return self._branches(p, adv, x)

    def _branches(self, p, adv, x):
        low, high = self.bounds(p)
        branches = [
            (-adv * (1 + high), (adv >= 0) & (x > sp.log(1 + high))),  # clipped above: A favours growth
            (-adv * (1 - low), (adv < 0) & (x < sp.log(1 - low))),  # clipped below: A favours shrinking
        ]
        if p["dual_clip"] is not None:
            branches.append((-p["dual_clip"] * adv, (adv < 0) & (x > sp.log(p["dual_clip"]))))
        branches.append((-adv * sp.exp(x), True))
        return sp.Piecewise(*branches)

    def production_kwargs(self, p):
        kw = {"clip_eps": float(p["clip_eps"])}
        for k in ("clip_eps_low", "clip_eps_high", "dual_clip", "log_ratio_max"):
            if p[k] is not None:
                kw[k] = float(p[k])
        return kw

    def facts(self, d):
        lp, old, adv = (sym(n) for n in POLICY_VARS)
        grad = once(lambda: sp.piecewise_fold(sp.diff(self.surrogate(d.p, clamp=False), lp)))

        def split(sign):
            """(zero-gradient set of r, the gradient where not clipped) for the advantage's sign."""
            a = sp.Symbol("A", positive=True) * sign
            region, inside = sp.EmptySet, None
            g = grad()
            for value, cond in (g.args if isinstance(g, sp.Piecewise) else ((g, sp.true),)):
                cond_a = cond.subs({adv: a, old: 0})
                if cond_a == sp.false:
                    continue
                if sp.simplify(value.subs(adv, a)) == 0:
                    region = region | _ratio_set(cond_a, lp)
                else:
                    inside = value
            # the inside gradient in the signed advantage A (not |A|): -A·r reads right for both signs
            return _tidy_set(region), sp.simplify(inside.subs({adv: SIGNED_ADVANTAGE, lp: sp.log(RATIO), old: 0}))

        facts = []
        for sign, label in ((1, "positive"), (-1, "negative")):
            parts = once(lambda sign=sign: split(sign))
            where = ("above 1+ε_h: r already grew as A > 0 asks" if sign > 0 else
                     "below 1-ε_l: r already shrank as A < 0 asks; with dual clip also above c, where the loss is capped at -cA "
                     "and a ratio that ran the wrong way gets no gradient back")
            facts.append(Fact(f"zero_gradient_ratios_A_{label}", f"the ratios r where ∂L/∂log π = 0 for A {'>' if sign > 0 else '<'} 0 ({where})",
                              lambda parts=parts: parts()[0]))
            facts.append(Fact(f"gradient_inside_A_{label}",
                              f"∂L/∂log π where it is not clipped, for A {'>' if sign > 0 else '<'} 0: -A·r with A the signed advantage "
                              f"({'negative: gradient descent raises log π' if sign > 0 else 'positive: gradient descent lowers log π'})",
                              lambda parts=parts: parts()[1]))
        return facts

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import PolicyLoss

        args = [tensor([[values[n]]], dtype, device) for n in POLICY_VARS]
        return Example(PolicyLoss(**self.production_kwargs(p)), args, {n: (i, (0, 0)) for i, n in enumerate(POLICY_VARS)})

    def sample(self, rng, p):
        low, high = (float(v) for v in self.bounds(p))
        kinks = [math.log(1 - low), math.log(1 + high)] + ([math.log(float(p["dual_clip"]))] if p["dual_clip"] is not None else [])
        kinks += [float(p["log_ratio_max"])] if p["log_ratio_max"] is not None else []
        ok = lambda v: far_from(v["log_probs"] - v["old_log_probs"], kinks, 0.02) and abs(v["advantages"]) > 0.05
        return draw(rng, POLICY_VARS, 0.5, ok)

    def batches(self, rng, p):
        """Per-sequence and token-level means with a fully masked sequence, and one advantage per sequence ([B, 1])."""
        import numpy as np

        from lossviz.losses import PolicyLoss

        make = lambda token_level: PolicyLoss(**self.production_kwargs(p), token_level_loss=token_level)
        specs = token_batches(self, rng, p, POLICY_VARS, make)
        rows, steps = 3, 4
        points = sample_rows(self, rng, p, rows * steps)
        lp, old = (np.array([pt[n] for pt in points]).reshape(rows, steps) for n in POLICY_VARS[:2])
        adv = np.array([[points[b * steps]["advantages"]] for b in range(rows)])  # (B, 1): the first token's draw
        mask = mask_rows(rng, rows, steps)
        terms = [Term({"log_probs": (0, (b, t)), "old_log_probs": (1, (b, t)), "advantages": (2, (b, 0))}, 1 / (rows * mask[b].sum()))
                 for b in range(rows) for t in range(steps) if mask[b, t]]
        specs.append(BatchSpec("one advantage per sequence, advantages (B, 1)", lambda device: make(False),
                               [lp, old, adv, mask], list(POLICY_VARS) + ["action_mask"], [0, 1, 2], terms))
        return specs


def token_batches(card, rng, p, names, make_module):
    """(B, T) inputs with an action mask, reduced per sequence then over the batch, and token-level; in each,
    one sequence is fully masked (it counts as 0 in the batch mean, and has no token in the token-level mean)."""
    import numpy as np

    rows, steps = 3, 5
    arg_names = list(names) + ["action_mask"]
    specs = []
    for label, token_level, empty_row in (("per-sequence mean, then batch mean", False, 2), ("token-level mean", True, 0)):
        points = sample_rows(card, rng, p, rows * steps)
        args = [np.array([pt[n] for pt in points]).reshape(rows, steps) for n in names]
        mask = mask_rows(rng, rows, steps)
        mask[empty_row] = 0.0
        kept = [(b, t) for b in range(rows) for t in range(steps) if mask[b, t]]
        where = lambda b, t: {n: (k, (b, t)) for k, n in enumerate(names)}
        if token_level:
            terms = [Term(where(b, t), 1 / len(kept)) for b, t in kept]
        else:  # masked mean per row, then the mean over all rows (the empty row adds 0)
            terms = [Term(where(b, t), 1 / (rows * mask[b].sum())) for b, t in kept]
        specs.append(BatchSpec(f"{label}, sequence {empty_row} fully masked", lambda device, t=token_level: make_module(t),
                               args + [mask], arg_names, [0, 1, 2], terms))
    return specs


def _ratio_set(cond, lp):
    """The set of ratios r = e^{log π} (old log-prob 0) where ``cond`` holds.

    Each relation on the log-ratio is mapped through exp (monotonic) to a relation on r and
    solved by ``solveset``; ``And``/``Or`` become intersection/union.
    """
    positive = sp.Interval.open(0, sp.oo)
    if cond == sp.true:
        return positive
    if cond == sp.false:
        return sp.EmptySet
    if isinstance(cond, sp.And):
        return sp.Intersection(*[_ratio_set(c, lp) for c in cond.args])
    if isinstance(cond, sp.Or):
        return sp.Union(*[_ratio_set(c, lp) for c in cond.args])
    relation = cond.func(sp.exp(cond.lhs), sp.exp(cond.rhs)).subs(sp.exp(lp), RATIO)
    return sp.solveset(relation, RATIO, positive)


def _tidy_set(region):
    """Drop the parts of a union that are empty once 0 < ε < 1 is known (sympy cannot assume it)."""
    if isinstance(region, sp.Union):
        eps = [s for s in region.free_symbols if s.name.startswith("clip_eps")]
        keep = [part for part in region.args if part.subs({e: sp.Rational(1, 5) for e in eps}) != sp.EmptySet]
        return sp.Union(*keep)
    return region


def _value_error(v, c):
    """½(v - R)² at the return R along the axis."""
    return (v - c.cut["returns"]) ** 2 / 2


def _clipped_terms(c):
    """(step v - v_old, ε_l, ε_h, ½(v_old + ε_h - R)², ½(v_old - ε_l - R)²) along the axis; None when clipping is off."""
    low, high = clip_bounds(c.p)
    if low is None:
        return None
    v_old = c.cut["old_values"]
    return c.x - v_old, low, high, _value_error(v_old + high, c), _value_error(v_old - low, c)


def _clipped_value_error(c):
    """½(v_c - R)², v_c = v_old + clip(v - v_old, -ε_l, ε_h); None when clipping is off."""
    terms = _clipped_terms(c)
    if terms is None:
        return None
    step, low, high, upper, lower = terms
    return sp.Piecewise((upper, step > high), (lower, step < -low), (_value_error(c.x, c), True))


def _min_value_error(c):
    """The hypothetical min of the clipped and unclipped errors (ValueLoss takes the max); None when clipping is off."""
    terms = _clipped_terms(c)
    if terms is None:
        return None
    step, low, high, upper, lower = terms
    unclipped = _value_error(c.x, c)
    return sp.Piecewise((upper, (step > high) & (upper < unclipped)), (lower, (step < -low) & (lower < unclipped)), (unclipped, True))


class PPOValue(Card):
    name = "ppo-value"
    # the explorer moves v_old and R (the clip is centred on v_old) and shades where the clip binds
    controls = (Hold("old_values", "v_old", -1.0, 2.0, "the old value v_old (the clip is centred on it)"),  # inside the axis's range
                Hold("returns", "R", -1.0, 2.0, "the return R (the regression target)"),
                Window("clip_eps", 0.05, 2.0, 0.05, on=0.2), Window("clip_eps_low", 0.05, 2.0, 0.05, on=0.2), Window("clip_eps_high", 0.05, 2.0, 0.05, on=0.5),
                Mark("flat_zone_above", kind="zone", label="zero gradient (clip binds)"), Mark("flat_zone_below", kind="zone", label="zero gradient (clip binds)"))
    axis = Axis("v", {"values": "v", "old_values": 0.0, "returns": 1.0}, (-1.5, 2.5), "value $v$ ($v_{old}$ = 0, R = 1)")
    figure = LessonFigure(  # the max beside the clipped, unclipped and hypothetical min terms
        panels=(Panel("loss", "loss", style={"linewidth": 2.2}), Panel("grad", r"gradient $\partial\mathcal{L}/\partial v$", style={"linewidth": 2.2})),
        title="why max and not min: the clip binds only when it makes the loss larger", tag="max", label="max (ValueLoss): pessimistic",
        curves=(Curve(lambda c: _value_error(c.x, c), "unclipped", r"unclipped $\frac{1}{2}(v-R)^2$",
                      style={"color": "0.55", "linestyle": ":", "zorder": 1.9}),  # under the max, which it equals outside the clip
                Curve(lambda c: _clipped_value_error(c), "clipped", r"clipped $\frac{1}{2}(v_c-R)^2$", style={"color": "0.55", "linestyle": "--"}),
                Curve(lambda c: _min_value_error(c), "min", "min (hypothetical)", panels=("loss", "grad"), style={"color": 1, "linestyle": "-."})),
        marks=(Mark("flat_zone_above", kind="zone", label="flat zone of the max", once=True, when=lambda c: clip_bounds(c.p)[1] is not None),
               Mark("clip_high", kind="edge", label=r"$v_{{old}}+\varepsilon$", once=True,
                    at=lambda c: None if clip_bounds(c.p)[1] is None else c.cut["old_values"] + clip_bounds(c.p)[1]),
               Mark("clip_low", kind="edge", label=r"$v_{{old}}-\varepsilon$", once=True,
                    at=lambda c: None if clip_bounds(c.p)[0] is None else c.cut["old_values"] - clip_bounds(c.p)[0]),
               Mark("return", kind="edge", label="$R$", once=True, color=2, at=lambda c: c.cut["returns"])))
    gallery = (Shot("ppo-value", "clipped value loss takes the max (pessimistic): flat zone between v_old + ε and its mirror across R; "
                    "the min would not be", svg=True),)
    references = ("ppo", "engstrom2020")
    aliases = ("value", "ValueLoss")
    family = "ppo"
    title = "PPO clipped value loss"
    lesson = "½·max of clipped and unclipped squared errors: pessimistic, the clip binds only when it makes the loss larger"
    production = "lossviz.losses:ValueLoss"
    params = (
        Param("clip_eps", 0.2, "value clip half-width ε (none: unclipped)", r"\varepsilon", low=0.0, high=100.0, low_open=True, optional=True),
        _opt("clip_eps_low", "lower half-width (default: clip_eps)", r"\varepsilon_l", 0.0, 100.0),
        _opt("clip_eps_high", "upper half-width (default: clip_eps)", r"\varepsilon_h", 0.0, 100.0),
    )
    variable_latex = {"values": "v", "old_values": r"v_{\mathrm{old}}", "returns": "R"}
    constants = ("old_values", "returns")  # from the rollout: the old critic's values and the return targets

    def variables(self, p):
        return VALUE_VARS

    def bounds(self, p):
        return clip_bounds(p)

    def loss(self, p):
        v, v_old, ret = (sym(n) for n in VALUE_VARS)
        low, high = self.bounds(p)
        unclipped = (v - ret) ** 2 / 2
        if low is None:
            return unclipped
        upper, lower = (v_old + high - ret) ** 2 / 2, (v_old - low - ret) ** 2 / 2
        return sp.Piecewise(
            (upper, (v - v_old > high) & (upper > unclipped)),  # clipped at v_old + ε and the larger error
            (lower, (v - v_old < -low) & (lower > unclipped)),
            (unclipped, True),
        )

    def production_kwargs(self, p):
        return {k: float(p[k]) for k in ("clip_eps", "clip_eps_low", "clip_eps_high") if p[k] is not None}

    def facts(self, d):
        v, v_old, ret = (sym(n) for n in VALUE_VARS)
        low, high = self.bounds(d.p)
        facts = [Fact("unclipped_gradient", "∂L/∂v where the unclipped error wins: v - R (the ½ cancels the square's 2)",
                      lambda: sp.diff((v - ret) ** 2 / 2, v))]

        def mirror(edge):
            """The other v where the clipped error (edge - R)² equals the unclipped (v - R)²."""
            roots = sp.solve(sp.Eq((edge - ret) ** 2, (v - ret) ** 2), v)
            return sp.expand([e for e in roots if sp.simplify(e - edge) != 0][0])

        if high is not None:
            facts.append(Fact("flat_zone_above", "for R > v_old + ε: the zero-gradient zone of v (between the clip edge and its mirror image across R)",
                              lambda: sp.Interval.open(v_old + high, mirror(v_old + high))))
            facts.append(Fact("flat_zone_below", "for R < v_old - ε: the zero-gradient zone of v",
                              lambda: sp.Interval.open(mirror(v_old - low), v_old - low)))
        return facts

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import ValueLoss

        args = [tensor([[values[n]]], dtype, device) for n in VALUE_VARS]
        return Example(ValueLoss(**self.production_kwargs(p)), args, {n: (i, (0, 0)) for i, n in enumerate(VALUE_VARS)})

    def sample(self, rng, p):
        low, high = self.bounds(p)

        def ok(v):
            if low is None:
                return True
            step = v["values"] - v["old_values"]
            err = abs(v["values"] - v["returns"])
            return far_from(step, [-float(low), float(high)], 0.02) and far_from(err, [abs(v["old_values"] + float(high) - v["returns"]), abs(v["old_values"] - float(low) - v["returns"])], 0.02)

        return draw(rng, VALUE_VARS, 1.0, ok)

    def batches(self, rng, p):
        from lossviz.losses import ValueLoss

        return token_batches(self, rng, p, VALUE_VARS, lambda token_level: ValueLoss(**self.production_kwargs(p), token_level_loss=token_level))
