"""``netwatch-agent discover`` against real peers: one snmpsim per loopback address (127.0.0.2…5),
each serving one snmpsim-data recording under its own community, a silent address, and a pymodbus
server with two units. The expected devices and profiles come from the recordings' own lines and a
hand-written table of enterprise numbers; the file written must pass ``netwatch-agent check``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml
from snmp_services import Snmpd, Snmpsim, V3User, free_udp_port

sys.path.append(str(Path(__file__).resolve().parents[1] / "probes" / "modbus"))
from modbus_sims import Server, Slave  # noqa: E402

from agent.cli_discover import UsageError, parse_addresses  # noqa: E402
from configs.demo import sim_snmp  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("discover")]

#: enterprise number -> the vendor profile it should bring (Cisco 9, H3C 25506, Ruijie 4881, Huawei 2011)
VENDOR = {9: ["cisco"], 25506: ["h3c"], 4881: ["ruijie"], 2011: ["huawei"], 3902: ["zte"]}
#: a UPS-MIB agent answers upsBatteryStatus.0; that brings ups_mib whatever its sysObjectID
UPS_BATTERY_STATUS = "1.3.6.1.2.1.33.1.2.1.0"
KEEP = ["1.3.6.1.2.1.1", UPS_BATTERY_STATUS]


@dataclass(frozen=True, slots=True)
class Device:
    host: str
    recording: str
    community: str
    #: how the credentials file names the community: env, file, or literal
    given_as: str


DEVICES = [
    Device("127.0.0.2", "network/switch/cisco-c3560", "public", "env"),
    Device("127.0.0.3", "network/switch/h3c-e528-2", "ro-h3c-7781", "env2"),
    Device("127.0.0.4", "network/switch/ruijie-s5750-24gt12sfp", "public", "env"),
    Device("127.0.0.5", "UPS/huawei-gse200m", "ups-ro-2211", "file"),
]
SILENT = "127.0.0.6"


def recording_facts(path: Path) -> dict[str, str]:
    """sysObjectID, sysName and whether upsBatteryStatus is there, read from the .snmprec lines."""
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        oid, _, rest = line.partition("|")
        tag, _, value = rest.partition("|")
        if oid in ("1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.5.0", UPS_BATTERY_STATUS):
            out[oid] = bytes.fromhex(value).decode() if tag.endswith("x") else value
    return out


def expected_profiles(facts: dict[str, str]) -> list[str]:
    arcs = facts["1.3.6.1.2.1.1.2.0"].split(".")
    vendor = VENDOR.get(int(arcs[6]), []) if arcs[:6] == ["1", "3", "6", "1", "4", "1"] else []
    return vendor + (["ups_mib"] if UPS_BATTERY_STATUS in facts else [])


class AddressedSnmpsim(Snmpsim):
    """snmpsim on one loopback address of 127.0.0.0/8 (not only 127.0.0.1)."""

    def __init__(self, workdir: Path, host: str, port: int, data_dir: Path, community: str) -> None:
        super().__init__(workdir, port, data_dir, workdir / "index", community)
        self.host = host

    def argv(self) -> list[str]:
        return [a.replace("127.0.0.1:", f"{self.host}:") for a in super().argv()]

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            n = 0
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"snmpsim exited with {self.proc.returncode}")
                n += 1
                s.sendto(sim_snmp._get_request(self.ready_community, n), (self.host, self.port))
                with contextlib.suppress(OSError):
                    if s.recv(4096):
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no SNMP answer on {self.host}:{self.port}")


def _udp_free_everywhere(port: int) -> bool:
    for host in [d.host for d in DEVICES] + [SILENT]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


@dataclass
class Bench:
    root: Path
    port: int
    facts: dict[str, dict[str, str]]
    modbus_url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    root = tmp_path_factory.mktemp("discover")
    port = next(p for p in (free_udp_port() for _ in range(20)) if _udp_free_everywhere(p))
    sims: list[AddressedSnmpsim] = []
    facts = {}
    for d in DEVICES:
        data = root / d.host / "data"
        # the recording, cut to the system group and the UPS-MIB probe, served as community d.community
        sim_snmp.trim_recording(sim_snmp.recording_path(d.recording), data / f"{d.community}.snmprec", KEEP)
        facts[d.host] = recording_facts(data / f"{d.community}.snmprec")
        sims.append(AddressedSnmpsim(root / d.host, d.host, port, data, d.community))
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = Server([Slave(1, holding={0: 215}), Slave(5, holding={0: 17, 1: 2})])
    try:
        for s in sims:  # start them all, then wait: each indexes its recording
            with open(s.log_path, "ab") as log:
                s.proc = subprocess.Popen(
                    s.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
                )
        for s in sims:
            s.wait_ready(60)
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        secret = root / "ups-community"
        secret.write_text(DEVICES[3].community + "\n")
        secret.chmod(0o600)
        (root / "creds.yaml").write_text(
            yaml.safe_dump(
                {
                    "snmp": [
                        {"community_env": "DISC_PUBLIC"},
                        {"community_env": "DISC_H3C"},
                        {"community_file": str(secret)},
                    ]
                }
            )
        )
        env = {**os.environ, "DISC_PUBLIC": "public", "DISC_H3C": DEVICES[1].community, "LANG": "C.UTF-8"}
        yield Bench(root, port, facts, server.url(), env)
    finally:
        for s in sims:
            s.close()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_discover_finds_devices_and_units_and_writes_a_config_check_accepts(bench: Bench) -> None:
    out = bench.root / "found.yaml"
    r = cli(
        "discover",
        "127.0.0.2-6",
        "--port",
        str(bench.port),
        "--credentials",
        str(bench.root / "creds.yaml"),
        "--modbus",
        bench.modbus_url,
        "--units",
        "1-8",
        "--timeout",
        "300ms",
        "-o",
        str(out),
        "--json",
        env=bench.env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    snmp = {x["address"]: x for x in rows if x["kind"] == "snmp"}
    assert sorted(snmp) == [d.host for d in DEVICES]  # and not the silent 127.0.0.6
    for d in DEVICES:
        f = bench.facts[d.host]
        assert snmp[d.host]["sys_object_id"] == f["1.3.6.1.2.1.1.2.0"], d
        assert snmp[d.host]["sys_name"] == f["1.3.6.1.2.1.1.5.0"], d
        assert snmp[d.host]["profiles"] == expected_profiles(f), d
    assert snmp["127.0.0.3"]["credential"] == "community_env: DISC_H3C"
    assert snmp["127.0.0.5"]["credential"].startswith("community_file: ")
    assert [x["unit"] for x in rows if x["kind"] == "modbus"] == [1, 5]
    assert rows[-1] == {"kind": "file", "path": str(out), "entries": 6}

    # the file: private, the credentials as references (never the secrets), and a config check accepts
    assert out.stat().st_mode & 0o777 == 0o600
    text = out.read_text()
    assert "ro-h3c-7781" not in text and "ups-ro-2211" not in text and "public" not in text
    doc = yaml.safe_load(text)
    entries = {e["host"] if e["type"] == "snmp" else (e["target"], e["unit"]): e for e in doc["probes"]}
    assert entries["127.0.0.3"]["community_env"] == "DISC_H3C"
    assert entries["127.0.0.5"]["community_file"] == str(bench.root / "ups-community")
    assert entries["127.0.0.2"]["name"] == bench.facts["127.0.0.2"]["1.3.6.1.2.1.1.5.0"]
    r = cli("check", "-c", str(out), "--json", env=bench.env)
    assert r.returncode == 0, r.stdout + r.stderr
    checked = orjson.loads(r.stdout)["probes"]
    assert sorted((p["type"], p["name"]) for p in checked) == sorted((e["type"], e["name"]) for e in doc["probes"])
    assert len(checked) == 6

    # and what it wrote polls: the agent's own `once` over the new file (the devices answer)
    r = cli("once", "-c", str(out), "--json", env=bench.env)
    status = {
        x["tags"]["target"]: x["fields"]["status"]
        for x in map(orjson.loads, r.stdout.splitlines())
        if x["measurement"] == "probe_status"
    }
    assert set(status) == {e["name"] for e in doc["probes"]}
    assert all(v in ("ok", "degraded") for v in status.values()), status


def test_discover_never_overwrites_and_skips_what_the_config_has(bench: Bench) -> None:
    mine = bench.root / "mine.yaml"
    mine.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "town-9", "site": "township-9"},
                "probes": [
                    {
                        "type": "snmp",
                        "name": "DUMSYS-04",
                        "host": "127.0.0.2",
                        "port": bench.port,
                        "community_env": "DISC_PUBLIC",
                    }
                ],
            }
        )
    )
    before = mine.read_bytes()
    r = cli(
        "discover",
        "127.0.0.2,127.0.0.4",
        "--port",
        str(bench.port),
        "--community-env",
        "DISC_PUBLIC",
        "-c",
        str(mine),
        "-o",
        str(mine),
        env=bench.env,
    )
    assert r.returncode == 2 and "exists" in r.stdout and mine.read_bytes() == before
    out = bench.root / "more.yaml"
    r = cli(
        "discover",
        "127.0.0.2,127.0.0.4",
        "--port",
        str(bench.port),
        "--community-env",
        "DISC_PUBLIC",
        "-c",
        str(mine),
        "-o",
        str(out),
        "--lang",
        "zh",
        env=bench.env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "已将 1 条配置写入" in " ".join(r.stdout.split()) and "wrote" not in r.stdout
    doc = yaml.safe_load(out.read_text())
    assert doc["agent"] == {"id": "town-9", "site": "township-9"}
    assert [e["host"] for e in doc["probes"]] == ["127.0.0.4"]


def test_nothing_found_exits_1(bench: Bench) -> None:
    r = cli(  # a real process: the operator's language from --lang over LANG
        "discover",
        SILENT,
        "--port",
        str(bench.port),
        "--community-env",
        "DISC_PUBLIC",
        "--timeout",
        "200ms",
        "-o",
        str(bench.root / "none.yaml"),
        "--lang",
        "en",
        env=bench.env,
    )
    assert r.returncode == 1 and "nothing found" in r.stdout
    assert not (bench.root / "none.yaml").exists()


def test_address_specs() -> None:
    assert parse_addresses(["10.2.0.1-3", "10.2.0.3,10.2.0.9"]) == ["10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.9"]
    assert parse_addresses(["10.2.0.0/30"]) == ["10.2.0.1", "10.2.0.2"]
    assert parse_addresses(["10.2.0.254-10.2.1.1"]) == ["10.2.0.254", "10.2.0.255", "10.2.1.0", "10.2.1.1"]
    assert parse_addresses(["10.2.0.7/32"]) == ["10.2.0.7"]
    for bad in (["10.0.0.0/16"], ["10.2.0.9-1"], ["sw-1"], ["10.2.0.1-10.3.0.0"]):
        with pytest.raises(UsageError):
            parse_addresses(bad)


def test_credentials_come_from_files_or_the_environment(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli_app import app

    def run(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(app, ["discover", "127.0.0.2", "-o", str(tmp_path / "x.yaml"), *args])
        return r.exit_code, " ".join(r.output.split())

    # a literal community in a file others may read is refused, naming the fix
    loose = tmp_path / "creds.yaml"
    loose.write_text("snmp:\n  - {community: public}\n")
    loose.chmod(0o644)
    code, out = run("--credentials", str(loose))
    assert code == 2 and f"chmod 600 {loose}" in out
    # an unset variable, a key that is no credential: named
    code, out = run("--community-env", "NO_SUCH_VAR_4711")
    assert code == 2 and "NO_SUCH_VAR_4711" in out
    loose.write_text("snmp:\n  - {community_env: X, host: 10.0.0.1}\n")
    code, out = run("--credentials", str(loose))
    assert code == 2 and "snmp[0]" in out and "host" in out
    code, out = run()
    assert code == 2 and "--credentials" in out
    assert not (tmp_path / "x.yaml").exists()


def test_snmpv3_credentials_from_the_environment(tmp_path: Path) -> None:
    auth, priv = "auth-disc-4711", "priv-disc-0815"
    agent = Snmpd(tmp_path / "snmpd", free_udp_port(), [V3User("ops-sha", "SHA", auth, "AES", priv)])
    agent.start(timeout_s=20)
    try:
        creds = tmp_path / "creds.yaml"
        v3 = {
            "version": 3,
            "auth_proto": "SHA",
            "auth_key_env": "DISC_AUTH",
            "priv_proto": "AES",
            "priv_key_env": "DISC_PRIV",
        }
        # an unknown user first: refused, and the next credential is tried
        creds.write_text(yaml.safe_dump({"snmp": [{**v3, "user": "nobody"}, {**v3, "user": "ops-sha"}]}))
        env = {**os.environ, "DISC_AUTH": auth, "DISC_PRIV": priv}
        out = tmp_path / "v3.yaml"
        r = cli(
            "discover",
            "127.0.0.1",
            "--port",
            str(agent.port),
            "--credentials",
            str(creds),
            "--timeout",
            "1s",
            "-o",
            str(out),
            "--json",
            env=env,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        (found, written) = [orjson.loads(x) for x in r.stdout.splitlines()]
        # what the fixture configured (sysName) and net-snmp's own sysObjectID (enterprise 8072: no vendor profile)
        assert written == {"kind": "file", "path": str(out), "entries": 1}
        assert found["sys_name"] == "netwatch-snmpd" and found["credential"] == "v3 user ops-sha"
        assert found["sys_object_id"].startswith("1.3.6.1.4.1.8072.") and found["profiles"] == []
        text = out.read_text()
        assert auth not in text and priv not in text
        (entry,) = yaml.safe_load(text)["probes"]
        assert {k: entry[k] for k in ("version", "user", "auth_key_env", "priv_key_env", "profile")} == {
            "version": "3",
            "user": "ops-sha",
            "auth_key_env": "DISC_AUTH",
            "priv_key_env": "DISC_PRIV",
            "profile": "auto",
        }
        r = cli("check", "-c", str(out), "--json", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        agent.close()
