"""Latency of the explorer: median time from a slider change to the redrawn figure and facts (target < 50 ms).

Every visible slider of every explorer is swept across its range (``--moves`` distinct values)
three ways:

- ``kernel``: inside a running event loop, as in a Jupyter kernel. The figure and the numeric
  facts are redrawn in the move; the LaTeX of a value not printed before waits until the slider
  has rested (``Explorer.latex_delay``), so a drag is not slowed by sympy.
- ``printed``: no event loop (plain Python): each move also prints the loss, gradient and facts
  at the new value with sympy. This is the cost of the print itself, paid once per value.
- ``again``: the same values swept back: the LaTeX comes from the cache.

    python benchmarks/bench_widgets.py [--moves 30] [--entries dpo kto ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time


def sweep(explorer, moves):
    """Times of every move over every visible slider: (forward, backward) lists of seconds."""
    forward, backward = [], []
    for slider in list(explorer.sliders.values()):
        if slider.disabled or slider.layout.display == "none":
            continue
        initial = slider.value
        values = [slider.min + (slider.max - slider.min) * k / (moves - 1) for k in range(moves)]
        for times, order in ((forward, values), (backward, values[::-1])):
            for v in order:
                start = time.perf_counter()
                slider.value = v  # the observer redraws synchronously
                times.append(time.perf_counter() - start)
        slider.value = initial
    return forward, backward


async def in_kernel_loop(name, moves):
    from lossviz.widgets import Explorer

    explorer = Explorer(name)
    forward, _ = sweep(explorer, moves)
    await asyncio.sleep(explorer.latex_delay + 0.05)  # let the deferred print run, as it would after a drag
    return forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=30)
    parser.add_argument("--entries", nargs="+", default=None, help="default: every explorer")
    args = parser.parse_args()

    from lossviz.widgets import VIEWS, Explorer

    entries = args.entries or list(VIEWS)
    ms = lambda xs: statistics.median(xs) * 1e3
    print(f"{'entry':<12} {'build s':>8} {'kernel ms':>10} {'printed ms':>11} {'again ms':>9}  sliders")
    everything = {"kernel": [], "printed": [], "again": []}
    for name in entries:
        start = time.perf_counter()
        explorer = Explorer(name)
        build = time.perf_counter() - start
        printed, again = sweep(explorer, args.moves)
        kernel = asyncio.run(in_kernel_loop(name, args.moves))
        for key, xs in (("kernel", kernel), ("printed", printed), ("again", again)):
            everything[key] += xs
        shown = ", ".join(n for n, s in explorer.sliders.items() if not s.disabled and s.layout.display != "none")
        print(f"{name:<12} {build:>8.2f} {ms(kernel):>10.1f} {ms(printed):>11.1f} {ms(again):>9.1f}  {shown}")
    print(f"median over all moves: kernel {ms(everything['kernel']):.1f} ms, printed {ms(everything['printed']):.1f} ms, "
          f"again {ms(everything['again']):.1f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
