"""``netwatch-agent snmp`` (agent/cli_snmp.py) for the technician: get, walk and poll against the
session's snmpsim and snmpd, credentials as options or from an agent config; JSON shape and exit
codes (0 ok, 1 target down or refused, 2 usage/config error)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from snmp_peers import AUTH_KEY, HOSTILE_TEXT, OWN, PRIV_KEY, SimAgent
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
        code, rows = run("poll", f"127.0.0.1:{silent.port}", "-c", "x", "-t", "300ms", "-r", "0", "--json")
        assert code == 1 and rows[-1]["fields"]["status"] == "down"
        result = runner.invoke(
            app, ["get", f"127.0.0.1:{silent.port}", "1.3.6.1.2.1.1.5.0", "-c", "x", "-t", "300ms", "-r", "0"]
        )
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


# --- secrets stay out of the process list; no default community; device text printed literally ---


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETWATCH_SNMP_")}
    return {**env, "COLUMNS": "400", **extra}


def agent_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "snmp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_community_from_a_file_and_from_the_environment(snmpsim: SimAgent, tmp_path: Path) -> None:
    target = f"127.0.0.1:{snmpsim.port}"
    secret = tmp_path / "community"
    secret.write_text(S5720 + "\n")
    secret.chmod(0o600)
    r = agent_cli("get", target, "1.3.6.1.2.1.1.5.0", "--community-file", str(secret), "--json", env=_clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert orjson.loads(r.stdout.splitlines()[0])["value"] == "DUMSYS-05"
    env = _clean_env(NW_T_COMMUNITY=S5720)
    r = agent_cli("walk", target, "1.3.6.1.2.1.31.1.1.1.1", "--community-env", "NW_T_COMMUNITY", "--json", env=env)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 39, r.stdout + r.stderr
    # the old environment variable still works when no option names a source
    r = agent_cli("get", target, "1.3.6.1.2.1.1.5.0", "--json", env=_clean_env(NETWATCH_SNMP_COMMUNITY=S5720))
    assert r.returncode == 0 and "DUMSYS-05" in r.stdout, r.stdout + r.stderr
    # and an explicit source wins over it
    env = _clean_env(NETWATCH_SNMP_COMMUNITY="wrong", NW_T_COMMUNITY=S5720)
    r = agent_cli("get", target, "1.3.6.1.2.1.1.5.0", "--community-env", "NW_T_COMMUNITY", "--json", env=env)
    assert r.returncode == 0 and "DUMSYS-05" in r.stdout, r.stdout + r.stderr


def test_secrets_are_not_in_the_process_list_of_a_running_walk(tmp_path: Path) -> None:
    """A walk against a device that never answers runs for its timeout: long enough to read
    /proc/PID/cmdline, as any local user can."""
    silent = Silent()
    secret = tmp_path / "community"
    secret.write_text("file-c0mmunity\n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cases = [
            (["--community-file", str(secret)], {}, b"file-c0mmunity"),
            (["--community-env", "NW_T_COMMUNITY"], {"NW_T_COMMUNITY": "env-c0mmunity"}, b"env-c0mmunity"),
            (["--community", "visible-c0mmunity"], {}, b"visible-c0mmunity"),  # the control: it IS visible
        ]
        seen = []
        for opts, extra, _ in cases:
            argv = ["walk", f"127.0.0.1:{silent.port}", "1.3.6.1.2.1.2", "-t", "3s", "-r", "0", *opts]
            p = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "snmp", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
                env=_clean_env(**extra),
            )
            procs.append(p)
            time.sleep(0.5)
            seen.append(Path(f"/proc/{p.pid}/cmdline").read_bytes())
        for (opts, _, value), cmdline in zip(cases, seen, strict=True):
            assert opts[0].encode() in cmdline  # the right process
            assert (value in cmdline) == (opts[0] == "--community"), cmdline
        for p in procs:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 1 and b"no response in 3 s" in out, out + err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        silent.close()


def test_no_community_is_a_usage_error_saying_how_to_give_one() -> None:
    for cmd in (["get", "127.0.0.1:161", "1.3.6.1.2.1.1.5.0"], ["walk", "127.0.0.1:161", "1.3.6.1.2"]):
        for version in ("1", "2c"):
            r = agent_cli(*cmd, "--version", version, env=_clean_env())
            assert r.returncode == 2, r.stdout + r.stderr
            flat = " ".join(r.stdout.split())
            assert f"SNMP v{version} needs a community" in flat and "--community-file" in flat
            assert "--community-env" in flat and "NETWATCH_SNMP_COMMUNITY" in flat
    r = agent_cli("poll", "127.0.0.1:161", env=_clean_env())
    assert r.returncode == 2 and "needs a community" in r.stdout
    r = agent_cli("walk", "--help", env=_clean_env())
    assert "process list" in " ".join(r.stdout.split())


def test_v3_keys_from_files_and_the_environment(snmpd: Snmpd, tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text(AUTH_KEY + "\n")
    v3 = ["--version", "3", "--v3-user", "sha-aes", "--auth-proto", "SHA", "--priv-proto", "AES"]
    env = _clean_env(NW_T_PRIV=PRIV_KEY)
    target = f"127.0.0.1:{snmpd.port}"
    args = ["get", target, "1.3.6.1.2.1.1.5.0", *v3, "--auth-key-file", str(auth), "--priv-key-env", "NW_T_PRIV"]
    r = agent_cli(*args, "--json", env=env)
    assert r.returncode == 0 and "netwatch-snmpd" in r.stdout, r.stdout + r.stderr
    env = _clean_env(NETWATCH_SNMP_AUTH_KEY=AUTH_KEY, NETWATCH_SNMP_PRIV_KEY=PRIV_KEY)  # the old fallback
    r = agent_cli("get", target, "1.3.6.1.2.1.1.5.0", *v3, "--json", env=env)
    assert r.returncode == 0 and "netwatch-snmpd" in r.stdout, r.stdout + r.stderr
    # two sources for one key is a usage error naming both options
    r = agent_cli(*args, "--auth-key", AUTH_KEY, env=_clean_env(NW_T_PRIV=PRIV_KEY))
    assert r.returncode == 2 and "give only one of --auth-key, --auth-key-file" in r.stdout, r.stdout


@pytest.mark.parametrize("cmd", ["get", "walk", "poll"])
def test_device_text_is_printed_literally(snmpsim: SimAgent, cmd: str) -> None:
    env = _clean_env(FORCE_COLOR="1", TERM="xterm-256color", NW_T_COMMUNITY=f"{OWN}/hostile")
    env.pop("NO_COLOR", None)
    args = {
        "get": ["1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.5.0", "1.3.6.1.2.1.1.6.0"],
        "walk": ["1.3.6.1.2.1.1"],
        "poll": ["--profile", "system"],
    }[cmd]
    r = agent_cli(cmd, f"127.0.0.1:{snmpsim.port}", *args, "--community-env", "NW_T_COMMUNITY", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\x1b]8;" not in r.stdout and "\x1b]" not in r.stdout
    text = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    assert HOSTILE_TEXT in text
    if cmd != "poll":
        assert "room [link=https://evil.example]B2[/link]" in text


def test_no_public_default_anywhere() -> None:
    from pydantic import ValidationError

    from agent import config as agent_config
    from probes.snmp.config import SnmpConfig
    from probes.snmp.traps_config import TrapConfig

    with pytest.raises(ValidationError, match="SNMP v2c needs community, community_env or community_file"):
        SnmpConfig.model_validate({"host": "127.0.0.1"})
    with pytest.raises(ValidationError, match="no credentials"):
        TrapConfig.model_validate({"port": 1162})
    assert SnmpConfig.model_fields["community"].default is None
    assert TrapConfig.model_fields["communities"].default_factory() == []  # type: ignore[misc,call-arg]
    # the example agent config polls and receives with communities from files, and lists its trap sources
    cfg = agent_config.load(ROOT / "configs" / "agent.example.yaml", check_files=False)
    snmp = {e.kind: e.config for e in cfg.probes if e.kind.startswith("snmp")}
    assert snmp["snmp"].community_file is not None and snmp["snmp_traps"].devices  # type: ignore[attr-defined]
    assert "public" not in (ROOT / "probes" / "snmp" / "sample.yaml").read_text()
