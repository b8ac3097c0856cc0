"""`lossviz compare`: several losses, or their gradient weights, on one axis."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import sympy as sp

from ..cards.base import CardError, Derivation
from ..registry import get
from .core import COLORS, new_figure, sample_axis
from .cut import along
from .lessons import suptitle

X = sp.Symbol("x", real=True)

# each entry's natural axis as a cut: variable -> value (x is the axis)
CUTS: Dict[str, Dict[str, object]] = {
    "basics": {"x": X},
    "gptlm": {"logits_0": X, "logits_1": 0, "logits_2": 0},
    "kd": {"logits_0": X, "logits_1": 0, "logits_2": 0, "teacher_logits_0": 1, "teacher_logits_1": 0, "teacher_logits_2": -1},
    "dpo": {"policy_chosen_logps": X, "policy_rejected_logps": 0, "reference_chosen_logps": 0, "reference_rejected_logps": 0},
    # both arms' variables: each case uses its own side
    "kto": {"policy_chosen_logps": X, "reference_chosen_logps": 0, "policy_rejected_logps": X, "reference_rejected_logps": 0,
            "policy_KL_logps": 0, "reference_KL_logps": 0},
    "ppo-policy": {"log_probs": X, "old_log_probs": 0, "advantages": 1},
    "ppo-value": {"values": X, "old_values": 0, "returns": 0},
    "pairwise": {"chosen_reward": X, "reject_reward": 0},
    "prm": {"logits_0": X, "logits_1": 0},
}
CUTS["cdpo"] = CUTS["ipo"] = CUTS["vanilla-kto"] = CUTS["dpo"]
CUTS["logexp"] = CUTS["pairwise"]
AXIS_NAMES = {
    "basics": "x", "gptlm": "z_0", "kd": "z_0", "dpo": "h", "cdpo": "h", "ipo": "h", "vanilla-kto": "Δ_c", "kto": "Δ (z = 0)",
    "ppo-policy": "log r (A = 1)", "ppo-value": "v - R", "pairwise": "Δ", "logexp": "Δ", "prm": "d",
}


def compare(names: Sequence[str], what: str = "grad", x_range=None, **params):
    if what not in ("loss", "grad"):
        raise CardError(f"--what must be loss or grad; got {what!r}")
    if len(names) < 1:
        raise CardError("compare needs at least one loss name")
    cards = [get(n) for n in names]
    known = {p.name for c in cards for p in c.params}
    for key in params:
        if key not in known:
            raise CardError(f"no entry among {', '.join(c.name for c in cards)} has the parameter --{key.replace('_', '-')}")
    lo, hi = x_range or (-10.0, 10.0)
    if not lo < hi:
        raise CardError(f"--x-range needs LO < HI; got {lo:g} {hi:g}")
    xs = sample_axis(lo, hi)
    fig, axes = new_figure(1, 1, width=5.6, height=3.4)
    ax = axes[0][0]
    for i, card in enumerate(cards):
        own = {k: v for k, v in params.items() if k in {p.name for p in card.params}}
        d = Derivation(card, card.resolve(own))
        curve = along(d, X, {v: e for v, e in CUTS[card.name].items() if v in d.variables})
        ys = curve.loss(xs) if what == "loss" else -curve.grad(xs)
        (line,) = ax.plot(xs, ys, color=COLORS[i % len(COLORS)], label=f"{card.name} ({AXIS_NAMES[card.name]})")
        line.set_gid(f"{what}:{card.name}")
    peaks = [float(np.nanmax(np.abs(line.get_ydata()))) for line in ax.get_lines()]
    if len(peaks) > 1 and max(peaks) > 20 * max(min(peaks), 1e-12):
        # one curve dwarfs the others (IPO's linear pull): symlog keeps the small ones readable
        ax.set_yscale("symlog", linthresh=max(min(peaks), 1e-6))
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.set_xlabel("margin / natural axis x (per entry, in brackets)")
    ax.set_ylabel("loss" if what == "loss" else r"gradient weight $-\partial\ell/\partial x$ (how hard the example is pushed)")
    ax.legend(loc="best")
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    suptitle(fig, f"{'loss' if what == 'loss' else 'gradient weight'} of {', '.join(c.name for c in cards)}" + (f" ({shown})" if shown else " (defaults)"))
    return fig
