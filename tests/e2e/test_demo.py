"""The README's first command: the demo comes up, every agent reports, data is stored, and it
stops everything it started."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The demo binds fixed ports: its tests share one pytest-xdist worker (--dist loadgroup).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("demo-ports")]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_demo_runs_and_stops_cleanly() -> None:
    ports = (18088, 18830, 18080, 18502)
    assert all(_port_free(p) for p in ports), "demo ports busy: is a demo running?"
    r = subprocess.run(
        [sys.executable, str(ROOT / "configs/demo/demo.py"), "--duration", "35", "--deface-after", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "http://127.0.0.1:18080/" in out
    online = [int(m) for m in re.findall(r"agents online (\d)/4", out)]
    stored = [int(m) for m in re.findall(r"samples stored (\d+)", out)]
    assert online and online[-1] == 4, out
    assert stored and stored[-1] > 50 and stored == sorted(stored), out
    assert all("rejected 0 " in line for line in out.splitlines() if "samples stored" in line), out
    # everything it started is gone: its ports are free again
    assert all(_port_free(p) for p in ports)

    # the tamper detection saw the defacement, and the closed port is reported down
    from collector.storage.sqlite import SqliteSink

    reader = SqliteSink.open_readonly(ROOT / "var/demo/collector/metrics.db")
    try:
        http = reader.query("http", tags={"agent": "city-centre"})
        status = reader.query("probe_status", tags={"agent": "township-east-2"})
    finally:
        reader.close()
    changed = [s.fields.get("changed") for s in http if "changed" in s.fields]
    assert False in changed and True in changed, changed
    assert any(s.fields["status"] == "down" and s.tags.get("probe") == "tcp" for s in status)
    # the machine-room sensor on Modbus reports temperature, humidity and dew point
    reader = SqliteSink.open_readonly(ROOT / "var/demo/collector/metrics.db")
    try:
        room = reader.query("room_env", tags={"agent": "township-east-1"})
    finally:
        reader.close()
    assert room and all({"temperature_c", "humidity_pct", "dew_point_c"} <= set(s.fields) for s in room)
    # the simulated switches and UPS on SNMP: interfaces, CPU, temperatures, UPS state
    reader = SqliteSink.open_readonly(ROOT / "var/demo/collector/metrics.db")
    try:
        ifaces = reader.query("interface", tags={"agent": "county-east"})
        cpu = reader.query("device_cpu", tags={"agent": "township-east-1"})
        temps = reader.query("device_sensor", tags={"agent": "township-east-1"})
        ups = reader.query("ups", tags={"agent": "city-centre"})
    finally:
        reader.close()
    assert {s.tags["device"] for s in ifaces} >= {"sw-county-east", "sw-county-east-access"}
    assert cpu and temps and any("temperature_c" in s.fields for s in temps)
    assert ups and ups[-1].fields["output_source_name"] == "normal"
