"""A remote store with a local spool in front: while the store is unreachable, samples go to an
on-disk SQLite spool (so the collector can acknowledge the MQTT message), and a drainer thread
writes them to the store, oldest first, once it is back.

A batch whose write may have reached the store without its outcome known — the store did not
answer, or the collector died between the store's answer and deleting the spooled row — is
marked unsure; a store that keeps duplicates (CheckedSink) is asked what it holds before such
a batch is written again. Only the oldest row can have been sent by an earlier process (rows go
oldest first, one at a time, and new samples join a backlog rather than pass it), so that one is
unsure after a restart."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from collector.storage.base import CheckedSink, Sink, StoreRejected, StoreUnavailable
from probes.files import private_file
from probes.model import Sample

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class BufferStats:
    batches: int
    samples: int
    bytes: int
    oldest_ns: int | None


def _pack(samples: Sequence[Sample]) -> bytes:
    return zlib.compress(orjson.dumps([[s.measurement, s.tags, s.fields, s.time_ns] for s in samples]), 1)


def _unpack(payload: bytes) -> list[Sample]:
    return [Sample(m, t, f, ts) for m, t, f, ts in orjson.loads(zlib.decompress(payload))]


class BufferedSink:
    """Wraps ``inner`` (a remote sink). ``write`` returns once the samples are in the store or
    durably in the spool; it raises StoreUnavailable only when the spool is full too, and then the
    caller keeps the MQTT message unacknowledged as before. While a backlog exists, new samples
    join it (the drainer sends them in order), so the store sees one writer at a time."""

    def __init__(self, inner: Sink, path: str | Path, *, max_bytes: int = 1024**3, retry_s: float = 1.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.path = Path(path)
        private_file(self.path)
        self.max_bytes = max_bytes
        self.retry_s = retry_s
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # acknowledged to the broker on the strength of this
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the SQLite connection
        self._store_lock = threading.Lock()  # one writer to the store at a time
        self._wake = threading.Event()
        self._closed = threading.Event()
        self.spooled_samples = 0
        self.drained_samples = 0
        self.rejected_samples = 0
        self._down_logged = False
        #: spooled rows that may already be in the store (see the module docstring)
        self._unsure: set[int] = set()
        oldest = self._db.execute("SELECT MIN(id) FROM pending").fetchone()[0]
        if oldest is not None:
            self._unsure.add(int(oldest))
        self.unsure_checked = 0
        st = self.stats()
        if st.batches:
            log.info("store %s: %d samples from before the restart wait in %s", self.name, st.samples, self.path)
        self._thread = threading.Thread(target=self._drain_loop, name=f"drain-{self.name}", daemon=True)
        self._thread.start()

    def stats(self) -> BufferStats:
        with self._lock:
            n, s, b, oldest = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(samples),0), COALESCE(SUM(size),0), MIN(created_ns) FROM pending"
            ).fetchone()
        return BufferStats(int(n), int(s), int(b), oldest)

    def _backlog(self) -> bool:
        return self._db.execute("SELECT 1 FROM pending LIMIT 1").fetchone() is not None

    def write(self, samples: Sequence[Sample]) -> None:
        self._write(samples, unsure=False)

    def write_unsure(self, samples: Sequence[Sample]) -> None:
        """Samples an earlier attempt may have stored: checked with the store if it keeps duplicates."""
        self._write(samples, unsure=True)

    def _send(self, samples: Sequence[Sample], unsure: bool) -> None:
        with self._store_lock:
            if unsure and isinstance(self.inner, CheckedSink):
                self.unsure_checked += 1
                self.inner.write_unsure(samples)
            else:
                self.inner.write(samples)

    def _write(self, samples: Sequence[Sample], *, unsure: bool) -> None:
        if not samples:
            return
        with self._lock:
            backlog = self._backlog()
        if not backlog:
            try:
                self._send(samples, unsure)
                return
            except StoreUnavailable as e:
                unsure = True  # a timeout or a lost connection may come after the store took them
                if not self._down_logged:
                    self._down_logged = True
                    log.error("store %s unavailable (%s): spooling to %s until it is back", self.name, e, self.path)
        with self._lock:
            row_id = self._put(samples)
            if unsure:
                self._unsure.add(row_id)
        self._wake.set()

    def _put(self, samples: Sequence[Sample]) -> int:
        payload = _pack(samples)
        used = self._db.execute("SELECT COALESCE(SUM(size),0) FROM pending").fetchone()[0]
        if used + len(payload) > self.max_bytes:
            raise StoreUnavailable(
                f"store {self.name} is down and its local spool {self.path} is full "
                f"({used} bytes): messages stay unacknowledged at the broker"
            )
        try:
            row_id = self._db.execute(
                "INSERT INTO pending(created_ns, samples, size, payload) VALUES (?, ?, ?, ?) RETURNING id",
                (time.time_ns(), len(samples), len(payload), payload),
            ).fetchone()[0]
        except sqlite3.Error as e:  # a full disk: nothing was written, the message stays unacknowledged
            raise StoreUnavailable(
                f"store {self.name} is down and its local spool {self.path} cannot be written ({e}): "
                "messages stay unacknowledged at the broker — free disk space"
            ) from e
        self.spooled_samples += len(samples)
        return int(row_id)

    def drain_once(self, max_rows: int = 20) -> int:
        """Send the oldest spooled batches to the store; returns the samples sent (0 if it is
        still down or nothing waits)."""
        sent = 0
        with self._lock:
            rows = self._db.execute("SELECT id, payload FROM pending ORDER BY id LIMIT ?", (max_rows,)).fetchall()
        for row_id, payload in rows:
            samples = _unpack(payload)
            try:
                self._send(samples, row_id in self._unsure)
            except StoreUnavailable:
                self._unsure.add(row_id)
                return sent
            except StoreRejected as e:
                # What the store kept is written; the refused ones would be refused forever.
                self.rejected_samples += e.rejected or 0
                log.error("store %s refused spooled samples: %s", self.name, e)
            try:
                with self._lock:
                    self._db.execute("DELETE FROM pending WHERE id = ?", (row_id,))
                    self._unsure.discard(row_id)
            except sqlite3.Error as e:
                # Stored but still spooled (a full disk refuses even the delete): sent again next
                # time, as an unsure row (checked first where the store keeps copies).
                with self._lock:
                    self._unsure.add(row_id)
                log.warning("store %s: cannot remove a drained batch from %s (%s); retrying", self.name, self.path, e)
                return sent
            sent += len(samples)
            self.drained_samples += len(samples)
        if rows:
            with self._lock:
                empty = not self._backlog()
            if empty:
                self._down_logged = False
                log.info("store %s is back; its local spool is drained", self.name)
        return sent

    def _drain_loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.retry_s)
            self._wake.clear()
            try:
                while not self._closed.is_set() and self.drain_once() > 0:
                    pass
            except Exception:  # the spool unreadable for a moment: the drainer must outlive it
                log.exception("store %s: draining %s failed; retrying", self.name, self.path)

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(10)
        with self._lock:
            self._db.close()
        self.inner.close()
