"""The alerting stage: the alert engine on its own thread behind a bounded queue, so that slow or
failing alerting never holds up storing. What it is fed is counted, what it could not take is
counted, and an exception in the engine is counted and logged once, never fatal."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from collector.stats import Counters
from probes.model import Sample

log = logging.getLogger("netwatch.alerting")

#: groups of stored samples (one per writer transaction) waiting for the engine
QUEUE_ITEMS = 1000
TICK_S = 1.0


class AlertHook(Protocol):
    """What the pipeline tells alerting (collector/alerting/engine.py implements it)."""

    def observe(self, samples: list[Sample]) -> None:
        """Samples just stored (every one, in arrival order)."""

    def agent_status(self, agent: str, site: str, state: str) -> None:
        """An agent's retained status: online, or offline (its Last Will or a clean stop)."""

    def tick(self, now_ns: int) -> None:
        """About once a second: time-based conditions (absent), notifications, housekeeping."""

    def stats(self) -> dict[str, int]:
        """The engine's own counts for ``stats`` (read from another thread: plain numbers only)."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Status:
    agent: str
    site: str
    state: str


class AlertStage:
    def __init__(self, engine: AlertHook, counters: Counters, *, max_items: int = QUEUE_ITEMS) -> None:
        self.engine = engine
        self.counters = counters
        self._queue: queue.Queue[list[Sample] | _Status] = queue.Queue(maxsize=max_items)
        self._stop = threading.Event()
        self._full_logged = False
        self._thread = threading.Thread(target=self._run, name="collector-alerting", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, int]:
        try:
            return {**self.engine.stats(), "alerting_queue_depth": self.depth}
        except Exception as e:
            self.counters.stage_error("alerting", e)
            return {"alerting_queue_depth": self.depth}

    def _put(self, item: list[Sample] | _Status, samples: int) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            # Storing goes on; alerting misses these and says so.
            self.counters.inc("alerting_dropped_samples", samples)
            if not self._full_logged:
                self._full_logged = True
                log.error("alerting is %d groups behind: samples not evaluated are counted", self._queue.maxsize)

    def submit(self, samples: list[Sample]) -> None:
        if samples:
            self._put(samples, len(samples))

    def status(self, agent: str, site: str, state: str) -> None:
        self._put(_Status(agent, site, state), 0)

    def _call(self, what: str, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except Exception as e:
            self.counters.stage_error("alerting", e)
            log.debug("alerting %s failed", what, exc_info=e)

    def _handle(self, item: list[Sample] | _Status) -> None:
        if isinstance(item, _Status):
            self._call("agent_status", self.engine.agent_status, item.agent, item.site, item.state)
        else:
            self._call("observe", self.engine.observe, item)
            self.counters.inc("alerting_observed_samples", len(item))

    def _run(self) -> None:
        next_tick = time.monotonic()
        while True:
            wait = max(0.0, next_tick - time.monotonic())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            if self._stop.is_set() and self._queue.empty():
                break
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                self._call("tick", self.engine.tick, time.time_ns())

    def close(self, timeout_s: float = 10.0) -> None:
        """Evaluate what is queued (for up to ``timeout_s``), then close the engine."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        try:
            self.engine.close()
        except Exception as e:
            self.counters.stage_error("alerting", e)
