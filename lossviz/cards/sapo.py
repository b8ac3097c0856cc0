r"""SAPO: a soft gate instead of PPO's clip, :math:`-f(r)A`, :math:`f(r) = \tfrac4\tau\sigma(\tau(r-1))` (Gao et al. 2025).

τ is ``tau_pos`` for A > 0 and ``tau_neg`` otherwise. At r = 1 the gate equals PPO's surrogate to
first order (:math:`f'(1) = 1`, so the gradient there is PPO's :math:`-A`); away from r = 1 the
gradient :math:`-A\,r f'(r) = -4A\,r\,\sigma(\tau(r-1))\sigma(-\tau(r-1))` fades smoothly instead of
dropping to zero at a clip edge.
"""

from __future__ import annotations

import sympy as sp

from ._common import sym, tensor
from ._rl import FLOAT64_LOG_RATIO_MAX, TOP, draw_point
from .base import Card, Example, Fact, Param
from .controls import Guide, Hold, Window
from .figure import Axis, Curve, LessonFigure, Mark, Panel, Shot
from .gpg import token_mean_batches
from .grpo import _dashed
from .ppo import POLICY_VARS
from ..symbolic import Sigmoid, elementary

R = sp.Symbol("r", positive=True)


def gate(r, tau):
    """f(r) = (4/τ) σ(τ(r - 1))."""
    return 4 / tau * Sigmoid(tau * (r - 1))


def _half_point(tau):
    """Where f'(r) = f'(1)/2 for r > 1: sympy solves it in u = τ(r - 1)."""
    u, r = sp.Symbol("u", positive=True), sp.Symbol("r", positive=True)
    slope = sp.diff(gate(r, tau), r)
    equation = sp.simplify(elementary(slope.subs(r, 1 + u / tau)) - elementary(slope.subs(r, 1)) / 2)
    (root,) = sp.solve(equation, u)
    return 1 + root / tau


def _tangent(c):
    """PPO's surrogate -rA shifted to touch the SAPO loss at r = 1 (same value and slope there)."""
    a = c.cut["advantages"]
    tau = c.p["tau_pos"] if float(a) > 0 else c.p["tau_neg"]
    return -a * (2 / tau + c.x - 1)


