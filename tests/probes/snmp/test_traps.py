"""The SNMP trap receiver (probes/snmp/traps.py) against real senders on loopback: net-snmp's
``snmptrap``/``snmpinform`` (v1, v2c, v3 authPriv), wrong credentials, unknown sources and garbage;
then end to end as processes (agent -> Mosquitto -> collector -> SQLite) and the technician CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from probes.model import EVENT, Sample
from probes.snmp import ber
from probes.snmp.traps import STATS, TrapListener, trap_event
from probes.snmp.traps_config import TrapConfig

ENGINE_ID = "0x8000000001020304"
V3 = ["-v3", "-e", ENGINE_ID, "-u", "nwtrap", "-l", "authPriv", "-a", "SHA", "-A", "trap-auth-pass"]
V3 += ["-x", "AES", "-X", "trap-priv-pass"]
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
COLD_START = "1.3.6.1.6.3.1.1.5.1"
UPS_ON_BATTERY = "1.3.6.1.2.1.33.2.1"
# net-snmp tools load no MIB files here (numeric OIDs only), and say nothing about missing ones
NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def snmptrap(port: int, *args: str, tool: str = "snmptrap", source: str | None = None) -> None:
    """Send one notification with net-snmp; ``args`` are the version/auth options, then the PDU."""
    client = [f"--clientaddr={source}"] if source else []
    r = subprocess.run(
        [tool, *client, "-r", "0", "-t", "2", *args[:-1], f"127.0.0.1:{port}", *args[-1].split("\0")],
        env=NET_SNMP_ENV,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 0, r.stderr


def pdu(*parts: str) -> str:
    # snmptrap's positional part (uptime, trap OID, then OID/type/value triples) as one argument
    return "\0".join(parts)


def config(**over: Any) -> TrapConfig:
    raw: dict[str, Any] = {
        "port": free_udp_port(),
        "communities": ["township-traps"],
        "users": [
            {
                "user": "nwtrap",
                "auth_proto": "SHA",
                "auth_key": "trap-auth-pass",
                "priv_proto": "AES-128",
                "priv_key": "trap-priv-pass",
                "engine_ids": [ENGINE_ID],
            }
        ],
        "devices": {"127.0.0.1": "sw-county-a"},
        "stats_interval": "30s",
    }
    raw.update(over)
    return TrapConfig.model_validate(raw)


class Running:
    """A TrapListener running in the test's event loop, collecting what it emits."""

    def __init__(self, listener: TrapListener) -> None:
        self.listener = listener
        self.samples: list[Sample] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self.listener.bound is not None
        return self.listener.bound[1]

    @property
    def events(self) -> list[Sample]:
        return [s for s in self.samples if s.measurement == EVENT]

    async def send(self, *args: str, **kw: Any) -> None:
        # snmptrap blocks (and snmpinform waits for our answer): run it off the loop
        await asyncio.to_thread(snmptrap, self.port, *args, **kw)

    async def until(self, check: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; stats {self.listener.stats}, events {self.events}")
            await asyncio.sleep(0.01)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def start(cfg: TrapConfig | None = None) -> Running:
        r = Running(TrapListener(cfg or config(), name="traps"))
        r.task = asyncio.create_task(r.listener.run(r.samples.extend))
        await r.until(lambda: r.listener.bound is not None or r.task.done())
        if r.task.done():
            r.task.result()
        running.append(r)
        return r

    yield start
    for r in running:
        assert r.task is not None
        r.task.cancel()
        await asyncio.gather(r.task, return_exceptions=True)


# --- real senders -----------------------------------------------------------------------------


async def test_v2c_link_down_names_the_port_and_its_states(make: Any) -> None:
    rx = await make()
    await rx.send(
        "-v2c",
        "-c",
        "township-traps",
        pdu(
            "",
            LINK_DOWN,
            "1.3.6.1.2.1.2.2.1.1.7", "i", "7",
            "1.3.6.1.2.1.2.2.1.7.7", "i", "1",
            "1.3.6.1.2.1.2.2.1.8.7", "i", "2",
            "1.3.6.1.2.1.31.1.1.1.1.7", "s", "GE0/0/7",
        ),
    )  # fmt: skip
    await rx.until(lambda: len(rx.events) == 1)
    ev = rx.events[0]
    assert ev.tags == {
        "type": "snmp_trap",
        "source": "sw-county-a",
        "device": "sw-county-a",
        "trap": "linkDown",
        "ifname": "GE0/0/7",
    }
    f = ev.fields
    assert f["severity"] == "warning" and f["trap_oid"] == LINK_DOWN and f["trap_name"] == "linkDown"
    assert (f["if_index"], f["admin_status"], f["oper_status"]) == (7, 1, 2)
    assert f["message"] == "link down on GE0/0/7 (admin up, oper down)"
    assert f["sender_ip"] == "127.0.0.1" and f["snmp_version"] == "2c"
    assert orjson.loads(f["varbinds"]) == [
        ["1.3.6.1.2.1.2.2.1.1.7", "Integer", 7],
        ["1.3.6.1.2.1.2.2.1.7.7", "Integer", 1],
        ["1.3.6.1.2.1.2.2.1.8.7", "Integer", 2],
        ["1.3.6.1.2.1.31.1.1.1.1.7", "OctetString", "GE0/0/7"],
    ]
    assert isinstance(f["sender_uptime_s"], float)


async def test_v2c_cold_start_and_ups_on_battery(make: Any) -> None:
    rx = await make()
    await rx.send("-v2c", "-c", "township-traps", pdu("", COLD_START))
    await rx.send(
        "-v2c",
        "-c",
        "township-traps",
        pdu("", UPS_ON_BATTERY, "1.3.6.1.2.1.33.1.2.3.0", "i", "9", "1.3.6.1.2.1.33.1.2.2.0", "i", "42"),
    )
    await rx.until(lambda: len(rx.events) == 2)
    cold, ups = rx.events
    assert (cold.tags["trap"], cold.fields["severity"]) == ("coldStart", "warning")
    assert cold.fields["message"] == "cold start: the device (re)booted"
    assert (ups.tags["trap"], ups.fields["severity"]) == ("upsTrapOnBattery", "critical")
    assert (ups.fields["runtime_min"], ups.fields["on_battery_s"]) == (9, 42)
    assert ups.fields["message"] == "UPS on battery, 9 min of runtime left"


async def test_v3_auth_priv_trap_with_the_senders_engine_id(make: Any) -> None:
    rx = await make()
    await rx.send(*V3, pdu("", UPS_ON_BATTERY, "1.3.6.1.2.1.33.1.2.3.0", "i", "3"))
    await rx.until(lambda: len(rx.events) == 1)
    ev = rx.events[0]
    assert ev.tags["source"] == "sw-county-a" and ev.tags["trap"] == "upsTrapOnBattery"
    assert ev.fields["snmp_version"] == "3" and ev.fields["user"] == "nwtrap"
    assert ev.fields["severity"] == "critical" and ev.fields["runtime_min"] == 3


async def test_v2c_inform_is_acknowledged_and_becomes_an_event(make: Any) -> None:
    rx = await make()
    # snmpinform exits 0 only once the receiver has answered the inform
    await rx.send("-v2c", "-c", "township-traps", pdu("", "1.3.6.1.6.3.1.1.5.4"), tool="snmpinform")
    await rx.until(lambda: len(rx.events) == 1)
    assert rx.events[0].tags["trap"] == "linkUp" and rx.events[0].fields["severity"] == "info"


async def test_v1_enterprise_trap_is_reported_generically(make: Any) -> None:
    rx = await make()
    await rx.send(
        "-v1",
        "-c",
        "township-traps",
        pdu("1.3.6.1.4.1.2011.5.25", "127.0.0.1", "6", "17", "", "1.3.6.1.4.1.2011.5.25.1.0", "s", "fan 2 failed"),
    )
    await rx.until(lambda: len(rx.events) == 1)
    ev = rx.events[0]
    # RFC 3584: a v1 enterprise-specific trap is enterprise.0.specific in SNMPv2 form
    assert ev.fields["trap_oid"] == "1.3.6.1.4.1.2011.5.25.0.17" == ev.tags["trap"]
    assert ev.fields["severity"] == "info" and ev.fields["snmp_version"] == "1"
    assert ["1.3.6.1.4.1.2011.5.25.1.0", "OctetString", "fan 2 failed"] in orjson.loads(ev.fields["varbinds"])
    assert "township-traps" not in ev.fields["varbinds"]  # the community never leaves the receiver


async def test_ups_alarm_added_and_removed_name_the_well_known_alarm(make: Any) -> None:
    rx = await make()
    for trap in ("1.3.6.1.2.1.33.2.3", "1.3.6.1.2.1.33.2.4"):
        await rx.send(
            "-v2c",
            "-c",
            "township-traps",
            pdu(
                "",
                trap,
                "1.3.6.1.2.1.33.1.6.2.1.1.4",
                "i",
                "4",
                "1.3.6.1.2.1.33.1.6.2.1.2.4",
                "o",
                "1.3.6.1.2.1.33.1.6.3.3",
            ),
        )
    await rx.until(lambda: len(rx.events) == 2)
    added, removed = rx.events
    assert (added.fields["alarm"], added.fields["alarm_id"], added.fields["severity"]) == ("lowBattery", 4, "warning")
    assert added.fields["message"] == "UPS alarm raised: lowBattery"
    assert (removed.fields["alarm"], removed.fields["severity"]) == ("lowBattery", "info")
    assert removed.fields["message"] == "UPS alarm cleared: lowBattery"


async def test_wrong_credentials_and_unknown_sources_are_counted_not_emitted(make: Any) -> None:
    rx = await make()
    await rx.send("-v2c", "-c", "not-the-community", pdu("", COLD_START))
    bad_v3 = [x if x != "trap-auth-pass" else "wrong-auth-pass" for x in V3]
    await rx.send(*bad_v3, pdu("", COLD_START))
    await rx.send("-v2c", "-c", "township-traps", pdu("", COLD_START), source="127.0.0.2")
    await rx.until(lambda: rx.listener.stats["received"] == 3)
    await asyncio.sleep(0.1)
    st = rx.listener.stats
    assert (st["bad_community"], st["bad_auth"], st["unknown_source"]) == (1, 1, 1), st
    assert rx.events == [] and st["events"] == 0
    # a known source with the right community still gets through
    await rx.send("-v2c", "-c", "township-traps", pdu("", COLD_START))
    await rx.until(lambda: len(rx.events) == 1)


async def test_garbage_is_counted_as_malformed_and_the_receiver_keeps_going(make: Any) -> None:
    rx = await make()
    junk = [b"", b"\x00", b"\x30\x82\xff\xff", b"\x30\x03\x02\x01\x09", os.urandom(300), b"\xff" * 1400]
    # well-formed BER but not a notification anyone can read: a v2c trap whose varbind list is cut short
    trap = ber.encode_message(1, b"township-traps", ber.TRAP_V2, 5, 0, 0, [(COLD_START, "Null", None)])
    junk.append(trap[:-3])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for j in junk:
            s.sendto(j, ("127.0.0.1", rx.port))
    await rx.until(lambda: rx.listener.stats["received"] == len(junk))
    await rx.until(lambda: rx.listener.stats["malformed"] >= len(junk) - 1)  # an empty datagram may count as nothing
    assert rx.events == [] and not rx.task.done()
    await rx.send("-v2c", "-c", "township-traps", pdu("", COLD_START))
    await rx.until(lambda: len(rx.events) == 1)


async def test_any_source_is_trusted_when_no_devices_are_listed(make: Any) -> None:
    rx = await make(config(devices={}))
    await rx.send("-v2c", "-c", "township-traps", pdu("", COLD_START), source="127.0.0.2")
    await rx.until(lambda: len(rx.events) == 1)
    assert rx.events[0].tags["source"] == "127.0.0.2" == rx.events[0].fields["sender_ip"]


async def test_trap_storm_is_rate_limited_and_stats_are_emitted(make: Any) -> None:
    rx = await make(config(max_events_per_s=2, stats_interval="200ms"))
    vb = [("1.3.6.1.2.1.1.3.0", "TimeTicks", 100), ("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", LINK_DOWN)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(20):
            s.sendto(ber.encode_message(1, b"township-traps", ber.TRAP_V2, i + 1, 0, 0, vb), ("127.0.0.1", rx.port))

    def final_stats() -> list[Sample]:
        return [s for s in rx.samples if s.measurement == STATS and s.fields["events"] + s.fields["rate_limited"] == 20]

    await rx.until(lambda: bool(final_stats()), timeout_s=3)
    st = final_stats()[0]
    assert st.tags == {"listener": "traps"}
    assert st.fields["received"] == 20 and st.fields["malformed"] == 0
    assert 4 <= st.fields["events"] <= 6, st.fields  # a burst of 2 s worth, plus what refilled meanwhile
    assert len(rx.events) == st.fields["events"]


async def test_a_taken_port_fails_run_with_a_clear_error(make: Any) -> None:
    rx = await make()
    other = TrapListener(config(port=rx.port), name="second")
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{rx.port}"):
        await asyncio.wait_for(other.run(lambda s: None), 5)


# --- pure parts -------------------------------------------------------------------------------


def test_link_up_takes_the_index_from_the_status_oids_and_hex_shows_binary() -> None:
    ev = trap_event(
        [
            ("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", "1.3.6.1.6.3.1.1.5.4"),
            ("1.3.6.1.2.1.2.2.1.7.12", "Integer", 1),
            ("1.3.6.1.2.1.2.2.1.8.12", "Integer", 1),
            ("1.3.6.1.4.1.9.1", "OctetString", b"\x00\xffbin"),
            ("1.3.6.1.6.3.18.1.4.0", "OctetString", b"secret-community"),
        ],
        sender_ip="10.2.0.1",
    )
    assert ev.fields["message"] == "link up on ifIndex 12 (admin up, oper up)" and ev.fields["if_index"] == 12
    assert ev.tags["source"] == "10.2.0.1" and "ifname" not in ev.tags
    assert orjson.loads(ev.fields["varbinds"])[-1] == ["1.3.6.1.4.1.9.1", "OctetString", "0x00ff62696e"]
    assert "secret" not in ev.fields["varbinds"]


def test_ups_test_completed_with_an_error_is_a_warning() -> None:
    vbs = [
        ("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", "1.3.6.1.2.1.33.2.2"),
        ("1.3.6.1.2.1.33.1.7.3.0", "Integer", 3),
    ]
    ev = trap_event(vbs, sender_ip="10.2.0.9", device="ups-county-a")
    assert ev.fields["message"] == "UPS self-test completed: doneError" and ev.fields["severity"] == "warning"
    ok = trap_event([vbs[0], ("1.3.6.1.2.1.33.1.7.3.0", "Integer", 1)], sender_ip="10.2.0.9")
    assert ok.fields["severity"] == "info" and ok.fields["test_result"] == "donePass"


def test_config_refuses_what_would_never_work(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="no credentials"):
        TrapConfig.model_validate({"port": 1162})
    with pytest.raises(ValidationError, match="engine id"):
        config(users=[{"user": "u", "engine_ids": ["xyz"]}])
    with pytest.raises(ValidationError, match="NW_NOT_SET"):
        config(communities_env="NW_NOT_SET")
    with pytest.raises(ValidationError, match="shorter than 8"):
        config(users=[{"user": "u", "auth_proto": "SHA", "auth_key": "short"}])
    with pytest.raises(ValidationError, match="needs auth_proto"):
        config(users=[{"user": "u", "priv_proto": "AES", "priv_key": "long-enough"}])
    with pytest.raises(ValidationError, match="not an IP address"):
        config(devices={"sw-a.example": "sw-a"})
    monkeypatch.setenv("NW_COMMUNITIES", "alpha, beta")
    cfg = config(communities=["alpha"], communities_env="NW_COMMUNITIES")
    assert cfg.community_list() == ["alpha", "beta"]
    text = repr(cfg) + str(cfg) + repr(cfg.users[0])
    assert "alpha" not in text and "trap-auth-pass" not in text and "trap-priv-pass" not in text


# --- end to end: agent process -> Mosquitto -> collector process -> SQLite --------------------


@pytest.mark.e2e
def test_traps_reach_the_collector_store(tmp_path: Path, mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from e2e.procs import CollectorProc, agent_proc
    from services import free_port

    from collector.storage.sqlite import SqliteSink

    api_port, trap_port, aid = free_port(), free_udp_port(), "township-traps-1"
    (tmp_path / "collector.yaml").write_text(
        f"collector: {{id: test-centre, data_dir: {tmp_path / 'collector'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        "storage:\n  sqlite: {retention: 30d}\n"
        f"api: {{host: 127.0.0.1, port: {api_port}}}\n"
    )
    agent_cfg = tmp_path / f"{aid}.yaml"
    agent_cfg.write_text(f"""
agent: {{id: {aid}, site: {aid}}}
mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}
spool: {{path: {tmp_path / "spool.db"}}}
publish: {{batch_interval: 300ms}}
probes:
  - type: snmp_traps
    name: traps
    port: {trap_port}
    communities_env: NW_TEST_TRAP_COMMUNITIES
    users:
      - {{user: nwtrap, auth_proto: SHA, auth_key_env: NW_TEST_TRAP_AUTH, priv_proto: AES,
          priv_key_env: NW_TEST_TRAP_PRIV, engine_ids: ['{ENGINE_ID}']}}
    devices: {{127.0.0.1: ups-county-a}}
    stats_interval: 1s
""")
    monkeypatch.setenv("NW_TEST_TRAP_COMMUNITIES", "c0mmunity-e2e")
    monkeypatch.setenv("NW_TEST_TRAP_AUTH", "trap-auth-pass")
    monkeypatch.setenv("NW_TEST_TRAP_PRIV", "trap-priv-pass")
    col = CollectorProc(tmp_path / "collector.yaml", api_port, tmp_path / "collector.log")
    agent = None
    try:
        col.wait_ready()
        agent = agent_proc(agent_cfg, tmp_path / "agent.tee", tmp_path / "agent.log")
        deadline = time.monotonic() + 20
        while "listening for SNMP traps" not in agent.tail(200):
            assert agent.alive() and time.monotonic() < deadline, agent.tail()
            time.sleep(0.05)
        t0 = time.time_ns()
        snmptrap(trap_port, "-v2c", "-c", "c0mmunity-e2e", pdu("", LINK_DOWN, "1.3.6.1.2.1.2.2.1.1.3", "i", "3"))
        snmptrap(trap_port, *V3, pdu("", UPS_ON_BATTERY, "1.3.6.1.2.1.33.1.2.3.0", "i", "7"))
        snmptrap(trap_port, "-v2c", "-c", "wrong", pdu("", COLD_START))

        db = tmp_path / "collector" / "metrics.db"
        deadline = time.monotonic() + 20
        events: list[Sample] = []
        stats: list[Sample] = []
        while time.monotonic() < deadline:
            if db.exists():
                reader = SqliteSink.open_readonly(db)
                try:
                    events = reader.query("event", tags={"agent": aid, "type": "snmp_trap"})
                    stats = reader.query(STATS, tags={"agent": aid}, newest_first=True, limit=1)
                finally:
                    reader.close()
            if len(events) >= 2 and stats and stats[0].fields.get("bad_community") == 1:
                break
            time.sleep(0.2)
        assert len(events) == 2, (events, agent.tail(), col.tail())
        by_trap = {e.tags["trap"]: e for e in events}
        down, ups = by_trap["linkDown"], by_trap["upsTrapOnBattery"]
        for e in events:
            assert e.tags["site"] == aid and e.tags["source"] == "ups-county-a" and e.time_ns >= t0
        assert down.fields["if_index"] == 3 and down.fields["severity"] == "warning"
        assert down.fields["snmp_version"] == "2c"
        assert ups.fields["severity"] == "critical" and ups.fields["runtime_min"] == 7
        assert ups.fields["snmp_version"] == "3" and ups.fields["user"] == "nwtrap"
        assert stats and stats[0].fields["bad_community"] == 1 and stats[0].fields["events"] == 2
        log_text = (tmp_path / "agent.log").read_text(errors="replace")
        assert "c0mmunity-e2e" not in log_text and "trap-auth-pass" not in log_text
    finally:
        if agent is not None:
            assert agent.stop() == 0, agent.tail()
        assert col.stop() == 0, col.tail()


# --- the technician's CLI ----------------------------------------------------------------------


def test_cli_prints_one_trap_as_json_and_exits_0() -> None:
    port = free_udp_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent.cli_snmp_traps",
            "--port",
            str(port),
            "--count",
            "1",
            "--json",
            "--timeout",
            "20",
            "--community-env",
            "NW_TEST_TRAP_COMMUNITY",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NW_TEST_TRAP_COMMUNITY": "cli-traps"},
    )
    try:
        # Resend until the CLI is up (no readiness line in --json mode); --count 1 stops it at the first.
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            snmptrap(port, "-v2c", "-c", "cli-traps", pdu("", LINK_DOWN, "1.3.6.1.2.1.2.2.1.8.4", "i", "2"))
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.3)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = [orjson.loads(x) for x in out.splitlines()]
    assert len(lines) == 1
    assert lines[0]["measurement"] == "event" and lines[0]["tags"]["trap"] == "linkDown"
    assert lines[0]["fields"]["message"] == "link down on ifIndex 4 (oper down)"
    assert b"traps shown 1" in err


def test_cli_without_traps_exits_1_after_the_timeout() -> None:
    port = free_udp_port()
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli_snmp_traps", "--port", str(port), "--count", "1", "--timeout", "0.5"],
        env={**os.environ, "NETWATCH_SNMP_COMMUNITY": "cli-traps"},  # the environment fallback
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "listening on 127.0.0.1" in r.stderr and "traps shown 0" in r.stderr


# --- a hostile network: floods, unknown sources, unauthenticated v3 ------------------------------


def _v2c_trap(i: int, trap_oid: str = LINK_DOWN, community: bytes = b"township-traps") -> bytes:
    vb = [("1.3.6.1.2.1.1.3.0", "TimeTicks", 100), ("1.3.6.1.6.3.1.1.4.1.0", "ObjectIdentifier", trap_oid)]
    return ber.encode_message(1, community, ber.TRAP_V2, i + 1, 0, 0, vb)


def _flood(port: int, source: str, n: int, seconds: float) -> None:
    """``n`` linkDown traps from ``source``, paced over ``seconds`` (fast enough to be a storm,
    slow enough that the kernel's queue never overflows, so what is dropped is the receiver's doing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        chunk, start = 20, time.monotonic()
        for i in range(0, n, chunk):
            for j in range(i, min(n, i + chunk)):
                s.sendto(_v2c_trap(j), ("127.0.0.1", port))
            pause = start + seconds * (i + chunk) / n - time.monotonic()
            if pause > 0:
                time.sleep(pause)


async def test_a_flood_from_one_source_does_not_drown_a_ups_on_battery_trap(make: Any) -> None:
    devices = {"127.0.0.1": "sw-county-a", "127.0.0.2": "sw-flapping", "127.0.0.3": "ups-county-a"}
    rx = await make(config(devices=devices, max_events_per_s=20))
    flood = asyncio.create_task(asyncio.to_thread(_flood, rx.port, "127.0.0.2", 2000, 2.0))
    await asyncio.sleep(0.8)  # the flooder's bucket is empty by now; the storm goes on
    await rx.send(
        "-v2c",
        "-c",
        "township-traps",
        pdu("", UPS_ON_BATTERY, "1.3.6.1.2.1.33.1.2.3.0", "i", "11"),
        source="127.0.0.3",
    )
    await flood
    await rx.until(lambda: rx.listener.stats["received"] == 2001, timeout_s=10)
    await rx.until(lambda: any(e.tags["trap"] == "upsTrapOnBattery" for e in rx.events))
    ups = [e for e in rx.events if e.tags["trap"] == "upsTrapOnBattery"]
    assert len(ups) == 1 and ups[0].tags["source"] == "ups-county-a" and ups[0].fields["runtime_min"] == 11
    st = rx.listener.stats
    flooded = [e for e in rx.events if e.tags["source"] == "sw-flapping"]
    # a burst of 2 s worth (40) and 20/s for the ~2 s of the storm: the rest dropped undecoded
    assert 40 <= len(flooded) <= 40 + 20 * 4, len(flooded)
    assert st["rate_limited"] == 2000 - len(flooded) == rx.listener.rate_limited_by_source["127.0.0.2"]
    assert "127.0.0.3" not in rx.listener.rate_limited_by_source
    assert st["malformed"] == 0 and st["events"] == len(flooded) + 1


async def test_the_sources_with_a_bucket_of_their_own_are_bounded(make: Any) -> None:
    rx = await make(config(devices={}, max_sources=2, max_events_per_s=1))
    for last in (2, 3, 4, 5):  # four sources, two buckets: the last two share the overflow bucket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((f"127.0.0.{last}", 0))
            for i in range(3):
                s.sendto(_v2c_trap(i), ("127.0.0.1", rx.port))
    await rx.until(lambda: rx.listener.stats["received"] == 12)
    await asyncio.sleep(0.2)
    st = rx.listener.stats
    assert len(rx.listener._buckets) == 2 and st["sources_overflow"] == 6
    # 2 each (burst of 2 s at 1/s) for the two tracked sources, 2 in all for the overflow pair
    assert st["events"] == 6 and st["rate_limited"] == 6, st


async def test_an_unknown_source_is_counted_and_never_decoded(make: Any) -> None:
    rx = await make()  # devices: 127.0.0.1 only
    junk = [b"\x30\x82\xff\xff", b"\x30\x03\x02\x01\x09", b"\xff" * 1400, _v2c_trap(1)[:-3]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        for j in junk:
            s.sendto(j, ("127.0.0.1", rx.port))
    await rx.until(lambda: rx.listener.stats["unknown_source"] == len(junk))
    await asyncio.sleep(0.2)
    assert rx.listener.stats["malformed"] == 0  # pysnmp never saw them
    # the same garbage from the known source is decoded, and found malformed: the check above can see it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for j in junk:
            s.sendto(j, ("127.0.0.1", rx.port))
    await rx.until(lambda: rx.listener.stats["malformed"] == len(junk))
    assert rx.events == []


async def test_v3_no_auth_no_priv_traps_are_refused_unless_allowed(make: Any) -> None:
    noauth = ["-v3", "-e", ENGINE_ID, "-u", "nwtrap", "-l", "noAuthNoPriv"]
    rx = await make()
    await rx.send(*noauth, pdu("", UPS_ON_BATTERY, "1.3.6.1.2.1.33.1.2.3.0", "i", "5"))
    await rx.until(lambda: rx.listener.stats["noauth_refused"] == 1)
    await asyncio.sleep(0.1)
    assert rx.events == [] and rx.listener.stats["events"] == 0
    # the same user with its keys still gets through
    await rx.send(*V3, pdu("", COLD_START))
    await rx.until(lambda: len(rx.events) == 1)
    # allowed explicitly, a user without auth is accepted
    users = [{"user": "nwopen", "engine_ids": [ENGINE_ID]}]
    with pytest.raises(ValidationError, match="allow_noauth"):
        config(users=users)
    open_rx = await make(config(users=users, allow_noauth=True))
    await open_rx.send("-v3", "-e", ENGINE_ID, "-u", "nwopen", "-l", "noAuthNoPriv", pdu("", COLD_START))
    await open_rx.until(lambda: len(open_rx.events) == 1)
    assert open_rx.events[0].fields["user"] == "nwopen" and open_rx.listener.stats["noauth_refused"] == 0


async def test_no_allow_list_is_warned_about_at_start(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="netwatch.probes.snmp.traps")
    rx = await make(config(devices={}))
    assert "no devices allow-list" in caplog.text and "ANY source" in rx.listener.describe()
    caplog.clear()
    listed = await make()
    assert "allow-list" not in caplog.text and "1 known devices" in listed.listener.describe()


# --- the CLI: secrets out of the process list, no default community, device text printed literally ---

ROOT = Path(__file__).resolve().parents[3]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETWATCH_SNMP_")}
    return {**env, "COLUMNS": "400", **extra}


def _start_cli(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``netwatch-agent snmp traps`` as a process, returned once it says it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "snmp", "traps", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 20
    while b"listening on" not in seen:
        assert proc.poll() is None and time.monotonic() < deadline, seen
        seen += proc.stderr.readline()
    return proc


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def test_cli_takes_secrets_from_a_file_and_the_environment_not_the_command_line(tmp_path: Path) -> None:
    port = free_udp_port()
    cfile = tmp_path / "communities"
    cfile.write_text("# accepted here\nfile-c0mmunity\n")
    cfile.chmod(0o600)
    env = _clean_env(NW_T_AUTH="trap-auth-pass", NW_T_PRIV="trap-priv-pass")
    proc = _start_cli(
        "--port", str(port), "--count", "2", "--timeout", "30", "--community-file", str(cfile),
        "--user", "nwtrap", "--auth-proto", "SHA", "--auth-key-env", "NW_T_AUTH",
        "--priv-proto", "AES", "--priv-key-env", "NW_T_PRIV", "--engine-id", ENGINE_ID,
        env=env,
    )  # fmt: skip
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"--community-file" in cmdline and b"NW_T_AUTH" in cmdline  # we read the right process
        for secret in (b"file-c0mmunity", b"trap-auth-pass", b"trap-priv-pass"):
            assert secret not in cmdline
        snmptrap(port, "-v2c", "-c", "file-c0mmunity", pdu("", LINK_DOWN, "1.3.6.1.2.1.2.2.1.1.5", "i", "5"))
        snmptrap(port, *V3, pdu("", UPS_ON_BATTERY, "1.3.6.1.2.1.33.1.2.3.0", "i", "4"))
    finally:
        code, out, err = _finish(proc)
    assert code == 0, err
    assert "link down on ifIndex 5" in out and "UPS on battery, 4 min of runtime left" in out
    assert "traps shown 2" in err and "bad community 0" in err
    for secret in ("file-c0mmunity", "trap-auth-pass", "trap-priv-pass"):
        assert secret not in out + err


def test_cli_community_option_is_what_puts_it_in_the_process_list() -> None:
    """The control for the test above: --community VALUE is visible to every local user."""
    proc = _start_cli("--port", str(free_udp_port()), "--timeout", "1", "-c", "visible-c0mmunity", env=_clean_env())
    try:
        assert b"visible-c0mmunity" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        code, _, err = _finish(proc)
    assert code == 0, err


def test_cli_without_a_community_is_a_usage_error_saying_how_to_give_one() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "snmp", "traps", "--port", str(free_udp_port()), "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        cwd=ROOT,
    )
    assert r.returncode == 2, r.stderr
    assert "--community-file" in r.stderr and "--community-env" in r.stderr and "NETWATCH_SNMP_COMMUNITY" in r.stderr


def test_cli_prints_trap_text_literally() -> None:
    hostile = "[/x][link=https://evil.example]x[/link][bold red]"
    port = free_udp_port()
    env = _clean_env(NW_T_COMM="township-traps", FORCE_COLOR="1", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = _start_cli("--port", str(port), "--count", "1", "--timeout", "30", "--community-env", "NW_T_COMM", env=env)
    try:
        snmptrap(
            port,
            "-v2c",
            "-c",
            "township-traps",
            pdu("", LINK_DOWN, "1.3.6.1.2.1.31.1.1.1.1.3", "s", hostile, "1.3.6.1.4.1.9.9.1", "s", "\x1b]8;;x\x1b\\"),
        )
    finally:
        code, out, err = _finish(proc)
    assert code == 0, err
    assert "\x1b]8;" not in out and "\x1b]" not in out
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert f"link down on {hostile}" in text
