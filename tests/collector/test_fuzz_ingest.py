"""Hostile input at the collector's door: whatever arrives on an agent topic is either accepted
as valid Samples or refused with a counted reason — never an exception, never unbounded.

Budget: NETWATCH_FUZZ_EXAMPLES examples per property (300 in CI), each within a 5 s deadline
and a SIGALRM guard (tests/fuzzguard.py) against a hang. A longer run:
    NETWATCH_FUZZ_EXAMPLES=20000 bash tests/run.sh tests/collector/test_fuzz_ingest.py
Schema-valid envelopes with hostile rows, and exact refusal counts: test_fuzz_schema.py.
"""

from __future__ import annotations

import json
import os
import time
import zlib

from fuzzguard import hang_guard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.ingest import Accepted, Ingest, StatusUpdate
from collector.storage.lineproto import LineEncoder
from probes.model import Sample
from protocol import envelope as wire

EXAMPLES = int(os.environ.get("NETWATCH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
ROOT = "netwatch/v1"
NOW = time.time_ns()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


def _ingest() -> Ingest:
    return Ingest(ROOT, wire.Limits(max_payload_bytes=256 * 1024, max_body_bytes=1024 * 1024), max_series_per_agent=500)


def _check(ing: Ingest, topic: str, payload: bytes) -> None:
    with hang_guard():
        r = ing.handle(topic, payload)  # must not raise, nor hang
    if isinstance(r, Accepted):
        enc = LineEncoder(drop_string_fields=True)
        for s in r.envelope.samples:
            assert s.tags["agent"] == r.topic.agent
            line = enc.encode(s)  # every accepted sample can be written as line protocol
            assert line is None or "\n" not in line
    else:
        assert r is None or isinstance(r, StatusUpdate)


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["metrics", "events", "status", "cmd/result", "x"]))
def test_random_bytes_on_every_topic(data: bytes, kind: str) -> None:
    _check(_ingest(), f"{ROOT}/agents/a1/{kind}", data)


@FUZZ
@given(st.text(max_size=80), st.binary(max_size=50))
def test_random_topics(topic: str, data: bytes) -> None:
    _check(_ingest(), topic, data)


@FUZZ
@given(json_values)
def test_any_json_body(doc: object) -> None:
    body = json.dumps(doc).encode()  # a hostile sender is not limited to what orjson writes
    ing = _ingest()
    _check(ing, f"{ROOT}/agents/a1/metrics", wire.MAGIC + bytes((1, 0)) + body)
    _check(ing, f"{ROOT}/agents/a1/metrics", wire.MAGIC + bytes((1, 1)) + zlib.compress(body))


@FUZZ
@given(st.data())
def test_mutated_valid_envelopes(data: st.DataObject) -> None:
    samples = [
        Sample("iface", {"ifname": f"ge-0/0/{i}", "device": "sw"}, {"in_bps": i * 1.5, "up": True}, NOW)
        for i in range(20)
    ]
    good = bytearray(wire.encode("a1", "town", 9, samples, sent_ns=NOW, compress=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(good) - 1))
        if op == "flip":
            good[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del good[pos:]
            if not good:
                break
        else:
            good[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    _check(_ingest(), f"{ROOT}/agents/a1/metrics", bytes(good))


tag_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@FUZZ
@given(st.dictionaries(tag_text, tag_text, max_size=6), tag_text)
def test_tag_values_that_would_break_line_protocol(tags: dict[str, str], name: str) -> None:
    # commas, spaces, equals signs, quotes, backslashes, newlines, control characters, unicode:
    # refused per sample if not printable, otherwise escaped so each is exactly one line.
    payload = wire.encode("a1", "town", 1, [Sample(name, tags, {"v": 1, 'we"ird,f=ld': "x\\y"}, NOW)])
    _check(_ingest(), f"{ROOT}/agents/a1/metrics", payload)


def test_deep_json_is_refused() -> None:
    ing = _ingest()
    deep = b'{"agent":"a1","site":"s","seq":1,"sent":1,"samples":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert ing.handle(f"{ROOT}/agents/a1/metrics", wire.MAGIC + bytes((1, 0)) + deep) is None
    assert ing.counters.snapshot()["rejected"] == {"bad_json": 1}


def test_non_utf8_is_refused() -> None:
    ing = _ingest()
    body = b'{"agent":"a1","site":"s","seq":1,"sent":1,"samples":[["m",{"t":"\xff\xfe"},{"v":1},1]]}'
    assert ing.handle(f"{ROOT}/agents/a1/metrics", wire.MAGIC + bytes((1, 0)) + body) is None
    assert ing.counters.snapshot()["rejected"] == {"bad_json": 1}


def test_a_million_series_from_one_agent_is_capped() -> None:
    ing = _ingest()  # cap 500 series per agent
    kept = 0
    for seq in range(1, 101):  # 100 batches x 10,000 new series each = 1,000,000 series
        samples = [Sample("m", {"id": f"{seq}-{i}"}, {"v": 1}, NOW) for i in range(10_000)]
        r = ing.handle(f"{ROOT}/agents/a1/metrics", wire.encode("a1", "s", seq, samples))
        assert isinstance(r, Accepted)
        kept += len(r.envelope.samples)
        ing.mark("a1", seq)
    assert kept == 500
    assert ing.counters.snapshot()["dropped_samples"] == {"series_cap": 1_000_000 - 500}
    assert len(ing._series["a1"]) == 500  # memory bounded by the cap
    # an existing series still gets through; another agent has its own budget
    again = ing.handle(
        f"{ROOT}/agents/a1/metrics", wire.encode("a1", "s", 500, [Sample("m", {"id": "1-0"}, {"v": 2}, NOW)])
    )
    assert isinstance(again, Accepted) and len(again.envelope.samples) == 1