class SAPO(Card):
    name = "sapo"
    aliases = ("sapo-loss",)
    family = "grpo"
    order = 6  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "SAPO: soft-gated policy loss"
    lesson = ("-(4/τ)σ(τ(r-1))·A: equal to PPO's slope at r = 1 (f'(1) = 1), and a gradient that fades smoothly away from r = 1 "
              "instead of stopping at a clip edge; τ_neg > τ_pos makes it fade faster for negative advantages")
    production = "lossviz.losses:PolicyLoss"
    params = (
        Param("tau_pos", 1.0, "gate temperature τ for A > 0", r"\tau_{+}", low=0.0, high=100.0, low_open=True),
        Param("tau_neg", 1.05, "gate temperature τ for A ≤ 0", r"\tau_{-}", low=0.0, high=100.0, low_open=True),
    )
    variable_latex = {"log_probs": r"\log\pi", "old_log_probs": r"\log\pi_{\mathrm{old}}", "advantages": "A"}
    constants = ("old_log_probs", "advantages")
    references = ("sapo", "ppo")
    controls = (Hold("advantages", "A", -2.0, 2.0, "the advantage A (its sign picks τ)"),
                Window("tau_pos", 0.1, 10.0, 0.05), Window("tau_neg", 0.1, 10.0, 0.05),
                # where ∂ℓ/∂r has halved, for each sign of A: the explorer shows both whatever the sign of A on its axis
                Guide("A > 0: half slope", lambda v: _half_point(v["tau_pos"])),
                Guide("A < 0: half slope", lambda v: _half_point(v["tau_neg"])))
    axis = Axis("r", {"log_probs": "log(r)", "old_log_probs": 0, "advantages": 1}, (0.01, 5.0), r"ratio $r = \pi/\pi_{old}$", positive=True)
    figure = LessonFigure(
        panels=(Panel("loss", "loss", tag="A_positive", title="A > 0 (A = +1, τ = τ₊)", style=_dashed),
                Panel("loss", "loss", tag="A_negative", title="A < 0 (A = -1, τ = τ₋)", cut={"advantages": -1}, style=_dashed),
                Panel("grad", r"$\partial\ell/\partial r$", tag="A_positive", style=_dashed),
                Panel("grad", r"$\partial\ell/\partial r$", tag="A_negative", cut={"advantages": -1}, style=_dashed)),
        marks=(Mark("half_gradient_ratio_A_positive", kind="edge", label="A > 0: half slope at r = {x:.3g}", once=True, on="A_positive"),
               Mark("half_gradient_ratio_A_negative", kind="edge", label="A < 0: half slope at r = {x:.3g}", once=True, on="A_negative")),
        rows=2, size=(3.6, 2.4), label=r"$-\frac{4}{\tau}\sigma(\tau(r-1))A$",
        title="PPO's slope at r\u00a0=\u00a01 (f'(1)\u00a0=\u00a01), then a smooth fade: ∂ℓ/∂r is half as large at "
              "r\u00a0=\u00a01\u00a0+\u00a0log(3+2√2)/τ; no clip edge", sweep_note="",
        curves=(Curve(_tangent, "tangent_{tag}", r"$-rA$ + const, tangent at $r = 1$", panels=("loss", "grad"),
                      style={"color": "0.55", "linestyle": ":"}),))
    gallery = (Shot("sapo", "SAPO: -(4/τ)σ(τ(r-1))A touches PPO's -rA at r = 1 (same slope) and its gradient fades smoothly; "
                    "no clip edge"),
               Shot("sapo_tau", "SAPO for τ₊ = 1, 2, 3: a larger τ fades faster", sweep=("tau_pos", (1.0, 2.0, 3.0))))

    def variables(self, p):
        return POLICY_VARS

    def loss(self, p):
        lp, old, adv = (sym(n) for n in POLICY_VARS)
        x = lp - old
        by_sign = lambda r: sp.Piecewise((-gate(r, p["tau_pos"]) * adv, adv > 0), (-gate(r, p["tau_neg"]) * adv, True))
        return sp.Piecewise((by_sign(sp.exp(TOP)), x > TOP), (by_sign(sp.exp(x)), True))

    def production_kwargs(self, p):
        return {"policy_loss_type": "sapo", "tau_pos": float(p["tau_pos"]), "tau_neg": float(p["tau_neg"]), "loss_agg_mode": "token-mean"}

    def facts(self, d):
        facts = []
        for label, tau in (("A_positive", d.p["tau_pos"]), ("A_negative", d.p["tau_neg"])):
            a = sp.Symbol("A", positive=True) * (1 if label == "A_positive" else -1)
            cut = {sym("log_probs"): sp.log(R), sym("old_log_probs"): 0, sym("advantages"): a}
            f = lambda cut=cut, a=a: sp.piecewise_fold(d.loss.subs(cut)).args[-1][0] / (-a)  # the unclamped branch: f(r)
            facts += [
                Fact(f"gate_at_one_{label}", f"f(1) for A {'>' if label == 'A_positive' else '<'} 0: 2/τ",
                     lambda f=f: sp.simplify(f().subs(R, 1))),
                Fact(f"gate_slope_at_one_{label}", "f'(1) = 1: at r = 1 the gradient is PPO's", lambda f=f: sp.simplify(sp.diff(f(), R).subs(R, 1))),
            ]
        for label, tau in (("A_positive", d.p["tau_pos"]), ("A_negative", d.p["tau_neg"])):
            facts.append(Fact(f"half_gradient_ratio_{label}", f"A {'>' if label == 'A_positive' else '<'} 0: the ratio r > 1 where ∂ℓ/∂r "
                              "falls to half its value at r = 1: 1 + log(3 + 2√2)/τ", lambda tau=tau: _half_point(tau)))
        lp = sym("log_probs")
        facts.append(Fact("gradient_at_one", "∂ℓ/∂log π at r = 1: -A, as PPO's",
                          lambda: sp.simplify(sp.piecewise_fold(sp.diff(d.loss, lp).subs({lp: 0, sym("old_log_probs"): 0})))))
        return facts

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import PolicyLoss

        args = [tensor([[values[n]]], dtype, device) for n in POLICY_VARS]
        return Example(PolicyLoss(**self.production_kwargs(p)), args, {n: (i, (0, 0)) for i, n in enumerate(POLICY_VARS)})

    def sample(self, rng, p):
        return draw_point(rng, POLICY_VARS, lambda v: abs(v["advantages"]) > 0.05 and v["log_probs"] - v["old_log_probs"] < FLOAT64_LOG_RATIO_MAX)

    def batches(self, rng, p):
        return token_mean_batches(self, rng, p, lambda: self.production_kwargs(p))
