"""SNMPv3 against net-snmp snmpd on loopback — every security level, SHA/AES, SHA-512/AES-256 and
MD5/DES — with secrets from the config, the environment and files; wrong credentials give a clear
error in bounded time, not a hang; and one dead device does not delay another."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from snmp_peers import AUTH_KEY, PRIV_KEY, V3_USERS, by_tag
from snmp_services import Silent, Snmpd, V3User

from probes.model import Sample
from probes.snmp.config import SnmpConfig
from probes.snmp.probe import SnmpProbe
from probes.snmp.pysnmp_session import engines_open

USERS = {u.name: u for u in V3_USERS}


def v3(snmpd: Snmpd, v3user: V3User, **over: Any) -> dict[str, Any]:
    user = v3user
    raw: dict[str, Any] = {"host": "127.0.0.1", "port": snmpd.port, "version": 3, "user": user.name}
    if user.auth_proto:
        raw |= {"auth_proto": user.auth_proto, "auth_key": user.auth_key}
    if user.priv_proto:
        raw |= {"priv_proto": user.priv_proto, "priv_key": user.priv_key}
    return raw | {"request_timeout": "1s", "retries": 1} | over


async def timed_collect(raw: dict[str, Any], name: str, timeout_s: float = 10.0) -> tuple[list[Sample], float]:
    probe = SnmpProbe(SnmpConfig.model_validate(raw), name=name, timeout_s=timeout_s)
    t0 = time.monotonic()
    try:
        return await probe.collect(), time.monotonic() - t0
    finally:
        await probe.aclose()


def collect(raw: dict[str, Any], name: str = "snmpd", timeout_s: float = 10.0) -> tuple[list[Sample], float]:
    return asyncio.run(timed_collect(raw, name, timeout_s))


def status(samples: list[Sample]) -> dict[str, Any]:
    assert samples[-1].measurement == "probe_status"
    return dict(samples[-1].fields)


@pytest.mark.parametrize("user", V3_USERS, ids=lambda u: f"{u.name}-{u.level}")
def test_every_level_and_protocol_pair_reads_the_device(snmpd: Snmpd, user: V3User) -> None:
    samples, _ = collect(v3(snmpd, user))
    assert status(samples)["status"] == "ok", status(samples)["error"]
    system = by_tag(samples, "snmp_system", "device")["snmpd"]
    assert system.fields["sys_name"] == "netwatch-snmpd"
    assert system.fields["sys_location"] == "test bench"
    assert "lo" in {s.tags.get("ifname") for s in samples if s.measurement == "interface"}


def test_secrets_from_environment_and_file(snmpd: Snmpd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NW_TEST_AUTH", AUTH_KEY)
    key_file = tmp_path / "priv.key"
    key_file.write_text(PRIV_KEY + "\n")
    raw = v3(
        snmpd, USERS["sha512-aes256"], auth_key=None, priv_key=None, auth_key_env="NW_TEST_AUTH", priv_key_file=key_file
    )
    cfg = SnmpConfig.model_validate({k: v for k, v in raw.items() if v is not None})
    assert AUTH_KEY not in repr(cfg) and PRIV_KEY not in repr(cfg)
    samples, _ = collect({k: v for k, v in raw.items() if v is not None})
    assert status(samples)["status"] == "ok", status(samples)["error"]


@pytest.mark.parametrize(
    ("over", "says", "within_s"),
    [
        ({"auth_key": "wrong-pass-1"}, "authentication failed for SNMPv3 user 'sha-aes': wrong auth_key", 1.5),
        ({"user": "nobody"}, "authentication failed: the device does not know SNMPv3 user 'nobody'", 1.5),
        # snmpd drops what it cannot decrypt: a timeout, bounded by timeout × (retries + 1)
        ({"priv_key": "wrong-pass-2"}, "no response in 1 s after 1 retry (SNMPv3)", 4.0),
    ],
    ids=["wrong-auth-key", "unknown-user", "wrong-priv-key"],
)
def test_wrong_credentials_say_so_quickly(snmpd: Snmpd, over: dict[str, Any], says: str, within_s: float) -> None:
    samples, took = collect(v3(snmpd, USERS["sha-aes"], **over), timeout_s=10)
    st = status(samples)
    assert st["status"] == "down" and says in st["error"], st["error"]
    assert st["error"].startswith(f"device snmpd: 127.0.0.1:{snmpd.port}: ")
    assert took < within_s
    assert len(samples) == 1  # nothing but the status


def test_a_level_the_user_does_not_have(snmpd: Snmpd) -> None:
    auth_only = USERS["sha256-auth"]
    samples, _ = collect(v3(snmpd, auth_only, priv_proto="AES", priv_key=PRIV_KEY))
    assert "does not allow authPriv for SNMPv3 user 'sha256-auth'" in status(samples)["error"]


def test_wrong_community_is_a_bounded_timeout_naming_the_community(snmpd: Snmpd) -> None:
    raw = {"host": "127.0.0.1", "port": snmpd.port, "community": "not-this-one", "request_timeout": "500ms"}
    samples, took = collect(raw)
    st = status(samples)
    assert st["status"] == "down" and "no response in 0.5 s after 1 retry (SNMPv2c)" in st["error"]
    assert "the community" in st["error"] and took < 3.0


def test_same_user_name_with_other_keys_does_not_spoil_the_right_ones(snmpd: Snmpd) -> None:
    """USM holds one entry per user name per engine: a device whose keys differ gets an engine of
    its own, so the wrong keys of one cannot break the right keys of another."""
    user = USERS["sha-aes"]

    async def both() -> tuple[list[Sample], list[Sample], int]:
        good = SnmpProbe(SnmpConfig.model_validate(v3(snmpd, user)), name="good")
        bad = SnmpProbe(SnmpConfig.model_validate(v3(snmpd, user, auth_key="other-pass-3")), name="bad")
        try:
            first = await good.collect()  # registers the user with the right keys
            b, g = await asyncio.gather(bad.collect(), good.collect())
            return first + g, b, engines_open()
        finally:
            await good.aclose()
            await bad.aclose()

    good_samples, bad_samples, engines = asyncio.run(both())
    assert [s.fields["status"] for s in good_samples if s.measurement == "probe_status"] == ["ok", "ok"]
    assert "wrong auth_key" in status(bad_samples)["error"]
    assert engines == 2


def test_a_dead_device_does_not_delay_another(snmpd: Snmpd) -> None:
    silent = Silent()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # released: the kernel answers port-unreachable
    dead = {"host": "127.0.0.1", "port": silent.port, "community": "public", "request_timeout": "1s", "retries": 1}
    closed = dead | {"port": closed_port}
    live = {"host": "127.0.0.1", "port": snmpd.port, "community": "public", "request_timeout": "1s"}

    async def race() -> dict[str, tuple[list[Sample], float, float]]:
        t0 = time.monotonic()

        async def run(raw: dict[str, Any], name: str, delay: float) -> tuple[list[Sample], float, float]:
            await asyncio.sleep(delay)
            samples, took = await timed_collect(raw, name, timeout_s=5)
            return samples, took, time.monotonic() - t0

        dead_r, closed_r, live_r = await asyncio.gather(
            run(dead, "dead", 0), run(closed, "closed", 0), run(live, "live", 0.1)
        )
        return {"dead": dead_r, "closed": closed_r, "live": live_r}

    try:
        r = asyncio.run(race())
    finally:
        silent.close()
    live_samples, live_took, live_done = r["live"]
    assert status(live_samples)["status"] == "ok" and live_took < 1.0
    for name in ("dead", "closed"):
        samples, took, done = r[name]
        st = status(samples)
        assert st["status"] == "down" and "no response in 1 s after 1 retry" in st["error"], st["error"]
        assert 1.9 < took < 4.5  # timeout × (retries + 1), inside the probe's budget
        assert live_done < done  # the live device was done long before
