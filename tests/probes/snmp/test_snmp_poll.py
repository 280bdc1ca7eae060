"""The poller against an in-memory session: the cap on requests in flight, partial failures and a
slow device as degraded (with what was read kept), the first GET failing as down, and the session
factory the fast path will plug into."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from snmp_peers import by_tag

from probes.model import Sample
from probes.snmp.config import SnmpConfig
from probes.snmp.connect import open_session
from probes.snmp.probe import SnmpProbe
from probes.snmp.pysnmp_session import PysnmpSession
from probes.snmp.session import (
    SnmpAuthError,
    SnmpError,
    SnmpSession,
    SnmpTimeout,
    VarBind,
)

SYSTEM: dict[str, tuple[str, object]] = {
    "1.3.6.1.2.1.1.1.0": ("OctetString", b"fake switch"),
    "1.3.6.1.2.1.1.2.0": ("ObjectIdentifier", "1.3.6.1.4.1.2011.2.23.276"),
    "1.3.6.1.2.1.1.3.0": ("TimeTicks", 12345),
    "1.3.6.1.2.1.1.5.0": ("OctetString", b"fake"),
}
IF_ROWS = {f"1.3.6.1.2.1.2.2.1.{col}.{i}": ("Integer", 1) for col in (7, 8) for i in (1, 2, 3)} | {
    f"1.3.6.1.2.1.31.1.1.1.6.{i}": ("Counter64", 1000 * i) for i in (1, 2, 3)
}

IF_ALIASES = {
    "1.3.6.1.2.1.31.1.1.1.18.1": ("OctetString", b"uplink"),
    "1.3.6.1.2.1.31.1.1.1.18.3": ("OctetString", b"ap-3"),
}


class FakeSession:
    """Answers from a dict; can fail or stall chosen walks, and records concurrency."""

    def __init__(
        self,
        values: dict[str, tuple[str, object]],
        *,
        fail: Sequence[str] = (),
        stall: Sequence[str] = (),
        get_fails: bool = False,
        delay: float = 0.0,
    ) -> None:
        self.values = values
        self.fail, self.stall, self.get_fails, self.delay = set(fail), set(stall), get_fails, delay
        self.in_flight = self.max_in_flight = 0
        self.walked: list[str] = []

    async def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)

    async def get(self, oids: Sequence[str]) -> list[VarBind]:
        await self._enter()
        try:
            if self.get_fails:
                raise SnmpTimeout("127.0.0.1:161: no response in 1 s after 1 retry (SNMPv2c) — check")
            return [(o, *self.values[o]) if o in self.values else (o, "NoSuchObject", None) for o in oids]
        finally:
            self.in_flight -= 1

    async def walk(self, base_oid: str, *, max_repetitions: int) -> list[VarBind]:
        await self._enter()
        try:
            self.walked.append(base_oid)
            if base_oid in self.fail:
                raise SnmpError(f"127.0.0.1:161: GETBULK answered genErr at {base_oid}")
            if base_oid in self.stall:
                await asyncio.sleep(3600)
            return [(o, *v) for o, v in self.values.items() if o.startswith(base_oid + ".")]
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        pass


def poll_with(session: FakeSession, *, timeout_s: float = 5.0, **cfg: object) -> list[Sample]:
    config = SnmpConfig.model_validate({"host": "127.0.0.1", "community": "public", **cfg})
    probe = SnmpProbe(config, name="fake", timeout_s=timeout_s)

    async def main() -> list[Sample]:
        probe._session, probe._loop = session, asyncio.get_running_loop()  # the transport under test
        return await probe.collect()

    return asyncio.run(main())


def test_the_fake_session_satisfies_the_transport_interface() -> None:
    assert isinstance(FakeSession({}), SnmpSession)


def test_requests_in_flight_stay_under_the_cap() -> None:
    session = FakeSession(SYSTEM | IF_ROWS, delay=0.01)
    samples = poll_with(session, max_in_flight=3)
    assert samples[-1].fields["status"] == "ok"
    assert session.max_in_flight == 3 and len(session.walked) > 10
    assert len(by_tag(samples, "interface", "ifindex")) == 3


def test_a_failed_walk_is_degraded_and_the_rest_is_kept() -> None:
    session = FakeSession(SYSTEM | IF_ROWS, fail=["1.3.6.1.2.1.2.2.1.8"])
    samples = poll_with(session)
    st = samples[-1].fields
    assert st["status"] == "degraded"
    assert st["error"] == (
        "device fake: walk of 1.3.6.1.2.1.2.2.1.8 failed: 127.0.0.1:161: GETBULK answered genErr at 1.3.6.1.2.1.2.2.1.8"
    )
    ifaces = by_tag(samples, "interface", "ifindex")
    assert set(ifaces) == {"1", "2", "3"} and "oper_status" not in ifaces["1"].fields
    assert ifaces["2"].fields["in_octets"] == 2000


def test_a_poll_cut_short_on_a_paced_device_says_the_device_is_slow() -> None:
    session = FakeSession(SYSTEM | IF_ROWS, stall=["1.3.6.1.2.1.31.1.1.1.6"])
    config = SnmpConfig.model_validate({"host": "127.0.0.1", "community": "public"})
    probe = SnmpProbe(config, name="fake", timeout_s=1.0)
    pacing = probe.poller.adaptive
    pacing.answered(1.2)  # a slow device, already backed off to one request in flight
    pacing.timed_out(pacing.epoch)
    pacing.timed_out(pacing.epoch)

    async def main() -> list[Sample]:
        probe._session, probe._loop = session, asyncio.get_running_loop()
        return await probe.collect()

    st = asyncio.run(main())[-1].fields
    assert st["status"] == "degraded" and st["in_flight"] == 1 and st["rtt_ms"] == 1200.0
    assert "the device is slow (round trip 1.2 s, 1 in flight, see adapted): raise the entry's timeout" in st["error"]
    assert st["adapted"].startswith("slow device: 1 request in flight (configured 4)")


def test_a_walk_that_never_ends_is_cut_at_the_budget() -> None:
    """The stalled counter walk holds the first round to the end of the budget, so the name walks
    that follow are cut too: the rows keep the names read on the poll before (see
    test_snmp_counters for names over real SNMP, and for a device polled for the first time)."""
    session = FakeSession(SYSTEM | IF_ALIASES | IF_ROWS)
    config = SnmpConfig.model_validate({"host": "127.0.0.1", "community": "public"})
    probe = SnmpProbe(config, name="fake", timeout_s=1.0)

    async def main() -> list[Sample]:
        probe._session, probe._loop = session, asyncio.get_running_loop()
        await probe.collect()
        session.stall.add("1.3.6.1.2.1.31.1.1.1.6")
        return await probe.collect()

    samples = asyncio.run(main())
    st = samples[-1].fields
    assert st["status"] == "degraded" and "unfinished when the poll's time ran out" in st["error"]
    assert st["duration_ms"] < 1000 and st["rows_withheld"] == 0
    ifaces = by_tag(samples, "interface", "ifindex")
    assert set(ifaces) == {"1", "2", "3"} and "in_octets" not in ifaces["1"].fields
    assert {k: s.tags.get("ifalias") for k, s in ifaces.items()} == {"1": "uplink", "2": None, "3": "ap-3"}
    assert "snmp_system" in {s.measurement for s in samples}


def test_no_answer_to_the_first_get_is_down_with_nothing_else() -> None:
    samples = poll_with(FakeSession(SYSTEM, get_fails=True))
    assert [s.measurement for s in samples] == ["probe_status"]
    assert samples[0].fields["status"] == "down"
    assert samples[0].fields["error"].startswith("device fake: 127.0.0.1:161: no response in 1 s")


def test_the_session_factory_fast_path_for_v1_v2c_pysnmp_for_v3() -> None:
    from probes.snmp.fastwalk import FastSession

    for raw, kind in (
        ({"community": "public", "version": "1"}, FastSession),
        ({"community": "public"}, FastSession),
        ({"version": 3, "user": "u", "auth_proto": "SHA", "auth_key": "12345678"}, PysnmpSession),
    ):
        session = open_session(SnmpConfig.model_validate({"host": "10.0.0.1", **raw}))
        assert isinstance(session, kind) and isinstance(session, SnmpSession)
        assert "12345678" not in repr(session) and "public" not in repr(session)
    with pytest.raises(SnmpAuthError, match="NO_SUCH_COMMUNITY_VAR"):
        open_session(
            SnmpConfig.model_validate(
                {"host": "10.0.0.1", "community_env": "NO_SUCH_COMMUNITY_VAR"}, context={"skip_file_checks": True}
            )
        )


@pytest.mark.parametrize("interfaces", [{"include": "^GE"}, {"exclude": "^(NULL|InLoop)"}])
def test_interface_filter_applies_to_ifname(interfaces: dict[str, str]) -> None:
    names = {
        "1.3.6.1.2.1.31.1.1.1.1.1": b"GE0/0/1",
        "1.3.6.1.2.1.31.1.1.1.1.2": b"NULL0",
        "1.3.6.1.2.1.31.1.1.1.1.3": b"InLoopBack0",
    }
    values = SYSTEM | IF_ROWS | {o: ("OctetString", v) for o, v in names.items()}
    samples = poll_with(FakeSession(values), interfaces=interfaces)
    assert set(by_tag(samples, "interface", "ifname")) == {"GE0/0/1"}
