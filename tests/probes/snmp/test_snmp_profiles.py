"""Device profiles as data: every profile file loads and validates against the schema; a broken one
is refused with its file and key named; selection by sysObjectID picks the vendor profile for known
enterprise numbers, and the standard ones for everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.snmp.profile import (
    PROFILES_DIR,
    ProfileError,
    builtin_profiles,
    enterprise_of,
    load_profile,
    select,
)

STANDARD = ["system", "entity_sensor", "host_resources", "if_mib"]


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_profile_file_loads_and_validates(path: Path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem and profile.description
    assert profile.scalars or profile.tables
    oids = profile.oids()
    assert oids and all(o.startswith("1.3.6.1.") for o in oids)


def test_the_issue_s_profiles_are_all_there() -> None:
    assert set(builtin_profiles()) >= {
        *STANDARD,
        "huawei",
        "h3c",
        "cisco",
        "ruijie",
        "zte",
        "ups_mib",
        "apc_ups",
        "apc_pdu",
    }


@pytest.mark.parametrize(
    ("yaml_text", "where", "says"),
    [
        ("name: bad\ndescription: x\ntables: [{measurement: m, fields: {f: {oid: 'ifHCInOctets'}}}]\n",
         "tables[0].fields.f.oid", "not a numeric OID"),
        ("name: bad\ndescription: x\ntables: [{measurement: m, fields: {f: {oid: 1.3.6.1.2.1.1.3.0, scael: 2}}}]\n",
         "tables[0].fields.f.scael", "remove 'scael'"),
        ("name: bad\ndescription: x\ntables: [{measurement: m, fields: {f: {oid: 1.3.6.1.2.1.1.3.0}},"
         " rates: {f_per_s: {counter: g}}}]\n", "tables[0]", "counter 'g' is not a field"),
        ("name: bad\ndescription: x\nscalars: [{measurement: m, fields: {f: {}}}]\n",
         "scalars[0].fields.f", "give oid or sources"),
        ("name: other\ndescription: x\nscalars: [{measurement: m, fields: {f: {oid: 1.3.6.1.2.1.1.3.0}}}]\n",
         "", "must match the file name"),
    ],
)  # fmt: skip
def test_a_broken_profile_names_file_key_and_fix(tmp_path: Path, yaml_text: str, where: str, says: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    text = str(e.value)
    assert str(path) in text and where in text and says in text


def _chosen(sys_object_id: str | None, **kw: object) -> list[str]:
    return [p.name for p in select(list(builtin_profiles().values()), sys_object_id, **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sys_object_id", "vendor"),
    [
        ("1.3.6.1.4.1.2011.2.23.276", ["huawei"]),  # S5720 (recording network/router/huawei-s5720)
        ("1.3.6.1.4.1.25506.1.921", ["h3c"]),  # Comware 7 (h3c-comware-7-1-075)
        ("1.3.6.1.4.1.25506.1.578", ["h3c"]),  # E528, legacy tree (h3c-e528-1)
        ("1.3.6.1.4.1.2011.10.1.88", ["h3c"]),  # Huawei-3Com era: the 2011.10 prefix beats Huawei's 2011
        ("1.3.6.1.4.1.9.1.617", ["cisco"]),  # Catalyst 3560
        ("1.3.6.1.4.1.9.12.3.1.3.1084", ["cisco"]),  # Nexus 5000
        ("1.3.6.1.4.1.4881.1.1.10.1.41", ["ruijie"]),
        ("1.3.6.1.4.1.3902.3.100.614", ["zte"]),
        ("1.3.6.1.4.1.318.1.3.4.6", ["apc_pdu", "apc_ups"]),  # both read; the absent one costs a request
        ("1.3.6.1.4.1.8072.3.2.10", []),  # net-snmp: standard MIBs only
        ("1.3.6.1.4.1.30065.1.3011.7150", []),  # Arista: no vendor profile, still the standard ones
        (None, []),  # no sysObjectID at all
    ],
)
def test_auto_selection_by_sys_object_id(sys_object_id: str | None, vendor: list[str]) -> None:
    chosen = _chosen(sys_object_id)
    assert chosen[: len(STANDARD)] == STANDARD
    assert sorted(chosen[len(STANDARD) :]) == vendor


def test_a_ups_mib_agent_is_found_by_asking_not_by_its_sys_object_id() -> None:
    detect = builtin_profiles()["ups_mib"].match.detect
    assert _chosen("1.3.6.1.4.1.8072.3.2.10", detected=detect) == [*STANDARD, "ups_mib"]
    assert _chosen("1.3.6.1.4.1.2011.2.23.276", detected=detect) == [*STANDARD, "huawei", "ups_mib"]


def test_profiles_named_in_the_config_replace_auto_selection() -> None:
    assert _chosen("1.3.6.1.4.1.2011.2.23.276", names=["cisco"]) == [*STANDARD, "cisco"]
    assert _chosen(None, names=["ups_mib", "apc_ups"]) == [*STANDARD, "ups_mib", "apc_ups"]
    assert _chosen("1.3.6.1.4.1.9.1.617", names=["if_mib"]) == STANDARD


@pytest.mark.parametrize(
    ("oid", "enterprise"),
    [("1.3.6.1.4.1.2011.2.23.276", 2011), (".1.3.6.1.4.1.9", 9), ("1.3.6.1.2.1.1", None), ("", None), (None, None)],
)
def test_enterprise_number(oid: str | None, enterprise: int | None) -> None:
    assert enterprise_of(oid) == enterprise
