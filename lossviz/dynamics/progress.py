"""A progress bar on stderr for simulations longer than a second (tqdm when installed).

Off when stderr is not a terminal, so pipes, logs and tests stay clean.
"""

from __future__ import annotations

import sys
import time

DELAY_S = 1.0  # runs shorter than this show nothing


class Progress:
    def __init__(self, total: int, label: str, enabled=None, stream=None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total, self.label, self.enabled = max(int(total), 1), label, enabled
        self.done, self.start, self._shown, self._bar = 0, time.perf_counter(), False, None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, desc=label, file=self.stream, delay=DELAY_S, leave=False)
            except ImportError:
                self._bar = None

    def update(self, n: int = 1):
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        elapsed = time.perf_counter() - self.start
        if elapsed < DELAY_S or (self.done % max(self.total // 100, 1) and self.done < self.total):
            return
        filled = int(30 * self.done / self.total)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {elapsed:.1f}s")
        self.stream.flush()
        self._shown = True

    def close(self):
        if self._bar is not None:
            self._bar.close()
        elif self._shown:
            self.stream.write("\r" + " " * (len(self.label) + 60) + "\r")
            self.stream.flush()
