"""On the wire: TLS with a password per agent, the shipped ACL confining each agent to its own
topics, the Last Will marking a killed agent offline, and passwords never in the logs."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from e2e.procs import CollectorProc
from paho.mqtt.enums import CallbackAPIVersion
from services import free_port, start_mosquitto

from agent.spool import read_stats
from probes.model import Sample
from protocol import envelope as wire

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

PW = {"collector": "col-Secret-7c1", "town-1": "t1-Secret-9f3", "town-2": "t2-Secret-4a8"}


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    acl = (ROOT / "configs/mosquitto/netwatch.acl").read_text()
    b = start_mosquitto(tmp_path / "broker", users=PW, tls=True, acl=acl)
    yield b
    b.close()


def _agent_cfg(tmp: Path, broker: Any, agent_id: str, target_port: int) -> Path:
    p = tmp / f"{agent_id}.yaml"
    p.write_text(f"""
agent: {{id: {agent_id}, site: {agent_id}}}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  username: {agent_id}
  password_env: NETWATCH_TEST_MQTT_PASSWORD
  keepalive: 2s
  tls: {{ca_file: {broker.ca_path}}}
spool: {{path: {tmp / (agent_id + "-spool.db")}}}
publish: {{batch_interval: 300ms}}
probes:
  - {{type: tcp, name: api, host: 127.0.0.1, port: {target_port}, interval: 500ms, jitter: 0s}}
""")
    return p


def _hostile_client(broker: Any, user: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hostile-{user}")
    c.username_pw_set(user, PW[user])
    c.tls_set(ca_certs=str(broker.ca_path), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def test_tls_passwords_acl_will_and_no_secrets_in_logs(tmp_path: Path, broker: Any) -> None:
    (tmp_path / "col.pass").write_text(PW["collector"] + "\n")
    api_port = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(f"""
collector: {{data_dir: {tmp_path / "c"}}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, username: collector, password_file: col.pass, tls: {{ca_file: {broker.ca_path}}}}}
api: {{port: {api_port}}}
""")
    col = CollectorProc(cfg, api_port, tmp_path / "collector.log")
    agent = None
    try:
        col.wait_ready()
        env = {**os.environ, "NETWATCH_TEST_MQTT_PASSWORD": PW["town-1"]}
        log = tmp_path / "town-1.log"
        with open(log, "ab") as out:
            agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "run",
                    "--config",
                    str(_agent_cfg(tmp_path, broker, "town-1", api_port)),
                    "--log-level",
                    "debug",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        col.wait_stored(4)

        # town-2 may publish under its own name but not under town-1's: the broker drops that
        before = col.get("/api/stats")["received_messages"]
        hostile = _hostile_client(broker, "town-2")
        forged = wire.encode("town-1", "town-1", 10**9, [Sample("forged", {}, {"v": 1}, time.time_ns())])
        hostile.publish("netwatch/v1/agents/town-1/metrics", forged, qos=1).wait_for_publish(5)
        own = wire.encode("town-2", "town-2", 1, [Sample("own", {}, {"v": 2}, time.time_ns())])
        hostile.publish("netwatch/v1/agents/town-2/metrics", own, qos=1).wait_for_publish(5)
        hostile.loop_stop()
        hostile.disconnect()
        deadline = time.time() + 10
        while time.time() < deadline and "town-2" not in {a["id"] for a in col.get("/api/agents")}:
            time.sleep(0.1)
        agents = {a["id"]: a for a in col.get("/api/agents")}
        assert agents["town-2"]["samples"] == 1
        from collector.storage.sqlite import SqliteSink

        reader = SqliteSink.open_readonly(tmp_path / "c" / "metrics.db")
        try:
            assert reader.query("forged") == []
            assert len(reader.query("own")) == 1
        finally:
            reader.close()
        assert col.get("/api/stats")["received_messages"] > before

        # SIGKILL: no goodbye, so the broker publishes the Last Will and the centre sees offline
        assert agents["town-1"]["status"] == "online"
        agent.kill()
        agent.wait()
        deadline = time.time() + 15
        while time.time() < deadline:
            if {a["id"]: a for a in col.get("/api/agents")}["town-1"]["status"] == "offline":
                break
            time.sleep(0.2)
        else:
            pytest.fail("Last Will never marked town-1 offline")
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        assert col.stop() == 0, col.tail()
    logs = log.read_text() + (tmp_path / "collector.log").read_text()
    assert "TLS" in logs
    for pw in PW.values():
        assert pw not in logs


def test_wrong_password_is_a_clear_error_and_data_waits_in_the_spool(tmp_path: Path, broker: Any) -> None:
    env = {**os.environ, "NETWATCH_TEST_MQTT_PASSWORD": "not-the-password"}
    cfg = _agent_cfg(tmp_path, broker, "town-1", broker.port)
    with open(tmp_path / "a.log", "ab") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        time.sleep(4)
        assert p.poll() is None  # keeps running, keeps measuring
    finally:
        p.terminate()
        p.wait(30)
    text = (tmp_path / "a.log").read_text()
    refusals = [line for line in text.splitlines() if "refused the connection" in line]
    assert len(refusals) == 1 and "Not authorized" in refusals[0], text  # said once, not every retry
    st = read_stats(tmp_path / "town-1-spool.db")
    assert st.depth > 0 and st.acked_batches == 0
