"""Agent config: the examples load, and each kind of mistake names the file, key and fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent import config
from probes.configfile import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
agent: {id: town-1, site: town-1, tags: {county: east}}
mqtt: {host: 127.0.0.1, port: 1883}
probes:
  - type: icmp
    host: 127.0.0.1
    interval: 30s
  - type: tcp
    name: portal-port
    host: 127.0.0.1
    port: 80
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, GOOD))
    assert [(e.kind, e.name, e.interval_s, e.timeout_s) for e in cfg.probes] == [
        ("icmp", "127.0.0.1", 30.0, 10.0),
        ("tcp", "portal-port", 60.0, 10.0),
    ]
    assert cfg.spool.path == (tmp_path / "var/agent-spool.db").resolve()
    assert cfg.agent.tags == {"county": "east"}


def test_snmp_may_take_most_of_its_interval_unless_told(tmp_path: Path) -> None:
    """A slow switch's paced walk needs ~45 s (issue 12): SNMP entries default to 0.9 × interval
    when that is longer than the 10 s default; an explicit timeout, and other kinds, stay as told."""
    text = GOOD + (
        "  - {type: snmp, name: sw, host: 127.0.0.1, community_env: X_COMMUNITY}\n"
        "  - {type: snmp, name: sw-fast, host: 127.0.0.1, community_env: X_COMMUNITY, interval: 5s}\n"
        "  - {type: snmp, name: sw-told, host: 127.0.0.1, community_env: X_COMMUNITY, timeout: 20s}\n"
    )
    import os

    os.environ["X_COMMUNITY"] = "public"
    try:
        cfg = config.load(_write(tmp_path, text))
    finally:
        del os.environ["X_COMMUNITY"]
    got = {e.name: e.timeout_s for e in cfg.probes}
    # 0.9 × 60 s; 5 s interval: min(10, 5) = 5 > 4.5; told 20 s; tcp keeps 10 s
    assert got == {"127.0.0.1": 10.0, "portal-port": 10.0, "sw": 54.0, "sw-fast": 5.0, "sw-told": 20.0}


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        (GOOD.replace("port: 1883", "port: abc"), "mqtt.port", "whole number"),
        (GOOD.replace("port: 1883", "prot: 1883"), "mqtt.prot", "did you mean 'port'"),
        (GOOD.replace("interval: 30s", "interval: 30 parsecs"), "probes[0].interval", "500ms"),
        (GOOD.replace("type: icmp", "type: icmpp"), "probes[0].type", "use one of"),
        (GOOD.replace("id: town-1", "id: 'town 1/x'"), "agent.id", "characters"),
        (GOOD.replace("    port: 80\n", ""), "probes[1].port", "add the key 'port'"),
        (GOOD.replace("interval: 30s", "interval: 30s\n    timeout: 1m"), "probes[0].timeout", "shorten the timeout"),
        (GOOD + "  - type: tcp\n    name: portal-port\n    host: x\n    port: 1\n", "probes[2].name", "distinct name"),
        (
            GOOD.replace("mqtt: {", "mqtt: {password_env: NO_SUCH_VAR_NETWATCH, username: u, "),
            "mqtt",
            "NO_SUCH_VAR_NETWATCH",
        ),
        ("agent: [1, 2\n", "line 2", "indentation"),
    ],
)
def test_mistakes_name_file_key_and_fix(tmp_path: Path, text: str, key: str, fix: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    msg = str(e.value)
    assert str(path) in msg
    assert key in msg
    assert fix in msg


def test_check_command_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("port: 1883", "port: 99999"))
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check", "--config", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "mqtt.port" in r.stdout and str(path) in r.stdout.replace("\n", "")


def test_check_command_prints_what_would_run(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check", "--config", str(_write(tmp_path, GOOD)), "--json"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    import orjson

    doc = orjson.loads(r.stdout)
    assert doc["agent"] == "town-1" and [p["name"] for p in doc["probes"]] == ["127.0.0.1", "portal-port"]


def test_password_is_not_in_repr(tmp_path: Path) -> None:
    cfg = config.load(_write(tmp_path, GOOD.replace("mqtt: {", "mqtt: {username: u, password: s3cret-pw, ")))
    assert cfg.mqtt.resolved_password() == "s3cret-pw"
    assert "s3cret-pw" not in repr(cfg)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_are_valid(path: Path) -> None:
    from collector import config as collector_config

    # Examples name files of the machine they are for; the schema is what is checked here.
    if path.parent.name == "agents" or path.name.startswith("agent"):
        assert config.load(path, check_files=False).agent.id
    elif path.name.startswith("collector"):
        assert collector_config.load(path, check_files=False).collector.id
    elif path.parent.name == "rules":
        from collector.alerting.rules import load_rules

        assert load_rules(path)
    elif path.name == "topology.yaml":
        from collector.alerting.topology import Topology

        assert Topology.load(path).sites
    else:
        pytest.fail(
            f"{path}: name it agent*.yaml / collector*.yaml (or put it under agents/ or rules/) so it is checked"
        )


def test_plaintext_to_another_machine_needs_tls_false_written_out(tmp_path: Path) -> None:
    """A broker off this machine without a tls section is refused at load (exit 2, the fix named);
    `tls: false` written out is accepted, and then `check` says there is no TLS."""
    remote = GOOD.replace("host: 127.0.0.1", "host: broker.city.example")
    assert "broker.city.example" in remote
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check", "--config", str(_write(tmp_path, remote))],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    out = r.stdout.replace("\n", " ")
    assert "mqtt" in out and "in clear" in out and "tls: false" in out
    allowed = _write(tmp_path, remote.replace("mqtt: {", "mqtt: {tls: false, "))
    cfg = config.load(allowed)
    assert cfg.mqtt.plaintext_off_host and not cfg.mqtt.uses_tls
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check", "--config", str(allowed)], capture_output=True, text=True
    )
    assert r.returncode == 0 and "no TLS" in r.stdout
    # loopback needs nothing, and any 127.0.0.0/8 or ::1 address counts as loopback
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert not config.load(
            _write(tmp_path, GOOD.replace("host: 127.0.0.1", f"host: '{host}'"))
        ).mqtt.plaintext_off_host
