r"""GSPO: PPO's clip on the sequence ratio, the geometric mean of the token ratios (Zheng et al. 2025, §4).

The card's example is one answer of three tokens with one advantage A:
:math:`s = \exp\big(\tfrac13\sum_t (\log\pi_t - \log\pi^{\mathrm{old}}_t)\big) = (r_0 r_1 r_2)^{1/3}` and
:math:`\ell = -\min(sA, \operatorname{clip}(s, 1-\varepsilon_l, 1+\varepsilon_h)A)`, one value per
answer. Inside the clip every token of the answer gets the same gradient, :math:`-As/3`; once s
leaves the trust region in the direction A favours, every token's gradient is zero together.
Moving one token's ratio r (the others at 1) moves s as :math:`r^{1/3}`, so the clip binds at
:math:`r = (1+\varepsilon_h)^3`, not at :math:`1+\varepsilon_h`.
"""

from __future__ import annotations

import math

import sympy as sp

from ._common import once, sym, tensor
from ._rl import FLOAT64_LOG_RATIO_MAX, TOP, away, clip_kinks, draw_point, ppo_token, seq_names, zero_set
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .controls import Hold, Window
from .figure import Axis, LessonFigure, Mark, Panel, Shot

LENGTH = 3
LP, OLD = seq_names("log_probs", LENGTH), seq_names("old_log_probs", LENGTH)
VARS = LP + OLD + ("advantages",)
R = sp.Symbol("r", positive=True)
TOKEN_RATIOS = tuple(sp.Symbol(f"r_{t}", positive=True) for t in range(LENGTH))


def _latex():
    out = {lp: rf"\log\pi_{t}" for t, lp in enumerate(LP)}
    out.update({old: rf"\log\pi^{{\mathrm{{old}}}}_{t}" for t, old in enumerate(OLD)})
    out["advantages"] = "A"
    return out


class SequenceCard(Card):
    """One answer of LENGTH tokens with one advantage, reduced to one value per answer (GSPO, GMPO)."""

    loss_type = ""
    variable_latex = _latex()
    constants = OLD + ("advantages",)

    def variables(self, p):
        return VARS

    def bounds(self, p):
        return p["clip_eps_low"], p["clip_eps_high"]

    def production_kwargs(self, p):
        low, high = self.bounds(p)
        return {"clip_eps_low": float(low), "clip_eps_high": float(high), "policy_loss_type": self.loss_type}

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import PolicyLoss

        args = [tensor([[values[n] for n in LP]], dtype, device), tensor([[values[n] for n in OLD]], dtype, device),
                tensor([[values["advantages"]]], dtype, device)]
        where = {n: (0, (0, t)) for t, n in enumerate(LP)}
        where.update({n: (1, (0, t)) for t, n in enumerate(OLD)})
        where["advantages"] = (2, (0, 0))
        return Example(PolicyLoss(**self.production_kwargs(p)), args, where)

    def batches(self, rng, p):
        """Answers of 3 unmasked tokens at random places of T = 5, one answer fully masked (not counted), A of shape (B, 1)."""
        import numpy as np

        from lossviz.losses import PolicyLoss

        rows, steps, empty = 4, 5, 2
        lp, old, mask = rng.normal(size=(rows, steps)), rng.normal(size=(rows, steps)), np.zeros((rows, steps))
        adv = rng.normal(size=(rows, 1))
        terms = []
        counted = rows - 1
        for b in range(rows):
            if b == empty:
                continue
            places = sorted(rng.choice(steps, size=LENGTH, replace=False))
            point = self.sample(rng, p)
            where = {"advantages": (2, (b, 0))}
            for t, col in enumerate(places):
                lp[b, col], old[b, col], mask[b, col] = point[LP[t]], point[OLD[t]], 1.0
                where[LP[t]], where[OLD[t]] = (0, (b, col)), (1, (b, col))
            adv[b, 0] = point["advantages"]
            terms.append(Term(where, 1 / counted))
        return [BatchSpec(f"{counted} answers of 3 tokens in T = {steps}, answer {empty} fully masked, advantages (B, 1)",
                          lambda device: PolicyLoss(**self.production_kwargs(p)),
                          [lp, old, adv, mask], ["log_probs", "old_log_probs", "advantages", "action_mask"], [0, 1, 2], terms)]


def _one_token_range(p):
    low, high = (float(v) for v in (p["clip_eps_low"], p["clip_eps_high"]))
    lo, hi = (1 - low) ** LENGTH, (1 + high) ** LENGTH
    span = hi - lo
    room = span if span > 0.1 else 10 * span  # a tiny clip (the paper's) gets room: the loss then spans more than 1e-3
    return max(lo - room, 0.01), hi + room


