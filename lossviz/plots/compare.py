"""`lossviz compare`: several losses, or their push, on axes where the comparison means something.

``CUTS`` and ``AXIS_NAMES`` give each entry's natural axis (the explorers use them too); an entry
not in them (a card added since, or a plugin's) is cut along the axis its card declares, in a
panel of its own. For a comparison the pairwise preference losses are moved onto one common
axis, the reward margin:
DPO, cDPO, IPO and vanilla KTO at βh (the implicit-reward margin, h the log-ratio margin), KTO
at β(Δ - z) (the implicit reward above the reference point), the reward models at their gap
r_c - r_r. On that axis DPO's -log σ(βh) and the pairwise loss -log σ(Δ) are the same curve.
Every other entry keeps its own axis in its own panel, and a curve far larger than the others
(IPO's linear pull) gets a panel of its own, drawn around its target u* = βh* = 1/2 (marked), so
every panel has a linear, honest y scale.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import sympy as sp

from ..cards.base import CardError, Derivation
from ..registry import get
from .core import COLORS, mark, new_figure, sample_axis, zero_line
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
# the DPO loss types of the margin alone, and RPO, on DPO's cut; those that treat the two log-ratios apart on the
# margin split evenly (ρ_c = h/2, ρ_r = -h/2); the reference-free ones with the rejected log-prob at 0
MARGIN_TYPES = ("dpo-robust", "dpo-hinge", "dpo-exo", "dpo-discopop", "dpo-ln", "rpo")
SPLIT_TYPES = ("dpo-nca", "dpo-bco", "dpo-sppo", "dpo-apo-zero", "dpo-apo-down")
for _name in MARGIN_TYPES:
    CUTS[_name] = CUTS["dpo"]
for _name in SPLIT_TYPES:
    CUTS[_name] = {"policy_chosen_logps": X / 2, "policy_rejected_logps": -X / 2, "reference_chosen_logps": 0, "reference_rejected_logps": 0}
CUTS["simpo"] = CUTS["cpo"] = {"policy_chosen_logps": X, "policy_rejected_logps": 0}
CUTS["kto-apo-zero"] = {"policy_chosen_logps": X, "reference_chosen_logps": 0, "policy_rejected_logps": X, "reference_rejected_logps": 0}
CUTS["gkd"] = CUTS["kd"]  # the distillation family on one logit axis
#: entries drawn in the panel of another entry's axis (the same cut, the same x)
SHARED_AXIS = {"gkd": "kd"}
# the policy losses on PPO's ratio axis: log r with A = 1 (for the sequence losses every token at the same log r, so
# the sequence ratio is r); CISPO stays on its own axis (its gradient is not the slope of its value along r)
POLICY_TYPES = ("dapo", "sapo", "gpg", "gspo", "gmpo")
for _name in ("dapo", "sapo", "gpg"):
    CUTS[_name] = CUTS["ppo-policy"]
for _name in ("gspo", "gmpo"):
    CUTS[_name] = {**{f"{v}_{t}": (X if v == "log_probs" else 0) for v in ("log_probs", "old_log_probs") for t in range(3)}, "advantages": 1}
SHARED_AXIS.update({name: "ppo-policy" for name in POLICY_TYPES})
AXIS_NAMES = {
    "basics": "x", "gptlm": "z_0", "kd": "z_0", "dpo": "h", "cdpo": "h", "ipo": "h", "vanilla-kto": "Δ_c", "kto": "Δ (z = 0)",
    "ppo-policy": "log r (A = 1)", "ppo-value": "v - R", "pairwise": "Δ", "logexp": "Δ", "prm": "d",
}
AXIS_NAMES.update({name: "h" for name in MARGIN_TYPES + SPLIT_TYPES})
AXIS_NAMES.update({"dpo-ln": "π^c", "simpo": "π^c", "cpo": "π^c", "kto-apo-zero": "Δ", "gkd": "z_0"})
AXIS_NAMES.update({"dapo": "log r (A = 1)", "sapo": "log r (A = 1)", "gpg": "log π (A = 1)", "gspo": "log r of every token (A = 1)",
                   "gmpo": "log r of every token (A = 1)"})


REWARD = "reward"
# entries compared on the reward-margin axis: x_natural = u / scale(params)
REWARD_SCALE = {
    "dpo": lambda p: float(p["beta"]), "cdpo": lambda p: float(p["beta"]), "ipo": lambda p: float(p["beta"]),
    "vanilla-kto": lambda p: float(p["beta"]), "kto": lambda p: float(p["beta"]),
    "pairwise": lambda p: 1.0, "logexp": lambda p: 1.0,
}
REWARD_SCALE.update({name: (lambda p: float(p["beta"])) for name in MARGIN_TYPES + SPLIT_TYPES + ("cpo", "kto-apo-zero")})
# per-token margins: π^c moves by L_c nats per nat of mean log-prob
REWARD_SCALE.update({name: (lambda p: float(p["beta"]) / float(p["chosen_length"])) for name in ("dpo-ln", "simpo")})
# the reward margin each entry is drawn at (mathtext: legends and titles are read as formulas)
REWARD_NAMES = {"dpo": r"$\beta h$", "cdpo": r"$\beta h$", "ipo": r"$\beta h$", "vanilla-kto": r"$\beta h$ ($\Delta_r = 0$)",
                "kto": r"$\beta(\Delta - z)$, $z = 0$", "pairwise": r"$r_c - r_r$", "logexp": r"$r_c - r_r$"}
REWARD_NAMES.update({name: r"$\beta h$" for name in MARGIN_TYPES})
REWARD_NAMES.update({name: r"$\beta h$, $\rho_c = -\rho_r = h/2$" for name in SPLIT_TYPES})
REWARD_NAMES.update({"dpo-ln": r"$\beta(\rho_c/L_c - \rho_r/L_r)$", "simpo": r"$\beta(\pi^c/L_c - \pi^r/L_r)$", "cpo": r"$\beta(\pi^c - \pi^r)$",
                     "kto-apo-zero": r"$\beta\Delta$"})
IPO_SPAN = 3.0  # IPO alone in its panel is drawn over its target ± this many nats of margin
AXIS_LABELS = {
    REWARD: r"reward margin $u$ (nats): $\beta h$ for the DPO family, $\beta(\Delta - z)$ for KTO, $r_c - r_r$ for reward models",
    "basics": "x", "gptlm": "logit $z_0$ ($z_1 = z_2 = 0$)", "kd": "student logit $z_0$ (teacher logits (1, 0, -1))",
    "ppo-policy": "log-ratio $\\log r$ (A = 1)", "ppo-value": "value error $v - R$", "prm": "logit difference $d = z_+ - z_-$",
}
DEFAULT_RANGES = {REWARD: (-10.0, 10.0), "basics": (-8.0, 8.0), "gptlm": (-6.0, 6.0), "kd": (-6.0, 6.0), "ppo-policy": (-1.0, 1.0),
                  "ppo-value": (-3.0, 3.0), "prm": (-8.0, 8.0)}
DWARF = 20.0  # a curve whose peak is this many times the others' gets its own panel


def _axis_of(name: str) -> str:
    return REWARD if name in REWARD_SCALE else SHARED_AXIS.get(name, name)


def _curve(card, params, u):
    """(loss, push) of ``card`` along its compare axis, at the axis values ``u``."""
    d = Derivation(card, card.resolve(params))
    cut = _cut_of(card, d)
    scale = REWARD_SCALE[card.name](d.params) if card.name in REWARD_SCALE else 1.0
    curve = along(d, X, cut)
    # x_natural = u / scale, so d/du = (1/scale) d/dx
    return curve.loss(u / scale), -curve.grad(u / scale) / scale


def _cut_of(card, d: Derivation) -> Dict[str, object]:
    """The entry's cut: this module's table, else the card's declared axis (an entry added later, a plugin's)."""
    if card.name in CUTS:
        return {v: e for v, e in CUTS[card.name].items() if v in d.variables}
    return {v: e.subs(card.axis.x, X) for v, e in card.axis.values(d.params).items()}


def _own_axis(card, params) -> Tuple[str, str, Tuple[float, float]]:
    """(short name, label, default range) of an entry's own axis: the tables above, else the card's axis."""
    if card.name in AXIS_NAMES:
        return AXIS_NAMES[card.name], AXIS_LABELS.get(card.name, ""), DEFAULT_RANGES.get(card.name, (0.0, 0.0))
    if card.axis is None:
        raise CardError(f"{card.name} declares no axis (Card.axis), so it cannot be compared")
    return f"${sp.latex(card.axis.x)}$", card.axis.label, card.axis.default_range(card.resolve(params))


def compare(names: Sequence[str], what: str = "grad", x_range=None, **params):
    if what not in ("loss", "grad"):
        raise CardError(f"--what must be loss or grad; got {what!r}")
    if len(names) < 1:
        raise CardError("compare needs at least one loss name")
    cards = [get(n) for n in names]
    if len({c.name for c in cards}) != len(cards):
        raise CardError(f"compare: an entry is named twice in {', '.join(names)}")
    if len(cards) > len(COLORS):
        raise CardError(f"compare takes at most {len(COLORS)} entries (one colour each); got {len(cards)}")
    known = {p.name for c in cards for p in c.params}
    for key in params:
        if key not in known:
            raise CardError(f"no entry among {', '.join(c.name for c in cards)} has the parameter --{key.replace('_', '-')}")
    if x_range is not None and not x_range[0] < x_range[1]:
        raise CardError(f"--x-range needs LO < HI; got {x_range[0]:g} {x_range[1]:g}")
    curves = []  # (card, colour, axis, xs, ys)
    owns = {}
    for i, card in enumerate(cards):
        own = owns[card.name] = {k: v for k, v in params.items() if k in {p.name for p in card.params}}
        axis = _axis_of(card.name)
        xs = sample_axis(*(x_range or DEFAULT_RANGES.get(axis) or _own_axis(card, own)[2]))
        loss, push = _curve(card, own, xs)
        curves.append((card, COLORS[i], axis, xs, loss if what == "loss" else push))
    panels = _panels(curves)
    targets = {}  # IPO's target margin on the u axis, marked wherever IPO is drawn
    for _, members in panels:
        for j, (card, color, axis, xs, ys) in enumerate(members):
            if card.name == "ipo" and axis == REWARD:
                own = owns[card.name]
                d = Derivation(card, card.resolve(own))
                t = targets["ipo"] = float(d.fact("target").value) * REWARD_SCALE["ipo"](d.params)
                if len(members) == 1 and x_range is None:  # its own panel: around its target, not the shared ±10
                    xs = sample_axis(t - IPO_SPAN, t + IPO_SPAN)
                    loss, push = _curve(card, own, xs)
                    members[j] = (card, color, axis, xs, loss if what == "loss" else push)
    cols = min(len(panels), 3)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = new_figure(rows, cols, width=6.0 if cols == 1 else 3.6, height=3.2)
    for k, ax in enumerate(axes.flat):
        if k >= len(panels):
            ax.set_visible(False)
            continue
        axis, members = panels[k]
        zero_line(ax)
        present = {card.name for card, *_ in members}
        for card, color, _, xs, ys in members:
            own_name = _own_axis(card, {})[0]
            label = f"{card.name} ($u$ = {REWARD_NAMES[card.name]})" if axis == REWARD else f"{card.name} (x = {own_name})"
            if card.name == "pairwise" and "dpo" in present and float(params.get("margin", 0.0)) == 0.0:
                # the lesson of this axis; the loss is quoted only where the loss is drawn
                label += r": the dpo curve, $-\log\sigma(\Delta)$ at $\Delta = \beta h$" if what == "loss" else \
                    r": the dpo curve ($\Delta = \beta h$)"
            (line,) = ax.plot(xs, ys, color=color, label=label, linestyle=_style(card.name))
            line.set_gid(f"{what}:{card.name}")
            if card.name in targets and axis == REWARD:  # ℓ and its push are both 0 at IPO's target
                mark(ax, targets[card.name], 0.0, f"target $u^*$ = β·1/(2β) = {targets[card.name]:.3g}",
                     f"marker:{card.name}_target", color=color)
        ax.set_xlabel(AXIS_LABELS.get(axis) or _own_axis(members[0][0], {})[1] if axis != REWARD else "reward margin $u$ (nats)")
        ax.set_ylabel("loss" if what == "loss" else "push = $-\\partial\\ell/\\partial u$\n(per nat of margin)" if axis == REWARD
                      else "push = $-\\partial\\ell/\\partial x$")
        ax.legend()
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    what_text = "loss" if what == "loss" else "push (minus the gradient)"
    note = _reward_note([c for c, *_ in curves if _axis_of(c.name) == REWARD])
    suptitle(fig, f"{what_text} of {', '.join(c.name for c in cards)}" + (f" ({shown})" if shown else " (defaults)") + note)
    return fig


def _reward_note(cards) -> str:
    """The title's reading of the u axis, naming only the entries on it: '; u = βh for dpo, ipo; r_c - r_r for pairwise'."""
    if not cards:
        return ""
    by_margin: Dict[str, List[str]] = {}
    for card in cards:
        by_margin.setdefault(REWARD_NAMES[card.name].split(" (")[0].split(", ")[0], []).append(card.name)
    return "; $u$ = " + "; ".join(f"{m} for {', '.join(ns)}" for m, ns in by_margin.items())


def _style(name: str):
    # the curves that coincide are told apart by dashes
    return {"pairwise": "--", "logexp": ":", "vanilla-kto": "-."}.get(name, "-")


def _panels(curves) -> List[Tuple[str, list]]:
    """Group curves by axis, then split off curves whose size dwarfs the rest (one linear y scale per panel)."""
    panels = []
    for axis in dict.fromkeys(c[2] for c in curves):
        members = sorted((c for c in curves if c[2] == axis), key=lambda c: _peak(c[4]))
        group = [members[0]]
        for c in members[1:]:
            if _peak(c[4]) > DWARF * max(_peak(group[0][4]), 1e-12):
                panels.append((axis, group))
                group = [c]
            else:
                group.append(c)
        panels.append((axis, group))
    for _, members in panels:  # keep the order the user named them in
        members.sort(key=lambda c: [x[0].name for x in curves].index(c[0].name))
    return panels


def _peak(ys) -> float:
    finite = np.abs(np.asarray(ys, dtype=float))
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size else 0.0
