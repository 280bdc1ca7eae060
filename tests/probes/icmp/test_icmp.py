"""ICMP probe against loopback in every mode this machine allows, plus loss in a private network
namespace where 127.0.0.2 is routed nowhere; statistics and ping parsing on recorded data."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import catalogue
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from probes import registry
from probes.entry import split_entry
from probes.icmp import probe as icmp
from probes.icmp.config import IcmpConfig
from probes.icmp.probe import IcmpProbe, detect_mode, parse_ping_output, rtt_stats
from probes.model import Sample

KIND = "icmp"
SAMPLE_YAML = Path(icmp.__file__).with_name("sample.yaml")


def _can_open(sock_type: int) -> bool:
    try:
        socket.socket(socket.AF_INET, sock_type, socket.IPPROTO_ICMP).close()
    except OSError:
        return False
    return True


AVAILABLE = {
    "datagram": _can_open(socket.SOCK_DGRAM),
    "raw": _can_open(socket.SOCK_RAW),
    "ping": shutil.which("ping") is not None,
}


def _probe(host: str = "127.0.0.1", *, timeout_s: float = 2.0, **kw: Any) -> IcmpProbe:
    cfg = {"host": host, "count": 3, "packet_interval": "50ms", "packet_timeout": "500ms", **kw}
    return IcmpProbe(IcmpConfig.model_validate(cfg), name=f"lo-{host}", timeout_s=timeout_s)


def _split(samples: list[Sample]) -> tuple[Sample | None, Sample]:
    data = [s for s in samples if s.measurement == "icmp"]
    status = [s for s in samples if s.measurement == "probe_status"]
    assert len(status) == 1, samples
    assert len(data) <= 1, samples
    return (data[0] if data else None), status[0]


def _assert_all_answered(samples: list[Sample], host: str = "127.0.0.1") -> None:
    data, status = _split(samples)
    assert status.fields["status"] == "ok", status.fields
    assert status.fields["error"] == ""
    assert data is not None
    assert data.tags == {"target": f"lo-{host}", "host": host}
    f = data.fields
    assert (f["sent"], f["received"], f["loss_pct"]) == (3, 3, 0.0)
    assert 0 < f["rtt_min_ms"] <= f["rtt_avg_ms"] <= f["rtt_max_ms"] < 100  # loopback: well under 100 ms
    assert 0 <= f["jitter_ms"] <= f["rtt_max_ms"] - f["rtt_min_ms"]


# --- statistics and parsing (recorded data) -----------------------------------------------------


def test_rtt_stats_from_recorded_rtts() -> None:
    stats = rtt_stats(5, [10.0, 12.0, 11.0])
    assert stats == {
        "sent": 5,
        "received": 3,
        "loss_pct": 40.0,
        "rtt_min_ms": 10.0,
        "rtt_avg_ms": 11.0,
        "rtt_max_ms": 12.0,
        "jitter_ms": 1.5,  # (|12-10| + |11-12|) / 2
    }


def test_rtt_stats_with_one_and_no_reply() -> None:
    one = rtt_stats(3, [7.5])
    assert (one["loss_pct"], one["rtt_avg_ms"], one["jitter_ms"]) == (100 * 2 / 3, 7.5, None)
    none = rtt_stats(3, [])
    assert none["loss_pct"] == 100.0
    assert none["rtt_min_ms"] is None and none["rtt_avg_ms"] is None and none["jitter_ms"] is None


@given(st.lists(st.floats(min_value=0.001, max_value=10_000), max_size=50), st.integers(0, 20))
def test_rtt_stats_properties(rtts: list[float], extra_lost: int) -> None:
    sent = len(rtts) + extra_lost
    stats = rtt_stats(sent, rtts)
    if sent == 0:
        assert stats["loss_pct"] is None
        return
    assert 0.0 <= stats["loss_pct"] <= 100.0
    assert stats["received"] == len(rtts)
    if rtts:
        assert stats["rtt_min_ms"] <= stats["rtt_avg_ms"] * (1 + 1e-9) and stats["rtt_avg_ms"] <= stats[
            "rtt_max_ms"
        ] * (1 + 1e-9)
    if len(rtts) >= 2:
        assert 0.0 <= stats["jitter_ms"] <= stats["rtt_max_ms"] - stats["rtt_min_ms"] + 1e-9
    else:
        assert stats["jitter_ms"] is None


# iputils-ping 20221126, captured on this project's dev machine (LC_ALL=C).
IPUTILS_OK = """\
PING 127.0.0.1 (127.0.0.1) 56(84) bytes of data.
64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.012 ms
64 bytes from 127.0.0.1: icmp_seq=2 ttl=64 time=0.037 ms
64 bytes from 127.0.0.1: icmp_seq=3 ttl=64 time=0.036 ms

