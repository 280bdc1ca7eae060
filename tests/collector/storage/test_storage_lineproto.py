"""LineEncoder: exact round trips through an independent parser, and agreement with influxdb-client."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from influxdb_client import Point
from lp_parser import parse

from collector.storage.lineproto import LineEncoder, escape_key, escape_measurement, format_value
from probes.model import Sample

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SPECIAL = list(",= \"'#县乡镇网络机房𠀋é\u00a0")  # separators, quotes, CJK, astral, NBSP

printable_char = st.characters(codec="utf-8").filter(str.isprintable)
name_char = st.one_of(st.sampled_from(SPECIAL), printable_char.filter(lambda c: c != "\\"))
names = st.text(name_char, min_size=1, max_size=16)
measurements = names.filter(lambda s: not s.startswith("#"))
# Any text the wire format allows in a string field, bar the three characters the encoder
# rewrites (newline, CR, tab; tested separately).
string_values = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\t"), max_size=30)
field_values = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    string_values,
)
samples = st.builds(
    Sample,
    measurement=measurements,
    tags=st.dictionaries(names, names, max_size=6),
    fields=st.dictionaries(names, field_values, min_size=1, max_size=6),
    time_ns=st.integers(0, 2**62),
)


def same_value(a: object, b: object) -> bool:
    """Equal with the type kept (True is not 1, 1.0 is not 1) and floats bit-exact (-0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)  # type: ignore[arg-type]
    return a == b


def assert_round_trip(line: str, s: Sample) -> None:
    got = parse(line)
    assert got.measurement == s.measurement
    assert got.tags == dict(s.tags)
    assert got.time_ns == s.time_ns
    assert got.fields.keys() == s.fields.keys()
    for k, v in s.fields.items():
        assert same_value(got.fields[k], v), (k, got.fields[k], v)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(samples)
@example(Sample("if stats,x", {"县": "城关镇 机房", "a=b": "c,d", "q": '"x"'}, {"f g": 1, "h=i,j": 'a\\b"c'}, 1))
@example(Sample("m", {"k": "v"}, {"big": INT64_MAX, "small": INT64_MIN, "t": True, "n": 1, "z": -0.0}, 0))
def test_round_trip(s: Sample) -> None:
    assert_round_trip(LineEncoder().encode(s), s)  # type: ignore[arg-type]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(samples)
def test_agrees_with_influxdb_client_point(s: Sample) -> None:
    """influxdb-client's Point is the oracle: both lines must read back as the same point.

    (The text differs only where Point is lossy or loose: it writes 1.0 as ``1``.)
    """
    ours = parse(LineEncoder().encode(s))  # type: ignore[arg-type]
    point = Point(s.measurement)
    for k, v in s.tags.items():
        point.tag(k, v)
    for k, v in s.fields.items():
        point.field(k, v)
    theirs = parse(point.time(s.time_ns).to_line_protocol())
    assert (ours.measurement, ours.tags, ours.time_ns) == (theirs.measurement, theirs.tags, theirs.time_ns)
    assert ours.fields.keys() == theirs.fields.keys()
    for k in ours.fields:
        a, b = ours.fields[k], theirs.fields[k]
        if isinstance(a, float) and isinstance(b, float):
            assert a == b or (math.isnan(a) and math.isnan(b))
        else:
            assert same_value(a, b), (k, a, b)


def test_escaping_by_position() -> None:
    line = LineEncoder().encode(
        Sample("m,x y=z", {"t k=,": "v 1,=", "县": "城关镇"}, {"f,=k ": 'say "hi" \\ there'}, 5)
    )
    assert line == (r"m\,x\ y=z,t\ k\=\,=v\ 1\,\=,县=城关镇 f\,\=k\ =" + '"say \\"hi\\" \\\\ there"' + " 5")


def test_tags_sorted_and_order_of_input_irrelevant() -> None:
    enc = LineEncoder()
    a = enc.encode(Sample("m", {"site": "s", "agent": "a", "device": "d"}, {"v": 1}, 1))
    b = enc.encode(Sample("m", {"device": "d", "site": "s", "agent": "a"}, {"v": 1}, 1))
    assert a == b == "m,agent=a,device=d,site=s v=1i 1"


