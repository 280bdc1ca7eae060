"""Ingest: topics, refusals counted by reason and logged once, duplicates dropped by (agent, seq)."""

from __future__ import annotations

import logging
import time
import zlib

import pytest

from collector.ingest import Accepted, Ingest, SeqWindow, StatusUpdate
from probes.model import Sample
from protocol import envelope as wire
from protocol.topics import Topics

ROOT = "netwatch/v1"


def _batch(agent: str, seq: int, n: int = 2) -> bytes:
    return wire.encode(agent, "town-1", seq, [Sample("m", {"i": str(i)}, {"v": i}, time.time_ns()) for i in range(n)])


@pytest.mark.parametrize(
    ("topic", "expect"),
    [
        ("netwatch/v1/agents/a-1/metrics", ("a-1", "metrics")),
        ("netwatch/v1/agents/a-1/status", ("a-1", "status")),
        ("netwatch/v1/agents/a-1/cmd/result", ("a-1", "cmd/result")),
        ("netwatch/v1/agents/a 1/metrics", None),
        ("netwatch/v1/agents/a-1/other", None),
        ("elsewhere/agents/a-1/metrics", None),
    ],
)
def test_parse_topic(topic: str, expect: tuple[str, str] | None) -> None:
    t = Topics(ROOT).parse(topic)
    assert (None if t is None else (t.agent, t.kind)) == expect


def test_garbage_is_counted_by_reason_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ing = Ingest(ROOT, wire.Limits(max_payload_bytes=10_000))
    caplog.set_level(logging.WARNING, "netwatch.collector.ingest")
    garbage = {
        "bad_header": b"plain text",
        "bad_compression": b"NW\x01\x01garbage",
        "bad_json": b"NW\x01\x00{oops",
        "bad_schema": b'NW\x01\x00{"agent":"a1","site":"s","seq":"x","sent":1,"samples":[]}',
        "agent_mismatch": _batch("someone-else", 1),
        "too_large": b"NW\x01\x00" + b"x" * 20_000,
    }
    for _ in range(3):
        for payload in garbage.values():
            assert ing.handle(f"{ROOT}/agents/a1/metrics", payload) is None
    snap = ing.counters.snapshot()
    assert snap["rejected"] == {reason: 3 for reason in garbage}
    assert snap["received_messages"] == 18
    assert len([r for r in caplog.records if "refused" in r.message]) == len(garbage)  # once per reason
    # and a good batch still goes through afterwards
    assert isinstance(ing.handle(f"{ROOT}/agents/a1/metrics", _batch("a1", 1)), Accepted)


def test_duplicates_dropped_after_mark() -> None:
    ing = Ingest(ROOT, wire.Limits())
    first = ing.handle(f"{ROOT}/agents/a1/metrics", _batch("a1", 7))
    assert isinstance(first, Accepted)
    ing.mark("a1", 7)
    assert ing.handle(f"{ROOT}/agents/a1/metrics", _batch("a1", 7)) is None
    assert isinstance(ing.handle(f"{ROOT}/agents/a2/metrics", _batch("a2", 7)), Accepted)  # per agent
    assert ing.counters.snapshot()["duplicates"] == 1


def test_status_messages() -> None:
    ing = Ingest(ROOT, wire.Limits())
    r = ing.handle(f"{ROOT}/agents/a1/status", b'{"state":"online","agent":"a1","version":"0.1.0"}')
    assert isinstance(r, StatusUpdate) and r.status.state == "online" and r.status.version == "0.1.0"
    assert ing.handle(f"{ROOT}/agents/a1/status", b'{"state":"sleepy"}') is None
    assert ing.handle(f"{ROOT}/agents/a1/status", b'{"state":"online","agent":"a2"}') is None
    assert ing.counters.snapshot()["rejected"] == {"bad_schema": 1, "agent_mismatch": 1}


def test_seq_window_is_bounded() -> None:
    w = SeqWindow(100)
    for i in range(1000):
        w.add(i)
    assert len(w) == 100 and 999 in w and 899 not in w


def test_a_validation_bug_refuses_that_message_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception inside validation (a bug, not a bad payload) is counted as a stage error and
    an `internal_error` refusal for that one message; the messages around it are classified."""
    ing = Ingest(ROOT, wire.Limits())
    real = wire.decode

    def flaky(payload: bytes, **kw: object) -> wire.Envelope:
        if b"boom" in zlib.decompress(payload[4:]):
            raise KeyError("bug")
        return real(payload, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(wire, "decode", flaky)
    boom = wire.encode("a1", "t", 2, [Sample("boom", {}, {"v": 1}, time.time_ns())])
    group = ing.classify(
        [
            (f"{ROOT}/agents/a1/metrics", _batch("a1", 1)),
            (f"{ROOT}/agents/a1/metrics", boom),
            (f"{ROOT}/agents/a1/metrics", _batch("a1", 3)),
        ]
    )
    assert [a.envelope.seq for a in group.accepted] == [1, 3]
    snap = ing.counters.snapshot()
    assert snap["stage_errors"] == {"ingest": 1} and snap["rejected"] == {"internal_error": 1}
