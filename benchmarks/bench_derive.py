"""Speed of `lossviz derive`: each entry cold (a fresh process, as a user runs it) and all entries in one process.

Targets (on a 2-core CPU): the slowest entry cold < 2 s, all derivations together < 10 s.
The floor is a process that only imports sympy, measured in the same run, so the ratio shows what
lossviz adds on top of the interpreter and sympy.

    python benchmarks/bench_derive.py [--repeat 3]
"""

from __future__ import annotations


import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py lives beside the scripts
from _timing import median_wall  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    args = parser.parse_args()

    from lossviz.registry import names

    floor = median_wall([sys.executable, "-c", "import sympy"], args.repeat)
    print(f"floor: python -c 'import sympy'  {floor:.2f} s (median of {args.repeat})")
    print(f"{'entry':<12} {'cold derive (s)':>16} {'x floor':>8}")
    cold = {}
    for name in names():
        cold[name] = median_wall([sys.executable, "-m", "lossviz", "derive", name, "--defaults"], args.repeat)
        print(f"{name:<12} {cold[name]:>16.2f} {cold[name] / floor:>8.2f}")
    slowest = max(cold, key=cold.get)

    # gradients and facts are computed lazily: read every one of them
    code = ("from lossviz.registry import derive, names\nfor n in names():\n"
            "    d = derive(n, symbolic=False); dict(d.gradient); [f.value for f in d.facts]; d.loss_latex\n")
    together = median_wall([sys.executable, "-c", code], args.repeat)
    print(f"slowest entry cold: {slowest} {cold[slowest]:.2f} s (target < 2 s)")
    print(f"all {len(cold)} derivations in one process: {together:.2f} s (target < 10 s)")


if __name__ == "__main__":
    main()
