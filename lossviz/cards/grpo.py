r"""GRPO: the PPO token loss of a group of answers, under each aggregation mode (``loss_agg_mode``).

The card's example is the smallest batch where aggregation matters: two answers, a 1-token one
(sequence 0) and a 2-token one (sequence 1), padded to T = 2, one advantage per answer. The
per-token loss is PPO's clipped surrogate (GRPO, Shao et al. 2024, §4.1.1); the modes weight the
tokens differently (see :mod:`lossviz.cards._rl`), so a token of the short answer is pushed
twice as hard as a token of the long one under ``seq-mean-token-mean`` (GRPO's 1/|o_i|), and
equally under the other three.
"""

from __future__ import annotations

import sympy as sp

from ._common import once, sym, tensor
from ._rl import FLOAT64_LOG_RATIO_MAX, MODES, agg_weights, away, clip_kinks, draw_point, ppo_token
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .controls import Hold, Window
from .figure import Axis, LessonFigure, Mark, Panel, Shot

TOKENS = ((0, 0), (1, 0), (1, 1))  # (sequence, position) of the unmasked tokens
LENGTHS = (1, 2)
PADDED = 2
LP = tuple(f"log_probs_{b}_{t}" for b, t in TOKENS)
OLD = tuple(f"old_log_probs_{b}_{t}" for b, t in TOKENS)
ADV = ("advantages_0", "advantages_1")
VARS = LP + OLD + ADV
R = sp.Symbol("r", positive=True)
WORKED = (10, 100)  # the reference's worked example: a correct answer of 10 tokens, a wrong one of 100


def _latex():
    out = {}
    for (b, t), lp, old in zip(TOKENS, LP, OLD):
        out[lp] = rf"\log\pi_{{{b}{t}}}"
        out[old] = rf"\log\pi^{{\mathrm{{old}}}}_{{{b}{t}}}"
    out.update({"advantages_0": "A_0", "advantages_1": "A_1"})
    return out


def _mode(c) -> str:
    return c.p.get("loss_agg_mode", "seq-mean-token-sum-norm")


def _title(c):
    scale = c.p.get("loss_scale_factor")
    shown = (MODES if "loss_agg_mode" in c.p else ("seq-mean-token-sum-norm",))
    parts = []
    for mode in shown:
        w = agg_weights(mode, LENGTHS, PADDED, scale)
        parts.append(f"{sp.nsimplify(w[0])}, {sp.nsimplify(w[1])} ({mode})")
    return "inside the clip ∂L/∂r = -A·w; w for a token of the 1-token, 2-token answer: " + "; ".join(parts)


_DASHES = ("-", "--", "-.", ":")


def _dashed(i: int) -> dict:
    """A line style per swept mode: modes whose weights coincide stay visible on top of each other."""
    return {"linestyle": _DASHES[i % len(_DASHES)]}


def lesson_figure(tag: str) -> LessonFigure:
    """The batch loss and ∂L/∂r as one token moves: the 1-token answer's (A = +1) and a token of the 2-token answer (A = -1)."""
    long_cut = {"log_probs_0_0": 0, "log_probs_1_0": sp.log(R)}
    return LessonFigure(
        panels=(Panel("loss", "batch loss $L$", tag="short", title="token of the 1-token answer, A = +1", style=_dashed),
                Panel("loss", "batch loss $L$", tag="long", title="token of the 2-token answer, A = -1", cut=long_cut, style=_dashed),
                Panel("grad", r"$\partial L/\partial r$", tag="short", style=_dashed),
                Panel("grad", r"$\partial L/\partial r$", tag="long", cut=long_cut, style=_dashed)),
        rows=2, size=(3.6, 2.4), title=_title, tag=tag, label=_mode, sweep_note="",
        marks=(Mark("clip_low", kind="edge", at=lambda c: 1 - c.p["clip_eps"], once=True, label=r"$1-\varepsilon$"),
               Mark("clip_high", kind="edge", at=lambda c: 1 + c.p["clip_eps"], once=True, label=r"$1+\varepsilon$")))


