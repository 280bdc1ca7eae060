"""The batch envelope: round trip, and every way a payload is refused."""

from __future__ import annotations

import contextlib
import time
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.model import Sample
from protocol import envelope as wire

NOW = time.time_ns()


def _s(**fields: object) -> Sample:
    return Sample(
        "icmp", {"target": "10.0.0.1", "site": "forged", "agent": "forged"}, fields or {"rtt_avg_ms": 1.5}, NOW
    )


def test_round_trip_keeps_values_and_types_and_forces_identity() -> None:
    samples = [_s(rtt_avg_ms=1.25, sent=3, up=True, result="ok"), _s(loss_pct=0.0)]
    env = wire.decode(wire.encode("t-1", "town-1", 42, samples), topic_agent="t-1", now_ns=NOW)
    assert (env.agent, env.site, env.seq) == ("t-1", "town-1", 42)
    assert [dict(s.fields) for s in env.samples] == [
        {"rtt_avg_ms": 1.25, "sent": 3, "up": True, "result": "ok"},
        {"loss_pct": 0.0},
    ]
    assert type(env.samples[0].fields["sent"]) is int and type(env.samples[0].fields["up"]) is bool
    # site/agent come from the envelope the topic vouched for, never from a sample's own tags
    assert all(s.tags["agent"] == "t-1" and s.tags["site"] == "town-1" for s in env.samples)
    assert env.samples[0].time_ns == NOW


def test_compression_shrinks_repetitive_batches() -> None:
    samples = [_s(rtt_avg_ms=float(i)) for i in range(500)]
    packed = wire.encode("a", "s", 1, samples)
    plain = wire.encode("a", "s", 1, samples, compress=False)
    assert len(packed) * 5 < len(plain)
    assert (
        wire.decode(plain, topic_agent="a", now_ns=NOW).samples
        == wire.decode(packed, topic_agent="a", now_ns=NOW).samples
    )


def _body(doc: object) -> bytes:
    import json  # orjson refuses ints past 64 bits; a hostile sender does not

    return wire.MAGIC + bytes((wire.VERSION, wire.CODEC_ZLIB)) + zlib.compress(json.dumps(doc).encode())


GOOD = {"agent": "a", "site": "s", "seq": 1, "sent": NOW, "samples": []}


REFUSALS = [
    (b"hello world", "bad_header"),
    (b"", "bad_header"),
    (wire.MAGIC + bytes((9, 1)) + b"x", "bad_version"),
    (wire.MAGIC + bytes((1, 7)) + b"x", "bad_compression"),
    (wire.MAGIC + bytes((1, 1)) + b"not zlib at all", "bad_compression"),
    (wire.MAGIC + bytes((1, 1)) + zlib.compress(b"{" * 10)[:-4], "bad_compression"),
    (wire.MAGIC + bytes((1, 1)) + zlib.compress(b"{not json"), "bad_json"),
    (_body([1, 2, 3]), "bad_schema"),
    (_body({**GOOD, "seq": -1}), "bad_schema"),
    (_body({**GOOD, "seq": "7"}), "bad_schema"),
    (_body({**GOOD, "samples": {}}), "bad_schema"),
    (_body({**GOOD, "agent": "b"}), "agent_mismatch"),
    (b"NW\x01\x00" + b" " * (2 * 1024 * 1024), "too_large"),
]


# Ids by position: the payloads hold the current time, and pytest-xdist needs every worker to
# collect the same names.
@pytest.mark.parametrize(("payload", "reason"), REFUSALS, ids=[f"{i}-{r}" for i, (_, r) in enumerate(REFUSALS)])
def test_refusals_name_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError) as e:
        wire.decode(payload, topic_agent="a", now_ns=NOW)
    assert e.value.reason == reason


def test_compression_bomb_is_bounded() -> None:
    bomb = wire.MAGIC + bytes((1, 1)) + zlib.compress(b" " * (64 * 1024 * 1024), 9)
    assert len(bomb) < 100_000  # small on the wire...
    with pytest.raises(wire.WireError) as e:
        wire.decode(bomb, topic_agent="a", now_ns=NOW)
    assert e.value.reason == "too_large"  # ...and refused without inflating it all


