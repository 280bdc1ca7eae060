"""Ingest: topics, refusals counted by reason and logged once, duplicates dropped by (agent, seq)."""

from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.ingest import Accepted, Ingest, Quota, SeqWindow, StatusUpdate, series_key
from collector.registry import Registry
from collector.state import StateDB
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
    assert len(w) == 100 and 999 in w and 899 not in w and 900 in w


def test_seq_window_costs_a_run_per_gap_not_an_entry_per_batch() -> None:
    w = SeqWindow(100_000)
    # live batches 5001..6000 first, then the backlog 1..5000 oldest first, with 3 dropped by the spool
    for seq in [*range(5001, 6001), *(s for s in range(1, 5001) if s not in (10, 11, 2000))]:
        w.add(seq)
    assert len(w) == 5997 and w.runs == 3  # 1-9, 12-1999, 2001-6000
    assert all(s in w for s in (1, 9, 12, 1999, 2001, 5000, 5001, 6000))
    assert not any(s in w for s in (0, 10, 11, 2000, 6001))
    w.add(2000)  # a late copy closing a gap joins two runs
    assert w.runs == 2 and 2000 in w


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=400), st.integers(min_value=1, max_value=50))
def test_seq_window_holds_exactly_the_highest_numbers_seen(seqs: list[int], size: int) -> None:
    w = SeqWindow(size)
    model: set[int] = set()  # the reference: every number seen, less the lowest beyond `size`
    for s in seqs:
        w.add(s)
        model.add(s)
        while len(model) > size:
            model.remove(min(model))
        assert len(w) == len(model)
    assert {s for s in range(-1, 302) if s in w} == model


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


# -- identity decided at the centre, quotas, the series cap across restarts --------------------
TOPO = """
sites:
  - id: city
    kind: city
    agents: [ag-city]
    children:
      - id: county-a
        kind: county
        agents: [ag-a]
        children:
          - {id: t1, kind: township, agents: [ag-t1]}
"""


def _registry(tmp_path: Path) -> Registry:
    (tmp_path / "topology.yaml").write_text(TOPO)
    return Registry.load(tmp_path / "topology.yaml")


def test_site_and_county_come_from_the_centre(tmp_path: Path) -> None:
    ing = Ingest(ROOT, wire.Limits(), registry=_registry(tmp_path))
    lying = [
        Sample("room", {"site": "city", "county": "elsewhere", "sensor": "s1"}, {"t": 1.0}, time.time_ns()),
        Sample("room", {"sensor": "s2"}, {"t": 2.0}, time.time_ns()),
    ]
    r = ing.handle(f"{ROOT}/agents/ag-t1/metrics", wire.encode("ag-t1", "city", 1, lying))
    assert isinstance(r, Accepted)
    assert [s.tags for s in r.envelope.samples] == [
        {"site": "t1", "county": "county-a", "agent": "ag-t1", "sensor": "s1"},
        {"site": "t1", "county": "county-a", "agent": "ag-t1", "sensor": "s2"},
    ]
    assert r.envelope.site == "t1"
    # the county agent is in its county; the city agent has none above it
    r2 = ing.handle(f"{ROOT}/agents/ag-a/metrics", wire.encode("ag-a", "x", 1, lying[1:]))
    r3 = ing.handle(f"{ROOT}/agents/ag-city/metrics", wire.encode("ag-city", "x", 1, lying[1:]))
    assert isinstance(r2, Accepted) and isinstance(r3, Accepted)
    assert r2.envelope.samples[0].tags["county"] == "county-a" and "county" not in r3.envelope.samples[0].tags
    counts = ing.take_counts()
    assert counts["identity_overridden"] == {"ag-t1": 1}  # one sample claimed another site
    assert ing.counters.snapshot()["identity_overridden"] == 1


