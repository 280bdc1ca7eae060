"""Trust decided at the centre, tried as an attacker would, against real processes: what a
compromised agent, a host on the LAN or a careless default could do, refused or contained,
counted, and honest agents losing nothing meanwhile."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from e2e.procs import CollectorProc, Proc, agent_proc, read_tee
from e2e.rig import assert_sqlite_exact
from paho.mqtt.enums import CallbackAPIVersion
from services import Mosquitto, free_port

from probes.model import Sample
from protocol import envelope as wire

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """What a careless service manager hands a process: group and others may read new files."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_databases_spools_and_folders_are_private(tmp_path: Path, mosquitto: Mosquitto, loose_umask: None) -> None:
    """Finding 9: metrics.db, state.db, alerts.db and the agent spool were 0644 in 0755 folders.
    Every file the collector and the agent create is now 0600, in folders they create 0700 —
    whatever umask they were started with."""
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {name: hot, measurement: tcp, field: connect_ms, when: '> 100000', summary: {en: x, zh: x}}\n"
    )
    api = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{data_dir: {tmp_path / 'centre' / 'data'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        f"api: {{port: {api}}}\n"
        "storage:\n  sqlite: {}\n"
        f"  influxdb: {{url: 'http://127.0.0.1:{free_port()}', org: o, bucket: b, token: t, timeout: 1s}}\n"
        "alerting: {rules: rules.yaml}\n"
    )
    col = CollectorProc(cfg, api, tmp_path / "collector.log")
    agent: Proc | None = None
    try:
        col.wait_ready()
        acfg = tmp_path / "agent.yaml"
        acfg.write_text(
            "agent: {id: town-1, site: town-1}\n"
            f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
            f"spool: {{path: {tmp_path / 'node' / 'lib' / 'spool.db'}}}\n"
            "publish: {batch_interval: 200ms}\n"
            f"probes:\n  - {{type: tcp, name: api, host: 127.0.0.1, port: {api}, interval: 300ms}}\n"
        )
        agent = agent_proc(acfg, tmp_path / "node" / "tee.jsonl", tmp_path / "agent.log")
        col.wait_stored(4)
    finally:
        if agent is not None:
            agent.stop()
        assert col.stop() == 0, col.tail()
    made = [p for top in (tmp_path / "centre", tmp_path / "node") for p in [top, *top.rglob("*")]]
    files = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in made if p.is_file()}
    dirs = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in made if p.is_dir()}
    for name in ("metrics.db", "state.db", "alerts.db", "spool-influxdb.db"):
        assert f"centre/data/{name}" in files
    assert "node/lib/spool.db" in files and "node/tee.jsonl" in files
    assert {k: v for k, v in files.items() if v != 0o600} == {}
    assert {k: v for k, v in dirs.items() if v != 0o700} == {}


