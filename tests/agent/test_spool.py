"""The on-disk spool: sequence numbers survive restarts, acks remove, caps drop oldest first."""

from __future__ import annotations

from pathlib import Path

from agent.spool import Spool, read_stats


def test_seq_is_monotonic_across_restarts_even_when_empty(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    sp = Spool(p, max_bytes=10**6, max_age_s=3600)
    seqs = [sp.put(lambda seq: b"x" * 10 + str(seq).encode(), 3) for _ in range(3)]
    assert seqs == [1, 2, 3]
    assert sp.ack([1, 2, 3]) == 3
    sp.close()
    sp = Spool(p, max_bytes=10**6, max_age_s=3600)  # everything acked: the next number must not restart
    assert sp.put(lambda seq: b"y", 1) == 4
    st = sp.stats()
    assert (st.depth, st.acked_batches, st.acked_samples, st.last_seq) == (1, 3, 9, 4)


def test_pending_oldest_first_skips_inflight(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=10**6, max_age_s=3600)
    for _ in range(5):
        sp.put(lambda seq: f"b{seq}".encode(), 1)
    assert [s for s, _, _ in sp.pending(3, exclude={1})] == [2, 3, 4]
    assert sp.pending(1, newest_first=True) == [(5, "metrics", b"b5")]
    sp.put(lambda seq: b"ev", 1, topic="events")
    assert sp.pending(1, newest_first=True) == [(6, "events", b"ev")]


def test_byte_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=250, max_age_s=3600)
    for _ in range(5):
        sp.put(lambda seq: bytes(100), 7)
    assert sp.enforce_caps() == (3, 21)
    assert [s for s, _, _ in sp.pending(10)] == [4, 5]
    st = read_stats(tmp_path / "s.db")
    assert (st.depth, st.bytes, st.dropped_batches, st.dropped_samples) == (2, 200, 3, 21)


def test_age_cap(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=10**6, max_age_s=60)
    sp.put(lambda seq: b"old", 2, created_ns=1_000_000_000_000)
    sp.put(lambda seq: b"new", 2)
    assert sp.enforce_caps() == (1, 2)
    assert [p for _, _, p in sp.pending(10)] == [b"new"]


def test_the_last_acknowledged_batch_is_remembered(tmp_path: Path) -> None:
    p = tmp_path / "s.db"
    sp = Spool(p, max_bytes=10**6, max_age_s=3600)
    for _ in range(5):
        sp.put(lambda seq: b"z", 1)
    assert (sp.stats().last_acked_seq, sp.stats().last_acked_ns) == (0, 0)
    sp.ack([3, 1])
    sp.ack([2])  # an older ack arriving later does not move it back
    st = read_stats(p)  # as diag and status read it, from another process
    assert st.last_acked_seq == 3 and st.last_acked_ns > 0 and st.depth == 2
    sp.close()
