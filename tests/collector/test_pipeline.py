"""The collector's pipeline against a real Mosquitto: a stage that fails is counted in stats and
never stops the others; alerting runs on its own thread."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import Mosquitto

from collector import config as collector_config
from collector.service import Collector
from collector.storage.sqlite import SqliteSink
from probes.model import Sample
from protocol import envelope
from protocol.topics import Topics

pytestmark = pytest.mark.integration


class ExplodingAlerts:
    """An alert engine whose every call raises; records which thread called it."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.closed = False

    def observe(self, samples: list[Sample]) -> None:
        self.threads.add(threading.current_thread().name)
        raise RuntimeError("rule engine bug")

    def agent_status(self, agent: str, site: str, state: str) -> None:
        raise RuntimeError("rule engine bug")

    def tick(self, now_ns: int) -> None:
        raise ZeroDivisionError("tick bug")

    def stats(self) -> dict[str, int]:
        raise RuntimeError("stats bug")

    def close(self) -> None:
        self.closed = True


def _collector(tmp: Path, broker: Mosquitto, alerts: ExplodingAlerts) -> Collector:
    (tmp / "c.yaml").write_text(
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, client_id: pipe-{time.time_ns()}}}\n"
        "storage: {sqlite: {}}\napi: {enabled: false}\n"
    )
    return Collector(collector_config.load(tmp / "c.yaml"), alert_engine=alerts)


def _publish(port: int, batches: list[tuple[str, int, list[Sample]]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pipe-pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    topics = Topics()
    try:
        for agent, seq, samples in batches:
            c.publish(
                topics.agent(agent, "metrics"), envelope.encode(agent, "t1", seq, samples), qos=1
            ).wait_for_publish(5)
        status = b'{"state":"online","agent":"a1","version":"9"}'
        c.publish(topics.agent("a1", "status"), status, qos=1, retain=True).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_failing_alerting_does_not_stop_storing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    alerts = ExplodingAlerts()
    col = _collector(tmp_path, mosquitto, alerts)
    col.start()
    try:
        assert col.connected.wait(10)
        now = time.time_ns()
        batches = [
            ("a1", seq, [Sample("room", {"sensor": f"s{i}"}, {"t": float(seq * 10 + i)}, now + seq) for i in range(3)])
            for seq in range(1, 21)
        ]
        _publish(mosquitto.port, batches)
        deadline = time.monotonic() + 20
        while col.stats().get("stored_samples", 0) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        while col.stats()["stage_errors"].get("alerting", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # observe, agent_status and at least one tick
        stats = col.stats()
    finally:
        col.stop()
    assert stats["stored_samples"] == 60 and stats["stored_batches"] == 20
    assert stats["stage_errors"]["alerting"] >= 3
    assert set(stats["stage_errors"]) == {"alerting"}
    assert alerts.threads == {"collector-alerting"} and alerts.closed
    # every sample published is in the store, with its value
    reader = SqliteSink.open_readonly(col.cfg.sqlite_path)  # type: ignore[arg-type]
    got = {(s.tags["sensor"], s.time_ns, s.fields["t"]) for s in reader.query("room", since_ns=now - 1)}
    reader.close()
    assert got == {(s.tags["sensor"], s.time_ns, s.fields["t"]) for _, _, b in batches for s in b}
    # the inventory stage went on too
    agents = {a["id"]: a for a in col.agents()}
    assert agents["a1"]["batches"] == 20 and agents["a1"]["version"] == "9"
    # and `netwatch-collector stats` shows the failing stage
    r = subprocess.run(
        [sys.executable, "-m", "collector.cli", "stats", "--json", "--config", str(tmp_path / "c.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    shown = orjson.loads(r.stdout)
    assert shown["stage_errors"]["alerting"] >= 3 and shown["stored_samples"] == 60
