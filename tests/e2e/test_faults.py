"""Nothing lost: every sample an agent spooled is stored exactly once, at its own timestamp, or
its loss is counted — through broker, collector, store and agent failures and a flapping link.
Real processes throughout: agents, Mosquitto, the collector, VictoriaMetrics."""

from __future__ import annotations

import random
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
        while read_stats(tmp_path / "t1-spool.db").depth <= 20 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert read_stats(tmp_path / "t1-spool.db").depth > 20
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


def test_collector_sigkill_mid_stream_and_restart(tmp_path: Path, mosquitto: Any, victoria_metrics: Any) -> None:
    # VictoriaMetrics runs as we recommend (-dedup.minScrapeInterval=1ms): a SIGKILL between
    # writing a batch and recording it means the batch is written again on redelivery.
    rig = Rig(tmp_path, mosquitto.port, victoria_metrics)
    try:
        col = rig.start_collector()
        rig.start_agent("t1")
        time.sleep(3)
        col.kill()
        time.sleep(4)  # the broker keeps the collector's messages meanwhile
        rig.start_collector()
        time.sleep(3)
        rig.stop_agents_drained()
        _verify(rig, ["t1"])
    finally:
        rig.close()


def test_store_down_then_back_drains_the_collector_spool(tmp_path: Path, mosquitto: Any, victoria_metrics: Any) -> None:
    rig = Rig(tmp_path, mosquitto.port, victoria_metrics)
    try:
        col = rig.start_collector()
        rig.start_agent("t1")
        time.sleep(2)
        victoria_metrics.stop()
        time.sleep(6)
        # acknowledged to the broker all the same: the samples wait in the collector's spool
        assert col.get("/api/stats")["store_spool_samples_influxdb"] > 0
        victoria_metrics.start()
        time.sleep(3)
        rig.stop_agents_drained()
        _verify(rig, ["t1"])
        deadline = time.monotonic() + 20
        while (st := col.get("/api/stats"))["store_spool_samples_influxdb"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert st["store_spool_samples_influxdb"] == 0 and st["store_spool_drained_influxdb"] > 0
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
