r"""Group advantages: GRPO's std-normalised advantage, Dr. GRPO's centred reward, RLOO's leave-one-out baseline.

The card's example is one group of G = 4 responses with rewards R_0..R_3; its "loss" is the
advantage A_0 of response 0, as ``group_advantages`` returns it:

- ``grpo`` (GRPO §4.1.2): :math:`(R_0 - \bar R)/(s + \varepsilon)`, s the sample std (divisor G - 1);
- ``dr_grpo`` (Dr. GRPO §3.1): :math:`R_0 - \bar R`;
- ``rloo`` (Ahmadian et al. 2024): :math:`R_0 - \frac{1}{G-1}\sum_{j\ne 0}R_j`, which sympy
  shows is :math:`\frac{G}{G-1}(R_0 - \bar R)`.

A group whose rewards are all equal gets advantage 0 under every method.
"""

from __future__ import annotations

import sympy as sp

from ._common import sym, tensor
from ._rl import draw_point
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term
from .controls import Hold, Window
from .figure import Axis, LessonFigure, Panel, Shot
from .grpo import _dashed

GROUP = 4
VARS = tuple(f"rewards_{i}" for i in range(GROUP))
METHODS = ("grpo", "dr_grpo", "rloo")
ONE_CORRECT = (1, 0, 0, 0)  # one correct answer in four: A_0 of the correct one


def advantage(method: str, rewards, eps):
    """A_0 of the group ``rewards`` (sympy), written from each paper."""
    g = len(rewards)
    mean = sum(rewards) / g
    if method == "dr_grpo":
        return rewards[0] - mean
    if method == "rloo":
        return rewards[0] - sum(rewards[1:]) / (g - 1)
    var = sum((r - mean) ** 2 for r in rewards) / (g - 1)
    # all rewards equal: 0 (the centred reward is 0; the branch keeps the gradient of the std finite there)
    return sp.Piecewise((0, var <= 0), ((rewards[0] - mean) / (sp.sqrt(var) + eps), True))


class _FirstOfEachGroup:
    """group_advantages(...)[:, 0] summed over the groups: A_0 of each group (a scalar to differentiate)."""

    def __init__(self, method, eps):
        self.method, self.eps = method, eps

    def __call__(self, rewards):
        from lossviz.losses import group_advantages

        return group_advantages(rewards, GROUP, method=self.method, eps=self.eps)[:, 0].sum()


