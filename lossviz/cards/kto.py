r"""KTO cards: each example scored against a detached reference point, and the balanced vanilla variant."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, Sigmoid, elementary
from ._common import draw, far_from, once, solve_one, sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term, sample_rows
from .controls import Hold
from .figure import Axis, Curve, CustomFigure, LessonFigure, Mark, Panel, Shot
from .dpo import BETA, PAIR, PAIR_LATEX, REFERENCE, margin, pair_example

KL_VARS = ("policy_KL_logps", "reference_KL_logps")
DELTA = sp.Symbol("Delta", real=True)  # the log-ratio π - π_ref of the example
REF = sp.Symbol("z_ref", real=True)  # the reference point (detached, clamped KL)


def clamp_at_zero(x):
    return sp.Piecewise((x, x > 0), (0, True))


KTO_LOSS_TEXT = {"desirable": r"desirable: $w_D(1 - \sigma(\beta(\Delta - z)))$", "undesirable": r"undesirable: $w_U(1 - \sigma(\beta(z - \Delta)))$"}
DPO_STYLE_TEXT = {"desirable": r"$-\log\sigma(\beta(\Delta - z))$", "undesirable": r"$-\log\sigma(\beta(z - \Delta))$"}


def _reference_point(c):
    """z along the axis: the KL batch's mean log-ratio, clamped at 0."""
    return sp.Max(0, c.cut["policy_KL_logps"] - c.cut["reference_KL_logps"])


def _dpo_style(c):
    """The DPO-style log-sigmoid of the same argument, -log σ(±β(Δ - z)): its gradient does not fade."""
    u = c.p["beta"] * (c.x - _reference_point(c))
    return -LogSigmoid(u if c.p["arm"] == "desirable" else -u)


