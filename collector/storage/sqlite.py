"""The embedded default store: Samples in one SQLite file, with retention, read by the CLI and status page.

Schema: ``series`` (id, measurement, canonical tags JSON; unique on both) and ``points``
(series_id, time_ns, fields JSON; primary key series_id + time_ns, no rowid). A write of a point
that already exists *merges* its fields into the stored ones (same-named fields take the new
value), the way InfluxDB treats a point with the same series and time. So a redelivered batch
(identical rows) changes nothing — the update is skipped when the JSON is equal — and two
samples that share a series and timestamp but carry different fields both survive.

Durability: WAL journal with ``synchronous=NORMAL``. A committed write survives the collector
process crashing (the commit is in the WAL, which the OS holds); only a power loss or kernel
crash can lose the last transactions before the next checkpoint. The agent spool and MQTT
redelivery cover the process case; a host that loses power often can pass
``synchronous="FULL"`` to fsync every commit at about twice the write cost.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import isfinite
from pathlib import Path
from typing import Any

import orjson

from collector.storage.base import StorageError, StoreRejected, StoreUnavailable
from probes.files import private_file
from probes.model import INT64_MAX, INT64_MIN, FieldValue, Sample, storable

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id          INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags        TEXT NOT NULL,   -- JSON object, keys sorted, compact: the canonical series key
    UNIQUE (measurement, tags)   -- doubles as the index for lookups by measurement
);
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    time_ns   INTEGER NOT NULL,
    fields    TEXT NOT NULL,     -- JSON object: int, float, bool, str values keep their type
    PRIMARY KEY (series_id, time_ns)
) WITHOUT ROWID;
-- Retention deletes by time across all series.
CREATE INDEX IF NOT EXISTS points_by_time ON points (time_ns);
"""

_UPSERT = """
INSERT INTO points (series_id, time_ns, fields) VALUES (?, ?, ?)
ON CONFLICT (series_id, time_ns) DO UPDATE SET fields = json_patch(fields, excluded.fields)
WHERE fields <> excluded.fields
"""

_PRUNE_POINTS = """
DELETE FROM points WHERE (series_id, time_ns) IN
    (SELECT series_id, time_ns FROM points WHERE time_ns < ? LIMIT ?)
"""
_PRUNE_SERIES = "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM points WHERE series_id = series.id)"

_PRUNE_CHUNK = 20_000  # points per delete transaction, so a big prune never blocks writes long


@dataclass(frozen=True, slots=True)
class StoreStats:
    series: int
    points: int
    file_bytes: int  # database + WAL + shared-memory index


def _all_storable(fields: Mapping[str, FieldValue]) -> bool:
    """``all(k and storable(v) ...)``, inlined for the exact built-in types: this runs for
    every sample and was a fifth of the write's cost (bench/ingest)."""
    for k, v in fields.items():
        if not k:
            return False
        t = type(v)
        if t is float:
            if not isfinite(v):  # type: ignore[arg-type]  # t is float
                return False
        elif t is int:
            if not INT64_MIN <= v <= INT64_MAX:  # type: ignore[operator]  # t is int
                return False
        elif t is not str and t is not bool and not storable(v):  # subclasses, other types
            return False
    return True


def _fields_json(fields: Mapping[str, FieldValue]) -> str | None:
    """The fields as JSON text, leaving out what cannot be stored; None if nothing is left."""
    if _all_storable(fields):
        kept: Mapping[str, Any] = fields
    else:
        kept = {k: v for k, v in fields.items() if k and storable(v)}
    if not kept:
        return None
    # orjson keeps ints as ints and writes floats in shortest round-trip form (1.0 stays 1.0).
    return orjson.dumps(kept if type(kept) is dict else dict(kept)).decode()


def _tags_json(tags: Mapping[str, str]) -> str:
    # Empty values mean "no such tag" (as on the wire), so they never split a series.
    return orjson.dumps({k: v for k, v in tags.items() if v}, option=orjson.OPT_SORT_KEYS).decode()


