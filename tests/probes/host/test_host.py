"""Host probe on this machine, checked against psutil and os directly; rates with real loopback
traffic between polls; clock offset through stand-in chronyc/timedatectl/ntpq on PATH."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import catalogue
import psutil
import pytest
import yaml
from pydantic import ValidationError

from probes import registry
from probes.entry import split_entry
from probes.host import probe as host
from probes.host.config import PSEUDO_FSTYPES, HostConfig
from probes.host.probe import CounterReading, HostProbe, counter_rates, cpu_percentages
from probes.host.timesync import parse_chronyc_tracking, parse_ntpq_peers, parse_timedatectl_timesync
from probes.model import Sample

KIND = "host"
SAMPLE_YAML = Path(host.__file__).with_name("sample.yaml")
CAT = shutil.which("cat")  # found now: the stand-ins run with a PATH that has only themselves

# Representative outputs, written from each tool's documented format (no daemon runs on the
# dev machine to capture from).
CHRONYC_SYNCED = """\
Reference ID    : C0A80001 (192.168.0.1)
Stratum         : 3
Ref time (UTC)  : Tue Nov 24 21:00:00 2026
System time     : 0.000012345 seconds fast of NTP time
Last offset     : +0.000004567 seconds
RMS offset      : 0.000023456 seconds
Frequency       : 1.234 ppm slow
Residual freq   : +0.001 ppm
Skew            : 0.012 ppm
Root delay      : 0.001234567 seconds
Root dispersion : 0.000345678 seconds
Update interval : 64.2 seconds
Leap status     : Normal
"""
CHRONYC_UNSYNCED = """\
Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds slow of NTP time
Last offset     : +0.000000000 seconds
Leap status     : Not synchronised
"""
TIMEDATECTL = """\
       Server: 192.168.0.1 (ntp.county.example)
Poll interval: 34min 8s (min: 32s; max 34min 8s)
         Leap: normal
      Version: 4
      Stratum: 2
    Reference: C0A80001
    Precision: 1us (-25)
Root distance: 1.234ms (max: 5s)
       Offset: -1.234ms
        Delay: 2.345ms
       Jitter: 0.567ms
 Packet count: 42
    Frequency: +12.345ppm
"""
NTPQ = """\
     remote           refid      st t when poll reach   delay   offset  jitter
==============================================================================
+192.168.0.2     192.168.0.1      2 u   12   64  377    0.789    0.234   0.067
*192.168.0.1     .GPS.            1 u   33   64  377    0.456   -0.123   0.045
"""


def _probe(timeout_s: float = 5.0, **kw: Any) -> HostProbe:
    return HostProbe(HostConfig.model_validate(kw), name="node", timeout_s=timeout_s)


def _by(samples: list[Sample], measurement: str) -> list[Sample]:
    return [s for s in samples if s.measurement == measurement]


def _status(samples: list[Sample]) -> dict[str, Any]:
    (st,) = _by(samples, "probe_status")
    return dict(st.fields)


def _loopback_traffic(n_bytes: int) -> None:
    """Push ``n_bytes`` through lo over a real TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as srv, socket.create_connection(srv.getsockname()) as c:
        peer, _ = srv.accept()
        with peer:
            c.sendall(b"x" * n_bytes)
            got = 0
            while got < n_bytes:
                got += len(peer.recv(65536))


@pytest.fixture
def no_time_daemons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with no chronyc/timedatectl/ntpq: what a bare node has."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def _stand_in(bin_dir: Path, name: str, output: str) -> None:
    """An executable called ``name`` that prints ``output``, as the real client would."""
    (bin_dir / f"{name}.out").write_text(output)
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\nexec {CAT} '{bin_dir / (name + '.out')}'\n")
    script.chmod(0o755)


# --- scenarios -----------------------------------------------------------------------------------


async def scenario_two_polls(traffic: int = 200_000) -> tuple[list[Sample], list[Sample]]:
    probe = _probe(per_cpu=True, interfaces={"include": ["lo"]})
    first = await probe.collect()
    _loopback_traffic(traffic)
    time.sleep(0.05)
    second = await probe.collect()
    return first, second


async def scenario_chrony(bin_dir: Path) -> list[Sample]:
    _stand_in(bin_dir, "chronyc", CHRONYC_SYNCED)
    return await _probe(include=["time"]).collect()


