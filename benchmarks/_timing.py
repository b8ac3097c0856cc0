"""Wall-clock timing of fresh processes, shared by the benchmark scripts."""

from __future__ import annotations

import os
import statistics
import subprocess
import time


def wall(argv, cwd=None, env=None, check=True) -> float:
    """Seconds one run of ``argv`` takes, start to exit."""
    start = time.perf_counter()
    subprocess.run(argv, check=check, capture_output=True, cwd=cwd, env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def median_wall(argv, repeat: int, cwd=None, env=None, check=True) -> float:
    return statistics.median(wall(argv, cwd, env, check) for _ in range(repeat))
