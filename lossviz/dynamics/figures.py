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
# the preference losses of issue #14: colours apart from the five above, which share their scenarios
LOSS_COLORS.update({"robust": COLORS[6], "hinge": COLORS[5], "exo": "#bcbd22", "nca": "#7b4173", "bco": "#7f7f7f",
                    "sppo": "0.1", "apo-zero": "#e6ab02", "apo-down": "#9edae5", "discopop": "#6b4c9a",
                    "ln-dpo": "#1b9e77", "ln-ipo": "#9467bd", "rpo": "#bcbd22", "simpo": "#e377c2", "cpo": "#6b4c9a",
                    "orpo": "#17becf"})
LOSS_LABELS.update({"robust": "rDPO", "hinge": "hinge", "exo": "EXO", "nca": "NCA", "bco": "BCO", "sppo": "SPPO",
                    "apo-zero": "APO-zero", "apo-down": "APO-down", "discopop": "DiscoPOP", "ln-dpo": "LN-DPO", "ln-ipo": "LN-IPO",
                    "rpo": "RPO", "simpo": "SimPO", "cpo": "CPO", "orpo": "ORPO"})
# hinge has no guide: its gradient is 0 on all of βh ≥ 1, and Adam's momentum carries the margin past 1/β
FIXED_POINT_NAMES = {"ipo": "1/(2β)", "cdpo": "log((1−ε)/ε)/β", "exo": "log((1−ε)/ε)/β", "sppo": "1/β", "discopop": "z*/β"}
MANY = 3  # with more runs than this, one legend beside the panels names the losses


def _figure(panels: int, width: float = 3.6, height: float = 3.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * panels, height))
    return fig, list(fig.subplots(1, panels, squeeze=True)) if panels > 1 else [fig.subplots()]


def _unused(sim) -> tuple:
    """The loss parameters (ε, α, γ) no run of the simulation reads: the title leaves them out."""
    from .engine import LOSSES

    read = {name for loss in sim.runs if loss in LOSSES for name in LOSSES[loss][1]}
    return tuple(name for name in ("label_smoothing", "alpha", "gamma") if name in sim.params and name not in read)


def _title(sim, extra: str = "", title: str = "") -> str:
    # a loss's parameter (cDPO's ε, RPO's α, SimPO's γ) matters only when that loss ran
    shown = format_params(sim.params, skip=_unused(sim))
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


def _outside_legend(fig, sim, axes, label=None):
    """One legend beside the panels naming each run (the panels keep none): legible with many losses."""
    from matplotlib.lines import Line2D

    label = label or (lambda loss: LOSS_LABELS.get(loss, loss))
    handles = [Line2D([], [], color=LOSS_COLORS.get(loss, "k"), label=label(loss)) for loss in sim.runs]
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(handles=handles, loc="outside right center", frameon=False)


def deterministic_preferences(sim):
    many = len(sim.runs) > MANY
    fig, (ax_h, ax_kl, ax_push) = _figure(3, height=3.4 if many else 3.0)
    guides = {}
    for loss, run in sim.runs.items():
        label = LOSS_LABELS[loss] + (f" (ε={sim.params['label_smoothing']:g})" if loss == "cdpo" else "")
        _plot(ax_h, sim, loss, "margin", label=label)
        _plot(ax_kl, sim, loss, "kl", label=label)
        _plot(ax_push, sim, loss, "push_chosen", label=label)
        target = run.params["fixed_point_margin"]
        if math.isfinite(target) and loss in FIXED_POINT_NAMES:
            if many:  # drawn after the runs, one guide per value: cDPO and EXO share theirs
                guides.setdefault((target, FIXED_POINT_NAMES[loss]), []).append(loss)
            else:
                _guide_hline(ax_h, target, f"{FIXED_POINT_NAMES[loss]} = {target:.3g}", LOSS_COLORS[loss])
    for (target, name), losses in guides.items():
        _guide_hline(ax_h, target, f"{'/'.join(LOSS_LABELS[x] for x in losses)}: {name} = {target:.3g}", LOSS_COLORS[losses[0]])
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
    if many:
        ax_h.set_title("where the margin stops")
        if guides:  # room below the lowest guide for its label
            low, high = ax_h.get_ylim()
            ax_h.set_ylim(min(low, min(t for t, _ in guides) - 0.15 * (high - low)), high)
        _outside_legend(fig, sim, (ax_h, ax_kl, ax_push),
                        lambda loss: LOSS_LABELS[loss] + (f" (ε={sim.params['label_smoothing']:g})" if loss in ("cdpo", "exo", "robust") else ""))
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
    if len(sim.runs) > 2:
        from matplotlib.lines import Line2D

        _outside_legend(fig, sim, (ax_p, ax_h, ax_d), lambda loss: f"{LOSS_LABELS[loss]}: log π(y_c)")
        first = LOSS_LABELS[next(iter(sim.runs))]
        ax_p.legend(handles=[Line2D([], [], color="0.45", linestyle="--", label=f"{first}: log π(y_r)"),
                             Line2D([], [], color="0.45", linestyle=":", label=f"{first}: log π(y_o)")])
        ax_d.legend(handles=[Line2D([], [], color="0.3", label="observed"),
                             Line2D([], [], color="0.3", marker="o", linestyle="none", markersize=3, markerfacecolor="none",
                                    label="first order (exact as η→0)")])
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
    if len(sim.runs) > MANY:
        from matplotlib.lines import Line2D

        _outside_legend(fig, sim, (ax_acc, ax_w, ax_kl))
        ax_w.legend(handles=[Line2D([], [], color="0.3", label="flipped pairs"),
                             Line2D([], [], color="0.3", linestyle="--", label="clean pairs")])
        ax_w.set_yscale("log")  # the weights of the bounded and the unbounded losses differ by decades
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


