"""Whole snmpsim-data recordings (every subtree the device answered, not only what the profiles
read) polled with the default settings, each Sample checked against values read from the recording
file itself (snmp_expect.py); a three-phase UPS's three lines; APC outlets; and the 52-port switch
served at ~1 s per request, one request at a time, polled with the defaults of `snmp poll`."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import orjson
import pytest
from snmp_expect import UPS, Recording
from snmp_peers import FULL, SimAgent
from snmp_slow import SlowProxy
from test_snmp_recordings import mismatches
from typer.testing import CliRunner

from agent.cli_snmp import app
from probes.model import Sample

SWITCH_52 = "network/switch/zte-zxr10-5250"
# One pytest-xdist worker runs them all: one snmpsim of the whole recordings, not one per worker.
pytestmark = pytest.mark.xdist_group("snmp-full")


@functools.cache
def _read(name: str, path: str) -> Recording:
    return Recording.read(name, Path(path))


def full_recording(sim: SimAgent, name: str) -> Recording:
    """The test's own parse of a whole recording (read once: the 52-port switch's is 390k lines)."""
    return _read(name, str(sim.recordings.path(name)))


def raw_column(path: object, base: str) -> dict[str, str]:
    """instance -> value text of one column, straight from the .snmprec lines (no decoder of ours)."""
    prefix = base + "."
    out = {}
    with open(str(path), encoding="utf-8", errors="replace") as f:
        for line in f:
            oid, _, rest = line.rstrip("\n").partition("|")
            if oid.startswith(prefix):
                out[oid[len(prefix) :]] = rest.split("|", 1)[1]
    return out


@pytest.mark.parametrize("name", FULL)
def test_full_recording_yields_what_it_holds(
    name: str, snmpsim_full: SimAgent, polled_full: dict[str, list[Sample]]
) -> None:
    rec = full_recording(snmpsim_full, name)
    samples = polled_full[name]
    status = samples[-1]
    assert status.measurement == "probe_status"
    assert (status.fields["status"], status.fields["error"]) == ("ok", ""), status.fields
    problems = mismatches(name, rec, samples)
    assert not problems, "\n".join(problems[:10])


def test_a_three_phase_ups_reports_three_input_lines(
    snmpsim_full: SimAgent, polled_full: dict[str, list[Sample]]
) -> None:
    for name in ("UPS/eaton-93e-80", "UPS/eastpower-istars-swv053"):
        path = snmpsim_full.recordings.path(name)
        volts = raw_column(path, f"{UPS}.3.3.1.3")  # upsInputVoltage, V
        amps = raw_column(path, f"{UPS}.4.4.1.3")  # upsOutputCurrent, 0.1 A
        assert len(volts) == 3, (name, volts)
        got = {s.tags["line"]: s for s in polled_full[name] if s.measurement == "ups_input"}
        out = {s.tags["line"]: s for s in polled_full[name] if s.measurement == "ups_output"}
        # eastpower answers upsInputVoltage.1.0 .. .3.0: the stray .0 is not part of the line
        assert set(got) == set(out) == {"1", "2", "3"}
        assert {k.removesuffix(".0"): float(v) for k, v in volts.items()} == {
            k: s.fields["voltage_v"] for k, s in got.items()
        }
        assert {k.removesuffix(".0"): int(v) / 10 for k, v in amps.items()} == pytest.approx(
            {k: s.fields["current_a"] for k, s in out.items()}
        )
    eaton = {
        s.tags["line"]: s.fields["voltage_v"] for s in polled_full["UPS/eaton-93e-80"] if s.measurement == "ups_input"
    }
    assert eaton == {"1": 227.0, "2": 227.0, "3": 233.0}  # the third phase is not lost behind the first


def test_a_single_phase_ups_with_zero_filled_lines_reports_one(polled_full: dict[str, list[Sample]]) -> None:
    # phoenixtec-power: upsInputNumLines 1, yet rows 1..3 (2 and 3 all zeros); upsBypassNumLines 0
    lines = {(s.measurement, s.tags["line"]) for s in polled_full["UPS/phoenixtec-power"] if "line" in s.tags}
    assert lines == {("ups_input", "1"), ("ups_output", "1")}


def test_pdu_outlets(snmpsim_full: SimAgent, polled_full: dict[str, list[Sample]]) -> None:
    name = "UPS/apc-8641"
    power = raw_column(snmpsim_full.recordings.path(name), "1.3.6.1.4.1.318.1.1.26.9.4.3.1.7")
    outlets = {s.tags["outlet"]: s for s in polled_full[name] if s.measurement == "pdu_outlet"}
    assert len(outlets) == len(power) == 24
    assert {k: float(v) for k, v in power.items()} == {k: s.fields["power_w"] for k, s in outlets.items()}
    assert outlets["1"].tags["name"] == "CP-CM-SAN-01"


@pytest.mark.integration
@pytest.mark.slow
def test_a_52_port_switch_at_one_request_per_second_is_polled_whole_with_defaults(snmpsim_full: SimAgent) -> None:
    """The field report: this switch answers ~1 request/s; four requests in flight and a 2 s
    timeout used to time out every walk. `netwatch-agent snmp poll` with no tuning must now bring
    every interface, and probe_status must say what it adapted to. Takes about a minute: the
    device is slow on purpose (one request per second, one at a time)."""
    rec = full_recording(snmpsim_full, SWITCH_52)
    descr = rec.column("1.3.6.1.2.1.2.2.1.2")  # ifDescr, as the recording file has it
    assert len(descr) == 52
    proxy = SlowProxy(snmpsim_full.port, delay_s=1.0)
    t0 = time.monotonic()
    try:
        result = CliRunner().invoke(app, ["poll", f"127.0.0.1:{proxy.port}", "-c", SWITCH_52, "--json"])
    finally:
        proxy.close()
    took = time.monotonic() - t0
    rows = [orjson.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    samples = [Sample(r["measurement"], r["tags"], r["fields"], r["time"]) for r in rows]
    status = samples[-1].fields
    assert result.exit_code == 0 and status["status"] == "ok", (status, took)
    ifaces = [s for s in samples if s.measurement == "interface"]
    assert sorted(int(s.tags["ifindex"]) for s in ifaces) == sorted(int(k) for k in descr)
    # the CLI names the device by its address
    problems = mismatches(f"127.0.0.1:{proxy.port}", rec, samples)
    assert not problems, "\n".join(problems[:10])
    # It backed off, and says so: fewer in flight, a timeout above the measured ~1 s round trip.
    assert status["in_flight"] < 4 and status["request_timeout_s"] > 2.0, status
    assert status["rtt_ms"] >= 900, status
    assert "slow device:" in status["adapted"] and "in flight (configured 4)" in status["adapted"], status
    print(f"\n52-port switch at 1 s/request: {took:.1f} s, {proxy.answered} requests answered, {status['adapted']}")
