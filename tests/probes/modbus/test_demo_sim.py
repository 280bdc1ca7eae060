"""configs/demo/sim_modbus.py, read through the probe as the demo agent will: the Renke sensor's
temperature climbs past 27 °C (GB 50174) and comes back below it, the door opens and shuts,
and ``stop()`` really stops the server."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import ModuleType

from services import free_port

from probes.modbus.config import ModbusConfig
from probes.modbus.probe import ModbusProbe

PERIOD_S = 2.0


async def test_temperature_crosses_the_room_limit_and_the_door_opens(sim_modbus: ModuleType) -> None:
    sim = sim_modbus.start(free_port(), period_s=PERIOD_S, door_every_s=0.8, door_open_s=0.3)
    th = ModbusProbe(ModbusConfig.model_validate({"target": sim.url, "unit": 1, "map": "renke_rs_ws_n01"}), name="th")
    door = ModbusProbe(
        ModbusConfig.model_validate(
            {"target": sim.url, "unit": 2, "map": "generic_di8", "points": ["di1"], "labels": {"di1": "door-main"}}
        ),
        name="di",
    )
    temps: list[float] = []
    doors: list[bool] = []
    try:
        while sim.room.elapsed() < PERIOD_S:  # one full cycle, bounded by the period
            for s in await th.collect() + await door.collect():
                if s.measurement == "room_env":
                    temps.append(float(s.fields["temperature_c"]))
                elif s.measurement == "contact":
                    assert s.tags["contact"] == "door-main"
                    doors.append(bool(s.fields["active"]))
                elif s.measurement == "probe_status":
                    assert s.fields["status"] == "ok", s.fields
            await asyncio.sleep(0.1)
    finally:
        await th.aclose()
        await door.aclose()
        sim.stop()
    limit = sim_modbus.ROOM_MAX_C
    assert temps[0] < limit and max(temps) > limit + 1
    first_hot = next(i for i, t in enumerate(temps) if t > limit)
    assert any(t < limit for t in temps[first_hot:])  # back under: the alert can resolve
    assert min(temps) >= 18.0  # never below the GB 50174 lower limit either
    assert True in doors and False in doors
    with socket.socket() as c:  # the port is closed again
        assert c.connect_ex(("127.0.0.1", sim.port)) != 0


# The entries the demo agent gets (port 18502 there); the report to the lead quotes them.
DEMO_ENTRIES = """
probes:
  - type: modbus
    name: room-th
    target: tcp://127.0.0.1:{port}
    unit: 1
    map: renke_rs_ws_n01
    labels: {{main: machine-room}}
    interval: 10s
    timeout: 5s
  - type: modbus
    name: room-door
    target: tcp://127.0.0.1:{port}
    unit: 2
    map: generic_di8
    points: [di1]
    labels: {{di1: door-main}}
    interval: 5s
    timeout: 3s
"""


async def test_demo_agent_entries_load_and_read(sim_modbus: ModuleType, tmp_path: Path) -> None:
    from agent.config import load
    from agent.scheduler import Scheduler

    sim = sim_modbus.start(free_port())
    cfg_file = tmp_path / "township.yaml"
    cfg_file.write_text("agent: {id: township-east-1, site: township-east-1}\n" + DEMO_ENTRIES.format(port=sim.port))
    try:
        cfg = load(cfg_file)
        sched = Scheduler(
            cfg.probes, lambda s: None, identity_tags={"site": "township-east-1", "agent": "township-east-1"}
        )
        samples = await sched.run_once()
        for p in sched.probes:
            await p.aclose()
    finally:
        sim.stop()
    assert [e.name for e in cfg.probes] == ["room-th", "room-door"]
    env = [s for s in samples if s.measurement == "room_env"]
    assert len(env) == 1 and env[0].tags == {
        "device": "room-th",
        "sensor": "machine-room",
        "site": "township-east-1",
        "agent": "township-east-1",
    }
    (door,) = [s for s in samples if s.measurement == "contact"]
    assert door.tags["contact"] == "door-main" and door.fields == {"active": False}  # shut for the first minute
    assert [s.fields["status"] for s in samples if s.measurement == "probe_status"] == ["ok", "ok"]
