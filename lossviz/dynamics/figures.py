"""The figures of the scenarios (matplotlib only; they read a finished Simulation).

Each figure is ≥ 1200 px wide at 150 dpi, the line of a recorded series carries a ``gid`` naming the
run and series (``run:<loss>:<series>``) so tests and the explorer can read the plotted data, and the layout is finished by
:func:`lossviz.plots.placement.finish` (legends and labels where they collide with nothing).
"""

from __future__ import annotations

import math

import numpy as np

from ..plots.core import COLORS, format_params
from ..plots.placement import finish, label_hline, label_point

LOSS_COLORS = {"dpo": COLORS[0], "ipo": COLORS[1], "cdpo": COLORS[2], "kto": COLORS[3], "vanilla-kto": COLORS[4],
               "ppo": COLORS[0], "ppo-noclip": COLORS[1], "ppo-dualclip": COLORS[2]}
LOSS_LABELS = {"dpo": "DPO", "ipo": "IPO", "cdpo": "cDPO", "kto": "KTO", "vanilla-kto": "vanilla KTO",
               "ppo": "PPO clip", "ppo-noclip": "no clip", "ppo-dualclip": "PPO clip + dual clip"}


def _figure(panels: int, width: float = 3.6, height: float = 3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height))
    return fig, list(fig.subplots(1, panels, squeeze=True)) if panels > 1 else [fig.subplots()]


def _title(sim, extra: str = "", title: str = "") -> str:
    # cDPO's ε matters only when cDPO ran
    shown = format_params(sim.params, skip=() if "cdpo" in sim.runs else ("label_smoothing",))
    settings = f"{sim.scenario.optimizer}, lr={sim.lr:g}, seed={sim.seed}"
    return f"{title or sim.scenario.title}  ({shown}; {settings}{extra})"


def _plot(ax, sim, loss, series, **style):
    x = sim.steps
    y = sim[loss][series]
    style.setdefault("color", LOSS_COLORS[loss])
    (line,) = ax.plot(x, y, **style)
    line.set_gid(f"run:{loss}:{series}")
    return line


def _guide_hline(ax, y, text, color):
    line = ax.axhline(y, color=color, linestyle=(0, (4, 3)), linewidth=0.9)
    line.set_gid(f"guide:{text}")
    label_hline(ax, y, text, color=color)
    return line


def _zero(ax):
    ax.axhline(0, color="0.6", linewidth=0.8).set_gid("guide:zero")


def generic(sim):
    """Margin, chosen and rejected log-probs and KL(π‖π_ref) of every run."""
    fig, axes = _figure(3)
    for loss in sim.runs:
        label = LOSS_LABELS.get(loss, loss)
        _plot(axes[0], sim, loss, "margin", label=label)
        _plot(axes[1], sim, loss, "logp_chosen", label=f"{label}: log π(y_c)")
        _plot(axes[1], sim, loss, "logp_rejected", linestyle="--", label=f"{label}: log π(y_r)")
        _plot(axes[2], sim, loss, "kl", label=label)
    for ax, ylabel in zip(axes, ("margin h", "log-probability", "KL(π‖π_ref)")):
        ax.set_xlabel(sim.scenario.step_name)
        ax.set_ylabel(ylabel)
        ax.legend()
    return finish(fig, _title(sim))


def deterministic_preferences(sim):
    fig, (ax_h, ax_kl, ax_push) = _figure(3)
    for loss, run in sim.runs.items():
        label = LOSS_LABELS[loss] + (f" (ε={sim.params['label_smoothing']:g})" if loss == "cdpo" else "")
        _plot(ax_h, sim, loss, "margin", label=label)
        _plot(ax_kl, sim, loss, "kl", label=label)
        _plot(ax_push, sim, loss, "push_chosen", label=label)
        target = run.params["fixed_point_margin"]
        if math.isfinite(target):
            name = "1/(2β)" if loss == "ipo" else "log((1−ε)/ε)/β"
            _guide_hline(ax_h, target, f"{name} = {target:.3g}", LOSS_COLORS[loss])
    _zero(ax_push)
    # symlog: DPO's push decays towards 0 without reaching it, which a linear axis hides after ~50 steps
    ax_push.set_yscale("symlog", linthresh=1e-3)
    if "dpo" in sim.runs:
        # DPO's KL tends to that of the point mass on y_c: π(y_r) → 0 drives the margin but costs no KL
        bound = -math.log(float(sim["dpo"]["p_chosen"][0]))
        _guide_hline(ax_kl, bound, f"−log π_ref(y_c) = {bound:.3f}", LOSS_COLORS["dpo"])
        ax_kl.set_ylim(top=1.15 * max(bound, ax_kl.get_ylim()[1]))  # room for the label above the line
        last = float(sim["dpo"]["push_chosen"][-1])
        label_point(ax_push, float(sim.steps[-1]), last, f"DPO: {last:.2g} > 0", color=LOSS_COLORS["dpo"])
    ax_h.set_title("the margin stops only for IPO and cDPO")
    ax_h.set_ylabel("margin h (log-ratio)")
    ax_kl.set_title("distance from the reference")
    ax_kl.set_ylabel("KL(π‖π_ref), exact")
    ax_push.set_title("push on log π(y_c)")
    ax_push.set_ylabel("push = −∂ℓ/∂log π(y_c) (symlog)")
    for ax in (ax_h, ax_kl, ax_push):
        ax.set_xlabel("step")
        ax.legend()
    return finish(fig, _title(sim))