def test_bad_samples_are_dropped_and_counted_not_the_batch() -> None:
    day = 86400 * 10**9
    doc = {
        **GOOD,
        "samples": [
            ["ok", {"t": "x"}, {"v": 1}, NOW],
            ["bad\nname", {}, {"v": 1}, NOW],
            ["m", {"t": 5}, {"v": 1}, NOW],
            ["m", {}, {}, NOW],
            ["m", {}, {"v": [1]}, NOW],
            ["m", {}, {"v": {"nested": 1}}, NOW],
            [["not", "a", "name"], {}, {"v": 1}, NOW],
            ["m", {"t": ["unhashable"]}, {"v": 1}, NOW],
            ["m", {"t": {"x": 1}}, {"v": 1}, NOW],
            ["m", {}, {"v": 1}, NOW + 30 * day],
            ["m", {}, {"v": 1}, NOW - 1000 * day],
            "not a list",
        ],
    }
    env = wire.decode(_body(doc), topic_agent="a", now_ns=NOW)
    assert [s.measurement for s in env.samples] == ["ok"]
    assert env.dropped == {"bad_sample": 9, "bad_time": 2}


def test_nan_and_inf_are_refused_as_bad_samples() -> None:
    # orjson cannot emit NaN; a hostile sender can write it by hand.
    body = b'{"agent":"a","site":"s","seq":1,"sent":1,"samples":[["m",{},{"v":NaN},%d]]}' % NOW
    with pytest.raises(wire.WireError) as e:
        wire.decode(wire.MAGIC + bytes((1, 0)) + body, topic_agent="a", now_ns=NOW)
    assert e.value.reason == "bad_json"


def test_empty_tag_values_are_removed() -> None:
    env = wire.decode(
        wire.encode("a", "s", 1, [Sample("m", {"x": "", "y": "1"}, {"v": 1}, NOW)]), topic_agent="a", now_ns=NOW
    )
    assert dict(env.samples[0].tags) == {"y": "1", "agent": "a", "site": "s"}


@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    for payload in (data, wire.MAGIC + bytes((1, 1)) + data, wire.MAGIC + bytes((1, 0)) + data):
        with contextlib.suppress(wire.WireError):
            wire.decode(payload, topic_agent="a", now_ns=NOW)


names = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=20).filter(
    str.isprintable
)
values = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), names
)


@given(
    st.lists(
        st.tuples(
            names, st.dictionaries(names, names, max_size=4), st.dictionaries(names, values, min_size=1, max_size=4)
        ),
        max_size=20,
    )
)
def test_any_valid_sample_round_trips(rows: list) -> None:
    samples = [Sample(m, t, f, NOW) for m, t, f in rows]
    env = wire.decode(wire.encode("a", "s", 5, samples), topic_agent="a", now_ns=NOW)
    assert env.dropped == {}
    assert [(s.measurement, dict(s.fields)) for s in env.samples] == [(s.measurement, dict(s.fields)) for s in samples]


@pytest.mark.parametrize(
    ("literal", "kept"),
    [
        ("-9223372036854775809", None),  # one below int64: orjson reads it as a float
        ("18446744073709551616", None),  # 2**64: likewise
        ("123456789012345678901234567890", None),
        ("9223372036854775808", None),  # 2**63: an int to orjson, refused as before
        ("1e19", 1e19),  # a genuine large float stays
        ("-9.3e18", -9.3e18),
    ],
)
def test_integers_beyond_int64_are_refused_not_rounded(literal: str, kept: float | None) -> None:
    body = (
        '{"agent":"a","site":"s","seq":1,"sent":1,"samples":'
        f'[["m",{{}},{{"v":{literal}}},{NOW}],["m",{{"k":"2"}},{{"v":2}},{NOW}]]}}'
    ).encode()
    env = wire.decode(wire.MAGIC + bytes((1, 0)) + body, topic_agent="a")
    if kept is None:
        assert env.dropped == {"bad_sample": 1}
        assert [dict(s.fields) for s in env.samples] == [{"v": 2}]
    else:
        assert env.dropped == {}
        assert [dict(s.fields) for s in env.samples] == [{"v": kept}, {"v": 2}]
        assert type(env.samples[0].fields["v"]) is float


def test_a_refused_sample_is_not_also_counted_as_overriding_identity() -> None:
    rows = [
        Sample("m", {"agent": "liar"}, {"v": float("nan")}, NOW),  # bad_sample: counted there only
        Sample("m", {"agent": "liar"}, {"v": 1}, NOW - 500 * 86400 * 10**9),  # bad_time: likewise
        Sample("m", {"agent": "liar"}, {"v": 1}, NOW),  # kept, its agent tag replaced: counted
    ]
    env = wire.decode(wire.encode("a", "s", 1, rows), topic_agent="a")
    assert env.dropped == {"bad_sample": 1, "bad_time": 1}
    assert env.overridden == 1
    assert env.samples[0].tags["agent"] == "a"
