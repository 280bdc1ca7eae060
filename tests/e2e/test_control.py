"""Control from the centre through real processes: Mosquitto with the shipped config and ACL over
TLS (a throw-away CA), the collector, agents, snmpd — signed config pushes to a group with one
invalid config, forged and replayed configs and commands refused, a key rotation mid-fleet,
`exec` of an SNMP walk equal to the walk run on the node, and device writes refused unless the
node allows them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e.procs import CollectorProc, Proc, agent_proc
from e2e.test_trust import TOPOLOGY, _agents, _client, _wait
from services import Mosquitto, free_port
from snmp_services import Snmpd, free_udp_port

from protocol.control import ConfigPush, new_command, sign_command, sign_config
from protocol.signing import SigningKey

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
AGENTS = {"agent-a": "county-a", "agent-t1": "t1", "agent-t2": "t2"}


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    d = Snmpd(tmp_path / "snmpd", free_udp_port(), [])
    d.start(timeout_s=20)
    yield d
    d.close()


def _collector(tmp: Path, b: Mosquitto, api: int) -> Path:
    (tmp / "topology.yaml").write_text(TOPOLOGY)
    (tmp / "desired").mkdir()
    cfg = tmp / "collector.yaml"
    cfg.write_text(
        f"collector: {{data_dir: {tmp / 'centre'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {b.port}, username: collector, password_file: collector.pass,"
        f" tls: {{ca_file: {b.ca_path}}}, keepalive: 2s}}\n"
        f"api: {{port: {api}}}\nidentity: {{topology: topology.yaml}}\n"
        "control:\n  configs: desired\n"
        f"  mqtt: {{host: 127.0.0.1, port: {b.port}, username: netwatch-control, password_file: netwatch-control.pass,"
        f" tls: {{ca_file: {b.ca_path}}}}}\n"
    )
    return cfg


def _agent(tmp: Path, b: Mosquitto, agent: str, snmp_port: int, api: int) -> Path:
    (tmp / "community").write_text("public\n")
    cfg = tmp / f"{agent}.yaml"
    cfg.write_text(
        f"agent: {{id: {agent}, site: {AGENTS[agent]}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {b.port}, username: {agent}, password_file: {agent}.pass,"
        f" tls: {{ca_file: {b.ca_path}}}, keepalive: 2s}}\n"
        f"spool: {{path: {tmp / (agent + '-spool.db')}}}\n"
        "publish: {batch_interval: 300ms}\n"
        f"control:\n  centre_key_file: {tmp / 'centre' / 'keys' / 'centre.key.pub'}\n"
        "  allow_write: [{device: room1, objects: [ac_setpoint]}]\n"
        "probes:\n"
        f"  - {{type: tcp, name: local, host: 127.0.0.1, port: {api}, interval: 500ms}}\n"
        f"  - {{type: snmp, name: sw1, host: 127.0.0.1, port: {snmp_port}, version: 2c,"
        f" community_file: {tmp / 'community'}, interval: 1h}}\n"
    )
    return cfg


def _cli(cfg: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    # `exec` takes its own options before AGENT: what follows AGENT is the agent's command line
    cut = 1 if args[0] == "exec" else len(args)
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args[:cut], "--config", str(cfg), *args[cut:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def _push(cfg: Path, *args: str) -> dict[str, dict[str, Any]]:
    r = _cli(cfg, "config", "push", *args, "--json", "--timeout", "20")
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return {d["agent"]: d for d in map(orjson.loads, r.stdout.splitlines())}


def _targets(col: CollectorProc) -> set[str]:
    from collector.storage.sqlite import SqliteSink

    reader = SqliteSink.open_readonly(col.cfg_dir / "centre" / "metrics.db")  # type: ignore[attr-defined]
    try:
        return {
            f"{s.tags['agent']}:{s.tags['target']}" for s in reader.query("tcp", since_ns=time.time_ns() - 3 * 10**9)
        }
    finally:
        reader.close()


def test_config_push_commands_and_key_rotation(tmp_path: Path, shipped_broker: Mosquitto, snmpd: Snmpd) -> None:
    b, api = shipped_broker, free_port()
    cfg = _collector(tmp_path, b, api)
    key = SigningKey.load_or_create(tmp_path / "centre" / "keys" / "centre.key")  # what `keys show` prints
    col = CollectorProc(cfg, api, tmp_path / "collector.log")
    col.cfg_dir = tmp_path  # type: ignore[attr-defined]
    agents: dict[str, Proc] = {}
    try:
        col.wait_ready()
        for a in AGENTS:
            agents[a] = agent_proc(
                _agent(tmp_path, b, a, snmpd.port, api), tmp_path / f"{a}.tee", tmp_path / f"{a}.log"
            )
        _wait("three agents online", lambda: all(_agents(col).get(a, {}).get("status") == "online" for a in AGENTS))

        # -- a push to a group where one agent's new config is invalid ------------------------------
        probe = f"{{type: tcp, name: pushed, host: 127.0.0.1, port: {api}, interval: 400ms}}"
        for a in ("agent-a", "agent-t1"):
            (tmp_path / "desired" / f"{a}.yaml").write_text(f"probes:\n  - {probe}\n")
        (tmp_path / "desired" / "agent-t2.yaml").write_text(
            "probes:\n  - {type: tcp, name: broken, host: 127.0.0.1, port: 99999}\n"
        )
        diff = _cli(cfg, "config", "diff", "agent-t1")
        assert diff.returncode == 0 and "+  name: pushed" in diff.stdout, diff.stdout
        got = _push(cfg, "--site", "county-a")
        assert {a: d["state"] for a, d in got.items()} == {
            "agent-a": "applied",
            "agent-t1": "applied",
            "agent-t2": "refused",
        }
        assert "probes[0].port" in got["agent-t2"]["detail"]
        _wait("pushed probes running", lambda: {"agent-a:pushed", "agent-t1:pushed"} <= _targets(col))
        assert "agent-t2:pushed" not in _targets(col) and "agent-t2:local" in _targets(col)  # t2 keeps its config
        inv = _agents(col)
        assert inv["agent-t1"]["config_version"] == "v1" and not inv["agent-t2"]["config_version"].startswith("v")
        assert "probes[0].port" in inv["agent-t2"]["config_error"]
        assert "agent-t1:local" in _targets(col)  # the unchanged probe kept running through the change

        # -- forged, wrongly signed, replayed: refused by the agent, visible at the centre ---------
        # (the test speaks as the control account, whose client id is its name: it disconnects
        # before every CLI call, which uses the same account)
        stranger_key = SigningKey.generate()
        ctl = _client(b, tmp_path, "netwatch-control", "forger")
        ctl.publish("netwatch/v1/agents/agent-t1/config", b'{"probes": []}', qos=1, retain=True).wait_for_publish(5)
        _wait("unsigned refused", lambda: "unsigned" in _agents(col)["agent-t1"]["config_error"])
        bad = sign_config(stranger_key, ConfigPush("agent-t1", 99, {"probes": []}, "mallory", time.time_ns()))
        ctl.publish("netwatch/v1/agents/agent-t1/config", bad, qos=1, retain=True).wait_for_publish(5)
        _wait("unknown key refused", lambda: "unknown_key" in _agents(col)["agent-t1"]["config_error"])
        ctl.disconnect()
        ctl.loop_stop()
        old = sign_config(key, ConfigPush("agent-t1", 1, {"probes": []}, "replay", time.time_ns()))
        (tmp_path / "desired" / "agent-t1.yaml").write_text(
            f"probes:\n  - {probe}\n  - {{type: tcp, name: second, host: 127.0.0.1, port: {api}, interval: 1s}}\n"
        )
        assert _push(cfg, "agent-t1")["agent-t1"]["state"] == "applied"  # v2
        ctl = _client(b, tmp_path, "netwatch-control", "forger")
        ctl.publish("netwatch/v1/agents/agent-t1/config", old, qos=1, retain=True).wait_for_publish(5)
        _wait("replayed refused", lambda: "replayed" in _agents(col)["agent-t1"]["config_error"])
        assert _agents(col)["agent-t1"]["config_version"] == "v2"
        # commands: expired, fresh, the same again (replayed); and one through another agent's
        # account, which the broker's ACL drops before it reaches agent-t1 (signed right, even)
        got_results: list[dict[str, Any]] = []
        ctl.on_message = lambda c, u, m: got_results.append(orjson.loads(m.payload))
        ctl.subscribe("netwatch/v1/agents/agent-t1/cmd/result", qos=1)
        time.sleep(0.5)
        via_other = new_command("agent-t1", "run", {"argv": ["status"]}, issuer="t2")
        other = _client(b, tmp_path, "stranger", "x")
        other.publish("netwatch/v1/agents/agent-t1/cmd", sign_command(key, via_other), qos=1).wait_for_publish(5)
        other.disconnect()
        other.loop_stop()
        expired = new_command("agent-t1", "run", {"argv": ["status"]}, issuer="x", ttl_s=-1)
        fresh = new_command("agent-t1", "run", {"argv": ["ping", "127.0.0.1", "--count", "1"]}, issuer="x")
        for payload in (sign_command(key, expired), sign_command(key, fresh), sign_command(key, fresh)):
            ctl.publish("netwatch/v1/agents/agent-t1/cmd", payload, qos=1).wait_for_publish(5)
        _wait("three results", lambda: len(got_results) >= 3, timeout_s=30)
        time.sleep(1)
        ctl.disconnect()
        ctl.loop_stop()
        by_id: dict[str, list[str]] = {}
        for r in got_results:
            by_id.setdefault(r["id"], []).append(r["status"] + ":" + r["reason"][:60])
        assert set(by_id) == {expired.id, fresh.id}  # nothing from the command sent through another account
        assert [x.split(":")[0] for x in by_id[expired.id]] == ["refused"] and "expired" in by_id[expired.id][0]
        assert sorted(x.split(":")[0] for x in by_id[fresh.id]) == ["ok", "refused"]
        assert any("replayed" in x for x in by_id[fresh.id])

        # -- exec: the same rows as the walk run on the node ---------------------------------------
        local = subprocess.run(
            [sys.executable, "-m", "agent.cli", "snmp", "walk", "--device", "sw1", "1.3.6.1.2.1.1", "--config", str(tmp_path / "agent-t1.yaml")],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
        )  # fmt: skip
        remote = _cli(cfg, "exec", "agent-t1", "--", "snmp", "walk", "--device", "sw1", "1.3.6.1.2.1.1")
        assert local.returncode == 0 and remote.returncode == 0, remote.stdout + remote.stderr

        # the same table, row for row — but for sysUpTime, which moved on between the two walks
        def rows(text: str) -> list[str]:
            return [line for line in text.splitlines() if "1.3.6.1.2.1.1.3.0" not in line]

        assert "netwatch-snmpd" in local.stdout and rows(remote.stdout) == rows(local.stdout)
        assert len(rows(local.stdout)) == len(local.stdout.splitlines()) - 1
        # device writes: refused unless this node allows that device and object
        w1 = _cli(cfg, "exec", "agent-t1", "--", "modbus", "write", "--device", "room2", "--point", "ac_setpoint", "22")
        w2 = _cli(cfg, "exec", "agent-t1", "--", "modbus", "write", "--device", "room1", "--point", "fan_speed", "3")
        assert w1.returncode == 2 and "not enabled on this node" in w1.stdout, w1.stdout
        assert w2.returncode == 2 and "allowed: ac_setpoint" in w2.stdout, w2.stdout
        forbidden = _cli(
            cfg, "exec", "agent-t1", "--", "snmp", "walk", "--community-file", "/etc/shadow", "127.0.0.1", "1.3"
        )
        assert forbidden.returncode == 2 and "forbidden_option" in forbidden.stdout

        # -- key rotation mid-fleet -----------------------------------------------------------------
        assert _cli(cfg, "keys", "rotate").returncode == 0
        new_id = SigningKey.load(tmp_path / "centre" / "keys" / "centre.next.key").id
        for a in ("agent-a", "agent-t1"):
            (tmp_path / "desired" / f"{a}.yaml").write_text(f"probes:\n  - {probe}\n")
        assert {
            d["state"]
            for d in _push(
                cfg,
                "agent-a",
            ).values()
        } == {"applied"}  # announces the next key
        assert _push(cfg, "agent-t1")["agent-t1"]["state"] == "applied"
        assert _cli(cfg, "keys", "rotate", "--finish").returncode == 0
        (tmp_path / "desired" / "agent-a.yaml").write_text(
            f"probes:\n  - {probe}\n  - {{type: tcp, name: after, host: 127.0.0.1, port: {api}, interval: 1s}}\n"
        )
        assert _push(cfg, "agent-a")["agent-a"]["state"] == "applied"  # signed by the new key, accepted
        _wait("agent-a on the new key", lambda: _agents(col)["agent-a"]["control_key"] == new_id)
    finally:
        for p in agents.values():
            p.stop()
        assert col.stop() == 0, col.tail()
    # every action and every agent's answer is in the audit log, and the chain holds
    verify = _cli(cfg, "audit", "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    log = _cli(cfg, "audit", "--json")
    actions = [(r["action"], r["target"], r["result"]) for r in map(orjson.loads, log.stdout.splitlines())]
    assert ("config_push", "agent-t2", "refused") in actions and ("config_push", "agent-t1", "applied") in actions
    assert ("config_refused", "", "refused") in [(a, "", r) for a, _, r in actions if a == "config_refused"]
    assert ("command", "agent-t1", "refused") in actions and ("command", "agent-t1", "ok") in actions
    assert {"key_rotation_started", "key_rotated", "command_result"} <= {a for a, _, _ in actions}
