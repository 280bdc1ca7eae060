"""What the collector counts about itself: messages, samples, refusals by reason, duplicates, and
errors by pipeline stage. Every stage writes here; ``stats`` and ``/api/stats`` read a snapshot."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

log = logging.getLogger("netwatch.collector")


class Counters:
    """Thread-safe counters with a consistent snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.c: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.dropped_samples: Counter[str] = Counter()
        self.stage_errors: Counter[str] = Counter()
        self._logged_errors: set[tuple[str, str]] = set()

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.c[name] += n

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def drop(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped_samples[reason] += n

    def stage_error(self, stage: str, err: BaseException) -> None:
        """An unexpected exception in a pipeline stage: counted, logged once per stage and kind
        (with its traceback), and the pipeline goes on."""
        kind = type(err).__name__
        with self._lock:
            self.stage_errors[stage] += 1
            first = (stage, kind) not in self._logged_errors
            self._logged_errors.add((stage, kind))
        if first:
            log.error(
                "stage %s failed: %s: %s (counted in stats as stage_errors.%s; further ones not logged)",
                stage,
                kind,
                err,
                stage,
                exc_info=err,
            )

    def get(self, name: str) -> int:
        with self._lock:
            return self.c[name]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **dict(self.c),
                "rejected": dict(self.rejected),
                "dropped_samples": dict(self.dropped_samples),
                "rejected_total": sum(self.rejected.values()),
                "stage_errors": dict(self.stage_errors),
            }
