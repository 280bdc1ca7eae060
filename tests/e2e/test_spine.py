"""The spine end to end, as processes: two agents -> Mosquitto -> collector -> SQLite and
VictoriaMetrics. What the agents say they published is exactly what is stored, in both."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from e2e.procs import CollectorProc, agent_proc, read_tee
from e2e.rig import assert_sqlite_exact, assert_vm_exact
from paho.mqtt.enums import CallbackAPIVersion
from services import free_port

from agent.spool import read_stats
from collector.storage.sqlite import SqliteSink
from probes.model import Sample
from protocol import envelope as wire

pytestmark = pytest.mark.e2e


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<h1>county portal</h1>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def targets() -> Any:
    """A web page and a listening TCP port on loopback for the agents to probe."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    lsock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = lsock.accept()
                c.close()
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    yield {"http": f"http://127.0.0.1:{httpd.server_address[1]}/", "tcp_port": lsock.getsockname()[1]}
    stop.set()
    httpd.shutdown()
    httpd.server_close()
    lsock.close()


def collector_config(tmp: Path, mqtt_port: int, api_port: int, vm_url: str | None) -> Path:
    text = (
        f"""
collector: {{id: test-centre, data_dir: {tmp / "collector"}}}
mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
storage:
  sqlite: {{retention: 30d}}
"""
        + (f"  influxdb: {{url: '{vm_url}', bucket: netwatch, drop_string_fields: true}}\n" if vm_url else "")
        + f"""
api: {{host: 127.0.0.1, port: {api_port}}}
"""
    )
    p = tmp / "collector.yaml"
    p.write_text(text)
    return p


def agent_config(tmp: Path, agent_id: str, site: str, mqtt_port: int, targets: dict[str, Any]) -> Path:
    p = tmp / f"{agent_id}.yaml"
    p.write_text(f"""
agent: {{id: {agent_id}, site: {site}, tags: {{county: county-east}}}}
mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}
spool: {{path: {tmp / (agent_id + "-spool.db")}}}
publish: {{batch_interval: 500ms}}
probes:
  - {{type: tcp, name: portal-port, host: 127.0.0.1, port: {targets["tcp_port"]}, interval: 1s, jitter: 0s}}
  - {{type: http, name: portal, url: '{targets["http"]}', interval: 1s, jitter: 0s}}
  - {{type: icmp, name: uplink, host: 127.0.0.1, count: 2, packet_interval: 100ms, packet_timeout: 1s, interval: 1s}}
  - {{type: host, interval: 2s}}
""")
    return p


def _key(measurement: str, tags: dict[str, str], time_ns: int) -> tuple[Any, ...]:
    return (measurement, tuple(sorted((k, v) for k, v in tags.items() if v)), time_ns)


def test_two_agents_everything_published_is_stored_exactly(
    tmp_path: Path, mosquitto: Any, victoria_metrics: Any, targets: dict[str, Any]
) -> None:
    api_port = free_port()
    col = CollectorProc(
        collector_config(tmp_path, mosquitto.port, api_port, victoria_metrics.url), api_port, tmp_path / "collector.log"
    )
    agents = {}
    try:
        col.wait_ready()
        for aid, site in (("township-east-1", "township-east-1"), ("township-east-2", "township-east-2")):
            cfg = agent_config(tmp_path, aid, site, mosquitto.port, targets)
            agents[aid] = (agent_proc(cfg, tmp_path / f"{aid}.tee", tmp_path / f"{aid}.log"), cfg)
        time.sleep(6)
        for proc, _ in agents.values():
            assert proc.stop() == 0, proc.tail()

        published: dict[str, list[dict[str, Any]]] = {}
        for aid in agents:
            tee = read_tee(tmp_path / f"{aid}.tee")
            st = read_stats(tmp_path / f"{aid}-spool.db")
            # the agent's own account: everything it spooled was acknowledged by the broker
            assert st.depth == 0 and st.dropped_samples == 0
            assert st.acked_samples == len(tee) > 20
            published[aid] = tee
        total = sum(len(v) for v in published.values())
        stats = col.wait_stored(total)
        assert stats["stored_samples"] == total
        assert stats["rejected_total"] == 0 and stats.get("duplicates", 0) == 0

        # --- SQLite: every sample, exact tags, fields (with types) and time; VictoriaMetrics:
        # every numeric field as {measurement}_{field} at its ms timestamp, none twice
        for aid, tee in published.items():
            assert_sqlite_exact(tmp_path / "collector" / "metrics.db", aid, tee)
            assert_vm_exact(victoria_metrics, aid, tee)

        # --- inventory -----------------------------------------------------------------
        inv = {a["id"]: a for a in col.get("/api/agents")}
        for aid, tee in published.items():
            assert inv[aid]["samples"] == len(tee)
            assert inv[aid]["site"] == aid and inv[aid]["status"] == "offline"  # stopped cleanly
    finally:
        for proc, _ in agents.values():
            proc.kill()
        assert col.stop() == 0, col.tail()


def test_collector_survives_garbage_and_counts_each_reason(tmp_path: Path, mosquitto: Any) -> None:
    api_port = free_port()
    col = CollectorProc(
        collector_config(tmp_path, mosquitto.port, api_port, None), api_port, tmp_path / "collector.log"
    )
    try:
        col.wait_ready()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hostile")
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
        now = time.time_ns()
        good = wire.encode("a1", "town-1", 1, [Sample("m", {"x": "1"}, {"v": 1.5}, now)])
        garbage = {
            "bad_header": b"this is not an envelope",
            "bad_json": b"NW\x01\x00{not json",
            "bad_schema": b'NW\x01\x00{"agent": "a1", "site": "s", "seq": "one", "sent": 0, "samples": []}',
            "agent_mismatch": wire.encode("a2", "town-1", 1, [Sample("m", {}, {"v": 1}, now)]),
            "too_large": b"NW\x01\x00" + b" " * (2 * 1024 * 1024),
            "bad_compression": b"NW\x01\x01" + b"\x00\x01\x02\x03" * 10,
        }
        for payload in garbage.values():
            c.publish("netwatch/v1/agents/a1/metrics", payload, qos=1).wait_for_publish(5)
        c.publish("netwatch/v1/agents/a1/metrics", good, qos=1).wait_for_publish(5)
        c.publish("netwatch/v1/agents/a1/metrics", good, qos=1).wait_for_publish(5)  # a redelivered copy
        st = col.wait_stored(1)
        deadline = time.time() + 10
        while st["received_messages"] < len(garbage) + 2 and time.time() < deadline:
            time.sleep(0.1)
            st = col.get("/api/stats")
        c.loop_stop()
        c.disconnect()
        assert st["rejected"] == dict.fromkeys(garbage, 1)
        assert st["stored_samples"] == 1 and st["duplicates"] == 1
        assert col.alive()
        refused = Counter(
            line.split("refused a message from a1: ")[1].split(":")[0]
            for line in col.tail(400).splitlines()
            if "refused a message from a1: " in line
        )
        assert refused == dict.fromkeys(garbage, 1)  # each reason logged once, not once per message
        reader = SqliteSink.open_readonly(tmp_path / "collector" / "metrics.db")
        try:
            got = reader.query("m", tags={"agent": "a1"})
        finally:
            reader.close()
        assert [(dict(s.tags), dict(s.fields), s.time_ns) for s in got] == [
            ({"x": "1", "agent": "a1", "site": "town-1"}, {"v": 1.5}, now)
        ]
    finally:
        assert col.stop() == 0, col.tail()
