"""The lesson figure of every entry (see the curriculum): loss and gradient over the card's natural axis.

Every curve is the card's loss cut along one axis and lowered to numpy; every marked point
comes from a fact sympy computed. Lines carry a ``gid`` (``loss:<label>``, ``grad:<label>``,
``marker:<fact>``, ``zone:<fact>``) so that tests can find them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import sympy as sp

from ..cards.base import Card, Derivation
from ..symbolic import LogSigmoid, Sigmoid, elementary, lower
from .core import COLORS, finish_layout, format_params, mark, new_figure, sample_axis, shade, vline
from .cut import AxisCurve, along


@dataclass
class PlotRequest:
    """What to draw: one parameter set per swept value (or one), an optional x-range."""

    card: Card
    param_sets: List[Dict[str, object]]
    sweep: Optional[str] = None
    x_range: Optional[Tuple[float, float]] = None
    derivations: List[Derivation] = field(init=False)

    def __post_init__(self):
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
    """The figure title, wrapped to the figure's width (about 12 characters per inch at this size)."""
    import textwrap

    width = int(fig.get_figwidth() * 11)
    lines = textwrap.wrap(text, width) or [text]
    fig.suptitle("\n".join(lines))
    finish_layout(fig, len(lines))


def _fact(d: Derivation, name: str) -> float:
    return float(d.fact(name).value)


def _plot_curve(ax, xs, ys, label, gid, color, **kw):
    (line,) = ax.plot(xs, ys, color=color, label=label, **kw)
    line.set_gid(gid)
    return line


def _two_panels(req: PlotRequest, cut: Callable[[Derivation], AxisCurve], xs, xlabel: str, loss_label: str, grad_label: str,
                extras: Optional[Callable] = None, cols: int = 2):
    fig, axes = new_figure(1, cols)
    ax_loss, ax_grad = axes[0][0], axes[0][1]
    for i, d in enumerate(req.derivations):
        curve = cut(d)
        tag = req.label(i) or "loss"
        _plot_curve(ax_loss, xs, curve.loss(xs), req.label(i) or None, f"loss:{tag}", COLORS[i % len(COLORS)])
        _plot_curve(ax_grad, xs, curve.grad(xs), req.label(i) or None, f"grad:{tag}", COLORS[i % len(COLORS)])
        if extras:
            extras(d, curve, ax_loss, ax_grad, COLORS[i % len(COLORS)], i)
    ax_loss.set_xlabel(xlabel)
    ax_grad.set_xlabel(xlabel)
    ax_loss.set_ylabel(loss_label)
    ax_grad.set_ylabel(grad_label)
    ax_grad.axhline(0, color="0.6", linewidth=0.8)
    for ax in (ax_loss, ax_grad):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    suptitle(fig, req.title())
    return fig, axes


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
    _plot_curve(ax_grad, xs, curve.grad(xs), r"$\frac{d}{dx}[-\log\sigma(x)] = \sigma(x) - 1$", "grad:-log sigmoid", COLORS[1])
    left, right = _fact(d, "gradient_limit_neg_inf"), _fact(d, "gradient_limit_pos_inf")
    for y, name, text in ((left, "gradient_limit_neg_inf", "→ -1 as x → -∞: strongest push"), (right, "gradient_limit_pos_inf", "→ 0 as x → +∞: no push")):
        line = ax_grad.axhline(y, color="0.5", linestyle=":", linewidth=1)
        line.set_gid(f"limit:{name}")
        ax_grad.annotate(text, (xs[0] if y < 0 else xs[-1], y), xytext=(4 if y < 0 else -4, 5), textcoords="offset points",
                         ha="left" if y < 0 else "right", fontsize=7)
    mark(ax_grad, 0.0, float(curve.grad(np.array([0.0]))[0]), "x = 0: gradient -1/2", "marker:gradient_at_zero")
    for ax in axes[0]:
        ax.set_xlabel("$x$")
        ax.legend(loc="best")
    ax_loss.set_ylabel("value")
    ax_grad.set_ylabel("gradient")
    suptitle(fig, req.title("the three curves to know by heart"))
    return fig


# ----------------------------------------------------------------------------- SFT


Z = sp.Symbol("z_0", real=True)


