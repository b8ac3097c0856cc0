"""Speed of `lossviz plot dpo --beta 0.1` against a floor, and of `lossviz gallery`.

The floor is a script that only imports numpy and matplotlib, plots one curve and saves a PNG;
everything is measured in the same run as fresh processes (median of --repeat). Target ratio
<= 1.5. `lossviz plot` is measured twice: cold (LOSSVIZ_NO_CACHE=1: sympy is imported and the
figure built) and warm (the built figure comes from lossviz's figure cache, in a temporary
cache folder here, so only rendering and saving remain).

    python benchmarks/bench_plot.py [--repeat 7]
"""

from __future__ import annotations


import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py lives beside the scripts
from _timing import wall  # noqa: E402

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plot = [sys.executable, "-m", "lossviz", "plot", "dpo", "--beta", "0.1"]
        cache = {"LOSSVIZ_CACHE_DIR": str(Path(tmp) / "cache")}
        floor_cmd = [sys.executable, "-c", FLOOR.format(out=str(Path(tmp) / "floor.png"))]
        wall(plot, tmp, cache)  # fill the cache
        times = {"floor": [], "cold": [], "warm": []}
        for _ in range(args.repeat):  # interleaved, so that machine noise hits all three alike
            times["floor"].append(wall(floor_cmd, tmp))
            times["cold"].append(wall(plot, tmp, {"LOSSVIZ_NO_CACHE": "1"}))
            times["warm"].append(wall(plot, tmp, cache))
        floor, cold, warm = (statistics.median(times[k]) for k in ("floor", "cold", "warm"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lossviz", "gallery", "--out", str(Path(tmp) / "gallery")], check=True, capture_output=True)
        gallery = time.perf_counter() - start
    print(f"floor (numpy + matplotlib, one curve, save PNG):   {floor:.3f} s (median of {args.repeat})")
    print(f"lossviz plot dpo --beta 0.1, cold (no cache):      {cold:.3f} s  ratio {cold / floor:.2f}")
    print(f"lossviz plot dpo --beta 0.1, warm (figure cached): {warm:.3f} s  ratio {warm / floor:.2f}  (target <= 1.5)")
    print(f"lossviz gallery (16 figures + README):             {gallery:.2f} s")


if __name__ == "__main__":
    main()
