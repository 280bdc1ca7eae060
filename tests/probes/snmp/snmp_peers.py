"""What the SNMP tests poll: the recordings (and which are skipped, why), the tests' own recordings
(writecache counters, an APC UPS, a ZTE), the v3 users, and polling every recording at once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from pysnmp.proto.rfc1902 import Counter32, Counter64, TimeTicks
from snmp_services import (
    RecordingSet,
    Snmpsim,
    V3User,
    recording_names,
    snmprec_lines,
)

from probes.model import Sample
from probes.snmp.config import SnmpConfig
from probes.snmp.probe import SnmpProbe

#: Recordings left out of the all-recordings poll, and why.
SKIPPED = {
    "network/wifi/ruijie-m18000": "3271 virtual AP interfaces: 36k varbinds, a third of the whole run's SNMP"
    " traffic at snmpsim's ~6k varbinds/s; Ruijie is covered by ruijie-s5750 and ruijie-n18010",
}
POLLED = [n for n in recording_names() if n not in SKIPPED]
#: How many devices the all-recordings poll runs at once (snmpsim answers one request at a time).
POLL_CONCURRENCY = 8

#: Whole recordings (not cut to what the profiles read): the 52-port switch, more switches and
#: routers, every UPS-MIB UPS with line tables (three-phase ones among them) and the APC PDUs.
FULL = (
    "network/switch/zte-zxr10-5250",
    "network/switch/cisco-c3560",
    "network/switch/h3c-e528-2",
    "network/switch/ruijie-s5750-24gt12sfp",
    "network/router/huawei-s5720",
    "network/router/cisco-unmarked-0",
    "UPS/eaton-93e-80",
    "UPS/eastpower-istars-swv053",
    "UPS/ingrasys-power-switch",
    "UPS/phoenixtec-power",
    "UPS/huawei-gse200m",
    "UPS/apc-7902b",
    "UPS/apc-8641",
    "UPS/apc-8932",
)

#: The tests' own recordings (community = "netwatch-tests/<name>").
OWN = "netwatch-tests"
AUTH_KEY, PRIV_KEY = "auth-pass-4711", "priv-pass-0815"
V3_USERS = (
    V3User("sha-aes", "SHA", AUTH_KEY, "AES", PRIV_KEY),
    V3User("sha512-aes256", "SHA-512", AUTH_KEY, "AES-256", PRIV_KEY),
    V3User("md5-des", "MD5", AUTH_KEY, "DES", PRIV_KEY),
    V3User("sha384-aes192", "SHA-384", AUTH_KEY, "AES-192", PRIV_KEY),
    V3User("sha256-auth", "SHA-256", AUTH_KEY),
    V3User("plain"),
)

# The GBK bytes of "上联县局" (uplink to the county bureau), as Chinese switches store ifAlias.
GBK_ALIAS = "上联县局"


def _counters() -> str:
    """A device whose counters and uptime the tests set over SNMP (snmpsim's writecache): ifIndex 1
    has ifXTable HC counters (Counter64), ifIndex 2 only ifTable Counter32 ones."""
    w = "writecache"
    rows: dict[str, tuple[str, object]] = {
        "1.3.6.1.2.1.1.1.0": ("4", "netwatch counter bench"),
        "1.3.6.1.2.1.1.2.0": ("6", "1.3.6.1.4.1.8072.3.2.10"),
        "1.3.6.1.2.1.1.3.0": (f"67:{w}", "value=100000"),
        "1.3.6.1.2.1.1.5.0": ("4", "counter-bench"),
        "1.3.6.1.2.1.31.1.1.1.1.1": ("4", "GE0/0/1"),
        "1.3.6.1.2.1.31.1.1.1.6.1": (f"70:{w}", "value=1000"),
        "1.3.6.1.2.1.31.1.1.1.10.1": (f"70:{w}", "value=2000"),
        "1.3.6.1.2.1.31.1.1.1.15.1": ("66", "1000"),
        "1.3.6.1.2.1.31.1.1.1.18.1": ("4x", GBK_ALIAS.encode("gbk").hex()),
    }
    for i in (1, 2):
        rows[f"1.3.6.1.2.1.2.2.1.2.{i}"] = ("4", f"port {i}")
        rows[f"1.3.6.1.2.1.2.2.1.7.{i}"] = ("2", "1")
        rows[f"1.3.6.1.2.1.2.2.1.8.{i}"] = ("2", "1" if i == 1 else "2")
        for col in (13, 14, 19, 20):
            rows[f"1.3.6.1.2.1.2.2.1.{col}.{i}"] = (f"65:{w}", "value=0")
    rows["1.3.6.1.2.1.2.2.1.5.2"] = ("66", "100000000")
    rows["1.3.6.1.2.1.2.2.1.10.2"] = (f"65:{w}", "value=0")
    rows["1.3.6.1.2.1.2.2.1.16.2"] = (f"65:{w}", "value=0")
    return snmprec_lines(rows)


def _apc_ups() -> str:
    """An APC Smart-UPS as PowerNet-MIB describes it (no such recording ships with snmpsim-data):
    on battery, 11 minutes left, battery needs replacing."""
    return snmprec_lines(
        {
            "1.3.6.1.2.1.1.1.0": ("4", "APC Web/SNMP Management Card (MB:v4.1.0 PF:v6.7.2 MN:SMT1500)"),
            "1.3.6.1.2.1.1.2.0": ("6", "1.3.6.1.4.1.318.1.3.27"),
            "1.3.6.1.2.1.1.3.0": ("67", "123456"),
            "1.3.6.1.2.1.1.5.0": ("4", "ups-city"),
            "1.3.6.1.4.1.318.1.1.1.2.1.1.0": ("2", "2"),
            "1.3.6.1.4.1.318.1.1.1.2.2.1.0": ("66", "87"),
            "1.3.6.1.4.1.318.1.1.1.2.2.3.0": ("67", "66000"),
            "1.3.6.1.4.1.318.1.1.1.2.2.4.0": ("2", "2"),
            "1.3.6.1.4.1.318.1.1.1.3.2.1.0": ("66", "0"),
            "1.3.6.1.4.1.318.1.1.1.4.1.1.0": ("2", "3"),
            "1.3.6.1.4.1.318.1.1.1.4.2.3.0": ("66", "41"),
        }
    )


def _zte() -> str:
    """A ZTE ZXR10 with two units in ZXR10-MIB's unit table; unit 2 lacks the 5-minute column."""
    return snmprec_lines(
        {
            "1.3.6.1.2.1.1.1.0": ("4", "ZTE ZXR10 5250 Software"),
            "1.3.6.1.2.1.1.2.0": ("6", "1.3.6.1.4.1.3902.3.100.614"),
            "1.3.6.1.2.1.1.3.0": ("67", "500"),
            "1.3.6.1.2.1.1.5.0": ("4", "zte-lab"),
            "1.3.6.1.4.1.3902.3.3.1.1.5.1": ("2", "17"),
            "1.3.6.1.4.1.3902.3.3.1.1.5.2": ("2", "23"),
            "1.3.6.1.4.1.3902.3.3.1.1.12.1": ("2", "12"),
        }
    )


#: Text a hostile (or just odd) device puts where the CLIs print it: rich markup and an OSC 8 link.
HOSTILE_TEXT = "[/x][link=https://evil.example]x[/link][bold red]"
HOSTILE_ESC = "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"


def _hostile() -> str:
    """A device whose sysDescr, sysName and a string value carry markup and escape sequences."""
    return snmprec_lines(
        {
            "1.3.6.1.2.1.1.1.0": ("4", HOSTILE_TEXT),
            "1.3.6.1.2.1.1.2.0": ("6", "1.3.6.1.4.1.8072.3.2.10"),
            "1.3.6.1.2.1.1.3.0": ("67", "500"),
            "1.3.6.1.2.1.1.5.0": ("4x", HOSTILE_ESC.encode().hex()),
            "1.3.6.1.2.1.1.6.0": ("4", "room [link=https://evil.example]B2[/link]"),
        }
    )


OWN_RECORDINGS = {"counters": _counters, "apc-ups": _apc_ups, "zte": _zte, "hostile": _hostile}


@dataclass(frozen=True, slots=True)
class SimAgent:
    """The session's snmpsim: ``port``, and where the recordings it serves are."""

    service: Snmpsim
    recordings: RecordingSet

    @property
    def port(self) -> int:
        return self.service.port


async def poll_recordings(port: int, names: list[str], *, defaults: bool = False) -> dict[str, list[Sample]]:
    """One poll of each recording, all through the one snmpsim, several at a time (``defaults``:
    with the config's default timeout and GETBULK size instead of generous ones)."""
    gate = asyncio.Semaphore(POLL_CONCURRENCY)
    tuning = {} if defaults else {"request_timeout": "10s", "max_repetitions": 50}

    async def one(name: str) -> list[Sample]:
        cfg = SnmpConfig.model_validate({"host": "127.0.0.1", "port": port, "community": name, **tuning})
        probe = SnmpProbe(cfg, name=name, timeout_s=120)
        async with gate:
            try:
                return await probe.collect()
            finally:
                await probe.aclose()

    results = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, results, strict=True))


