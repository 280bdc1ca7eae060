"""The collector's own database: the agent inventory and its counters. Written by the
collector; read by the CLI and the HTTP API from other connections (SQLite WAL)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from collector.availability import TransitionLog
from probes.files import private_file
from protocol.status import Status

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL DEFAULT '',
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'unknown',
    status_ns INTEGER,
    version TEXT NOT NULL DEFAULT '',
    config_version TEXT NOT NULL DEFAULT '',
    capabilities TEXT NOT NULL DEFAULT '[]',
    last_seq INTEGER NOT NULL DEFAULT 0,
    batches INTEGER NOT NULL DEFAULT 0,
    samples INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    -- the agent's own account, from its netwatch_agent samples
    spool_depth INTEGER,
    spool_oldest_s REAL,
    dropped_samples INTEGER,
    draining INTEGER,
    identity_overridden INTEGER NOT NULL DEFAULT 0,
    over_quota INTEGER NOT NULL DEFAULT 0,
    config_error TEXT NOT NULL DEFAULT '',
    control_key TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS seen (
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (agent, seq)
) WITHOUT ROWID;
-- batches being written to the stores, recorded before the write and deleted with its record
-- in ``seen``: one left after a crash may already be in a store that keeps duplicates
CREATE TABLE IF NOT EXISTS intent (
    agent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (agent, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    agent TEXT NOT NULL,
    key INTEGER NOT NULL,
    PRIMARY KEY (agent, key)
) WITHOUT ROWID;
-- agents that sent something but are in neither the topology nor admitted
CREATE TABLE IF NOT EXISTS unknown_agents (
    id TEXT PRIMARY KEY,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    messages INTEGER NOT NULL DEFAULT 0
);
-- agents an operator admitted by hand (netwatch-collector agents admit ID --site S)
CREATE TABLE IF NOT EXISTS admitted (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    admitted_ns INTEGER NOT NULL,
    comment TEXT NOT NULL DEFAULT ''
);
-- what the centre pushed to each agent, newest version last
CREATE TABLE IF NOT EXISTS pushed (
    agent TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    issuer TEXT NOT NULL,
    pushed_ns INTEGER NOT NULL,
    PRIMARY KEY (agent, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_ns INTEGER NOT NULL
);
"""

AGENT_COLUMNS = (
    "id",
    "site",
    "first_seen_ns",
    "last_seen_ns",
    "status",
    "status_ns",
    "version",
    "config_version",
    "capabilities",
    "last_seq",
    "batches",
    "samples",
    "duplicates",
    "spool_depth",
    "spool_oldest_s",
    "dropped_samples",
    "draining",
    "identity_overridden",
    "over_quota",
    "config_error",
    "control_key",
)
#: columns added after the first release, and how to add them to an older state.db
_ADDED_COLUMNS = {
    "identity_overridden": "INTEGER NOT NULL DEFAULT 0",
    "over_quota": "INTEGER NOT NULL DEFAULT 0",
    "config_error": "TEXT NOT NULL DEFAULT ''",
    "control_key": "TEXT NOT NULL DEFAULT ''",
}


