"""Counter maths over real SNMP: a device whose counters and sysUpTime the test sets between polls
(snmpsim's writecache) — HC and 32-bit counters, Counter32 and Counter64 wrap, resets, a reboot —
polled with a clock the test moves; a device whose counters climb by themselves (snmpsim's
numeric variation), polled with the real clock; and interface names kept from poll to poll when
the name walks go unanswered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from snmp_peers import GBK_ALIAS, OWN, STEP_S, SimAgent, by_tag, snmp_probe
from snmp_slow import SlowProxy

from configs.demo import sim_snmp
from probes.model import Sample


def _ifaces(samples: list[Sample]) -> dict[str, dict[str, object]]:
    assert samples[-1].fields["status"] == "ok", samples[-1].fields["error"]
    return {k: dict(s.fields) for k, s in by_tag(samples, "interface", "ifindex").items()}


def test_first_poll_keeps_raw_counters_and_has_no_rates_yet(counter_steps: list[list[Sample]]) -> None:
    i = _ifaces(counter_steps[0])
    assert i["1"]["in_octets"] == 10_000 and i["1"]["out_octets"] == 20_000  # ifHC (Counter64)
    assert i["2"]["in_octets"] == 2**32 - 1000  # ifTable only: the Counter32
    assert i["1"]["speed_mbps"] == 1000.0 and i["2"]["speed_mbps"] == 100.0  # ifHighSpeed / ifSpeed
    for f in ("in_bps", "out_bps", "util_in_pct", "in_errors_per_s"):
        assert f not in i["1"] and f not in i["2"]


def test_rates_hc_counters_and_counter32_wrap(counter_steps: list[list[Sample]]) -> None:
    i = _ifaces(counter_steps[1])
    assert i["1"]["in_bps"] == pytest.approx(7_500_000 * 8 / STEP_S)  # 1 Mb/s
    assert i["1"]["out_bps"] == pytest.approx(750_000 * 8 / STEP_S)
    assert i["1"]["util_in_pct"] == pytest.approx(0.1)  # of ifHighSpeed 1000 Mb/s
    assert i["1"]["in_errors_per_s"] == pytest.approx(0.5)
    # 2^32 - 1000 -> 4000: the Counter32 wrapped; 5000 octets went by.
    assert i["2"]["in_bps"] == pytest.approx(5000 * 8 / STEP_S)
    assert i["2"]["util_in_pct"] == pytest.approx(5000 * 8 / STEP_S / 100e6 * 100)  # of ifSpeed 100 Mb/s
    assert i["2"]["out_bps"] == pytest.approx(75_000 * 8 / STEP_S)


def test_reboot_sysuptime_going_back_gives_no_spike(counter_steps: list[list[Sample]]) -> None:
    i = _ifaces(counter_steps[2])
    assert i["1"]["in_octets"] == 50 and i["2"]["in_octets"] == 100  # raw counters still reported
    for idx in ("1", "2"):
        assert not [f for f in i[idx] if f.endswith(("_bps", "_per_s", "_pct"))], i[idx]
    after = _ifaces(counter_steps[3])  # the next poll measures from the post-reboot baseline
    assert after["1"]["in_bps"] == pytest.approx(750_000 * 8 / STEP_S)
    assert after["2"]["in_bps"] == pytest.approx(7_500 * 8 / STEP_S)


def test_counter64_wrap_and_reset(counter_steps: list[list[Sample]]) -> None:
    jump = _ifaces(counter_steps[4])  # 750 050 -> 2^64 - 1000 in a minute: far past 2 × 1000 Mb/s, dropped
    assert "in_bps" not in jump["1"] and jump["1"]["out_bps"] == pytest.approx(750_000 * 8 / STEP_S)
    wrapped = _ifaces(counter_steps[5])  # 2^64 - 1000 -> 7 499 000: a Counter64 wrap of 7.5 MB
    assert wrapped["1"]["in_bps"] == pytest.approx(7_500_000 * 8 / STEP_S)
    # A Counter32 going down that would mean ~572 Mb/s on a 100 Mb/s port: a reset, not a wrap.
    assert "in_bps" not in wrapped["2"] and wrapped["2"]["out_bps"] == pytest.approx(7_500 * 8 / STEP_S)
    reset = _ifaces(counter_steps[6])  # 7 499 000 -> 10, from the lower half: cleared counters
    assert "in_bps" not in reset["1"] and reset["1"]["out_bps"] == pytest.approx(750_000 * 8 / STEP_S)
    assert reset["2"]["in_bps"] == pytest.approx(7_500 * 8 / STEP_S)


def test_tags_and_enums(counter_steps: list[list[Sample]]) -> None:
    tags = {k: dict(s.tags) for k, s in by_tag(counter_steps[0], "interface", "ifindex").items()}
    assert tags["1"] == {"device": "counter-bench", "ifindex": "1", "ifname": "GE0/0/1", "ifalias": GBK_ALIAS}
    assert tags["2"] == {"device": "counter-bench", "ifindex": "2", "ifname": "port 2"}  # ifDescr, no alias
    i = _ifaces(counter_steps[0])
    assert (i["2"]["oper_status"], i["2"]["oper_status_name"]) == (2, "down")
    assert (i["1"]["admin_status"], i["1"]["admin_status_name"]) == (1, "up")


async def scenario_moving(port: int) -> list[Sample]:
    """Two polls of the demo's moving switch, 1.5 s apart on the real clock."""
    probe = snmp_probe(port, sim_snmp.MOVING_SWITCH, name="lab-switch")
    try:
        await probe.collect()
        await asyncio.sleep(1.5)
        return await probe.collect()
    finally:
        await probe.aclose()