def test_an_agent_the_centre_does_not_know_is_refused_until_admitted(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    ing = Ingest(ROOT, wire.Limits(), registry=reg)
    for seq in (1, 2):
        assert ing.handle(f"{ROOT}/agents/stranger/metrics", _batch("stranger", seq)) is None
    assert ing.handle(f"{ROOT}/agents/stranger/status", b'{"state":"online"}') is None
    assert ing.counters.snapshot()["rejected"] == {"unknown_agent": 3}
    assert ing.take_counts()["unknown"] == {"stranger": 3}
    reg.update_admitted({"stranger": "t1"})
    r = ing.handle(f"{ROOT}/agents/stranger/metrics", _batch("stranger", 3))
    assert isinstance(r, Accepted) and r.envelope.samples[0].tags["site"] == "t1"


def test_quota_refuses_what_an_agent_sends_past_it() -> None:
    # 3 messages of burst, refilled at one per 1000 s: the 4th and 5th are refused, others' not
    ing = Ingest(ROOT, wire.Limits(), quota=Quota(bytes_per_s=1e9, messages_per_s=0.001, burst_s=3000))
    got = [ing.handle(f"{ROOT}/agents/a1/metrics", _batch("a1", seq)) for seq in range(1, 6)]
    assert [isinstance(x, Accepted) for x in got] == [True, True, True, False, False]
    assert isinstance(ing.handle(f"{ROOT}/agents/a2/metrics", _batch("a2", 1)), Accepted)
    assert ing.counters.snapshot()["rejected"] == {"over_quota": 2}
    assert ing.take_counts()["over_quota"] == {"a1": 2}
    # and by bytes: a burst of 1.5 payloads lets one through
    size = len(_batch("a3", 1))
    ing2 = Ingest(ROOT, wire.Limits(), quota=Quota(bytes_per_s=size * 1.5 / 1000, messages_per_s=1e6, burst_s=1000))
    assert [isinstance(ing2.handle(f"{ROOT}/agents/a3/metrics", _batch("a3", s)), Accepted) for s in (1, 2)] == [
        True,
        False,
    ]


def test_series_cap_holds_across_a_restart(tmp_path: Path) -> None:
    def batch(seq: int, names: range) -> bytes:
        return wire.encode("a1", "s", seq, [Sample("m", {"id": str(i)}, {"v": 1}, time.time_ns()) for i in names])

    state = StateDB(tmp_path / "state.db")
    ing = Ingest(ROOT, wire.Limits(), max_series_per_agent=5)
    r = ing.handle(f"{ROOT}/agents/a1/metrics", batch(1, range(4)))
    assert isinstance(r, Accepted)
    ing.commit([r], seen_log=state)
    state.close()
    # restarted: state.db knows the 4 series, so only one new one fits
    known = StateDB(tmp_path / "state.db").load_series()
    assert len(known["a1"]) == 4
    again = Ingest(ROOT, wire.Limits(), max_series_per_agent=5, known_series=known)
    r2 = again.handle(f"{ROOT}/agents/a1/metrics", batch(2, range(2, 9)))
    assert isinstance(r2, Accepted)
    assert sorted(s.tags["id"] for s in r2.envelope.samples) == ["2", "3", "4"]
    assert again.counters.snapshot()["dropped_samples"] == {"series_cap": 4}
    assert series_key("m", {"id": "1", "agent": "a1", "site": "s"}) in known["a1"]  # the same in every process


def test_a_copy_counts_as_a_duplicate_and_nothing_else() -> None:
    """A redelivered batch (or the same one twice in a group) must not count its dropped samples
    and overridden tags again: they were counted with the first copy."""
    now = time.time_ns()
    rows = [
        Sample("m", {"agent": "liar"}, {"v": 1}, now),  # kept, identity overridden
        Sample("m", {}, {"v": None}, now),  # type: ignore[dict-item]  # bad_sample
    ]
    payload = wire.encode("a1", "s", 5, rows)
    ing = Ingest(ROOT, wire.Limits())
    topic = f"{ROOT}/agents/a1/metrics"
    group = ing.classify([(topic, payload), (topic, payload)])  # twice in one group
    assert len(group.accepted) == 1
    ing.commit(group.accepted)
    assert ing.handle(topic, payload) is None  # redelivered later
    snap = ing.counters.snapshot()
    assert snap["duplicates"] == 2
    assert snap["dropped_samples"] == {"bad_sample": 1}
    assert snap["identity_overridden"] == 1
