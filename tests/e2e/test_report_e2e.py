"""The availability record from a real run: a collector (with its topology and alerting) on
Mosquitto, one agent polling one device. The agent is SIGKILLed (its Last Will says offline) and
comes back, the device stops answering, the agent is stopped cleanly, the collector restarts — and
state.db / alerts.db hold exactly the changes that happened, dated by when they happened (bounded by
the test's own clock and by the agent's own samples), none twice; the report counts them."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from e2e.procs import CollectorProc, agent_proc, read_tee
from e2e.rig import Listener
from services import free_port
from typer.testing import CliRunner

from collector.cli import app

pytestmark = pytest.mark.e2e
RULES = Path(__file__).resolve().parents[2] / "configs" / "rules" / "default.yaml"


def rows(db: Path, kind: str) -> list[tuple[str, str, int]]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return c.execute(
            "SELECT subject, state, at_ns FROM transitions WHERE kind = ? ORDER BY at_ns, id", (kind,)
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        c.close()


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = check()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_transitions_recorded_from_a_real_run(tmp_path: Path, mosquitto: Any) -> None:
    data = tmp_path / "data"
    state_db, alerts_db = data / "state.db", data / "alerts.db"
    (tmp_path / "topology.yaml").write_text(
        "sites:\n  - id: cty\n    kind: county\n    children:\n"
        "      - {id: site-e1, kind: township, agents: [e1], devices: [dev-e1]}\n"
    )
    api_port = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{id: c, data_dir: {data}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        f"api: {{port: {api_port}}}\n"
        f"alerting: {{rules: {RULES}, topology: {tmp_path / 'topology.yaml'}, settle: 0s, startup_grace: 0s}}\n"
    )
    device = Listener()
    agent_cfg = tmp_path / "e1.yaml"
    agent_cfg.write_text(
        f"agent: {{id: e1, site: site-e1}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, keepalive: 2s}}\n"
        f"spool: {{path: {tmp_path / 'e1-spool.db'}}}\n"
        "publish: {batch_interval: 200ms, drain_rate: 0, self_metrics_interval: 1s}\nprobes:\n"
        f"  - {{type: tcp, name: dev, host: 127.0.0.1, port: {device.port}, interval: 200ms, jitter: 0s,"
        " tags: {device: dev-e1}}\n"
    )
    tee = tmp_path / "e1.tee"
    col = CollectorProc(cfg, api_port, tmp_path / "collector-1.log")
    agents = []
    try:
        col.wait_ready()

        def status() -> str:
            return str(next((a["status"] for a in col.get("/api/agents") if a["id"] == "e1"), ""))

        agents.append(agent_proc(agent_cfg, tee, tmp_path / "e1-1.log"))
        wait_for("e1 online and its device up", lambda: status() == "online" and rows(state_db, "device"))
        # 1. SIGKILL: the broker sends the Last Will after 1.5 × keepalive
        t_kill = time.time_ns()
        agents[-1].kill()
        wait_for("e1 offline (Last Will)", lambda: status() == "offline")
        t_offline_seen = time.time_ns()
        wait_for("site-e1 cut off", lambda: [r for r in rows(alerts_db, "uplink") if r[1] == "down"])
        # 2. back
        t_restart = time.time_ns()
        agents.append(agent_proc(agent_cfg, tee, tmp_path / "e1-2.log"))
        wait_for("e1 online again", lambda: status() == "online")
        t_online_seen = time.time_ns()
        wait_for("site-e1 reachable", lambda: rows(alerts_db, "uplink")[-1][1] == "up")
        # 3. the device stops answering
        device.close()
        wait_for("dev-e1 down", lambda: rows(state_db, "device")[-1][1] == "down")
        # 4. a clean stop: the agent publishes offline itself, with its own time
        t_stop = time.time_ns()
        assert agents[-1].stop() == 0
        t_stopped = time.time_ns()
        wait_for("e1 offline (clean stop)", lambda: status() == "offline")
        wait_for("site-e1 cut off again", lambda: rows(alerts_db, "uplink")[-1][1] == "down")
        before_restart = {
            k: rows(db, k) for db, k in ((state_db, "agent"), (state_db, "device"), (alerts_db, "uplink"))
        }
        # 5. the collector restarts: the retained offline comes again; nothing new may be recorded
        assert col.stop() == 0
        t_col = time.time_ns()
        col = CollectorProc(cfg, api_port, tmp_path / "collector-2.log")
        col.wait_ready()
        wait_for(
            "the retained status redelivered",
            lambda: next(a for a in col.get("/api/agents") if a["id"] == "e1")["status_ns"] > t_col,
        )
        time.sleep(2.5)  # two engine ticks, in which a phantom recovery would show
    finally:
        for a in agents:
            a.kill()
        col.stop()
        device.close()

    agent = rows(state_db, "agent")
    assert [r[1] for r in agent] == ["up", "down", "up", "down"], agent
    first_up, lwt, back, clean = (r[2] for r in agent)
    # the Last Will carries the agent's start time: the change is dated when the collector got it
    assert t_kill < lwt <= t_offline_seen
    assert t_restart < back <= t_online_seen  # the online's own time
    assert t_stop <= clean <= t_stopped  # the clean stop's own time
    assert first_up < t_kill

    # the device: up from its first probe_status sample, down at the first "down" one (its own time)
    samples = [s for s in read_tee(tee) if s["measurement"] == "probe_status" and s["tags"].get("device") == "dev-e1"]
    first_down = next(s["time"] for s in samples if s["fields"]["status"] == "down")
    device_rows = rows(state_db, "device")
    assert device_rows[0] == ("dev-e1", "up", samples[0]["time"])
    assert device_rows[-1] == ("dev-e1", "down", first_down)
    # while the agent was away nothing was measured, so no change of the device in between
    assert [r[1] for r in device_rows] == ["up", "down"]

    uplink = rows(alerts_db, "uplink")
    assert [(r[0], r[1]) for r in uplink if r[0] == "site-e1"] == [
        ("site-e1", "up"),  # monitoring started
        ("site-e1", "down"),  # its only agent offline: cut off
        ("site-e1", "up"),
        ("site-e1", "down"),
    ]
    assert [r[1] for r in uplink if r[0] == "cty"] == ["up"]  # no agents of its own: never cut
    cut1, back1 = [r[2] for r in uplink if r[0] == "site-e1"][1:3]
    assert lwt <= cut1 and back <= back1
    # the collector's restart added nothing
    assert before_restart == {
        k: rows(db, k) for db, k in ((state_db, "agent"), (state_db, "device"), (alerts_db, "uplink"))
    }

    # the report counts it: two agent outages, the first recovered (MTTR = its length), one open
    month = datetime.fromtimestamp(first_up / 1e9, ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
    r = CliRunner().invoke(app, ["report", "--month", month, "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    site = next(s for s in orjson.loads(r.stdout)["sites"] if s["site"] == "site-e1")
    if datetime.fromtimestamp(clean / 1e9, ZoneInfo("Asia/Shanghai")).strftime("%Y-%m") == month:
        assert site["agents"]["outages"] == 2 and site["agents"]["open_outages"] == 1
        assert site["agents"]["mttr_s"] == (back - lwt) / 1e9
        assert site["uplink"]["outages"] == 2 and site["devices"]["open_outages"] == 1
