"""Register maps and entry config: every built-in map loads and says what DOMAIN.md says; bad maps
are refused with the file, the point and the fix; users add maps as plain files; the entry's
own keys (target, unit, points, labels, invert) are checked when the config loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from probes import registry
from probes.base import validation_context
from probes.entry import COMMON_KEYS, split_entry
from probes.modbus import probe as modbus_probe
from probes.modbus.config import ModbusConfig
from probes.modbus.plan import plan
from probes.modbus.probe import ModbusProbe
from probes.modbus.registermap import BUILTIN_DIR, MapError, RegisterMap, builtin_names, find_map, load_map, parse_map
from probes.modbus.transport import Target, parse_target

SAMPLE_YAML = Path(modbus_probe.__file__).with_name("sample.yaml")
BUILTIN = [
    "aqualeak_10k",
    "generic_di8",
    "huawei_02312pbl",
    "kincony_sht30",
    "liebert_icom",
    "renke_rs_ws_n01",
    "xy_md02",
]


def cfg(**kw: Any) -> ModbusConfig:
    return ModbusConfig.model_validate({"target": "tcp://127.0.0.1:502", "map": "renke_rs_ws_n01", **kw})


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_map_loads_and_plans(name: str) -> None:
    path, m = load_map(name)
    assert path.parent == BUILTIN_DIR and m.points
    # a point's address + width stays inside the table, and the plan respects the device limit
    blocks = plan(m.points, ModbusConfig.model_validate({"target": "tcp://h", "map": name}).limits())
    assert sorted(i for b in blocks for i in b.points) == list(range(len(m.points)))
    assert all(b.count <= (m.max_bits if b.table in ("coil", "discrete") else m.max_registers) for b in blocks)


def test_the_builtin_list_is_what_the_readme_promises() -> None:
    assert builtin_names() == BUILTIN


def _points(name: str) -> dict[str, Any]:
    return {p.name: p for p in load_map(name)[1].points}


def test_renke_matches_the_manual() -> None:
    p = _points("renke_rs_ws_n01")
    assert (p["humidity"].table, p["humidity"].address, p["humidity"].type) == ("holding", 0, "uint16")
    assert (p["temperature"].address, p["temperature"].type, p["temperature"].scale) == (1, "int16", 0.1)
    assert (p["slave_address"].address, p["baud_rate"].address) == (0x07D0, 0x07D1)
    assert p["baud_rate"].enum == {0: "2400", 1: "4800", 2: "9600"}
    assert not p["baud_rate"].enabled
    assert load_map("renke_rs_ws_n01")[1].serial.baud == 4800  # type: ignore[union-attr]


def test_xy_md02_and_kincony() -> None:
    xy = _points("xy_md02")
    assert [(x.table, x.address) for x in xy.values()] == [("input", 1), ("input", 2)]
    k = _points("kincony_sht30")["temperature"]
    assert (k.negative_from, k.scale, k.address) == (10000, 0.1, 0)


def test_huawei_ntc_probes_have_the_sentinel() -> None:
    p = _points("huawei_02312pbl")
    ntc = [p[f"ntc{i}"] for i in range(1, 7)]
    assert [n.address for n in ntc] == list(range(0x21, 0x27))
    assert all(
        n.invalid == {0x8000: "probe not connected"} and n.tags == {"sensor": f"ntc{i}"} for i, n in enumerate(ntc, 1)
    )
    assert (p["temperature"].address, p["humidity"].address) == (2, 3)


def test_aqualeak_manual_addresses_and_cdab_float() -> None:
    p = _points("aqualeak_10k")
    assert [(p[n].table, p[n].address, p[n].bit) for n in ("leak", "cable_break", "contamination")] == [
        ("input", 0, 0),
        ("input", 0, 1),
        ("input", 0, 2),
    ]
    assert (p["distance"].table, p["distance"].address, p["distance"].type, p["distance"].order) == (
        "input",
        8000,
        "float32",
        "CDAB",
    )


def test_liebert_has_only_the_known_points() -> None:
    p = _points("liebert_icom")
    assert {n: (x.table, x.address) for n, x in p.items()} == {
        "operating_state": ("input", 99),
        "status": ("input", 101),
        "return_humidity": ("input", 129),
    }
    assert p["status"].enum == {1: "normal", 8: "warning", 16: "alarm", 32: "abnormal"}
    # the return-air temperature register is "not found" in DOMAIN.md: it must not be invented
    assert not any("temperature" in n or (x.field or "").startswith("return_temp") for n, x in p.items())


def test_di_module_contacts() -> None:
    p = _points("generic_di8")
    assert [(x.table, x.address, x.measurement, x.field_name, x.tags["contact"]) for x in p.values()] == [
        ("discrete", i, "contact", "active", f"di{i + 1}") for i in range(8)
    ]


# --- bad maps: the message names the file, the point and the fix ----------------------------------------


def _bad(points: list[dict[str, Any]], **top: Any) -> str:
    with pytest.raises(MapError) as e:
        parse_map({"model": "test", "points": points, **top}, "maps/test.yaml")
    return str(e.value)


def test_bad_type_names_the_file_the_point_and_the_choices() -> None:
    msg = _bad(
        [
            {"name": "ok", "table": "holding", "address": 0},
            {"name": "temp", "table": "holding", "address": 1, "type": "float"},
        ]
    )
    assert msg.startswith("register map maps/test.yaml:")
    assert "points[1] 'temp'.type" in msg
    assert "fix: use one of" in msg and "'float32'" in msg


def test_unknown_key_suggests_the_right_one() -> None:
    msg = _bad([{"name": "t", "table": "holding", "address": 0, "scael": 0.1}])
    assert "points[0] 't'.scael" in msg and "did you mean 'scale'" in msg


@pytest.mark.parametrize(
    ("point", "expect"),
    [
        ({"address": 40001, "table": "holding", "type": "int32", "bit": 3}, "bit: needs type: bit"),
        ({"address": 0, "table": "holding", "type": "bit"}, "needs bit: 0-15"),
        ({"address": 0, "table": "coil", "type": "uint16"}, "give type: bit"),
        ({"address": 0, "table": "holding", "type": "string"}, "needs length"),
        ({"address": 0, "table": "holding", "type": "float32", "negative_from": 10000}, "integer types only"),
        ({"address": 0, "table": "holding", "enum": {0: "off"}, "scale": 0.1}, "takes neither"),
        ({"address": 65535, "table": "holding", "type": "int32"}, "runs past register 65535"),
        ({"address": 20001}, "starts with 0 (coil)"),
        ({"address": "0xZZ", "table": "holding"}, "not a number"),
        ({"address": 0, "table": "holding", "measurement": "room_env"}, "must name their field"),
        ({"address": 0, "table": "holding", "invert": True}, "for bits only"),
    ],
)
def test_inconsistent_points_are_refused_with_a_reason(point: dict[str, Any], expect: str) -> None:
    msg = _bad([{"name": "p", **point}])
    assert "points[0] 'p'" in msg and expect in msg


def test_whole_map_rules() -> None:
    base = {"table": "holding", "measurement": "room_env", "field": "temperature_c", "tags": {"sensor": "a"}}
    assert "names must differ" in _bad([{"name": "t", "address": 0, **base}, {"name": "t", "address": 1, **base}])
    assert "same tags as point 't'" in _bad([{"name": "t", "address": 0, **base}, {"name": "u", "address": 1, **base}])
    assert "keeps one type" in _bad(
        [
            {"name": "t", "address": 0, **base},
            {"name": "u", "address": 1, "type": "bit", "bit": 0, **{**base, "tags": {"sensor": "b"}}},
        ]
    )
    dew = [{"temperature": "t", "humidity": "nope"}]
    assert "dew_point[0].humidity: no point named 'nope'" in _bad([{"name": "t", "address": 0, **base}], dew_point=dew)


def test_map_yaml_errors_say_where(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("model: x\npoints:\n  - name: a\n   address: 1\n")
    with pytest.raises(MapError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_map(str(f))


def test_manual_style_and_zero_based_addresses_agree() -> None:
    m = parse_map(
        {
            "model": "t",
            "points": [
                {"name": "a", "address": 40001},
                {"name": "b", "address": "400002"},
                {"name": "c", "table": "holding", "address": 2},
                {"name": "d", "table": "holding", "address": "0x0003"},
                {"name": "e", "table": "holding", "address": 40001},  # with table: 0-based, as written
            ],
        },
        "t",
    )
    assert [(p.table, p.address) for p in m.points] == [
        ("holding", 0),
        ("holding", 1),
        ("holding", 2),
        ("holding", 3),
        ("holding", 40001),
    ]


# --- where maps come from --------------------------------------------------------------------------------

USER_MAP = """
model: Acme PDU-8
order: CDAB
points:
  - {name: energy, table: input, address: 0, type: uint32, scale: 0.1, unit: kWh}
  - {name: model, table: holding, address: 100, type: string, length: 4}
