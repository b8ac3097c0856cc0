r"""KTO's APO-zero variant (TRL ``loss_type="apo_zero_unpaired"``): each example pushed away from the reference, no reference point."""

from __future__ import annotations

import sympy as sp

from ..symbolic import Sigmoid, elementary
from ._common import once, solve_one, sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term, sample_rows
from .dpo import BETA, PAIR_LATEX
from .figure import Axis, LessonFigure, Mark, Panel, Shot

DELTA = sp.Symbol("Delta", real=True)
TEXT = {"desirable": r"desirable: $w_D(1 - \sigma(\beta\Delta))$", "undesirable": r"undesirable: $w_U\,\sigma(\beta\Delta)$"}


class KTOAPOZero(Card):
    name = "kto-apo-zero"
    family = "kto"
    production = "lossviz.losses:KTOLoss"
    references = ("apo", "kto")
    aliases = ("apo-zero-unpaired",)
    title = "KTO, APO-zero (unpaired)"
    lesson = ("desirable: 1 - σ(βΔ), undesirable: σ(βΔ): each example's log-ratio Δ pushed up or down around the reference "
              "model itself (Δ = 0), with no KL reference point; the push is bell-shaped, largest at Δ = 0")
    params = (
        BETA,
        Param("desirable_weight", 1.0, "weight w_D of desirable examples", r"w_D", low=0.0),
        Param("undesirable_weight", 1.0, "weight w_U of undesirable examples", r"w_U", low=0.0),
        Param("arm", "desirable", "which case: a desirable (chosen) or an undesirable (rejected) example", choices=("desirable", "undesirable")),
    )
    cases_doc = "arm=desirable|undesirable"
    variable_latex = PAIR_LATEX
    constants = ("reference_chosen_logps", "reference_rejected_logps")
    axis = Axis("Delta", lambda p: {("policy_chosen_logps" if p["arm"] == "desirable" else "policy_rejected_logps"): "Delta",
                                    ("reference_chosen_logps" if p["arm"] == "desirable" else "reference_rejected_logps"): 0},
                lambda p: (-9.5 / p["beta"], 9.5 / p["beta"]), r"log-ratio $\Delta = \pi - \pi_{ref}$")
    figure = LessonFigure(
        panels=(Panel("loss", "loss"), Panel("grad", r"gradient $\partial\ell/\partial\Delta$")),
        title="no reference point: each arm's push is bell-shaped around Δ = 0, the reference model itself",
        tag="{arm}", label=lambda c: TEXT[c.p["arm"]],
        marks=(Mark("gradient_peak", panel="grad", y="gradient_peak_value",
                    label=lambda c: f"peak ${'-w_D' if c.p['arm'] == 'desirable' else '+w_U'}\\beta/4$ at $\\Delta = 0$"),))
    gallery = (Shot("kto-apo-zero", "KTO's APO-zero variant: desirable examples pushed up, undesirable ones down, each around Δ = 0 "
                    "with a bell-shaped gradient and no KL reference point", sweep=("arm", ("desirable", "undesirable"))),)

    def _side(self, p):
        return ("policy_chosen_logps", "reference_chosen_logps") if p["arm"] == "desirable" else ("policy_rejected_logps", "reference_rejected_logps")

    def variables(self, p):
        return self._side(p)

    def loss(self, p):
        pol, ref = (sym(n) for n in self._side(p))
        u = p["beta"] * (pol - ref)
        if p["arm"] == "desirable":  # 1 - σ(βΔ) written as σ(-βΔ)
            return p["desirable_weight"] * Sigmoid(-u)
        return p["undesirable_weight"] * Sigmoid(u)

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "desirable_weight": float(p["desirable_weight"]), "undesirable_weight": float(p["undesirable_weight"]),
                "world_size": 1, "loss_type": "apo_zero_unpaired"}

    def _module(self, p, device=None):
        import torch

        from lossviz.losses import KTOLoss

        return KTOLoss(**self.production_kwargs(p), device=torch.device(device or "cpu"))

    def facts(self, d):
        pol, ref = (sym(n) for n in self._side(d.params))
        slope = once(lambda: sp.simplify(sp.diff(d.loss.subs(pol, DELTA + ref), DELTA)))
        peak = once(lambda: solve_one(elementary(sp.diff(slope(), DELTA)), DELTA))
        return [
            Fact("gradient_in_delta", "∂ℓ/∂Δ = ∓w β σ(βΔ) σ(-βΔ) (desirable: -, pushed up; undesirable: +, pushed down)", slope),
            Fact("gradient_peak", "where |∂ℓ/∂Δ| is largest: Δ = 0 (the reference model, not a KL estimate)", peak),
            Fact("gradient_peak_value", "∂ℓ/∂Δ at its peak: ∓w β / 4", lambda: sp.simplify(slope().subs(DELTA, peak()))),
            Fact("gradient_limit_neg_inf", "∂ℓ/∂Δ as Δ -> -oo: 0", lambda: sp.limit(elementary(slope()), DELTA, -sp.oo)),
            Fact("gradient_limit_pos_inf", "∂ℓ/∂Δ as Δ -> +oo: 0", lambda: sp.limit(elementary(slope()), DELTA, sp.oo)),
        ]

    def example(self, values, p, dtype=None, device=None):
        import torch

        empty = torch.zeros(0, dtype=dtype or torch.float64, device=device)
        pol, ref = self._side(p)
        mine = tensor([values[pol]], dtype, device), tensor([values[ref]], dtype, device)
        if p["arm"] == "desirable":
            args, where = [mine[0], empty, None, mine[1], empty.clone(), None], {pol: (0, (0,)), ref: (3, (0,))}
        else:
            args, where = [empty, mine[0], None, empty.clone(), mine[1], None], {pol: (1, (0,)), ref: (4, (0,))}
        return Example(self._module(p, device), args, where)

    def sample(self, rng, p):
        return {n: float(rng.normal() * 5) for n in self.variables(p)}

    def batches(self, rng, p):
        import numpy as np

        names = ["policy_chosen_logps", "policy_rejected_logps", "policy_KL_logps", "reference_chosen_logps", "reference_rejected_logps", "reference_KL_logps"]

        def spec(label, n_chosen, n_rejected, with_kl):
            desirable = sample_rows(self, rng, {**p, "arm": "desirable"}, n_chosen)
            undesirable = sample_rows(self, rng, {**p, "arm": "undesirable"}, n_rejected)
            kl = (rng.normal(size=4) * 3, rng.normal(size=4) * 3) if with_kl else (None, None)
            args = [np.array([r["policy_chosen_logps"] for r in desirable]), np.array([r["policy_rejected_logps"] for r in undesirable]), kl[0],
                    np.array([r["reference_chosen_logps"] for r in desirable]), np.array([r["reference_rejected_logps"] for r in undesirable]), kl[1]]
            weight = 1 / (n_chosen + n_rejected)
            terms = [Term({"policy_chosen_logps": (0, (i,)), "reference_chosen_logps": (3, (i,))}, weight, {"arm": "desirable"}) for i in range(n_chosen)]
            terms += [Term({"policy_rejected_logps": (1, (j,)), "reference_rejected_logps": (4, (j,))}, weight, {"arm": "undesirable"}) for j in range(n_rejected)]
            grad = [0, 1, 3, 4] + ([2, 5] if with_kl else [])  # the KL batch, when given, must get no gradient
            return BatchSpec(label, lambda device: self._module(p, device), args, names, grad, terms)

        return [spec("both arms, no KL batch", 3, 2, False), spec("both arms, a KL batch that the loss ignores", 2, 3, True),
                spec("no undesirable example", 4, 0, False), spec("no desirable example", 0, 3, False)]
