"""RTU on a serial line: a pymodbus serial server on one end of a socat pty pair, several slaves
sharing the other end through the agent's real scheduler. One slave never answers; the others
must keep their interval (measured: gaps between their polls stay within interval + one
timeout), read correct values (no interleaved frames), and each wait at most one timeout."""

from __future__ import annotations

import asyncio
from typing import Any

from modbus_sims import Server, Slave
from pymodbus.framer import FramerType

from agent.config import ProbeEntry
from agent.scheduler import Scheduler
from probes.modbus import transport
from probes.modbus.config import ModbusConfig
from probes.model import PROBE_STATUS, Sample

INTERVAL_S = 0.5
REQUEST_TIMEOUT_S = 0.3
RUN_S = 3.2
# Event-loop and pty latency on a loaded 2-core machine; still below what a stall behind the dead
# unit would add (its 3 tries: 0.9 s of bus time).
TOLERANCE_S = 0.25


def entry(name: str, target: str, unit: int, interval_s: float, timeout_s: float, **kw: Any) -> ProbeEntry:
    cfg = ModbusConfig.model_validate(
        {"target": target, "unit": unit, "map": "renke_rs_ws_n01", "request_timeout": REQUEST_TIMEOUT_S, **kw}
    )
    return ProbeEntry("modbus", name, interval_s, 0.0, timeout_s, {}, cfg)


async def test_a_silent_slave_does_not_stall_the_others(serial_pair: tuple[str, str]) -> None:
    server_end, client_end = serial_pair
    slaves = [Slave(u, holding={0: 400 + u, 1: 200 + u}) for u in (1, 2, 3)]
    srv = await Server(
        slaves + [Slave(9, holding={0: 1, 1: 1})], framer=FramerType.RTU, serial=server_end, silent={9}
    ).start()
    target = f"rtu://{client_end}?baud=19200&parity=N&stop=1"
    entries = [entry(f"th-{u}", target, u, INTERVAL_S, INTERVAL_S) for u in (1, 2, 3)]
    # the dead one tries three times per poll: 0.9 s of bus time, but never more than 0.3 s at once
    entries.append(entry("th-dead", target, 9, 1.5, 1.5, retries=2))
    got: list[tuple[float, Sample]] = []
    loop = asyncio.get_running_loop()

    def sink(samples: list[Sample]) -> None:
        got.extend((loop.time(), s) for s in samples)

    sched = Scheduler(entries, sink)
    stop = asyncio.Event()
    run = asyncio.create_task(sched.run(stop))
    try:
        await asyncio.sleep(RUN_S)
    finally:
        stop.set()
        await asyncio.wait_for(run, 5)
        await srv.stop()

    statuses: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for t, s in got:
        if s.measurement == PROBE_STATUS:
            statuses.setdefault(s.tags["target"], []).append((t, dict(s.fields)))
    for u in (1, 2, 3):
        polls = statuses[f"th-{u}"]
        assert len(polls) >= int(RUN_S / INTERVAL_S) - 1
        assert all(f["status"] == "ok" for _, f in polls), polls
        # each poll waited for at most the one request of the dead slave in flight
        assert max(f["duration_ms"] for _, f in polls) < (REQUEST_TIMEOUT_S + TOLERANCE_S) * 1000
        gaps = [b - a for (a, _), (b, _) in zip(polls, polls[1:], strict=False)]
        assert max(gaps) <= INTERVAL_S + REQUEST_TIMEOUT_S + TOLERANCE_S, gaps
    # values are each slave's own: frames never interleaved on the shared line
    env = {s.tags["device"]: dict(s.fields) for _, s in got if s.measurement == "room_env"}
    assert {d: (f["humidity_pct"], f["temperature_c"]) for d, f in env.items()} == {
        "th-1": (40.1, 20.1),
        "th-2": (40.2, 20.2),
        "th-3": (40.3, 20.3),
    }
    dead = statuses["th-dead"]
    assert dead and all(f["status"] == "down" for _, f in dead)
    assert "no reply within 0.3 s after 3 tries" in dead[0][1]["error"]
    assert "(19200 8N1 here)" in dead[0][1]["error"]
    # the four entries shared one port, and it was closed when the scheduler stopped
    assert srv.count(9) >= 3 and not any(k.startswith("rtu://") for k in transport._BUSES)


async def test_serial_settings_must_agree_on_one_line(serial_pair: tuple[str, str]) -> None:
    _, client_end = serial_pair
    a = entry("a", f"rtu://{client_end}?baud=9600", 1, 1, 1)
    b = entry("b", f"rtu://{client_end}?baud=4800", 2, 1, 1)
    sched = Scheduler([a, b], lambda s: None)
    first = await sched.run_probe(0)
    second = await sched.run_probe(1)
    for p in sched.probes:
        await p.aclose()
    assert first[-1].fields["status"] == "down"  # nobody answers: no server on the line
    st = second[-1].fields
    assert st["status"] == "down"
    assert "already in use at 9600 8N1 by another entry, this one asks for 4800 8N1" in str(st["error"])
