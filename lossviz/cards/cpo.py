r"""CPO: DPO's sigmoid loss without a reference model, plus the chosen response's NLL."""

from __future__ import annotations

import sympy as sp

from ..symbolic import LogSigmoid, elementary
from ._common import once, sym, tensor
from ._pairwise import CHOSEN_LENGTH, WithLengths
from .base import Card, Example, Fact, Param
from .figure import Axis, LessonFigure, Mark, Panel, Shot
from .simpo import LOGPS, LOGPS_LATEX, logps_batch

H = sp.Symbol("h", real=True)


class CPO(Card):
    name = "cpo"
    order = 2
    family = "reference-free"
    production = "lossviz.losses:CPOLoss"
    references = ("cpo",)
    aliases = ("CPOLoss",)
    title = "CPO"
    lesson = ("-log σ(β(π_c - π_r)) - α·π_c/L_c: DPO's loss with no reference model plus the chosen response's per-token NLL, "
              "whose push α/L_c on the chosen log-prob never fades")
    params = (Param("beta", 0.1, "scale β of the log-prob margin", r"\beta", low=0.0, low_open=True, high=100.0),
              Param("alpha", 1.0, "weight α of the chosen response's NLL (per token)", r"\alpha", low=0.0),
              Param("label_smoothing", 0.0, "probability ε that a preference label is flipped", r"\varepsilon", low=0.0, high=0.5, high_open=True),
              CHOSEN_LENGTH)
    variable_latex = LOGPS_LATEX
    # log-probs are negative: the rejected one at -80, the margin up to where the chosen one reaches 0
    axis = Axis("h", {"policy_chosen_logps": "h - 80", "policy_rejected_logps": -80}, lambda p: (-8.0 / p["beta"], min(8.0 / p["beta"], 80.0)),
                r"log-prob margin $h = \pi^c - \pi^r$ ($\pi^r = -80$)")
    figure = LessonFigure(
        panels=(Panel("loss", r"$-\log\sigma(\beta h) - \alpha\,\pi^c/L_c$"), Panel("grad", r"gradient $\partial\mathcal{L}/\partial h$ (here $h = \pi^c + 80$)")),
        title="no reference model: the margin is of the log-probs themselves; the NLL keeps pushing the chosen log-prob up",
        marks=(Mark("chosen_push_right_order", kind="limit", panel="grad", scale=-1.0, label="→ -α/L_c = {y:g} as h → ∞"),))
    gallery = (Shot("cpo", "CPO: DPO's sigmoid loss on the log-prob margin with no reference model, plus α times the chosen "
                    "response's per-token NLL", sweep=("alpha", (0.0, 1.0))),)

    def variables(self, p):
        return LOGPS

    def loss(self, p):
        u = p["beta"] * (sym("policy_chosen_logps") - sym("policy_rejected_logps"))
        eps = p["label_smoothing"]
        return -(1 - eps) * LogSigmoid(u) - eps * LogSigmoid(-u) - p["alpha"] * sym("policy_chosen_logps") / p["chosen_length"]

    def production_kwargs(self, p):
        return {"beta": float(p["beta"]), "alpha": float(p["alpha"]), "label_smoothing": float(p["label_smoothing"])}

    def example(self, values, p, dtype=None, device=None):
        from lossviz.losses import CPOLoss

        args = [tensor([values[n]], dtype, device) for n in LOGPS] + [tensor([float(p["chosen_length"])], dtype, device)]
        return Example(WithLengths(CPOLoss(**self.production_kwargs(p)), ("chosen_lengths",), positional=2), args,
                       {n: (i, (0,)) for i, n in enumerate(LOGPS)})

    def sample(self, rng, p):
        return {n: -float(rng.uniform(0.1, 3.0) * 10) for n in LOGPS}

    def batches(self, rng, p):
        from lossviz.losses import CPOLoss

        make = lambda device: WithLengths(CPOLoss(**self.production_kwargs(p)), ("chosen_lengths",), positional=2)
        spec, lengths = logps_batch(self, rng, p, make, (-6.0, -1.0, -0.3, 0.3, 1.0, 6.0))
        spec.args += lengths[:1]
        spec.arg_names = list(spec.arg_names) + ["chosen_lengths"]
        for t in spec.terms:
            t.extra = {"chosen_length": (2, t.where["policy_chosen_logps"][1])}
        spec.symbolic = ("chosen_length",)
        return [spec]

    def facts(self, d):
        chosen = once(lambda: sp.simplify(d.gradient["policy_chosen_logps"].subs(sym("policy_chosen_logps"), H + sym("policy_rejected_logps"))))
        return [
            Fact("chosen_gradient", "∂L/∂π_c as a function of h = π_c - π_r (ε = 0: -βσ(-βh) - α/L_c)", chosen),
            Fact("margin_gradient_sum", "∂L/∂π_c + ∂L/∂π_r: -α/L_c, the NLL's part alone (the preference term is antisymmetric)",
                 lambda: sp.simplify(d.gradient["policy_chosen_logps"] + d.gradient["policy_rejected_logps"])),
            Fact("chosen_push_right_order", "-∂L/∂π_c as h -> +oo (ε = 0): α/L_c, the push that does not fade",
                 lambda: sp.limit(elementary(-chosen().subs(d.p["label_smoothing"], 0)), H, sp.oo)),
        ]
