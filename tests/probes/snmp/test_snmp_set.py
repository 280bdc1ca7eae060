"""``netwatch-agent snmp set`` (agent/cli_snmp.py, probes/snmp/settable.py) as a subprocess against
an snmpsim of its own whose ifAdminStatus column is writable (snmpsim's ``writecache`` variation):
v2c through our BER path and v3 through pysnmp; read back by an independent pysnmp GET; objects
off the allow-list refused (exit 2) before a packet leaves; errors and missing instances exit 1.
Never a real interface of this machine: everything set here lives in snmpsim's memory."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from snmp_services import Snmpsim, free_udp_port, snmprec_lines

from probes.snmp.settable import SETTABLE, parse_set

ROOT = Path(__file__).resolve().parents[3]
COMMUNITY = "netwatch-set"
ADMIN = "1.3.6.1.2.1.2.2.1.7"
V3 = {"user": "simulator", "auth_proto": "MD5", "auth_key": "auctoritas", "priv_proto": "DES", "priv_key": "privatus"}


def _recording() -> str:
    w = "2:writecache"
    return snmprec_lines(
        {
            "1.3.6.1.2.1.1.1.0": ("4", "netwatch set bench"),
            "1.3.6.1.2.1.1.5.0": ("4", "set-bench"),
            f"{ADMIN}.1": (w, "value=1"),
            f"{ADMIN}.2": (w, "value=1"),
            f"{ADMIN}.3": (w, "value=2"),
            # a switch that refuses: any SET of ifIndex 4 answers wrongValue
            f"{ADMIN}.4": (w, "value=1,vlist=eq:1:wrongvalue:eq:2:wrongvalue"),
        }
    )


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    base = tmp_path_factory.mktemp("snmpsim-set")
    data = base / "data"
    data.mkdir()
    (data / f"{COMMUNITY}.snmprec").write_text(_recording())
    service = Snmpsim(base, free_udp_port(), data, base / "index", COMMUNITY)
    service.start(timeout_s=60)
    try:
        yield service.port
    finally:
        service.close()


def _config(tmp_path: Path, port: int, *, v3: bool = False, name: str = "sw1") -> Path:
    cfg = tmp_path / "agent.yaml"
    creds = (
        "\n".join(f"    {k}: {v}" for k, v in V3.items()) + f"\n    version: '3'\n    context: {COMMUNITY}"
        if v3
        else f"    community: {COMMUNITY}"
    )
    cfg.write_text(
        f"""
agent: {{id: town-a, site: town-a}}
probes:
  - type: snmp
    name: {name}
    host: 127.0.0.1
    port: {port}
    request_timeout: 2s
    retries: 1
{creds}
"""
    )
    return cfg


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "snmp", "set", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )


def oracle_get(port: int, oid: str) -> Any:
    """The device's value as pysnmp's own high-level API reads it: not our session code."""
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        get_cmd,
    )

    async def main() -> Any:
        engine = SnmpEngine()
        try:
            target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=2, retries=1)
            err, status, _, vbs = await get_cmd(
                engine, CommunityData(COMMUNITY), target, ContextData(), ObjectType(ObjectIdentity(oid))
            )
            assert not err and not status, (err, status)
            return int(vbs[0][1])
        finally:
            engine.close_dispatcher()

    return asyncio.run(main())


def test_v2c_sets_an_interface_down_and_reads_it_back(sim: int, tmp_path: Path) -> None:
    cfg = _config(tmp_path, sim)
    assert oracle_get(sim, f"{ADMIN}.1") == 1
    r = cli("--device", "sw1", "--object", "ifAdminStatus.1", "down", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "up(1) → down(2)" in r.stdout and "已回读确认" in r.stdout
    assert "warning" in r.stderr and "ifAdminStatus.1" in r.stderr  # the one-line warning
    assert oracle_get(sim, f"{ADMIN}.1") == 2
    # and back up, as JSON
    r = cli("--device", "sw1", "--object", "ifAdminStatus.1", "up", "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert row == {
        "device": "sw1",
        "address": f"127.0.0.1:{sim}",
        "object": "ifAdminStatus.1",
        "oid": f"{ADMIN}.1",
        "requested": 1,
        "before": 2,
        "after": 1,
        "confirmed": True,
    }
    assert oracle_get(sim, f"{ADMIN}.1") == 1


def test_v3_goes_through_pysnmp(sim: int, tmp_path: Path) -> None:
    cfg = _config(tmp_path, sim, v3=True)
    r = cli("--device", "sw1", "--object", "ifAdminStatus.3", "up", "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert (row["before"], row["after"], row["confirmed"]) == (2, 1, True)
    assert oracle_get(sim, f"{ADMIN}.3") == 1


def test_a_device_error_exits_1_and_names_it(sim: int, tmp_path: Path) -> None:
    cfg = _config(tmp_path, sim)
    r = cli("--device", "sw1", "--object", "ifAdminStatus.4", "down", "--config", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "wrongValue" in r.stdout and f"{ADMIN}.4" in r.stdout
    assert oracle_get(sim, f"{ADMIN}.4") == 1


def test_a_missing_interface_exits_1_without_a_set(sim: int, tmp_path: Path) -> None:
    cfg = _config(tmp_path, sim)
    r = cli("--device", "sw1", "--object", "ifAdminStatus.99", "down", "--config", str(cfg))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "does not exist" in r.stdout


@pytest.mark.parametrize(
    ("obj", "value", "why"),
    [
        ("sysName.0", "evil", "may not be set"),
        ("1.3.6.1.2.1.2.2.1.7.1", "down", "may not be set"),
        ("ifAdminStatus", "down", "needs its instance"),
        ("ifAdminStatus.1", "testing", "is not a value"),
        ("ifAdminStatus.1.2", "down", "one number"),
    ],
)
def test_refused_before_any_packet(tmp_path: Path, obj: str, value: str, why: str) -> None:
    # the "device" is a socket of ours: anything sent to it would be there to read
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        cfg = _config(tmp_path, sock.getsockname()[1])
        r = cli("--device", "sw1", "--object", obj, value, "--config", str(cfg))
        assert r.returncode == 2, r.stdout + r.stderr
        assert why in r.stdout and "拒绝" in r.stdout
        with pytest.raises(BlockingIOError):
            sock.recv(2048)
    finally:
        sock.close()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    r = cli("--device", "sw1", "--object", "ifAdminStatus.1", "down")
    assert r.returncode == 2 and "--config" in r.stdout
    cfg = _config(tmp_path, 9)
    r = cli("--device", "nope", "--object", "ifAdminStatus.1", "down", "--config", str(cfg))
    assert r.returncode == 2 and "no snmp entry named 'nope'" in r.stdout


def test_allow_list_is_data() -> None:
    assert set(SETTABLE) == {"ifAdminStatus"}
    req = parse_set("ifAdminStatus.7", "DOWN")
    assert (req.oid, req.value, req.value_text) == (f"{ADMIN}.7", 2, "down(2)")
    assert parse_set("ifAdminStatus.7", "1").value == 1
