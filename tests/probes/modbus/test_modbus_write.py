"""``netwatch-agent modbus write`` (agent/cli_modbus.py, probes/modbus/write.py) as a subprocess
against a real pymodbus server: the value is encoded with the point's scale/type/order and what the
server's own datastore holds afterwards is the oracle; read-only and out-of-range points are refused
with exit 2 before anything is sent; a device that acknowledges but ignores writes exits 1."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from modbus_sims import Server, Slave, registers
from pymodbus.simulator import SimDevice

from probes.modbus.codec import decode, encode
from probes.modbus.registermap import Point
from probes.modbus.write import WriteRefused, encode_point

ROOT = Path(__file__).resolve().parents[3]

MAP = """
model: test-precision-ac
points:
  - {name: setpoint, address: 40001, type: int16, scale: 0.1, unit: C}
  - {name: mode, address: 40002, enum: {0: "off", 1: cool, 2: heat}}
  - {name: flow_target, address: 40003, type: float32, order: CDAB, unit: m3/h}
  - {name: fan, table: coil, address: 0, type: bit}
  - {name: return_temp, address: 30001, type: int16, scale: 0.1, unit: C}
"""


def _slave(unit: int = 1) -> Slave:
    return Slave(
        unit,
        holding=registers((0, [200, 1]), (2, encode(12.5, "float32", "CDAB"))),
        input={0: 215},
        coils={0: False},
    )


@dataclass
class DeafSlave(Slave):
    """Acknowledges every register write and keeps the old values (seen on cheap gateways)."""

    def device(self) -> SimDevice:
        base = super().device()

        async def action(fc: int, start: int, address: int, count: int, regs: list[int], values: Any) -> Any:
            if fc in (6, 16) and values:
                values[:] = regs[address - start : address - start + count]
            return None

        base.action = action
        return base


def _config(tmp_path: Path, port: int) -> Path:
    (tmp_path / "ac.yaml").write_text(MAP)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"""
agent: {{id: town-a, site: town-a}}
probes:
  - type: modbus
    name: room1-ac
    target: tcp://127.0.0.1:{port}
    unit: 1
    map: {tmp_path / "ac.yaml"}
"""
    )
    return cfg


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.cli",
        "modbus",
        "write",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def held(server: Server, fc: int, address: int, count: int = 1) -> list[Any]:
    """What the server's datastore holds: read in-process, not over Modbus."""
    assert server._server is not None
    values = await server._server.context.async_getValues(1, fc, address, count)
    assert isinstance(values, list), values
    return values


async def test_writes_a_scaled_setpoint_and_a_coil(tmp_path: Path) -> None:
    server = await Server([_slave()]).start()
    try:
        cfg = str(_config(tmp_path, server.port))
        code, out, err = await cli("--device", "room1-ac", "--point", "setpoint", "22.5", "--config", cfg)
        assert code == 0, out + err
        assert await held(server, 3, 0) == [225]
        assert "20 C → 22.5 C" in out and "已回读确认" in out
        assert "warning" in err and "setpoint" in err

        code, out, err = await cli("--device", "room1-ac", "--point", "fan", "on", "--config", cfg, "--json")
        assert code == 0, out + err
        assert (await held(server, 1, 0))[0] is True
        (row,) = [orjson.loads(x) for x in out.splitlines()]
        assert (row["before"], row["after"], row["confirmed"], row["raw"]) == (False, True, True, [True])

        code, out, err = await cli("--device", "room1-ac", "--point", "mode", "heat", "--config", cfg, "--json")
        assert code == 0, out + err
        assert await held(server, 3, 1) == [2]

        # two registers, word-swapped: function 16, CDAB as the map says; a negative value after --
        code, out, err = await cli("--device", "room1-ac", "--point", "flow_target", "--config", cfg, "--", "-3.75")
        assert code == 0, out + err
        words = await held(server, 3, 2, 2)
        assert decode(words, "float32", "CDAB") == -3.75 and words == encode(-3.75, "float32", "CDAB")
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("point", "value", "why"),
    [
        ("setpoint", "3276.8", "out of range"),  # int16 × 0.1 tops out at 3276.7
        ("setpoint", "-3276.9", "out of range"),
        ("setpoint", "22.55", "resolution"),
        ("setpoint", "warm", "not a number"),
        ("return_temp", "20", "read-only"),  # input register (3xxxx)
        ("mode", "defrost", "states"),
        ("fan", "maybe", "on/off"),
    ],
)
async def test_refused_with_exit_2_before_anything_is_sent(tmp_path: Path, point: str, value: str, why: str) -> None:
    server = await Server([_slave()]).start()
    try:
        cfg = str(_config(tmp_path, server.port))
        code, out, err = await cli("--device", "room1-ac", "--point", point, "--config", cfg, "--", value)
        assert code == 2, out + err
        assert why in out and "拒绝" in out
        assert server.count() == 0  # not even the first read
        assert await held(server, 3, 0, 2) == [200, 1]
    finally:
        await server.stop()


