"""``netwatch-agent modbus`` (agent/cli_modbus.py) against the demo's simulated devices: read
through a map and raw, scan for unit ids, JSON shape and exit codes (0 ok, 1 down / nothing
found, 2 usage, 3 runtime failure)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import orjson
import pytest
from services import free_port
from typer.testing import CliRunner

from agent import cli_modbus
from agent.cli_modbus import app, parse_units

runner = CliRunner()


@pytest.fixture
def sim(sim_modbus: ModuleType) -> Iterator[Any]:
    handle = sim_modbus.start(free_port(), period_s=600)
    yield handle
    handle.stop()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def lines(out: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_read_through_a_map(sim: Any) -> None:
    code, out = run("read", sim.url, "--unit", "1", "--map", "renke_rs_ws_n01", "--json")
    assert code == 0, out
    env, status = lines(out)
    assert set(env) == {"measurement", "tags", "fields", "time"}
    assert env["measurement"] == "room_env" and env["tags"] == {"device": "unit-1", "sensor": "main"}
    assert 18 <= env["fields"]["temperature_c"] <= 29 and "dew_point_c" in env["fields"]
    assert status["fields"]["status"] == "ok"


def test_read_all_points_shows_the_settings_registers(sim: Any) -> None:
    code, out = run("read", sim.url, "--unit", "1", "--map", "renke_rs_ws_n01", "--all")
    assert code == 0
    assert "baud_rate" in out and "state_name=4800" in out and "正常 1" in out


def test_read_raw_registers_in_manual_and_zero_based_style(sim: Any) -> None:
    code, out = run("read", sim.url, "--unit", "1", "--address", "40001", "--count", "2", "--type", "int16", "--json")
    assert code == 0
    rh, temp, status = lines(out)
    assert (rh["tags"]["ref"], rh["tags"]["address"], temp["tags"]["ref"]) == ("40001", "0", "40002")
    assert rh["fields"]["raw"] == f"0x{int(rh['fields']['value']):04X}"
    assert status["fields"]["status"] == "ok"
    code, out = run("read", sim.url, "--unit", "1", "--table", "holding", "--address", "0x07D1", "--json")
    assert code == 0 and lines(out)[0]["fields"] == {"value": 1.0, "raw": "0x0001"}  # baud code 1 = 4800


def test_read_raw_bits(sim: Any) -> None:
    code, out = run(
        "read",
        sim.url,
        "--unit",
        "2",
        "--table",
        "discrete",
        "--address",
        "0",
        "--count",
        "3",
        "--type",
        "bit",
        "--json",
    )
    assert code == 0
    assert [x["fields"]["value"] for x in lines(out)[:3]] == [sim.room.door_open(sim.room.elapsed()), False, False]


def test_read_bits_of_a_register(sim: Any) -> None:
    # the baud register holds 1: bit 0 set, bits 1-2 clear, all from one register
    code, out = run(
        "read", sim.url, "--table", "holding", "--address", "0x07D1", "--type", "bit", "--count", "3", "--json"
    )
    assert code == 0
    assert [(x["tags"]["bit"], x["fields"]["value"]) for x in lines(out)[:3]] == [
        ("0", True),
        ("1", False),
        ("2", False),
    ]


def test_scan_finds_the_units_that_answer(sim: Any) -> None:
    code, out = run("scan", sim.url, "--units", "1-5", "--json")
    assert code == 0
    found = lines(out)
    assert [f["unit"] for f in found] == [1, 2]
    assert found[0] == {
        "target": sim.url,
        "unit": 1,
        "reply": "values",
        "error": "",
        "response_ms": found[0]["response_ms"],
    }
    code, out = run("scan", sim.url, "--units", "1,2,9")
    assert code == 0 and "2 of 3 unit ids answered" in " ".join(out.split())


def test_scan_on_a_serial_server_with_silent_units(sim_modbus: ModuleType) -> None:
    handle = sim_modbus.start(free_port(), rtu_over_tcp=True)
    try:
        code, out = run("scan", handle.url, "--units", "1-4", "--timeout", "150ms", "--json")
    finally:
        handle.stop()
    assert code == 0 and [f["unit"] for f in lines(out)] == [1, 2]


def test_nothing_found_and_down_targets_exit_1(sim: Any) -> None:
    code, out = run("scan", sim.url, "--units", "5-6", "--json")
    assert code == 1 and lines(out) == []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    code, out = run("read", closed, "--address", "40001", "--json", "--timeout", "300ms")
    (status,) = lines(out)
    assert code == 1 and status["fields"]["status"] == "down" and "connect_failed" in status["fields"]["error"]
    code, out = run("scan", closed, "--json", "--timeout", "300ms")
    assert code == 1 and lines(out)[0]["error"] == "connect_failed"
    code, out = run("read", sim.url, "--unit", "7", "--map", "renke_rs_ws_n01", "--json")
    assert code == 1 and lines(out)[-1]["fields"]["status"] == "down"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["read", "tcp://h", "--map", "x", "--address", "40001"], "not both or neither"),
        (["read", "tcp://h"], "not both or neither"),
        (["read", "modbus://h", "--address", "40001"], "unknown scheme"),
        (["read", "tcp://h", "--address", "40001", "--type", "float"], "--type 'float'"),
        (["read", "tcp://h", "--address", "20001"], "--address"),
        (["read", "tcp://h", "--table", "coil", "--address", "0"], "use --type bit"),
        (["read", "tcp://h", "--map", "nope"], "no register map named 'nope'"),
        (["read", "tcp://h", "--address", "40001", "--timeout", "soon"], "--timeout"),
        (["scan", "rtu:///dev/null", "--units", "0-300"], "unit ids here are 1-247"),
        (["scan", "tcp://h", "--table", "register"], "--table 'register'"),
    ],
)
def test_usage_errors_exit_2(args: list[str], says: str) -> None:
    code, out = run(*args)
    assert code == 2 and says in out.replace("\n", " ")


def test_runtime_failure_exits_3(sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Any) -> list[Any]:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(cli_modbus.ModbusProbe, "collect", broken)
    code, out = run("read", sim.url, "--map", "renke_rs_ws_n01")
    assert code == 3 and "RuntimeError: simulated bug" in out


def test_unit_ranges() -> None:
    assert parse_units("1-3,2,10", 1, 247) == [1, 2, 3, 10]
    with pytest.raises(ValueError, match="low to high"):
        parse_units("5-1", 1, 247)


def test_runs_as_a_module() -> None:
    r = subprocess.run([sys.executable, "-m", "agent.cli_modbus", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "scan" in r.stdout and "read" in r.stdout