def gptlm(req: PlotRequest):
    xs = req.xs((-6, 6))
    card = req.card
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    for i, label in enumerate(("0", "1")):
        d = Derivation(card, card.resolve({"label": label}))
        curve = along(d, Z, {"logits_0": Z, "logits_1": 0, "logits_2": 0})
        text = "target token 0 (label y = 0)" if label == "0" else "another token is the target (y = 1)"
        _plot_curve(ax_loss, xs, curve.loss(xs), text, f"loss:label={label}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), (r"$p_0 - 1$" if label == "0" else r"$p_0$"), f"grad:label={label}", COLORS[i])
    _plot_curve(ax_grad, xs, np.zeros_like(xs), "label -100 (prompt): no gradient", "grad:masked", "0.4", linestyle="--")
    return _finish_panels(fig, ax_loss, ax_grad, r"logit $z_0$ ($z_1 = z_2 = 0$)", r"$\mathcal{L} = \mathrm{LSE}(z) - z_y$",
                          r"$\partial\mathcal{L}/\partial z_0 = p_0 - 1[y = 0]$", req.title("next-token cross-entropy over a 3-token vocabulary"))


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
    _plot_curve(ax_loss, xs, curve.loss(xs), r"cross-entropy $-\sum_k q_k \log p_k$ (KDLoss)", "loss:cross-entropy", COLORS[0])
    _plot_curve(ax_loss, xs, curve.loss(xs) - entropy, r"$\mathrm{KL}(q\,\|\,p) = $ CE $- H(q)$", "loss:kl", COLORS[2], linestyle="--")
    _plot_curve(ax_grad, xs, curve.grad(xs), r"$p_{S,0} - q_0$", "grad:cross-entropy", COLORS[1])
    z_star = _solve_on_axis(curve, xs)
    mark(ax_loss, z_star, float(curve.loss(np.array([z_star]))[0]), f"p_S,0 = q_0 at z_0 = {z_star:.3g}", "marker:student_matches_teacher")
    mark(ax_grad, z_star, 0.0, "gradient 0", "marker:gradient_zero")
    ax_loss.annotate(f"constant gap H(q) = {entropy:.3f}", (xs[-1], float(curve.loss(xs[-1:])[0]) - entropy / 2), xytext=(-4, 0),
                     textcoords="offset points", ha="right", fontsize=7)
    return _finish_panels(fig, ax_loss, ax_grad, r"student logit $z_0$ (teacher logits $t$ = (1, 0, -1))", "loss",
                          r"$\partial\mathcal{L}/\partial z_0$", req.title("minimising CE to the teacher minimises KL(q‖p)"))


def _finish_panels(fig, ax_loss, ax_grad, xlabel: str, loss_label: str, grad_label: str, title: str, legend: bool = True):
    """Axis labels, legends and the title of a loss panel beside a gradient panel."""
    for ax in (ax_loss, ax_grad):
        ax.set_xlabel(xlabel)
        if legend:
            ax.legend(loc="best")
    ax_loss.set_ylabel(loss_label)
    ax_grad.set_ylabel(grad_label)
    suptitle(fig, title)
    return fig


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


def dpo(req: PlotRequest):
    xs = req.xs(_margin_range(req))

    def extras(d, curve, ax_loss, ax_grad, color, i):
        beta = float(d.params["beta"])
        weight_limit = _fact(d, "weight_wrong_order")
        line = ax_grad.axhline(-weight_limit, color=color, linestyle=":", linewidth=1)
        line.set_gid(f"limit:weight_wrong_order:{i}")
        mark(ax_grad, 0.0, -beta / 2, f"h = 0: -β/2 = {-beta / 2:g}", f"marker:weight_at_zero:{i}", color=color)

    fig, axes = _two_panels(req, _pair_cut, xs, r"margin $h = (\pi^c - \pi^r) - (\pi^c_{ref} - \pi^r_{ref})$",
                            r"$\mathcal{L} = -\log\sigma(\beta h)$", r"$\partial\mathcal{L}/\partial h = -\beta\sigma(-\beta h)$", extras)
    axes[0][1].annotate("wrong order: push → β", (xs[0], -min(float(p["beta"]) for p in req.param_sets)), xytext=(4, -12),
                        textcoords="offset points", fontsize=7)
    return fig


def cdpo(req: PlotRequest):
    xs = req.xs(_margin_range(req, 6.0))

    def extras(d, curve, ax_loss, ax_grad, color, i):
        h_star = d.fact("minimum").value
        if h_star.is_finite:
            x = float(h_star)
            mark(ax_loss, x, float(curve.loss(np.array([x]))[0]), f"min at βh* = log((1-ε)/ε) = {float(d.fact('beta_times_minimum').value):.3g}",
                 f"marker:minimum:{i}", color=color)
            mark(ax_grad, x, 0.0, "", f"marker:minimum_gradient:{i}", color=color)

    return _two_panels(req, _pair_cut, xs, r"margin $h$", r"$-(1-\varepsilon)\log\sigma(\beta h) - \varepsilon\log\sigma(-\beta h)$",
                       r"$\partial\mathcal{L}/\partial h$", extras)[0]


def ipo(req: PlotRequest):
    targets = [1 / (2 * float(p["beta"])) for p in req.param_sets]
    span = max(targets) * 2.5
    xs = req.xs((-span, 2 * span))

    def extras(d, curve, ax_loss, ax_grad, color, i):
        x = float(d.fact("target").value)
        mark(ax_loss, x, 0.0, f"target 1/(2β) = {x:g}", f"marker:target:{i}", color=color)
        mark(ax_grad, x, 0.0, "", f"marker:target_gradient:{i}", color=color)

    return _two_panels(req, _pair_cut, xs, r"margin $h$", r"$(h - \frac{1}{2\beta})^2$", r"$\partial\mathcal{L}/\partial h = 2(h - \frac{1}{2\beta})$", extras)[0]


# ----------------------------------------------------------------------------- KTO

DELTA = sp.Symbol("Delta", real=True)
REFERENCE_POINT = 2.0  # the KL batch's mean log-ratio in the figure


def _kto_cut(card, params, arm):
    d = Derivation(card, card.resolve({**{k: v for k, v in params.items() if v is not None}, "arm": arm}))
    side = ("policy_chosen_logps", "reference_chosen_logps") if arm == "desirable" else ("policy_rejected_logps", "reference_rejected_logps")
    return d, along(d, DELTA, {side[0]: DELTA, side[1]: 0, "policy_KL_logps": REFERENCE_POINT, "reference_KL_logps": 0})


def kto(req: PlotRequest):
    params = req.base
    beta = float(params["beta"])
    xs = req.xs((REFERENCE_POINT - 10 / beta, REFERENCE_POINT + 10 / beta))
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    for i, arm in enumerate(("desirable", "undesirable")):
        d, curve = _kto_cut(req.card, params, arm)
        text = {"desirable": r"desirable: $w_D(1 - \sigma(\beta(\Delta - z)))$", "undesirable": r"undesirable: $w_U(1 - \sigma(\beta(z - \Delta)))$"}[arm]
        _plot_curve(ax_loss, xs, curve.loss(xs), text, f"loss:{arm}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), arm, f"grad:{arm}", COLORS[i])
        peak = float(d.fact("gradient_peak").value.subs(sp.Symbol("z_ref", real=True), REFERENCE_POINT))  # sympy found Δ = z
        mark(ax_grad, peak, float(d.fact("gradient_peak_value").value), f"peak ∓wβ/4 at Δ = z", f"marker:gradient_peak:{arm}", color=COLORS[i])
    dpo_like = -beta / (1 + np.exp(beta * (xs - REFERENCE_POINT)))
    _plot_curve(ax_grad, xs, dpo_like, r"DPO-style $-\beta\sigma(-\beta(\Delta - z))$: no saturation on the left", "grad:dpo-comparison", "0.5", linestyle="--")
    for ax in axes[0]:
        vline(ax, REFERENCE_POINT, f"reference point z = {REFERENCE_POINT:g}", "marker:reference_point")
    _finish_panels(fig, ax_loss, ax_grad, r"log-ratio $\Delta = \pi - \pi_{ref}$", "loss", r"$\partial\ell/\partial\Delta$ (bell-shaped)",
                   req.title(f"reference point z = max(0, mean KL) = {REFERENCE_POINT:g}, detached"))
    ax_grad.legend(loc="lower right")  # the curves fill the top of the gradient panel
    return fig


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
    fig, axes = new_figure(1, 2, width=3.6, height=3.2)
    for ax, values, name, gid in ((axes[0][0], vanilla, "vanilla KTO: chosen and rejected losses concatenated", "surface:vanilla-kto"),
                                  (axes[0][1], dpo, "DPO: a function of the margin Δc - Δr only", "surface:dpo")):
        mesh = ax.pcolormesh(gc, gr, values, shading="auto", cmap="viridis")
        mesh.set_gid(gid)
        ax.contour(gc, gr, values, levels=8, colors="white", linewidths=0.6)
        fig.colorbar(mesh, ax=ax, shrink=0.85)
        ax.set_xlabel(r"$\Delta_c = \pi^c - \pi^c_{ref}$")
        ax.set_ylabel(r"$\Delta_r = \pi^r - \pi^r_{ref}$")
        ax.set_title(name, fontsize=8)
        ax.grid(False)
    suptitle(fig, req.title("one chosen and one rejected example"))
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
    for col, (adv, label) in enumerate(((1.0, "positive"), (-1.0, "negative"))):
        curve = along(d, R, {"log_probs": sp.log(R), "old_log_probs": 0, "advantages": adv})
        ax_loss, ax_grad = axes[0][col], axes[1][col]
        _plot_curve(ax_loss, xs, curve.loss(xs), r"$-\min(rA, \mathrm{clip}(r)A)$", f"loss:A_{label}", COLORS[col])
        _plot_curve(ax_loss, xs, -adv * xs, r"unclipped $-rA$", f"loss:unclipped_A_{label}", "0.55", linestyle=":")
        _plot_curve(ax_grad, xs, curve.grad(xs), r"$\partial\mathcal{L}/\partial r$", f"grad:A_{label}", COLORS[col])
        for lo_, hi_ in _interval_bounds(d.fact(f"zero_gradient_ratios_A_{label}").value, xs[0], xs[-1]):
            for ax in (ax_loss, ax_grad):
                shade(ax, lo_, hi_, "clipped: zero gradient", f"zone:zero_gradient_ratios_A_{label}")
        low, high = (float(v) for v in req.card.bounds(d.params))
        for ax in (ax_loss, ax_grad):
            vline(ax, 1 - low, "1-ε", "marker:clip_low", left=True)
            vline(ax, 1 + high, "1+ε", "marker:clip_high")
            ax.set_xlabel("ratio $r = \\pi/\\pi_{old}$")
        ax_loss.set_title(f"A {'>' if adv > 0 else '<'} 0 (A = {adv:+g})")
        ax_loss.set_ylabel("loss")
        ax_grad.set_ylabel(r"$\partial\mathcal{L}/\partial r$")
        ax_loss.legend(loc="best")
    suptitle(fig, req.title("once r leaves the trust region in the favoured direction, the gradient is zero"))
    return fig


V = sp.Symbol("v", real=True)
OLD_VALUE, RETURN = 0.0, 1.0


def ppo_value(req: PlotRequest):
    d = req.derivations[0]
    xs = req.xs((OLD_VALUE - 1.5, RETURN + 1.5))
    cut = along(d, V, {"values": V, "old_values": OLD_VALUE, "returns": RETURN})
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    low, high = req.card.bounds(d.params)
    unclipped = 0.5 * (xs - RETURN) ** 2
    _plot_curve(ax_loss, xs, unclipped, r"unclipped $\frac{1}{2}(v-R)^2$", "loss:unclipped", "0.55", linestyle=":")
    _plot_curve(ax_loss, xs, cut.loss(xs), "max (ValueLoss): pessimistic", "loss:max", COLORS[0], linewidth=2.2)
    _plot_curve(ax_grad, xs, cut.grad(xs), "max (ValueLoss)", "grad:max", COLORS[0], linewidth=2.2)
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
            vline(ax, OLD_VALUE + high, "v_old+ε", "marker:clip_high")
            vline(ax, OLD_VALUE - low, "v_old-ε", "marker:clip_low", left=True)
    for ax in (ax_loss, ax_grad):
        vline(ax, RETURN, "R", "marker:return", color=COLORS[2])
        ax.set_xlabel(f"value $v$ ($v_{{old}}$ = {OLD_VALUE:g}, R = {RETURN:g})")
        ax.legend(loc="best")
    ax_loss.set_ylabel("loss")
    ax_grad.set_ylabel(r"$\partial\mathcal{L}/\partial v$")
    suptitle(fig, req.title("why max and not min: the clip binds only when it makes the loss larger"))
    return fig


# ----------------------------------------------------------------------------- reward models

GAP = sp.Symbol("Delta", real=True)


def _gap_cut(d):
    return along(d, GAP, {"chosen_reward": GAP, "reject_reward": 0})


def pairwise(req: PlotRequest):
    margins = [float(p["margin"]) for p in req.param_sets]
    xs = req.xs((min(margins) - 6, max(margins) + 8))

    def extras(d, curve, ax_loss, ax_grad, color, i):
        x = _fact(d, "fade_point")
        mark(ax_grad, x, float(curve.grad(np.array([x]))[0]), f"fades (|g| = 0.1) at m + log 9 = {x:.2f}", f"marker:fade_point:{i}", color=color,
             text_offset=(6, -12 - 10 * i))

    return _two_panels(req, _gap_cut, xs, r"reward gap $\Delta = r_c - r_r$", r"$-\log\sigma(\Delta - m)$", r"$\partial\ell/\partial r_c = -\sigma(m - \Delta)$", extras)[0]


def logexp(req: PlotRequest):
    d = req.derivations[0]
    margin = float(d.params["margin"])
    xs = req.xs((margin - 6, margin + 8))
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    curve = _gap_cut(d)
    pair = along(Derivation(_pairwise_card(), {"margin": d.params["margin"]}), GAP, {"chosen_reward": GAP, "reject_reward": 0})
    _plot_curve(ax_loss, xs, curve.loss(xs), r"$\log(1 + e^{r_r - r_c + m})$ (LogExp)", "loss:logexp", COLORS[0])
    _plot_curve(ax_loss, xs, pair.loss(xs), r"$-\log\sigma(r_c - r_r - m)$ (PairWise)", "loss:pairwise", COLORS[1], linestyle="--")
    _plot_curve(ax_grad, xs, curve.grad(xs), "LogExp", "grad:logexp", COLORS[0])
    _plot_curve(ax_grad, xs, pair.grad(xs), "PairWise", "grad:pairwise", COLORS[1], linestyle="--")
    return _finish_panels(fig, ax_loss, ax_grad, r"reward gap $\Delta = r_c - r_r$", "loss", r"$\partial\ell/\partial r_c$",
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
    _plot_curve(ax_loss, xs, stable_loss, "stable: -logsigmoid(Δ) (lossviz)", "loss:stable", COLORS[0])
    _plot_curve(ax_loss, xs, np.where(np.isfinite(naive_loss), naive_loss, np.nan), "naive float32 log(1 + exp(-Δ)) (seed)", "loss:naive", COLORS[1], linestyle="--")
    _plot_curve(ax_grad, xs, stable_grad, "stable", "grad:stable", COLORS[0])
    _plot_curve(ax_grad, xs, np.where(np.isfinite(naive_grad), naive_grad, np.nan), "naive float32: NaN past overflow", "grad:naive", COLORS[1], linestyle="--")
    overflow = float(-np.log(np.finfo(np.float32).max))
    for ax in axes[0]:
        vline(ax, overflow, f"exp(-Δ) overflows float32 at Δ = {overflow:.1f}", "marker:overflow")
    return _finish_panels(fig, ax_loss, ax_grad, r"reward gap $\Delta = r_c - r_r$", "loss (naive: inf left of the line)",
                          r"$\partial\ell/\partial r_c$", "LogExp loss in float32: naive form vs stable form")


# ----------------------------------------------------------------------------- PRM

D = sp.Symbol("d", real=True)


def prm(req: PlotRequest):
    xs = req.xs((-8, 8))
    card = req.card
    fig, axes = new_figure(1, 3, width=3.3)
    ax_loss, ax_grad, ax_tokens = axes[0]
    soft = req.param_sets
    cases = [("hard '+'", {"labels": "hard", "p": 1.0}), ("hard '-'", {"labels": "hard", "p": 0.0})]
    cases += [(f"soft p = {float(p['p']):g}", {"labels": "soft", "p": float(p["p"])}) for p in soft if p["labels"] == "soft"]
    for i, (text, given) in enumerate(cases):
        d = Derivation(card, card.resolve(given))
        curve = along(d, D, {"logits_0": D, "logits_1": 0})
        _plot_curve(ax_loss, xs, curve.loss(xs), text, f"loss:{text}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), text, f"grad:{text}", COLORS[i])
        if given["labels"] == "soft":
            x = _fact(d, "optimum")
            mark(ax_loss, x, float(curve.loss(np.array([x]))[0]), f"optimum d* = log(p/(1-p)) = {x:.2f}", f"marker:optimum:{i}", color=COLORS[i])
            mark(ax_grad, x, 0.0, "", f"marker:optimum_gradient:{i}", color=COLORS[i])
    for ax in (ax_loss, ax_grad):
        ax.set_xlabel(r"logit difference $d = z_+ - z_-$")
        ax.legend(loc="best")
    ax_loss.set_ylabel(r"$\ell = -p\log\sigma(d) - (1-p)\log\sigma(-d)$", fontsize=7.5)
    ax_grad.set_ylabel(r"$\partial\ell/\partial z_+ = \sigma(d) - p$")
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
        y = 0.9 - row * 0.14
        color = "#d62728" if counted else "0.85"
        box = ax.text(0.05, y, token, fontsize=7.5, transform=ax.transAxes, bbox=dict(boxstyle="round", fc=color, ec="none", alpha=0.35 if counted else 1))
        box.set_gid(f"token:{row}:{'counted' if counted else 'ignored'}")
        ax.text(0.72, y, f"label {label}", fontsize=7, transform=ax.transAxes, color="#d62728" if counted else "0.5")
    ax.text(0.05, 0.04, "a BPE merge of 'ки' with its neighbour\nremoves that step from the loss", fontsize=6.5, transform=ax.transAxes, color="0.3")


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