class GSPO(SequenceCard):
    name = "gspo"
    aliases = ("gspo-loss",)
    family = "grpo"
    order = 4  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "GSPO: clipped sequence ratio"
    lesson = ("PPO's clip on s = (Π_t r_t)^(1/L), the geometric mean of the token ratios: every token of an answer gets the same "
              "gradient -A·s/L, and all of them stop together once s leaves [1-ε_l, 1+ε_h] in the direction A favours")
    production = "lossviz.losses:PolicyLoss"
    loss_type = "gspo"
    params = (
        Param("clip_eps_low", 3e-4, "lower half-width ε_l of the sequence clip (paper: 3e-4)", r"\varepsilon_l",
              low=0.0, high=1.0, low_open=True, high_open=True),
        Param("clip_eps_high", 4e-4, "upper half-width ε_h (paper: 4e-4)", r"\varepsilon_h", low=0.0, high=10.0, low_open=True),
    )
    references = ("gspo", "ppo", "verl")
    controls = (Hold("advantages", "A", -2.0, 2.0, "the answer's advantage A (its sign picks the side that is clipped)"),
                Hold(("log_probs_1", "log_probs_2"), "x_rest", -0.01, 0.01, "log-ratio of the two other tokens", step=0.0005),
                Window("clip_eps_low", 1e-4, 0.5, 1e-4), Window("clip_eps_high", 1e-4, 0.5, 1e-4))
    axis = Axis("r", {**{n: 0 for n in VARS}, "log_probs_0": "log(r)", "advantages": 1}, _one_token_range,
                "ratio $r$ of token 0 (tokens 1, 2 at $r = 1$)", positive=True)
    figure = LessonFigure(
        panels=(Panel("loss", "loss", tag="A_positive", title="A > 0 (A = +1)"),
                Panel("loss", "loss", tag="A_negative", title="A < 0 (A = -1)", cut={"advantages": -1}),
                Panel("grad", r"$\partial\ell/\partial r$", tag="A_positive", style={"color": 1}),
                Panel("grad", r"$\partial\ell/\partial r$", tag="A_negative", style={"color": 1}, cut={"advantages": -1})),
        rows=2, size=(3.6, 2.4), label=r"$-\min(sA, \mathrm{clip}(s)A)$, $s = r^{1/3}$",
        title="one token moves the sequence ratio as s = ∛r: the clip binds at r = (1±ε)³",
        marks=(Mark("zero_gradient_one_token_ratios_A_positive", kind="zone", label="zero gradient", once=True, on="A_positive"),
               Mark("zero_gradient_one_token_ratios_A_negative", kind="zone", label="zero gradient", once=True, on="A_negative"),
               Mark("one_token_clip_high", kind="edge", label=r"$(1+\varepsilon_h)^3$", once=True),
               Mark("one_token_clip_low", kind="edge", label=r"$(1-\varepsilon_l)^3$", once=True)))
    gallery = (Shot("gspo", "GSPO: the sequence ratio s is the geometric mean of the token ratios; one token alone reaches the clip "
                    "only at r = (1+ε_h)³ (A > 0) or (1-ε_l)³ (A < 0), and then every token's gradient stops"),
               Shot("gspo_wide", "GSPO with a wide clip (ε = 0.2) for comparison with PPO: one token reaches the clip at r = 1.2³ = 1.728",
                    params={"clip_eps_low": 0.2, "clip_eps_high": 0.2}))

    def loss(self, p):
        return self.surrogate(p, TOP)

    def surrogate(self, p, top):
        """The loss with the production's clamp of log s at ``top`` (sp.oo: unclamped, for the facts)."""
        low, high = self.bounds(p)
        mean = sum(sym(lp) - sym(old) for lp, old in zip(LP, OLD)) / LENGTH  # log s
        return ppo_token(mean, 0, sym("advantages"), low, high, top)

    def facts(self, d):
        low, high = self.bounds(d.p)
        adv = sym("advantages")
        grad0 = once(lambda: sp.diff(self.surrogate(d.p, sp.oo), sym("log_probs_0")))
        one_token = {sym(n): 0 for n in VARS if n not in ("log_probs_0", "advantages")}
        one_token[sym("log_probs_0")] = sp.log(R)

        def zeros(sign):
            a = sign * sp.Symbol("A", positive=True)
            return zero_set(grad0(), {**one_token, adv: a}, {**one_token, adv: a}, R)

        s = sp.Symbol("s", positive=True)
        logs = {sym(lp): sp.log(r) for lp, r in zip(LP, TOKEN_RATIOS)}
        logs.update({sym(o): 0 for o in OLD})
        inside = once(lambda: sp.piecewise_fold(self.surrogate(d.p, sp.oo)).args[-1][0])  # the unclipped branch: -A·s
        ratio = lambda: sp.powsimp(sp.expand_log((inside() / -adv).subs(logs), force=True), force=True)
        return [
            Fact("sequence_ratio", "s in the token ratios r_t = π_t/π_old,t: the geometric mean (r_0 r_1 r_2)^(1/3)",
                 lambda: sp.simplify(sp.powsimp(sp.exp(sp.expand_log(sp.log(ratio()), force=True)), force=True))),
            Fact("token_gradient_inside", "∂ℓ/∂log π_t inside the clip, the same for every token t: -A·s/3",
                 lambda: sp.simplify(sp.diff(inside(), sym("log_probs_0")).subs(inside() / -adv, s))),
            Fact("zero_gradient_one_token_ratios_A_positive", "A > 0, one token moved (the others at r = 1): the ratios r of that "
                 "token where every gradient is zero, r > (1+ε_h)³", lambda: zeros(1)),
            Fact("zero_gradient_one_token_ratios_A_negative", "A < 0: the ratios r < (1-ε_l)³", lambda: zeros(-1)),
            Fact("one_token_clip_high", "where the clip binds for one token moved alone, A > 0: (1+ε_h)³", lambda: (1 + high) ** LENGTH),
            Fact("one_token_clip_low", "... and for A < 0: (1-ε_l)³", lambda: (1 - low) ** LENGTH),
        ]

    def sample(self, rng, p):
        low, high = self.bounds(p)
        kinks = clip_kinks(low, high) + [FLOAT64_LOG_RATIO_MAX]
        ok = lambda v: away([sum(v[lp] - v[o] for lp, o in zip(LP, OLD)) / LENGTH], kinks) and abs(v["advantages"]) > 0.05
        return draw_point(rng, VARS, ok)
