"""The demo's simulated SNMP devices (configs/demo/sim_snmp.py): one snmpsim serving the Huawei switch,
the H3C switch, the UPS and the moving switch, polled through the probe entries the demo agents
use; counters that move give rates; ``stop()`` ends the process by its PID."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from snmp_peers import by_tag
from snmp_services import free_udp_port

from configs.demo import sim_snmp
from probes.entry import split_entry
from probes.model import Sample
from probes.snmp.config import SnmpConfig
from probes.snmp.probe import SnmpProbe

#: The entries for the demo agents (county: Huawei switch; township: H3C switch; city: UPS; the
#: moving switch next to the county one), with the port the demo passes to sim_snmp.start.
DEMO_ENTRIES = """
- type: snmp
  name: sw-county-east
  host: 127.0.0.1
  port: 16100
  community: network/router/huawei-s5720
  interval: 30s
  timeout: 20s
  interfaces: {exclude: '^(NULL|InLoopBack|Console)'}
- type: snmp
  name: sw-county-east-access
  host: 127.0.0.1
  port: 16100
  community: netwatch/moving-switch
  interval: 10s
  timeout: 5s
- type: snmp
  name: sw-township-east-1
  host: 127.0.0.1
  port: 16100
  community: network/switch/h3c-comware-7-1-075
  interval: 30s
  timeout: 20s
- type: snmp
  name: ups-city
  host: 127.0.0.1
  port: 16100
  community: UPS/huawei-gse200m
  profile: ups_mib_tenths
  interval: 30s
  timeout: 10s
"""


@pytest.fixture(scope="module")
def demo_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sim_snmp.SimHandle]:
    handle = sim_snmp.start(tmp_path_factory.mktemp("demo-snmp"), free_udp_port())
    try:
        yield handle
    finally:
        handle.stop()


def probes(port: int) -> dict[str, SnmpProbe]:
    out = {}
    for entry in yaml.safe_load(DEMO_ENTRIES.replace("16100", str(port))):
        common, own = split_entry(entry)
        out[common["name"]] = SnmpProbe(SnmpConfig.model_validate(own), name=common["name"], timeout_s=20)
    return out


def test_the_demo_devices_through_the_demo_entries(demo_sim: sim_snmp.SimHandle) -> None:
    async def main() -> dict[str, list[Sample]]:
        devices = probes(demo_sim.port)
        try:
            first = await asyncio.gather(*(p.collect() for p in devices.values()))
            await asyncio.sleep(1.0)
            again = await devices["sw-county-east-access"].collect()
        finally:
            for p in devices.values():
                await p.aclose()
        return dict(zip(devices, first, strict=True)) | {"again": again}

    polled = asyncio.run(main())
    for name, samples in polled.items():
        assert samples[-1].fields["status"] == "ok", (name, samples[-1].fields["error"])
    county = polled["sw-county-east"]
    assert by_tag(county, "device_cpu", "mib")["huawei"].fields["cpu_pct"] == 38.0
    assert not {"NULL0", "InLoopBack0"} & {s.tags.get("ifname") for s in county}
    township = polled["sw-township-east-1"]
    assert {s.tags["mib"] for s in township if s.measurement == "device_cpu"} == {"h3c"}
    assert len(by_tag(township, "interface", "ifindex")) > 50
    ups = by_tag(polled["ups-city"], "ups", "mib")["ups_mib"].fields
    assert ups["input_voltage_v"] == pytest.approx(236.9) and ups["output_source_name"] == "normal"
    access = by_tag(polled["again"], "interface", "ifname")
    assert access["GE0/0/1"].fields["in_bps"] == pytest.approx(30e6, rel=0.15)
    assert access["GE0/0/2"].fields["util_in_pct"] > 90  # the port the demo's utilisation alert watches


def test_stop_ends_the_process_and_a_restart_reuses_the_cut_recordings(tmp_path: Path) -> None:
    handle = sim_snmp.start(tmp_path, free_udp_port())
    cut = tmp_path / "snmpsim-data" / "network/router/huawei-s5720.snmprec"
    assert 0 < cut.stat().st_size < sim_snmp.recording_path("network/router/huawei-s5720").stat().st_size * 2
    mtime = cut.stat().st_mtime
    handle.stop()
    assert handle.proc.poll() is not None
    with pytest.raises(TimeoutError):
        sim_snmp.wait_for_agent(handle.port, sim_snmp.MOVING_SWITCH, timeout_s=0.5)
    again = sim_snmp.start(tmp_path, free_udp_port())
    try:
        assert cut.stat().st_mtime == mtime
    finally:
        again.stop()
