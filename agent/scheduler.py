"""Runs every configured probe on its own interval, with start jitter, a per-target timeout
and one concurrency limit for the whole agent. One slow target never delays another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence

from agent.config import ProbeEntry
from probes import registry
from probes.base import Listener, Probe
from probes.model import PROBE_STATUS, Sample, status_sample

log = logging.getLogger("netwatch.agent.scheduler")

SampleSink = Callable[[list[Sample]], None]


#: pause before restarting a listener whose ``run`` raised
LISTENER_RESTART_S = 5.0


def build_probe(entry: ProbeEntry) -> Probe:
    cls = registry.get(entry.kind)
    assert issubclass(cls, Probe)
    return cls(entry.config, name=entry.name, timeout_s=entry.timeout_s)


def build_listener(entry: ProbeEntry) -> Listener:
    cls = registry.get(entry.kind)
    assert issubclass(cls, Listener)
    return cls(entry.config, name=entry.name)


class Scheduler:
    def __init__(
        self,
        entries: Sequence[ProbeEntry],
        sink: SampleSink,
        *,
        concurrency: int = 16,
        tags: Mapping[str, str] | None = None,
        identity_tags: Mapping[str, str] | None = None,
    ) -> None:
        self.entries = [e for e in entries if not e.listener]
        self.probes = [build_probe(e) for e in self.entries]
        self.listener_entries = [e for e in entries if e.listener]
        self.listeners = [build_listener(e) for e in self.listener_entries]
        self._sink = sink
        self._sem = asyncio.Semaphore(concurrency)
        # Extra tags lose to the probe's own; site/agent always win (the collector relies on them).
        self._tags = dict(tags or {})
        self._identity = dict(identity_tags or {})
        self._last_status: dict[int, str] = {}
        self.runs = 0
        self.overruns = 0

    def _tag(self, entry: ProbeEntry, samples: list[Sample]) -> list[Sample]:
        extra = {**self._tags, **entry.tags}
        out = []
        for s in samples:
            if extra:
                s = s.with_tags(extra, override=False)
            if self._identity:
                s = s.with_tags(self._identity, override=True)
            out.append(s)
        return out

    async def run_probe(self, idx: int) -> list[Sample]:
        """One collect of probe ``idx``, bounded by its timeout; failures become data."""
        entry, probe = self.entries[idx], self.probes[idx]
        async with self._sem:
            t0 = time.perf_counter()
            try:
                samples = await asyncio.wait_for(probe.collect(), entry.timeout_s)
            except TimeoutError:
                samples = [
                    status_sample(
                        entry.kind,
                        probe.target,
                        "down",
                        error=f"{entry.kind} {probe.target}: no result within {entry.timeout_s:g}s (timeout)",
                        duration_ms=(time.perf_counter() - t0) * 1000,
                    )
                ]
            except Exception as e:  # a probe bug must not stop the agent; report it as data
                log.exception("probe %s %s crashed", entry.kind, entry.name)
                samples = [
                    status_sample(
                        entry.kind,
                        probe.target,
                        "down",
                        error=f"probe error: {type(e).__name__}: {e}",
                        duration_ms=(time.perf_counter() - t0) * 1000,
                    )
                ]
        self.runs += 1
        self._note_status(idx, samples)
        return self._tag(entry, samples)

    def _note_status(self, idx: int, samples: list[Sample]) -> None:
        """Log the first failure and the recovery, not every poll."""
        st = next((s for s in samples if s.measurement == PROBE_STATUS), None)
        if st is None:
            return
        status = str(st.fields.get("status", "ok"))
        before = self._last_status.get(idx, "ok")
        self._last_status[idx] = status
        entry = self.entries[idx]
        if status != "ok" and before == "ok":
            log.warning("%s %s is %s: %s", entry.kind, entry.name, status, st.fields.get("error", ""))
        elif status == "ok" and before != "ok":
            log.info("%s %s recovered (was %s)", entry.kind, entry.name, before)

    async def run_once(self) -> list[Sample]:
        results = await asyncio.gather(*(self.run_probe(i) for i in range(len(self.probes))))
        return [s for r in results for s in r]

    async def _loop(self, idx: int, stop: asyncio.Event) -> None:
        entry = self.entries[idx]
        delay = random.uniform(0, entry.jitter_s) if entry.jitter_s > 0 else 0.0
        next_due = time.monotonic() + delay
        while not stop.is_set():
            wait = next_due - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    return
                except TimeoutError:
                    pass
            samples = await self.run_probe(idx)
            self._sink(samples)
            next_due += entry.interval_s
            now = time.monotonic()
            if next_due < now:  # the run overran its interval: skip missed slots, keep the phase
                missed = int((now - next_due) // entry.interval_s) + 1
                self.overruns += missed
                next_due += missed * entry.interval_s

    async def _listen(self, idx: int, stop: asyncio.Event) -> None:
        entry, listener = self.listener_entries[idx], self.listeners[idx]

        def emit(samples: list[Sample]) -> None:
            self._sink(self._tag(entry, samples))

        while not stop.is_set():
            task = asyncio.create_task(listener.run(emit))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
            stopped.cancel()
            err = task.exception()
            log.error(
                "%s %s stopped (%s); restarting in %gs",
                entry.kind,
                entry.name,
                f"{type(err).__name__}: {err}" if err else "returned",
                LISTENER_RESTART_S,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LISTENER_RESTART_S)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await asyncio.gather(
                *(self._loop(i, stop) for i in range(len(self.probes))),
                *(self._listen(i, stop) for i in range(len(self.listeners))),
            )
        finally:
            for p in self.probes:
                try:
                    await p.aclose()
                except Exception:  # closing is best effort
                    log.debug("closing %s failed", p.name, exc_info=True)
