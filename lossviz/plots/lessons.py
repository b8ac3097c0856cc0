"""The lesson figure of every entry (see the curriculum): loss and gradient over the card's natural axis.

Every curve is the card's loss cut along one axis and lowered to numpy; every marked point
comes from a fact sympy computed or from the card's lowered loss at that point. Lines carry a
``gid`` (``loss:<label>``, ``grad:<label>``, ``marker:<fact>``, ``zone:<fact>``) so that tests
can find them. Each builder ends with :func:`suptitle`, which lays the figure out and places
its legends and lesson labels (:mod:`.placement`). In a sweep, each value's lesson point is
named in that value's legend entry, one readable label per value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import sympy as sp

from ..cards.base import Card, CardError, Derivation
from ..symbolic import LogSigmoid, Sigmoid, elementary, lower
from .core import COLORS, format_params, mark, new_figure, sample_axis, shade, vline, zero_line
from .cut import AxisCurve, along
from .placement import finish, label_hline, label_point

MAX_SWEEP = len(COLORS)  # one distinct colour per swept value


@dataclass
class PlotRequest:
    """What to draw: one parameter set per swept value (or one), an optional x-range."""

    card: Card
    param_sets: List[Dict[str, object]]
    sweep: Optional[str] = None
    x_range: Optional[Tuple[float, float]] = None
    derivations: List[Derivation] = field(init=False)

    def __post_init__(self):
        if len(self.param_sets) > MAX_SWEEP:
            raise CardError(f"--sweep takes at most {MAX_SWEEP} values (one colour each); got {len(self.param_sets)}")
        self.derivations = [Derivation(self.card, p) for p in self.param_sets]

    @property
    def base(self) -> Dict[str, object]:
        return self.param_sets[0]

    def label(self, i: int) -> str:
        if not self.sweep:
            return ""
        prm = self.card.param(self.sweep)
        symbol = prm.latex or prm.name
        value = self.param_sets[i][self.sweep]
        return f"${symbol}$={value:g}" if isinstance(value, float) else f"{prm.name}={value}"

    def title(self, extra: str = "") -> str:
        shown = format_params(self.base, skip=[self.sweep] if self.sweep else [])
        if self.sweep:
            values = ", ".join(f"{p[self.sweep]:g}" if isinstance(p[self.sweep], float) else str(p[self.sweep]) for p in self.param_sets)
            shown = ", ".join(s for s in (shown, f"{self.sweep} ∈ {{{values}}}") if s)
        return f"{self.card.title}" + (f" ({shown})" if shown else "") + (f": {extra}" if extra else "")

    def xs(self, default: Tuple[float, float], n: int = 801) -> np.ndarray:
        lo, hi = self.x_range or default
        return sample_axis(lo, hi, n)


def suptitle(fig, text: str):
    """The figure title, then the layout and the placement of legends and labels (see placement.finish)."""
    finish(fig, text)


def _fact(d: Derivation, name: str) -> float:
    return float(d.fact(name).value)


def _plot_curve(ax, xs, ys, label, gid, color, **kw):
    (line,) = ax.plot(xs, ys, color=color, label=label, **kw)
    line.set_gid(gid)
    return line


def _two_panels(req: PlotRequest, cut: Callable[[Derivation], AxisCurve], xs, xlabel: str, loss_label: str, grad_label: str,
                extras: Optional[Callable] = None):
    """Loss and gradient of every parameter set along one axis.

    ``extras(d, curve, ax_loss, ax_grad, color, i, label)`` draws the lesson points; ``label``
    is "" when the points may carry their own labels and None in a sweep, where the text
    ``extras`` returns goes into that value's legend entry instead.
    """
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0][0], axes[0][1]
    zero_line(ax_grad)
    for i, d in enumerate(req.derivations):
        curve = cut(d)
        tag = req.label(i) or "loss"
        lines = [_plot_curve(ax_loss, xs, curve.loss(xs), req.label(i) or None, f"loss:{tag}", COLORS[i]),
                 _plot_curve(ax_grad, xs, curve.grad(xs), req.label(i) or None, f"grad:{tag}", COLORS[i])]
        if extras:
            # a sweep names each value's lesson point in the legend: one readable label per value
            note = extras(d, curve, ax_loss, ax_grad, COLORS[i], i, None if req.sweep else "")
            if note and req.sweep:
                for line in lines:
                    line.set_label(f"{req.label(i)}: {note}")
    ax_loss.set_xlabel(xlabel)
    ax_grad.set_xlabel(xlabel)
    ax_loss.set_ylabel(loss_label)
    ax_grad.set_ylabel(grad_label)
    for ax in (ax_loss, ax_grad):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return fig, axes


def _finish_panels(fig, ax_loss, ax_grad, xlabel: str, loss_label: str, grad_label: str, title: str, legend: bool = True):
    """Axis labels, legends and the title of a loss panel beside a gradient panel."""
    for ax in (ax_loss, ax_grad):
        ax.set_xlabel(xlabel)
        if legend and ax.get_legend_handles_labels()[0]:
            ax.legend()
    ax_loss.set_ylabel(loss_label)
    ax_grad.set_ylabel(grad_label)
    suptitle(fig, title)
    return fig


X = sp.Symbol("x", real=True)
H = sp.Symbol("h", real=True)


# ----------------------------------------------------------------------------- basics


def basics(req: PlotRequest):
    d = req.derivations[0]
    xs = req.xs((-8, 8))
    curve = along(d, X, {"x": X})
    sigma = lower(Sigmoid(X), ["x"], "numpy")
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    _plot_curve(ax_loss, xs, sigma(xs), r"$\sigma(x)$", "loss:sigmoid", COLORS[2])
    _plot_curve(ax_loss, xs, curve.loss(xs), r"$-\log\sigma(x)$", "loss:-log sigmoid", COLORS[0])
    _plot_curve(ax_grad, xs, curve.grad(xs), r"$\sigma(x) - 1$", "grad:-log sigmoid", COLORS[1])
    left, right = _fact(d, "gradient_limit_neg_inf"), _fact(d, "gradient_limit_pos_inf")
    for y, name, text in ((left, "gradient_limit_neg_inf", "→ -1 as x → -∞"), (right, "gradient_limit_pos_inf", "→ 0 as x → +∞")):
        line = ax_grad.axhline(y, color="0.5", linestyle=":", linewidth=1)
        line.set_gid(f"limit:{name}")
        label_hline(ax_grad, y, text)
    ax_grad.set_ylim(-1.3, 0.3)  # room for the limit labels beside their lines
    mark(ax_grad, 0.0, float(curve.grad(np.array([0.0]))[0]), "x = 0: gradient -1/2", "marker:gradient_at_zero")
    return _finish_panels(fig, ax_loss, ax_grad, "$x$", "value", r"gradient $\frac{d}{dx}[-\log\sigma(x)]$",
                          req.title("the three curves to know by heart"))


# ----------------------------------------------------------------------------- SFT


Z = sp.Symbol("z_0", real=True)
OTHER_LOGITS = (1.0, -1.0)  # z_1, z_2 while z_0 moves: distinct, so every label y draws a distinct loss


def gptlm(req: PlotRequest):
    xs = req.xs((-6, 6))
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    for i, d in enumerate(req.derivations):
        y = d.params["label"]
        curve = along(d, Z, {"logits_0": Z, "logits_1": OTHER_LOGITS[0], "logits_2": OTHER_LOGITS[1]})
        text = f"target y = {y}" + (" (the moving logit)" if y == "0" else "")
        _plot_curve(ax_loss, xs, curve.loss(xs), text, f"loss:label={y}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), (r"$y = 0$: $p_0 - 1$" if y == "0" else rf"$y = {y}$: $p_0$"), f"grad:label={y}", COLORS[i],
                    linestyle="-" if i == 0 else (0, (4, 2 + i)))
    _plot_curve(ax_grad, xs, np.zeros_like(xs), "label -100 (prompt): no gradient", "grad:masked", "0.4", linestyle=":")
    return _finish_panels(fig, ax_loss, ax_grad, rf"logit $z_0$ ($z_1 = {OTHER_LOGITS[0]:g}$, $z_2 = {OTHER_LOGITS[1]:g}$)",
                          r"$\mathcal{L} = \mathrm{LSE}(z) - z_y$", r"gradient $\partial\mathcal{L}/\partial z_0$" + "\n" + r"$= p_0 - 1[y = 0]$",
                          req.title("over 3 tokens, ∂L/∂z_0 is p_0 - 1 when token 0 is the target and p_0 when another is"))


TEACHER = (1.0, 0.0, -1.0)


def kd(req: PlotRequest):
    d = req.derivations[0]
    xs = req.xs((-6, 6))
    values = {"logits_0": Z, "logits_1": 0, "logits_2": 0, **{f"teacher_logits_{k}": TEACHER[k] for k in range(3)}}
    curve = along(d, Z, values)
    q = np.exp(TEACHER) / np.exp(TEACHER).sum()
    entropy = float(-(q * np.log(q)).sum())
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    zero_line(ax_grad)
    _plot_curve(ax_loss, xs, curve.loss(xs), r"CE $-\sum_k q_k \log p_k$ (KDLoss)", "loss:cross-entropy", COLORS[0])
    _plot_curve(ax_loss, xs, curve.loss(xs) - entropy, r"$\mathrm{KL}(q\,\|\,p)$ = CE $- H(q)$", "loss:kl", COLORS[2], linestyle="--")
    _plot_curve(ax_grad, xs, curve.grad(xs), r"$p_{S,0} - q_0$", "grad:cross-entropy", COLORS[1])
    z_star = _solve_on_axis(curve, xs)
    mark(ax_loss, z_star, float(curve.loss(np.array([z_star]))[0]), f"minimum: p_S,0 = q_0 at z_0 = {z_star:.3g}", "marker:student_matches_teacher")
    mark(ax_grad, z_star, 0.0, f"gradient 0 at z_0 = {z_star:.3g}", "marker:gradient_zero")
    x_gap = xs[0] + 0.8 * (xs[-1] - xs[0])
    top = float(curve.loss(np.array([x_gap]))[0])
    ax_loss.annotate("", (x_gap, top), xytext=(x_gap, top - entropy), arrowprops=dict(arrowstyle="<->", color="0.3", linewidth=0.8,
                                                                                   shrinkA=0, shrinkB=0))
    label_point(ax_loss, x_gap, top - entropy / 2, f"constant gap H(q) = {entropy:.3f}", color="0.25")
    return _finish_panels(fig, ax_loss, ax_grad, r"student logit $z_0$ (teacher logits $t$ = (1, 0, -1))", "loss",
                          r"$\partial\mathcal{L}/\partial z_0$", req.title("minimising CE to the teacher minimises KL(q‖p)"))


def _solve_on_axis(curve: AxisCurve, xs) -> float:
    """The zero of the axis gradient, found by sympy (nsolve from the sign change on the grid)."""
    g = curve.grad(xs)
    k = int(np.argmax(np.sign(g[:-1]) != np.sign(g[1:])))
    return float(sp.nsolve(elementary(curve.grad_expr), curve.x, float(xs[k])))


# ----------------------------------------------------------------------------- DPO family


def _pair_cut(d: Derivation) -> AxisCurve:
    return along(d, H, {"policy_chosen_logps": H, "policy_rejected_logps": 0, "reference_chosen_logps": 0, "reference_rejected_logps": 0})


def _margin_range(req: PlotRequest, width: float = 8.0):
    beta = min(float(p["beta"]) for p in req.param_sets)
    return (-width / beta, width / beta)


MARGIN_LABEL = r"log-ratio margin $h = (\pi^c - \pi^c_{ref}) - (\pi^r - \pi^r_{ref})$"


def dpo(req: PlotRequest):
    xs = req.xs(_margin_range(req))

    def extras(d, curve, ax_loss, ax_grad, color, i, label):
        limit = -_fact(d, "weight_wrong_order")  # the gradient's limit as h -> -oo
        line = ax_grad.axhline(limit, color=color, linestyle=":", linewidth=1)
        line.set_gid(f"limit:weight_wrong_order:{i}")
        if label is not None:
            label_hline(ax_grad, limit, f"→ -β = {limit:g} as h → -∞", color=color)
        at_zero = float(curve.grad(np.array([0.0]))[0])  # the card's gradient at h = 0: -β/2
        mark(ax_grad, 0.0, at_zero, None if label is None else f"h = 0: -β/2 = {at_zero:g}", f"marker:weight_at_zero:{i}", color=color)
        return f"gradient → {limit:g}, {at_zero:g} at h = 0"

    fig, axes = _two_panels(req, _pair_cut, xs, MARGIN_LABEL, r"$\mathcal{L} = -\log\sigma(\beta h)$",
                            r"gradient $\partial\mathcal{L}/\partial h$" + "\n" + r"$= -\beta\sigma(-\beta h)$", extras)
    axes[0][1].set_ylim(-1.25 * max(float(p["beta"]) for p in req.param_sets), 0.25 * max(float(p["beta"]) for p in req.param_sets))
    suptitle(fig, req.title("the push -∂L/∂h = βσ(-βh) grows to β when the pair is ranked wrongly, fades when right"))
    return fig


def cdpo(req: PlotRequest):
    xs = req.xs(_margin_range(req, 6.0))

    def extras(d, curve, ax_loss, ax_grad, color, i, label):
        h_star = d.fact("minimum").value
        if not h_star.is_finite:
            return "no minimum (DPO)"
        x = float(h_star)
        bh = float(d.fact("beta_times_minimum").value)
        text = f"min at βh* = log((1-ε)/ε) = {bh:.3g}"
        mark(ax_loss, x, float(curve.loss(np.array([x]))[0]), None if label is None else text, f"marker:minimum:{i}", color=color)
        mark(ax_grad, x, 0.0, "", f"marker:minimum_gradient:{i}", color=color)
        return text

    fig, _ = _two_panels(req, _pair_cut, xs, MARGIN_LABEL, r"$-(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h)$",
                         r"gradient $\partial\mathcal{L}/\partial h$", extras)
    suptitle(fig, req.title("with ε > 0 the loss has a finite minimum; ε = 0 is DPO"))
    return fig


def ipo(req: PlotRequest):
    targets = [1 / (2 * float(p["beta"])) for p in req.param_sets]
    span = max(targets) * 2.5
    xs = req.xs((-span, 2 * span))

    def extras(d, curve, ax_loss, ax_grad, color, i, label):
        x = float(d.fact("target").value)
        mark(ax_loss, x, 0.0, None if label is None else f"target 1/(2β) = {x:g}", f"marker:target:{i}", color=color)
        mark(ax_grad, x, 0.0, "", f"marker:target_gradient:{i}", color=color)
        return f"target 1/(2β) = {x:g}"

    fig, _ = _two_panels(req, _pair_cut, xs, MARGIN_LABEL, r"$(h - \frac{1}{2\beta})^2$",
                         r"gradient $\partial\mathcal{L}/\partial h$" + "\n" + r"$= 2(h - \frac{1}{2\beta})$", extras)
    suptitle(fig, req.title("IPO regresses the margin onto the target 1/(2β)"))
    return fig


# ----------------------------------------------------------------------------- KTO

DELTA = sp.Symbol("Delta", real=True)
REFERENCE_POINT = 2.0  # the KL batch's mean log-ratio in the figure


def _kto_cut(d: Derivation):
    side = ("policy_chosen_logps", "reference_chosen_logps") if d.params["arm"] == "desirable" else ("policy_rejected_logps", "reference_rejected_logps")
    return along(d, DELTA, {side[0]: DELTA, side[1]: 0, "policy_KL_logps": REFERENCE_POINT, "reference_KL_logps": 0})


KTO_LOSS_TEXT = {"desirable": r"desirable: $w_D(1 - \sigma(\beta(\Delta - z)))$", "undesirable": r"undesirable: $w_U(1 - \sigma(\beta(z - \Delta)))$"}


def kto(req: PlotRequest):
    beta = min(float(p["beta"]) for p in req.param_sets)
    xs = req.xs((REFERENCE_POINT - 10 / beta, REFERENCE_POINT + 10 / beta))
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    zero_line(ax_grad)
    compared = set()
    for i, d in enumerate(req.derivations):
        arm, b = d.params["arm"], float(d.params["beta"])
        curve = _kto_cut(d)
        text = KTO_LOSS_TEXT[arm] + (f" ({req.label(i)})" if req.sweep and req.sweep != "arm" else "")
        tag = req.label(i) or arm
        _plot_curve(ax_loss, xs, curve.loss(xs), text, f"loss:{tag}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), text, f"grad:{tag}", COLORS[i])
        peak = float(d.fact("gradient_peak").value.subs(sp.Symbol("z_ref", real=True), REFERENCE_POINT))  # sympy found Δ = z
        value = float(d.fact("gradient_peak_value").value)
        sign, w = ("-", "w_D") if arm == "desirable" else ("+", "w_U")
        mark(ax_grad, peak, value, f"peak ${sign}{w}\\beta/4$ at $\\Delta = z$", f"marker:gradient_peak:{tag}", color=COLORS[i])
        if (arm, b) not in compared:  # the DPO-style log-sigmoid of the same argument: its gradient does not fade
            compared.add((arm, b))
            u = b * (xs - REFERENCE_POINT)
            slope = -b / (1 + np.exp(u)) if arm == "desirable" else b / (1 + np.exp(-u))
            side = "left" if arm == "desirable" else "right"
            formula = r"$-\log\sigma(\beta(\Delta - z))$" if arm == "desirable" else r"$-\log\sigma(\beta(z - \Delta))$"
            _plot_curve(ax_grad, xs, slope, f"DPO-style {formula}: no saturation on the {side}", f"grad:dpo-comparison:{arm}:{b:g}", "0.45",
                        linestyle="--" if arm == "desirable" else "-.")
    for ax in axes[0]:
        vline(ax, REFERENCE_POINT, f"reference point z = {REFERENCE_POINT:g}", "marker:reference_point")
    return _finish_panels(fig, ax_loss, ax_grad, r"log-ratio $\Delta = \pi - \pi_{ref}$", "loss", r"gradient $\partial\ell/\partial\Delta$",
                          req.title(f"reference point z = max(0, mean KL log-ratio) = {REFERENCE_POINT:g}, detached"))


def vanilla_kto(req: PlotRequest):
    d = req.derivations[0]
    beta = float(d.params["beta"])
    span = 8 / beta
    lo, hi = req.x_range or (-span, span)
    grid = np.linspace(lo, hi, 161)
    gc, gr = np.meshgrid(grid, grid)
    zeros = np.zeros_like(gc)
    vanilla = d.function("loss")(gc, gr, zeros, zeros)
    dpo = -np.asarray(lower(LogSigmoid(beta * (sp.Symbol("c") - sp.Symbol("r"))), ["c", "r"], "numpy")(gc, gr))
    fig, axes = new_figure(1, 2, width=3.7, height=3.5)
    panels = ((axes[0][0], vanilla, "vanilla KTO", "surface:vanilla-kto"), (axes[0][1], dpo, r"DPO $-\log\sigma(\beta h)$", "surface:dpo"))
    for ax, values, name, gid in panels:
        mesh = ax.pcolormesh(gc, gr, values, shading="auto", cmap="viridis")
        mesh.set_gid(gid)
        ax.contour(gc, gr, values, levels=8, colors="white", linewidths=0.6)
        fig.colorbar(mesh, ax=ax, shrink=0.9, label="loss")
        ax.set_xlabel(r"$\Delta_c = \pi^c - \pi^c_{ref}$")
        ax.set_ylabel(r"$\Delta_r = \pi^r - \pi^r_{ref}$")
        ax.set_title(name, fontsize=8)
        ax.grid(False)
    ax = axes[0][0]
    for line in (ax.axvline(0, color="white", linestyle="--", linewidth=0.9), ax.axhline(0, color="white", linestyle="--", linewidth=0.9)):
        line.set_gid("guide:quadrant")
    box = dict(boxstyle="round,pad=0.25", fc="white", ec="none", alpha=0.85)
    ax.text(0.75, 0.75, "both > 0:\n" + r"$\ell = \sigma(-\beta h)$", transform=ax.transAxes, ha="center", va="center", fontsize=7, bbox=box)
    ax.text(0.25, 0.25, "both < 0: " + r"$\frac{1}{2}[\sigma(-\beta\Delta_c)$" + "\n" + r"$+ \sigma(\beta\Delta_r)]$, uncoupled",
            transform=ax.transAxes, ha="center", va="center", fontsize=7, bbox=box)
    suptitle(fig, req.title("one chosen and one rejected example; each side's reference point is the other side's mean log-ratio, "
                            "clamped at 0 and not detached, so the sides couple except where both are below 0"))
    return fig


# ----------------------------------------------------------------------------- PPO

R = sp.Symbol("r", positive=True)


def _interval_bounds(interval, lo: float, hi: float):
    """Finite pieces (a, b) of a sympy set, clipped to [lo, hi]."""
    pieces = interval.args if isinstance(interval, sp.Union) else (interval,)
    out = []
    for piece in pieces:
        if isinstance(piece, sp.Interval):
            a, b = float(piece.start), float(min(piece.end, sp.Float(hi)))
            if b > a:
                out.append((max(a, lo), min(b, hi)))
    return out


def ppo_policy(req: PlotRequest):
    d = req.derivations[0]
    dual = d.params.get("dual_clip")
    xs = req.xs((0.01, 2.5 if dual is None else float(dual) + 1.0))  # show the dual-clip region r > c too
    fig, axes = new_figure(2, 2, width=3.4, height=2.3)
    low, high = (float(v) for v in req.card.bounds(d.params))
    symmetric = low == high
    for col, (adv, label) in enumerate(((1.0, "positive"), (-1.0, "negative"))):
        curve = along(d, R, {"log_probs": sp.log(R), "old_log_probs": 0, "advantages": adv})
        ax_loss, ax_grad = axes[0][col], axes[1][col]
        zero_line(ax_grad)
        _plot_curve(ax_loss, xs, curve.loss(xs), r"$-\min(rA, \mathrm{clip}(r)A)$" + (" with dual clip" if dual is not None else ""),
                    f"loss:A_{label}", COLORS[0])
        _plot_curve(ax_loss, xs, -adv * xs, r"unclipped $-rA$", f"loss:unclipped_A_{label}", "0.55", linestyle=":")
        _plot_curve(ax_grad, xs, curve.grad(xs), r"gradient $\partial\mathcal{L}/\partial r$", f"grad:A_{label}", COLORS[1])
        for lo_, hi_ in _interval_bounds(d.fact(f"zero_gradient_ratios_A_{label}").value, xs[0], xs[-1]):
            for ax in (ax_loss, ax_grad):
                shade(ax, lo_, hi_, "zero gradient", f"zone:zero_gradient_ratios_A_{label}")
        for ax in (ax_loss, ax_grad):
            vline(ax, 1 - low, r"$1-\varepsilon$" if symmetric else r"$1-\varepsilon_l$", "marker:clip_low")
            vline(ax, 1 + high, r"$1+\varepsilon$" if symmetric else r"$1+\varepsilon_h$", "marker:clip_high")
            if dual is not None and adv < 0:
                vline(ax, float(dual), f"c = {float(dual):g}", "marker:dual_clip", color=COLORS[3])
            ax.set_xlabel("ratio $r = \\pi/\\pi_{old}$")
            ax.legend()
        ax_loss.set_title(f"A {'>' if adv > 0 else '<'} 0 (A = {adv:+g})")
        ax_loss.set_ylabel("loss")
        ax_grad.set_ylabel(r"$\partial\mathcal{L}/\partial r$")
    text = "the gradient is zero once r leaves the trust region in the direction A favours"
    if dual is not None:
        text += "; dual clip c: for A < 0 and r > c (r grew although A < 0) the loss is capped at c|A| and the gradient is zero"
    suptitle(fig, req.title(text))
    return fig


V = sp.Symbol("v", real=True)
OLD_VALUE, RETURN = 0.0, 1.0


def ppo_value(req: PlotRequest):
    d = req.derivations[0]
    xs = req.xs((OLD_VALUE - 1.5, RETURN + 1.5))
    cut = along(d, V, {"values": V, "old_values": OLD_VALUE, "returns": RETURN})
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    zero_line(ax_grad)
    low, high = req.card.bounds(d.params)
    unclipped = 0.5 * (xs - RETURN) ** 2
    _plot_curve(ax_loss, xs, unclipped, r"unclipped $\frac{1}{2}(v-R)^2$", "loss:unclipped", "0.55", linestyle=":")
    _plot_curve(ax_loss, xs, cut.loss(xs), "max (ValueLoss): pessimistic", "loss:max", COLORS[0], linewidth=2.2)
    _plot_curve(ax_grad, xs, cut.grad(xs), "max (ValueLoss): pessimistic", "grad:max", COLORS[0], linewidth=2.2)
    if low is not None:
        low, high = float(low), float(high)
        clipped_v = OLD_VALUE + np.clip(xs - OLD_VALUE, -low, high)
        clipped = 0.5 * (clipped_v - RETURN) ** 2
        minimum = np.minimum(clipped, unclipped)
        _plot_curve(ax_loss, xs, clipped, r"clipped $\frac{1}{2}(v_c-R)^2$", "loss:clipped", "0.55", linestyle="--")
        _plot_curve(ax_loss, xs, minimum, "min (hypothetical)", "loss:min", COLORS[1], linestyle="-.")
        _plot_curve(ax_grad, xs, np.gradient(minimum, xs), "min (hypothetical)", "grad:min", COLORS[1], linestyle="-.")
        zone = d.fact("flat_zone_above").value.subs({sp.Symbol("old_values", real=True): OLD_VALUE, sp.Symbol("returns", real=True): RETURN})
        for a, b in _interval_bounds(zone, xs[0], xs[-1]):
            for ax in (ax_loss, ax_grad):
                shade(ax, a, b, "flat zone of the max", "zone:flat_zone_above")
        for ax in (ax_loss, ax_grad):
            vline(ax, OLD_VALUE + high, r"$v_{old}+\varepsilon$", "marker:clip_high")
            vline(ax, OLD_VALUE - low, r"$v_{old}-\varepsilon$", "marker:clip_low")
    for ax in (ax_loss, ax_grad):
        vline(ax, RETURN, "$R$", "marker:return", color=COLORS[2])
        ax.set_xlabel(f"value $v$ ($v_{{old}}$ = {OLD_VALUE:g}, R = {RETURN:g})")
        ax.legend()
    ax_loss.set_ylabel("loss")
    ax_grad.set_ylabel(r"gradient $\partial\mathcal{L}/\partial v$")
    suptitle(fig, req.title("why max and not min: the clip binds only when it makes the loss larger"))
    return fig


# ----------------------------------------------------------------------------- reward models

GAP = sp.Symbol("Delta", real=True)
GAP_LABEL = r"reward gap $\Delta = r_c - r_r$"


def _gap_cut(d):
    return along(d, GAP, {"chosen_reward": GAP, "reject_reward": 0})


def pairwise(req: PlotRequest):
    margins = [float(p["margin"]) for p in req.param_sets]
    xs = req.xs((min(margins) - 6, max(margins) + 8))

    def extras(d, curve, ax_loss, ax_grad, color, i, label):
        x = _fact(d, "fade_point")
        text = f"|gradient| = 0.1 at m + log 9 = {x:.2f}"
        mark(ax_grad, x, float(curve.grad(np.array([x]))[0]), None if label is None else text, f"marker:fade_point:{i}", color=color)
        return text

    fig, _ = _two_panels(req, _gap_cut, xs, GAP_LABEL, r"$-\log\sigma(\Delta - m)$", r"gradient $\partial\ell/\partial r_c$" + "\n" + r"$= -\sigma(m - \Delta)$", extras)
    suptitle(fig, req.title("the margin m shifts the curve: the gradient fades at m + log 9"))
    return fig


def logexp(req: PlotRequest):
    d = req.derivations[0]
    margin = float(d.params["margin"])
    xs = req.xs((margin - 6, margin + 8))
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    zero_line(ax_grad)
    curve = _gap_cut(d)
    pair = along(Derivation(_pairwise_card(), {"margin": d.params["margin"]}), GAP, {"chosen_reward": GAP, "reject_reward": 0})
    _plot_curve(ax_loss, xs, curve.loss(xs), r"$\log(1 + e^{r_r - r_c + m})$ (LogExp)", "loss:logexp", COLORS[0])
    _plot_curve(ax_loss, xs, pair.loss(xs), r"$-\log\sigma(r_c - r_r - m)$ (PairWise)", "loss:pairwise", COLORS[1], linestyle="--")
    _plot_curve(ax_grad, xs, curve.grad(xs), "LogExp", "grad:logexp", COLORS[0])
    _plot_curve(ax_grad, xs, pair.grad(xs), "PairWise", "grad:pairwise", COLORS[1], linestyle="--")
    return _finish_panels(fig, ax_loss, ax_grad, GAP_LABEL, "loss", r"gradient $\partial\ell/\partial r_c$",
                          req.title("the same function in math (curves coincide)"))


def _pairwise_card():
    from ..registry import get

    return get("pairwise")


def logexp_overflow(req: PlotRequest):
    """Naive log(1 + e^{-Δ}) in float32 against the stable form, at gaps where exp overflows."""
    xs = req.xs((-120, 20), 1401).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        naive_loss = np.log(np.float32(1) + np.exp(-xs))
        naive_grad = -np.exp(-xs) / (np.float32(1) + np.exp(-xs))
    stable_loss = np.maximum(-xs, 0) + np.log1p(np.exp(-np.abs(xs)))
    e = np.exp(-np.abs(xs))  # never overflows
    stable_grad = -np.where(xs >= 0, e / (1 + e), 1 / (1 + e))
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    zero_line(ax_grad)
    _plot_curve(ax_loss, xs, stable_loss, "stable: -logsigmoid(Δ)", "loss:stable", COLORS[0])
    _plot_curve(ax_loss, xs, np.where(np.isfinite(naive_loss), naive_loss, np.nan), "naive float32: log(1 + exp(-Δ))", "loss:naive", COLORS[1], linestyle="--")
    _plot_curve(ax_grad, xs, stable_grad, "stable: -logsigmoid(Δ)", "grad:stable", COLORS[0])
    _plot_curve(ax_grad, xs, np.where(np.isfinite(naive_grad), naive_grad, np.nan), "naive float32: log(1 + exp(-Δ))", "grad:naive", COLORS[1], linestyle="--")
    ax_grad.set_ylim(-1.4, 0.4)
    overflow = float(-np.log(np.finfo(np.float32).max))
    for ax in axes[0]:
        vline(ax, overflow, f"Δ = {overflow:.1f}", "marker:overflow")
    return _finish_panels(fig, ax_loss, ax_grad, GAP_LABEL, "loss\n(naive: inf left of the line)",
                          "gradient " + r"$\partial\ell/\partial r_c$" + "\n(naive: NaN left of the line)",
                          f"LogExp loss in float32: exp(-Δ) overflows for Δ < {overflow:.1f}, the naive form gives inf and NaN, the stable form stays finite")


# ----------------------------------------------------------------------------- PRM

D = sp.Symbol("d", real=True)


def _prm_case(params) -> str:
    if params["labels"] == "hard":
        return "hard '+' (p = 1)" if float(params["p"]) == 1.0 else "hard '-' (p = 0)"
    return f"soft p = {float(params['p']):g}"


def prm(req: PlotRequest):
    xs = req.xs((-8, 8))
    card = req.card
    fig, axes = new_figure(1, 3, width=3.3)
    ax_loss, ax_grad, ax_tokens = axes[0]
    zero_line(ax_grad)
    drawn = []
    for i, d in enumerate(req.derivations):  # the requested cases, in colour
        text = _prm_case(d.params)
        curve = along(d, D, {"logits_0": D, "logits_1": 0})
        drawn.append(text)
        legend = text
        if d.params["labels"] == "soft" and 0.0 < float(d.params["p"]) < 1.0:
            x = _fact(d, "optimum")
            note = f"optimum d* = log(p/(1-p)) = {x:.2f}"
            legend = f"{text}: {note}" if len(req.param_sets) > 1 else text  # a sweep names each optimum in the legend
            mark(ax_loss, x, float(curve.loss(np.array([x]))[0]), None if len(req.param_sets) > 1 else note, f"marker:optimum:{i}", color=COLORS[i])
            mark(ax_grad, x, 0.0, "", f"marker:optimum_gradient:{i}", color=COLORS[i])
        _plot_curve(ax_loss, xs, curve.loss(xs), legend, f"loss:{text}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), legend, f"grad:{text}", COLORS[i])
    for p, style in ((1.0, ":"), (0.0, (0, (1, 3)))):  # the hard labels for reference, in grey
        given = {"labels": "hard", "p": p}
        text = _prm_case(given)
        if text in drawn:
            continue
        curve = along(Derivation(card, card.resolve(given)), D, {"logits_0": D, "logits_1": 0})
        _plot_curve(ax_loss, xs, curve.loss(xs), f"{text}, for reference", f"loss:{text}", "0.5", linestyle=style, linewidth=1.2)
        _plot_curve(ax_grad, xs, curve.grad(xs), f"{text}, for reference", f"grad:{text}", "0.5", linestyle=style, linewidth=1.2)
    for ax in (ax_loss, ax_grad):
        ax.set_xlabel(r"logit difference $d = z_+ - z_-$")
        ax.legend()
    ax_loss.set_ylabel(r"$\ell = -p\log\sigma(d) - (1-p)\log\sigma(-d)$", fontsize=7.5)
    ax_grad.set_ylabel(r"gradient $\partial\ell/\partial z_+$" + "\n" + r"$= \sigma(d) - p$")
    _token_strip(ax_tokens)
    suptitle(fig, req.title("only placeholder positions count; 2 reward tokens make a logistic loss"))
    return fig


PRM_EXAMPLE = [("Step 1: 2+3=5", False), ("ки", True), ("Step 2: 5·4=20", False), ("ки", True), ("Step 3: 20-1=18", False), ("ки", True)]
PRM_LABELS = ["-100", "+", "-100", "+", "-100", "-"]


def _token_strip(ax):
    """A tokenised example: which positions the loss counts (the placeholders)."""
    ax.set_axis_off()
    ax.set_title("which positions count", fontsize=8)
    for row, ((token, counted), label) in enumerate(zip(PRM_EXAMPLE, PRM_LABELS)):
        y = 0.92 - row * 0.135
        color = "#d62728" if counted else "0.85"
        box = ax.text(0.05, y, token, fontsize=7.5, transform=ax.transAxes, bbox=dict(boxstyle="round", fc=color, ec="none", alpha=0.35 if counted else 1))
        box.set_gid(f"token:{row}:{'counted' if counted else 'ignored'}")
        ax.text(0.72, y, f"label {label}", fontsize=7, transform=ax.transAxes, color="#d62728" if counted else "0.5")
    ax.text(0.05, 0.02, "a BPE merge of 'ки' with its neighbour\nremoves that step from the loss", fontsize=6.5, transform=ax.transAxes, color="0.3")


FIGURES: Dict[str, Callable[[PlotRequest], object]] = {
    "basics": basics,
    "gptlm": gptlm,
    "kd": kd,
    "dpo": dpo,
    "cdpo": cdpo,
    "ipo": ipo,
    "kto": kto,
    "vanilla-kto": vanilla_kto,
    "ppo-policy": ppo_policy,
    "ppo-value": ppo_value,
    "pairwise": pairwise,
    "logexp": logexp,
    "prm": prm,
}