def _client(broker: Mosquitto, tmp: Path, user: str, client_id: str, *, clean: bool = True) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.username_pw_set(user, (tmp / f"{user}.pass").read_text().strip())
    c.tls_set(ca_certs=str(broker.ca_path), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    assert connected.wait(10), f"{user} could not connect"
    return c


def _publish(c: mqtt.Client, agent: str, seq: int, samples: list[Sample], kind: str = "metrics") -> None:
    c.publish(
        f"netwatch/v1/agents/{agent}/{kind}", wire.encode(agent, "whatever", seq, samples), qos=1
    ).wait_for_publish(10)


def _collector_cfg(tmp: Path, broker: Mosquitto, api: int, extra: str = "") -> Path:
    cfg = tmp / "collector.yaml"
    cfg.write_text(
        f"collector: {{data_dir: {tmp / 'centre'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: collector, password_file: collector.pass,"
        f" tls: {{ca_file: {broker.ca_path}}}, keepalive: 2s}}\n"
        f"api: {{port: {api}}}\n" + extra
    )
    return cfg


def _agent_cfg(tmp: Path, broker: Mosquitto, agent: str, probe: str, site: str | None = None) -> Path:
    cfg = tmp / f"{agent}.yaml"
    cfg.write_text(
        f"agent: {{id: {agent}, site: {site or agent}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, username: {agent}, password_file: {agent}.pass,"
        f" tls: {{ca_file: {broker.ca_path}}}, keepalive: 2s}}\n"
        f"spool: {{path: {tmp / (agent + '-spool.db')}}}\n"
        "publish: {batch_interval: 300ms}\n"
        f"probes:\n  - {probe}\n"
    )
    return cfg


def _wait(what: str, cond: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _agents(col: CollectorProc) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in col.get("/api/agents")}


def test_client_id_takeover_and_a_lost_session(tmp_path: Path, shipped_broker: Mosquitto) -> None:
    """Finding 1. With the shipped broker config, an agent that connects with the collector's
    client id and a clean session no longer discards the collector's queued messages, and one
    that borrows another agent's id no longer kicks it off (no Last Will, no 'offline'). A session
    the broker did lose is noticed: counted, and the collector_session_lost rule fires."""
    b = shipped_broker
    (tmp_path / "rules.yaml").write_text((ROOT / "configs/rules/default.yaml").read_text())
    api = free_port()
    cfg = _collector_cfg(tmp_path, b, api, "alerting: {rules: rules.yaml, settle: 0s}\n")
    col = CollectorProc(cfg, api, tmp_path / "collector.log")
    col.wait_ready()
    assert col.stop() == 0
    # while the collector is away, an agent sends five batches: the broker queues them for it
    honest = _client(b, tmp_path, "agent-t1", "netwatch-agent-agent-t1")
    now = time.time_ns()
    for seq in range(1, 6):
        _publish(honest, "agent-t1", seq, [Sample("room", {"sensor": "s1"}, {"t": 20.0 + seq}, now + seq)])
    honest.disconnect()  # (the agent process below uses the same account, hence the same client id)
    honest.loop_stop()
    # a compromised township connects as the collector (its client id, a clean session)...
    thief = _client(b, tmp_path, "agent-t2", "netwatch-collector-centre", clean=True)
    thief.disconnect()
    thief.loop_stop()
    col = CollectorProc(cfg, api, tmp_path / "collector2.log")
    try:
        col.wait_ready()
        col.wait_stored(5)  # ...and the collector still gets all five
        # an agent process online; the compromised one borrows its client id
        a1 = agent_proc(
            _agent_cfg(
                tmp_path, b, "agent-t1", f"{{type: tcp, name: api, host: 127.0.0.1, port: {api}, interval: 300ms}}"
            ),
            tmp_path / "t1.tee",
            tmp_path / "t1.log",
        )
        try:
            _wait("agent-t1 online", lambda: _agents(col).get("agent-t1", {}).get("status") == "online")
            kicker = _client(b, tmp_path, "agent-t2", "netwatch-agent-agent-t1")
            time.sleep(3)  # a kicked agent's Last Will would reach the collector well within this
            kicker.disconnect()
            kicker.loop_stop()
            assert _agents(col)["agent-t1"]["status"] == "online"
            assert "lost the broker" not in (tmp_path / "t1.log").read_text()
        finally:
            a1.stop()
        assert col.get("/api/stats").get("mqtt_session_lost", 0) == 0
        # now the broker really loses everything (restarted without its persistence file)
        b.stop()
        for f in (b.workdir / "data").glob("*"):
            f.unlink()
        b.start()
        _wait("the lost session noticed", lambda: col.get("/api/stats").get("mqtt_session_lost", 0) == 1)

        def firing() -> list[str]:
            out = subprocess.run(
                [sys.executable, "-m", "collector.cli", "alerts", "--json", "--config", str(cfg)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert out.returncode in (0, 1), out.stdout + out.stderr
            return [orjson.loads(line)["rule"] for line in out.stdout.splitlines() if line.strip()]

        _wait("collector_session_lost firing", lambda: "collector_session_lost" in firing())
    finally:
        assert col.stop() == 0, col.tail()
    assert "kept no session" in (tmp_path / "collector2.log").read_text()


TOPOLOGY = """
sites:
  - id: city
    kind: city
    agents: [agent-city]
    children:
      - id: county-a
        kind: county
        agents: [agent-a]
        uplink: {rule: link_down, match: [link=county-a]}
        children:
          - {id: t1, kind: township, agents: [agent-t1]}
          - {id: t2, kind: township, agents: [agent-t2]}
"""
RULES = """
rules:
  - name: link_down
    measurement: tcp
    field: result
    where: [link=~.+]
    when: "!= 'ok'"
    clear: "== 'ok'"
    severity: critical
    summary: {en: "link to {link} down", zh: "到 {link} 的链路中断"}
  - name: service_down
    measurement: tcp
    field: result
    where: [target=svc]
    when: "!= 'ok'"
    clear: "== 'ok'"
    severity: critical
    summary: {en: "{site}: service down", zh: "{site}：服务中断"}
  - name: agent_silent
    kind: absent
    for: 3s
    by: [site, agent]
    severity: critical
    summary: {en: "{site}: agent {agent} silent", zh: "{site}：代理 {agent} 无数据"}
"""


def test_identity_is_decided_at_the_centre(tmp_path: Path, shipped_broker: Mosquitto) -> None:
    """Finding 2, as a compromised township (agent-t2) would try it, while an honest one (agent-t1)
    probes a service that is down: its batches claiming site=city are stored as t2's; its samples
    tagged link=county-a with the link 'down' do not cut County A off nor hide t1's real alert;
    300 invented site names make one series, not 300 silent-agent alerts; an unknown agent is
    refused and listed until admitted. The honest agent loses nothing."""
    b = shipped_broker
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    (tmp_path / "rules.yaml").write_text(RULES)
    api = free_port()
    cfg = _collector_cfg(
        tmp_path, b, api, "alerting: {rules: rules.yaml, topology: topology.yaml, settle: 0s, startup_grace: 0s}\n"
    )
    col = CollectorProc(cfg, api, tmp_path / "collector.log")
    honest: Proc | None = None
    try:
        col.wait_ready()
        honest = agent_proc(
            _agent_cfg(
                tmp_path,
                b,
                "agent-t1",
                f"{{type: tcp, name: svc, host: 127.0.0.1, port: {free_port()}, interval: 300ms}}",
                site="t1",
            ),
            tmp_path / "t1.tee",
            tmp_path / "t1.log",
        )
        _wait("the honest agent's service_down", lambda: "service_down" in {a["rule"] for a in _firing(cfg)})
        hostile = _client(b, tmp_path, "agent-t2", "netwatch-agent-agent-t2")
        now = time.time_ns()
        lies = [
            Sample("room", {"site": "city", "county": "county-b", "sensor": "s1"}, {"t": 99.0}, now),
            Sample("tcp", {"link": "county-a", "target": "fake"}, {"result": "timeout", "result_code": 3}, now),
            *(Sample("host_cpu", {"site": f"made-up-{i}"}, {"cpu_pct": 1.0}, now) for i in range(300)),
        ]
        _publish(hostile, "agent-t2", 1, lies)
        hostile.disconnect()
        hostile.loop_stop()
        stranger = _client(b, tmp_path, "stranger", "x")
        _publish(stranger, "stranger", 1, [Sample("room", {}, {"t": 1.0}, now)])
        _wait("the batch from agent-t2", lambda: _agents(col).get("agent-t2", {}).get("batches") == 1)
        _wait("agent-t2 silent", lambda: "agent_silent" in {a["rule"] for a in _firing(cfg)}, timeout_s=15)
        time.sleep(1.5)  # a cut-off or a wave of silent alerts would have been raised by now
        firing = _firing(cfg)
        by_rule: dict[str, list[dict[str, Any]]] = {}
        for a in firing:
            by_rule.setdefault(a["rule"], []).append(a)
        # a township cannot declare its county down: its link_down alert is no evidence; t2 itself is
        # unreachable now, but because its only agent went silent
        assert "link_down" in by_rule
        assert [(a["labels"]["site"], a["labels"]["reason"]) for a in by_rule["site_unreachable"]] == [("t2", "agents")]
        assert [a["suppressed_by"] for a in by_rule["service_down"]] == [None]
        assert by_rule["service_down"][0]["labels"]["site"] == "t1"
        assert [a["labels"]["agent"] for a in by_rule["agent_silent"]] == ["agent-t2"]
        assert [a["labels"]["site"] for a in by_rule["agent_silent"]] == ["t2"]
        # what was stored: t2's site and county, whatever the payload claimed
        from collector.storage.sqlite import SqliteSink

        reader = SqliteSink.open_readonly(tmp_path / "centre" / "metrics.db")
        try:
            room = reader.query("room", tags={"agent": "agent-t2"})
            cpu = reader.query("host_cpu", tags={"agent": "agent-t2"})
            assert [(s.tags["site"], s.tags["county"]) for s in room] == [("t2", "county-a")]
            assert {s.tags["site"] for s in cpu} == {"t2"} and len(cpu) == 1  # 300 rows, one series, one time
            assert reader.query("room", tags={"site": "city"}) == []
            assert reader.query("room", tags={"agent": "stranger"}) == []
        finally:
            reader.close()
        agents = _agents(col)
        assert agents["agent-t2"]["site"] == "t2" and agents["agent-t2"]["identity_overridden"] == 301
        stats = col.get("/api/stats")
        assert stats["rejected"].get("unknown_agent") == 1 and stats["identity_overridden"] == 301

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "collector.cli", "agents", *args, "--config", str(cfg)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        listed = cli("unknown", "--json")
        assert listed.returncode == 0 and [orjson.loads(x)["id"] for x in listed.stdout.splitlines()] == ["stranger"]
        assert "stranger" in cli().stdout  # the plain listing points at it too
        # an operator admits it: accepted from then on, at the site the centre gave it
        assert cli("admit", "stranger", "--site", "nowhere").returncode == 2  # not in the topology
        admitted = cli("admit", "stranger", "--site", "t1", "--comment", "new node at Xinzhuang")
        assert admitted.returncode == 0, admitted.stdout + admitted.stderr
        time.sleep(6)  # the collector reloads admissions every 5 s
        _publish(stranger, "stranger", 2, [Sample("room", {}, {"t": 2.0}, time.time_ns())])
        stranger.disconnect()
        stranger.loop_stop()
        _wait("the admitted agent stored", lambda: _agents(col).get("stranger", {}).get("batches") == 1)
        assert _agents(col)["stranger"]["site"] == "t1"
        # the honest agent lost nothing: every sample it spooled is stored, with the centre's identity
        honest.stop()
        honest = None
        expected = [
            {**s, "tags": {**s["tags"], "site": "t1", "county": "county-a"}} for s in read_tee(tmp_path / "t1.tee")
        ]
        _wait(
            "everything agent-t1 spooled",
            lambda: _agents(col)["agent-t1"]["samples"] == len(expected),
        )
        assert_sqlite_exact(tmp_path / "centre" / "metrics.db", "agent-t1", expected)
    finally:
        if honest is not None:
            honest.stop()
        assert col.stop() == 0, col.tail()


def _firing(cfg: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "collector.cli", "alerts", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode in (0, 1), out.stdout + out.stderr
    return [orjson.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_bounded_work_per_message(tmp_path: Path, shipped_broker: Mosquitto) -> None:
    """Findings 3 and 4, from a compromised township (agent-t2) while an honest one (agent-t1)
    runs: a 16 KiB envelope that would expand to 16 MiB is refused after 32x its size, before it is
    parsed; a 2 MiB message never gets past the broker; a flood of 200 batches in a second is cut
    to the agent's quota — refusals counted per agent and alerted — and the honest agent loses
    nothing."""
    b = shipped_broker
    (tmp_path / "topology.yaml").write_text(TOPOLOGY)
    (tmp_path / "rules.yaml").write_text((ROOT / "configs/rules/default.yaml").read_text())
    api = free_port()
    cfg = _collector_cfg(
        tmp_path,
        b,
        api,
        "limits: {agent_messages_per_s: 5, quota_burst: 2s}\n"
        "alerting: {rules: rules.yaml, topology: topology.yaml, settle: 0s}\n",
    )
    cfg.write_text(cfg.read_text().replace("collector: {", "collector: {self_metrics_interval: 1s, "))
    col = CollectorProc(cfg, api, tmp_path / "collector.log")
    honest: Proc | None = None
    try:
        col.wait_ready()
        honest = agent_proc(
            _agent_cfg(
                tmp_path,
                b,
                "agent-t1",
                f"{{type: tcp, name: api, host: 127.0.0.1, port: {api}, interval: 300ms}}",
                site="t1",
            ),
            tmp_path / "t1.tee",
            tmp_path / "t1.log",
        )
        col.wait_stored(4)
        hostile = _client(b, tmp_path, "agent-t2", "netwatch-agent-agent-t2")
        body = b'{"agent":"agent-t2","site":"t2","seq":1,"sent":1,"samples":[' + b" " * (16 * 1024 * 1024) + b"]}"
        bomb = wire.MAGIC + bytes((wire.VERSION, wire.CODEC_ZLIB)) + zlib.compress(body, 9)
        assert len(bomb) < 20_000
        hostile.publish("netwatch/v1/agents/agent-t2/metrics", bomb, qos=1).wait_for_publish(10)
        _wait("the bomb refused", lambda: col.get("/api/stats")["rejected"].get("too_large") == 1)
        # 2 MiB: the broker drops the sender (max_packet_size); nothing reaches the collector
        before = col.get("/api/stats")["received_messages"]
        gone = threading.Event()
        hostile.on_disconnect = lambda *a: gone.set()
        hostile.publish("netwatch/v1/agents/agent-t2/metrics", b"NW\x01\x00" + b"x" * (2 * 1024 * 1024), qos=1)
        assert gone.wait(10), "the broker kept a client that sent 2 MiB"
        hostile.loop_stop()
        hostile = _client(b, tmp_path, "agent-t2", "netwatch-agent-agent-t2")
        now = time.time_ns()
        infos = [
            hostile.publish(
                "netwatch/v1/agents/agent-t2/metrics",
                wire.encode("agent-t2", "t2", seq, [Sample("m", {"i": str(seq)}, {"v": seq}, now + seq)]),
                qos=1,
            )
            for seq in range(2, 202)
        ]
        for info in infos:
            info.wait_for_publish(10)
        hostile.disconnect()
        hostile.loop_stop()
        _wait("the flood processed", lambda: col.get("/api/stats")["received_messages"] >= before + 200)
        stats = col.get("/api/stats")
        t2 = _agents(col)["agent-t2"]
        over = stats["rejected"]["over_quota"]
        assert over == t2["over_quota"] and over >= 150, (over, t2)
        assert t2["batches"] + over == 200  # every batch of the flood stored or refused over quota, none lost track of
        assert stats["rejected"]["too_large"] == 1  # the bomb only: the 2 MiB message never arrived
        _wait("agent_over_quota firing", lambda: "agent_over_quota" in {a["rule"] for a in _firing(cfg)}, timeout_s=15)
        assert "refused the message" not in (tmp_path / "t1.log").read_text()
        honest.stop()
        honest = None
        expected = [
            {**s, "tags": {**s["tags"], "site": "t1", "county": "county-a"}} for s in read_tee(tmp_path / "t1.tee")
        ]
        _wait("everything agent-t1 spooled", lambda: _agents(col)["agent-t1"]["samples"] == len(expected))
        assert_sqlite_exact(tmp_path / "centre" / "metrics.db", "agent-t1", expected)
        assert _agents(col)["agent-t1"]["over_quota"] == 0
    finally:
        if honest is not None:
            honest.stop()
        assert col.stop() == 0, col.tail()
    log = (tmp_path / "collector.log").read_text()
    # stopped at 32x the compressed size, never parsed
    assert f"body expands past {(len(bomb) - wire.HEADER_LEN) * 32} bytes" in log


def test_series_cap_survives_a_collector_restart(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Finding 12: the per-agent series cap lived in memory, so a restart let an agent open another
    cap's worth. Now it is kept in state.db: after a restart the agent's old series still count."""
    api = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{data_dir: {tmp_path / 'centre'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, client_id: cap-test}}\n"
        f"api: {{port: {api}}}\nlimits: {{max_series_per_agent: 3}}\n"
    )
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cap-pub")
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()

    def send(seq: int, ids: range) -> None:
        samples = [Sample("m", {"i": str(i)}, {"v": i}, time.time_ns()) for i in ids]
        pub.publish("netwatch/v1/agents/a1/metrics", wire.encode("a1", "s", seq, samples), qos=1).wait_for_publish(10)

    try:
        col = CollectorProc(cfg, api, tmp_path / "c1.log")
        col.wait_ready()
        send(1, range(0, 2))
        col.wait_stored(2)
        assert col.stop() == 0
        col = CollectorProc(cfg, api, tmp_path / "c2.log")
        col.wait_ready()
        send(2, range(0, 5))  # 2 known + 3 new: only one new fits under the cap of 3
        _wait("the batch", lambda: _agents(col).get("a1", {}).get("batches") == 2)
        stats = col.get("/api/stats")
        assert stats["dropped_samples"] == {"series_cap": 2}
        assert col.stop() == 0
    finally:
        pub.disconnect()
        pub.loop_stop()
    from collector.storage.sqlite import SqliteSink

    reader = SqliteSink.open_readonly(tmp_path / "centre" / "metrics.db")
    try:
        assert sorted({s.tags["i"] for s in reader.query("m")}) == ["0", "1", "2"]
    finally:
        reader.close()