async def snmp_set(port: int, community: str, values: Mapping[str, object]) -> None:
    """SET values on the snmpsim device ``community`` (its writecache OIDs take them)."""
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        set_cmd,
    )

    engine = SnmpEngine()
    try:
        target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=5, retries=0)
        err, status, index, _ = await set_cmd(
            engine,
            CommunityData(community),
            target,
            ContextData(),
            *(ObjectType(ObjectIdentity(oid), value) for oid, value in values.items()),
            lookupMib=False,
        )
        assert not err and not status, f"SET on {community} failed: {err or status} at {index}"
    finally:
        engine.close_dispatcher()


def snmp_probe(port: int, community: str, *, name: str = "dev", timeout_s: float = 10.0, **kw: object) -> SnmpProbe:
    cfg = SnmpConfig.model_validate({"host": "127.0.0.1", "port": port, "community": community, **kw})
    return SnmpProbe(cfg, name=name, timeout_s=timeout_s)


def by_tag(samples: list[Sample], measurement: str, tag: str) -> dict[str, Sample]:
    return {s.tags[tag]: s for s in samples if s.measurement == measurement}


# -- counters the tests set between polls (the writecache device) --------------------

UPTIME = "1.3.6.1.2.1.1.3.0"
HC_IN1, HC_OUT1 = "1.3.6.1.2.1.31.1.1.1.6.1", "1.3.6.1.2.1.31.1.1.1.10.1"
IN2, OUT2 = "1.3.6.1.2.1.2.2.1.10.2", "1.3.6.1.2.1.2.2.1.16.2"
ERR_IN1 = "1.3.6.1.2.1.2.2.1.14.1"
TOP64 = 2**64
STEP_S = 60.0