class KTO(Card):
    name = "kto"
    # the explorer moves the reference point z (the facts write it z_ref)
    controls = (Hold("policy_KL_logps", "z", 0.0, 15.0, "the reference point z (the KL estimate, clamped at 0, detached)", stands_for=("z_ref",)),)
    # the example's log-ratio Δ on its arm's side; the KL batch's mean log-ratio 2 is the reference point z
    axis = Axis("Delta", lambda p: {("policy_chosen_logps" if p["arm"] == "desirable" else "policy_rejected_logps"): "Delta",
                                    ("reference_chosen_logps" if p["arm"] == "desirable" else "reference_rejected_logps"): 0,
                                    "policy_KL_logps": 2.0, "reference_KL_logps": 0},
                lambda p: (2.0 - 10 / p["beta"], 2.0 + 10 / p["beta"]), r"log-ratio $\Delta = \pi - \pi_{ref}$")
    figure = LessonFigure(  # each arm beside the DPO-style log-sigmoid whose gradient does not fade
        panels=(Panel("loss", "loss"), Panel("grad", r"gradient $\partial\ell/\partial\Delta$")),
        title=lambda c: f"reference point z = max(0, mean KL log-ratio) = {float(_reference_point(c)):g}, detached",
        tag="{arm}", label=lambda c: KTO_LOSS_TEXT[c.p["arm"]],
        curves=(Curve(lambda c: _dpo_style(c), "dpo-comparison:{arm}:{beta:g}", panels=("grad",),
                      label=lambda c: f"DPO-style {DPO_STYLE_TEXT[c.p['arm']]}: no saturation on the {'left' if c.p['arm'] == 'desirable' else 'right'}",
                      style=lambda c: {"color": "0.45", "linestyle": "--" if c.p["arm"] == "desirable" else "-."}),),
        marks=(Mark("gradient_peak", panel="grad", given={"z_ref": lambda c: _reference_point(c)}, y="gradient_peak_value", gid="{fact}:{tag}",
                    label=lambda c: f"peak ${'-' if c.p['arm'] == 'desirable' else '+'}{'w_D' if c.p['arm'] == 'desirable' else 'w_U'}\\beta/4$ at $\\Delta = z$"),
               Mark("reference_point", kind="edge", at=lambda c: _reference_point(c), label="reference point z = {x:g}", once=True)))
    gallery = (Shot("kto", "KTO: each arm around the detached reference point z; the gradient is bell-shaped and fades on both sides, "
                    "where the DPO-style log-sigmoid keeps pushing", sweep=("arm", ("desirable", "undesirable"))),)
    references = ("kto",)
    aliases = ("KTOLoss",)
    family = "kto"
    title = "KTO"
    lesson = "unpaired: 1 - σ(β(Δ - z)) (desirable) or 1 - σ(β(z - Δ)) (undesirable) around a detached reference point z; the gradient is bell-shaped"
    production = "lossviz.losses:KTOLoss"
    params = (
        BETA,
        Param("desirable_weight", 1.0, "weight w_D of desirable examples", r"w_D", low=0.0),
        Param("undesirable_weight", 1.0, "weight w_U of undesirable examples", r"w_U", low=0.0),
        Param("arm", "desirable", "which case: a desirable (chosen) or an undesirable (rejected) example", choices=("desirable", "undesirable")),
    )
    detached = KL_VARS
    constants = REFERENCE + ("reference_KL_logps",)  # the frozen reference model's log-probs
    cases_doc = "arm=desirable|undesirable"
    variable_latex = {
        **PAIR_LATEX,
        "policy_KL_logps": r"\pi^{KL}",
        "reference_KL_logps": r"\pi^{KL}_{\mathrm{ref}}",
    }

    def _side(self, p):
        return ("policy_chosen_logps", "reference_chosen_logps") if p["arm"] == "desirable" else ("policy_rejected_logps", "reference_rejected_logps")

    def variables(self, p):
        return self._side(p) + KL_VARS

    def loss(self, p):
        pol, ref = (sym(n) for n in self._side(p))
        z = clamp_at_zero(sym("policy_KL_logps") - sym("reference_KL_logps"))
        delta = pol - ref
        if p["arm"] == "desirable":  # 1 - σ(β(Δ - z)) written as σ(-β(Δ - z))
            return p["desirable_weight"] * Sigmoid(-p["beta"] * (delta - z))
        return p["undesirable_weight"] * Sigmoid(-p["beta"] * (z - delta))

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "desirable_weight": float(p["desirable_weight"]), "undesirable_weight": float(p["undesirable_weight"]), "world_size": 1}

    def facts(self, d):
        pol, ref = (sym(n) for n in self._side(d.params))

        def in_delta():
            # the loss as a function of Δ around a reference point z > 0 (the clamp inactive)
            arm = d.loss.subs(sym("policy_KL_logps"), REF + sym("reference_KL_logps"))
            arm = sp.piecewise_fold(arm).subs(pol, DELTA + ref)
            arm = arm.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[0][0])  # the z > 0 branch
            return sp.simplify(sp.diff(arm, DELTA))

        slope = once(in_delta)
        peak = once(lambda: sp.simplify(solve_one(elementary(sp.diff(slope(), DELTA)), DELTA)))
        return [
            Fact("gradient_in_delta", "∂ℓ/∂Δ = ∓w β σ(u) σ(-u) (desirable: -, undesirable: +), u = β(Δ - z): bell-shaped", slope),
            Fact("gradient_peak", "where |∂ℓ/∂Δ| is largest: at the reference point Δ = z", peak),
            Fact("gradient_peak_value", "∂ℓ/∂Δ at its peak: ∓w β / 4", lambda: sp.simplify(slope().subs(DELTA, peak()))),
            Fact("gradient_limit_neg_inf", "∂ℓ/∂Δ as Δ -> -oo: saturates to 0 (unlike DPO)", lambda: sp.limit(elementary(slope()), DELTA, -sp.oo)),
            Fact("gradient_limit_pos_inf", "∂ℓ/∂Δ as Δ -> +oo: 0", lambda: sp.limit(elementary(slope()), DELTA, sp.oo)),
            Fact("kl_gradient", "gradient with respect to the KL inputs: zero (detached)", lambda: d.gradient["policy_KL_logps"]),
        ]

    def example(self, values, p, dtype=None, device=None):
        import torch

        from lossviz.losses import KTOLoss

        empty = torch.zeros(0, dtype=dtype or torch.float64, device=device)
        pol, ref = self._side(p)
        mine = tensor([values[pol]], dtype, device), tensor([values[ref]], dtype, device)
        kl = tensor([values["policy_KL_logps"]], dtype, device), tensor([values["reference_KL_logps"]], dtype, device)
        if p["arm"] == "desirable":
            args = [mine[0], empty, kl[0], mine[1], empty.clone(), kl[1]]
            where = {pol: (0, (0,)), ref: (3, (0,))}
        else:
            args = [empty, mine[0], kl[0], empty.clone(), mine[1], kl[1]]
            where = {pol: (1, (0,)), ref: (4, (0,))}
        where.update({"policy_KL_logps": (2, (0,)), "reference_KL_logps": (5, (0,))})
        module = KTOLoss(**self.production_kwargs(p), device=torch.device(device or "cpu"))
        return Example(module, args, where)

    def sample(self, rng, p):
        # the clamp of the reference point has a kink at KL = 0
        return draw(rng, self.variables(p), 3.0, lambda v: far_from(v["policy_KL_logps"] - v["reference_KL_logps"], [0.0], 0.1))

    def batches(self, rng, p):
        import numpy as np

        import torch

        from lossviz.losses import KTOLoss

        make = lambda device: KTOLoss(**self.production_kwargs(p), device=torch.device(device))
        names = ["policy_chosen_logps", "policy_rejected_logps", "policy_KL_logps",
                 "reference_chosen_logps", "reference_rejected_logps", "reference_KL_logps"]

        def spec(label, n_chosen, n_rejected, kl_sign):
            desirable = sample_rows(self, rng, {**p, "arm": "desirable"}, n_chosen)
            undesirable = sample_rows(self, rng, {**p, "arm": "undesirable"}, n_rejected)
            # the KL batch: its mean log-ratio of the chosen sign, at least 0.3 from the clamp at 0
            rkl = rng.normal(size=4) * 3
            pkl = rkl + rng.normal(size=4) * 3
            pkl += kl_sign * rng.uniform(0.3, 3.0) - np.mean(pkl - rkl)
            args = [np.array([r["policy_chosen_logps"] for r in desirable]), np.array([r["policy_rejected_logps"] for r in undesirable]), pkl,
                    np.array([r["reference_chosen_logps"] for r in desirable]), np.array([r["reference_rejected_logps"] for r in undesirable]), rkl]
            kl = {"policy_KL_logps": ("mean", 2), "reference_KL_logps": ("mean", 5)}
            weight = 1 / (n_chosen + n_rejected)  # one mean over the concatenated losses
            terms = [Term({"policy_chosen_logps": (0, (i,)), "reference_chosen_logps": (3, (i,)), **kl}, weight, {"arm": "desirable"}) for i in range(n_chosen)]
            terms += [Term({"policy_rejected_logps": (1, (j,)), "reference_rejected_logps": (4, (j,)), **kl}, weight, {"arm": "undesirable"}) for j in range(n_rejected)]
            return BatchSpec(label, make, args, names, [0, 1, 2, 3, 4, 5], terms)

        return [spec("both arms, reference point > 0", 3, 2, 1.0), spec("both arms, reference point clamped to 0", 2, 3, -1.0),
                spec("no undesirable example, reference point clamped", 4, 0, -1.0), spec("no desirable example, reference point > 0", 0, 3, 1.0)]


