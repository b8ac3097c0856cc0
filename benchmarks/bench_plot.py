"""Speed of `lossviz plot dpo --beta 0.1` against a floor, and of `lossviz gallery`.

The floor is a script that only imports numpy and matplotlib, plots one curve and saves a PNG;
both are measured in the same run as fresh processes (median of --repeat). Target ratio <= 1.5.

    python benchmarks/bench_plot.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = """
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
x = np.linspace(-50, 50, 801)
fig, ax = plt.subplots()
ax.plot(x, np.log1p(np.exp(-0.1 * x)))
fig.savefig({out!r})
"""


def median_wall(argv, repeat, cwd):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=cwd)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor = median_wall([sys.executable, "-c", FLOOR.format(out=str(Path(tmp) / "floor.png"))], args.repeat, tmp)
        plot = median_wall([sys.executable, "-m", "lossviz", "plot", "dpo", "--beta", "0.1"], args.repeat, tmp)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lossviz", "gallery", "--out", str(Path(tmp) / "gallery")], check=True, capture_output=True)
        gallery = time.perf_counter() - start
    print(f"floor (numpy + matplotlib, one curve, save PNG): {floor:.3f} s (median of {args.repeat})")
    print(f"lossviz plot dpo --beta 0.1:                     {plot:.3f} s (median of {args.repeat})")
    print(f"ratio: {plot / floor:.2f} (target <= 1.5)")
    print(f"lossviz gallery (16 figures + README):           {gallery:.2f} s")


if __name__ == "__main__":
    main()