async def test_a_device_that_ignores_writes_exits_1(tmp_path: Path) -> None:
    server = await Server([DeafSlave(1, holding={0: 200, 1: 1, 2: 0, 3: 0}, input={0: 1})]).start()
    try:
        cfg = str(_config(tmp_path, server.port))
        code, out, err = await cli("--device", "room1-ac", "--point", "setpoint", "22.5", "--config", cfg)
        assert code == 1, out + err
        assert "holds 20 C, not 22.5 C" in out and "设备未应用新值" in out
        assert await held(server, 3, 0) == [200]
        assert [r.function for r in server.requests] == [3, 6, 3]  # read, write, read back
    finally:
        await server.stop()


async def test_unknown_device_point_and_missing_config_exit_2(tmp_path: Path) -> None:
    cfg = str(_config(tmp_path, 9))
    code, out, _ = await cli("--device", "nope", "--point", "setpoint", "1", "--config", cfg)
    assert code == 2 and "no modbus entry named 'nope'" in out
    code, out, _ = await cli("--device", "room1-ac", "--point", "nope", "1", "--config", cfg)
    assert code == 2 and "writable points: setpoint, mode, flow_target, fan" in out
    code, out, _ = await cli("--device", "room1-ac", "--point", "setpoint", "1")
    assert code == 2 and "--config" in out


async def test_an_unreachable_device_exits_1(tmp_path: Path) -> None:
    from services import free_port

    cfg = str(_config(tmp_path, free_port()))
    code, out, _ = await cli("--device", "room1-ac", "--point", "setpoint", "21", "--config", cfg)
    assert code == 1 and "read failed" in out and "connect_failed" in out


def _point(**kw: Any) -> Point:
    return Point.model_validate({"name": "p", **kw})


def test_encoding_is_the_inverse_of_reading() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"address": 40001, "type": "int16", "scale": 0.1}, "-10.1"),
        ({"address": 40001, "type": "uint16", "scale": 0.01, "offset": -40}, "-12.34"),
        ({"address": 40001, "type": "int32", "order": "DCBA", "scale": 0.001}, "123456.789"),
        ({"address": 40001, "type": "uint32", "order": "BADC"}, "4000000000"),
        ({"address": 40001, "type": "uint16", "negative_from": 10000, "scale": 0.1}, "-5.2"),
        ({"address": 40001, "type": "float32", "order": "CDAB"}, "123456.0"),
    ]
    for kw, text in cases:
        p = _point(**kw)
        enc = encode_point(p, text)
        assert p.decode(list(enc.registers)) == (float(text), ""), (kw, enc)
    assert encode_point(_point(address=40001, type="float32"), "123456.0").registers == (0x47F1, 0x2000)
    assert encode_point(_point(address=40001, type="uint16", negative_from=10000), "-52").registers == (10052,)
    inv = _point(table="coil", address=0, type="bit", invert=True)
    assert encode_point(inv, "on").coil is False and encode_point(inv, "on", invert=True).coil is True
    with pytest.raises(WriteRefused, match="marker"):
        encode_point(_point(address=40001, type="int16", invalid=[0x7FFF]), "32767")
    with pytest.raises(WriteRefused, match="out of range"):
        encode_point(_point(address=40001, type="uint16"), "-1")
    with pytest.raises(WriteRefused, match="discrete input"):
        encode_point(_point(table="discrete", address=0, type="bit"), "1")
    with pytest.raises(WriteRefused, match="single bits"):
        encode_point(_point(address=40001, type="bit", bit=3), "1")