# --------------------------------------------------------------------------------------------- length-bias

ADVANTAGE_LABELS = {"grpo": "GRPO", "dr_grpo": "Dr. GRPO", "rloo": "RLOO", "reinforce_baseline": "REINFORCE++-b"}
AGG_COLORS = {"seq-mean-token-mean": COLORS[0], "token-mean": COLORS[1], "seq-mean-token-sum": COLORS[3],
              "seq-mean-token-sum-norm": COLORS[2]}
ADVANTAGE_STYLES = {"grpo": "-", "dr_grpo": "--", "rloo": "-.", "reinforce_baseline": ":"}
LOSS_COLORS.update({f"{m}/{mode}": color for m in ADVANTAGE_LABELS for mode, color in AGG_COLORS.items()})


def _rl_label(loss: str) -> str:
    """"grpo/seq-mean-token-mean" -> "A: GRPO, seq-mean-token-mean"."""
    method, mode = loss.split("/", 1)
    return f"A: {ADVANTAGE_LABELS[method]}, {mode}"


def _moving_mean(y, width: int):
    y = np.asarray(y, dtype=np.float64)
    out = np.cumsum(np.insert(y, 0, 0.0))
    k = np.arange(1, len(y) + 1)
    lo = np.maximum(k - width, 0)
    return (out[k] - out[lo]) / (k - lo)


