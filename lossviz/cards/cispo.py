r"""CISPO: the policy gradient weighted by a detached, clipped ratio (MiniMax-M1, Chen et al. 2025, §3.1).

Per token :math:`\ell = -\operatorname{sg}(\hat r)\,A\log\pi`, :math:`\hat r = \operatorname{clip}(r, 1-\varepsilon_l, 1+\varepsilon_h)`
(verl's form; without ``clip_eps_low`` there is no lower bound, the paper's setting). The weight is
detached, so the gradient is :math:`\partial\ell/\partial\log\pi = -\hat r A`: the clip bounds the
*size* of the step but never zeroes it, unlike PPO, whose clipped branch is constant in log π.

The stop-gradient is written into the card with a second variable, ``log_probs_detached``: the
log-probability the weight reads, equal to ``log_probs`` at every point the production sees, and
detached (its gradient is 0 by construction); ``old_log_probs`` enters only through the weight and
is detached too. So ∂ℓ/∂log π is the production's gradient, and the card's loss equals the
production's value.
"""

from __future__ import annotations

import math

import sympy as sp

from ._common import once, sym, tensor
from ._rl import draw_point, zero_set
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term, mask_rows
from .controls import Hold, Window
from .figure import Axis, CustomFigure, Mark, Shot
from .ppo import POLICY_VARS

VARS = POLICY_VARS + ("log_probs_detached",)
PPO_EPS = 0.2  # the PPO the figure compares with
R = sp.Symbol("r", positive=True)


def weight(x, low, high):
    """clip(e^x, 1 - ε_l, 1 + ε_h); ``low`` None: no lower bound."""
    branches = [(1 + high, x > sp.log(1 + high))]
    if low is not None:
        branches.append((1 - low, x < sp.log(1 - low)))
    return sp.Piecewise(*branches, (sp.exp(x), True))


