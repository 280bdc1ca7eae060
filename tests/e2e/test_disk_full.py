"""Full disks, on real small filesystems (a size-limited tmpfs the test mounts, filled by a file
the test controls): the agent's spool and the collector's data directory. Real processes:
agents, Mosquitto, the collector.

- Agent: it keeps probing; every sample it measured (its --tee record, kept on another disk,
  is written before the spool is tried) is stored or counted in dropped_samples — exactly.
- Collector: below collector.min_free it takes no messages (the broker keeps them), the
  collector_disk_full rule fires, it logs once; with the space back everything arrives once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e.procs import CollectorProc, agent_proc
from e2e.rig import LinkProxy, Rig, _key
from smallfs import integrity, small_fs

from agent.spool import read_stats
from collector.storage.sqlite import SqliteSink

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _wait(what: str, cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stored(db: Path, aid: str, measurements: set[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    reader = SqliteSink.open_readonly(db)
    try:
        return {_key(s.to_dict()): dict(s.fields) for m in measurements for s in reader.query(m, tags={"agent": aid})}
    finally:
        reader.close()


def _agent_config(rig: Rig, aid: str, port: int, spool: Path) -> Path:
    lines = "".join(
        f"  - {{type: tcp, name: t{i}, host: 127.0.0.1, port: {rig.target.port}, interval: 200ms, jitter: 0s}}\n"
        for i in range(3)
    )
    p = rig.tmp / f"{aid}.yaml"
    p.write_text(
        f"agent: {{id: {aid}, site: site-{aid}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {port}, keepalive: 2s}}\n"
        f"spool: {{path: {spool}, max_bytes: 256MiB}}\n"
        f"publish: {{batch_interval: 300ms, drain_rate: 0, self_metrics_interval: 1s}}\nprobes:\n{lines}"
    )
    return p


def test_agent_spool_on_a_full_disk(tmp_path: Path, mosquitto: Any) -> None:
    rig = Rig(tmp_path, mosquitto.port, None)
    proxy = LinkProxy(mosquitto.port)
    with small_fs(tmp_path / "agent-disk", "2m") as fs:
        try:
            rig.start_collector()
            spool = fs.path / "spool.db"
            cfg = _agent_config(rig, "d1", proxy.port, spool)
            rig.runs["d1"] = 1
            agent = rig.agents["d1"] = agent_proc(cfg, tmp_path / "d1.tee", tmp_path / "d1-1.log")
            rig.wait_stored("d1", 30)
            proxy.cut()  # the link down: batches stay in the spool, which needs the disk
            time.sleep(1.5)
            full_from = time.time_ns()
            fs.fill()
            time.sleep(4)  # ~13 batches measured and refused by the disk
            assert agent.alive(), agent.tail()
            st = read_stats(spool)  # nothing counted on disk yet: the disk is full
            fs.free()
            full_to = time.time_ns()
            time.sleep(1)
            proxy.restore()
            time.sleep(3)  # live again, the backlog drained
            assert agent.stop() == 0, agent.tail()
        finally:
            rig.close()
            proxy.close()
        final = read_stats(spool)
        assert integrity(spool) == "ok"
    log = (tmp_path / "d1-1.log").read_text()
    assert log.count("cannot write to the spool") == 1, log  # once, not per batch
    assert final.depth == 0
    assert final.dropped_batches > 5 and final.dropped_samples > st.dropped_samples

    # the oracle: every sample the agent measured (its tee, on another disk) ...
    measured = {_key(s): s["fields"] for s in rig.expected("d1")}
    stored = _stored(tmp_path / "collector" / "metrics.db", "d1", {k[0] for k in measured})
    # ... is stored exactly as measured, or missing and counted — nothing else
    assert stored.keys() <= measured.keys(), "stored what was never measured"
    assert all(stored[k] == measured[k] for k in stored)
    missing = measured.keys() - stored.keys()
    assert len(missing) == final.dropped_samples, (len(missing), final)
    # what is missing was measured while the disk was full (or in the batch being cut when it
    # filled: one batch_interval, 300 ms, before), and only then
    early = full_from - 1_000_000_000
    assert all(early <= k[2] <= full_to for k in missing), sorted((k[2] - full_from) / 1e9 for k in missing)[:5]
    # the agent kept probing through it (3 probes every 200 ms for 4 s: ~60 runs) and after
    assert sum(full_from <= k[2] <= full_to for k in measured if k[0] == "tcp") > 30
    assert any(k[2] > full_to for k in stored if k[0] == "tcp")
    # its own metrics told the centre: the last report carries the final count
    health = sorted((k[2], f) for k, f in stored.items() if k[0] == "netwatch_agent")
    assert health[-1][1]["dropped_samples"] == final.dropped_samples
    assert health[-1][1]["spool_write_errors"] == final.dropped_batches


@pytest.mark.parametrize("mode", ["reserve", "enospc"])
def test_collector_data_dir_on_a_full_disk(tmp_path: Path, mosquitto: Any, mode: str) -> None:
    """``reserve``: the filler leaves less than collector.min_free; ``enospc``: no reserve
    (min_free 0) and the disk filled to the last byte, so SQLite itself refuses the writes."""
    rig = Rig(tmp_path, mosquitto.port, None)
    min_free = "3MiB" if mode == "reserve" else "0"
    (tmp_path / "rules.yaml").write_text((ROOT / "configs/rules/default.yaml").read_text())
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{id: rig, data_dir: {tmp_path / 'collector'}, min_free: {min_free}, self_metrics_interval: 1s}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        "storage:\n  sqlite: {retention: 30d}\n"
        f"api: {{port: {rig.api_port}}}\n"
        "alerting: {rules: rules.yaml, settle: 0s}\n"
    )

    def firing() -> list[str]:
        out = subprocess.run(
            [sys.executable, "-m", "collector.cli", "alerts", "--json", "--config", str(cfg)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode in (0, 1), out.stdout + out.stderr
        return [orjson.loads(line)["rule"] for line in out.stdout.splitlines() if line.strip()]

    with small_fs(tmp_path / "collector", "12m") as fs:
        try:
            col = rig.col = CollectorProc(cfg, rig.api_port, tmp_path / "collector-1.log")
            col.wait_ready()
            for aid in ("f1", "f2"):
                rig.start_agent(aid)
            rig.wait_stored("f1", 30)
            if mode == "reserve":
                left = fs.fill(leave=2 * 1024 * 1024)  # below the 3 MiB reserve, room for the alert
                assert left < 3 * 1024 * 1024
            else:
                assert fs.fill() < 4096
            # (with no reserve, SQLite may go on writing into room its WAL already has for a while)
            _wait("the collector sees the full disk", lambda: col.get("/api/stats")["disk_full"] is True, 60)
            if mode == "reserve":
                _wait("collector_disk_full firing", lambda: "collector_disk_full" in firing())
            time.sleep(1)  # a group the writer had in hand when the disk filled is through by now
            before = col.get("/api/stats")["stored_batches"]
            acked = {a: read_stats(tmp_path / f"{a}-spool.db").acked_batches for a in ("f1", "f2")}
            time.sleep(3)
            # the agents go on publishing (a batch every 300 ms) and the broker acknowledges them...
            assert all(read_stats(tmp_path / f"{a}-spool.db").acked_batches > acked[a] + 3 for a in acked)
            if mode == "reserve":
                # ...but the collector stores (and so acknowledges) nothing: the broker holds them.
                # (With no reserve at all, SQLite may still fit a write into room its files have.)
                assert col.get("/api/stats")["stored_batches"] == before
            fs.free()
            if mode == "reserve":
                _wait("collector_disk_full resolved", lambda: "collector_disk_full" not in firing())
            rig.stop_agents_drained()
            for aid in ("f1", "f2"):
                expected = rig.expected(aid)
                rig.wait_stored(aid, len(expected))
                rig.assert_sqlite_exact(aid, expected)  # everything, exactly once
                rig.assert_batches_once(aid)
            assert col.get("/api/stats")["disk_full"] is False
            assert col.stop() == 0, col.tail()
        finally:
            rig.close()
        for name in ("metrics.db", "state.db", "alerts.db"):
            assert integrity(fs.path / name) == "ok", name
    log = (tmp_path / "collector-1.log").read_text()
    if mode == "reserve":
        assert log.count("below collector.min_free") == 1, log  # once, not per message
        assert "has room again" in log
    else:  # the store's refusal, logged once for the episode, and its recovery
        assert log.count("store sqlite unavailable") == 1, log
        assert "store sqlite is back" in log
    # the API answered throughout (this test read it while the disk was full), logging at most once
    assert log.count("cannot record when tokens and sessions were last used") <= 1, log