def test_value_types() -> None:
    assert format_value(True) == "true" and format_value(False) == "false"
    assert format_value(1) == "1i" and format_value(0) == "0i"
    assert format_value(INT64_MAX) == f"{INT64_MAX}i"
    assert format_value(INT64_MAX + 1) is None
    assert format_value(1.0) == "1.0"
    assert format_value(0.1 + 0.2) == "0.30000000000000004"
    assert float(format_value(5e-324)) == 5e-324  # type: ignore[arg-type]
    for bad in (math.nan, math.inf, -math.inf):
        assert format_value(bad) is None


def test_unstorable_fields_dropped_and_empty_samples_skipped() -> None:
    enc = LineEncoder()
    line = enc.encode(Sample("m", {}, {"a": math.nan, "b": 2, "c": INT64_MAX + 1}, 1))
    assert line == "m b=2i 1"
    assert enc.encode(Sample("m", {}, {"a": math.inf}, 1)) is None
    assert enc.encode(Sample("#comment", {}, {"a": 1}, 1)) is None  # would be read as a comment
    lines = enc.encode_many([Sample("m", {}, {"a": 1}, 1), Sample("m", {}, {"a": math.nan}, 2)])
    assert lines == ["m a=1i 1"]
    assert enc.skipped == 3


def test_empty_tag_values_are_left_out() -> None:
    assert LineEncoder().encode(Sample("m", {"a": "", "b": "x"}, {"v": 1}, 1)) == "m,b=x v=1i 1"


def test_drop_string_fields() -> None:
    enc = LineEncoder(drop_string_fields=True)
    assert enc.encode(Sample("m", {}, {"status": "ok", "code": 0}, 1)) == "m code=0i 1"
    assert enc.encode(Sample("m", {}, {"status": "ok"}, 1)) is None


@pytest.mark.parametrize(
    ("raw", "written", "read_back"),
    [
        ("DOMAIN\\user", "DOMAIN\\user", "DOMAIN\\user"),  # lone backslash: literal everywhere
        ("C:\\", "C:/", "C:/"),  # trailing: would escape the separator after it
        ("\\\\srv\\share", "//srv\\share", "//srv\\share"),  # runs: servers disagree on \\
        ("a\\ b", "a/\\ b", "a/ b"),  # before an escaped char
        ("a\\,b", "a/\\,b", "a/,b"),
        ("line\nbreak\ttab", "line\\nbreak\\ttab", "line\\nbreak\\ttab"),  # as influxdb-client does
    ],
)
def test_backslashes_and_controls_in_names(raw: str, written: str, read_back: str) -> None:
    assert escape_key(raw) == written
    line = LineEncoder().encode(Sample("m", {"k": raw}, {raw: 1}, 1))
    got = parse(line)  # type: ignore[arg-type]
    assert got.tags == {"k": read_back} and got.fields == {read_back: 1}


@settings(max_examples=300)
@given(st.text(st.one_of(st.sampled_from(list("\\,= ab县")), printable_char), min_size=1, max_size=20))
def test_names_with_backslashes_keep_their_shape(raw: str) -> None:
    """Whatever the backslashes, the line still parses into one tag and one field, and the name
    differs from the input only where a backslash became '/'."""
    line = LineEncoder().encode(Sample("m", {"k": raw, "z": "end"}, {raw: 1, "zz": 2}, 1))
    got = parse(line)  # type: ignore[arg-type]
    assert set(got.tags) == {"k", "z"} and got.tags["z"] == "end"
    for name in (got.tags["k"], next(k for k in got.fields if k != "zz")):
        assert len(name) == len(raw)
        assert all(a == b or (a == "\\" and b == "/") for a, b in zip(raw, name, strict=True))
    assert escape_measurement(raw).count("/") >= 0  # measurement escaping never raises


def test_newline_in_string_field_stays_on_one_line() -> None:
    line = LineEncoder().encode(Sample("m", {}, {"error": "no route\nto host\r\tx"}, 1))
    assert "\n" not in line  # type: ignore[operator]
    assert parse(line).fields == {"error": "no route\\nto host\\r\\tx"}  # type: ignore[arg-type]


def test_series_cache_is_bounded_and_stays_correct() -> None:
    enc = LineEncoder(max_series=3)
    for i in range(10):
        assert enc.encode(Sample("m", {"i": str(i)}, {"v": i}, i)) == f"m,i={i} v={i}i {i}"
        assert len(enc._series) <= 3
