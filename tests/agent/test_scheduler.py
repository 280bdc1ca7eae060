"""Scheduler: intervals, per-target timeout, global concurrency, failures as data, identity tags."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent import scheduler as sched_mod
from agent.config import ProbeEntry
from agent.scheduler import Scheduler
from probes.base import Emit, Listener, Probe, ProbeConfig
from probes.model import EVENT, Sample, event_sample, status_sample


class _Cfg(ProbeConfig):
    delay: float = 0.0
    crash: bool = False


class FakeProbe(Probe):
    kind = "fake"
    config_model = _Cfg
    running = 0
    peak = 0

    async def collect(self) -> list[Sample]:
        cfg = self.config
        assert isinstance(cfg, _Cfg)
        FakeProbe.running += 1
        FakeProbe.peak = max(FakeProbe.peak, FakeProbe.running)
        try:
            if cfg.crash:
                raise RuntimeError("boom")
            await asyncio.sleep(cfg.delay)
            return [
                Sample("fake", {"target": self.name, "site": "forged"}, {"v": 1}),
                status_sample("fake", self.name, "ok"),
            ]
        finally:
            FakeProbe.running -= 1


@pytest.fixture(autouse=True)
def _fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sched_mod, "build_probe", lambda e: FakeProbe(e.config, name=e.name, timeout_s=e.timeout_s))
    FakeProbe.running = FakeProbe.peak = 0


def entry(
    name: str,
    *,
    interval: float = 0.2,
    timeout: float = 0.15,
    delay: float = 0.0,
    crash: bool = False,
    tags: dict[str, str] | None = None,
) -> ProbeEntry:
    return ProbeEntry("fake", name, interval, 0.0, timeout, tags or {}, _Cfg(delay=delay, crash=crash))


async def test_slow_target_times_out_as_data_and_does_not_delay_others() -> None:
    got: list[Sample] = []
    s = Scheduler(
        [entry("fast"), entry("slow", delay=5.0)],
        got.extend,
        concurrency=4,
        identity_tags={"site": "town-1", "agent": "a1"},
    )
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await asyncio.sleep(1.05)
    stop.set()
    await task
    fast = [x for x in got if x.measurement == "fake" and x.tags["target"] == "fast"]
    slow_status = [x for x in got if x.measurement == "probe_status" and x.tags["target"] == "slow"]
    assert 5 <= len(fast) <= 7  # every 200 ms for ~1 s, undisturbed by the slow one
    assert slow_status and all(
        x.fields["status"] == "down" and "timeout" in str(x.fields["error"]) for x in slow_status
    )
    # identity tags always win over what a probe wrote
    assert all(x.tags["site"] == "town-1" and x.tags["agent"] == "a1" for x in got)


async def test_concurrency_limit_holds() -> None:
    s = Scheduler([entry(f"p{i}", delay=0.1, timeout=1.0) for i in range(10)], lambda _: None, concurrency=3)
    t0 = time.monotonic()
    out = await s.run_once()
    assert FakeProbe.peak == 3
    assert time.monotonic() - t0 >= 0.3  # 10 probes, 3 at a time, 0.1 s each -> 4 rounds
    assert len([x for x in out if x.measurement == "fake"]) == 10


async def test_crash_becomes_down_status() -> None:
    s = Scheduler([entry("bad", crash=True)], lambda _: None)
    out = await s.run_once()
    assert len(out) == 1 and out[0].fields["status"] == "down" and "RuntimeError: boom" in str(out[0].fields["error"])


async def test_extra_tags_do_not_override_probe_tags() -> None:
    s = Scheduler([entry("x", tags={"target": "overridden?", "rack": "r1"})], lambda _: None, tags={"county": "east"})
    out = await s.run_once()
    fake = next(x for x in out if x.measurement == "fake")
    assert fake.tags["target"] == "x" and fake.tags["rack"] == "r1" and fake.tags["county"] == "east"


class FakeListener(Listener):
    kind = "fake_listener"
    config_model = _Cfg
    starts = 0

    async def run(self, emit: Emit) -> None:
        FakeListener.starts += 1
        emit([event_sample("fake_trap", "10.0.0.1", f"start {FakeListener.starts}", severity="warning")])
        if FakeListener.starts == 1:
            raise OSError("socket went away")
        await asyncio.Event().wait()  # until cancelled


async def test_listener_emits_is_tagged_and_restarted_after_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sched_mod, "build_listener", lambda e: FakeListener(e.config, name=e.name))
    monkeypatch.setattr(sched_mod, "LISTENER_RESTART_S", 0.1)
    FakeListener.starts = 0
    got: list[Sample] = []
    listener = ProbeEntry("fake_listener", "traps", 0.0, 0.0, 0.0, {}, _Cfg(), listener=True)
    s = Scheduler([listener, entry("poll")], got.extend, identity_tags={"site": "town-1", "agent": "a1"})
    assert len(s.probes) == 1 and len(s.listeners) == 1
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 2)
    events = [x for x in got if x.measurement == EVENT]
    assert [e.fields["message"] for e in events] == ["start 1", "start 2"]
    assert all(e.tags["agent"] == "a1" and e.tags["type"] == "fake_trap" for e in events)
    assert any(x.measurement == "fake" for x in got)  # the polled probe ran alongside


class GateProbe(Probe):
    """A probe whose run ends when the test opens its gate."""

    kind = "fake"
    config_model = _Cfg
    gate: asyncio.Future[None] | None = None
    waiting = asyncio.Event()

    async def collect(self) -> list[Sample]:
        GateProbe.gate = asyncio.get_running_loop().create_future()
        GateProbe.waiting.set()
        await GateProbe.gate
        return [status_sample("fake", self.name, "ok")]


async def test_a_config_change_landing_as_a_run_ends_stops_the_probe_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen in the control e2e under load: a config push arrived in the loop turn in which an
    SNMP poll (interval 1 h) finished, and the agent applied it only when it was stopped 20 s
    later. Python 3.11's asyncio.wait_for returns the inner result when it is cancelled just as
    the inner finishes — the cancellation is lost, the probe's loop sleeps on towards its next
    run, and apply() waits for it. Here the gate opens and apply() cancels in the same turn."""
    monkeypatch.setattr(sched_mod, "build_probe", lambda e: GateProbe(e.config, name=e.name, timeout_s=e.timeout_s))

    async def cancel_once(task: asyncio.Task[None]) -> None:  # no second try: the first must land
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    monkeypatch.setattr(sched_mod, "_stop_task", cancel_once)
    GateProbe.waiting = asyncio.Event()
    got: list[Sample] = []
    s = Scheduler([entry("hourly", interval=3600.0, timeout=60.0)], got.extend)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    try:
        await asyncio.wait_for(GateProbe.waiting.wait(), 5)
        assert GateProbe.gate is not None
        GateProbe.gate.set_result(None)  # the run ends in the next turn...
        applying = asyncio.create_task(s.apply([]))  # ...and the new config is applied in it
        assert await asyncio.wait_for(applying, 5) == (0, 1, 0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_stopping_a_task_that_loses_a_cancellation_asks_again() -> None:
    """The second line of defence: a task that swallows one cancellation (as library code can)
    is still stopped."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(sched_mod._stop_task(task), 10)
    assert task.cancelled() and swallowed == 1