"""


def test_a_user_map_in_maps_dir_needs_no_code(tmp_path: Path) -> None:
    (tmp_path / "acme_pdu.yaml").write_text(USER_MAP)
    c = ModbusConfig.model_validate({"target": "tcp://h", "map": "acme_pdu", "maps_dir": str(tmp_path)})
    assert c.register_map.model == "Acme PDU-8"
    assert c.register_map.points[0].order == "CDAB" and c.register_map.points[0].field_name == "value"
    assert c.map_source == str(tmp_path / "acme_pdu.yaml")


def test_maps_dir_wins_over_a_builtin_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "renke_rs_ws_n01.yaml").write_text(USER_MAP)
    assert find_map("renke_rs_ws_n01", tmp_path) == (tmp_path / "renke_rs_ws_n01.yaml").resolve()


def test_a_map_path_counts_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "pdu.yaml").write_text(USER_MAP)
    ctx = validation_context(tmp_path / "agent.yaml")
    c = ModbusConfig.model_validate({"target": "tcp://h", "map": "maps/pdu.yaml"}, context=ctx)
    assert c.register_map.model == "Acme PDU-8"


def test_an_inline_map() -> None:
    c = cfg(map={"model": "inline", "points": [{"name": "x", "address": 30001}]})
    assert c.map_source == "inline map" and c.register_map.points[0].table == "input"


def test_unknown_map_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError) as e:
        cfg(map="renke")
    msg = str(e.value)
    assert "no register map named 'renke'" in msg and "renke_rs_ws_n01" in msg and "path to a .yaml" in msg


def test_a_missing_map_file_is_tolerated_only_when_file_checks_are_off(tmp_path: Path) -> None:
    ctx = validation_context(tmp_path / "a.yaml", check_files=False)
    c = ModbusConfig.model_validate({"target": "tcp://h", "map": "site/maps/x.yaml"}, context=ctx)
    with pytest.raises(MapError, match="not loaded"):
        _ = c.register_map
    with pytest.raises(ValidationError, match="does not exist"):
        ModbusConfig.model_validate(
            {"target": "tcp://h", "map": "site/maps/x.yaml"}, context=validation_context(tmp_path / "a.yaml")
        )


# --- entry config ------------------------------------------------------------------------------------------


def test_sample_yaml_validates() -> None:
    common, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    assert common["type"] == "modbus" and registry.get("modbus") is ModbusProbe
    assert not COMMON_KEYS & set(ModbusConfig.model_fields)  # our keys never shadow the agent's
    c = ModbusProbe.config_model.model_validate(own, context=validation_context(SAMPLE_YAML))
    assert c.parsed_target == Target("rtu", device="/dev/ttyUSB0", baud=4800, parity="N", stop=1)
    assert c.register_map.model == "Renke RS-WS-N01" and c.labels == {"main": "room-a"}
    assert (c.request_timeout, c.retries) == (1.0, 1)


@pytest.mark.parametrize(
    ("key", "bad"),
    [("target", "modbus://x"), ("unit", 300), ("request_timeout", "soon"), ("retries", 9), ("max_registers", 126)],
)
def test_bad_sample_value_names_the_key(key: str, bad: Any) -> None:
    _, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    with pytest.raises(ValidationError) as e:
        ModbusConfig.model_validate({**own, key: bad})
    assert [err["loc"] for err in e.value.errors()] == [(key,)]


def test_entry_names_must_exist_in_the_map() -> None:
    with pytest.raises(
        ValidationError, match=r"points: 'temprature' not in the map 'Renke RS-WS-N01'; its points: baud_rate"
    ):
        cfg(points=["temprature"])
    with pytest.raises(ValidationError, match="are not bit points"):
        cfg(invert=["temperature"])
    with pytest.raises(ValidationError, match="slave addresses are 1-247"):
        cfg(target="rtu:///dev/ttyS0", unit=0)
    assert cfg(unit=0).unit == 0  # Modbus TCP devices often answer unit 0 or 255


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("tcp://10.3.1.20", Target("tcp", host="10.3.1.20", port=502)),
        ("tcp://[::1]:1502", Target("tcp", host="::1", port=1502)),
        ("rtu+tcp://gw-1:4196", Target("rtu+tcp", host="gw-1", port=4196)),
        ("rtu:///dev/ttyUSB0", Target("rtu", device="/dev/ttyUSB0")),
        (
            "rtu:///dev/ttyS1?baud=19200&parity=even&stop=2&bits=7",
            Target("rtu", device="/dev/ttyS1", baud=19200, parity="E", stop=2, bytesize=7),
        ),
    ],
)
def test_target_urls(url: str, target: Target) -> None:
    assert parse_target(url) == target
    assert parse_target(str(target)) == target


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("rtu+tcp://gw-1", "give the serial server's port"),
        ("rtu:///dev/ttyS0?baud=fast", "baud=fast"),
        ("rtu:///dev/ttyS0?speed=9600", "unknown option 'speed'"),
        ("udp://h:502", "unknown scheme"),
        ("tcp://:502", "no host"),
    ],
)
def test_bad_target_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_target(url)


def test_serial_timing_follows_the_baud_rate() -> None:
    slow = parse_target("rtu:///dev/ttyS0?baud=4800")
    assert slow.default_gap_s() == pytest.approx(3.5 * 10 / 4800)  # 8N1 = 10 bits a character
    assert parse_target("rtu:///dev/ttyS0?baud=115200").default_gap_s() == 0.00175
    assert parse_target("rtu+tcp://h:1").default_gap_s() == 0.0


def test_register_map_schema_is_frozen() -> None:
    m: RegisterMap = load_map("renke_rs_ws_n01")[1]
    with pytest.raises(ValidationError):
        m.points[0].scale = 1.0  # type: ignore[misc]
