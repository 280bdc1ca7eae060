"""``alerts.db``: alerts, their history, silences, acknowledgements, last-seen times and the
notification outbox — one SQLite file in WAL mode shared by the engine, the notifier and the CLI."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collector.availability import TransitionLog
from probes.files import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY,
  fp TEXT NOT NULL,
  rule TEXT NOT NULL,
  labels TEXT NOT NULL,
  severity TEXT NOT NULL,
  summary_en TEXT NOT NULL,
  summary_zh TEXT NOT NULL,
  value TEXT,
  state TEXT NOT NULL,              -- firing | resolved
  starts_ns INTEGER NOT NULL,
  ends_ns INTEGER,
  notified_ns INTEGER,              -- last firing/repeat notice queued; NULL: never sent
  suppressed_by TEXT,               -- root-cause site while hidden by the topology
  acked_by TEXT, ack_comment TEXT, ack_ns INTEGER
);
CREATE INDEX IF NOT EXISTS alerts_firing ON alerts(state, fp);
CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY, alert_id INTEGER, at_ns INTEGER NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_at ON history(at_ns);
CREATE TABLE IF NOT EXISTS silences (
  id INTEGER PRIMARY KEY, matchers TEXT NOT NULL, starts_ns INTEGER NOT NULL, ends_ns INTEGER NOT NULL,
  author TEXT NOT NULL, comment TEXT NOT NULL, created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS last_seen (
  rule TEXT NOT NULL, fp TEXT NOT NULL, labels TEXT NOT NULL, last_ns INTEGER NOT NULL, PRIMARY KEY (rule, fp)
);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY, alert_id INTEGER NOT NULL, kind TEXT NOT NULL, channel TEXT NOT NULL,
  lang TEXT NOT NULL, group_wait_s REAL NOT NULL, created_ns INTEGER NOT NULL, due_ns INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, sent_ns INTEGER, failed TEXT, message_id INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(sent_ns, failed, channel);
"""


def connect(path: Path) -> sqlite3.Connection:
    private_file(path)
    db = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


@dataclass(slots=True)
class AlertRow:
    id: int
    fp: str
    rule: str
    labels: dict[str, str]
    severity: str
    summary_en: str
    summary_zh: str
    value: Any
    state: str
    starts_ns: int
    ends_ns: int | None
    notified_ns: int | None
    suppressed_by: str | None
    acked_by: str | None
    ack_comment: str | None

    @classmethod
    def of(cls, r: sqlite3.Row) -> AlertRow:
        return cls(
            r["id"],
            r["fp"],
            r["rule"],
            orjson.loads(r["labels"]),
            r["severity"],
            r["summary_en"],
            r["summary_zh"],
            orjson.loads(r["value"]) if r["value"] is not None else None,
            r["state"],
            r["starts_ns"],
            r["ends_ns"],
            r["notified_ns"],
            r["suppressed_by"],
            r["acked_by"],
            r["ack_comment"],
        )

    def summary(self, lang: str) -> str:
        return self.summary_zh if lang == "zh" else self.summary_en

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule,
            "state": self.state,
            "severity": self.severity,
            "labels": self.labels,
            "summary": {"en": self.summary_en, "zh": self.summary_zh},
            "value": self.value,
            "starts": self.starts_ns,
            "ends": self.ends_ns,
            "notified": self.notified_ns,
            "suppressed_by": self.suppressed_by,
            "acked_by": self.acked_by,
            "ack_comment": self.ack_comment,
        }


class AlertStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path)
        #: sites' uplink up/down changes (collector/availability.py), written with the alerts
        self.transitions = TransitionLog(self.db)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        # one commit per engine tick, not one per statement
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            self.transitions.forget()
            raise
        self.db.execute("COMMIT")

    # -- alerts ----------------------------------------------------------------------------
    def open_alert(
        self,
        fp: str,
        rule: str,
        labels: Mapping[str, str],
        severity: str,
        summary: tuple[str, str],
        value: Any,
        at_ns: int,
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO alerts (fp, rule, labels, severity, summary_en, summary_zh, value, state, starts_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'firing', ?)",
            (fp, rule, orjson.dumps(dict(labels)), severity, summary[0], summary[1], _v(value), at_ns),
        )
        assert cur.lastrowid is not None
        self.event(cur.lastrowid, at_ns, "firing", summary[0])
        return cur.lastrowid

    def record_episode(
        self,
        fp: str,
        rule: str,
        labels: Mapping[str, str],
        severity: str,
        summary: tuple[str, str],
        value: Any,
        span: tuple[int, int],
        details: tuple[str, str] | None,
    ) -> int:
        """An alert that began and ended in the past (late data): written resolved, with its
        history events (``details``: firing, resolved) at its own start and end; never sent."""
        cur = self.db.execute(
            "INSERT INTO alerts (fp, rule, labels, severity, summary_en, summary_zh, value, state, starts_ns, ends_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'resolved', ?, ?)",
            (fp, rule, orjson.dumps(dict(labels)), severity, summary[0], summary[1], _v(value), *span),
        )
        assert cur.lastrowid is not None
        if details is not None:
            self.event(cur.lastrowid, span[0], "firing", details[0])
            self.event(cur.lastrowid, span[1], "resolved", details[1])
        return cur.lastrowid

    def outages(self, rule: str, since_ns: int) -> list[AlertRow]:
        """Alerts of ``rule`` (the cut-off alert) firing now or resolved after ``since_ns``."""
        rows = self.db.execute(
            "SELECT * FROM alerts WHERE rule=? AND (ends_ns IS NULL OR ends_ns >= ?) ORDER BY id", (rule, since_ns)
        )
        return [AlertRow.of(r) for r in rows]

    def resolve(self, alert_id: int, at_ns: int, value: Any, detail: str) -> None:
        self.db.execute(
            "UPDATE alerts SET state='resolved', ends_ns=?, value=COALESCE(?, value) WHERE id=?",
            (at_ns, _v(value), alert_id),
        )
        self.event(alert_id, at_ns, "resolved", detail)

    def set(self, alert_id: int, **cols: Any) -> None:
        names = ", ".join(f"{k}=?" for k in cols)
        self.db.execute(f"UPDATE alerts SET {names} WHERE id=?", (*cols.values(), alert_id))

    def firing(self) -> list[AlertRow]:
        return [AlertRow.of(r) for r in self.db.execute("SELECT * FROM alerts WHERE state='firing' ORDER BY id")]

    def get(self, alert_id: int) -> AlertRow | None:
        r = self.db.execute("SELECT * FROM alerts WHERE id=?", (alert_id,)).fetchone()
        return AlertRow.of(r) if r else None

    def acks(self) -> dict[int, str]:
        rows = self.db.execute("SELECT id, acked_by FROM alerts WHERE state='firing' AND acked_by IS NOT NULL")
        return {r[0]: r[1] for r in rows}

    def ack(self, alert_id: int, author: str, comment: str, at_ns: int | None = None) -> bool:
        at_ns = at_ns or time.time_ns()
        cur = self.db.execute(
            "UPDATE alerts SET acked_by=?, ack_comment=?, ack_ns=? WHERE id=? AND state='firing'",
            (author, comment, at_ns, alert_id),
        )
        if cur.rowcount:
            self.event(alert_id, at_ns, "acked", f"{author}: {comment}")
        return bool(cur.rowcount)

    def event(self, alert_id: int | None, at_ns: int, event: str, detail: str) -> None:
        self.db.execute(
            "INSERT INTO history (alert_id, at_ns, event, detail) VALUES (?, ?, ?, ?)", (alert_id, at_ns, event, detail)
        )

    def history(self, since_ns: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT h.alert_id, h.at_ns, h.event, h.detail, a.rule, a.labels, a.severity FROM history h"
            " LEFT JOIN alerts a ON a.id = h.alert_id WHERE h.at_ns >= ? ORDER BY h.id LIMIT ?",
            (since_ns, limit),
        )
        return [
            {
                "alert_id": r[0],
                "time": r[1],
                "event": r[2],
                "detail": r[3],
                "rule": r[4],
                "labels": orjson.loads(r[5]) if r[5] else {},
                "severity": r[6],
            }
            for r in rows
        ]

    def prune(self, before_ns: int) -> None:
        self.db.execute("DELETE FROM history WHERE at_ns < ?", (before_ns,))
        self.db.execute("DELETE FROM alerts WHERE state='resolved' AND ends_ns < ?", (before_ns,))
        self.db.execute("DELETE FROM outbox WHERE sent_ns IS NOT NULL AND sent_ns < ?", (before_ns,))

    # -- silences --------------------------------------------------------------------------
    def add_silence(self, matchers: list[str], starts_ns: int, ends_ns: int, author: str, comment: str) -> int:
        cur = self.db.execute(
            "INSERT INTO silences (matchers, starts_ns, ends_ns, author, comment, created_ns) VALUES (?, ?, ?, ?, ?, ?)",
            (orjson.dumps(matchers), starts_ns, ends_ns, author, comment, time.time_ns()),
        )
        assert cur.lastrowid is not None
        self.event(None, time.time_ns(), "silence", f"#{cur.lastrowid} {' '.join(matchers)} by {author}: {comment}")
        return cur.lastrowid

    def silences(self, now_ns: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM silences WHERE ends_ns > ? ORDER BY id", (now_ns,))
        return [dict(r) | {"matchers": orjson.loads(r["matchers"])} for r in rows]

    # -- absent series -----------------------------------------------------------------------
    def save_last_seen(self, rows: list[tuple[str, str, Mapping[str, str], int]]) -> None:
        self.db.executemany(
            "INSERT INTO last_seen (rule, fp, labels, last_ns) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(rule, fp) DO UPDATE SET last_ns=max(last_ns, excluded.last_ns)",
            [(r, fp, orjson.dumps(dict(lab)), t) for r, fp, lab, t in rows],
        )

    def last_seen(self) -> list[tuple[str, dict[str, str], int]]:
        return [
            (r[0], orjson.loads(r[1]), r[2]) for r in self.db.execute("SELECT rule, labels, last_ns FROM last_seen")
        ]

    # -- outbox ------------------------------------------------------------------------------
    def enqueue(self, alert_id: int, kind: str, channel: str, lang: str, group_wait_s: float, now_ns: int) -> None:
        self.db.execute(
            "INSERT INTO outbox (alert_id, kind, channel, lang, group_wait_s, created_ns, due_ns) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (alert_id, kind, channel, lang, group_wait_s, now_ns, now_ns),
        )


def _v(value: Any) -> bytes | None:
    return None if value is None else orjson.dumps(value)
