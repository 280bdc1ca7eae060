"""SNMP test peers: ONE snmpsim for the whole session (every snmpsim-data recording of switches,
routers, firewalls, UPSes and kin, plus the tests' own recordings) and one net-snmp snmpd with v3
users. Both are stopped by PID at the end, also when tests fail."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.append(str(_HERE))

from services import ServiceMissing  # noqa: E402
from snmp_expect import EXPECTATION_OIDS  # noqa: E402
from snmp_peers import (  # noqa: E402
    FULL,
    OWN,
    OWN_RECORDINGS,
    POLLED,
    V3_USERS,
    SimAgent,
    poll_recordings,
    scenario_counter_steps,
)
from snmp_services import (  # noqa: E402
    Snmpd,
    Snmpsim,
    free_udp_port,
    locked,
    prepare_full_recordings,
    prepare_recordings,
    write_if_changed,
)

from configs.demo import sim_snmp  # noqa: E402
from probes.model import Sample  # noqa: E402


@pytest.fixture(scope="session")
def snmpsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimAgent]:
    rec = prepare_recordings(POLLED, sim_snmp.polled_oids() | EXPECTATION_OIDS)
    with locked(rec.lock):
        for name, make in OWN_RECORDINGS.items():
            write_if_changed(rec.data_dir / OWN / f"{name}.snmprec", make())
        write_if_changed(rec.data_dir / f"{sim_snmp.MOVING_SWITCH}.snmprec", sim_snmp._MOVING)
        service = Snmpsim(
            tmp_path_factory.mktemp("snmpsim"), free_udp_port(), rec.data_dir, rec.index_dir, f"{OWN}/counters"
        )
        try:
            # The first run indexes every line (see snmp_services); later runs reuse the index.
            service.start(timeout_s=240)
        except ServiceMissing as e:
            pytest.fail(str(e), pytrace=False)
    try:
        yield SimAgent(service, rec)
    finally:
        service.close()


@pytest.fixture(scope="session")
def snmpsim_full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimAgent]:
    """A second snmpsim serving FULL recordings (about 570k lines: the first run indexes them in
    about 40 s, later runs reuse the index kept in the cache)."""
    rec = prepare_full_recordings(FULL)
    with locked(rec.lock):
        service = Snmpsim(
            tmp_path_factory.mktemp("snmpsim-full"), free_udp_port(), rec.data_dir, rec.index_dir, "UPS/huawei-gse200m"
        )
        try:
            service.start(timeout_s=300)
            # snmpsim opens a recording's index at its first request (seconds for the big ones):
            # that cold start is snmpsim's, not the device's, so it is out of the way before polls.
            for name in FULL:
                sim_snmp.wait_for_agent(service.port, name, timeout_s=60, proc=service.proc)
        except ServiceMissing as e:
            pytest.fail(str(e), pytrace=False)
    try:
        yield SimAgent(service, rec)
    finally:
        service.close()


@pytest.fixture(scope="session")
def polled_full(snmpsim_full: SimAgent) -> dict[str, list[Sample]]:
    """One poll of each full recording, with the probe's default settings."""
    return asyncio.run(poll_recordings(snmpsim_full.port, list(FULL), defaults=True))


@pytest.fixture(scope="session")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    try:
        agent = Snmpd(tmp_path_factory.mktemp("snmpd"), free_udp_port(), V3_USERS)
        agent.start(timeout_s=20)
    except ServiceMissing as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield agent
    finally:
        agent.close()


@pytest.fixture(scope="session")
def polled_recordings(snmpsim: SimAgent) -> dict[str, list[Sample]]:
    """recording -> what one poll of it yielded (shared by the recordings and catalogue tests)."""
    # snmpsim opens each recording's index at its first request: a stall of snmpsim's own that
    # would make every device polled at that moment time out and back off. Out of the way first.
    for name in POLLED:
        sim_snmp.wait_for_agent(snmpsim.port, name, timeout_s=60, proc=snmpsim.service.proc)
    return asyncio.run(poll_recordings(snmpsim.port, POLLED))


@pytest.fixture(scope="session")
def counter_steps(snmpsim: SimAgent) -> list[list[Sample]]:
    """Each poll of the writecache counter device through STEPS (see snmp_peers)."""
    return asyncio.run(scenario_counter_steps(snmpsim.port))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pysnmp's MIB compiler glue calls pysmi's renamed functions; not ours to fix, and noise here.
    quiet = pytest.mark.filterwarnings("ignore::DeprecationWarning:pysnmp.smi.compiler")
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(quiet)