--- 127.0.0.1 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 405ms
rtt min/avg/max/mdev = 0.012/0.028/0.037/0.011 ms
"""
# The same, in a network namespace where 127.0.0.2 is routed to nowhere.
IPUTILS_LOSS = """\
PING 127.0.0.2 (127.0.0.2) 56(84) bytes of data.

--- 127.0.0.2 ping statistics ---
3 packets transmitted, 0 received, 100% packet loss, time 208ms

"""
# BusyBox ping's format (seq from 0, "packets received"), with a duplicate and an ICMP error.
BUSYBOX_MIXED = """\
PING 10.0.0.1 (10.0.0.1): 56 data bytes
64 bytes from 10.0.0.1: seq=0 ttl=64 time=1.250 ms
64 bytes from 10.0.0.1: seq=0 ttl=64 time=9.999 ms (DUP!)
From 10.0.0.254 icmp_seq=1 Destination Host Unreachable
64 bytes from 10.0.0.1: seq=2 ttl=64 time=2.750 ms

--- 10.0.0.1 ping statistics ---
4 packets transmitted, 2 packets received, +1 duplicates, 50% packet loss
round-trip min/avg/max = 1.250/2.000/2.750 ms
"""


def test_parse_iputils_output() -> None:
    run = parse_ping_output(IPUTILS_OK)
    assert run.sent == 3
    assert run.ordered_rtts() == [0.012, 0.037, 0.036]
    assert run.error == ""
    loss = parse_ping_output(IPUTILS_LOSS)
    assert (loss.sent, loss.rtts_ms) == (3, {})


def test_parse_busybox_output_skips_duplicates_and_keeps_the_error() -> None:
    run = parse_ping_output(BUSYBOX_MIXED)
    assert run.sent == 4
    assert run.ordered_rtts() == [1.25, 2.75]
    assert run.error == "Destination Host Unreachable"
    stats = rtt_stats(run.sent, run.ordered_rtts())
    assert (stats["loss_pct"], stats["jitter_ms"]) == (50.0, 1.5)


# --- mode detection -------------------------------------------------------------------------------


def test_detect_mode_picks_the_first_allowed_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    detect_mode.cache_clear()
    with caplog.at_level(logging.INFO, logger="probes.icmp.probe"):
        first = detect_mode()
        again = detect_mode()
    expected = "datagram" if AVAILABLE["datagram"] else "raw" if AVAILABLE["raw"] else "ping-binary"
    assert first == again == expected
    records = [r for r in caplog.records if r.name == "probes.icmp.probe"]
    assert len(records) == 1
    assert f"ICMP mode: {expected}" in records[0].getMessage()


def test_ping_group_range_is_read_from_proc() -> None:
    rng = icmp.ping_group_range()
    assert rng is not None
    with open("/proc/sys/net/ipv4/ping_group_range", encoding="ascii") as f:
        assert rng == tuple(int(x) for x in f.read().split())


# --- real echo on loopback, each mode this machine allows --------------------------------------------


@pytest.mark.parametrize("mode", ["raw", "ping"])
async def test_ping_loopback_in_mode(mode: str) -> None:
    # The test command installs iputils-ping and runs as root; elsewhere say what is missing.
    assert AVAILABLE[mode], f"{mode} ICMP is not available to this process (root / CAP_NET_RAW, iputils-ping)"
    samples = await _probe(mode=mode).collect()
    _assert_all_answered(samples)
    assert _probe(mode=mode).mode() == {"raw": "raw", "ping": "ping-binary"}[mode]


async def test_auto_mode_pings_other_loopback_addresses_and_localhost() -> None:
    _assert_all_answered(await _probe("127.0.0.9").collect(), "127.0.0.9")
    _assert_all_answered(await _probe("localhost").collect(), "localhost")  # /etc/hosts, no DNS


async def test_forced_datagram_mode_works_or_reports_how_to_fix_it() -> None:
    # Whether this process may open ICMP datagram sockets depends on ping_group_range; the
    # namespace test below covers the allowed case for certain.
    samples = await _probe(mode="datagram").collect()
    if AVAILABLE["datagram"]:
        _assert_all_answered(samples)
        return
    data, status = _split(samples)
    assert data is None
    assert status.fields["status"] == "down"
    assert "ping_group_range" in status.fields["error"] and "mode: auto" in status.fields["error"]


async def test_budget_shorter_than_the_burst_ends_early_as_degraded() -> None:
    # 10 requests 200 ms apart need ~1.8 s; the scheduler gives 1 s. The probe must answer
    # by itself (no cancellation), with what it sent so far.
    probe = _probe(count=10, packet_interval="200ms", timeout_s=1.0)
    samples = await asyncio.wait_for(probe.collect(), 1.0)
    data, status = _split(samples)
    assert data is not None
    assert 3 <= data.fields["sent"] < 10
    assert data.fields["received"] == data.fields["sent"]
    assert status.fields["status"] == "degraded"
    assert f"only {data.fields['sent']} of 10 sent within the 0.9 s budget" in status.fields["error"]
    assert "lost" not in status.fields["error"]


# --- a private network namespace: datagram sockets allowed, 127.0.0.2 unanswered ---------------------

_NETNS_SETUP = " && ".join(
    [
        "ip link set lo up",
        # Only inside this namespace: let every gid open ICMP datagram sockets.
        "echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range",
        # 127.0.0.2 stops being local: it is routed out of lo and nobody answers.
        "ip route del local 127.0.0.0/8 dev lo table local",
        "ip route add 127.0.0.2/32 dev lo",
    ]
)
_NETNS_CHILD = """
import asyncio, json, sys
from probes.icmp.config import IcmpConfig
from probes.icmp.probe import IcmpProbe, detect_mode

