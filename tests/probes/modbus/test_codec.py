"""Decoding registers: every type in every word/byte order, the 123456.0 vectors from DOMAIN.md,
negative int16, bits, sentinels, KinCony's offset sign, strings, manual addresses, dew point —
with hypothesis round trips where the inputs are wide."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.modbus.codec import (
    bit_of,
    decode,
    decode_string,
    dew_point_c,
    encode,
    encode_string,
    manual_reference,
    negative_from,
    ordered_bytes,
    parse_manual_address,
    raw_unsigned,
)
from probes.modbus.registermap import Point

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA"]
# DOMAIN.md §3: 123456.0 as float32 (0x47F12000) in each order.
VECTORS = {
    "ABCD": [0x47F1, 0x2000],
    "CDAB": [0x2000, 0x47F1],
    "BADC": [0xF147, 0x0020],
    "DCBA": [0x0020, 0xF147],
}
INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def point(**kw: Any) -> Point:
    return Point.model_validate({"name": "p", "table": "holding", "address": 0, **kw})


@pytest.mark.parametrize("order", ORDERS)
def test_float32_vectors_from_domain(order: str) -> None:
    assert decode(VECTORS[order], "float32", order) == 123456.0  # type: ignore[arg-type]
    assert encode(123456.0, "float32", order) == VECTORS[order]  # type: ignore[arg-type]
    assert raw_unsigned(VECTORS[order], order) == 0x47F12000  # type: ignore[arg-type]


def test_a_wrong_order_gives_a_wrong_value() -> None:
    # The reason the map must say the order: the ABCD words read as CDAB are nonsense.
    assert decode(VECTORS["ABCD"], "float32", "CDAB") != 123456.0


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x0001, 0xE240]),  # 123456 = 0x0001E240
        ("CDAB", [0xE240, 0x0001]),
        ("BADC", [0x0100, 0x40E2]),
        ("DCBA", [0x40E2, 0x0100]),
    ],
)
def test_int32_in_every_order(order: str, words: list[int]) -> None:
    assert decode(words, "int32", order) == 123456  # type: ignore[arg-type]
    assert decode(words, "uint32", order) == 123456  # type: ignore[arg-type]
    neg = encode(-123456, "int32", order)  # type: ignore[arg-type]
    assert decode(neg, "int32", order) == -123456  # type: ignore[arg-type]
    assert decode(neg, "uint32", order) == 2**32 - 123456  # type: ignore[arg-type]


def test_16_bit_values_only_care_about_the_byte_swap() -> None:
    assert decode([0xFF9B], "int16", "ABCD") == -101
    assert decode([0xFF9B], "int16", "CDAB") == -101
    assert decode([0x9BFF], "int16", "BADC") == -101
    assert decode([0x9BFF], "int16", "DCBA") == -101
    assert decode([0xFF9B], "uint16") == 0xFF9B
    assert decode([0x9BFF], "uint16", "BADC") == 0xFF9B


def test_negative_int16_with_scale_is_minus_10_point_1() -> None:
    # DOMAIN.md §3, Renke temperature: 0xFF9B x 0.1 = -10.1 (the exact decimal, not -10.100000000000001).
    assert point(type="int16", scale=0.1).decode([0xFF9B]) == (-10.1, "")
    assert point(type="uint16", scale=0.1).decode([553]) == (55.3, "")


def test_scale_and_offset() -> None:
    assert point(type="uint16", scale=0.01, offset=-40).decode([6543]) == (25.43, "")
    assert point(type="int32", order="CDAB", scale=2).decode([0xE240, 0x0001]) == (246912.0, "")


@pytest.mark.parametrize("order", ORDERS)
def test_64_bit_types(order: str) -> None:
    for dtype, value in (("int64", -(2**40) - 7), ("uint64", 2**63 + 5), ("float64", -1234.5678)):
        words = encode(value, dtype, order)  # type: ignore[arg-type]
        assert len(words) == 4
        assert decode(words, dtype, order) == value  # type: ignore[arg-type]
    # CDAB/DCBA reverse all four words, BADC/DCBA swap the bytes of each
    assert (
        ordered_bytes([0x0102, 0x0304, 0x0506, 0x0708], order)
        == {  # type: ignore[arg-type]
            "ABCD": bytes.fromhex("0102030405060708"),
            "CDAB": bytes.fromhex("0708050603040102"),
            "BADC": bytes.fromhex("0201040306050807"),
            "DCBA": bytes.fromhex("0807060504030201"),
        }[order]
    )


def test_float32_noise_is_trimmed_to_its_precision() -> None:
    words = encode(25.3, "float32")
    assert decode(words, "float32") != 25.3  # 25.299999237060547
    assert point(type="float32").decode(words) == (25.3, "")
    assert point(type="float32", order="CDAB").decode(VECTORS["CDAB"]) == (123456.0, "")


def test_nan_has_no_value_and_says_why() -> None:
    nan = list(struct.unpack(">HH", struct.pack(">f", math.nan)))
    value, why = point(type="float32").decode(nan)
    assert value is None and "NaN" in why


@pytest.mark.parametrize(("raw", "value"), [(253, 25.3), (9999, 999.9), (10000, 0.0), (10105, -10.5), (10001, -0.1)])
def test_kincony_offset_sign(raw: int, value: float) -> None:
    # raw >= 10000 -> -(raw - 10000) x 0.1 (DOMAIN.md §3, KinCony SHT30)
    assert point(type="uint16", negative_from=10000, scale=0.1).decode([raw]) == (value, "")
    assert negative_from(raw, 10000) == (raw if raw < 10000 else -(raw - 10000))


def test_sentinel_means_no_value_and_says_why() -> None:
    ntc = point(type="int16", scale=0.1, invalid={0x8000: "probe not connected"})
    assert ntc.decode([0x8000]) == (None, "probe not connected (raw 0x8000)")
    assert ntc.decode([0x00FA]) == (25.0, "")
    assert ntc.decode([0x8001]) == (-3276.7, "")  # only the sentinel itself is special
    # a list form, and a 32-bit sentinel compared in value order
    wide = point(type="uint32", order="CDAB", invalid=[0xFFFFFFFF])
    assert wide.decode([0xFFFF, 0xFFFF]) == (None, "invalid value (raw 0xFFFFFFFF)")
    assert wide.decode([0x0000, 0x0001]) == (65536.0, "")


def test_bits_of_a_register() -> None:
    word = 0b0000_0000_0000_0101  # bits 0 and 2 set
    assert [bit_of(word, i) for i in range(4)] == [True, False, True, False]
    assert bit_of(0x8000, 15)
    assert point(type="bit", bit=2).decode([word]) == (True, "")
    assert point(type="bit", bit=1).decode([word]) == (False, "")
    assert point(type="bit", bit=1, invert=True).decode([word]) == (True, "")


def test_coil_and_discrete_bits() -> None:
    coil = Point.model_validate({"name": "c", "table": "coil", "address": 3, "type": "bit"})
    assert coil.decode([True]) == (True, "")
    nc = Point.model_validate({"name": "d", "table": "discrete", "address": 3, "type": "bit", "invert": True})
    assert nc.decode([True]) == (False, "")


def test_enum_gives_the_code_and_its_name() -> None:
    p = point(type="uint16", enum={0: "off", 1: "on", 2: "standby"})
    assert p.decode([2]) == (2, "")
    assert p.state_name(2) == "standby"
    assert p.state_name(7) == "unknown_7"


@pytest.mark.parametrize("order", ["ABCD", "BADC"])
def test_strings(order: str) -> None:
    words = encode_string("RS-WS-N01", 6, order)  # type: ignore[arg-type]
    assert len(words) == 6
    assert decode_string(words, order) == "RS-WS-N01"  # type: ignore[arg-type]
    assert point(type="string", length=6, order=order).decode(words) == ("RS-WS-N01", "")
    assert decode_string([0x4142, 0x2020]) == "AB"  # space padding dropped


@pytest.mark.parametrize(
    ("ref", "table", "address"),
    [
        (40001, "holding", 0),
        ("40002", "holding", 1),
        (30100, "input", 99),
        (38001, "input", 8000),
        (10001, "discrete", 0),
        ("00001", "coil", 0),
        (400001, "holding", 0),
        (465536, "holding", 65535),
        (310000, "input", 9999),
    ],
)
def test_manual_addresses(ref: int | str, table: str, address: int) -> None:
    assert parse_manual_address(ref) == (table, address)


@pytest.mark.parametrize(
    ("ref", "why"), [(40000, "1-65536"), (20001, "starts with"), (123, "quote it"), ("4x001", "5 or 6")]
)
def test_bad_manual_addresses_say_why(ref: int | str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_manual_address(ref)


def test_manual_reference_round_trip() -> None:
    assert manual_reference("holding", 0) == "40001"
    assert manual_reference("input", 99) == "30100"
    assert manual_reference("holding", 9999) == "410000"
    for table in ("coil", "discrete", "holding", "input"):
        for address in (0, 1, 9998, 9999, 65535):
            assert parse_manual_address(manual_reference(table, address)) == (table, address)  # type: ignore[arg-type]


def test_dew_point_against_reference_values() -> None:
    # Magnus (b=17.62, c=243.12): 25 °C / 50 % -> 13.86 °C; 20 °C / 60 % -> 12.0 °C.
    assert dew_point_c(25.0, 50.0) == pytest.approx(13.86, abs=0.01)
    assert dew_point_c(20.0, 60.0) == pytest.approx(12.0, abs=0.02)
    assert dew_point_c(10.0, 100.0) == pytest.approx(10.0, abs=1e-9)  # saturated: dew point = temperature
    assert dew_point_c(25.0, 0.0) is None
    assert dew_point_c(25.0, 101.0) is None


# --- property-based round trips ---------------------------------------------------------------------

orders = st.sampled_from(ORDERS)


@given(st.data(), st.sampled_from(sorted(INT_RANGES)), orders)
def test_integers_round_trip(data: st.DataObject, dtype: str, order: str) -> None:
    lo, hi = INT_RANGES[dtype]
    value = data.draw(st.integers(lo, hi))
    words = encode(value, dtype, order)  # type: ignore[arg-type]
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode(words, dtype, order) == value  # type: ignore[arg-type]


@given(st.floats(width=32, allow_nan=False), orders)
def test_float32_round_trips(value: float, order: str) -> None:
    assert decode(encode(value, "float32", order), "float32", order) == value  # type: ignore[arg-type]


@given(st.floats(allow_nan=False), orders)
def test_float64_round_trips(value: float, order: str) -> None:
    assert decode(encode(value, "float64", order), "float64", order) == value  # type: ignore[arg-type]


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4), orders)
def test_orders_are_their_own_inverse(words: list[int], order: str) -> None:
    from probes.modbus.codec import device_words

    assert device_words(ordered_bytes(words, order), order) == words  # type: ignore[arg-type]


@given(st.integers(0, 0xFFFF), st.integers(0, 15))
def test_bit_matches_integer_arithmetic(word: int, index: int) -> None:
    assert bit_of(word, index) == bool(word & (1 << index))
    assert point(type="bit", bit=index).decode([word]) == (bool(word & (1 << index)), "")


@given(st.integers(0, 19999))
def test_kincony_decoding(raw: int) -> None:
    value, _ = point(type="uint16", negative_from=10000, scale=0.1).decode([raw])
    assert value == (raw / 10 if raw < 10000 else -(raw - 10000) / 10)


@given(
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16), st.sampled_from(["ABCD", "BADC"])
)
def test_strings_round_trip(text: str, order: str) -> None:
    assert decode_string(encode_string(text, 8, order), order) == text  # type: ignore[arg-type]


@given(st.floats(-40, 80), st.floats(1, 100))
def test_dew_point_never_exceeds_the_temperature(t: float, rh: float) -> None:
    dew = dew_point_c(t, rh)
    assert dew is not None and dew <= t + 1e-9


# --- the poll's fast reader -------------------------------------------------------------------------

NUMBER_WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}


def _same(fast: object, full: tuple[object, str]) -> None:
    value, why = full
    assert (fast is None) == (value is None), (fast, full)
    assert (value is None) == bool(why)
    if value is not None:
        assert type(fast) is type(value) and fast == value


@given(
    st.data(),
    st.sampled_from(sorted(NUMBER_WORDS)),
    orders,
    st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0, 0.5, 2.5e-3, 1e300]),
    st.sampled_from([0.0, -40.0]),
)
def test_the_fast_reader_agrees_with_read(
    data: st.DataObject, dtype: str, order: str, scale: float, offset: float
) -> None:
    """``value_of`` (the probe's hot path) gives exactly what ``read`` gives — the same value and
    type, or None where ``read`` has a reason — for any registers, type, order and scale; NaN,
    infinities and overflow by scale included (random words hit them for the float types)."""
    from probes.modbus.codec import Packed

    n = NUMBER_WORDS[dtype]
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=n + 2, max_size=n + 2))
    special = data.draw(st.sampled_from([None, math.nan, math.inf, -math.inf]))
    if dtype.startswith("float") and special is not None:  # rare in random words: put them in
        words[1 : 1 + n] = encode(special, dtype, order)  # type: ignore[arg-type]
    reader = point(type=dtype, order=order, scale=scale, offset=offset, address=1).reader()
    packed = Packed(words)
    _same(reader.value_of()(packed, 1), reader.read(packed, 1))


@given(st.data())
def test_the_fast_reader_agrees_with_read_for_every_bundled_point(data: st.DataObject) -> None:
    """The same over the points of every map we ship: sentinels, enums, bits, negative_from."""
    from pathlib import Path

    from probes.modbus.codec import BIT_TABLES, Packed
    from probes.modbus.registermap import load_map_file

    maps = sorted((Path(__file__).parents[3] / "probes" / "modbus" / "maps").glob("*.yaml"))
    assert len(maps) >= 7
    for path in maps:
        for p in load_map_file(path).points:
            reader = p.reader()
            if p.table in BIT_TABLES:
                bits = data.draw(st.lists(st.booleans(), min_size=3, max_size=3))
                _same(reader.value_of()(bits, 1), reader.read(bits, 1))
                continue
            words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=p.words + 2, max_size=p.words + 2))
            if p.invalid and data.draw(st.booleans()):  # the sentinel itself, not just random words
                raw = data.draw(st.sampled_from(sorted(p.invalid)))
                words[1 : 1 + p.words] = encode(raw, {1: "uint16", 2: "uint32", 4: "uint64"}[p.words], p.order)  # type: ignore[arg-type]
                assert reader.read(Packed(words), 1)[0] is None
            packed = Packed(words)
            _same(reader.value_of()(packed, 1), reader.read(packed, 1))
