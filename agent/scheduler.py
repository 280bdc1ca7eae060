"""Runs every configured probe on its own interval, with start jitter, a per-target timeout
and one concurrency limit for the whole agent. One slow target never delays another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from agent.config import ProbeEntry
from probes import registry
from probes.base import Listener, Probe
from probes.model import PROBE_STATUS, Sample, status_sample

log = logging.getLogger("netwatch.agent.scheduler")

SampleSink = Callable[[list[Sample]], None]


class RunLog(Protocol):
    """Where a run is recorded before it starts and marked finished once its samples are in the
    sink (agent.journal.Journal): a run begun and never finished is counted as interrupted."""

    def begin(self, kind: str, name: str, target: str) -> int: ...

    def end(self, run: int) -> None: ...

    def interrupted(self, run: int) -> None: ...


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


Key = tuple[str, str]  # (kind, name): a probe's identity across config changes


async def _stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it to end. A cancellation can be lost in library code (3.11's
    wait_for, a probe catching too much); asked again every second, it cannot hold up a config
    change for a whole interval."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %r", task.get_name(), task.exception())


class Scheduler:
    def __init__(
        self,
        entries: Sequence[ProbeEntry],
        sink: SampleSink,
        *,
        concurrency: int = 16,
        tags: Mapping[str, str] | None = None,
        identity_tags: Mapping[str, str] | None = None,
        runlog: RunLog | None = None,
    ) -> None:
        self._runlog = runlog
        self.entries = [e for e in entries if not e.listener]
        self.probes = [build_probe(e) for e in self.entries]
        self.listener_entries = [e for e in entries if e.listener]
        self.listeners = [build_listener(e) for e in self.listener_entries]
        self._sink = sink
        self._sem = asyncio.Semaphore(concurrency)
        # Extra tags lose to the probe's own; site/agent always win (the collector relies on them).
        self._tags = dict(tags or {})
        self._identity = dict(identity_tags or {})
        self._last_status: dict[Key, str] = {}
        self._tasks: dict[Key, tuple[ProbeEntry, asyncio.Task[None]]] = {}
        self._stop: asyncio.Event | None = None
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
        return await self._collect(self.entries[idx], self.probes[idx])

    async def _collect(
        self, entry: ProbeEntry, probe: Probe, started: Callable[[], None] | None = None
    ) -> list[Sample]:
        async with self._sem:
            if started is not None:  # its turn under the concurrency limit: the run begins
                started()
            t0 = time.perf_counter()
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result when it
                # is cancelled in the turn the collect finishes, and a config change that stops
                # this probe then waits for its next run (tests/agent/test_scheduler.py).
                async with asyncio.timeout(entry.timeout_s):
                    samples = await probe.collect()
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
        self._note_status(entry, samples)
        return self._tag(entry, samples)

    def _note_status(self, entry: ProbeEntry, samples: list[Sample]) -> None:
        """Log the first failure and the recovery, not every poll."""
        st = next((s for s in samples if s.measurement == PROBE_STATUS), None)
        if st is None:
            return
        status = str(st.fields.get("status", "ok"))
        key = (entry.kind, entry.name)
        before = self._last_status.get(key, "ok")
        self._last_status[key] = status
        if status != "ok" and before == "ok":
            log.warning("%s %s is %s: %s", entry.kind, entry.name, status, st.fields.get("error", ""))
        elif status == "ok" and before != "ok":
            log.info("%s %s recovered (was %s)", entry.kind, entry.name, before)

    async def run_once(self) -> list[Sample]:
        results = await asyncio.gather(*(self.run_probe(i) for i in range(len(self.probes))))
        return [s for r in results for s in r]

    async def _loop(self, entry: ProbeEntry, probe: Probe, stop: asyncio.Event) -> None:
        delay = random.uniform(0, entry.jitter_s) if entry.jitter_s > 0 else 0.0
        next_due = time.monotonic() + delay
        try:
            while not stop.is_set():
                wait = next_due - time.monotonic()
                if wait > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                        return
                    except TimeoutError:
                        pass
                await self._run(entry, probe)
                next_due += entry.interval_s
                now = time.monotonic()
                if next_due < now:  # the run overran its interval: skip missed slots, keep the phase
                    missed = int((now - next_due) // entry.interval_s) + 1
                    self.overruns += missed
                    next_due += missed * entry.interval_s
        finally:
            try:
                await probe.aclose()
            except Exception:  # closing is best effort
                log.debug("closing %s failed", probe.name, exc_info=True)

    async def _run(self, entry: ProbeEntry, probe: Probe) -> None:
        """One run, recorded in the run log (when there is one) before the probe sends anything."""
        rl = self._runlog
        if rl is None:
            self._sink(await self._collect(entry, probe))
            return
        run: int | None = None

        def started() -> None:
            nonlocal run
            run = rl.begin(entry.kind, entry.name, probe.target)

        try:
            samples = await self._collect(entry, probe, started)
        except BaseException:  # cancelled (probe stopped or changed): the run never finishes
            if run is not None:
                rl.interrupted(run)
            raise
        self._sink(samples)
        if run is not None:
            rl.end(run)

    async def _listen(self, entry: ProbeEntry, listener: Listener, stop: asyncio.Event) -> None:
        def emit(samples: list[Sample]) -> None:
            self._sink(self._tag(entry, samples))

        while not stop.is_set():
            task = asyncio.create_task(listener.run(emit))
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                task.cancel()
                stopped.cancel()
                await asyncio.gather(task, stopped, return_exceptions=True)
                raise
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

    def _start(self, entry: ProbeEntry, stop: asyncio.Event) -> None:
        key = (entry.kind, entry.name)
        if entry.listener:
            coro = self._listen(entry, build_listener(entry), stop)
        else:
            coro = self._loop(entry, build_probe(entry), stop)
        self._tasks[key] = (entry, asyncio.create_task(coro, name=f"probe {entry.kind} {entry.name}"))

    async def apply(self, entries: Sequence[ProbeEntry]) -> tuple[int, int, int]:
        """Run ``entries`` from now on: probes whose entry is unchanged keep running (no restart,
        no lost phase), changed ones restart, removed ones stop. Returns (started, stopped, kept).
        Every probe is built before anything stops, so a probe that cannot be built leaves the
        running set as it was (ValueError)."""
        stop = self._stop
        if stop is None:
            raise RuntimeError("apply() needs a running scheduler")
        wanted = {(e.kind, e.name): e for e in entries}
        for e in wanted.values():
            if (e.kind, e.name) not in self._tasks or self._tasks[(e.kind, e.name)][0] != e:
                try:
                    (build_listener if e.listener else build_probe)(e)
                except Exception as err:
                    raise ValueError(f"{e.kind} {e.name}: cannot start: {type(err).__name__}: {err}") from err
        stopped = 0
        for key in list(self._tasks):
            entry, task = self._tasks[key]
            if wanted.get(key) != entry:
                await _stop_task(task)
                del self._tasks[key]
                self._last_status.pop(key, None)
                stopped += 1
        started = 0
        for key, e in wanted.items():
            if key not in self._tasks:
                self._start(e, stop)
                started += 1
        self.entries = [e for e in entries if not e.listener]
        self.listener_entries = [e for e in entries if e.listener]
        return started, stopped, len(wanted) - started

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        for e, p in zip(self.entries, self.probes, strict=True):
            self._tasks[(e.kind, e.name)] = (e, asyncio.create_task(self._loop(e, p, stop)))
        for e, listener in zip(self.listener_entries, self.listeners, strict=True):
            self._tasks[(e.kind, e.name)] = (e, asyncio.create_task(self._listen(e, listener, stop)))
        try:
            await stop.wait()
        finally:
            tasks = [t for _, t in self._tasks.values()]
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()
            self._stop = None
