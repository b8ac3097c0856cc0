r"""DPO, cDPO and IPO cards: losses of the log-ratio margin :math:`h` (the implicit-reward margin is :math:`\beta h`)."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary
from ._common import once, solve_one, sym, tensor
from .base import Card, Example, Fact, Param
from .batch import BatchSpec, Term, sample_rows
from .figure import Axis, LessonFigure, Mark, Panel, Shot

PAIR = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")
REFERENCE = ("reference_chosen_logps", "reference_rejected_logps")
PAIR_LATEX = {
    "policy_chosen_logps": r"\pi^{c}",
    "policy_rejected_logps": r"\pi^{r}",
    "reference_chosen_logps": r"\pi^{c}_{\mathrm{ref}}",
    "reference_rejected_logps": r"\pi^{r}_{\mathrm{ref}}",
}
BETA = Param("beta", 0.1, "KL strength β (temperature of π* ∝ π_ref·e^{r/β}): larger β keeps the policy nearer the reference", r"\beta", low=0.0, low_open=True, high=100.0)
MARGIN = sp.Symbol("h", real=True)
# the lesson figures' axis: the margin h, moved by the chosen log-prob with the other three at 0
MARGIN_AXIS = Axis("h", {"policy_chosen_logps": "h", "policy_rejected_logps": 0, "reference_chosen_logps": 0, "reference_rejected_logps": 0},
                   lambda p: (-8.0 / p["beta"], 8.0 / p["beta"]), r"log-ratio margin $h = (\pi^c - \pi^c_{ref}) - (\pi^r - \pi^r_{ref})$")
GRADIENT_IN_H = r"gradient $\partial\mathcal{L}/\partial h$"


def margin(vars_=PAIR):
    pc, pr, rc, rr = (sym(n) for n in vars_)
    return (pc - pr) - (rc - rr)


def in_margin(expr):
    """Re-express a function of the four log-probs as a function of the margin h alone."""
    pc, pr, rc, rr = (sym(n) for n in PAIR)
    # (h + π_r + ref_c - ref_r) - π_r - ref_c + ref_r collapses to h on substitution: no simplify needed
    return expr.subs(pc, MARGIN + pr + rc - rr)


def pair_example(module, values, dtype, device):
    args = [tensor([values[n]], dtype, device) for n in PAIR]
    return Example(module, args, {n: (i, (0,)) for i, n in enumerate(PAIR)})


class _MarginCard(Card):
    family = "dpo"
    production = "lossviz.losses:DPOLoss"
    variable_latex = PAIR_LATEX
    constants = REFERENCE  # the frozen reference model's log-probs
    axis = MARGIN_AXIS

    def variables(self, p):
        return PAIR

    def production_kwargs(self, p):
        return {"beta": float(p["beta"])}

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import DPOLoss

        return pair_example(DPOLoss(**self.production_kwargs(p)), values, dtype, device)

    def sample(self, rng, p):
        return {n: float(rng.normal() * 5) for n in PAIR}

    def batches(self, rng, p):
        from lossviz.losses import DPOLoss

        return [pair_batch(self, rng, p, lambda device: DPOLoss(**self.production_kwargs(p)))]


def pair_batch(card, rng, p, make_module, pairs: int = 6):
    """Independent pairs, mean over pairs: one term per pair with weight 1/N."""
    import numpy as np

    rows = sample_rows(card, rng, p, pairs)
    args = [np.array([r[n] for r in rows]) for n in PAIR]
    terms = [Term({n: (k, (i,)) for k, n in enumerate(PAIR)}, 1 / pairs) for i in range(pairs)]
    return BatchSpec(f"mean over {pairs} pairs", make_module, args, PAIR, [0, 1, 2, 3], terms)


class DPO(_MarginCard):
    name = "dpo"
    references = ("dpo",)
    aliases = ("DPOLoss",)
    title = "DPO"
    lesson = "-log σ(βh); the push β·σ(-βh) is largest when the pair is ranked wrongly"
    params = (BETA,)
    figure = LessonFigure(
        panels=(Panel("loss", r"$\mathcal{L} = -\log\sigma(\beta h)$"),
                Panel("grad", GRADIENT_IN_H + "\n" + r"$= -\beta\sigma(-\beta h)$", ylim=lambda p: (-1.25 * p["beta"], 0.25 * p["beta"]))),
        title="the push -∂L/∂h = βσ(-βh) grows to β when the pair is ranked wrongly, fades when right",
        marks=(Mark("weight_wrong_order", kind="limit", panel="grad", scale=-1.0, label="→ -β = {y:g} as h → -∞"),  # the gradient's limit is minus the weight
               Mark("weight_at_zero", at=0.0, panel="grad", label="h = 0: -β/2 = {y:g}")),
        sweep_note="gradient → {weight_wrong_order_y:g}, {weight_at_zero_y:g} at h = 0")
    gallery = (Shot("dpo", "-log σ(βh): the gradient -βσ(-βh) → -β (the push -∂L/∂h → β) when the pair is ranked wrongly, → 0 when right",
                    sweep=("beta", (0.1, 0.3, 1.0)), svg=True),)

    def loss(self, p):
        return -LogSigmoid(p["beta"] * margin())

    def facts(self, d):
        # -dL/dh of the loss along the margin: the same function as -∂L/∂π_c, without simplifying four gradients
        weight = once(lambda: -sp.diff(in_margin(d.loss), MARGIN))
        return [
            Fact("gradient_weight", "-∂L/∂π_c = ∂L/∂π_r as a function of h: β σ(-βh), the weight of DPO's gradient analysis (Rafailov et al. 2023, §4)", weight),
            Fact("gradient_antisymmetry", "∂L/∂π_c + ∂L/∂π_r: zero",
                 lambda: sp.simplify(d.gradient["policy_chosen_logps"] + d.gradient["policy_rejected_logps"])),
            Fact("weight_wrong_order", "the weight as h -> -oo (pair ranked wrongly): β", lambda: sp.limit(elementary(weight()), MARGIN, -sp.oo)),
            Fact("weight_right_order", "the weight as h -> +oo (pair ranked right): 0", lambda: sp.limit(elementary(weight()), MARGIN, sp.oo)),
        ]


class CDPO(_MarginCard):
    name = "cdpo"
    references = ("cdpo", "dpo")
    aliases = ("conservative-dpo",)
    title = "cDPO (label smoothing)"
    lesson = ("with probability ε the label is flipped; for 0 < ε < 0.5 the loss has a finite minimum at βh* = log((1-ε)/ε); "
              "at ε = 0.5 it is log 2cosh(βh/2), still a function of h, minimal at h = 0")
    params = (BETA, Param("label_smoothing", 0.1, "probability ε that the preference label is flipped", r"\varepsilon", low=0.0, high=0.5, high_open=True))
    axis = Axis(MARGIN_AXIS.symbol, MARGIN_AXIS.cut, lambda p: (-6.0 / p["beta"], 6.0 / p["beta"]), MARGIN_AXIS.label)
    figure = LessonFigure(
        panels=(Panel("loss", r"$-(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h)$"), Panel("grad", GRADIENT_IN_H)),
        title="with ε > 0 the loss has a finite minimum; ε = 0 is DPO",
        marks=(Mark("minimum", label="min at $h^*$ = log((1−ε)/ε)/β = {x:.1f}", zero_gradient=True, missing="no minimum (DPO)"),))
    gallery = (Shot("cdpo", "label smoothing ε gives a finite minimum at h* = log((1−ε)/ε)/β; ε = 0 is DPO. As ε → 0.5 the loss tends to "
                    "log 2cosh(βh/2): still a function of the margin, minimal at h = 0", params={"beta": 0.1}, sweep=("label_smoothing", (0.0, 0.1, 0.3))),)

    def loss(self, p):
        beta, eps = p["beta"], p["label_smoothing"]
        return -(1 - eps) * LogSigmoid(beta * margin()) - eps * LogSigmoid(-beta * margin())

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "label_smoothing": float(p["label_smoothing"])}

    def facts(self, d):
        beta, eps = d.p["beta"], d.p["label_smoothing"]

        def beta_times_minimum():
            # the loss along h directly (∂L/∂π_c would also do, at the price of simplifying it first)
            h_star = solve_one(elementary(sp.diff(in_margin(d.loss), MARGIN)), MARGIN)
            return sp.oo if h_star is None else sp.simplify(sp.expand_log(beta * h_star, force=True))

        beta_h = once(beta_times_minimum)
        facts = [
            Fact("minimum", "the margin h* where the cDPO loss is minimal (∂L/∂h = 0)", lambda: beta_h() / beta),
            Fact("beta_times_minimum", "β h*, which equals log((1-ε)/ε)", beta_h),
        ]
        if isinstance(eps, sp.Symbol):
            dpo_loss = -LogSigmoid(beta * margin())
            facts.append(Fact("epsilon_zero_is_dpo", "loss at ε = 0 minus the DPO loss: zero", lambda: sp.simplify(d.loss.subs(eps, 0) - dpo_loss)))
        return facts


class IPO(_MarginCard):
    name = "ipo"
    references = ("ipo", "dpo")
    aliases = ()
    title = "IPO"
    lesson = "a squared loss that regresses the margin onto the target 1/(2β)"
    params = (BETA,)
    # the target 1/(2β) ± 3 nats (and h = 0, where training starts): the vertex and both arms at a scale where
    # targets of different β stay apart (a range proportional to 1/β would squeeze β = 0.5 and 1 into one point)
    axis = Axis(MARGIN_AXIS.symbol, MARGIN_AXIS.cut, lambda p: (min(-1.0, 1 / (2 * p["beta"]) - 3.0), 1 / (2 * p["beta"]) + 3.0),
                MARGIN_AXIS.label)
    figure = LessonFigure(
        panels=(Panel("loss", r"$(h - \frac{1}{2\beta})^2$"), Panel("grad", GRADIENT_IN_H + "\n" + r"$= 2(h - \frac{1}{2\beta})$")),
        title="IPO regresses the margin onto the target 1/(2β)",
        marks=(Mark("target", label="target 1/(2β) = {x:g}", y="zero", zero_gradient=True),))
    gallery = (Shot("ipo", "IPO regresses the margin onto the target 1/(2β) (zero gradient there); β = 0.1, 0.25, 1 put it at h = 5, 2, 0.5",
                    sweep=("beta", (0.1, 0.25, 1.0))),)

    def loss(self, p):
        return (margin() - 1 / (2 * p["beta"])) ** 2

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "ipo": True}

    def facts(self, d):
        slope = once(lambda: sp.diff(in_margin(d.loss), MARGIN))
        return [
            Fact("target", "the margin where the IPO gradient vanishes (IPO Eq. 17: 1/(2β))", lambda: solve_one(slope(), MARGIN)),
            Fact("gradient_in_h", "∂L/∂h", slope),
        ]

