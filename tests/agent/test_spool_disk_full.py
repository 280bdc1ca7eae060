"""The agent's spool on a real, small, full filesystem (a tmpfs the test mounts): a batch the
disk refuses is dropped and counted exactly, its number is used again, the database stays
intact, and the counts become durable (what ``netwatch-agent status`` reads) once there is room."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from smallfs import integrity, small_fs

from agent.spool import Spool, read_stats


def test_full_disk_drops_count_exactly_and_recover(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with small_fs(tmp_path / "small", "2m") as fs:
        path = fs.path / "spool.db"
        sp = Spool(path, max_bytes=64 * 1024**2, max_age_s=3600)
        try:
            small = [sp.put(lambda seq: b"x%d" % seq, 3) for _ in range(3)]
            assert small == [1, 2, 3]
            fs.fill()
            # three batches of 300 KiB random bytes: none fits
            refused = [sp.put(lambda seq: os.urandom(300 * 1024), 7) for _ in range(3)]
            assert refused == [None, None, None]
            st = sp.stats()
            assert (st.dropped_batches, st.dropped_samples, st.depth, st.last_seq) == (3, 21, 3, 3)
            assert sp.write_errors == 3
            # logged once for the episode, not per batch
            assert sum("cannot write to the spool" in r.getMessage() for r in caplog.records) == 1
            assert integrity(path) == "ok"
            assert [p[0] for p in sp.pending(10)] == [1, 2, 3]  # what was spooled is still there
            fs.free()
            assert sp.put(lambda seq: b"y%d" % seq, 5) == 4  # the refused numbers were never used
            durable = read_stats(path)  # another process's view: the drops are on disk now
            assert (durable.dropped_batches, durable.dropped_samples, durable.depth) == (3, 21, 4)
            assert sp.ack([1, 2, 3, 4]) == 4
            assert read_stats(path).acked_samples == 3 * 3 + 5
            assert sum("writable again" in r.getMessage() for r in caplog.records) == 1
        finally:
            sp.close()
        assert integrity(path) == "ok"


def test_a_refused_batch_releases_its_journal_samples_when_its_drop_is_counted(tmp_path: Path) -> None:
    """The journal (crash window) and a full disk together: samples of a batch the disk refused are
    counted dropped and must leave the journal in that same commit — never both counted and, after
    a restart, recovered and stored too."""
    with small_fs(tmp_path / "small", "2m") as fs:
        path = fs.path / "spool.db"
        sp = Spool(path, max_bytes=64 * 1024**2, max_age_s=3600)
        try:
            assert sp.put(lambda seq: b"x", 1) == 1
            with sp._db:  # four measured samples in the journal, ids 1..4 (as Journal.record writes them)
                sp._db.executemany("INSERT INTO measured(id, sample) VALUES (?, ?)", [(i, b"s") for i in range(1, 5)])
            fs.fill()
            assert sp.put(lambda seq: os.urandom(300 * 1024), 3, release_upto=3) is None
            fs.free()
            # the next write that succeeds is an ack: it makes the drop durable, and releases 1..3 with it
            assert sp.ack([1]) == 1
            left = [r[0] for r in sp._db.execute("SELECT id FROM measured ORDER BY id")]
            assert left == [4]
            st = read_stats(path)
            assert (st.dropped_samples, st.depth) == (3, 0)
        finally:
            sp.close()