def beta_sweep(sim):
    fig, (ax_h, ax_kl, ax_dpo) = _figure(3)
    betas = sim.extra["betas"]
    for loss, run in sim.runs.items():
        label = LOSS_LABELS[loss] + (f" (ε={sim.params['label_smoothing']:g})" if loss == "cdpo" else "")
        color = LOSS_COLORS[loss]
        (line,) = ax_h.plot(betas, run["final_margin"], "o-", color=color, label=f"{label} after {len(sim.steps) - 1} steps")
        line.set_gid(f"run:{loss}:final_margin")
        (line,) = ax_kl.plot(betas, run["final_kl"], "o-", color=color, label=label)
        line.set_gid(f"run:{loss}:final_kl")
        if loss in ("ipo", "cdpo"):
            fine = np.geomspace(betas[0], betas[-1], 200)
            closed = 1 / (2 * fine) if loss == "ipo" else math.log((1 - sim.params["label_smoothing"]) / sim.params["label_smoothing"]) / fine
            name = "1/(2β)" if loss == "ipo" else "log((1−ε)/ε)/β"
            # drawn wide and pale under the simulated points, which sit on it
            (line,) = ax_h.plot(fine, closed, color=color, linewidth=6, alpha=0.25, zorder=1, label=f"{name} (closed form)")
            line.set_gid(f"closed:{loss}")
    if "dpo" in sim.runs:
        run = sim.runs["dpo"]
        shades = np.linspace(0.35, 1.0, len(betas))
        # the growth per step on a log axis: at large β the margin itself looks flat, yet it still rises
        for k, beta in enumerate(betas):
            growth = np.diff(run["margin"][k])
            (line,) = ax_dpo.plot(sim.steps[1:], growth, color=LOSS_COLORS["dpo"], alpha=float(shades[k]), label=f"β={beta:.3g}")
            line.set_gid(f"growth:dpo:margin:{k}")  # one value fewer than the steps: not a recorded series
        ax_dpo.set_yscale("log")
        ax_dpo.set_title("DPO's margin keeps growing at every β")
        ax_dpo.set_xlabel("step k")
        ax_dpo.set_ylabel(r"growth per step $h_k - h_{k-1}$")
        ax_dpo.legend(ncol=2)
    else:
        ax_dpo.set_visible(False)
    for ax in (ax_h, ax_kl):
        ax.set_xscale("log")
        ax.set_xticks(betas, labels=[f"{b:.3g}" for b in betas])
        ax.minorticks_off()
        ax.set_xlabel("β (KL strength)")
    ax_h.legend()  # the KL panel uses the same colours
    ax_h.set_title("final margin against β")
    ax_kl.set_title("final distance from the reference")
    ax_h.set_yscale("log")
    ax_h.set_ylabel("final margin h")
    ax_kl.set_ylabel("final KL(π‖π_ref), exact")
    return finish(fig, _title(sim))