async def main():
    out = {"mode": detect_mode(), "runs": []}
    for host, mode in json.loads(sys.argv[1]):
        cfg = IcmpConfig(host=host, count=3, packet_interval="50ms", packet_timeout="300ms", mode=mode)
        samples = await IcmpProbe(cfg, name=f"lo-{host}", timeout_s=2).collect()
        out["runs"].append({"host": host, "mode": mode, "samples": [s.to_dict() for s in samples]})
    print(json.dumps(out))

asyncio.run(main())
"""


def _netns_runs() -> list[tuple[str, str]]:
    runs = [("127.0.0.1", "auto"), ("127.0.0.2", "auto"), ("127.0.0.2", "raw")]
    if AVAILABLE["ping"]:
        runs.append(("127.0.0.2", "ping"))
    return runs


@pytest.fixture(scope="module")
def netns() -> dict[str, Any]:
    """One child process in a fresh network namespace running the scenarios of ``_netns_runs``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip to make a private network namespace")
    cmd = ["unshare", "--net", "sh", "-c", f'{_NETNS_SETUP} && exec "$0" -c "$1" "$2"']
    cmd += [sys.executable, _NETNS_CHILD, json.dumps(_netns_runs())]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=Path(icmp.__file__).parents[2])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _netns_samples(netns: dict[str, Any], host: str, mode: str) -> list[Sample]:
    run = next(r for r in netns["runs"] if (r["host"], r["mode"]) == (host, mode))
    return [Sample.from_dict(d) for d in run["samples"]]


def test_datagram_mode_in_a_namespace_that_allows_it(netns: dict[str, Any]) -> None:
    assert netns["mode"] == "datagram"
    _assert_all_answered(_netns_samples(netns, "127.0.0.1", "auto"))


@pytest.mark.parametrize("mode", ["auto", "raw", "ping"])
def test_unanswered_target_is_total_loss_and_down(netns: dict[str, Any], mode: str) -> None:
    if mode == "ping" and not AVAILABLE["ping"]:
        pytest.skip("no ping binary on this machine")
    data, status = _split(_netns_samples(netns, "127.0.0.2", mode))
    assert data is not None
    assert data.fields == {"sent": 3, "received": 0, "loss_pct": 100.0}
    assert status.fields["status"] == "down"
    assert "no reply to 3 echo requests" in status.fields["error"]


# --- config ---------------------------------------------------------------------------------------


def test_sample_yaml_validates() -> None:
    common, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    assert common["type"] == "icmp" and registry.get("icmp") is IcmpProbe
    cfg = IcmpProbe.config_model.model_validate(own)
    assert (cfg.count, cfg.packet_interval, cfg.packet_timeout, cfg.mode) == (5, 0.2, 1.0, "auto")


@pytest.mark.parametrize(("key", "bad"), [("count", 0), ("mode", "icmp"), ("packet_timeout", "soon"), ("size", 4096)])
def test_bad_sample_value_names_the_key(key: str, bad: Any) -> None:
    _, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    with pytest.raises(ValidationError) as e:
        IcmpConfig.model_validate({**own, key: bad})
    assert [err["loc"] for err in e.value.errors()] == [(key,)]


def test_per_poll_keys_are_not_packet_keys() -> None:
    # interval/timeout belong to the agent; given to the probe they are refused, not misread.
    with pytest.raises(ValidationError) as e:
        IcmpConfig.model_validate({"host": "127.0.0.1", "interval": "1s"})
    assert e.value.errors()[0]["loc"] == ("interval",)


# --- catalogue ------------------------------------------------------------------------------------


async def test_catalogue_both_ways() -> None:
    samples = await _probe().collect()  # all answered: every field
    samples += await _probe(count=10, packet_interval="200ms", timeout_s=0.5).collect()  # cut short
    samples += await _probe(mode="ping" if AVAILABLE["ping"] else "raw").collect()
    catalogue.assert_both_ways("icmp", samples)


def test_readme_has_the_sections_the_sample_and_every_field() -> None:
    catalogue.assert_readme_current(KIND)
