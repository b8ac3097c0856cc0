"""Speed of `lossviz verify --all` (float64, CPU), and where the time goes.

Target: under 20 s for all entries in float64 on a 2-core CPU, each entry at its defaults and
at the parameter sets drawn from the seed (``lossviz.verification.SAMPLES``). The floor is a
process that only imports torch and sympy, measured in the same run.

    python benchmarks/bench_verify.py [--repeat 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _timing.py lives beside the scripts
from _timing import median_wall  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    floor = median_wall([sys.executable, "-c", "import torch, sympy"], args.repeat, check=False)
    total = median_wall([sys.executable, "-m", "lossviz", "verify", "--all", "--device", args.device], args.repeat, check=False)
    print(f"floor (import torch, sympy):            {floor:6.2f} s")
    print(f"lossviz verify --all --device {args.device} (float64): {total:6.2f} s  (target < 20 s; median of {args.repeat})")

    # where the time goes, in one process
    start = time.perf_counter()
    import torch  # noqa: F401
    import sympy  # noqa: F401

    imports = time.perf_counter() - start
    from lossviz.verification import verify

    profile = cProfile.Profile()
    profile.enable()
    report = verify(None, device=args.device)
    profile.disable()
    stats = pstats.Stats(profile)
    buckets = {
        "sympy: derive, simplify, facts": ["sympy"],
        "lossviz lowering (compile + numpy eval)": ["lower.py"],
        "torch: production forward/backward, gradcheck": ["torch"],
    }
    spent = {k: 0.0 for k in buckets}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        for label, needles in buckets.items():
            if any(n in filename for n in needles):
                spent[label] += tottime
                break
    print(f"\nin one process: imports {imports:.2f} s, then per entry:")
    for r in report.results:
        print(f"  {r.entry:<12} {r.seconds:5.2f} s")
    print(f"  {'total':<12} {sum(r.seconds for r in report.results):5.2f} s")
    print("by library (self time, cProfile):")
    for label, t in spent.items():
        print(f"  {label:<48} {t:5.2f} s")
    print(report.table().splitlines()[-1])


if __name__ == "__main__":
    main()