def likelihood_displacement(sim):
    fig, (ax_p, ax_h, ax_d, ax_f) = _figure(4, width=3.3)
    steps = sim.steps
    for n, (loss, run) in enumerate(sim.runs.items()):
        color = LOSS_COLORS[loss]
        name = LOSS_LABELS[loss]
        _plot(ax_p, sim, loss, "logp_chosen", label=f"{name}: log π(y_c)")
        if n == 0:
            _plot(ax_p, sim, loss, "logp_rejected", color="0.45", linestyle="--", label=f"{name}: log π(y_r)")
            _plot(ax_p, sim, loss, "logp_other", color="0.45", linestyle=":", label=f"{name}: log π(y_o)")
        _plot(ax_h, sim, loss, "margin", label=name)
        actual = np.diff(run["logp_chosen"])
        predicted = run["logp_chosen_first_order"][1:] - run["logp_chosen"][:-1]
        (line,) = ax_d.plot(steps[1:], actual, color=color, label=f"{name}: observed")
        line.set_gid(f"run:{loss}:dlogp_chosen")
        every = max(len(steps) // 25, 1)
        (line,) = ax_d.plot(steps[1::every], predicted[::every], "o", color=color, markersize=3, markerfacecolor="none",
                            label=f"{name}: first order (exact as η→0)")
        line.set_gid(f"run:{loss}:dlogp_chosen_first_order")
    # not a "guide": the legend must keep off this line too
    ax_d.axhline(0, color="0.6", linewidth=0.8).set_gid("reference:zero")
    ax_p.set_title("log-probabilities")
    ax_p.set_ylabel("log π(y)")
    ax_h.set_title("the margin grows")
    ax_h.set_ylabel("margin h")
    ax_d.set_title("one step's change of log π(y_c)")
    ax_d.set_ylabel(f"Δ log π(y_c) per step (η = {sim.lr:g})")
    for ax in (ax_p, ax_h, ax_d):
        ax.set_xlabel("step")
        ax.legend()
    _features_panel(ax_f, sim)
    # the title says what this run did (the first loss's run)
    first = next(iter(sim.runs.values()))["logp_chosen"]
    moved = "falls" if first[-1] < first[0] else "rises"
    name = LOSS_LABELS[next(iter(sim.runs))]
    return finish(fig, _title(sim, title=f"Likelihood displacement: {name}'s margin grows while log π(y_c) {moved}"))


def _features_panel(ax, sim):
    phi = sim.extra["features"]
    names = ("φ_c", "φ_r", "φ_o")
    colors = (COLORS[0], COLORS[1], "0.35")
    for k in range(3):
        (line,) = ax.plot([phi[k, 0]], [phi[k, 1]], "o", color=colors[k], markersize=6, label=names[k])
        line.set_gid(f"feature:{names[k]}")
    from matplotlib.lines import Line2D

    direction = phi[0] - phi[1]  # every DPO step moves θ along φ_c − φ_r
    ax.annotate("", xy=tuple(direction), xytext=(0, 0), arrowprops=dict(arrowstyle="->", color="k", linewidth=1.2))
    # φ̄ = Σ π(y)·φ(y): 0 at the uniform reference (the features are centred), then it follows the policy
    run = next(iter(sim.runs.values()))
    probs = np.exp(np.stack([run["logp_chosen"], run["logp_rejected"], run["logp_other"]], axis=1))  # (steps + 1, 3)
    means = probs @ phi
    (line,) = ax.plot([0], [0], "+", color="k", markersize=8, markeredgewidth=1.2, label="φ̄ at the reference (= 0)")
    line.set_gid("feature:mean-reference")
    (line,) = ax.plot(means[:, 0], means[:, 1], color="k", linestyle=":", linewidth=1.0, marker="x", markevery=[-1],
                      markersize=6, markeredgewidth=1.2, label=f"φ̄ over the run (× after {len(sim.steps) - 1} steps)")
    line.set_gid("feature:mean-path")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="k", marker=r"$\rightarrow$", markersize=11, linestyle="none"))
    labels.append("step direction φ_c − φ_r")
    span = np.abs(np.concatenate([phi, direction[None]])).max() * 1.25
    ax.set_xlim(-span, span)
    ax.set_ylim(-span, span)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("feature 1")
    ax.set_ylabel("feature 2")
    ax.set_title(f"features (CHES = {sim.params['ches']:g} at the reference)")
    ax.legend(handles, labels)


def noisy_labels(sim):
    fig, (ax_acc, ax_w, ax_kl) = _figure(3)
    for loss in sim.runs:
        label = LOSS_LABELS[loss]
        _plot(ax_acc, sim, loss, "accuracy", label=label)
        if np.isfinite(sim[loss]["weight_flipped"]).any():  # NaN when no label is flipped
            _plot(ax_w, sim, loss, "weight_flipped", label=f"{label}: flipped")
        _plot(ax_w, sim, loss, "weight_clean", linestyle="--", label=f"{label}: clean")
        _plot(ax_kl, sim, loss, "kl", label=label)
    ax_acc.set_title("ranking agrees with the hidden reward")
    ax_acc.set_ylabel("accuracy over all response pairs")
    ax_w.set_title("gradient weight per example")
    ax_w.set_ylabel("|∂ℓ_i/∂log π|")
    ax_kl.set_title("distance from the reference")
    ax_kl.set_ylabel("KL(π‖π_ref), exact")
    for ax in (ax_acc, ax_w, ax_kl):
        ax.set_xlabel("step")
        ax.legend()
    flipped = sim.extra["flipped"]
    return finish(fig, _title(sim, f"; {flipped} of {sim.extra['pairs']} labels flipped"))