async def test_values_match_psutil_and_os(no_time_daemons: Path) -> None:
    first, second = await scenario_two_polls()
    for samples in (first, second):
        assert _status(samples)["status"] == "ok", _status(samples)
        assert all(s.tags["target"] == "node" for s in samples)

    (mem,) = _by(second, "host_memory")
    vm = psutil.virtual_memory()
    assert mem.fields["total_bytes"] == vm.total == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < mem.fields["available_bytes"] <= mem.fields["total_bytes"]
    assert mem.fields["used_pct"] == pytest.approx(vm.percent, abs=2.0)

    (swap,) = _by(second, "host_swap")
    assert swap.fields["total_bytes"] == psutil.swap_memory().total

    (system,) = _by(second, "host_system")
    assert system.fields["cpu_count"] == os.cpu_count()
    assert system.fields["boot_time_s"] == int(psutil.boot_time())
    assert system.fields["uptime_s"] == pytest.approx(time.time() - psutil.boot_time(), abs=5)
    assert system.fields["load1"] == pytest.approx(os.getloadavg()[0], abs=1.0)
    assert system.fields["process_count"] >= 1

    cpus = {s.tags["cpu"]: s.fields for s in _by(second, "host_cpu")}
    assert set(cpus) == {"total"} | {f"cpu{i}" for i in range(psutil.cpu_count())}
    for f in cpus.values():
        assert 0.0 <= f["usage_pct"] <= 100.0
        parts = f["user_pct"] + f["system_pct"] + f["idle_pct"] + f["iowait_pct"] + f["steal_pct"]
        assert parts <= 100.0 + 1e-6
        assert f["usage_pct"] == pytest.approx(100.0 - f["idle_pct"] - f["iowait_pct"], abs=1e-6)


async def test_disks_cover_real_mounts_and_skip_pseudo_filesystems(no_time_daemons: Path) -> None:
    samples = await _probe(include=["disk"]).collect()
    disks = {s.tags["mount"]: s for s in _by(samples, "host_disk")}
    assert "/" in disks
    root = disks["/"]
    usage = psutil.disk_usage("/")
    assert root.fields["total_bytes"] == usage.total
    assert root.fields["used_pct"] == pytest.approx(usage.percent, abs=0.5)
    assert root.tags["fstype"] == next(p.fstype for p in psutil.disk_partitions(all=True) if p.mountpoint == "/")
    assert root.fields["inodes_total"] == os.statvfs("/").f_files
    assert not {s.tags["fstype"] for s in disks.values()} & set(PSEUDO_FSTYPES)
    assert "/proc" not in disks and "/sys" not in disks


async def test_network_counters_and_rates_see_loopback_traffic(no_time_daemons: Path) -> None:
    traffic = 300_000
    first, second = await scenario_two_polls(traffic)
    (lo1,) = _by(first, "host_net")
    (lo2,) = _by(second, "host_net")
    assert lo1.tags == {"target": "node", "interface": "lo"}
    assert "recv_bps" not in lo1.fields  # no previous reading yet
    assert lo2.fields["bytes_recv"] - lo1.fields["bytes_recv"] >= traffic
    assert lo2.fields["recv_bps"] > 0 and lo2.fields["sent_pps"] > 0
    assert lo2.fields["link_up"] is True


async def test_filters_choose_parts_mounts_and_interfaces(no_time_daemons: Path) -> None:
    samples = await _probe(include=["memory", "disk", "net"], mounts={"exclude": ["/"]}).collect()
    assert {s.measurement for s in samples} <= {"host_memory", "host_disk", "host_net", "probe_status"}
    assert "/" not in {s.tags["mount"] for s in _by(samples, "host_disk")}
    assert "lo" not in {s.tags["interface"] for s in _by(samples, "host_net")}  # excluded by default
    only_lo = await _probe(include=["net"], interfaces={"include": ["l?"]}).collect()
    assert [s.tags["interface"] for s in _by(only_lo, "host_net")] == ["lo"]


# --- clock offset --------------------------------------------------------------------------------


async def test_no_time_daemon_means_no_offset_and_no_error(no_time_daemons: Path) -> None:
    samples = await _probe(include=["time", "memory"]).collect()
    assert _by(samples, "host_time") == []
    assert _status(samples)["status"] == "ok"


async def test_offset_from_chronyc(no_time_daemons: Path) -> None:
    (t,) = _by(await scenario_chrony(no_time_daemons), "host_time")
    assert t.fields == {"offset_ms": pytest.approx(0.012345), "synced": True, "source": "chrony"}


async def test_unsynchronised_chrony_gives_no_offset(no_time_daemons: Path) -> None:
    _stand_in(no_time_daemons, "chronyc", CHRONYC_UNSYNCED)
    (t,) = _by(await _probe(include=["time"]).collect(), "host_time")
    assert t.fields == {"synced": False, "source": "chrony"}


async def test_falls_back_to_timedatectl_when_chronyc_fails(no_time_daemons: Path) -> None:
    broken = no_time_daemons / "chronyc"
    broken.write_text("#!/bin/sh\necho '506 Cannot talk to daemon'\nexit 1\n")
    broken.chmod(0o755)
    _stand_in(no_time_daemons, "timedatectl", TIMEDATECTL)
    (t,) = _by(await _probe(include=["time"]).collect(), "host_time")
    assert t.fields == {"offset_ms": pytest.approx(1.234), "synced": True, "source": "timesyncd"}


