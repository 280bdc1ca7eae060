"""Schema-aware fuzzing of the collector's door: hypothesis builds envelopes that pass the header,
the compression and the JSON schema (protocol/envelope.py) — or fail exactly one of them on
purpose — carrying hostile rows: values (huge ints, bools, nested objects, long strings, NaN),
types, timestamps (far past/future, negative, floats), seq (negative, huge, repeated), tags
(empty, huge, control characters, reserved names trying to override identity) and names made
to break line protocol (spaces, commas, quotes, '=', backslashes, '#').

Each example goes through the real path (Ingest.classify, the pipeline's call) and then the real
SQLite store. The oracle is the generator: it knows what it made each row and message. Asserted:
each refused message is counted under exactly its one reason, each refused row likewise, the
sums match; every accepted row reads back from SQLite exactly (values and types); each one's line
protocol parses with the independent tests/lp_parser.py to the same sample.

Budget: NETWATCH_FUZZ_EXAMPLES per property (60 here); each example must finish in 5 s
(hypothesis ``deadline``) and a SIGALRM guard stops one that hangs after 10 s.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fuzzguard import hang_guard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lp_parser import parse

from collector.ingest import Ingest
from collector.storage.lineproto import LineEncoder
from collector.storage.sqlite import SqliteSink
from probes.model import INT64_MAX, INT64_MIN, Sample
from protocol import envelope as wire

EXAMPLES = int(os.environ.get("NETWATCH_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5000,  # ms per example (~50 ms typical); a slow one fails here, a hung one at the SIGALRM guard
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
ROOT = "netwatch/v1"
DAY = 86400 * 10**9
#: the clock the rows are dated by, fixed so that generation is reproducible; the decoder's own
#: clock runs on, which the margins allow for (valid: 399 days back to 3500 s ahead; too new:
#: more than a day ahead, so a long suite run before this test changes nothing)
NOW = time.time_ns()
LIMITS = wire.Limits(max_payload_bytes=256 * 1024, max_body_bytes=1024 * 1024)


# -- names and values ---------------------------------------------------------------------------
#: characters that mean something in line protocol, JSON or SQL, plus some non-ASCII
HOSTILE = list(" ,=\"'\\#{}[]:;%$.*?/") + ["é", "镇", "🛰"]
printable_chars = st.one_of(
    st.sampled_from(HOSTILE),
    st.characters(codec="utf-8", categories=("L", "N", "P", "S")),
)


def printable(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(printable_chars, min_size=min_size, max_size=max_size).filter(str.isprintable)


ok_name = st.one_of(printable(1, 24), printable(1, 3).map(lambda s: (s * 128)[:128]))  # up to the 128 limit
#: not printable: a control character, a line or paragraph separator, an escape
unprintable = printable(0, 8).flatmap(
    lambda s: st.sampled_from(["\n", "\x00", "\x7f", "\t", "\u2028", "\x1b"]).map(lambda c: s + c)
)
bad_name = st.one_of(st.just(""), st.just("m" * (wire.MAX_NAME_LEN + 1)), unprintable)
bad_tag_key = st.one_of(st.just(""), st.just("k" * (wire.MAX_TAG_LEN + 1)), unprintable)
not_a_string = st.one_of(st.integers(-5, 5), st.none(), st.booleans(), st.just(["m"]), st.just({"m": 1}))
ok_tag_value = st.one_of(st.just(""), printable(1, 24), st.just("v" * 256))
bad_tag_value = st.one_of(st.just("v" * (wire.MAX_TAG_LEN + 1)), unprintable, not_a_string, st.floats(allow_nan=False))

ok_value: st.SearchStrategy[Any] = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, 1e19, 0.1 + 0.2]),
    st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40),  # newlines, quotes, NUL
    st.just('he said "a\\b"\n,x=1 2'),
    st.just("s" * wire.MAX_STRING_FIELD),
)
bad_value: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([INT64_MAX + 1, INT64_MIN - 1, 2**64 - 1]),  # beyond int64 (orjson still reads them as ints)
    st.none(),
    st.just([1, 2]),
    st.just({"nested": {"deep": 1}}),
    st.just("s" * (wire.MAX_STRING_FIELD + 1)),
)


@dataclass
class Row:
    raw: Any  # what goes into the JSON document
    verdict: str  # "ok", "bad_sample" or "bad_time"
    overrides: bool = False  # its own agent/site tags disagree with the identity


@st.composite
def rows(draw: st.DrawFn, now: int, agent: str, site: str) -> Row:
    fault = draw(
        st.sampled_from(
            ["none"] * 6
            + ["shape", "measurement", "tags", "tag_key", "tag_value", "too_many_tags"]
            + ["fields", "field_key", "field_value", "too_many_fields", "time_type", "time_range"]
        )
    )
    measurement = draw(ok_name)
    tags: dict[str, Any] = draw(
        st.dictionaries(ok_name.filter(lambda k: k not in ("agent", "site")), ok_tag_value, max_size=5)
    )
    # reserved names: the same value as the identity, another one, or empty (= absent)
    overrides = False
    for key, real in (("agent", agent), ("site", site)):
        choice = draw(st.sampled_from(["absent", "same", "other", "empty"]))
        if choice == "same":
            tags[key] = real
        elif choice == "other":
            tags[key] = real + "-x"
            overrides = True
        elif choice == "empty":
            tags[key] = ""
    fields: Any = draw(st.dictionaries(ok_name, ok_value, min_size=1, max_size=5))
    ts: Any = now + draw(st.integers(-399 * DAY, 3500 * 10**9))  # inside the window, with 100 s to spare
    verdict = "bad_sample"
    if fault == "none":
        verdict = "ok"
    elif fault == "measurement":
        measurement = draw(st.one_of(bad_name, not_a_string))
    elif fault == "tags":
        tags = draw(st.sampled_from([[], "agent=x", None, 1]))
    elif fault == "tag_key":
        tags[draw(bad_tag_key)] = "v"
    elif fault == "tag_value":
        tags[draw(ok_name)] = draw(bad_tag_value)
    elif fault == "too_many_tags":
        tags = {f"t{i}": "v" for i in range(wire.MAX_TAGS + 1)}
    elif fault == "fields":
        fields = draw(st.sampled_from([{}, [], "v=1", None, 7]))
    elif fault == "field_key":
        fields[draw(bad_name)] = 1
    elif fault == "field_value":
        fields[draw(ok_name)] = draw(bad_value)
    elif fault == "too_many_fields":
        fields = {f"f{i}": i for i in range(wire.MAX_FIELDS + 1)}
    elif fault == "time_type":
        ts = draw(st.sampled_from([float(now), str(now), None, True, [now]]))
    elif fault == "time_range":
        verdict = "bad_time"
        ts = draw(
            st.one_of(
                st.integers(INT64_MIN, now - 401 * DAY),  # far past, zero, negative
                st.integers(now + DAY, 2**64 - 1),  # far future, past int64
            )
        )
    if fault == "shape":
        raw: Any = draw(
            st.sampled_from(["row", 5, None, {"m": 1}, [measurement, tags, fields], [measurement, tags, fields, ts, 1]])
        )
    else:
        raw = [measurement, tags, fields, ts]
    return Row(raw, verdict, overrides and verdict == "ok")


@dataclass
class Message:
    agent: str
    payload: bytes
    refusal: str | None  # the one reason it must be refused with, or None
    seq: int = -1
    site: str = ""
    rows: list[Row] = field(default_factory=list)


_agents = itertools.count()


@st.composite
def messages(draw: st.DrawFn, now: int, agent: str, seqs: list[int]) -> Message:
    site = draw(printable(1, 20))
    seq = draw(st.sampled_from(seqs))  # a few numbers, so some repeat: duplicates
    rs = draw(st.lists(rows(now, agent, site), max_size=6))
    doc: Any = {
        "agent": agent,
        "site": site,
        "seq": seq,
        "sent": draw(st.integers(INT64_MIN, INT64_MAX)),
        "samples": [r.raw for r in rs],
    }
    if draw(st.booleans()):
        doc["extra"] = {"ignored": [1, 2]}  # unknown keys are ignored
    kind = draw(
        st.sampled_from(
            ["ok"] * 8
            + ["bad_schema", "agent_mismatch", "bad_json", "bad_header", "bad_version", "bad_compression", "too_large"]
        )
    )
    refusal: str | None = None if kind == "ok" else kind
    if kind == "bad_schema":
        key, value = draw(
            st.sampled_from(
                [
                    ("seq", -1), ("seq", INT64_MAX + 1), ("seq", 2**64), ("seq", True), ("seq", 1.5), ("seq", "7"),
                    ("seq", None), ("sent", 1.5), ("sent", False), ("sent", "now"), ("samples", {"a": 1}),
                    ("samples", "[]"), ("agent", 5), ("site", ""), ("site", "a\nb"), ("site", "s" * 257),
                    ("site", None),
                ]
            )
        )  # fmt: skip
        doc[key] = value
        if draw(st.booleans()) and key != "samples":
            doc = draw(st.sampled_from([[doc], "doc", 7]))  # or the body is not an object at all
    elif kind == "agent_mismatch":
        doc["agent"] = agent + "-other"
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if kind == "bad_json":
        how = draw(st.sampled_from(["nan", "inf", "surrogate", "truncated", "latin1"]))
        if how == "nan":
            text = text[:-1] + ', "x": NaN}'
        elif how == "inf":
            text = text[:-1] + ', "x": -Infinity}'
        elif how == "surrogate":
            text = text[:-1] + ', "x": "\\ud800"}'
        elif how == "truncated":
            text = text[: max(0, len(text) - draw(st.integers(1, 5)))]
    body = text.encode()
    if kind == "bad_json" and how == "latin1":
        body = body[:-1] + b', "x": "\xff\xfe"}'
    compress = draw(st.booleans())
    codec = wire.CODEC_ZLIB if compress else wire.CODEC_NONE
    version = wire.VERSION
    if kind == "bad_version":
        version = draw(st.sampled_from([0, 2, 255]))
    if kind == "bad_compression":
        codec = draw(st.sampled_from([wire.CODEC_ZLIB, 2, 7, 255]))
        compress = False  # a plain body under the zlib codec is not zlib, and other codecs are unknown
    payload_body = zlib.compress(body, 6) if compress else body
    if kind == "bad_compression" and codec == wire.CODEC_ZLIB:
        payload_body = b"\x78\x9c" + body  # a zlib header and then not deflate
    payload = wire.MAGIC + bytes((version, codec)) + payload_body
    if kind == "bad_header":
        payload = draw(st.sampled_from([b"", b"N", b"XW", b"nw"])) + payload[2:]
    if kind == "too_large":
        payload = payload + os.urandom(LIMITS.max_payload_bytes + 1 - len(payload) + draw(st.integers(0, 99)))
    # the size limits come first (protocol/envelope.py Limits): the payload, then how far a
    # compressed body may expand (a decompression bomb: 16 KiB strings of one letter are one)
    if len(payload) > LIMITS.max_payload_bytes or (
        refusal in (None, "bad_schema", "agent_mismatch", "bad_json")
        and compress
        and len(body) > max(64 * 1024, len(payload_body) * LIMITS.max_ratio)
    ):
        refusal = "too_large"
    return Message(agent, payload, refusal, seq, site, rs)


@st.composite
def groups(draw: st.DrawFn) -> tuple[str, list[Message]]:
    now = NOW
    agent = f"fz{next(_agents)}"
    seqs = draw(st.lists(st.sampled_from([0, 1, 2, 7, INT64_MAX, 2**62]), min_size=1, max_size=3, unique=True))
    return agent, draw(st.lists(messages(now, agent, seqs), min_size=1, max_size=4))


# -- the oracle ---------------------------------------------------------------------------------
def expected_sample(row: Row, agent: str, site: str) -> Sample:
    m, tags, fields, ts = row.raw
    clean = {k: v for k, v in tags.items() if v}
    clean.update({"agent": agent, "site": site})
    return Sample(m, clean, fields, ts)


def typed(fields: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    return {k: (type(v), v) for k, v in fields.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteSink]:
    sink = SqliteSink(tmp_path_factory.mktemp("fuzz") / "metrics.db", retention_s=None)
    yield sink
    sink.close()


@FUZZ
@given(groups())
def test_hostile_rows_in_schema_valid_envelopes(store: SqliteSink, group: tuple[str, list[Message]]) -> None:
    with hang_guard():
        _check_group(store, *group)


def _check_group(store: SqliteSink, agent: str, msgs: list[Message]) -> None:
    ing = Ingest(ROOT, LIMITS, max_series_per_agent=100_000)
    topic = f"{ROOT}/agents/{agent}/metrics"
    out = ing.classify((topic, m.payload) for m in msgs)
    snap = ing.counters.snapshot()

    # what the generator made: one outcome per message, one per row of an accepted message
    want_refused: Counter[str] = Counter(m.refusal for m in msgs if m.refusal)
    accepted: list[Message] = []
    duplicates = 0
    taken: set[int] = set()
    for m in msgs:
        if m.refusal:
            continue
        if m.seq in taken:
            duplicates += 1
        else:
            taken.add(m.seq)
            accepted.append(m)
    want_dropped: Counter[str] = Counter(r.verdict for m in accepted for r in m.rows if r.verdict != "ok")
    assert snap["received_messages"] == len(msgs)
    assert snap["rejected"] == dict(want_refused)
    assert snap["rejected_total"] == sum(want_refused.values())
    assert snap.get("duplicates", 0) == duplicates
    assert snap["dropped_samples"] == dict(want_dropped), _row_diagnosis(accepted)
    assert snap.get("identity_overridden", 0) == sum(r.overrides for m in accepted for r in m.rows)
    assert snap["stage_errors"] == {}
    # every message is accounted for exactly once
    assert len(out.accepted) + snap["rejected_total"] + snap.get("duplicates", 0) == len(msgs)
    assert [(a.envelope.seq, len(a.envelope.samples)) for a in out.accepted] == [
        (m.seq, sum(r.verdict == "ok" for r in m.rows)) for m in accepted
    ]
    # the accepted rows, as the decoder must have made them
    want = [expected_sample(r, agent, m.site) for m in accepted for r in m.rows if r.verdict == "ok"]
    got = out.samples
    assert [(s.measurement, s.tags, typed(dict(s.fields)), s.time_ns) for s in got] == [
        (s.measurement, s.tags, typed(dict(s.fields)), s.time_ns) for s in want
    ]
    ing.commit(out.accepted)

    # ... round-trip exactly through the SQLite store (a later sample of the same series and time
    # merges its fields into the earlier one, the later value winning)
    store.write(got)
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in want:
        merged.setdefault((s.measurement, tuple(sorted(s.tags.items())), s.time_ns), {}).update(s.fields)
    back: dict[tuple[Any, ...], dict[str, Any]] = {}
    for name in {s.measurement for s in want}:
        for s in store.query(name, tags={"agent": agent}):
            back[(s.measurement, tuple(sorted(s.tags.items())), s.time_ns)] = dict(s.fields)
    assert back.keys() == merged.keys()
    for key, fields in merged.items():
        assert typed(back[key]) == typed(fields), key

    # ... and as line protocol an independent parser reads back to the same sample
    enc = LineEncoder()
    for s in got:
        line = enc.encode(s)
        if s.measurement.startswith("#"):
            assert line is None  # a comment to the server: never sent (counted as skipped)
            continue
        assert line is not None and "\n" not in line
        p = parse(line)  # raises on anything malformed
        assert p.time_ns == s.time_ns
        assert len(p.tags) == len(s.tags) and len(p.fields) == len(s.fields)  # nothing split or merged
        # names are printable; one holding a backslash is rewritten by a documented rule
        # (collector/storage/lineproto.py), every other one reads back as it was
        if "\\" not in s.measurement:
            assert p.measurement == s.measurement
        for k, tv in s.tags.items():
            if "\\" not in k + tv:
                assert p.tags[k] == tv
        for k, value in s.fields.items():
            if "\\" in k:
                continue
            if isinstance(value, str):  # newline, CR and tab are written as the two characters \n, \r, \t
                value = value.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
            assert (type(p.fields[k]), p.fields[k]) == (type(value), value), (k, line)


def _row_diagnosis(accepted: list[Message]) -> str:
    """Which generated row the decoder judged otherwise than the generator (for a failure message)."""
    out = []
    for m in accepted:
        for r in m.rows:
            env = wire.decode(wire.encode(m.agent, m.site, 1, []), topic_agent=m.agent)  # a clean clock
            one = json.dumps({"agent": m.agent, "site": m.site, "seq": 1, "sent": env.sent_ns, "samples": [r.raw]})
            got = wire.decode(wire.MAGIC + bytes((1, 0)) + one.encode(), topic_agent=m.agent)
            verdict = next(iter(got.dropped), "ok")
            if verdict != r.verdict:
                out.append(f"generator said {r.verdict}, decoder {verdict}: {repr(r.raw)[:300]}")
    return "\n".join(out)