class StateDB:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_file(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(agents)").fetchall()}
        for col, decl in _ADDED_COLUMNS.items():
            if col not in have:
                self._db.execute(f"ALTER TABLE agents ADD COLUMN {col} {decl}")
        #: agents' and devices' up/down changes (collector/availability.py), for the monthly report
        self.transitions = TransitionLog(self._db)

    def record_batch(self, agent: str, site: str, seq: int, samples: int, now_ns: int | None = None) -> None:
        now = now_ns or time.time_ns()
        self._db.execute(
            """INSERT INTO agents(id, site, first_seen_ns, last_seen_ns, last_seq, batches, samples)
               VALUES (?, ?, ?, ?, ?, 1, ?)
               ON CONFLICT(id) DO UPDATE SET site = excluded.site, last_seen_ns = excluded.last_seen_ns,
                 last_seq = MAX(last_seq, excluded.last_seq), batches = batches + 1, samples = samples + excluded.samples""",
            (agent, site, now, now, seq, samples),
        )

    def record_status(self, agent: str, status: Status, now_ns: int | None = None) -> None:
        now = now_ns or time.time_ns()
        self._db.execute(
            """INSERT INTO agents(id, site, first_seen_ns, last_seen_ns, status, status_ns, version, config_version,
                                  capabilities, config_error, control_key)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET status = excluded.status, status_ns = excluded.status_ns,
                 site = CASE WHEN excluded.site != '' THEN excluded.site ELSE site END,
                 version = CASE WHEN excluded.version != '' THEN excluded.version ELSE version END,
                 config_version = CASE WHEN excluded.config_version != '' THEN excluded.config_version ELSE config_version END,
                 capabilities = excluded.capabilities,
                 config_error = CASE WHEN excluded.status = 'online' THEN excluded.config_error ELSE config_error END,
                 control_key = CASE WHEN excluded.control_key != '' THEN excluded.control_key ELSE control_key END""",
            (
                agent,
                status.site[:64],
                now,
                now,
                status.state,
                now,
                status.version[:32],
                status.config_version[:64],
                orjson.dumps([c[:32] for c in status.capabilities[:32]]).decode(),
                status.config_error[:1000],
                status.control_key[:32],
            ),
        )

    def record_seen(self, agent: str, seq: int) -> None:
        self._db.execute("INSERT OR IGNORE INTO seen(agent, seq) VALUES (?, ?)", (agent, seq))

    def record_intent(self, batches: Iterable[tuple[str, int]]) -> None:
        """Before writing these batches (agent, seq): committed at once."""
        with self.transaction():
            self._db.executemany("INSERT OR IGNORE INTO intent(agent, seq) VALUES (?, ?)", batches)

    def clear_intent(self, batches: Iterable[tuple[str, int]]) -> None:
        """The batches are recorded in ``seen`` (call inside the same transaction)."""
        self._db.executemany("DELETE FROM intent WHERE agent = ? AND seq = ?", batches)

    def load_intent(self) -> set[tuple[str, int]]:
        """Batches whose write began and was never recorded: a crash came between."""
        self._db.execute(
            "DELETE FROM intent WHERE EXISTS (SELECT 1 FROM seen s WHERE s.agent = intent.agent AND s.seq = intent.seq)"
        )
        return {(a, int(s)) for a, s in self._db.execute("SELECT agent, seq FROM intent").fetchall()}

    def load_seen(self, window: int) -> dict[str, list[int]]:
        """The newest ``window`` sequence numbers stored per agent, oldest first."""
        out: dict[str, list[int]] = {}
        for (agent,) in self._db.execute("SELECT DISTINCT agent FROM seen").fetchall():
            rows = self._db.execute(
                "SELECT seq FROM seen WHERE agent = ? ORDER BY seq DESC LIMIT ?", (agent, window)
            ).fetchall()
            out[agent] = [r[0] for r in reversed(rows)]
        return out

    def prune_seen(self, window: int) -> None:
        for (agent,) in self._db.execute("SELECT DISTINCT agent FROM seen").fetchall():
            self._db.execute(
                "DELETE FROM seen WHERE agent = ? AND seq < "
                "(SELECT seq FROM seen WHERE agent = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (agent, agent, window - 1),
            )

    def record_duplicates(self, agent: str, n: int) -> None:
        self._db.execute("UPDATE agents SET duplicates = duplicates + ? WHERE id = ?", (n, agent))

    def add_to_agent(self, column: str, agent: str, n: int) -> None:
        if column not in ("identity_overridden", "over_quota", "duplicates"):
            raise ValueError(f"no counter column {column!r}")
        self._db.execute(f"UPDATE agents SET {column} = {column} + ? WHERE id = ?", (n, agent))

    def record_series(self, agent: str, keys: Iterable[int]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO series(agent, key) VALUES (?, ?)", ((agent, k) for k in keys))

    def load_series(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for agent, key in self._db.execute("SELECT agent, key FROM series"):
            out.setdefault(agent, []).append(key)
        return out

    def record_unknown(self, agent: str, messages: int, now_ns: int | None = None) -> None:
        now = now_ns or time.time_ns()
        self._db.execute(
            """INSERT INTO unknown_agents(id, first_seen_ns, last_seen_ns, messages) VALUES (?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET last_seen_ns = excluded.last_seen_ns,
                 messages = messages + excluded.messages""",
            (agent, now, now, messages),
        )

    def admit(self, agent: str, site: str, comment: str = "") -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO admitted(id, site, admitted_ns, comment) VALUES (?, ?, ?, ?)",
                (agent, site, time.time_ns(), comment),
            )
            self._db.execute("DELETE FROM unknown_agents WHERE id = ?", (agent,))

    def note_session(self) -> None:
        """The broker holds a persistent session for us from now on."""
        self._db.execute(
            "INSERT OR REPLACE INTO counters(name, value, updated_ns) VALUES ('_mqtt_session', 'true', ?)",
            (time.time_ns(),),
        )

    def had_session(self) -> bool:
        return self._db.execute("SELECT 1 FROM counters WHERE name = '_mqtt_session'").fetchone() is not None

    def last_pushed(self, agent: str) -> tuple[int, str | None]:
        """The newest version pushed to ``agent`` and its document (JSON), or (0, None)."""
        row = self._db.execute(
            "SELECT version, doc FROM pushed WHERE agent = ? ORDER BY version DESC LIMIT 1", (agent,)
        ).fetchone()
        return (int(row[0]), str(row[1])) if row else (0, None)

    def record_push(self, agent: str, version: int, doc: str, issuer: str) -> None:
        self._db.execute(
            "INSERT INTO pushed(agent, version, doc, issuer, pushed_ns) VALUES (?, ?, ?, ?, ?)",
            (agent, version, doc, issuer, time.time_ns()),
        )

    def admitted(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT id, site FROM admitted").fetchall())

    def record_agent_health(self, agent: str, fields: Mapping[str, Any]) -> None:
        draining = fields.get("draining")
        self._db.execute(
            "UPDATE agents SET spool_depth = ?, spool_oldest_s = ?, dropped_samples = ?, draining = ? WHERE id = ?",
            (
                fields.get("spool_depth"),
                fields.get("spool_oldest_s"),
                fields.get("dropped_samples"),
                None if draining is None else int(bool(draining)),
                agent,
            ),
        )

    def save_counters(self, counters: dict[str, Any]) -> None:
        now = time.time_ns()
        with self._db:
            self._db.execute("BEGIN")
            for k, v in counters.items():
                self._db.execute(
                    "INSERT OR REPLACE INTO counters(name, value, updated_ns) VALUES (?, ?, ?)",
                    (k, orjson.dumps(v).decode(), now),
                )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error): then ROLLBACK
            # would fail and hide the real error; a failed COMMIT may leave the transaction open.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            self.transitions.forget()  # its cache may hold what was just rolled back
            raise

    def close(self) -> None:
        self._db.close()


def _ro(path: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)


def read_agents(path: str | Path) -> list[dict[str, Any]]:
    db = _ro(path)
    try:
        rows = db.execute(f"SELECT {', '.join(AGENT_COLUMNS)} FROM agents ORDER BY site, id").fetchall()
    finally:
        db.close()
    out = []
    for r in rows:
        d = dict(zip(AGENT_COLUMNS, r, strict=True))
        d["capabilities"] = orjson.loads(d["capabilities"])
        out.append(d)
    return out


def read_unknown_agents(path: str | Path) -> list[dict[str, Any]]:
    db = _ro(path)
    try:
        rows = db.execute(
            "SELECT id, first_seen_ns, last_seen_ns, messages FROM unknown_agents ORDER BY last_seen_ns DESC"
        ).fetchall()
    finally:
        db.close()
    return [dict(zip(("id", "first_seen_ns", "last_seen_ns", "messages"), r, strict=True)) for r in rows]


def read_counters(path: str | Path) -> dict[str, Any]:
    db = _ro(path)
    try:
        rows = db.execute("SELECT name, value FROM counters").fetchall()
    finally:
        db.close()
    return {k: orjson.loads(v) for k, v in rows if not k.startswith("_")}  # "_...": the collector's own notes
