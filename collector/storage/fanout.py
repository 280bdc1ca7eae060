"""The store stage: every batch of samples goes to every configured sink, with retries while a
sink is unavailable (after the ``retry_after`` the store asked for, else a growing backoff) and
exact counts of what each sink stored and refused."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from collector.stats import Counters
from collector.storage.base import CheckedSink, Sink, StorageError, StoreRejected, StoreUnavailable
from probes.model import Sample

log = logging.getLogger("netwatch.collector.store")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
#: a store asking to be left alone longer than this is asked again after this long
MAX_RETRY_AFTER_S = 300.0


class Store:
    """Fan-out to ``sinks``. ``write`` returns True once every sink has the samples (stored or
    refused for good) and False only when ``stopping`` is set while a sink is still unavailable."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        counters: Counters,
        stopping: threading.Event,
        *,
        on_retry: Callable[[str, StorageError], None] | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.counters = counters
        self.stopping = stopping
        #: called (sink name, error) before each wait for an unavailable sink
        self.on_retry = on_retry
        self._failing: set[str] = set()

    @property
    def checks(self) -> bool:
        """Whether a sink needs to know which samples an earlier attempt may have stored."""
        return any(isinstance(getattr(s, "inner", s), CheckedSink) for s in self.sinks)

    def write(self, samples: Sequence[Sample], unsure: Sequence[Sample] = ()) -> bool:
        """``unsure``: samples an earlier attempt may have stored (see CheckedSink); a sink that
        cannot hold a duplicate takes them like the others."""
        if not samples and not unsure:
            return True
        for sink in self.sinks:
            if isinstance(sink, CheckedSink):
                ok = self._write_one(sink, samples) and self._write_one(sink, unsure, checked=True)
            else:
                ok = self._write_one(sink, [*samples, *unsure] if unsure else samples)
            if not ok:
                return False
        return True

    def _write_one(self, sink: Sink, samples: Sequence[Sample], *, checked: bool = False) -> bool:
        if not samples:
            return True
        delay = FIRST_DELAY_S
        while True:
            try:
                if checked and isinstance(sink, CheckedSink):
                    sink.write_unsure(samples)
                else:
                    sink.write(samples)
                stored, rejected = len(samples), 0
            except StoreRejected as e:
                # The rest are durably stored; these would be refused again on every retry.
                rejected = len(samples) if e.rejected is None else min(e.rejected, len(samples))
                stored = len(samples) - rejected
                log.error("store %s refused %d of %d samples: %s", sink.name, rejected, len(samples), e)
            except StoreUnavailable as e:
                checked = True  # a timeout or a lost connection may come after the store took them
                self.counters.inc(f"store_retries_{sink.name}")
                if sink.name not in self._failing:
                    self._failing.add(sink.name)
                    log.error("store %s unavailable: %s — holding messages unacknowledged and retrying", sink.name, e)
                if self.on_retry is not None:
                    self.on_retry(sink.name, e)
                wait = delay
                if e.retry_after_s is not None:
                    wait = min(max(e.retry_after_s, 0.0), MAX_RETRY_AFTER_S)
                    self.counters.inc(f"store_retry_after_{sink.name}")
                if self.stopping.wait(wait):
                    return False
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            except Exception as e:  # a sink bug: same as unavailable, but counted as a stage error
                self.counters.stage_error("store", e)
                if self.stopping.wait(delay):
                    return False
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            self.counters.inc(f"stored_samples_{sink.name}", stored)
            if rejected:
                self.counters.inc(f"store_rejected_{sink.name}", rejected)
            if sink.name in self._failing:
                self._failing.discard(sink.name)
                log.info("store %s is back", sink.name)
            return True

    def prune(self) -> None:
        for sink in self.sinks:
            prune = getattr(sink, "prune", None)
            if prune is not None:
                n = prune()
                if n:
                    log.info("retention: pruned %d old points from %s", n, sink.name)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