def trust_region(sim):
    """Top row: the log-ratio distribution of each run, one panel each; bottom row: what clipping does per epoch."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    losses = list(sim.runs)
    fig = Figure(figsize=(13.0, 6.6))
    grid = fig.add_gridspec(2, 6)
    width = 6 // len(losses)
    tops = [fig.add_subplot(grid[0, k * width:(k + 1) * width]) for k in range(len(losses))]
    for ax in tops[1:]:
        ax.sharey(tops[0])
    ax_c, ax_d, ax_p = (fig.add_subplot(grid[1, 2 * k:2 * k + 2]) for k in range(3))
    epochs = sim.steps
    eps, dual = sim.extra["clip_eps"], sim.extra["dual_clip"]
    negative = sim.extra["negative"]
    ink, dash_dot = "0.15", (0, (5, 2, 1, 2))
    for ax, loss in zip(tops, losses):
        run, color = sim.runs[loss], LOSS_COLORS[loss]
        ratios = sim.extra["log_ratios"][loss]
        ax.fill_between(epochs, run["log_ratio_q05"], run["log_ratio_q95"], color=color, alpha=0.18, linewidth=0)
        ax.fill_between(epochs, run["log_ratio_q25"], run["log_ratio_q75"], color=color, alpha=0.45, linewidth=0)
        _plot(ax, sim, loss, "log_ratio_median", linewidth=2)
        for name, values in (("min", [r.min() for r in ratios]), ("max", [r.max() for r in ratios])):
            (line,) = ax.plot(epochs, values, color=color, linestyle=":", linewidth=1.2)
            line.set_gid(f"extent:{loss}:log_ratio_{name}")  # not a recorded series
        # the A < 0 tokens whose ratio passed c: dual clip caps their loss, plain clipping keeps pushing them down
        xs = [e for e, r in zip(epochs, ratios) for v in r[negative] if v > math.log(dual)]
        ys = [v for r in ratios for v in r[negative] if v > math.log(dual)]
        (line,) = ax.plot(xs, ys, "x", color=ink, markersize=4, markeredgewidth=0.9)
        line.set_gid(f"tokens:{loss}:negative-past-c")  # not a per-epoch series
        for y in (math.log(1 + eps), math.log(1 - eps)):
            ax.axhline(y, color="0.4", linestyle=(0, (4, 3)), linewidth=0.9).set_gid("guide:clip-edge")
        ax.axhline(math.log(dual), color=ink, linestyle=dash_dot, linewidth=1.0).set_gid("guide:dual-clip")
        ax.set_title(LOSS_LABELS[loss], color=color)
        ax.set_xlabel("epoch over the same batch")
    tops[0].set_ylabel("log r = log π − log π_old")
    for ax in tops[1:]:
        ax.tick_params(labelleft=False)

    for loss in losses:
        style = dict(marker="o", markersize=3.5)
        if loss == "ppo-dualclip":  # on top of plain clipping, which it follows until an A < 0 ratio passes c
            style.update(linestyle="--", zorder=3)
        _plot(ax_c, sim, loss, "clip_fraction", **style)
        _plot(ax_d, sim, loss, "dual_clip_fraction", **style)
        _plot(ax_p, sim, loss, "max_push_negative", **style)
    _guide_hline(ax_p, dual, f"c = {dual:g}", ink)
    ax_c.set_title("tokens beyond the clip edge")
    ax_c.set_ylabel("fraction of tokens")
    ax_d.set_title("A < 0 tokens with r > c (capped by dual clip only)")
    ax_d.set_ylabel("fraction of tokens")
    ax_p.set_title("largest push on an A < 0 token")
    ax_p.set_ylabel("|push| / (w·|A|)")
    for ax in (ax_c, ax_d, ax_p):
        ax.set_xlabel("epoch over the same batch")

    handles = [Line2D([], [], color=LOSS_COLORS[loss], linestyle="--" if loss == "ppo-dualclip" else "-", marker="o",
                      markersize=3.5, label=LOSS_LABELS[loss]) for loss in losses]
    handles += [
        Line2D([], [], color="0.3", linewidth=2, label="median log r"),
        Patch(color="0.3", alpha=0.45, linewidth=0, label="25–75% of tokens"),
        Patch(color="0.3", alpha=0.18, linewidth=0, label="5–95% of tokens"),
        Line2D([], [], color="0.3", linestyle=":", linewidth=1.2, label="smallest, largest log r"),
        Line2D([], [], color="0.4", linestyle=(0, (4, 3)), linewidth=0.9, label=f"clip edges log(1±ε), ε = {eps:g}"),
        Line2D([], [], color=ink, linestyle=dash_dot, linewidth=1.0, label=f"log c, dual clip c = {dual:g}"),
        Line2D([], [], color=ink, marker="x", linestyle="none", markersize=4, markeredgewidth=0.9, label="A < 0 token with r > c"),
    ]
    fig.legend(handles=handles, loc="outside right center", frameon=False)
    return finish(fig, _title(sim, f"; {sim.extra['tokens']} tokens"))
