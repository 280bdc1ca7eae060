"""agent/service_unit.py: the unit's privileges follow the config — nothing by default, CAP_NET_RAW
for raw ICMP, CAP_NET_BIND_SERVICE for a trap port below 1024, serial devices for Modbus RTU —
and every variant passes ``systemd-analyze verify``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.config import load
from agent.service_unit import render

HEAD = (
    "agent: {id: a1, site: s1}\nmqtt: {host: 127.0.0.1, port: 1883}\nspool: {path: /var/lib/netwatch-agent/spool.db}\n"
)


def _unit(tmp_path: Path, probes: str) -> dict[str, list[str]]:
    cfg_path = tmp_path / "agent.yaml"
    cfg_path.write_text(HEAD + "probes:\n" + probes)
    prefix = tmp_path / "opt"
    exe = prefix / "venv/bin/netwatch-agent"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "netwatch-agent.service"
    unit.write_text(render(load(cfg_path), config_path=cfg_path, prefix=prefix))
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: tests/run.sh installs the systemd package")
    r = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_default_has_no_capabilities(tmp_path: Path) -> None:
    u = _unit(
        tmp_path, "  - {type: icmp, name: up, host: 127.0.0.1}\n  - {type: tcp, name: t, host: 127.0.0.1, port: 22}\n"
    )
    assert u["CapabilityBoundingSet"] == [""] and u["AmbientCapabilities"] == [""]
    assert u["PrivateDevices"] == ["yes"] and "DeviceAllow" not in u and "ReadWritePaths" not in u
    assert u["NoNewPrivileges"] == ["yes"] and u["ProtectSystem"] == ["strict"]


def test_raw_icmp_and_low_trap_port(tmp_path: Path) -> None:
    u = _unit(
        tmp_path,
        "  - {type: icmp, name: up, host: 127.0.0.1, mode: raw}\n"
        "  - {type: snmp_traps, name: traps, port: 162, communities: [public]}\n",
    )
    assert u["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE CAP_NET_RAW"]
    assert u["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE CAP_NET_RAW"]


def test_serial_modbus_gets_its_device_only(tmp_path: Path) -> None:
    u = _unit(
        tmp_path,
        "  - {type: modbus, name: th, target: 'rtu:///dev/ttyUSB0?baud=9600', map: renke_rs_ws_n01}\n"
        "  - {type: modbus, name: th2, target: 'rtu:///dev/ttyUSB0?baud=9600', unit: 2, map: renke_rs_ws_n01}\n",
    )
    assert u["DeviceAllow"] == ["/dev/ttyUSB0 rw"] and u["DevicePolicy"] == ["closed"]
    assert u["PrivateDevices"] == ["no"] and u["SupplementaryGroups"] == ["dialout"]
    assert u["CapabilityBoundingSet"] == [""]
