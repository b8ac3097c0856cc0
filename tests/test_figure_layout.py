"""Every figure a user can ask for is free of text collisions: no text on another text, none off
the canvas, no lesson label outside its axes, no label or legend on a plotted line.

The figures: everything the gallery makes, every registry entry at its defaults and at each
choice of its case parameters (so a new entry or case is covered without editing this file),
and the requests people type most (sweeps, clip settings, comparisons).
"""

import pytest
from matplotlib.figure import Figure

from lossviz.plots import compare_figure, figure
from lossviz.plots.gallery import DPI, build, items
from lossviz.plots.layout_check import collisions
from lossviz.registry import get, names


def _registry_requests():
    out = {}
    for name in names():
        out[f"plot {name}"] = (lambda n=name: figure(n))
        for prm in get(name).params:
            if prm.choices:
                for choice in prm.choices:
                    out[f"plot {name} --{prm.flag.lstrip('-')} {choice}"] = (lambda n=name, k=prm.name, c=choice: figure(n, **{k: c}))
                out[f"plot {name} --sweep {prm.name}={','.join(prm.choices)}"] = (
                    lambda n=name, k=prm.name, c=prm.choices: figure(n, sweep=(k, list(c))))
    return out


REQUESTS = {
    **{f"gallery {item.stem}": (lambda i=item: build(i)) for item in items()},
    **_registry_requests(),
    "plot ipo --sweep beta=0.1,0.5,1": lambda: figure("ipo", sweep=("beta", [0.1, 0.5, 1.0])),
    "plot cdpo --sweep label_smoothing=0,0.1,0.3": lambda: figure("cdpo", sweep=("label_smoothing", [0.0, 0.1, 0.3])),
    "plot pairwise --sweep margin=0,1,2": lambda: figure("pairwise", sweep=("margin", [0.0, 1.0, 2.0])),
    "plot dpo --sweep beta=0.05,0.1,0.2,0.5,1,2,5": lambda: figure("dpo", sweep=("beta", [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0])),
    "plot kto --sweep beta=0.1,0.5": lambda: figure("kto", sweep=("beta", [0.1, 0.5])),
    "plot prm --sweep p=0.6,0.8,0.95": lambda: figure("prm", sweep=("p", [0.6, 0.8, 0.95])),
    "plot ppo-value --clip-eps 0.5": lambda: figure("ppo-value", clip_eps=0.5),
    "plot ppo-policy --dual-clip 3": lambda: figure("ppo-policy", dual_clip=3.0),
    "plot ppo-policy --clip-eps-low 0.1 --clip-eps-high 0.5": lambda: figure("ppo-policy", clip_eps_low=0.1, clip_eps_high=0.5),
    "compare dpo cdpo ipo": lambda: compare_figure(["dpo", "cdpo", "ipo"]),
    "compare dpo pairwise logexp --what loss": lambda: compare_figure(["dpo", "pairwise", "logexp"], "loss"),
    "compare dpo kto vanilla-kto --beta 0.5": lambda: compare_figure(["dpo", "kto", "vanilla-kto"], beta=0.5),
    "compare the policy-loss family": lambda: compare_figure(["ppo-policy", "dapo", "sapo", "gpg", "gspo", "gmpo"]),
    "compare the pairwise family": lambda: compare_figure(["dpo", "dpo-robust", "dpo-hinge", "dpo-exo", "dpo-discopop", "simpo"]),
    "compare the split pairwise family": lambda: compare_figure(["dpo-nca", "dpo-bco", "dpo-sppo", "dpo-apo-zero", "dpo-apo-down"]),
    "compare the distillation family": lambda: compare_figure(["kd", "gkd"]),
    "compare every kind of axis": lambda: compare_figure(["dpo", "ipo", "ppo-policy", "ppo-value", "prm", "gptlm", "basics"]),
}


@pytest.mark.parametrize("what", sorted(REQUESTS))
def test_no_text_collides(what):
    fig = REQUESTS[what]()
    problems = collisions(fig)
    assert problems == [], f"{what}:\n" + "\n".join(problems)
    if what.startswith("gallery"):  # and at the resolution the gallery is saved at (text metrics differ a little)
        fig.set_dpi(DPI)
        problems = collisions(fig)
        assert problems == [], f"{what} at {DPI} dpi:\n" + "\n".join(problems)


def test_every_entry_and_case_is_covered():
    for name in names():
        assert f"plot {name}" in REQUESTS
        for prm in get(name).params:
            for choice in prm.choices or ():
                assert f"plot {name} --{prm.flag.lstrip('-')} {choice}" in REQUESTS


# --- the checker itself: each kind of problem is found, a clean figure passes ---------------


def _axes():
    fig = Figure(figsize=(4, 3), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="diagonal")
    return fig, ax


def test_a_clean_figure_passes():
    fig, ax = _axes()
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.text(0.8, 0.15, "below", fontsize=8)
    fig.suptitle("title")
    assert collisions(fig) == []


def test_overlapping_texts_are_reported():
    fig, ax = _axes()
    ax.text(0.1, 0.8, "first label", fontsize=8)
    ax.text(0.12, 0.8, "second label", fontsize=8)
    assert any(p.startswith("overlap:") and "first label" in p and "second label" in p for p in collisions(fig))


def test_a_text_off_the_canvas_is_reported():
    fig, ax = _axes()
    fig.text(0.9, 0.5, "runs past the right edge of the figure")
    assert any(p.startswith("off canvas:") for p in collisions(fig))


def test_a_label_on_a_curve_is_reported_and_a_guide_line_is_not():
    fig, ax = _axes()
    ax.annotate("on the line", (0.5, 0.5), ha="center", va="center")
    assert any(p.startswith("on curve:") and "'on the line'" in p for p in collisions(fig))
    fig, ax = _axes()
    ax.text(0.8, 0.15, "off the line", fontsize=8)
    ax.axhline(0.17).set_gid("guide:zero")
    assert collisions(fig) == []


def test_a_legend_on_a_curve_and_a_label_outside_its_axes_are_reported():
    fig, ax = _axes()
    ax.legend(loc="center")
    assert any(p.startswith("on curve:") and "legend" in p for p in collisions(fig))
    fig, ax = _axes()
    ax.annotate("outside", (1.0, 0.0), xytext=(0, -30), textcoords="offset points")
    assert any(p.startswith("outside its axes:") for p in collisions(fig))


def test_tick_labels_crowding_each_other_are_reported():
    fig, ax = _axes()
    ax.set_xticks([0.0, 0.01], ["a long tick label", "another one"])
    assert any(p.startswith("overlap:") and "x-tick" in p for p in collisions(fig))


def test_a_leader_line_through_another_text_is_reported():
    fig, ax = _axes()
    ax.text(0.05, 0.55, "in the way", fontsize=8)
    # the leader runs from the label at the top left straight down to (0.1, 0.1), through "in the way"
    ax.annotate("label", (0.1, 0.1), xytext=(0.1, 0.9), ha="center", fontsize=8, arrowprops=dict(arrowstyle="-"))
    problems = collisions(fig)
    assert any(p.startswith("leader through text:") and "'label'" in p and "'in the way'" in p for p in problems), problems
    fig, ax = _axes()  # the same leader beside the text is clean; its own label does not count
    ax.text(0.3, 0.55, "in the way", fontsize=8)
    ax.annotate("label", (0.1, 0.1), xytext=(0.1, 0.9), ha="center", fontsize=8, arrowprops=dict(arrowstyle="-"))
    assert not any(p.startswith("leader through text:") for p in collisions(fig))