class GRPO(Card):
    name = "grpo"
    aliases = ("grpo-loss",)
    family = "grpo"
    order = 1  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "GRPO: PPO token loss of a group, aggregated"
    lesson = ("the per-token PPO loss summed with the weights of loss_agg_mode: under seq-mean-token-mean (GRPO's 1/|o_i|) a token "
              "of a short answer weighs more than a token of a long one; token-mean and Dr. GRPO's constant weigh every token alike")
    production = "lossviz.losses:PolicyLoss"
    params = (
        Param("clip_eps", 0.2, "trust-region half-width ε", r"\varepsilon", low=0.0, high=1.0, low_open=True, high_open=True),
        Param("loss_agg_mode", "seq-mean-token-mean", "how token losses are reduced (verl's names)", choices=MODES),
    )
    variable_latex = _latex()
    constants = OLD + ADV
    references = ("grpo", "drgrpo", "dapo", "verl")
    cases_doc = "loss_agg_mode picks the weights of the tokens of a 1-token and a 2-token answer in one batch"
    controls = (Hold("advantages_0", "A_short", -2.0, 2.0, "advantage of the 1-token answer"),
                Hold("advantages_1", "A_long", -2.0, 2.0, "advantage of the 2-token answer"),
                Window("clip_eps", 0.01, 0.9, 0.01))
    axis = Axis("r", {**{n: 0 for n in VARS}, "log_probs_0_0": "log(r)", "advantages_0": 1, "advantages_1": -1}, (0.4, 1.6),
                "ratio $r$ of the moved token (others at $r = 1$)", positive=True)
    figure = None  # set below the class: shared with dr-grpo
    gallery = (Shot("grpo", "GRPO's aggregation modes: the slope a token gets is -A·w·r inside the clip; w is 1/(B·L_i) under "
                    "seq-mean-token-mean, so the 1-token answer's token is pushed twice as hard as a token of the 2-token answer",
                    sweep=("loss_agg_mode", MODES)),)

    # --- the mode and its weights ---------------------------------------------------------
    def mode(self, p) -> str:
        return p["loss_agg_mode"]

    def scale(self, p):
        return None

    def weights(self, p) -> list:
        """The weight of each token of the example (tokens in TOKENS order)."""
        per_seq = agg_weights(self.mode(p), LENGTHS, PADDED, self.scale(p))
        return [per_seq[b] for b, _ in TOKENS]

    def bounds(self, p):
        return p["clip_eps"], p["clip_eps"]

    def variables(self, p):
        return VARS

    def loss(self, p):
        low, high = self.bounds(p)
        return sum(w * ppo_token(sym(lp), sym(old), sym(f"advantages_{b}"), low, high)
                   for w, (b, _), lp, old in zip(self.weights(p), TOKENS, LP, OLD))

    def production_kwargs(self, p):
        kw = {"clip_eps": float(p["clip_eps"]), "loss_agg_mode": self.mode(p)}
        if self.scale(p) is not None:
            kw["loss_scale_factor"] = float(self.scale(p))
        return kw

    # --- facts ----------------------------------------------------------------------------
    def facts(self, d):
        a = sp.Symbol("A", positive=True)
        at_one = {sym(n): 0 for n in LP + OLD}

        def weight(lp, adv):
            g = sp.diff(d.loss, sym(lp)).subs(at_one).subs(sym(adv), a)
            return sp.simplify(-g / a)  # ∂L/∂log π = -A·w at r = 1

        short = once(lambda: weight("log_probs_0_0", "advantages_0"))
        long_ = once(lambda: weight("log_probs_1_0", "advantages_1"))
        worked = once(lambda: agg_weights(self.mode(d.p), WORKED, WORKED[1], self.scale(d.p)))
        return [
            Fact("weight_short", "the weight w of the 1-token answer's token: ∂L/∂log π = -A·w at r = 1", short),
            Fact("weight_long", "the weight w of a token of the 2-token answer", long_),
            Fact("weight_ratio", "short : long, per token (2 under seq-mean-token-mean, 1 under the others)",
                 lambda: sp.simplify(short() / long_())),
            Fact("worked_example_weight_correct", "the reference's worked example (one group: a correct answer of 10 tokens, "
                 "a wrong one of 100, L_max = 100): the weight of a token of the correct answer", lambda: worked()[0]),
            Fact("worked_example_weight_wrong", "... and of a token of the wrong answer", lambda: worked()[1]),
            Fact("worked_example_ratio", "correct : wrong per token (10 under seq-mean-token-mean, 1 under the others)",
                 lambda: sp.simplify(worked()[0] / worked()[1])),
        ]

    # --- production -------------------------------------------------------------------------
    def _arrays(self, values):
        lp = [[0.0] * PADDED for _ in LENGTHS]
        old = [[0.0] * PADDED for _ in LENGTHS]
        mask = [[0.0] * PADDED for _ in LENGTHS]
        for (b, t), n_lp, n_old in zip(TOKENS, LP, OLD):
            lp[b][t], old[b][t], mask[b][t] = values[n_lp], values[n_old], 1.0
        adv = [[values["advantages_0"]], [values["advantages_1"]]]
        return lp, old, adv, mask

    def where(self, row0=0):
        out = {n: (0, (b + row0, t)) for n, (b, t) in zip(LP, TOKENS)}
        out.update({n: (1, (b + row0, t)) for n, (b, t) in zip(OLD, TOKENS)})
        out.update({f"advantages_{b}": (2, (b + row0, 0)) for b in range(len(LENGTHS))})
        return out

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import PolicyLoss

        args = [tensor(a, dtype, device) for a in self._arrays(values)]
        return Example(PolicyLoss(**self.production_kwargs(p)), args, self.where())

    def sample(self, rng, p):
        low, high = self.bounds(p)
        kinks = clip_kinks(low, high)
        ok = lambda v: away([v[lp] - v[old] for lp, old in zip(LP, OLD)], kinks) and min(abs(v[a]) for a in ADV) > 0.05
        return draw_point(rng, VARS, ok)

    def batches(self, rng, p):
        """For each aggregation mode: k groups stacked (padded to T = 3) with a fully masked sequence appended (not
        counted in B), and one group alone; each term carries the group's weight in the batch over its weight in
        the card's example (the ratio is the same for every token of the group)."""
        import numpy as np

        from lossviz.losses import PolicyLoss

        cased = any(prm.name == "loss_agg_mode" for prm in self.params)
        specs = []
        for mode in (MODES if cased else (self.mode(p),)):
            q = {**p, "loss_agg_mode": mode} if cased else p
            case = {"loss_agg_mode": mode} if cased else {}
            internal = agg_weights(mode, LENGTHS, PADDED, self.scale(q))[0]
            for groups, padded, empty in ((3, 3, True), (1, PADDED, False)):
                rows = groups * len(LENGTHS) + (1 if empty else 0)
                lp, old, mask = (np.zeros((rows, padded)) for _ in range(3))
                adv = np.zeros((rows, 1))
                if empty:
                    lp[-1], old[-1], adv[-1] = rng.normal(size=padded), rng.normal(size=padded), rng.normal()
                terms = []
                lengths = [n for _ in range(groups) for n in LENGTHS] + ([0] if empty else [])
                batch = agg_weights(mode, lengths, padded, self.scale(q))[0]
                for g in range(groups):
                    point = self.sample(rng, q)
                    a_lp, a_old, a_adv, a_mask = (np.array(x) for x in self._arrays(point))
                    r0 = g * len(LENGTHS)
                    lp[r0:r0 + 2, :PADDED], old[r0:r0 + 2, :PADDED], adv[r0:r0 + 2], mask[r0:r0 + 2, :PADDED] = a_lp, a_old, a_adv, a_mask
                    terms.append(Term(self.where(r0), float(batch / internal), case=dict(case)))
                label = f"{mode}: {groups} group(s) of a 1- and a 2-token answer, T = {padded}" + (", a fully masked sequence" if empty else "")
                specs.append(BatchSpec(label, lambda device, q=q: PolicyLoss(**self.production_kwargs(q)),
                                       [lp, old, adv, mask], ["log_probs", "old_log_probs", "advantages", "action_mask"], [0, 1, 2], terms))
        return specs


GRPO.figure = lesson_figure("{loss_agg_mode}")
