"""The agent's on-disk spool: every batch is written here before it is published and removed
only when the broker acknowledges it. Also the source of the monotonic batch sequence number."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from probes.files import private_file

log = logging.getLogger("netwatch.agent.spool")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    created_ns INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL,
    topic TEXT NOT NULL DEFAULT 'metrics'  -- metrics | events: the MQTT topic it goes to
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- the journal: probe runs under way (written before the probe sends anything) and samples
-- measured but not yet cut into a batch; recovered by the next start (see Spool.journal)
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    target TEXT NOT NULL,
    started_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS measured (id INTEGER PRIMARY KEY, sample BLOB NOT NULL);
"""

#: ``spool.sync``: how hard a journal commit goes to disk (a batch commit is always FULL)
JournalSync = Literal["normal", "full"]


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    oldest_ns: int | None
    last_seq: int
    dropped_batches: int
    dropped_samples: int
    acked_batches: int = 0
    acked_samples: int = 0
    #: the highest sequence number the broker acknowledged, and when (0: none yet)
    last_acked_seq: int = 0
    last_acked_ns: int = 0
    #: probe runs started but never finished (the agent was killed or the probe cancelled)
    interrupted_runs: int = 0
    #: starts after the node went down under a running agent (power loss, kernel crash)
    unclean_reboots: int = 0

    def oldest_age_s(self, now_ns: int | None = None) -> float:
        if self.oldest_ns is None:
            return 0.0
        return max(0.0, ((now_ns or time.time_ns()) - self.oldest_ns) / 1e9)


