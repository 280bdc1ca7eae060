"""The availability log: every up/down change of an agent, a site's uplink and a device, recorded
once, where the collector learns it — the base of the monthly report (collector/report.py), which
so never needs raw points.

Where each kind is recorded, in the same transaction as what it comes from:

- ``agent``: its retained status (online / offline, the Last Will), in state.db by the inventory;
- ``uplink``: a site cut off (the ``site_unreachable`` alert of the topology opening and closing),
  in alerts.db by the alert engine;
- ``device``: its probes' ``probe_status`` samples (tag ``device``), in state.db by the inventory.

A change is recorded only when it differs from the subject's last recorded state, so a repeated
status, a retained status redelivered after a restart and a redelivered batch add nothing; a change
dated before the subject's last one (a late backlog) is not recorded either, and counted.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from probes.model import PROBE_STATUS, Sample

Kind = Literal["uplink", "agent", "device"]
State = Literal["up", "down"]
KINDS: Final[tuple[Kind, ...]] = ("uplink", "agent", "device")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,              -- uplink | agent | device
    subject TEXT NOT NULL,           -- the site (uplink), agent or device id
    site TEXT NOT NULL DEFAULT '',
    county TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,             -- up | down
    at_ns INTEGER NOT NULL,          -- when it changed (event time), ns since the epoch
    recorded_ns INTEGER NOT NULL,    -- when the collector wrote it down
    detail TEXT NOT NULL DEFAULT '',
    UNIQUE (kind, subject, at_ns, state)
);
CREATE INDEX IF NOT EXISTS transitions_at ON transitions(at_ns);
"""

#: a status document dated this far past the collector's clock is not believed (receive time instead)
MAX_SKEW_NS: Final = 60 * 10**9


@dataclass(frozen=True, slots=True)
class Transition:
    kind: str
    subject: str
    site: str
    county: str
    state: str
    at_ns: int
    detail: str = ""


class TransitionLog:
    """Writes transitions through a connection the caller owns (and holds the transaction of)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        self._last: dict[tuple[str, str], tuple[str, int]] = {}
        #: changes refused because they were dated before the subject's last recorded change
        self.late = 0

    def last(self, kind: str, subject: str) -> tuple[str, int] | None:
        key = (kind, subject)
        if key not in self._last:
            row = self.db.execute(
                "SELECT state, at_ns FROM transitions WHERE kind = ? AND subject = ? ORDER BY at_ns DESC, id DESC LIMIT 1",
                key,
            ).fetchone()
            if row is None:
                return None
            self._last[key] = (str(row[0]), int(row[1]))
        return self._last[key]

    def note(
        self, kind: Kind, subject: str, state: State, at_ns: int, *, site: str = "", county: str = "", detail: str = ""
    ) -> bool:
        """Record ``subject`` going ``state`` at ``at_ns``; False when it is no change or late."""
        last = self.last(kind, subject)
        if last is not None:
            if last[0] == state:
                return False
            if at_ns < last[1]:
                self.late += 1
                return False
        self.db.execute(
            "INSERT OR IGNORE INTO transitions(kind, subject, site, county, state, at_ns, recorded_ns, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, subject[:200], site[:64], county[:64], state, at_ns, time.time_ns(), detail[:500]),
        )
        self._last[(kind, subject)] = (state, at_ns)
        return True

    def forget(self) -> None:
        """Drop the cache (after a rolled-back transaction)."""
        self._last.clear()


def agent_change_time(doc_ns: int, received_ns: int, last_ns: int | None) -> int:
    """When an agent's status changed: the time its document carries, unless that is no later than
    the last recorded change or in the future — the Last Will carries the time it was set, at the
    agent's start, so an offline from it is dated when the broker sent it (its receipt here). The
    first status ever seen of an agent starts its record when it arrives (what came before is not
    known: a retained status may be days old)."""
    if last_ns is None:
        return received_ns
    if last_ns < doc_ns <= received_ns + MAX_SKEW_NS:
        return doc_ns
    return max(received_ns, last_ns)


class DeviceTracker:
    """A device is down while every probe of it (``probe_status`` with its ``device`` tag) says
    down, up as soon as one says ok or degraded; its change is dated by the sample's own time."""

    def __init__(self, log: TransitionLog) -> None:
        self.log = log
        self._probes: dict[str, dict[tuple[str, str], bool]] = {}

    def observe(self, samples: Iterable[Sample]) -> int:
        """Note the devices' changes in ``samples`` (stamped by the centre with site and county)."""
        n = 0
        for s in samples:
            if s.measurement != PROBE_STATUS:
                continue
            device = s.tags.get("device")
            status = s.fields.get("status")
            if not device or status not in ("ok", "degraded", "down"):
                continue
            probes = self._probes.setdefault(device, {})
            probes[(s.tags.get("probe", ""), s.tags.get("target", ""))] = status == "down"
            state: State = "down" if all(probes.values()) else "up"
            site, county = s.tags.get("site", ""), s.tags.get("county", "")
            if self.log.note("device", device, state, s.time_ns, site=site, county=county):
                n += 1
        return n