def length_bias(sim):
    """Lengths of wrong and correct answers per run, the push on the wrong answers' length logit (exact and measured),
    and the exact push at the start for every estimator and mode."""
    from matplotlib.lines import Line2D

    fig, (ax_w, ax_c, ax_p, ax_bar) = _figure(4, width=3.4, height=3.3)
    for loss in sim.runs:
        label, dashes = _rl_label(loss), ADVANTAGE_STYLES[loss.split("/", 1)[0]]
        _plot(ax_w, sim, loss, "length_wrong", linestyle=dashes, label=label)
        _plot(ax_c, sim, loss, "length_correct", linestyle=dashes, label=label)
        _plot(ax_p, sim, loss, "push_length_wrong_exact", linestyle=dashes, linewidth=1.8, label=label)
        measured = _moving_mean(sim[loss]["push_length_wrong"], 20)
        (line,) = ax_p.plot(sim.steps, measured, color=LOSS_COLORS[loss], linewidth=0.8, linestyle=":")
        line.set_gid(f"measured:{loss}:push_length_wrong_mean20")  # not a recorded series
    _zero(ax_p)
    ax_w.set_title("wrong answers")
    ax_w.set_ylabel("E[length | wrong] (tokens)")
    ax_c.set_title("correct answers")
    ax_c.set_ylabel("E[length | correct] (tokens)")
    ax_p.set_title("push on the wrong answers' length")
    ax_p.set_ylabel("−∂loss/∂ℓ_wrong per batch")
    for ax in (ax_w, ax_c, ax_p):
        ax.set_xlabel("step")
    ax_w.legend()
    handles = [Line2D([], [], color="0.3", linewidth=1.8, label="exact (every length)"),
               Line2D([], [], color="0.3", linewidth=0.8, linestyle=":", label="measured, mean of 20 steps")]
    ax_p.legend(handles=handles)

    table = sim.extra["exact_table"]
    methods = sorted({m for m, _ in table}, key=list(ADVANTAGE_LABELS).index)
    modes = list(dict.fromkeys(mode for _, mode in table))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        values = [table[(method, mode)] for mode in modes]
        xs = np.arange(len(modes)) + (j - (len(methods) - 1) / 2) * width
        bars = ax_bar.bar(xs, values, width=width * 0.9, color=COLORS[3 + j], label=f"A: {ADVANTAGE_LABELS[method]}")
        for bar, mode in zip(bars, modes):
            bar.set_gid(f"exact:{method}/{mode}")
    _zero(ax_bar)
    for x, mode in enumerate(modes):  # a bar of height 0 is invisible: say it
        if all(table[(method, mode)] == 0 for method in methods):
            ax_bar.text(x, 0, "0", ha="center", va="bottom", fontsize=8, color="0.25").set_gid(f"zero:{mode}")
    names = {"seq-mean-token-mean": "seq-mean-\ntoken-mean", "token-mean": "token-\nmean",
             "seq-mean-token-sum": "seq-mean-\ntoken-sum", "seq-mean-token-sum-norm": "seq-mean-\ntoken-sum-\nnorm"}
    ax_bar.set_xticks(np.arange(len(modes)), labels=[names.get(m, m) for m in modes], fontsize=7)
    ax_bar.set_title("exact push at the start, every mode")
    ax_bar.set_ylabel("−E[∂loss/∂ℓ_wrong]")
    ax_bar.legend()
    extra = f"; {sim.extra['batch']} answers per step"
    return finish(fig, _title(sim, extra))


# --------------------------------------------------------------------------------------------- kl-estimators

KL_LABELS = {"no-kl": "no KL term", "k1": "k1 in the loss", "k2": "k2 in the loss", "k3": "k3 in the loss",
             "abs": "|d| in the loss", "k1+": "k1+ in the loss", "k3+": "k3+ in the loss",
             "k1-in-reward": "k1 in the reward"}
KL_COLORS = {"no-kl": "0.35", "k1": COLORS[0], "k2": COLORS[1], "k3": COLORS[2], "abs": COLORS[3], "k1+": COLORS[4],
             "k3+": COLORS[5 % len(COLORS)], "k1-in-reward": COLORS[6 % len(COLORS)]}
LOSS_COLORS.update(KL_COLORS)


def kl_estimators(sim):
    """π(y*) and KL(π‖π_ref) per run with the two optima, and the exact expected gradients of each estimator."""
    fig, (ax_p, ax_kl, ax_g) = _figure(3, width=3.9, height=3.3)
    for loss in sim.runs:
        style = dict(color=KL_COLORS[loss], label=KL_LABELS[loss])
        if loss == "no-kl":
            style.update(linestyle="--")
        _plot(ax_p, sim, loss, "p_rewarded", **style)
        _plot(ax_kl, sim, loss, "kl", **style)
    reverse, forward = float(sim.extra["reverse_optimum"][0]), float(sim.extra["forward_optimum"][0])
    _guide_hline(ax_p, reverse, f"reverse-KL optimum {reverse:.3f}", KL_COLORS["k2"])
    _guide_hline(ax_p, forward, f"forward-KL optimum {forward:.3f}", KL_COLORS["k3"])
    ax_p.set_ylim(0, 1.12)
    ax_p.set_title("probability of the rewarded action")
    ax_p.set_ylabel("π(y*)")
    ax_kl.set_title("distance from the reference")
    ax_kl.set_ylabel("KL(π‖π_ref), exact")
    for ax in (ax_p, ax_kl):
        ax.set_xlabel("step")
    ax_kl.legend()  # the middle of the KL panel is empty; in the first panel it would cover the curves at π(y*) ≈ 0.45

    grads = sim.extra["grads"]
    actions = np.arange(len(sim.extra["reverse_grad"]))
    shown = [est for est in ("k1", "k2", "k3") if est in grads]
    width = 0.8 / len(shown)
    for j, est in enumerate(shown):
        xs = actions + (j - (len(shown) - 1) / 2) * width
        zero = " = 0" if np.abs(grads[est]).max() < 1e-12 else ""  # a bar of height 0 is invisible: say it
        bars = ax_g.bar(xs, grads[est], width=width * 0.9, color=KL_COLORS[est], label=f"E[∇{est}]{zero}")
        for bar, action in zip(bars, actions):
            bar.set_gid(f"expected:{est}:{action}")
    centre = {est: (j - (len(shown) - 1) / 2) * width for j, est in enumerate(shown)}
    (line,) = ax_g.plot(actions + centre.get("k2", 0.0), sim.extra["reverse_grad"], "o", color="k", markersize=5,
                        markerfacecolor="none", markeredgewidth=1.2, label="∇KL(π‖π_ref)")
    line.set_gid("closed:reverse")
    (line,) = ax_g.plot(actions + centre.get("k3", 0.0), sim.extra["forward_grad"], "x", color="k", markersize=6,
                        label="∇KL(π_ref‖π)")
    line.set_gid("closed:forward")
    _zero(ax_g)
    ax_g.set_xticks(actions, labels=["y*"] + [f"y{k}" for k in actions[1:]])
    ax_g.set_title("expected gradients at π = π_ref·exp(r/β)/Z")
    ax_g.set_xlabel("logit θ_y")
    ax_g.set_ylabel("Σ_y π(y)·∇k(y)")
    ax_g.legend()
    return finish(fig, _title(sim))


