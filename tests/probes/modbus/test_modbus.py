"""The Modbus probe against real pymodbus servers on loopback — Modbus TCP and RTU over TCP — with
every built-in map, exception replies (illegal address, busy), holes that split a request, a
silent unit, a damaged CRC, a reply cut short, a refused connection; events, catalogue, README."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import catalogue
import pytest
from modbus_sims import CutOffServer, Server, Slave, encode, registers
from pymodbus.framer import FramerType

from probes.modbus import transport
from probes.modbus.config import ModbusConfig
from probes.modbus.probe import ModbusProbe
from probes.model import EVENT, PROBE_STATUS, Sample

KIND = "modbus"

ROOM = [
    Slave(1, holding={0: 553, 1: 0xFF9B, 0x07D0: 1, 0x07D1: 2}),  # Renke: 55.3 %RH, -10.1 °C
    Slave(2, input={1: 235, 2: 481}),  # XY-MD02: 23.5 °C, 48.1 %
    Slave(3, holding=registers((2, [241, 456]), (0x21, [223, 0xFF38, 0x8000, 0x8000, 0x8000, 0x8000]))),  # Huawei
    Slave(4, input={0: 10105, 1: 623}),  # KinCony: -10.5 °C, 62.3 %
    Slave(5, input=registers((0, [0b101]), (8000, encode(12.5, "float32", "CDAB")))),  # Aqualeak
    Slave(6, input={99: 1, 100: 0, 101: 8, 129: 455}),  # Liebert iCOM: on, warning, 45.5 %
    Slave(7, discrete={0: True, 1: False, 2: True}),  # DI module
]
USER_MAP = {
    "model": "Acme meter",
    "points": [
        {"name": "energy", "table": "holding", "address": 10, "type": "uint32", "order": "CDAB", "scale": 0.1},
        {"name": "model", "table": "holding", "address": 20, "type": "string", "length": 4},
        # an alarm bit as a named state
        {
            "name": "alarm",
            "table": "holding",
            "address": 30,
            "type": "bit",
            "bit": 3,
            "enum": {0: "normal", 1: "fan_fault"},
        },
    ],
}
USER_SLAVE = Slave(
    8, holding=registers((10, encode(1234567, "uint32", "CDAB")), (20, [0x4143, 0x4D45, 0x2D31, 0]), (30, [0b1000]))
)


@pytest.fixture
async def tcp() -> AsyncIterator[Server]:
    srv = await Server([*ROOM, USER_SLAVE], silent={20}).start()
    yield srv
    await srv.stop()


@pytest.fixture
async def rtu_tcp() -> AsyncIterator[Server]:
    srv = await Server(ROOM, framer=FramerType.RTU, silent={20}, corrupt={9}).start()
    yield srv
    await srv.stop()


def probe(url: str, unit: int, map_: Any, *, name: str | None = None, timeout_s: float = 3.0, **kw: Any) -> ModbusProbe:
    cfg = ModbusConfig.model_validate({"target": url, "unit": unit, "map": map_, "request_timeout": "300ms", **kw})
    return ModbusProbe(cfg, name=name or f"unit-{unit}", timeout_s=timeout_s)


async def poll(p: ModbusProbe, times: int = 1) -> list[Sample]:
    out: list[Sample] = []
    try:
        for _ in range(times):
            out += await p.collect()
    finally:
        await p.aclose()
    return out


def by(samples: list[Sample], measurement: str, **tags: str) -> list[dict[str, Any]]:
    return [dict(s.fields) for s in samples if s.measurement == measurement and tags.items() <= s.tags.items()]


def status(samples: list[Sample]) -> dict[str, Any]:
    (st,) = [s for s in samples if s.measurement == PROBE_STATUS][-1:]
    assert st.tags["probe"] == KIND
    return dict(st.fields)


def events(samples: list[Sample]) -> list[dict[str, Any]]:
    out = []
    for s in samples:
        if s.measurement == EVENT:
            assert s.tags["type"] == "modbus_exception" and s.tags["device"]
            out.append({**s.fields, **{k: v for k, v in s.tags.items() if k in ("table", "source")}})
    return out


# --- scenarios (each returns what it emitted, for the catalogue test too) -----------------------------


async def scenario_room_sensors(srv: Server) -> list[Sample]:
    url = srv.url()
    out = await poll(
        probe(url, 1, "renke_rs_ws_n01", name="renke", points=["humidity", "temperature", "baud_rate", "slave_address"])
    )
    out += await poll(probe(url, 2, "xy_md02", name="xy", labels={"main": "rack-3"}))
    out += await poll(probe(url, 3, "huawei_02312pbl", name="huawei"))
    out += await poll(probe(url, 4, "kincony_sht30", name="kincony"))
    return out


async def scenario_leak_ac_contacts(srv: Server) -> list[Sample]:
    url = srv.url()
    out = await poll(probe(url, 5, "aqualeak_10k", name="leak-cable"))
    out += await poll(probe(url, 6, "liebert_icom", name="crac-1"))
    out += await poll(
        probe(
            url, 7, "generic_di8", name="di", points=["di1", "di2", "di3"], labels={"di1": "door-main"}, invert=["di3"]
        )
    )
    return out


async def scenario_user_map(srv: Server) -> list[Sample]:
    return await poll(probe(srv.url(), 8, USER_MAP, name="meter"))


async def scenario_faults(srv: Server) -> list[Sample]:
    return await poll(probe(srv.url(), 20, "renke_rs_ws_n01", name="mute", retries=0))


# --- Modbus TCP -----------------------------------------------------------------------------------------


async def test_room_sensors_over_modbus_tcp(tcp: Server) -> None:
    s = await scenario_room_sensors(tcp)
    assert by(s, "room_env", device="renke", sensor="main") == [
        {"humidity_pct": 55.3, "temperature_c": -10.1, "dew_point_c": -17.37}
    ]
    assert by(s, "modbus_point", device="renke", point="baud_rate") == [{"state": 2, "state_name": "9600"}]
    assert by(s, "modbus_point", device="renke", point="slave_address") == [{"value": 1.0}]
    assert by(s, "room_env", device="xy", sensor="rack-3") == [
        {"temperature_c": 23.5, "humidity_pct": 48.1, "dew_point_c": 11.88}
    ]
    assert by(s, "room_env", device="kincony") == [
        {"temperature_c": -10.5, "humidity_pct": 62.3, "dew_point_c": -16.33}
    ]
    # Huawei: the main sensor, two wired NTC probes, four unplugged ones reported, not invented
    assert by(s, "room_env", device="huawei", sensor="main")[0]["temperature_c"] == 24.1
    assert by(s, "room_env", device="huawei", sensor="ntc1") == [{"temperature_c": 22.3}]
    assert by(s, "room_env", device="huawei", sensor="ntc2") == [{"temperature_c": -20.0}]
    assert by(s, "room_env", device="huawei", sensor="ntc3") == []
    huawei = [x for x in s if x.measurement == PROBE_STATUS and x.tags["target"] == "huawei"][0].fields
    assert huawei["status"] == "degraded"
    assert "ntc3: no value — probe not connected (raw 0x8000)" in str(huawei["error"])
    assert "+1 more" in str(huawei["error"])  # ntc6: long lists are cut, not the message
    # sentinels are about the sensor, not Modbus faults: no events
    assert events(s) == []
    assert [x.fields["status"] for x in s if x.measurement == PROBE_STATUS] == ["ok", "ok", "degraded", "ok"]


async def test_leak_cable_precision_ac_and_contacts(tcp: Server) -> None:
    s = await scenario_leak_ac_contacts(tcp)
    assert by(s, "leak", device="leak-cable") == [
        {"leak": True, "cable_break": False, "contamination": True, "distance_m": 12.5}
    ]
    assert by(s, "precision_ac", device="crac-1") == [
        {
            "operating_state": 1,
            "operating_state_name": "on",
            "status": 8,
            "status_name": "warning",
            "return_humidity_pct": 45.5,
        }
    ]
    contacts = {x.tags["contact"]: x.fields["active"] for x in s if x.measurement == "contact"}
    assert contacts == {"door-main": True, "di2": False, "di3": False}  # di3 is normally closed: inverted
    assert all(x.fields["status"] == "ok" for x in s if x.measurement == PROBE_STATUS)


async def test_a_user_map_with_strings_and_words_swapped(tcp: Server) -> None:
    s = await scenario_user_map(tcp)
    assert by(s, "modbus_point", point="energy") == [{"value": 123456.7}]
    assert by(s, "modbus_point", point="model") == [{"text": "ACME-1"}]
    assert by(s, "modbus_point", point="alarm") == [{"active": True, "active_name": "fan_fault"}]
    assert status(s)["status"] == "ok"


async def test_reads_are_merged_into_few_requests(tcp: Server) -> None:
    await poll(probe(tcp.url(), 3, "huawei_02312pbl"))
    # main T/H (2-3) and NTC 1-6 (0x21-0x26): two requests, not eight
    assert [(r.address, r.count) for r in tcp.requests if r.unit == 3] == [(2, 2), (0x21, 6)]


async def test_silent_unit_is_down_within_its_timeout_and_says_what_to_check(tcp: Server) -> None:
    s = await scenario_faults(tcp)
    assert tcp.count(20) == 1  # one try (retries 0), and the rest of the poll not tried once it is down
    st = status(s)
    assert (
        st["status"] == "down"
        and "read holding 0-1 (40001; humidity, temperature): no reply within 0.3 s" in st["error"]
    )
    assert "unit id 20" in st["error"]
    (ev,) = events(s)
    assert (ev["error"], ev["code"], ev["unit"], ev["address"], ev["count"], ev["cleared"]) == (
        "timeout",
        0,
        20,
        0,
        2,
        False,
    )
    assert ev["severity"] == "warning" and ev["source"] == f"{tcp.url()} unit 20"


async def test_illegal_address_hole_splits_the_request_and_the_split_is_kept() -> None:
    hole = Slave(1, holding={a: 100 + a for a in range(10) if a != 5})
    srv = await Server([hole]).start()
    try:
        around = {
            "model": "holey",
            "points": [{"name": f"r{a}", "table": "holding", "address": a} for a in range(10) if a != 5],
        }
        p = probe(srv.url(), 1, around)
        first = await p.collect()
        second = await p.collect()
        await p.aclose()
    finally:
        await srv.stop()
    assert [(r.address, r.count) for r in srv.requests] == [(0, 10), (0, 5), (6, 4), (0, 5), (6, 4)]
    values = {x.tags["point"]: x.fields["value"] for x in first if x.measurement == "modbus_point"}
    assert values == {f"r{a}": 100.0 + a for a in range(10) if a != 5}
    assert status(first)["status"] == status(second)["status"] == "ok"


async def test_a_point_on_a_hole_is_reported_and_the_rest_still_read(caplog: pytest.LogCaptureFixture) -> None:
    hole = Slave(1, holding={a: a for a in range(10) if a != 5})
    srv = await Server([hole]).start()
    try:
        every = {"model": "holey", "points": [{"name": f"r{a}", "table": "holding", "address": a} for a in range(10)]}
        p = probe(srv.url(), 1, every)
        with caplog.at_level(logging.INFO, logger="netwatch.probes.modbus"):
            first = await p.collect()
            n = len(srv.requests)
            second = await p.collect()
        await p.aclose()
    finally:
        await srv.stop()
    got = {x.tags["point"] for x in first if x.measurement == "modbus_point"}
    assert got == {f"r{a}" for a in range(10) if a != 5}
    st = status(first)
    assert st["status"] == "degraded"
    assert (
        "read holding 5 (40006; r5): exception 2 (illegal data address) — the device has no such register"
        in st["error"]
    )
    (ev,) = events(first)
    assert (ev["error"], ev["code"], ev["address"], ev["count"], ev["table"]) == (
        "illegal_data_address",
        2,
        5,
        1,
        "holding",
    )
    # next poll: the remembered plan reads around the hole in 4 requests; no new event, one log line
    assert [(r.address, r.count) for r in srv.requests[n:]] == [(0, 5), (5, 1), (6, 1), (7, 3)]
    assert events(second) == [] and status(second)["status"] == "degraded"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "illegal data address" in warnings[0].getMessage()


async def test_device_busy_is_retried_then_reported() -> None:
    busy = Slave(1, holding={0: 1, 1: 2, 50: 7}, busy={("holding", 0)})
    srv = await Server([busy]).start()
    try:
        m = {
            "model": "busy",
            "gap_fill": 0,
            "points": [
                {"name": "a", "table": "holding", "address": 0},
                {"name": "b", "table": "holding", "address": 50},
            ],
        }
        s = await poll(probe(srv.url(), 1, m, retries=1))
    finally:
        await srv.stop()
    assert [(r.address, r.count) for r in srv.requests] == [(0, 1), (0, 1), (50, 1)]  # one retry, then go on
    assert by(s, "modbus_point", point="b") == [{"value": 7.0}]
    st = status(s)
    assert st["status"] == "degraded" and "exception 6 (server device busy)" in st["error"]
    assert [e["error"] for e in events(s)] == ["server_device_busy"]


async def test_fault_and_recovery_each_give_one_event(tcp: Server) -> None:
    p = probe(tcp.url(), 1, "renke_rs_ws_n01", retries=0)
    tcp.silent.add(1)
    down = await p.collect()
    again = await p.collect()
    tcp.silent.discard(1)
    up = await p.collect()
    await p.aclose()
    assert status(down)["status"] == "down" and status(up)["status"] == "ok"
    assert [e["cleared"] for e in events(down)] == [False]
    assert events(again) == []
    (cleared,) = events(up)
    assert cleared["cleared"] is True and cleared["severity"] == "info" and cleared["error"] == "timeout"


async def test_probes_on_one_target_share_one_bus(tcp: Server) -> None:
    a = probe(tcp.url(), 1, "renke_rs_ws_n01")
    b = probe(tcp.url(), 2, "xy_md02")
    sa, sb = await asyncio.gather(a.collect(), b.collect())
    assert a._bus is b._bus and a._bus is not None and a._bus.users == 2
    assert status(sa)["status"] == status(sb)["status"] == "ok"
    await a.aclose()
    await b.aclose()
    assert tcp.url().removeprefix("tcp://") not in str(transport._BUSES)


async def test_refused_connection_is_down_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = await poll(probe(f"tcp://127.0.0.1:{port}", 1, "renke_rs_ws_n01"))
    st = status(s)
    assert st["status"] == "down" and f"cannot connect to 127.0.0.1:{port}" in st["error"]
    assert [e["error"] for e in events(s)] == ["connect_failed"]


async def test_cut_off_reply_is_reported_as_truncated() -> None:
    srv = await CutOffServer(send=9).start()
    try:
        p = probe(f"tcp://127.0.0.1:{srv.port}", 1, "renke_rs_ws_n01", retries=1)
        s = await p.collect()
        s2 = await p.collect()
        await p.aclose()
    finally:
        await srv.stop()
    st = status(s)
    assert st["status"] == "down"
    assert "reply cut short: got 9 of 13 bytes in 0.3 s after 2 tries — the reply was cut off" in st["error"]
    assert [e["error"] for e in events(s)] == ["truncated_reply"]
    # each try starts on a fresh connection, so the stream never drifts out of step
    assert srv.requests == srv.connections == 4 and status(s2)["status"] == "down"


async def test_poll_budget_bounds_the_whole_collect(tcp: Server) -> None:
    # 3 tries x 0.3 s would be 0.9 s; the entry's timeout (0.5 s, budget 0.45 s) wins
    p = probe(tcp.url(), 20, "renke_rs_ws_n01", retries=2, timeout_s=0.5)
    s = await poll(p)
    assert tcp.count(20) == 2  # the third try would not fit the budget: never sent
    st = status(s)
    assert st["status"] == "down"
    assert "(40001; humidity, temperature): no reply within" in st["error"]
    assert "after 2 tries" in st["error"] and "poll cut short at its 0.45 s budget" in st["error"]
    assert [e["error"] for e in events(s)] == ["timeout"]


# --- RTU over TCP (serial servers) -------------------------------------------------------------------------


async def test_rtu_over_tcp_reads_the_same_devices(rtu_tcp: Server) -> None:
    s = await scenario_room_sensors(rtu_tcp)
    s += await scenario_leak_ac_contacts(rtu_tcp)
    assert by(s, "room_env", device="renke") == [{"humidity_pct": 55.3, "temperature_c": -10.1, "dew_point_c": -17.37}]
    assert by(s, "leak")[0]["distance_m"] == 12.5
    assert by(s, "precision_ac")[0]["status_name"] == "warning"


async def test_rtu_crc_error_is_named(rtu_tcp: Server) -> None:
    rtu_tcp.slaves.append(Slave(9, holding={0: 1, 1: 2}))
    await rtu_tcp.stop()
    await rtu_tcp.start()
    s = await poll(probe(rtu_tcp.url(), 9, "renke_rs_ws_n01", retries=0))
    st = status(s)
    assert st["status"] == "down" and "reply failed its CRC check (9 bytes)" in st["error"]
    assert "check termination" in st["error"]
    assert [e["error"] for e in events(s)] == ["crc_error"]


async def test_rtu_silent_unit_on_a_gateway(rtu_tcp: Server) -> None:
    s = await poll(probe(rtu_tcp.url(), 20, "renke_rs_ws_n01", retries=0))
    st = status(s)
    assert st["status"] == "down" and "no reply within 0.3 s" in st["error"]
    assert "check wiring (A/B swapped?), unit id 20" in st["error"] and "answers as unit 1 at 4800 8N1" in st["error"]


async def test_a_dead_slave_does_not_cost_its_neighbours_the_gateway_connection(rtu_tcp: Server) -> None:
    dead = probe(rtu_tcp.url(), 20, "renke_rs_ws_n01", retries=0, request_timeout="100ms")
    alive = probe(rtu_tcp.url(), 1, "renke_rs_ws_n01")
    for _ in range(5):  # more silent requests in a row than pymodbus tolerates before it hangs up
        assert status(await dead.collect())["status"] == "down"
    assert status(await alive.collect())["status"] == "ok"
    await dead.aclose()
    await alive.aclose()
    assert rtu_tcp.connections == 1


# --- catalogue and README -------------------------------------------------------------------------------------


async def test_catalogue_both_ways(tcp: Server) -> None:
    samples = await scenario_room_sensors(tcp)
    samples += await scenario_leak_ac_contacts(tcp)
    samples += await scenario_user_map(tcp)
    samples += await scenario_faults(tcp)
    catalogue.assert_both_ways(KIND, samples)


def test_readme_has_the_sections_the_sample_and_every_field() -> None:
    catalogue.assert_readme_current(KIND)
