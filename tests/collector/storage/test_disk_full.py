"""The collector's SQLite files on a real, small, full filesystem (a tmpfs the test mounts): a
write the disk refuses rolls back whole, says so (StoreUnavailable naming the full disk), leaves
the database intact (PRAGMA integrity_check) and usable, and succeeds once the space is back."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from services import free_port, start_victoria_metrics
from smallfs import SmallFs, integrity, small_fs

from collector.diskspace import DiskGuard, is_disk_full
from collector.state import StateDB
from collector.storage.base import StoreUnavailable
from collector.storage.buffered import BufferedSink
from collector.storage.influx import InfluxSink
from collector.storage.sqlite import SqliteSink
from probes.model import Sample

T0 = 1_700_000_000_000_000_000


def samples(n: int, *, start: int = 0, text: int = 200) -> list[Sample]:
    # random text: incompressible, so the pages it needs are really needed
    return [
        Sample(
            "room_env",
            {"site": "t1", "agent": "ag", "sensor": f"s{i % 7}"},
            {"temperature_c": 20.0 + i / 8, "n": i, "note": os.urandom(text // 2).hex()},
            T0 + i * 1_000_000,
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def fs(tmp_path: Path):
    with small_fs(tmp_path / "small", "2m") as f:
        yield f


def test_sqlite_store_full_disk_rolls_back_and_recovers(fs: SmallFs) -> None:
    db = fs.path / "metrics.db"
    sink = SqliteSink(db, retention_s=None)
    try:
        first = samples(50)
        sink.write(first)
        fs.fill()
        assert fs.available() < 64 * 1024
        big = samples(3000, start=50)  # ~1 MiB of points: cannot fit
        with pytest.raises(StoreUnavailable) as e:
            sink.write(big)
        assert is_disk_full(e.value), e.value
        assert "disk space" in str(e.value)  # the message says what to do
        assert integrity(db) == "ok"
        # nothing of the failed transaction is visible: the first batch only, exactly
        assert sink.stats().points == 50
        assert [s.fields for s in sink.query("room_env")] == [s.fields for s in first]
        fs.free()
        sink.write(big)  # the same connection, usable again
        got = sink.query("room_env")
        assert [(s.time_ns, s.fields) for s in got] == [(s.time_ns, dict(s.fields)) for s in first + big]
    finally:
        sink.close()
    assert integrity(db) == "ok"


def test_state_db_full_disk_transaction_rolls_back(fs: SmallFs) -> None:
    path = fs.path / "state.db"
    st = StateDB(path)
    try:
        with st.transaction():
            st.record_seen("ag", 1)
        fs.fill()
        # the real error, not "no transaction is active"
        with pytest.raises(sqlite3.Error) as e, st.transaction():
            for seq in range(2, 60_000):
                st.record_seen("ag", seq)
        assert is_disk_full(e.value), e.value
        assert integrity(path) == "ok"
        assert st.load_seen(100_000) == {"ag": [1]}
        fs.free()
        with st.transaction():  # no transaction was left open
            st.record_seen("ag", 2)
        assert st.load_seen(100_000) == {"ag": [1, 2]}
    finally:
        st.close()
    assert integrity(path) == "ok"


@pytest.mark.integration
def test_store_spool_full_disk_holds_then_drains_everything(fs: SmallFs, tmp_path: Path) -> None:
    """A remote store down and its local spool's disk full: write refuses (the caller keeps the
    message unacknowledged) instead of the drainer dying; with space and the store back, every
    sample spooled reaches the store once."""
    port = free_port()
    sink = BufferedSink(
        InfluxSink(f"http://127.0.0.1:{port}", "netwatch", "metrics", "", timeout_s=1),
        fs.path / "spool-influxdb.db",
        retry_s=0.2,
    )
    vm = None
    try:
        a = samples(40, text=20)
        sink.write(a)  # the store is down: spooled
        assert sink.stats().samples == 40
        fs.fill()
        with pytest.raises(StoreUnavailable) as e:
            sink.write(samples(3000, start=40))
        assert "unacknowledged" in str(e.value)
        assert sink.stats().samples == 40 and integrity(fs.path / "spool-influxdb.db") == "ok"
        fs.free()
        b = samples(3000, start=40)
        sink.write(b)  # spooled behind the first
        vm = start_victoria_metrics(tmp_path / "vm", port=port, dedup=None)
        deadline = time.monotonic() + 60
        while sink.stats().samples and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.stats().samples == 0, sink.stats()
        assert sink.drained_samples == 3040
        series = vm.wait_for_points('{__name__="room_env_n"}', 3040, timeout_s=30)
        got = sorted(int(v) for s in series for v in s["values"])
        assert got == list(range(3040))  # each once
    finally:
        sink.close()
        if vm is not None:
            vm.close()


def test_disk_guard_measures_the_reserve(fs: SmallFs) -> None:
    guard = DiskGuard([fs.path / "not-yet-made"], min_free=512 * 1024)
    assert guard.low() is None and not guard.full
    left = fs.fill(leave=256 * 1024)
    assert 200 * 1024 < left < 512 * 1024
    low = guard.low()
    assert low is not None and abs(low - left) <= 64 * 1024
    assert guard.full
    fs.free()
    assert guard.low() is None
