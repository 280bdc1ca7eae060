"""Nothing lost: every sample an agent spooled is stored exactly once, at its own timestamp, or
its loss is counted — through broker, collector, store and agent failures and a flapping link.
Real processes throughout: agents, Mosquitto, the collector, VictoriaMetrics."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.rig import LinkProxy, Rig, _key
from services import start_victoria_metrics

from agent.spool import read_stats
from collector.storage.sqlite import SqliteSink

pytestmark = pytest.mark.e2e


@pytest.fixture
def vm_no_dedup(tmp_path: Path) -> Iterator[Any]:
    """VictoriaMetrics keeping every copy it is sent: a duplicate write would show."""
    vm = start_victoria_metrics(tmp_path / "vm", dedup=None)
    yield vm
    vm.close()


def _verify(rig: Rig, aids: list[str], *, vm: bool = True) -> dict[str, int]:
    counts = {}
    for aid in aids:
        expected = rig.expected(aid)
        rig.wait_stored(aid, len(expected))
        rig.assert_sqlite_exact(aid, expected)
        if vm:
            rig.assert_vm_exact(aid, expected)
        rig.assert_batches_once(aid)
        counts[aid] = len(expected)
    return counts


def test_broker_down_longer_than_inflight_then_back(tmp_path: Path, mosquitto: Any, vm_no_dedup: Any) -> None:
    rig = Rig(tmp_path, mosquitto.port, vm_no_dedup)
    try:
        rig.start_collector()
        for aid in ("t1", "t2"):
            rig.start_agent(aid)
        time.sleep(3)
        mosquitto.stop()
        # More batches pile up than the 20 allowed in flight (~9 s at 300 ms; longer on a loaded machine).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if read_stats(tmp_path / "t1-spool.db").depth > 20:
                    break
            except sqlite3.OperationalError:  # busy being written, or not created yet on a slow start
                pass
            time.sleep(0.5)
        assert read_stats(tmp_path / "t1-spool.db").depth > 20
        time.sleep(2.5)  # so that the agent's own metrics (every 1 s) record that depth too
        mosquitto.start()
        time.sleep(4)
        rig.stop_agents_drained()
        counts = _verify(rig, ["t1", "t2"])
        assert all(n > 100 for n in counts.values()), counts
        # the outage was visible in the agent's own metrics, at the time it happened
        reader = SqliteSink.open_readonly(tmp_path / "collector" / "metrics.db")
        try:
            health = reader.query("netwatch_agent", tags={"agent": "t1"})
        finally:
            reader.close()
        assert max(s.fields["spool_depth"] for s in health) > 20
        assert max(s.fields["spool_oldest_s"] for s in health) > 5
        assert any(s.fields["connected"] is False for s in health)
    finally:
        rig.close()


def test_collector_sigkill_mid_stream_and_restart(tmp_path: Path, mosquitto: Any, vm_no_dedup: Any) -> None:
    # VictoriaMetrics keeps every copy (no -dedup.minScrapeInterval). The counting proxy in
    # front of it holds back its acknowledgement of a write of t1's points, and the collector is
    # SIGKILLed in that window: the points are in the store, the batches are not recorded as
    # stored, and the broker redelivers them to the next collector — which must ask the store
    # rather than write them again. Twice, so a collector restarted after a kill is killed too.
    rig = Rig(tmp_path, mosquitto.port, vm_no_dedup, counting=True)
    sink = rig.sink
    assert sink is not None
    try:
        col = rig.start_collector()
        rig.start_agent("t1")
        time.sleep(3)
        held = 0
        for _ in range(2):
            sink.hold("t1")
            assert sink.held.wait(20), col.tail()
            col.kill()
            sink.release()
            held = len(sink.held_points)
            assert held > 0
            time.sleep(2)  # the broker keeps the collector's messages meanwhile
            col = rig.start_collector()
            time.sleep(3)
        rig.stop_agents_drained()
        counts = _verify(rig, ["t1"])  # VictoriaMetrics' raw export: no point twice
        points = rig.assert_written_once("t1", rig.expected("t1"))  # the sink's count: each written once
        assert sink.checks >= 2  # the redelivered batches were checked with the store
        print(
            f"collector SIGKILL: {counts['t1']} samples, {points} points, {sink.writes} writes, "
            f"{held} points held at the last kill, {sink.checks} checks"
        )
    finally:
        rig.close()


def test_store_down_then_back_drains_the_collector_spool(tmp_path: Path, mosquitto: Any, vm_no_dedup: Any) -> None:
    # First the store takes a write and does not answer within the collector's 2 s timeout (the
    # proxy holds its answer): the collector spools the batch not knowing the store has it. Then
    # the store goes down for 6 s. Everything drains once it is back, each point written once.
    rig = Rig(tmp_path, mosquitto.port, vm_no_dedup, counting=True)
    sink = rig.sink
    assert sink is not None
    try:
        col = rig.start_collector()
        rig.start_agent("t1")
        time.sleep(2)
        sink.hold("t1")
        assert sink.held.wait(20), col.tail()
        time.sleep(3)  # past the collector's timeout
        vm_no_dedup.stop()
        sink.release()
        time.sleep(6)
        # acknowledged to the broker all the same: the samples wait in the collector's spool
        assert col.get("/api/stats")["store_spool_samples_influxdb"] > 0
        vm_no_dedup.start()
        time.sleep(3)
        rig.stop_agents_drained()
        counts = _verify(rig, ["t1"])
        deadline = time.monotonic() + 20
        while (st := col.get("/api/stats"))["store_spool_samples_influxdb"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert st["store_spool_samples_influxdb"] == 0 and st["store_spool_drained_influxdb"] > 0
        points = rig.assert_written_once("t1", rig.expected("t1"))
        assert sink.checks >= 1 and sink.held_points
        print(
            f"store down: {counts['t1']} samples, {points} points, {sink.writes} writes, "
            f"{len(sink.held_points)} points held past the timeout, {sink.checks} checks"
        )
    finally:
        rig.close()


def test_agent_sigkilled_repeatedly_while_publishing(tmp_path: Path, mosquitto: Any, vm_no_dedup: Any) -> None:
    rig = Rig(tmp_path, mosquitto.port, vm_no_dedup)
    rnd = random.Random(7)
    try:
        rig.start_collector()
        for _ in range(5):
            p = rig.start_agent("t1")
            time.sleep(rnd.uniform(0.8, 2.5))
            p.kill()
        rig.start_agent("t1")
        time.sleep(3)
        rig.stop_agents_drained()
        _verify(rig, ["t1"])
    finally:
        rig.close()


def test_spool_cap_drops_oldest_first_and_counts_exactly(tmp_path: Path, mosquitto: Any) -> None:
    rig = Rig(tmp_path, mosquitto.port, None)
    try:
        rig.start_collector()
        mosquitto.stop()
        rig.start_agent("t1", spool_max="6KiB")
        time.sleep(10)
        mosquitto.start()
        time.sleep(4)
        rig.stop_agents_drained()
        st = read_stats(tmp_path / "t1-spool.db")
        expected = rig.expected("t1")
        assert st.dropped_samples > 0 and st.dropped_batches > 0
        stored_n = len(expected) - st.dropped_samples
        rig.wait_stored("t1", stored_n)
        reader = SqliteSink.open_readonly(tmp_path / "collector" / "metrics.db")
        try:
            stored = {
                _key(s.to_dict())
                for m in {x["measurement"] for x in expected}
                for s in reader.query(m, tags={"agent": "t1"})
            }
        finally:
            reader.close()
        spooled = {_key(s) for s in expected}
        assert stored <= spooled
        missing = spooled - stored
        assert len(missing) == st.dropped_samples  # the agent's count is exactly what is missing
        assert max(k[-1] for k in missing) < min(k[-1] for k in stored)  # oldest went first
        row = {a["id"]: a for a in rig.col.get("/api/agents")}["t1"]  # type: ignore[union-attr]
        assert row["batches"] == st.last_seq - st.dropped_batches
    finally:
        rig.close()


def test_link_flapping_for_a_minute(tmp_path: Path, mosquitto: Any, vm_no_dedup: Any) -> None:
    proxy = LinkProxy(mosquitto.port)
    rig = Rig(tmp_path, mosquitto.port, vm_no_dedup)
    try:
        rig.start_collector()
        rig.start_agent("t1", port=proxy.port)
        end = time.monotonic() + 60
        cuts = 0
        while time.monotonic() < end:
            time.sleep(3)
            proxy.cut()
            cuts += 1
            time.sleep(2)
            proxy.restore()
        time.sleep(5)
        rig.stop_agents_drained()
        counts = _verify(rig, ["t1"])
        assert cuts >= 10 and counts["t1"] > 300
    finally:
        proxy.close()
        rig.close()


# -- the agent's defaults: 5 s batches, the backlog drained at 32 KiB/s -------------------------
#: a drill's agents with the shipped publish settings. The backlog must take the default drain
#: rate well over one batch interval (5 s, when the first live batch comes) to watch live data
#: during the drain: 16-20 probes every 200 ms (80-100 samples/s, ~37 bytes each compressed) over
#: 90-120 s make 270-450 KB, 8-14 s at 32 KiB/s. More would load the 2-core test machine for the
#: tests running alongside.
DEFAULTS: dict[str, Any] = {"drain_rate": None, "batch_interval": None}
DEFAULT_DRAIN_RATE = 32 * 1024
#: newest stored sample at most this old while a backlog drains: one batch interval (5 s), the
#: collector's write, and room for a loaded test machine
LIVE_LAG_BOUND_S = 15.0


def _newest_stored_ns(rig: Rig, aid: str) -> int:
    reader = SqliteSink.open_readonly(rig.tmp / "collector" / "metrics.db")
    try:
        got = reader.query("tcp", tags={"agent": aid}, limit=1, newest_first=True)
    finally:
        reader.close()
    return got[0].time_ns if got else 0


def _watch_drain(rig: Rig, aids: list[str], restored_ns: int, timeout_s: float = 120) -> dict[str, dict[str, Any]]:
    """From the end of an outage until no agent has a backlog left (more than the two batches a
    live agent can have unacknowledged): per agent, when live data (measured after the outage)
    was first stored, how long the backlog took, and the age of the newest stored sample at each
    look while the backlog was still draining after that."""
    t0 = time.monotonic()
    out: dict[str, dict[str, Any]] = {a: {"live_s": None, "drained_s": None, "lags": []} for a in aids}
    while True:
        now = time.monotonic()
        for aid in aids:
            o = out[aid]
            if o["drained_s"] is not None:
                continue
            depth = read_stats(rig.tmp / f"{aid}-spool.db").depth
            newest = _newest_stored_ns(rig, aid)
            if depth <= 2:
                o["drained_s"] = now - t0
                continue
            if o["live_s"] is None and newest > restored_ns:
                o["live_s"] = now - t0
            if o["live_s"] is not None:
                o["lags"].append((time.time_ns() - newest) / 1e9)
        if all(o["drained_s"] is not None for o in out.values()):
            return out
        assert time.monotonic() - t0 < timeout_s, f"backlog not drained in {timeout_s} s: {out}"
        time.sleep(0.25)


def _assert_drain(watch: dict[str, Any], backlog_bytes: int, aid: str) -> None:
    # The default drain rate was in force: the backlog took about bytes / 32 KiB/s. The floor
    # allows for the token bucket's first second and the last two batches (the watch stops at
    # two unacknowledged); without a limit the same backlog goes in well under a second.
    floor = 0.6 * backlog_bytes / DEFAULT_DRAIN_RATE
    assert floor > 3, f"{aid}: backlog of {backlog_bytes} bytes too small to watch a drain"
    assert watch["drained_s"] >= floor, (aid, watch["drained_s"], floor)
    # Live data came through before the backlog was done, and stayed current while it drained.
    assert watch["live_s"] is not None, f"{aid}: no live data stored while the backlog drained"
    lags = watch["lags"]
    assert len(lags) >= 5 and max(lags) <= LIVE_LAG_BOUND_S, (aid, lags)


def test_link_down_two_minutes_default_drain(tmp_path: Path, mosquitto: Any, vm_no_dedup: Any) -> None:
    """A township's link is cut for two minutes; the agent runs with the shipped publish settings."""
    proxy = LinkProxy(mosquitto.port)
    rig = Rig(tmp_path, mosquitto.port, vm_no_dedup, counting=True)
    try:
        rig.start_collector()
        rig.start_agent("t1", port=proxy.port, probes=20, **DEFAULTS)
        time.sleep(8)
        proxy.cut()
        time.sleep(120)
        backlog = read_stats(tmp_path / "t1-spool.db")
        restored_ns = time.time_ns()
        proxy.restore()
        watch = _watch_drain(rig, ["t1"], restored_ns)
        rig.stop_agents_drained()
        counts = _verify(rig, ["t1"])
        points = rig.assert_written_once("t1", rig.expected("t1"))
        w = watch["t1"]
        print(
            f"link down 120 s: backlog {backlog.depth} batches, {backlog.bytes} bytes; live stored "
            f"{w['live_s']:.1f} s after restore, backlog drained after {w['drained_s']:.1f} s; "
            f"newest stored sample during the drain {min(w['lags'], default=-1):.1f}-{max(w['lags'], default=-1):.1f} s old "
            f"({len(w['lags'])} looks); stored {counts}, VictoriaMetrics points {points}"
        )
        _assert_drain(w, backlog.bytes, "t1")
    finally:
        proxy.close()
        rig.close()


