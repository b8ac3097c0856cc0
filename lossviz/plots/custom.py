"""The lesson figures that need their own drawing; each is named by its card (``CustomFigure``).

Every other entry's figure is data on its card (panels, reference curves, marked facts), drawn by
:func:`.lessons.draw_lesson`. These three draw what that form cannot say, because none of them
is a curve along the card's axis:

- ``vanilla_kto``: a surface over both log-ratios (the chosen and rejected sides couple, so no
  single axis shows the loss);
- ``prm``: beside the loss and gradient along d, a token strip showing which positions count
  (text boxes, not data);
- ``logexp_overflow``: the naive form evaluated in float32, where it overflows; the card's
  lowering is float64 and stable by construction, so the failure must be computed by hand.

The same conventions hold: gids ``loss:``, ``grad:``, ``marker:<fact>``; every builder ends with
:func:`.lessons.suptitle` (or ``_finish_panels``), which places the labels.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..cards.base import Derivation
from ..symbolic import LogSigmoid, lower
from .core import COLORS, mark, new_figure, vline, zero_line
from .cut import along
from .lessons import PlotRequest, _fact, _finish_panels, _plot_curve, axis_xs, on_axis, suptitle


# ----------------------------------------------------------------------------- vanilla KTO

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


# ----------------------------------------------------------------------------- reward models

GAP_LABEL = r"reward gap $\Delta = r_c - r_r$"


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
            note = f"optimum $d^*$ = log(p/(1−p)) = {x:.2f}"
            legend = f"{text}: {note}" if len(req.param_sets) > 1 else text  # a sweep names each optimum in the legend
            mark(ax_loss, x, float(curve.loss(np.array([x]))[0]), None if len(req.param_sets) > 1 else note, f"marker:optimum:{i}", color=COLORS[i])
            mark(ax_grad, x, 0.0, "", f"marker:optimum_gradient:{i}", color=COLORS[i])
        _plot_curve(ax_loss, xs, curve.loss(xs), legend, f"loss:{text}", COLORS[i])
        _plot_curve(ax_grad, xs, curve.grad(xs), legend, f"grad:{text}", COLORS[i])
    # the hard labels for reference, in grey: '+' dashed and dark, '−' dotted and light, told apart in legend and panel
    for p, style, grey in ((1.0, (0, (5, 2)), "0.3"), (0.0, ":", "0.6")):
        given = {"labels": "hard", "p": p}
        text = _prm_case(given)
        if text in drawn:
            continue
        reference = card.resolve(given)
        curve = along(Derivation(card, reference), card.axis.x, card.axis.values(reference))
        _plot_curve(ax_loss, xs, curve.loss(xs), f"{text}, for reference", f"loss:{text}", grey, linestyle=style, linewidth=1.4)
        _plot_curve(ax_grad, xs, curve.grad(xs), f"{text}, for reference", f"grad:{text}", grey, linestyle=style, linewidth=1.4)
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
