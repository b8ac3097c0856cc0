"""Latency of the explorer: median time from a slider change to the redrawn figure (target < 50 ms).

    python benchmarks/bench_widgets.py [--moves 60]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=60)
    parser.add_argument("--entries", nargs="+", default=["dpo", "cdpo", "kto", "ppo-policy", "ppo-value", "prm"])
    args = parser.parse_args()

    from lossviz.widgets import Explorer

    print(f"{'entry':<12} {'slider':<16} {'build s':>8} {'median ms':>10} {'p90 ms':>8}")
    medians = []
    for name in args.entries:
        start = time.perf_counter()
        explorer = Explorer(name)
        build = time.perf_counter() - start
        slider_name, slider = next(iter(explorer.sliders.items()))
        values = [slider.min + (slider.max - slider.min) * k / (args.moves - 1) for k in range(args.moves)]
        times = []
        for v in values:
            start = time.perf_counter()
            slider.value = v  # the observer redraws synchronously: figure, facts and LaTeX
            times.append(time.perf_counter() - start)
        median = statistics.median(times) * 1e3
        medians.append(median)
        print(f"{name:<12} {slider_name:<16} {build:>8.2f} {median:>10.1f} {sorted(times)[int(0.9 * len(times))] * 1e3:>8.1f}")
    print(f"median over entries: {statistics.median(medians):.1f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
