"""SqliteSink: exact round trips, idempotent and merging writes, filters, retention, concurrent readers."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from collector.storage import Sink, StorageError, StoreRejected, StoreUnavailable
from collector.storage.sqlite import SqliteSink
from probes.model import Sample

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


@pytest.fixture
def sink(tmp_path: Path):
    s = SqliteSink(tmp_path / "metrics.db", retention_s=3600)
    yield s
    s.close()


def iface(i: int, *, device: str = "sw-县-1", ifname: str = "Gi0/0/1", t: int | None = None) -> Sample:
    return Sample(
        "interface",
        {"site": "城关镇", "agent": "ag-1", "device": device, "ifname": ifname},
        {
            "in_octets": 2**40 + i,
            "in_bps": 1234.5 + i / 3,
            "util_in_pct": 0.1 + 0.2,
            "oper_up": i % 2 == 0,
            "oper_status": "up",
            "neg_zero": -0.0,
            "tiny": 5e-324,
        },
        T0 + i * S if t is None else t,
    )


def assert_same_sample(got: Sample, want: Sample) -> None:
    assert (got.measurement, dict(got.tags), got.time_ns) == (want.measurement, dict(want.tags), want.time_ns)
    assert got.fields.keys() == want.fields.keys()
    for k, v in want.fields.items():
        g = got.fields[k]
        assert type(g) is type(v), (k, g, v)
        assert g == v, (k, g, v)
        if isinstance(v, float):
            assert math.copysign(1, g) == math.copysign(1, v)  # type: ignore[arg-type]


def test_is_a_sink(sink: SqliteSink) -> None:
    assert isinstance(sink, Sink) and sink.name == "sqlite"


def test_round_trip_keeps_values_and_types(sink: SqliteSink) -> None:
    want = [iface(i) for i in range(10)]
    sink.write(want)
    got = sink.query("interface")
    assert len(got) == 10
    for g, w in zip(got, want, strict=True):
        assert_same_sample(g, w)
    assert sink.measurements() == ["interface"]


def test_rewrite_is_idempotent(sink: SqliteSink) -> None:
    batch = [iface(i) for i in range(50)]
    sink.write(batch)
    before = (sink.stats(), sink.query("interface"))
    sink.write(batch)  # a redelivered batch
    sink.write(batch[10:20])
    after = (sink.stats(), sink.query("interface"))
    assert after[0].points == before[0].points == 50
    assert after[0].series == before[0].series == 1
    assert after[1] == before[1]


def test_same_series_and_time_merges_fields(sink: SqliteSink) -> None:
    tags = {"site": "s", "device": "d"}
    sink.write([Sample("ups", tags, {"a": 1, "b": 2.5}, T0)])
    sink.write([Sample("ups", tags, {"b": 3.5, "c": "x"}, T0)])
    (got,) = sink.query("ups")
    assert got.fields == {"a": 1, "b": 3.5, "c": "x"}
    assert type(got.fields["a"]) is int


def test_series_identity_ignores_tag_order_and_empty_tags(sink: SqliteSink) -> None:
    sink.write([Sample("m", {"a": "1", "b": "2"}, {"v": 1}, T0)])
    sink.write([Sample("m", {"b": "2", "a": "1", "c": ""}, {"v": 2}, T0 + S)])
    assert sink.stats().series == 1
    assert [s.fields["v"] for s in sink.query("m")] == [1, 2]


def test_tag_filter(sink: SqliteSink) -> None:
    odd_key = 'we"ird.$key'
    sink.write(
        [iface(i, device="sw-a") for i in range(3)]
        + [iface(i, device="sw-b", ifname="Gi0/0/2") for i in range(4)]
        + [Sample("interface", {"device": "sw-c", odd_key: "县 x"}, {"v": 1}, T0)]
    )
    assert {s.tags["device"] for s in sink.query("interface", tags={"device": "sw-b"})} == {"sw-b"}
    assert len(sink.query("interface", tags={"device": "sw-b"})) == 4
    assert len(sink.query("interface", tags={"device": "sw-a", "ifname": "Gi0/0/1"})) == 3
    assert sink.query("interface", tags={"device": "sw-a", "ifname": "Gi0/0/2"}) == []
    assert len(sink.query("interface", tags={odd_key: "县 x"})) == 1
    assert sink.query("other") == []


def test_time_window_order_and_limit(sink: SqliteSink) -> None:
    # Written out of order and across two series: results come back ordered by time.
    sink.write([iface(i, device="sw-a") for i in (5, 1, 3)] + [iface(i, device="sw-b") for i in (4, 2, 0)])
    assert [s.time_ns for s in sink.query("interface")] == [T0 + i * S for i in range(6)]
    got = sink.query("interface", since_ns=T0 + 2 * S, until_ns=T0 + 5 * S)
    assert [s.time_ns for s in got] == [T0 + i * S for i in (2, 3, 4)]  # since inclusive, until exclusive
    assert [s.time_ns for s in sink.query("interface", limit=2)] == [T0, T0 + S]
    latest = sink.query("interface", tags={"device": "sw-b"}, limit=1, newest_first=True)
    assert [s.time_ns for s in latest] == [T0 + 4 * S]


def test_prune_removes_old_points_and_empty_series(sink: SqliteSink) -> None:
    now = T0 + 10_000 * S
    old, new = now - 3601 * S, now - 3599 * S
    sink.write(
        [iface(0, device="gone", t=old - S), iface(1, device="gone", t=old)]
        + [iface(0, device="kept", t=old), iface(1, device="kept", t=new)]
        + [Sample("old_only", {"x": "1"}, {"v": 1}, old)]
    )
    assert sink.prune(now_ns=now) == 4
    assert sink.measurements() == ["interface"]
    assert [s.tags["device"] for s in sink.query("interface")] == ["kept"]
    assert sink.stats().series == 1 and sink.stats().points == 1
    # The series "gone" was deleted: writing to it again must create it afresh, not reuse a
    # cached id that now points nowhere.
    sink.write([iface(2, device="gone", t=now)])
    assert [s.time_ns for s in sink.query("interface", tags={"device": "gone"})] == [now]
    assert sink.prune(now_ns=now) == 0


def test_prune_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import collector.storage.sqlite as mod

    monkeypatch.setattr(mod, "_PRUNE_CHUNK", 7)
    with_sink = SqliteSink(tmp_path / "m.db", retention_s=1)
    with_sink.write([Sample("m", {"i": str(i % 3)}, {"v": i}, T0 + i) for i in range(50)])
    assert with_sink.prune(now_ns=T0 + 100 * S) == 50
    assert with_sink.stats().points == 0 and with_sink.stats().series == 0
    with_sink.close()


def test_no_retention_keeps_everything(tmp_path: Path) -> None:
    s = SqliteSink(tmp_path / "m.db", retention_s=None)
    s.write([iface(0, t=1)])
    assert s.prune() == 0 and s.stats().points == 1
    s.close()


def test_unstorable_samples_rejected_after_the_rest_is_stored(sink: SqliteSink) -> None:
    with pytest.raises(StoreRejected) as e:
        sink.write([iface(0), Sample("m", {}, {"v": math.nan}, T0), Sample("m", {}, {"v": 2**64}, T0)])
    assert e.value.rejected == 2
    assert len(sink.query("interface")) == 1
    # Unstorable fields next to good ones are left out, the good ones kept.
    sink.write([Sample("m", {}, {"v": math.inf, "w": 1}, T0)])
    assert sink.query("m")[0].fields == {"w": 1}


def test_write_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    s = SqliteSink(path)
    s.write([iface(i) for i in range(5)])
    s.close()
    s = SqliteSink(path)
    assert len(s.query("interface")) == 5
    s.write([iface(i) for i in range(3, 8)])
    assert s.stats().points == 8 and s.stats().series == 1
    s.close()


def test_locked_database_is_unavailable_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    s = SqliteSink(path, busy_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    t = time.monotonic()
    with pytest.raises(StoreUnavailable):
        s.write([iface(0)])
    assert time.monotonic() - t < 2
    other.execute("ROLLBACK")
    other.close()
    s.write([iface(0)])
    assert s.stats().points == 1
    s.close()


def test_closed_sink_raises(tmp_path: Path) -> None:
    s = SqliteSink(tmp_path / "m.db")
    s.close()
    with pytest.raises(StorageError):
        s.write([iface(0)])


def test_reader_sees_commits_while_writer_writes(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    writer = SqliteSink(path)
    writer.write([iface(0)])
    reader = SqliteSink.open_readonly(path)
    errors: list[BaseException] = []
    seen: list[int] = []

    def read() -> None:
        try:
            for _ in range(200):
                seen.append(len(reader.query("interface")))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    th = threading.Thread(target=read)
    th.start()
    for i in range(1, 100):
        writer.write([iface(i)])
    th.join()
    assert not errors
    assert seen == sorted(seen) and seen[0] >= 1  # never goes back, never sees half a batch
    assert len(reader.query("interface")) == 100
    assert reader.stats().points == 100
    with pytest.raises(sqlite3.OperationalError):
        reader._db().execute("DELETE FROM points")  # read-only really is read-only
    reader.close()
    writer.close()


def test_reader_in_another_process(tmp_path: Path) -> None:
    """What ``netwatch-collector query`` does: open the file the running collector writes."""
    path = tmp_path / "m.db"
    writer = SqliteSink(path)
    writer.write([iface(i) for i in range(20)])
    script = textwrap.dedent(
        f"""
        from collector.storage.sqlite import SqliteSink
        r = SqliteSink.open_readonly({str(path)!r})
        got = r.query("interface", tags={{"site": "城关镇"}}, newest_first=True, limit=1)[0]
        print(r.measurements(), r.stats().points, got.fields["in_octets"], got.fields["oper_up"])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == ["['interface']", "20", str(2**40 + 19), "False"]
    writer.close()
    # Also after the writer closed (its WAL files are gone).
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split()[1] == "20"