def _unavailable(path: Path, action: str, err: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(
        f"sqlite store {path}: {action} failed: {err} — check disk space, permissions, "
        "and that no other process holds a write lock on the file"
    )


class SqliteReader:
    """Queries over a netwatch SQLite file. Open with :meth:`SqliteSink.open_readonly` from a
    process that must not write (the CLI, the status page) while the collector writes."""

    def __init__(self, path: str | os.PathLike[str], conn: sqlite3.Connection) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()  # one connection shared by the collector's threads

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"sqlite store {self.path} is closed")
        return self._conn

    def query(
        self,
        measurement: str,
        *,
        tags: Mapping[str, str] | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Sample]:
        """Samples of ``measurement`` whose tags include ``tags``, with since <= time < until.

        Ordered by time (oldest first unless ``newest_first``); ``limit`` keeps the first ones
        in that order, so ``limit=1, newest_first=True`` is the latest sample.
        """
        sql = [
            "SELECT s.measurement, s.tags, p.time_ns, p.fields FROM series s"
            " JOIN points p ON p.series_id = s.id WHERE s.measurement = ?"
        ]
        args: list[Any] = [measurement]
        if since_ns is not None:
            sql.append("AND p.time_ns >= ?")
            args.append(since_ns)
        if until_ns is not None:
            sql.append("AND p.time_ns < ?")
            args.append(until_ns)
        for k, v in (tags or {}).items():
            # json_each rather than json_extract: a tag key may hold '.', '"' or '$'.
            sql.append("AND EXISTS (SELECT 1 FROM json_each(s.tags) j WHERE j.key = ? AND j.value = ?)")
            args += [k, v]
        order = "DESC" if newest_first else "ASC"
        sql.append(f"ORDER BY p.time_ns {order}, p.series_id {order}")
        if limit is not None:
            sql.append("LIMIT ?")
            args.append(limit)
        with self._lock:
            rows = self._db().execute(" ".join(sql), args).fetchall()
        loads = orjson.loads
        return [Sample(m, loads(t), loads(f), ts) for m, t, ts, f in rows]

    def measurements(self) -> list[str]:
        with self._lock:
            rows = self._db().execute("SELECT DISTINCT measurement FROM series ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def series(self, measurement: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """Every (measurement, tags) pair stored, optionally for one measurement."""
        sql = "SELECT measurement, tags FROM series"
        args: tuple[Any, ...] = ()
        if measurement is not None:
            sql += " WHERE measurement = ?"
            args = (measurement,)
        with self._lock:
            rows = self._db().execute(sql + " ORDER BY measurement, tags", args).fetchall()
        return [(m, orjson.loads(t)) for m, t in rows]

    def stats(self) -> StoreStats:
        with self._lock:
            db = self._db()
            n_series = db.execute("SELECT count(*) FROM series").fetchone()[0]
            n_points = db.execute("SELECT count(*) FROM points").fetchone()[0]
        size = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):  # -wal/-shm exist only while a connection is open
                size += os.path.getsize(f"{self.path}{suffix}")
        return StoreStats(n_series, n_points, size)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SqliteSink(SqliteReader):
    """The embedded store the collector writes to; see the module docstring for the guarantees.

    ``retention_s`` (None keeps everything) is applied by :meth:`prune`, which the collector
    calls periodically. ``busy_timeout_s`` bounds how long a write waits for a lock held by
    another connection before it raises StoreUnavailable.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_s: float | None = 30 * 86400,
        synchronous: str = "NORMAL",
        busy_timeout_s: float = 5.0,
        max_cached_series: int = 200_000,
    ) -> None:
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        if retention_s is not None and retention_s <= 0:
            raise ValueError("retention_s must be positive (or None to keep everything)")
        path = Path(path)
        private_file(path)
        try:
            conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StorageError(f"sqlite store {path}: cannot use WAL journal (got {mode})")
            conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            conn.execute("PRAGMA journal_size_limit=67108864")  # truncate the WAL back to 64 MiB
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"sqlite store {path} has schema version {version}; this netwatch "
                    f"knows up to {SCHEMA_VERSION} — upgrade netwatch or use another file"
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as e:
            raise StorageError(f"sqlite store {path}: cannot open for writing: {e}") from e
        super().__init__(path, conn)
        self.retention_s = retention_s
        self.max_cached_series = max_cached_series
        # (measurement, tags as the Sample holds them) -> series id; only committed ids go in.
        self._series_ids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str], *, busy_timeout_s: float = 5.0) -> SqliteReader:
        """A reader on the file another process writes; WAL lets it read while writes go on."""
        path = Path(path)
        if not path.is_file():
            raise StorageError(f"no netwatch database at {path} — has the collector run with sqlite storage?")
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)
            conn.execute("PRAGMA query_only=1")
            conn.execute("SELECT 1 FROM series LIMIT 1").fetchall()
        except sqlite3.Error as e:
            raise StorageError(f"sqlite store {path}: cannot open for reading: {e}") from e
        return SqliteReader(path, conn)

    def write(self, samples: Sequence[Sample]) -> None:
        """Store ``samples`` in one transaction; returns once committed.

        Samples with no storable field (only NaN/±Inf, or out-of-range ints) are skipped and
        reported with StoreRejected *after* the rest are committed.
        """
        if not samples:
            return
        rejected = 0
        with self._lock:
            db = self._db()
            new_ids: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    rows = []
                    for s in samples:
                        fields = _fields_json(s.fields)
                        if fields is None or not s.measurement:
                            rejected += 1
                            continue
                        rows.append((self._series_id(db, s, new_ids), int(s.time_ns), fields))
                    db.executemany(_UPSERT, rows)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise _unavailable(self.path, f"writing {len(samples)} samples", e) from e
            if len(self._series_ids) + len(new_ids) > self.max_cached_series:
                self._series_ids.clear()
            self._series_ids.update(new_ids)
        if rejected:
            raise StoreRejected(
                f"sqlite store {self.path}: {rejected} of {len(samples)} samples had no storable "
                "field (NaN, ±Inf or an integer outside int64) and were not stored",
                rejected=rejected,
            )

    def _series_id(
        self,
        db: sqlite3.Connection,
        s: Sample,
        new_ids: dict[tuple[str, tuple[tuple[str, str], ...]], int],
    ) -> int:
        key = (s.measurement, tuple(s.tags.items()))
        sid = self._series_ids.get(key)
        if sid is None:
            sid = new_ids.get(key)
        if sid is None:
            tags = _tags_json(s.tags)
            row = db.execute(
                "SELECT id FROM series WHERE measurement = ? AND tags = ?", (s.measurement, tags)
            ).fetchone()
            if row is None:
                row = db.execute(
                    "INSERT INTO series (measurement, tags) VALUES (?, ?) RETURNING id",
                    (s.measurement, tags),
                ).fetchone()
            sid = new_ids[key] = row[0]
        return sid

    def prune(self, now_ns: int | None = None) -> int:
        """Delete points older than the retention, then series left without points.

        Works in chunks of short transactions so the writer thread is never held up for long.
        Returns the number of points deleted.
        """
        if self.retention_s is None:
            return 0
        now = time.time_ns() if now_ns is None else now_ns
        cutoff = now - int(self.retention_s * 1e9)
        deleted = 0
        try:
            while True:
                with self._lock:
                    n = self._db().execute(_PRUNE_POINTS, (cutoff, _PRUNE_CHUNK)).rowcount
                deleted += n
                if n < _PRUNE_CHUNK:
                    break
            with self._lock:
                if self._db().execute(_PRUNE_SERIES).rowcount:
                    # Cached ids may now name deleted series; SQLite may even reuse the ids.
                    self._series_ids.clear()
        except sqlite3.Error as e:
            raise _unavailable(self.path, "pruning", e) from e
        return deleted

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):  # best effort: planner statistics only
                    self._conn.execute("PRAGMA optimize")
                self._conn.close()
                self._conn = None
