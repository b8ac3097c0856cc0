"""Latency of the explorer: median time from a slider change to the redrawn figure and facts (target < 50 ms).

Every visible slider of every explorer is moved ``--moves`` times in four ways:

- ``drag``: step by step from its default value, as a learner drags the handle, inside a running
  event loop as in a Jupyter kernel. The figure and the numeric facts are redrawn in the move;
  the LaTeX of a value not printed before waits until the slider rests (``Explorer.latex_delay``).
- ``jumps``: the same, but the values jump evenly across the whole range (the axes are refitted
  more often: a full draw instead of a blit).
- ``printed``: the jumps without an event loop (plain Python): each move also prints the loss,
  gradient and facts at the new value with sympy, the cost paid once per value.
- ``again``: the jumps swept back: the LaTeX comes from the cache.

    python benchmarks/bench_widgets.py [--moves 20] [--entries dpo kto ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time


def visible(explorer):
    return [s for s in explorer.sliders.values() if not s.disabled and s.layout.display != "none"]


def timed(slider, values):
    times = []
    for v in values:
        start = time.perf_counter()
        slider.value = v  # the observer redraws synchronously
        times.append(time.perf_counter() - start)
    return times


def jumps(slider, moves):
    return [slider.min + (slider.max - slider.min) * k / (moves - 1) for k in range(moves)]


def drag(slider, moves):
    step = slider.step if slider.value + moves * slider.step <= slider.max else -slider.step
    return [slider.value + step * (k + 1) for k in range(moves)]


async def in_kernel_loop(name, moves, values_of):
    from lossviz.widgets import Explorer

    explorer = Explorer(name)
    times = []
    for slider in visible(explorer):
        initial = slider.value
        times += timed(slider, values_of(slider, moves))
        await asyncio.sleep(explorer.latex_delay + 0.05)  # the slider rests: the deferred print runs, as after a drag
        slider.value = initial
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--entries", nargs="+", default=None, help="default: every entry of the registry (each has an explorer)")
    args = parser.parse_args()

    from lossviz.registry import names
    from lossviz.widgets import Explorer

    entries = args.entries or names()
    ms = lambda xs: statistics.median(xs) * 1e3
    kinds = ("drag", "jumps", "printed", "again")
    print(f"{'entry':<12} {'build s':>8} " + " ".join(f"{k + ' ms':>10}" for k in kinds) + "  sliders")
    everything = {k: [] for k in kinds}
    for name in entries:
        start = time.perf_counter()
        explorer = Explorer(name)
        build = time.perf_counter() - start
        times = {"drag": asyncio.run(in_kernel_loop(name, args.moves, drag)),
                 "jumps": asyncio.run(in_kernel_loop(name, args.moves, jumps)), "printed": [], "again": []}
        for slider in visible(explorer):
            initial, values = slider.value, jumps(slider, args.moves)
            times["printed"] += timed(slider, values)
            times["again"] += timed(slider, values[::-1])
            slider.value = initial
        for k in kinds:
            everything[k] += times[k]
        shown = ", ".join(s.description for s in visible(explorer))
        print(f"{name:<12} {build:>8.2f} " + " ".join(f"{ms(times[k]):>10.1f}" for k in kinds) + f"  {shown}")
    print("median over all moves: " + ", ".join(f"{k} {ms(everything[k]):.1f} ms" for k in kinds) + " (target < 50 ms)")


if __name__ == "__main__":
    main()