def test_open_readonly_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no netwatch database"):
        SqliteSink.open_readonly(tmp_path / "nope.db")


def test_stats_counts_file_bytes(sink: SqliteSink) -> None:
    sink.write([iface(i) for i in range(100)])
    st = sink.stats()
    assert st.points == 100 and st.series == 1 and st.file_bytes > 4096


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StorageError, match="schema version 99"):
        SqliteSink(path)


def test_store_stage_counts_a_partly_committed_batch_exactly(sink: SqliteSink) -> None:
    """Six samples, two with no storable field: the sink commits four and refuses two; the store
    stage counts 4 stored and 2 refused (it used to count all six as refused), and the database
    holds exactly the four."""
    from collector.stats import Counters
    from collector.storage.fanout import Store

    now = time.time_ns()
    good = [Sample("room", {"sensor": f"s{i}"}, {"t": 20.0 + i}, now + i) for i in range(4)]
    bad = [
        Sample("room", {"sensor": "x"}, {"t": math.nan}, now + 10),
        Sample("room", {"sensor": "y"}, {"t": 2**70}, now),
    ]
    counters = Counters()
    assert Store([sink], counters, threading.Event()).write([good[0], bad[0], *good[1:3], bad[1], good[3]])
    snap = counters.snapshot()
    assert (snap["stored_samples_sqlite"], snap["store_rejected_sqlite"]) == (4, 2)
    stored = sink.query("room", since_ns=now - 1)
    assert sorted((s.tags["sensor"], s.fields["t"]) for s in stored) == [(f"s{i}", 20.0 + i) for i in range(4)]