def test_parsers_on_recorded_output() -> None:
    chrony = parse_chronyc_tracking(CHRONYC_SYNCED)
    assert chrony is not None and chrony.offset_ms == pytest.approx(0.012345)
    slow = parse_chronyc_tracking(CHRONYC_SYNCED.replace("fast of", "slow of"))
    assert slow is not None and slow.offset_ms == pytest.approx(-0.012345)
    tsd = parse_timedatectl_timesync(TIMEDATECTL.replace("-1.234ms", "+250us"))
    assert tsd is not None and tsd.offset_ms == pytest.approx(-0.25)
    ntp = parse_ntpq_peers(NTPQ)
    assert ntp is not None and (ntp.source, ntp.synced, ntp.offset_ms) == ("ntpd", True, pytest.approx(0.123))
    unsynced = parse_ntpq_peers(NTPQ.replace("*", " "))
    assert unsynced is not None and (unsynced.synced, unsynced.offset_ms) == (False, None)
    assert parse_chronyc_tracking("506 Cannot talk to daemon") is None
    assert parse_timedatectl_timesync("Failed to connect to bus") is None


# --- rate and percentage maths -------------------------------------------------------------------


def test_counter_rates_first_normal_and_reset() -> None:
    a = CounterReading(10.0, {"bytes_recv": 1000, "packets_recv": 10})
    b = CounterReading(12.0, {"bytes_recv": 5000, "packets_recv": 30})
    assert counter_rates(None, a) is None
    assert counter_rates(a, b) == {"bytes_recv": 2000.0, "packets_recv": 10.0}
    reset = CounterReading(14.0, {"bytes_recv": 100, "packets_recv": 31})
    assert counter_rates(b, reset) is None  # went back: a gap, not a huge negative spike
    assert counter_rates(b, CounterReading(12.0, b.values)) is None  # no time passed


def test_cpu_percentages_from_two_readings() -> None:
    T = namedtuple("T", "user nice system idle iowait irq softirq steal guest guest_nice")  # noqa: PYI024
    before = T(100, 0, 50, 800, 10, 0, 0, 0, 5, 0)
    after = T(130, 0, 70, 850, 10, 0, 0, 0, 25, 0)  # guest time is already inside user
    pct = cpu_percentages(before, after)
    assert pct is not None
    assert pct["user_pct"] == pytest.approx(30.0) and pct["idle_pct"] == pytest.approx(50.0)
    assert pct["usage_pct"] == pytest.approx(50.0)
    assert cpu_percentages(before, before) is None


# --- config --------------------------------------------------------------------------------------


def test_sample_yaml_validates() -> None:
    common, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    assert common["type"] == "host" and registry.get("host") is HostProbe
    cfg = HostProbe.config_model.model_validate(own)
    assert "disk" in cfg.include and cfg.mounts.matches("/") and not cfg.mounts.matches("/snap/core/1")
    assert cfg.interfaces.matches("eth0") and not cfg.interfaces.matches("docker0")


@pytest.mark.parametrize(
    ("key", "bad", "loc"),
    [
        ("include", ["cpu", "gpu"], ("include", 1)),
        ("include", [], ("include",)),
        ("per_cpu", "sometimes", ("per_cpu",)),
        ("mounts", {"exclude": [""]}, ("mounts", "exclude")),
        ("interfaces", {"only": ["eth0"]}, ("interfaces", "only")),
    ],
)
def test_bad_sample_value_names_the_key(key: str, bad: Any, loc: tuple[Any, ...]) -> None:
    _, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    with pytest.raises(ValidationError) as e:
        HostConfig.model_validate({**own, key: bad})
    assert [err["loc"] for err in e.value.errors()] == [loc]


# --- catalogue -----------------------------------------------------------------------------------


async def test_catalogue_both_ways(no_time_daemons: Path) -> None:
    first, second = await scenario_two_polls()
    samples = first + second + await _probe(include=["disk"]).collect()
    samples += await scenario_chrony(no_time_daemons)
    catalogue.assert_both_ways("host", samples)


def test_readme_has_the_sections_the_sample_and_every_field() -> None:
    catalogue.assert_readme_current(KIND)


async def test_a_hung_mount_degrades_only_itself_and_is_not_asked_again(
    no_time_daemons: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hung NFS server cannot exist on loopback here: stand in for it with a statvfs that blocks
    # on "/" until released; every other mount is read for real.
    real = os.statvfs
    release = threading.Event()
    calls: list[str] = []

    def statvfs(path: Any) -> os.statvfs_result:
        if path == "/":
            calls.append(path)
            release.wait(10)
        return real(path)

    monkeypatch.setattr(os, "statvfs", statvfs)
    probe = _probe(timeout_s=1.0, include=["disk", "memory"], ignore_fstypes=["proc", "sysfs"])
    try:
        first = await asyncio.wait_for(probe.collect(), 1.0)  # the scheduler's own limit
        status = _status(first)
        assert status["status"] == "degraded"
        assert "disk /: statvfs gave no answer in time" in status["error"]
        assert "/" not in {s.tags["mount"] for s in _by(first, "host_disk")}
        assert _by(first, "host_disk") and _by(first, "host_memory")  # the rest is still there

        second = await probe.collect()
        assert "disk /: statvfs still has not answered" in _status(second)["error"]
        assert calls == ["/"]  # no second thread stuck on the same mount
    finally:
        release.set()
    await asyncio.sleep(0.05)
    third = await probe.collect()
    assert _status(third)["status"] == "ok"
    assert "/" in {s.tags["mount"] for s in _by(third, "host_disk")}