def length(sim):
    """What the loss sees at each length, DPO's margins over training, and each length's share of the push."""
    from matplotlib.lines import Line2D

    fig, (ax_end, ax_steps, ax_share) = _figure(3, height=3.3)
    lengths = list(sim.extra["lengths"])
    shades = {n: COLORS[k % len(COLORS)] for k, n in enumerate(lengths)}
    for loss, run in sim.runs.items():
        color, label = LOSS_COLORS.get(loss, "k"), LOSS_LABELS.get(loss, loss)
        marker = {"ln-dpo": "s", "simpo": "^", "ln-ipo": "D"}.get(loss, "o")
        (line,) = ax_end.plot(lengths, [run[f"seen_L{n}"][-1] for n in lengths], marker=marker, color=color, label=label,
                              markerfacecolor="none" if loss == "simpo" else color)
        line.set_gid(f"final:{loss}:seen")
        (line,) = ax_share.plot(lengths, [run[f"share_L{n}"][0] for n in lengths], "o--", color=color,
                                markerfacecolor="none", label=f"{label}: step 0")
        line.set_gid(f"start:{loss}:share")
        (line,) = ax_share.plot(lengths, [run[f"share_L{n}"][-1] for n in lengths], "o-", color=color,
                                label=f"{label}: step {len(sim.steps) - 1}")
        line.set_gid(f"final:{loss}:share")
    styles = {loss: style for loss, style in zip(sim.runs, ("-", "--", ":", "-."))}
    for loss in list(sim.runs)[:2]:  # two losses over the steps, one line per length
        for n in lengths:
            # the sigmoid's weight σ(−z) on the pair (for IPO-like losses z is not a sigmoid's argument: not drawn)
            if loss in ("ln-ipo", "ipo"):
                continue
            weight = 1.0 / (1.0 + np.exp(np.asarray(sim[loss][f"seen_L{n}"])))
            (line,) = ax_steps.plot(sim.steps, weight, color=shades[n], linestyle=styles[loss])
            line.set_gid(f"weight:{loss}:L{n}")  # computed from the series seen_L<n>
    _zero(ax_end)
    ax_share.axhline(1 / len(lengths), color="0.6", linewidth=0.8, linestyle=(0, (4, 3))).set_gid("guide:uniform")
    for ax in (ax_end, ax_share):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, labels=[str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("response length L (tokens)")
    ax_end.set_title(f"what the loss sees after {len(sim.steps) - 1} steps")
    ax_end.set_ylabel("argument of the loss's sigmoid")
    ax_end.legend()
    ax_steps.set_title("how hard each pair still pulls")
    ax_steps.set_xlabel("step")
    ax_steps.set_yscale("log")
    ax_steps.set_ylabel("σ(−argument), the pair's weight")
    handles = [Line2D([], [], color=shades[n], label=f"L = {n}") for n in lengths]
    handles += [Line2D([], [], color="0.3", linestyle=styles[loss], label=LOSS_LABELS.get(loss, loss)) for loss in list(sim.runs)[:2]]
    ax_steps.legend(handles=handles, ncol=2)
    ax_share.set_title("each length's share of the push")
    ax_share.set_ylabel("share of the push on y_c's tokens")
    ax_share.legend()
    return finish(fig, _title(sim))
