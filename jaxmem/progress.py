"""Progress for long loops: a periodic log line with rate and ETA."""

from __future__ import annotations

import time

from absl import logging


class Progress:
    """Logs `name: done/total (pct) rate unit/s, ETA` at most every `every_s` seconds, after a
    `name: N of T units to go` line when created (the first update may wait for the compiler:
    the line says so, since a program already compiled in this process starts at once).

    Usage: p = Progress("train", total=steps, unit="step"); p.update(k) after k more units.
    """

    def __init__(self, name: str, total: int, unit: str = "it", every_s: float = 10.0, start: int = 0):
        self.name, self.total, self.unit, self.every_s = name, total, unit, every_s
        self.done = start
        self._t0 = self._last = time.perf_counter()
        self._done0 = start
        logging.info("%s: %d of %d %ss to go (compiling first unless compiled before)", name, total - start,
                     total, unit)

    def update(self, n: int = 1, **extra) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            rate = (self.done - self._done0) / max(now - self._t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            fields = "".join(f" {k}={v:.4g}" if isinstance(v, float) else f" {k}={v}"
                             for k, v in extra.items())
            logging.info("%s: %d/%d (%.0f%%) %.3g %s/s, ETA %.0fs%s", self.name, self.done, self.total,
                         100.0 * self.done / max(self.total, 1), rate, self.unit, eta, fields)
