"""The snmp probe's config (validation, secrets kept out of reprs), its sample.yaml and README, the
metric catalogue both ways, and the profiles no snmpsim-data recording covers (APC UPS, ZTE, UPS-MIB
in tenths), plus SNMPv1 against a recording."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import catalogue
import pytest
import yaml
from pydantic import ValidationError
from snmp_expect import Recording
from snmp_peers import OWN, SimAgent, by_tag, snmp_probe

from probes import registry
from probes.base import validation_context
from probes.entry import split_entry
from probes.model import Sample
from probes.snmp import probe as snmp
from probes.snmp.config import SnmpConfig
from probes.snmp.probe import SnmpProbe

KIND = "snmp"
SAMPLE_YAML = Path(snmp.__file__).with_name("sample.yaml")


def poll(port: int, community: str, **kw: Any) -> list[Sample]:
    async def main() -> list[Sample]:
        probe = snmp_probe(port, community, **kw)
        try:
            return await probe.collect()
        finally:
            await probe.aclose()

    return asyncio.run(main())


# --- config ----------------------------------------------------------------------------------


def test_sample_yaml_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETWATCH_SNMP_COMMUNITY", "s3cret-community")
    common, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    assert common["type"] == KIND and registry.get(KIND) is SnmpProbe
    assert common["timeout"] == "30s"  # the agent's own key: the whole poll, not each request
    cfg = SnmpProbe.config_model.model_validate(own, context=validation_context(SAMPLE_YAML))
    assert (cfg.version, cfg.request_timeout, cfg.retries, cfg.max_repetitions) == ("2c", 2.0, 1, 25)
    assert cfg.community_value() == "s3cret-community" and "s3cret" not in repr(cfg)
    assert cfg.profile_names() is None and not cfg.interfaces.keeps("NULL0") and cfg.interfaces.keeps("GE0/0/1")


def test_sample_yaml_names_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETWATCH_SNMP_COMMUNITY", raising=False)
    _, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    with pytest.raises(ValidationError, match="environment variable NETWATCH_SNMP_COMMUNITY"):
        SnmpConfig.model_validate(own)
    # schema checks of example configs meant for another machine skip it
    SnmpConfig.model_validate(own, context={"skip_file_checks": True})


def test_secrets_never_show_in_repr_and_files_are_read_when_used(tmp_path: Path) -> None:
    secret = tmp_path / "community"
    secret.write_text("from-a-file\n")
    cfg = SnmpConfig.model_validate({"host": "h", "community_file": secret})
    assert cfg.community_value() == "from-a-file"
    secret.write_text("rotated\n")
    assert cfg.community_value() == "rotated"
    v3 = SnmpConfig.model_validate(
        {"host": "h", "version": 3, "user": "u", "auth_proto": "SHA-256", "auth_key": "auth-secret-1",
         "priv_proto": "AES-256", "priv_key": "priv-secret-2"}
    )  # fmt: skip
    assert v3.security_level == "authPriv"
    for text in (repr(v3), str(v3), repr(v3.model_dump())):
        assert "auth-secret-1" not in text and "priv-secret-2" not in text


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"version": "2c"}, "needs community, community_env or community_file"),
        ({"version": 1, "community": "c", "user": "u"}, "user belong to version 3"),
        ({"version": 3, "community": "c", "user": "u"}, "community belongs to versions 1 and 2c"),
        ({"version": 3}, "needs user"),
        ({"version": 3, "user": "u", "priv_proto": "AES", "priv_key": "12345678"}, "needs authentication"),
        ({"version": 3, "user": "u", "auth_proto": "SHA"}, "needs auth_key, auth_key_env or auth_key_file"),
        ({"version": 3, "user": "u", "auth_key": "12345678"}, "auth_key needs auth_proto"),
        ({"version": 3, "user": "u", "auth_proto": "SHA", "auth_key": "short"}, "at least 8 characters"),
        ({"version": 3, "user": "u", "auth_proto": "SHA1", "auth_key": "12345678"}, "Input should be"),
        ({"version": "4", "community": "c"}, "Input should be '1', '2c' or '3'"),
        ({"community": "c", "community_env": "X"}, "give only one of community, community_env"),
        ({"community": "c", "profile": "huawie"}, "unknown profile 'huawie'; known: auto, apc_pdu"),
        ({"community": "c", "timeout": "5s"}, "Extra inputs are not permitted"),  # the agent's key, not ours
    ],
)
def test_bad_config_says_what_is_wrong(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as e:
        SnmpConfig.model_validate({"host": "10.0.0.1", **raw})
    assert says in str(e.value)


def test_versions_read_from_yaml_numbers() -> None:
    for raw, want in ((1, "1"), ("2c", "2c"), (3, "3"), ("v2c", "2c")):
        extra = {"user": "u"} if want == "3" else {"community": "c"}
        assert SnmpConfig.model_validate({"host": "h", "version": raw, **extra}).version == want


# --- profiles without a recording --------------------------------------------------------------


def test_apc_ups_on_battery_maps_onto_ups_mib_codes(snmpsim: SimAgent) -> None:
    samples = poll(snmpsim.port, f"{OWN}/apc-ups", name="ups-city")
    ups = by_tag(samples, "ups", "mib")["apc_powernet"]
    assert dict(ups.fields) == {
        "battery_status": 2,
        "battery_status_name": "normal",
        "charge_pct": 87.0,
        "runtime_min": pytest.approx(11.0),  # 66000 TimeTicks / 6000
        "battery_replace": 2,
        "battery_replace_name": "replace",
        "input_voltage_v": 0.0,
        "output_source": 5,  # APC 3 onBattery -> upsOutputSource battery
        "output_source_name": "battery",
        "load_pct": 41.0,
    }
    assert not [s for s in samples if s.measurement == "pdu"]  # apc_pdu read too: nothing there


def test_zte_cpu_per_unit_with_the_two_minute_fallback(snmpsim: SimAgent) -> None:
    samples = poll(snmpsim.port, f"{OWN}/zte")
    cpus = {k: s.fields["cpu_pct"] for k, s in by_tag(samples, "device_cpu", "cpu").items()}
    assert cpus == {"1": 12.0, "2": 23.0}


def test_ups_mib_in_tenths_named_in_the_config(snmpsim: SimAgent) -> None:
    auto = by_tag(poll(snmpsim.port, "UPS/huawei-gse200m"), "ups", "mib")["ups_mib"].fields
    tenths = by_tag(poll(snmpsim.port, "UPS/huawei-gse200m", profile="ups_mib_tenths"), "ups", "mib")
    fields = tenths["ups_mib"].fields
    assert (auto["input_voltage_v"], auto["input_frequency_hz"]) == (2369.0, 500.0)  # as RFC 1628 reads it
    assert fields["input_voltage_v"] == pytest.approx(236.9) and fields["input_frequency_hz"] == pytest.approx(50.0)
    assert fields["output_voltage_v"] == pytest.approx(219.9)


def test_tenths_read_as_the_decimal_the_device_meant(snmpsim: SimAgent) -> None:
    """upsInputCurrent 152 in tenths is 15.2 exactly (the double nearest 15.2), not 152 × 0.1 =
    15.200000000000001, which is what an operator would then see; the oracle is the recording's
    number put through decimal arithmetic."""
    name = "UPS/huawei-gse200m"
    rec = Recording.read(name, snmpsim.recordings.path(name))
    raw = {k.removesuffix(".0"): v.number() for k, v in rec.column("1.3.6.1.2.1.33.1.3.3.1.4").items()}
    assert raw and all(isinstance(n, int) for n in raw.values())
    want = {k: float(Decimal(int(n)).scaleb(-1)) for k, n in raw.items()}  # type: ignore[arg-type]
    lines = by_tag(poll(snmpsim.port, name, profile="ups_mib_tenths"), "ups_input", "line")
    assert {k: s.fields["current_a"] for k, s in lines.items()} == want


def test_snmp_v1_walks_with_getnext_and_falls_back_to_32_bit_counters(snmpsim: SimAgent) -> None:
    name = "network/switch/cisco-c3750"
    rec = Recording.read(name, snmpsim.recordings.path(name))
    hc, low = rec.column("1.3.6.1.2.1.31.1.1.1.6"), rec.column("1.3.6.1.2.1.2.2.1.10")
    v2 = by_tag(poll(snmpsim.port, name), "interface", "ifindex")
    v1_samples = poll(snmpsim.port, name, version="1")
    assert v1_samples[-1].fields["status"] == "ok"
    v1 = by_tag(v1_samples, "interface", "ifindex")
    assert set(v1) == set(v2)
    # v2c reads ifHCInOctets where there is one; v1 has no Counter64 and reads ifInOctets
    assert {k: s.fields["in_octets"] for k, s in v2.items() if k in hc} == {k: v.number() for k, v in hc.items()}
    assert {k: s.fields["in_octets"] for k, s in v1.items() if "in_octets" in s.fields} == {
        k: v.number() for k, v in low.items()
    }
    assert any(hc[k].number() != low[k].number() for k in hc)  # the two really differ here
    assert {s.measurement for s in v1_samples} >= {"snmp_system", "device_cpu", "device_memory", "device_sensor"}


# --- catalogue and README ------------------------------------------------------------------------


def test_catalogue_both_ways(
    snmpsim: SimAgent, polled_recordings: dict[str, list[Sample]], counter_steps: list[list[Sample]]
) -> None:
    samples = [s for polled in polled_recordings.values() for s in polled]
    samples += [s for step in counter_steps for s in step]
    samples += poll(snmpsim.port, f"{OWN}/apc-ups")
    samples += poll(snmpsim.port, f"{OWN}/zte")
    samples += poll(snmpsim.port, "not-a-community", request_timeout="200ms", retries=0)  # down, with error
    catalogue.assert_both_ways(KIND, samples)


def test_readme_has_the_sections_the_sample_and_every_field() -> None:
    catalogue.assert_readme_current(KIND)