class GroupAdvantages(Card):
    name = "group-advantages"
    aliases = ("group_advantages", "advantages")
    family = "grpo"
    order = 9  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "Group advantages: GRPO, Dr. GRPO, RLOO"
    lesson = ("GRPO divides the centred reward by the group's std (a group whose rewards barely differ gets large advantages); "
              "Dr. GRPO keeps R - mean; RLOO subtracts the mean of the others, G/(G-1)·(R - mean)")
    production = "lossviz.losses:group_advantages"
    params = (Param("method", "grpo", "the advantage estimator", choices=METHODS),
              Param("eps", 1e-6, "ε added to the std (grpo; verl 1e-6, OpenRLHF 1e-9)", r"\varepsilon", low=0.0, high=1.0, low_open=True))
    variable_latex = {v: f"R_{i}" for i, v in enumerate(VARS)}
    constants = VARS  # rewards come from a reward function: no gradient reaches them in training
    controls = (Hold("rewards_2", "R_2", -1.0, 3.0, "reward of response 2 (the spread of the group)"),
                Hold(("rewards_1", "rewards_3"), "R_13", -1.0, 2.0, "reward of responses 1 and 3"),
                Window("eps", 1e-6, 0.5, 0.01))
    references = ("grpo", "drgrpo", "rloo")
    cases_doc = "method picks the estimator"
    axis = Axis("x", {"rewards_0": "x", "rewards_1": 0, "rewards_2": 1, "rewards_3": 0}, (-1.0, 2.0),
                "reward $R_0$ of response 0 (the others 0, 1, 0)")
    figure = LessonFigure(
        panels=(Panel("loss", "advantage $A_0$", style=_dashed), Panel("grad", r"$\partial A_0/\partial R_0$", style=_dashed)),
        title="A_0 as R_0 moves: RLOO is G/(G-1) = 4/3 times Dr. GRPO's R_0 - mean; GRPO divides it by the group's std", tag="{method}", label=lambda c: c.p["method"], sweep_note="")
    gallery = (Shot("group-advantages", "group advantages: GRPO's std makes A_0 bounded and steepest where the rewards are close; "
                    "Dr. GRPO is R_0 - mean; RLOO is G/(G-1) = 4/3 times it", sweep=("method", METHODS)),)

    def variables(self, p):
        return VARS

    def loss(self, p):
        return advantage(p["method"], [sym(v) for v in VARS], p["eps"])

    def production_kwargs(self, p):
        return {"group_size": GROUP, "method": p["method"], "eps": float(p["eps"])}

    def facts(self, d):
        rewards = [sym(v) for v in VARS]
        eps = d.p["eps"]
        a = lambda m, rs=rewards: advantage(m, rs, eps)
        unbranched = lambda m: a(m).args[1][0] if m == "grpo" else a(m)
        mean = sum(rewards) / GROUP
        std = sp.sqrt(sum((r - mean) ** 2 for r in rewards) / (GROUP - 1))

        def swapped(i):
            rs = list(rewards)
            rs[0], rs[i] = rs[i], rs[0]
            return rs

        return [
            Fact("rloo_over_dr_grpo", "RLOO's advantage over Dr. GRPO's: G/(G-1) = 4/3 (sympy simplifies the leave-one-out form)",
                 lambda: sp.simplify(a("rloo") / a("dr_grpo"))),
            Fact("grpo_over_dr_grpo", "GRPO's advantage over Dr. GRPO's: 1/(s + ε), s the sample std of the group",
                 lambda: sp.simplify(unbranched("grpo") / a("dr_grpo"))),
            Fact("sum_of_advantages", f"Σ_i A_i over the group under {d.params['method']}: 0 (the baseline is the group's)",
                 lambda: sp.simplify(sum((advantage(d.params["method"], swapped(i), eps).args[1][0] if d.params["method"] == "grpo"
                                          else advantage(d.params["method"], swapped(i), eps)) for i in range(GROUP)))),
            Fact("one_correct_advantage", "A of the correct answer when one of four is correct (rewards 1, 0, 0, 0)",
                 lambda: sp.nsimplify(a(d.params["method"], [sp.Integer(v) for v in ONE_CORRECT]))),
            Fact("std_of_one_correct", "s of the rewards 1, 0, 0, 0 (sample std)", lambda: sp.simplify(std.subs(dict(zip(rewards, ONE_CORRECT))))),
        ]

    def example(self, values, p, dtype=None, device=None):
        args = [tensor([[values[v] for v in VARS]], dtype, device)]
        return Example(_FirstOfEachGroup(p["method"], float(p["eps"])), args, {v: (0, (0, i)) for i, v in enumerate(VARS)})

    def sample(self, rng, p):
        return draw_point(rng, VARS, lambda v: max(v.values()) - min(v.values()) > 0.1)

    def batches(self, rng, p):
        """For each method, three groups of four rewards, A_0 of each group summed (weight 1 each)."""
        import numpy as np

        specs = []
        for method in METHODS:
            points = [self.sample(rng, p) for _ in range(3)]
            rewards = np.array([[pt[v] for v in VARS] for pt in points])
            terms = [Term({v: (0, (g, i)) for i, v in enumerate(VARS)}, 1.0, case={"method": method}) for g in range(3)]
            specs.append(BatchSpec(f"{method}: three groups of four, A_0 of each",
                                   lambda device, method=method: _FirstOfEachGroup(method, float(p["eps"])),
                                   [rewards], ["rewards"], [0], terms))
        return specs