class CISPO(Card):
    name = "cispo"
    aliases = ("cispo-loss",)
    family = "grpo"
    order = 5  # teaching order in the grpo family: grpo, dr-grpo, dapo, gspo, cispo, sapo, gmpo, gpg, group-advantages
    title = "CISPO: detached clipped weight"
    lesson = ("-sg(clip(r, 1-ε_l, 1+ε_h))·A·log π: the clipped ratio only weighs the gradient -r̂A, which never vanishes; "
              "PPO's clip instead zeroes the gradient once r leaves the trust region")
    production = "lossviz.losses:PolicyLoss"
    params = (
        Param("clip_eps_high", 4.0, "upper bound of the weight, r̂ ≤ 1 + ε_h (ScaleRL: TRL epsilon_high = 5.0, the cap r̂ ≤ 5)",
              r"\varepsilon_h", low=0.0, high=100.0, low_open=True),
        Param("clip_eps_low", None, "lower bound r̂ ≥ 1 - ε_l (default: none, as the paper)", r"\varepsilon_l",
              low=0.0, high=1.0, low_open=True, high_open=True, optional=True),
    )
    variable_latex = {"log_probs": r"\log\pi", "old_log_probs": r"\log\pi_{\mathrm{old}}", "advantages": "A",
                      "log_probs_detached": r"\mathrm{sg}(\log\pi)"}
    detached = ("old_log_probs", "log_probs_detached")  # read only inside the detached weight
    constants = ("advantages",)
    references = ("cispo", "ppo", "verl", "trl")
    controls = (Hold("advantages", "A", -2.0, 2.0, "the advantage A"),
                Hold("log_probs_detached", "x_w", -3.0, 3.0, "log-ratio the detached weight reads (r = e^x_w); the slope is -r̂A"),
                Window("clip_eps_high", 0.05, 6.0, 0.05), Window("clip_eps_low", 0.05, 0.95, 0.05, on=0.2))
    # the explorer's axis: log π moves with the weight held at its value (what autograd differentiates); the slope of the
    # line is the gradient -r̂A, and moving the held log-ratio x_w shows that it never reaches 0
    # the weight starts at r = e² ≈ 7.4, above the default cap 5, so ε_h moves the slope
    axis = Axis("x", {"log_probs": "x", "old_log_probs": 0, "advantages": 1, "log_probs_detached": 2}, (-3.0, 0.0),
                r"$\log\pi$ (the detached weight held at $r = e^2$)")
    figure = CustomFigure("lossviz.cards.cispo:draw")  # ∂ℓ/∂log π against r beside PPO: not a curve along the explorer's axis
    gallery = (Shot("cispo", "CISPO: the gradient -sg(clip(r))·A never vanishes (it is -(1+ε_h)A above the cap); PPO's (ε = 0.2) "
                    "is zero outside its trust region in the direction A favours"),)

    def variables(self, p):
        return VARS

    def bounds(self, p):
        return p["clip_eps_low"], p["clip_eps_high"]

    def loss(self, p):
        low, high = self.bounds(p)
        lp, old, adv, lp_w = (sym(n) for n in VARS)
        return -weight(lp_w - old, low, high) * adv * lp

    def production_kwargs(self, p):
        low, high = self.bounds(p)
        kw = {"policy_loss_type": "cispo", "clip_eps_high": float(high), "loss_agg_mode": "token-mean"}
        if low is not None:
            kw["clip_eps_low"] = float(low)
        return kw

    def gradient_on_ratio(self, p):
        """∂ℓ/∂log π at log π = sg(log π) = log r, log π_old = 0: -r̂(r)·A."""
        lp, old, adv, lp_w = (sym(n) for n in VARS)
        return sp.diff(self.loss(p), lp).subs({lp_w: sp.log(R), old: 0, lp: sp.log(R)})

    def facts(self, d):
        low, high = self.bounds(d.p)
        adv = sym("advantages")
        grad = once(lambda: self.gradient_on_ratio(d.p))

        def zeros(sign):
            a = sign * sp.Symbol("A", positive=True)
            return zero_set(grad(), {adv: a}, {adv: a}, R)

        return [
            Fact("gradient", "∂ℓ/∂log π as a function of the ratio r: -clip(r)·A", lambda: sp.piecewise_fold(grad())),
            Fact("zero_gradient_ratios_A_positive", "the ratios where ∂ℓ/∂log π = 0 for A > 0: none", lambda: zeros(1)),
            Fact("zero_gradient_ratios_A_negative", "... and for A < 0: none", lambda: zeros(-1)),
            Fact("weight_cap", "the largest weight r̂ = 1 + ε_h", lambda: 1 + high),
            Fact("gradient_above_cap", "∂ℓ/∂log π for r > 1 + ε_h: -(1+ε_h)·A (PPO's is 0 there for A > 0)",
                 lambda: sp.piecewise_fold(grad()).subs(R, 2 * (1 + high))),
        ]

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import PolicyLoss

        args = [tensor([[values[n]]], dtype, device) for n in POLICY_VARS]
        return Example(PolicyLoss(**self.production_kwargs(p)), args, {n: (i, (0, 0)) for i, n in enumerate(POLICY_VARS)})

    def sample(self, rng, p):
        low, high = self.bounds(p)
        kinks = [math.log(1 + float(high))] + ([math.log(1 - float(low))] if low is not None else [])
        ok = lambda v: all(abs(v["log_probs"] - v["old_log_probs"] - k) > 0.02 for k in kinks) and abs(v["advantages"]) > 0.05
        point = draw_point(rng, POLICY_VARS, ok, scale=1.0)
        point["log_probs_detached"] = point["log_probs"]  # the production's weight reads the same log π
        return point

    def batches(self, rng, p):
        """Token-mean batches, one per branch of the weight (inside the bounds, above the cap, below the lower bound or,
        without one, at a small ratio). In each, every token shares one log π and one log π_old, so the inputs the
        weight reads are the batch means (``("mean", arg)``, as KTO's detached reference point): verification then
        knows that the production never differentiates through them, and runs finite differences and gradcheck on
        the advantages alone (the gradient in log π is by design not the derivative of the value). The advantages
        vary per token and a mask removes some tokens."""
        import numpy as np

        from lossviz.losses import PolicyLoss

        low, high = (None if v is None else float(v) for v in self.bounds(p))
        ratios = {"inside the bounds": float(np.exp(rng.uniform(math.log(1 - low if low is not None else 0.3) + 0.05, math.log(1 + high) - 0.05))),
                  "above the cap 1+ε_h": (1 + high) * float(np.exp(rng.uniform(0.05, 1.0)))}
        ratios["below 1-ε_l" if low is not None else "small ratio (no lower bound)"] = (
            (1 - low) * float(np.exp(-rng.uniform(0.05, 1.0))) if low is not None else float(np.exp(-rng.uniform(1.0, 4.0))))
        specs = []
        rows, steps = 3, 4
        for label, ratio in ratios.items():
            old_value = float(rng.normal() - 1.0)
            lp = np.full((rows, steps), old_value + math.log(ratio))
            old = np.full((rows, steps), old_value)
            adv = rng.normal(size=(rows, steps))
            mask = mask_rows(rng, rows, steps)
            kept = [(b, t) for b in range(rows) for t in range(steps) if mask[b, t]]
            terms = [Term({"log_probs": (0, (b, t)), "old_log_probs": ("mean", 1), "advantages": (2, (b, t)),
                           "log_probs_detached": ("mean", 0)}, 1 / len(kept)) for b, t in kept]
            specs.append(BatchSpec(f"token-mean, every token at r = {ratio:.3g} ({label})", lambda device: PolicyLoss(**self.production_kwargs(p)),
                                   [lp, old, adv, mask], list(POLICY_VARS) + ["action_mask"], [0, 1, 2], terms))
        return specs


