"""``netwatch-agent snmp`` (agent/cli_snmp.py) for the technician: get, walk and poll against the
session's snmpsim and snmpd, credentials as options or from an agent config; JSON shape and exit
codes (0 ok, 1 target down or refused, 2 usage/config error)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from snmp_peers import AUTH_KEY, OWN, PRIV_KEY, SimAgent
from snmp_services import Silent, Snmpd
from typer.testing import CliRunner

from agent.cli_snmp import app, show_value

ROOT = Path(__file__).resolve().parents[3]
S5720 = "network/router/huawei-s5720"
runner = CliRunner()


def run(*args: str) -> tuple[int, list[dict]]:
    result = runner.invoke(app, list(args))
    rows = [orjson.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    return result.exit_code, rows


def test_get_json_rows_and_an_absent_oid(snmpsim: SimAgent) -> None:
    code, rows = run(
        "get", f"127.0.0.1:{snmpsim.port}", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.3.0", "1.3.6.1.2.1.1.99.0",
        "-c", S5720, "--json",
    )  # fmt: skip
    assert code == 0
    assert rows[0] == {"oid": "1.3.6.1.2.1.1.5.0", "type": "OctetString", "value": "DUMSYS-05"}
    assert rows[1]["type"] == "TimeTicks" and isinstance(rows[1]["value"], int)
    assert rows[2] == {"oid": "1.3.6.1.2.1.1.99.0", "type": "NoSuchInstance", "value": None}


def test_walk_json_and_gbk_text(snmpsim: SimAgent) -> None:
    code, rows = run("walk", f"127.0.0.1:{snmpsim.port}", "1.3.6.1.2.1.31.1.1.1.1", "-c", S5720, "--json")
    assert code == 0 and len(rows) == 39
    assert rows[5] == {"oid": "1.3.6.1.2.1.31.1.1.1.1.6", "type": "OctetString", "value": "GigabitEthernet0/0/1"}
    code, rows = run("walk", f"127.0.0.1:{snmpsim.port}", "1.3.6.1.2.1.31.1.1.1.18", "-c", f"{OWN}/counters", "--json")
    assert code == 0 and rows == [{"oid": "1.3.6.1.2.1.31.1.1.1.18.1", "type": "OctetString", "value": "上联县局"}]


def test_poll_prints_samples_and_takes_a_profile(snmpsim: SimAgent) -> None:
    code, rows = run("poll", f"127.0.0.1:{snmpsim.port}", "-c", S5720, "--json")
    assert code == 0
    kinds = {r["measurement"] for r in rows}
    assert kinds == {"snmp_system", "interface", "device_cpu", "device_memory", "device_sensor", "probe_status"}
    assert all(set(r) == {"measurement", "tags", "fields", "time"} for r in rows)
    # naming a profile replaces the choice by sysObjectID (huawei) with it
    code, rows = run("poll", f"127.0.0.1:{snmpsim.port}", "-c", S5720, "--profile", "cisco", "--json")
    assert code == 0 and not [r for r in rows if r["tags"].get("mib") == "huawei"]


def test_poll_table_for_people(snmpsim: SimAgent) -> None:
    result = runner.invoke(app, ["poll", f"127.0.0.1:{snmpsim.port}", "-c", f"{OWN}/zte"])
    assert result.exit_code == 0
    assert "device_cpu" in result.stdout and "cpu_pct=12" in result.stdout and "ok 1" in result.stdout


def test_v3_options_and_refused_keys(snmpd: Snmpd) -> None:
    target = f"127.0.0.1:{snmpd.port}"
    v3 = ["--version", "3", "--v3-user", "sha-aes", "--auth-proto", "SHA", "--priv-proto", "AES"]
    code, rows = run("get", target, "1.3.6.1.2.1.1.5.0", *v3, "--auth-key", AUTH_KEY, "--priv-key", PRIV_KEY, "--json")
    assert code == 0 and rows[0]["value"] == "netwatch-snmpd"
    result = runner.invoke(
        app, ["get", target, "1.3.6.1.2.1.1.5.0", *v3, "--auth-key", "wrong-key-9", "--priv-key", PRIV_KEY]
    )
    assert result.exit_code == 1 and "authentication failed" in result.stdout


def test_a_silent_device_exits_1(snmpsim: SimAgent) -> None:
    silent = Silent()
    try:
        code, rows = run("poll", f"127.0.0.1:{silent.port}", "-t", "300ms", "-r", "0", "--json")
        assert code == 1 and rows[-1]["fields"]["status"] == "down"
        result = runner.invoke(app, ["get", f"127.0.0.1:{silent.port}", "1.3.6.1.2.1.1.5.0", "-t", "300ms", "-r", "0"])
        assert result.exit_code == 1 and "no response in 0.3 s after 0 retries" in result.stdout
    finally:
        silent.close()


@pytest.mark.parametrize(
    "args",
    [
        ["get", "127.0.0.1:161"],  # no OID
        ["walk", "127.0.0.1:161"],  # no OID
        ["get"],  # no target, no config
        ["get", "127.0.0.1:161", "1.3.6.1.2.1.1.5.0", "--version", "4"],
        ["get", "127.0.0.1:161", "1.3.6.1.2.1.1.5.0", "--version", "3"],  # v3 without a user
        ["poll", "127.0.0.1:161", "--profile", "huawie"],
        ["poll", "127.0.0.1:161", "--poll-timeout", "soon"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == 2


def test_config_and_device_from_the_agent_config(snmpsim: SimAgent, tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        f"""
agent: {{id: county-east, site: county-east}}
probes:
  - type: snmp
    name: sw-county
    host: 127.0.0.1
    port: {snmpsim.port}
    community_env: NW_TEST_COMMUNITY
    profile: huawei
  - type: snmp
    name: ups-county
    host: 127.0.0.1
    port: {snmpsim.port}
    community: UPS/huawei-gse200m
    profile: ups_mib_tenths