def test_broker_down_ninety_seconds_default_drain(tmp_path: Path, mosquitto: Any, vm_no_dedup: Any) -> None:
    """The broker is down for 90 s; two agents with the shipped publish settings drain at once."""
    rig = Rig(tmp_path, mosquitto.port, vm_no_dedup, counting=True)
    try:
        rig.start_collector()
        for aid in ("t1", "t2"):
            rig.start_agent(aid, probes=16, **DEFAULTS)
        time.sleep(8)
        mosquitto.stop()
        time.sleep(90)
        backlog = {aid: read_stats(tmp_path / f"{aid}-spool.db").bytes for aid in ("t1", "t2")}
        restored_ns = time.time_ns()
        mosquitto.start()
        watch = _watch_drain(rig, ["t1", "t2"], restored_ns)
        rig.stop_agents_drained()
        counts = _verify(rig, ["t1", "t2"])
        points = {aid: rig.assert_written_once(aid, rig.expected(aid)) for aid in ("t1", "t2")}
        for aid, w in watch.items():
            print(
                f"broker down 90 s, {aid}: backlog {backlog[aid]} bytes; live stored {w['live_s']:.1f} s "
                f"after restore, drained after {w['drained_s']:.1f} s; newest stored sample during the "
                f"drain {min(w['lags'], default=-1):.1f}-{max(w['lags'], default=-1):.1f} s old ({len(w['lags'])} looks)"
            )
        print(f"stored {counts}, VictoriaMetrics points {points}")
        for aid, w in watch.items():
            _assert_drain(w, backlog[aid], aid)
    finally:
        rig.close()
