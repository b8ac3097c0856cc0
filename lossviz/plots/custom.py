"""The lesson figures that need their own drawing; each is named by its card (``CustomFigure``).

The other entries' figures are data on their cards, drawn by :func:`.lessons.draw_lesson`. These
ones draw something that form cannot say: several curves of different kinds on one panel (the
three basic curves, KD's constant gap, KTO's DPO-style comparison, PPO's clipped and unclipped
terms), a surface (vanilla KTO), a token strip (PRM), a float32 overflow (LogExp). The same
conventions hold: gids ``loss:``, ``grad:``, ``marker:<fact>``, ``zone:<fact>``; every builder ends
with :func:`.lessons.suptitle` (or ``_finish_panels``), which places the labels.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..cards.base import Derivation
from ..symbolic import LogSigmoid, Sigmoid, elementary, lower
from .core import COLORS, mark, new_figure, shade, vline, zero_line
from .cut import AxisCurve, along
from .lessons import PlotRequest, _fact, _finish_panels, _interval_bounds, _plot_curve, axis_xs, on_axis, suptitle
from .placement import label_hline, label_point



# ----------------------------------------------------------------------------- basics


def basics(req: PlotRequest):
    d = req.derivations[0]
    xs = axis_xs(req)
    curve = on_axis(req, d)
    sigma = lower(Sigmoid(req.card.axis.x), [req.card.axis.symbol], "numpy")
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
    return _finish_panels(fig, ax_loss, ax_grad, req.card.axis.label, "value", r"gradient $\frac{d}{dx}[-\log\sigma(x)]$",
                          req.title("the three curves to know by heart"))


# ----------------------------------------------------------------------------- SFT


def gptlm(req: PlotRequest):
    xs = axis_xs(req)
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    for i, d in enumerate(req.derivations):
        y = d.params["label"]
        curve = on_axis(req, d)
        text = f"target y = {y}" + (" (the moving logit)" if y == "0" else "")
        _plot_curve(ax_loss, xs, curve.loss(xs), text, f"loss:label={y}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), (r"$y = 0$: $p_0 - 1$" if y == "0" else rf"$y = {y}$: $p_0$"), f"grad:label={y}", COLORS[i],
                    linestyle="-" if i == 0 else (0, (4, 2 + i)))
    _plot_curve(ax_grad, xs, np.zeros_like(xs), "label -100 (prompt): no gradient", "grad:masked", "0.4", linestyle=":")
    return _finish_panels(fig, ax_loss, ax_grad, req.card.axis.label,
                          r"$\mathcal{L} = \mathrm{LSE}(z) - z_y$", r"gradient $\partial\mathcal{L}/\partial z_0$" + "\n" + r"$= p_0 - 1[y = 0]$",
                          req.title("over 3 tokens, ∂L/∂z_0 is p_0 - 1 when token 0 is the target and p_0 when another is"))


def kd(req: PlotRequest):
    d = req.derivations[0]
    xs = axis_xs(req)
    curve = on_axis(req, d)
    cut = req.card.axis.values(d.params)
    teacher = np.array([float(cut[f"teacher_logits_{k}"]) for k in range(3)])
    q = np.exp(teacher) / np.exp(teacher).sum()
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
    return _finish_panels(fig, ax_loss, ax_grad, req.card.axis.label, "loss",
                          r"$\partial\mathcal{L}/\partial z_0$", req.title("minimising CE to the teacher minimises KL(q‖p)"))


def _solve_on_axis(curve: AxisCurve, xs) -> float:
    """The zero of the axis gradient, found by sympy (nsolve from the sign change on the grid)."""
    g = curve.grad(xs)
    k = int(np.argmax(np.sign(g[:-1]) != np.sign(g[1:])))
    return float(sp.nsolve(elementary(curve.grad_expr), curve.x, float(xs[k])))



# ----------------------------------------------------------------------------- KTO

def _reference_point(req: PlotRequest) -> float:
    """z on the card's axis: the KL batch's mean log-ratio, clamped at 0."""
    cut = req.card.axis.values(req.base)
    return max(0.0, float(cut["policy_KL_logps"] - cut["reference_KL_logps"]))


KTO_LOSS_TEXT = {"desirable": r"desirable: $w_D(1 - \sigma(\beta(\Delta - z)))$", "undesirable": r"undesirable: $w_U(1 - \sigma(\beta(z - \Delta)))$"}


def kto(req: PlotRequest):
    REFERENCE_POINT = _reference_point(req)
    xs = axis_xs(req)
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    zero_line(ax_grad)
    compared = set()
    for i, d in enumerate(req.derivations):
        arm, b = d.params["arm"], float(d.params["beta"])
        curve = on_axis(req, d)
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
    return _finish_panels(fig, ax_loss, ax_grad, req.card.axis.label, "loss", r"gradient $\partial\ell/\partial\Delta$",
                          req.title(f"reference point z = max(0, mean KL log-ratio) = {REFERENCE_POINT:g}, detached"))


def vanilla_kto(req: PlotRequest):
    d = req.derivations[0]
    beta = float(d.params["beta"])
    lo, hi = req.x_range or req.card.axis.default_range(d.params)
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

def ppo_policy(req: PlotRequest):
    d = req.derivations[0]
    dual = d.params.get("dual_clip")
    xs = axis_xs(req)  # with a dual clip c, the declared range shows the region r > c too
    R = req.card.axis.x
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
            ax.set_xlabel(req.card.axis.label)
            ax.legend()
        ax_loss.set_title(f"A {'>' if adv > 0 else '<'} 0 (A = {adv:+g})")
        ax_loss.set_ylabel("loss")
        ax_grad.set_ylabel(r"$\partial\mathcal{L}/\partial r$")
    text = "the gradient is zero once r leaves the trust region in the direction A favours"
    if dual is not None:
        text += "; dual clip c: for A < 0 and r > c (r grew although A < 0) the loss is capped at c|A| and the gradient is zero"
    suptitle(fig, req.title(text))
    return fig


def ppo_value(req: PlotRequest):
    d = req.derivations[0]
    xs = axis_xs(req)
    cut = on_axis(req, d)
    fixed = req.card.axis.values(d.params)
    OLD_VALUE, RETURN = float(fixed["old_values"]), float(fixed["returns"])
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
        ax.set_xlabel(req.card.axis.label)
        ax.legend()
    ax_loss.set_ylabel("loss")
    ax_grad.set_ylabel(r"gradient $\partial\mathcal{L}/\partial v$")
    suptitle(fig, req.title("why max and not min: the clip binds only when it makes the loss larger"))
    return fig


# ----------------------------------------------------------------------------- reward models

GAP = sp.Symbol("Delta", real=True)
GAP_LABEL = r"reward gap $\Delta = r_c - r_r$"


def logexp(req: PlotRequest):
    d = req.derivations[0]
    xs = axis_xs(req)
    fig, axes = new_figure(1, 2)
    ax_loss, ax_grad = axes[0]
    zero_line(ax_grad)
    curve = on_axis(req, d)
    pairwise = _pairwise_card()  # the same curve written stably, on its own card's axis
    pair = along(Derivation(pairwise, {"margin": d.params["margin"]}), pairwise.axis.x, pairwise.axis.values(d.params))
    _plot_curve(ax_loss, xs, curve.loss(xs), r"$\log(1 + e^{r_r - r_c + m})$ (LogExp)", "loss:logexp", COLORS[0])
    _plot_curve(ax_loss, xs, pair.loss(xs), r"$-\log\sigma(r_c - r_r - m)$ (PairWise)", "loss:pairwise", COLORS[1], linestyle="--")
    _plot_curve(ax_grad, xs, curve.grad(xs), "LogExp", "grad:logexp", COLORS[0])
    _plot_curve(ax_grad, xs, pair.grad(xs), "PairWise", "grad:pairwise", COLORS[1], linestyle="--")
    return _finish_panels(fig, ax_loss, ax_grad, req.card.axis.label, "loss", r"gradient $\partial\ell/\partial r_c$",
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

def _prm_case(params) -> str:
    if params["labels"] == "hard":
        return "hard '+' (p = 1)" if float(params["p"]) == 1.0 else "hard '-' (p = 0)"
    return f"soft p = {float(params['p']):g}"


def prm(req: PlotRequest):
    xs = axis_xs(req)
    card = req.card
    fig, axes = new_figure(1, 3, width=3.3)
    ax_loss, ax_grad, ax_tokens = axes[0]
    zero_line(ax_grad)
    drawn = []
    for i, d in enumerate(req.derivations):  # the requested cases, in colour
        text = _prm_case(d.params)
        curve = on_axis(req, d)
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
        reference = card.resolve(given)
        curve = along(Derivation(card, reference), card.axis.x, card.axis.values(reference))
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