class Spool:
    def __init__(
        self, path: str | Path, *, max_bytes: int, max_age_s: float, journal_sync: JournalSync = "normal"
    ) -> None:
        self.path = Path(path)
        private_file(self.path)
        self.max_bytes = max_bytes
        self.max_age_ns = int(max_age_s * 1e9)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        # WAL + synchronous=FULL: a batch the spool said it holds survives SIGKILL and power loss.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT COALESCE(SUM(size), 0), COALESCE(MAX(seq), 0) FROM batches").fetchone()
        self._bytes = int(row[0])
        self._last_seq = max(int(row[1]), self._meta("last_seq"))
        self.journal_sync = journal_sync
        # Batches that could not be written (disk full, I/O error): counted here until a write
        # succeeds again, then added to the dropped counters in the spool in that same commit.
        self._unsaved_batches = 0
        self._unsaved_samples = 0
        #: every batch refused by the disk since start (the self-metric ``spool_write_errors``)
        self.write_errors = 0
        self._failing = False
        # Acknowledged batches whose removal the disk refused: removed on the next ack, not resent.
        self._ack_retry: list[int] = []
        # Journal samples a refused batch held: released with the next write that succeeds, when its
        # drop is counted, so a sample is never both counted dropped and recovered from the journal.
        self._release_pending = 0

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, key: str, by: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (key, by),
        )

    @property
    def next_seq(self) -> int:
        """The number the next ``put`` will give."""
        return self._last_seq + 1

    def put(
        self,
        encode: Callable[[int], bytes],
        samples: int,
        *,
        created_ns: int | None = None,
        topic: str = "metrics",
        release_upto: int = 0,
    ) -> int | None:
        """Give the batch the next sequence number, encode it with that number and store it; in
        the same transaction, remove journal samples up to id ``release_upto`` (the batch holds them).

        Returns the number, or None when the disk refused the write (full, or an I/O error): the
        batch is then dropped and counted (``dropped_batches``/``dropped_samples``, kept in memory
        until the next write succeeds and made durable with it) and its number is used again."""
        seq = self._last_seq + 1
        payload = encode(seq)
        now = created_ns if created_ns is not None else time.time_ns()
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO batches(seq, created_ns, samples, size, payload, topic) VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, now, samples, len(payload), payload, topic),
                )
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('last_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (seq,),
                )
                if release_upto:
                    self._db.execute("DELETE FROM measured WHERE id <= ?", (release_upto,))
                self._save_unsaved()
        except sqlite3.Error as e:
            self._write_failed(e, samples)
            self._release_pending = max(self._release_pending, release_upto)
            return None
        self._recovered()
        self._last_seq = seq
        self._bytes += len(payload)
        return seq

    def _save_unsaved(self) -> None:
        """Inside a write transaction: add the drops only counted in memory to the spool's counters."""
        if self._unsaved_batches:
            self._bump("dropped_batches", self._unsaved_batches)
            self._bump("dropped_samples", self._unsaved_samples)
        if self._release_pending:
            self._db.execute("DELETE FROM measured WHERE id <= ?", (self._release_pending,))

    def _write_failed(self, err: sqlite3.Error, samples: int) -> None:
        self._rollback()
        self._unsaved_batches += 1
        self._unsaved_samples += samples
        self.write_errors += 1
        if not self._failing:
            self._failing = True
            log.error(
                "cannot write to the spool %s (%s): new batches are dropped and counted as dropped_samples "
                "until there is room again — free disk space / 缓存写入失败（磁盘已满？），新数据将被丢弃并计数",
                self.path,
                err,
            )

    def _recovered(self) -> None:
        """A write committed: the in-memory drops went with it."""
        self._unsaved_batches = self._unsaved_samples = 0
        self._release_pending = 0
        if self._failing:
            self._failing = False
            log.warning("the spool %s is writable again / 缓存已恢复写入", self.path)

    def _rollback(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL does); make sure no transaction is left open.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def pending(
        self, limit: int, *, exclude: Iterable[int] = (), newest_first: bool = False
    ) -> list[tuple[int, str, bytes]]:
        """Unacknowledged batches as (seq, topic, payload), oldest first (or newest first),
        skipping ``exclude``."""
        skip = set(exclude)
        skip.update(self._ack_retry)
        order = "DESC" if newest_first else "ASC"
        out: list[tuple[int, str, bytes]] = []
        cur = self._db.execute(f"SELECT seq, topic, payload FROM batches ORDER BY seq {order}")
        for seq, topic, payload in cur:
            if seq in skip:
                continue
            out.append((int(seq), str(topic), bytes(payload)))
            if len(out) >= limit:
                break
        cur.close()
        return out

    def ack(self, seqs: Iterable[int]) -> int:
        """Remove batches the broker has acknowledged; returns how many were removed. If the
        disk refuses the delete, they are kept aside (never resent) and removed with the next ack."""
        seqs = self._ack_retry + list(seqs)
        if not seqs:
            return 0
        removed = samples = freed = 0
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                for seq in seqs:
                    row = self._db.execute(
                        "DELETE FROM batches WHERE seq = ? RETURNING size, samples", (seq,)
                    ).fetchone()
                    if row:
                        removed += 1
                        samples += int(row[1])
                        freed += int(row[0])
                if removed:
                    self._bump("acked_batches", removed)
                    self._bump("acked_samples", samples)
                    self._db.execute(
                        "INSERT INTO meta(key, value) VALUES ('last_acked_seq', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = MAX(value, excluded.value)",
                        (max(seqs),),
                    )
                    self._db.execute(
                        "INSERT INTO meta(key, value) VALUES ('last_acked_ns', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (time.time_ns(),),
                    )
                self._save_unsaved()
        except sqlite3.Error as e:
            self._rollback()
            self._ack_retry = seqs
            log.debug("spool: removing acknowledged batches failed (%s); retried with the next ack", e)
            return 0
        self._ack_retry = []
        self._recovered()
        self._bytes -= freed
        return removed

    def enforce_caps(self, now_ns: int | None = None) -> tuple[int, int]:
        """Drop the oldest batches past the age or byte cap. Returns (batches, samples) dropped."""
        now = now_ns if now_ns is not None else time.time_ns()
        dropped_b = dropped_s = freed = 0
        emptied = False
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    "DELETE FROM batches WHERE created_ns < ? RETURNING size, samples", (now - self.max_age_ns,)
                ).fetchall()
                for size, n in rows:
                    freed += int(size)
                    dropped_b += 1
                    dropped_s += int(n)
                while self._bytes - freed > self.max_bytes:
                    row = self._db.execute(
                        "DELETE FROM batches WHERE seq = (SELECT MIN(seq) FROM batches) RETURNING size, samples"
                    ).fetchone()
                    if row is None:
                        emptied = True
                        break
                    freed += int(row[0])
                    dropped_b += 1
                    dropped_s += int(row[1])
                if dropped_b:
                    self._bump("dropped_batches", dropped_b)
                    self._bump("dropped_samples", dropped_s)
        except sqlite3.Error as e:
            self._rollback()
            log.debug("spool: enforcing the caps failed (%s); tried again with the next batch", e)
            return 0, 0
        self._bytes = 0 if emptied else max(0, self._bytes - freed)
        return dropped_b, dropped_s

    def stats(self) -> SpoolStats:
        depth, oldest = self._db.execute("SELECT COUNT(*), MIN(created_ns) FROM batches").fetchone()
        return SpoolStats(
            int(depth),
            self._bytes,
            oldest,
            self._last_seq,
            self._meta("dropped_batches") + self._unsaved_batches,
            self._meta("dropped_samples") + self._unsaved_samples,
            self._meta("acked_batches"),
            self._meta("acked_samples"),
            self._meta("last_acked_seq"),
            self._meta("last_acked_ns"),
            self._meta("interrupted_runs"),
            self._meta("unclean_reboots"),
        )

    # -- the journal: what is measured is on disk before it is batched -------------------
    def journal(
        self,
        samples: Iterable[tuple[int, bytes]] = (),
        finished: Iterable[int] = (),
        begun: Iterable[tuple[int, str, str, str, int]] = (),
    ) -> None:
        """One commit (the group commit): samples measured, as (id, encoded sample); runs
        finished (their samples are among these or earlier ones); runs begun, as (id, kind,
        name, target, started_ns). With ``journal_sync`` "normal" the commit is a write to the
        WAL with no fsync: it survives the agent being killed, not the node losing power;
        "full" syncs it to disk (see the README)."""
        normal = self.journal_sync == "normal"
        if normal:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT INTO measured(id, sample) VALUES (?, ?)", samples)
                self._db.executemany("DELETE FROM runs WHERE id = ?", ((r,) for r in finished))
                self._db.executemany(
                    "INSERT INTO runs(id, kind, name, target, started_ns) VALUES (?, ?, ?, ?, ?)", begun
                )
        finally:
            if normal:
                self._db.execute("PRAGMA synchronous=FULL")

    def journaled(self) -> list[tuple[int, bytes]]:
        """Samples measured and not yet in a batch, as (id, encoded sample), oldest first."""
        return [(int(i), bytes(b)) for i, b in self._db.execute("SELECT id, sample FROM measured ORDER BY id")]

    def journal_ids(self) -> tuple[int, int]:
        """The highest journal sample id and run id used so far (0: none)."""
        row = self._db.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM measured), (SELECT COALESCE(MAX(id), 0) FROM runs)"
        ).fetchone()
        return int(row[0]), int(row[1])

    def settle_runs(
        self, describe: Callable[[str, str, str, int], bytes], runs: Iterable[int] | None = None, *, first_id: int
    ) -> list[tuple[int, bytes]]:
        """Runs that began and will never finish (``runs``, or all left by an earlier process):
        each becomes a journal sample made by ``describe(kind, name, target, started_ns)``, with
        ids from ``first_id`` on, and is counted in ``interrupted_runs`` — one transaction.
        Returns the samples added, as (id, encoded sample)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if runs is None:
                rows = self._db.execute("SELECT id, kind, name, target, started_ns FROM runs ORDER BY id").fetchall()
            else:
                rows = [
                    r
                    for rid in runs
                    for r in self._db.execute(
                        "SELECT id, kind, name, target, started_ns FROM runs WHERE id = ?", (rid,)
                    ).fetchall()
                ]
            added = [
                (first_id + i, describe(str(k), str(n), str(t), int(ns))) for i, (_, k, n, t, ns) in enumerate(rows)
            ]
            if rows:
                self._db.executemany("INSERT INTO measured(id, sample) VALUES (?, ?)", added)
                self._db.executemany("DELETE FROM runs WHERE id = ?", ((int(r[0]),) for r in rows))
                self._bump("interrupted_runs", len(rows))
        return added

    def begin_session(self, boot: int) -> bool:
        """An agent process starts on the node's boot ``boot``. True (and counted in
        ``unclean_reboots``) when the last process never stopped and the node has booted since:
        it went down under the agent — power loss or a crash of the node, not of the agent."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            unclean = self._meta("running") == 1 and self._meta("boot") != boot
            if unclean:
                self._bump("unclean_reboots", 1)
            for key, value in (("running", 1), ("boot", boot)):
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
        return unclean

    def end_session(self) -> None:
        """The agent stops cleanly (everything it measured is batched)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE meta SET value = 0 WHERE key = 'running'")

    def close(self) -> None:
        self._db.close()


def read_stats(path: str | Path) -> SpoolStats:
    """Stats of a spool another process (the running agent) owns, for ``netwatch-agent status``."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        depth, size, oldest, maxseq = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size),0), MIN(created_ns), COALESCE(MAX(seq),0) FROM batches"
        ).fetchone()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    return SpoolStats(
        int(depth),
        int(size),
        oldest,
        max(int(maxseq), int(meta.get("last_seq", 0))),
        int(meta.get("dropped_batches", 0)),
        int(meta.get("dropped_samples", 0)),
        int(meta.get("acked_batches", 0)),
        int(meta.get("acked_samples", 0)),
        int(meta.get("last_acked_seq", 0)),
        int(meta.get("last_acked_ns", 0)),
        int(meta.get("interrupted_runs", 0)),
        int(meta.get("unclean_reboots", 0)),
    )