def draw(req):
    """∂ℓ/∂log π against the ratio r, for A = +1 and A = -1: CISPO beside PPO at the same bounds."""
    import numpy as np

    from ..plots.core import COLORS, new_figure, shade, vline, zero_line
    from ..plots.lessons import _plot_curve, suptitle
    from ..symbolic import lower
    from .ppo import PPOPolicy

    lo, hi = req.x_range or (0.02, 7.0)
    xs = req.xs((lo, hi))
    fig, axes = new_figure(1, 2, 3.8, 2.8)
    card = req.card
    for col, sign in enumerate((1, -1)):
        ax = axes[0][col]
        zero_line(ax)
        for i, d in enumerate(req.derivations):
            low, high = card.bounds(d.params)
            g = lower(card.gradient_on_ratio(d.p).subs(sym("advantages"), sign), ["r"], "numpy")
            tag = req.label(i) or "cispo"
            _plot_curve(ax, xs, np.broadcast_to(g(xs), xs.shape), f"CISPO {req.label(i)}".strip() if col == 0 else None,
                        f"grad:{tag}:A{'+' if sign > 0 else '-'}", COLORS[i])
            if i == 0:  # PPO at its usual ε = 0.2 (the PolicyLoss default): zero gradient outside its trust region
                ppo = PPOPolicy()
                lp, old, adv = (sym(n) for n in POLICY_VARS)
                ppo_grad = sp.diff(ppo.surrogate(ppo.sympy_params(ppo.resolve({"clip_eps": PPO_EPS})), clamp=False), lp)
                pg = lower(ppo_grad.subs({lp: sp.log(R), old: 0, adv: sign}), ["r"], "numpy")
                _plot_curve(ax, xs, np.broadcast_to(pg(xs), xs.shape), f"PPO, ε = {PPO_EPS:g}" if col == 0 else None,
                            f"grad:ppo:A{'+' if sign > 0 else '-'}", "0.55", linestyle=":")
                zone = (1 + PPO_EPS, hi) if sign > 0 else (lo, 1 - PPO_EPS)
                shade(ax, *zone, "PPO: zero gradient" if col == 0 else "", f"zone:ppo_zero_A{'+' if sign > 0 else '-'}")
                vline(ax, 1 + float(high), f"cap 1+ε_h = {1 + float(high):g}", f"marker:weight_cap:{col}")
        ax.set_title(f"A = {'+1' if sign > 0 else '-1'}")
        ax.set_xlabel(r"ratio $r = \pi/\pi_{old}$")
        ax.set_ylabel(r"$\partial\ell/\partial\log\pi$")
        if col == 0:
            ax.legend()
    suptitle(fig, req.title("∂ℓ/∂log π = -clip(r)·A: capped at 1+ε_h, never zero for r > 0"))
    return fig
