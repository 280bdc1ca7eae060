"""Counter maths over real SNMP: a device whose counters and sysUpTime the test sets between polls
(snmpsim's writecache) — HC and 32-bit counters, Counter32 and Counter64 wrap, resets, a reboot —
polled with a clock the test moves; and a device whose counters climb by themselves (snmpsim's
numeric variation), polled with the real clock."""

from __future__ import annotations

import asyncio

import pytest
from snmp_peers import GBK_ALIAS, STEP_S, SimAgent, by_tag, snmp_probe

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