#: (sysUpTime ticks, {oid: value}) per poll, STEP_S apart. What each step shows is in the test.
STEPS: list[tuple[int, dict[str, object]]] = [
    (100_000, {HC_IN1: Counter64(10_000), HC_OUT1: Counter64(20_000), IN2: Counter32(2**32 - 1000),
               OUT2: Counter32(500), ERR_IN1: Counter32(5)}),
    (106_000, {HC_IN1: Counter64(10_000 + 7_500_000), HC_OUT1: Counter64(20_000 + 750_000),
               IN2: Counter32(4000), OUT2: Counter32(500 + 75_000), ERR_IN1: Counter32(35)}),
    (3_000, {HC_IN1: Counter64(50), HC_OUT1: Counter64(70), IN2: Counter32(100), OUT2: Counter32(200),
             ERR_IN1: Counter32(0)}),
    (9_000, {HC_IN1: Counter64(50 + 750_000), HC_OUT1: Counter64(70 + 750_000), IN2: Counter32(100 + 7_500),
             OUT2: Counter32(200 + 7_500), ERR_IN1: Counter32(0)}),
    (15_000, {HC_IN1: Counter64(TOP64 - 1000), HC_OUT1: Counter64(70 + 1_500_000), IN2: Counter32(100 + 15_000),
              OUT2: Counter32(200 + 15_000), ERR_IN1: Counter32(0)}),
    (21_000, {HC_IN1: Counter64(7_499_000), HC_OUT1: Counter64(70 + 2_250_000), IN2: Counter32(50),
              OUT2: Counter32(200 + 22_500), ERR_IN1: Counter32(0)}),
    (27_000, {HC_IN1: Counter64(10), HC_OUT1: Counter64(70 + 3_000_000), IN2: Counter32(50 + 7_500),
              OUT2: Counter32(200 + 30_000), ERR_IN1: Counter32(0)}),
]  # fmt: skip


async def scenario_counter_steps(port: int) -> list[list[Sample]]:
    """Every step of STEPS, polled once; returns each poll's Samples."""
    community = f"{OWN}/counters"
    probe = snmp_probe(port, community, name="counter-bench")
    now = [1000.0]
    probe.poller.clock = lambda: now[0]
    polls = []
    try:
        for uptime, counters in STEPS:
            await snmp_set(port, community, {UPTIME: TimeTicks(uptime), **counters})
            polls.append(await probe.collect())
            now[0] += STEP_S
    finally:
        await probe.aclose()
    return polls