def test_counters_that_move_by_themselves(snmpsim: SimAgent) -> None:
    samples = asyncio.run(scenario_moving(snmpsim.port))
    i = _ifaces(samples)
    # numeric variation: octets grow by `rate` per second (30 Mb/s in, 10 Mb/s out; 94 Mb/s on port 2)
    assert i["1"]["in_bps"] == pytest.approx(30e6, rel=0.1)
    assert i["1"]["out_bps"] == pytest.approx(10e6, rel=0.1)
    assert i["1"]["util_in_pct"] == pytest.approx(30, rel=0.1)
    assert i["2"]["util_in_pct"] == pytest.approx(94, rel=0.1)
    assert 0 <= i["1"]["in_errors_per_s"] <= 2


# -- names when their walks go unanswered ---------------------------------------------------------

IF_NAME, IF_DESCR = "1.3.6.1.2.1.31.1.1.1.1", "1.3.6.1.2.1.2.2.1.2"


def ber_oid(oid: str) -> bytes:
    """The content octets of an OID in BER (X.690 8.19), written out here rather than taken from
    the probe's codec."""
    arcs = [int(a) for a in oid.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        septets = [arc & 0x7F]
        arc >>= 7
        while arc:
            septets.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(septets))
    return bytes(out)


def asks_for(*columns: str) -> Callable[[bytes], bool]:
    """Matches a request naming an OID in one of ``columns`` (the column itself, as a walk's first
    GETBULK does, or a row of it): an OBJECT IDENTIFIER (tag 06) at least as long as the column
    whose content starts with the column's."""
    encoded = [ber_oid(c) for c in columns]

    def match(data: bytes) -> bool:
        for col in encoded:
            i = data.find(col)
            while i >= 2:
                if data[i - 2] == 0x06 and data[i - 1] >= len(col):
                    return True
                i = data.find(col, i + 1)
        return False

    return match


def _names(samples: list[Sample]) -> dict[str, str | None]:
    return {k: s.tags.get("ifname") for k, s in by_tag(samples, "interface", "ifindex").items()}


def test_names_are_kept_when_their_walks_go_unanswered(snmpsim: SimAgent) -> None:
    """A proxy answers the counters but swallows the ifName walk, then ifName and ifDescr: the rows
    keep the names read in full on the earlier poll (not ifDescr's "port 1" standing in for the
    unread ifName "GE0/0/1", not the bare ifIndex), so no second series starts. A probe that never
    read them leaves the rows out and counts them in probe_status."""
    proxy = SlowProxy(snmpsim.port, delay_s=0.0)
    community = f"{OWN}/counters"
    # from the recording (snmp_peers._counters): ifName of ifIndex 1; ifIndex 2 has only ifDescr
    want = {"1": "GE0/0/1", "2": "port 2"}
    quick = {"request_timeout": "200ms", "retries": 0}

    async def polls() -> list[list[Sample]]:
        probe = snmp_probe(proxy.port, community, name="counter-bench", **quick)
        fresh = snmp_probe(proxy.port, community, name="counter-bench", **quick)
        try:
            out = [await probe.collect()]
            proxy.withhold = asks_for(IF_NAME)
            out.append(await probe.collect())
            proxy.withhold = asks_for(IF_NAME, IF_DESCR)
            out.append(await probe.collect())
            out.append(await fresh.collect())  # the same device, nothing remembered
            return out
        finally:
            await probe.aclose()
            await fresh.aclose()

    try:
        full, no_ifname, no_names, never = asyncio.run(polls())
    finally:
        proxy.close()
    assert proxy.withheld == 1 + 2 + 2  # each unanswered walk is one request (retries 0)
    st = full[-1].fields
    assert (st["status"], st["rows_withheld"]) == ("ok", 0), st["error"]
    assert _names(full) == want
    for cut in (no_ifname, no_names):
        st = cut[-1].fields
        assert st["status"] == "degraded" and f"walk of {IF_NAME} failed" in st["error"], st["error"]
        assert st["rows_withheld"] == 0
        assert _names(cut) == want
        ifaces = by_tag(cut, "interface", "ifindex")
        assert ifaces["1"].tags["ifalias"] == GBK_ALIAS and "in_octets" in ifaces["1"].fields
    st = never[-1].fields
    assert (st["status"], st["rows_withheld"]) == ("degraded", 2)
    assert (
        "2 interface rows left out: ifname not read this poll and not known from an earlier one"
        " (without it a row would start a second series)"
    ) in st["error"]
    assert _names(never) == {}