class VanillaKTO(Card):
    name = "vanilla-kto"
    controls = (Hold("policy_rejected_logps", "delta_r", -10.0, 10.0,
                     "the rejected example's log-ratio Δ_r (its reference point for the chosen side is max(Δ_r, 0))"),)
    axis = Axis("Delta_c", {"policy_chosen_logps": "Delta_c", "policy_rejected_logps": 0, "reference_chosen_logps": 0, "reference_rejected_logps": 0},
                lambda p: (-8.0 / p["beta"], 8.0 / p["beta"]), r"$\Delta_c = \pi^c - \pi^c_{ref}$ ($\Delta_r = 0$)")
    figure = CustomFigure("lossviz.plots.custom:vanilla_kto")  # a surface over both log-ratios: the sides couple
    gallery = (Shot("vanilla-kto", "vanilla KTO: each side's reference point is the other side's mean log-ratio, clamped at 0 and not "
                    "detached (unlike KTO's); with one example per side it equals σ(-βh), a function of DPO's margin, where both log-ratios are "
                    "above 0, and splits into two independent terms where both are below 0"),)
    references = ("kto", "dpo")
    aliases = ("VanillaKTOLoss",)
    family = "kto"
    title = "vanilla KTO"
    lesson = ("chosen and rejected losses are concatenated, not subtracted, but each side's reference point is the other side's "
              "mean log-ratio clamped at 0 and not detached: the sides decouple only where both means are below 0; with one "
              "example per side and both log-ratios above 0 the loss is σ(-βh), a function of DPO's margin")
    production = "lossviz.losses:VanillaKTOLoss"
    params = (BETA,)
    variable_latex = PAIR_LATEX
    constants = REFERENCE  # the frozen reference model's log-probs

    def variables(self, p):
        return PAIR

    def loss(self, p):
        # one chosen and one rejected example: the batch loss with n_c = n_r = 1
        return self.batch_loss(p, [("policy_chosen_logps", "reference_chosen_logps")], [("policy_rejected_logps", "reference_rejected_logps")])

    @staticmethod
    def batch_loss(p, chosen, rejected):
        """The loss of a batch: ``chosen``/``rejected`` list (policy, reference) variable names.

        Each side's reference point is the other side's mean log-ratio clamped at 0, not
        detached, so every example's loss depends on the whole other side.
        """
        beta = p["beta"]
        d_c = [sym(a) - sym(b) for a, b in chosen]
        d_r = [sym(a) - sym(b) for a, b in rejected]
        z_c, z_r = clamp_at_zero(sp.Add(*d_c) / len(d_c)), clamp_at_zero(sp.Add(*d_r) / len(d_r))
        terms = [Sigmoid(-beta * (d - z_r)) for d in d_c] + [Sigmoid(-beta * (z_c - d)) for d in d_r]
        return sp.Add(*terms) / len(terms)

    def production_kwargs(self, p):
        return {"beta": float(p["beta"])}

    def facts(self, d):
        pc, pr, rc, rr = (sym(n) for n in PAIR)
        beta = d.p["beta"]
        a, b = sp.Symbol("a", positive=True), sp.Symbol("b", positive=True)

        def quadrant(sign):
            # one example per side, both log-ratios of one sign: Δ_c = sign·a, Δ_r = sign·b
            return sp.simplify(sp.piecewise_fold(d.loss.subs({pc: rc + sign * a, pr: rr + sign * b})))

        return [
            Fact("mixed_partial", "∂²ℓ/∂Δ_c∂Δ_r with both log-ratios below 0 (both reference points clamped to 0): zero, the sides decouple there",
                 lambda: sp.simplify(sp.diff(quadrant(-1), a, b))),
            Fact("mixed_partial_both_positive", "∂²ℓ/∂Δ_c∂Δ_r with both log-ratios above 0: not zero, the non-detached reference points couple the sides",
                 lambda: sp.simplify(sp.diff(quadrant(1), a, b))),
            Fact("both_positive_minus_dpo_sigmoid", "ℓ - σ(-βh) with both log-ratios above 0: zero, the loss depends on DPO's margin h = Δ_c - Δ_r only",
                 lambda: sp.simplify(elementary(quadrant(1) - Sigmoid(-beta * (a - b))))),
            Fact("dpo_mixed_partial", "the same for DPO's -log σ(βh): not zero, DPO couples the pair through the margin everywhere",
                 lambda: sp.simplify(sp.diff(-LogSigmoid(beta * margin()), pc, pr))),
        ]

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import VanillaKTOLoss

        return pair_example(VanillaKTOLoss(**self.production_kwargs(p)), values, dtype, device)

    def sample(self, rng, p):
        ok = lambda v: far_from(v["policy_chosen_logps"] - v["reference_chosen_logps"], [0.0], 0.1) and far_from(
            v["policy_rejected_logps"] - v["reference_rejected_logps"], [0.0], 0.1
        )
        return draw(rng, PAIR, 3.0, ok)

    def batches(self, rng, p):
        """Both reference points positive (the sides coupled), one positive, both clamped to 0."""
        import numpy as np

        from lossviz.losses import VanillaKTOLoss

        beta = float(p["beta"])

        def spec(n_c, n_r, sign_c, sign_r):
            loss_fn, grad_fns, slots = _vanilla_batch_functions(n_c, n_r)

            def side(n, sign):  # (policy, reference) log-probs whose mean log-ratio has the sign, |mean| >= 0.3
                ref = rng.normal(size=n) * 3
                delta = rng.normal(size=n) * 3
                delta += sign * rng.uniform(0.3, 3.0) - delta.mean()
                return ref + delta, ref

            (pc, rc), (pr, rr) = side(n_c, sign_c), side(n_r, sign_r)

            def expectation(arrays):
                values = [arrays[arg][idx] for arg, idx in slots] + [beta]
                grads = {k: np.zeros_like(arrays[k]) for k in range(4)}
                for (arg, idx), fn in zip(slots, grad_fns):
                    grads[arg][idx] = fn(*values)
                return float(loss_fn(*values)), grads

            word = lambda sign: "> 0" if sign > 0 else "clamped to 0"
            return BatchSpec(f"{n_c} chosen, {n_r} rejected; chosen reference point {word(sign_r)}, rejected {word(sign_c)}",
                             lambda device: VanillaKTOLoss(**self.production_kwargs(p)), [pc, pr, rc, rr], PAIR, [0, 1, 2, 3],
                             expectation=expectation)

        # the chosen examples are scored against the rejected side's mean and the other way round
        return [spec(3, 2, 1.0, 1.0), spec(3, 2, -1.0, 1.0), spec(3, 2, 1.0, -1.0), spec(3, 2, -1.0, -1.0)]  # one lowering


_VANILLA_CACHE: dict = {}


def _vanilla_batch_functions(n_c: int, n_r: int):
    """The batch loss and its gradients lowered to numpy, with β as the last argument (once per batch shape)."""
    if (n_c, n_r) not in _VANILLA_CACHE:
        from ..symbolic import lower

        names_c = [(f"policy_chosen_logps_{i}", f"reference_chosen_logps_{i}") for i in range(n_c)]
        names_r = [(f"policy_rejected_logps_{j}", f"reference_rejected_logps_{j}") for j in range(n_r)]
        beta = BETA.symbol
        expr = VanillaKTO.batch_loss({"beta": beta}, names_c, names_r)
        slots, order = [], []  # (arg, index) of each symbol, in the argument order
        for i, (a, b) in enumerate(names_c):
            slots += [(0, (i,)), (2, (i,))]
            order += [a, b]
        for j, (a, b) in enumerate(names_r):
            slots += [(1, (j,)), (3, (j,))]
            order += [a, b]
        args = order + ["beta"]
        _VANILLA_CACHE[(n_c, n_r)] = (lower(expr, args, "numpy"), [lower(sp.diff(expr, sym(n)), args, "numpy") for n in order], slots)
    return _VANILLA_CACHE[(n_c, n_r)]
