"""Every switch, router, firewall and UPS recording in snmpsim-data (and the appliance, wifi and cloud
ones), polled by the probe through ONE snmpsim: each Sample checked against values read from the
recording file itself (snmp_expect.py), every measurement both ways — nothing missing, nothing extra."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from snmp_expect import EXPECTERS, Range, Recording, vendor
from snmp_peers import POLLED, SKIPPED, SimAgent
from snmp_services import recording_names

from probes.model import Sample

#: Recordings that hold no IF-MIB rows, and what they are instead (the test checks the reason holds:
#: the recording has no ifTable/ifXTable lines, and the probe emits no interface Samples).
NO_INTERFACES = {
    "UPS/eastpower-istars-swv053": "a UPS-MIB-only agent: no IF-MIB in the recording",
    "UPS/eaton-9px-partial": "a partial walk: sysObjectID only",
    "UPS/huawei-gse200m": "a UPS-MIB agent on stock net-snmp: no IF-MIB in the recording",
    "UPS/juniper-ac": "a mislabelled Juniper WLC walk without IF-MIB (its sysDescr line is broken too)",
    "network/appliance/huawei-ism": "private Huawei MIBs only: no IF-MIB in the recording",
    "network/appliance/meru-networks-controller": "private Meru MIBs only: no IF-MIB in the recording",
    "network/appliance/network-research-squid": "a Squid proxy's own MIB and sysUpTime only",
    "network/appliance/ucdavis-sic": "UCD-SNMP MIB only: no IF-MIB in the recording",
    "network/appliance/vss-monitoring-optimizer-2400-span": "private VSS MIBs only: no IF-MIB in the recording",
    "network/switch/h3c-comware-lsq1wcmd0": "a partial walk of H3C private MIBs: no IF-MIB in the recording",
    "network/wifi/aruba-7010": "a partial walk (system group only)",
    "network/wifi/aruba-7020": "a partial walk (system group only)",
    "network/wifi/juniper-wlc2800": "private Trapeze MIBs only: no IF-MIB in the recording",
}

IDENTITY = {
    "snmp_system": (),
    "interface": ("ifindex",),
    "device_cpu": ("mib", "cpu"),
    "device_memory": ("mib", "memory"),
    "device_sensor": ("mib", "type", "sensor"),
    "ups": ("mib",),
    "ups_input": ("mib", "line"),
    "ups_output": ("mib", "line"),
    "ups_bypass": ("mib", "line"),
    "pdu_outlet": ("mib", "outlet"),
}


def identity(s: Sample) -> tuple[str, ...]:
    if s.measurement == "pdu":
        return ("phase", s.tags["phase"]) if "phase" in s.tags else ("pdu", s.tags["pdu"])
    return tuple(s.tags[t] for t in IDENTITY[s.measurement])


def same(got: object, want: object) -> bool:
    if isinstance(want, Range):
        return isinstance(got, int | float) and want.low <= got <= want.high
    if isinstance(want, float):
        return isinstance(got, float) and math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return type(got) is type(want) and got == want


def mismatches(name: str, rec: Recording, samples: list[Sample]) -> list[str]:
    out = []
    for measurement, expect in EXPECTERS.items():
        want = expect(rec, name)
        got = {identity(s): s for s in samples if s.measurement == measurement}
        if set(got) != set(want):
            out.append(
                f"{measurement}: missing {sorted(set(want) - set(got))[:5]}, extra {sorted(set(got) - set(want))[:5]}"
            )
            continue
        for key, (tags, fields) in want.items():
            s = got[key]
            if dict(s.tags) != tags:
                out.append(f"{measurement} {key}: tags {dict(s.tags)} != {tags}")
            elif set(s.fields) != set(fields) or not all(same(s.fields[f], v) for f, v in fields.items()):
                out.append(f"{measurement} {key}: fields {dict(s.fields)} != {fields}")
    return out


@pytest.mark.parametrize("name", POLLED)
def test_recording_yields_what_it_holds(
    name: str, snmpsim: SimAgent, polled_recordings: dict[str, list[Sample]]
) -> None:
    rec = Recording.read(name, snmpsim.recordings.path(name))
    samples = polled_recordings[name]
    status = samples[-1]
    assert status.measurement == "probe_status"
    assert (status.fields["status"], status.fields["error"]) == ("ok", ""), dict(status.fields)
    kinds = Counter(s.measurement for s in samples)
    assert kinds["snmp_system"] == 1
    if name in NO_INTERFACES:
        assert not EXPECTERS["interface"](rec, name), f"{name} holds IF-MIB rows after all"
        assert kinds["interface"] == 0
    else:
        assert kinds["interface"] > 0
    problems = mismatches(name, rec, samples)
    assert not problems, "\n".join(problems[:10])


def test_every_recording_of_those_kinds_is_polled_or_skipped_with_a_reason() -> None:
    assert set(recording_names()) == set(POLLED) | set(SKIPPED)
    assert set(NO_INTERFACES) <= set(POLLED)
    for folder in ("network/switch", "network/router", "network/firewall", "UPS"):
        assert not [n for n in SKIPPED if n.startswith(folder)], "every switch, router, firewall and UPS is polled"


def test_the_vendor_features_are_exercised(snmpsim: SimAgent, polled_recordings: dict[str, list[Sample]]) -> None:
    """The comparison above only means something where the recordings hold the feature: count
    where each vendor MIB, fallback and quirk actually produced Samples."""
    seen: Counter[str] = Counter()
    for name, samples in polled_recordings.items():
        rec = Recording.read(name, snmpsim.recordings.path(name))
        mibs = {(s.measurement, s.tags.get("mib")) for s in samples}
        seen.update(f"{m}:{mib}" for m, mib in mibs)
        if vendor(rec) == "h3c" and any(s.tags.get("mib") == "h3c" for s in samples):
            legacy = any(o.startswith("1.3.6.1.4.1.2011.10.2.6.") for o in rec.values)
            seen["h3c legacy tree" if legacy else "h3c 25506 tree"] += 1
        ifaces = [s for s in samples if s.measurement == "interface"]
        if ifaces and not any(o.startswith("1.3.6.1.2.1.31.1.1.1.6.") for o in rec.values):
            seen["interfaces from ifTable only"] += 1
        if any(o.startswith("1.3.6.1.4.1.9.9.109.1.1.1.1.5.") for o in rec.values) and not any(
            o.startswith("1.3.6.1.4.1.9.9.109.1.1.1.1.8.") for o in rec.values
        ):
            seen["cisco deprecated cpu only"] += sum(s.measurement == "device_cpu" for s in samples)
        if any(s.measurement == "ups" and "runtime_min" not in s.fields for s in samples):
            seen["ups runtime dropped on mains"] += 1
    for feature in (
        "device_cpu:huawei",
        "device_memory:huawei",
        "device_sensor:huawei",
        "device_cpu:h3c",
        "device_sensor:h3c",
        "h3c legacy tree",
        "h3c 25506 tree",
        "device_cpu:cisco_process",
        "device_memory:cisco_process",
        "device_memory:cisco_memory_pool",
        "device_sensor:cisco_envmon",
        "cisco deprecated cpu only",
        "device_cpu:ruijie",
        "device_memory:ruijie",
        "device_sensor:ruijie",
        "device_cpu:host_resources",
        "device_memory:host_resources",
        "device_sensor:entity_sensor",
        "ups:ups_mib",
        "ups runtime dropped on mains",
        "pdu:apc_rpdu2",
        "interfaces from ifTable only",
    ):
        assert seen[feature] > 0, f"no recording exercised {feature}"
