"""Speed of the dynamics: each scenario at its defaults (target < 3 s on a 2-core CPU), its figure,
and the explorer's step slider (target < 50 ms per redraw).

    python benchmarks/bench_dynamics.py [--repeat 3] [--moves 40]

Times are medians in one process after torch is imported (its import, about 1-2 s, is paid once
per process and printed separately).
"""

from __future__ import annotations

import argparse
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args()

    start = time.perf_counter()
    import torch  # noqa: F401

    print(f"import torch: {time.perf_counter() - start:.2f} s (once per process)")
    from lossviz.dynamics import scenarios
    from lossviz.dynamics.engine import simulate
    from lossviz.dynamics.explorer import DynamicsExplorer

    print(f"{'scenario':<26} {'steps':>6} {'run s':>7} {'figure s':>9} {'scrub ms':>9} {'p90 ms':>7}")
    worst_run, worst_scrub = 0.0, 0.0
    for item in scenarios():
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            sim = simulate(item.name, progress=False)
            runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        sim.figure()
        figure_s = time.perf_counter() - t
        explorer = DynamicsExplorer(item.name)
        last = explorer.step_slider.max
        times = []
        for k in range(args.moves):
            t = time.perf_counter()
            explorer.step_slider.value = (k * 7919) % (last + 1)  # jumps across the run; the observer redraws synchronously
            times.append(time.perf_counter() - t)
        run_s, scrub = statistics.median(runs), statistics.median(times) * 1e3
        worst_run, worst_scrub = max(worst_run, run_s), max(worst_scrub, scrub)
        p90 = sorted(times)[int(0.9 * len(times))] * 1e3
        print(f"{item.name:<26} {item.steps:>6} {run_s:>7.2f} {figure_s:>9.2f} {scrub:>9.1f} {p90:>7.1f}")
    print(f"slowest run {worst_run:.2f} s (target < 3 s); slowest median scrub {worst_scrub:.1f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