"""
    )
    env = {"NW_TEST_COMMUNITY": S5720}
    result = runner.invoke(app, ["poll", "--config", str(cfg), "--device", "sw-county", "--json"], env=env)
    assert result.exit_code == 0, result.stdout
    rows = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert {r["tags"].get("device") for r in rows if r["measurement"] == "device_cpu"} == {"sw-county"}
    oid = "1.3.6.1.2.1.33.1.3.3.1.3.1"
    result = runner.invoke(app, ["get", "--config", str(cfg), "--device", "ups-county", oid], env=env)
    assert result.exit_code == 0 and "2369" in result.stdout
    # every entry is validated: an unset variable of another entry is a config error
    result = runner.invoke(
        app, ["get", "--config", str(cfg), "--device", "ups-county", oid], env={"NW_TEST_COMMUNITY": ""}
    )
    assert result.exit_code == 2 and "NW_TEST_COMMUNITY" in result.stdout
    result = runner.invoke(app, ["poll", "--config", str(cfg), "--device", "sw-town"], env=env)
    assert result.exit_code == 2 and "there are: sw-county, ups-county" in result.stdout
    # and as a module, the way `netwatch-agent snmp` will run it
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli_snmp", "poll", "--config", str(cfg), "--device", "ups-county", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ups = [orjson.loads(x) for x in proc.stdout.splitlines() if '"ups"' in x]
    assert ups[0]["fields"]["input_voltage_v"] == pytest.approx(236.9)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"GigabitEthernet0/0/1\x00", "GigabitEthernet0/0/1"),
        ("上联县局".encode("gbk"), "上联县局"),
        (bytes.fromhex("001b213a4b5c"), "0x001b213a4b5c"),  # a MAC address is not text
        (b"", ""),
        (42, 42),
    ],
)
def test_values_are_shown_as_text_when_they_are_text(raw: object, shown: object) -> None:
    assert show_value("OctetString", raw) == shown
