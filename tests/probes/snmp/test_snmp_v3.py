"""SNMPv3 against net-snmp snmpd on loopback — every security level, SHA/AES, SHA-512/AES-256 and
MD5/DES — with secrets from the config, the environment and files; wrong credentials give a clear
error in bounded time, not a hang; and one dead device does not delay another."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
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


# snmpd's own counters of refused requests (SNMP-USER-BASED-SM-MIB usmStats*, SNMPv2-MIB snmpIn*)
USM_WRONG_DIGESTS = "1.3.6.1.6.3.15.1.1.5.0"
USM_UNKNOWN_USERS = "1.3.6.1.6.3.15.1.1.3.0"
ASN_PARSE_ERRORS = "1.3.6.1.2.1.11.6.0"  # what a wrong priv_key decrypts to
BAD_COMMUNITY_NAMES = "1.3.6.1.2.1.11.4.0"
REFUSALS = (USM_WRONG_DIGESTS, USM_UNKNOWN_USERS, ASN_PARSE_ERRORS, BAD_COMMUNITY_NAMES)


def refusals(snmpd: Snmpd) -> dict[str, int]:
    """The device's count of requests it refused, read with net-snmp's own snmpget (the oracle)."""
    out = subprocess.run(
        ["snmpget", "-v2c", "-c", "public", "-On", "-Oqv", "-t", "2", "-r", "2", f"127.0.0.1:{snmpd.port}", *REFUSALS],
        env={**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    return dict(zip(REFUSALS, (int(v) for v in out), strict=True))


@pytest.mark.parametrize(
    ("over", "says", "counted_by"),
    [
        # refused with a report (pysnmp resends at once on a report, up to its retries)
        (
            {"auth_key": "wrong-pass-1"},
            "authentication failed for SNMPv3 user 'sha-aes': wrong auth_key",
            USM_WRONG_DIGESTS,
        ),
        ({"user": "nobody"}, "authentication failed: the device does not know SNMPv3 user 'nobody'", USM_UNKNOWN_USERS),
        # snmpd drops what it cannot decrypt: a timeout after each try
        ({"priv_key": "wrong-pass-2"}, "no response in 1 s after 1 retry (SNMPv3)", ASN_PARSE_ERRORS),
    ],
    ids=["wrong-auth-key", "unknown-user", "wrong-priv-key"],
)
def test_wrong_credentials_say_so_without_retrying_in_vain(
    snmpd: Snmpd, over: dict[str, Any], says: str, counted_by: str
) -> None:
    """Counted by the device, not timed: the device refused exactly the first try and 1 retry, and
    the probe then stopped with a message naming the cause (a hang would end in the probe's budget
    with another message)."""
    before = refusals(snmpd)
    samples, _ = collect(v3(snmpd, USERS["sha-aes"], **over), timeout_s=10)
    after = refusals(snmpd)
    st = status(samples)
    assert st["status"] == "down" and says in st["error"], st["error"]
    assert st["error"].startswith(f"device snmpd: 127.0.0.1:{snmpd.port}: ")
    assert {oid: after[oid] - before[oid] for oid in REFUSALS} == {oid: 2 * (oid == counted_by) for oid in REFUSALS}
    assert len(samples) == 1  # nothing but the status


def test_a_level_the_user_does_not_have(snmpd: Snmpd) -> None:
    auth_only = USERS["sha256-auth"]
    samples, _ = collect(v3(snmpd, auth_only, priv_proto="AES", priv_key=PRIV_KEY))
    assert "does not allow authPriv for SNMPv3 user 'sha256-auth'" in status(samples)["error"]


def test_wrong_community_is_a_bounded_timeout_naming_the_community(snmpd: Snmpd) -> None:
    raw = {"host": "127.0.0.1", "port": snmpd.port, "community": "not-this-one", "request_timeout": "500ms"}
    before = refusals(snmpd)
    samples, _ = collect(raw)
    after = refusals(snmpd)
    st = status(samples)
    assert st["status"] == "down" and "no response in 0.5 s after 1 retry (SNMPv2c)" in st["error"]
    assert "the community" in st["error"]
    assert after[BAD_COMMUNITY_NAMES] - before[BAD_COMMUNITY_NAMES] == 2  # the first try and 1 retry, then down


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
    """Counted, not timed. A dead device gets its first try and one retry, then is reported down;
    a device whose port is closed (the kernel answers port-unreachable) is reported the same way; and
    a live device polled while a dead one waits on its first request is done before that one gives
    up. The hung device's timeout (60 s) is far beyond any poll of a loopback snmpd, so the order
    cannot come out the other way on a slow machine; it is cancelled once the live poll is in."""
    dead_dev, hung_dev = Silent(), Silent()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # released: the kernel answers port-unreachable
    dead = {"host": "127.0.0.1", "port": dead_dev.port, "community": "public", "request_timeout": "1s", "retries": 1}
    closed = dead | {"port": closed_port}
    hung = dead | {"port": hung_dev.port, "request_timeout": "60s", "retries": 0}
    live = {"host": "127.0.0.1", "port": snmpd.port, "community": "public", "request_timeout": "1s"}

    async def race() -> tuple[list[Sample], list[Sample], list[Sample], bool]:
        dead_t = asyncio.create_task(timed_collect(dead, "dead", timeout_s=10))
        closed_t = asyncio.create_task(timed_collect(closed, "closed", timeout_s=10))
        hung_t = asyncio.create_task(timed_collect(hung, "hung", timeout_s=120))
        for _ in range(500):  # readiness: the hung device's request is in flight (bounded: 5 s)
            if hung_dev.datagrams() and dead_dev.datagrams():
                break
            await asyncio.sleep(0.01)
        assert hung_dev.datagrams() == 1 and dead_dev.datagrams() >= 1
        live_samples, _ = await timed_collect(live, "live", timeout_s=10)
        hung_waits = not hung_t.done()
        hung_t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hung_t
        (dead_samples, _), (closed_samples, _) = await asyncio.gather(dead_t, closed_t)
        return live_samples, dead_samples, closed_samples, hung_waits

    try:
        live_samples, dead_samples, closed_samples, hung_waits = asyncio.run(race())
        sent_to_dead = dead_dev.datagrams()
    finally:
        dead_dev.close()
        hung_dev.close()
    assert status(live_samples)["status"] == "ok", status(live_samples)["error"]
    assert hung_waits  # the live device did not wait behind the hung one
    assert sent_to_dead == 2  # retries + 1: no more, no fewer
    assert all(data[0] == 0x30 for data, _ in dead_dev.received)  # BER SEQUENCE: SNMP messages
    for samples in (dead_samples, closed_samples):
        st = status(samples)
        assert st["status"] == "down" and "no response in 1 s after 1 retry" in st["error"], st["error"]
