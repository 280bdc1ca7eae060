"""Turning MQTT messages into Samples: topic parsing, envelope validation, deduplication by
(agent, sequence), and the counters of everything received, stored and refused."""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from agent import wire
from agent.config import ID_PATTERN
from probes.model import Sample

log = logging.getLogger("netwatch.collector.ingest")

_ID = re.compile(ID_PATTERN)
MAX_STATUS_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Topic:
    agent: str
    kind: str  # metrics | events | status | cmd/result


def parse_topic(root: str, topic: str) -> Topic | None:
    prefix = root.rstrip("/") + "/agents/"
    if not topic.startswith(prefix):
        return None
    agent, _, kind = topic[len(prefix) :].partition("/")
    if not _ID.match(agent) or kind not in ("metrics", "events", "status", "cmd/result"):
        return None
    return Topic(agent, kind)


class SeqWindow:
    """The sequence numbers seen from one agent, bounded: the oldest remembered are forgotten
    first. The default window (100k batches: about six days at one batch per 5 s) outlasts any
    redelivery the broker makes; a copy older than that is absorbed by idempotent stores."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, seq: int) -> bool:
        return seq in self._seen

    def add(self, seq: int) -> None:
        self._seen[seq] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


class Counters:
    """Everything the collector counts about itself; thread-safe snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.c: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.dropped_samples: Counter[str] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.c[name] += n

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def drop(self, reason: str, n: int) -> None:
        with self._lock:
            self.dropped_samples[reason] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **dict(self.c),
                "rejected": dict(self.rejected),
                "dropped_samples": dict(self.dropped_samples),
                "rejected_total": sum(self.rejected.values()),
            }


@dataclass(slots=True)
class Accepted:
    topic: Topic
    envelope: wire.Envelope


@dataclass(slots=True)
class StatusUpdate:
    agent: str
    doc: dict[str, Any]


class Ingest:
    def __init__(
        self,
        root: str,
        limits: wire.Limits,
        *,
        dedup_window: int = 100_000,
        max_series_per_agent: int = 20_000,
        counters: Counters | None = None,
    ) -> None:
        self.root = root
        self.limits = limits
        self.dedup_window = dedup_window
        self.max_series_per_agent = max_series_per_agent
        self.counters = counters or Counters()
        self._windows: dict[str, SeqWindow] = {}
        self._series: dict[str, set[int]] = {}
        self._logged: set[tuple[str, str]] = set()
        #: duplicates dropped per agent since start (the inventory shows them)
        self.duplicates_by_agent: Counter[str] = Counter()

    def _refuse(self, reason: str, agent: str, detail: str) -> None:
        self.counters.reject(reason)
        # Logged once per (reason, agent): a broken agent must not flood the log.
        if (reason, agent) not in self._logged:
            self._logged.add((reason, agent))
            log.warning("refused a message from %s: %s: %s (counted; further ones not logged)", agent, reason, detail)

    def seen(self, agent: str, seq: int) -> bool:
        w = self._windows.get(agent)
        return w is not None and seq in w

    def mark(self, agent: str, seq: int) -> None:
        w = self._windows.get(agent)
        if w is None:
            w = self._windows[agent] = SeqWindow(self.dedup_window)
        w.add(seq)

    def handle(self, topic: str, payload: bytes) -> Accepted | StatusUpdate | None:
        """Classify one message. Returns what to store or record, or None when refused/duplicate."""
        self.counters.inc("received_messages")
        self.counters.inc("received_bytes", len(payload))
        t = parse_topic(self.root, topic)
        if t is None:
            self._refuse("bad_topic", "?", topic[:200])
            return None
        if t.kind == "status":
            return self._status(t, payload)
        if t.kind not in ("metrics", "events"):
            return None  # cmd/result: later (control)
        try:
            env = wire.decode(payload, topic_agent=t.agent, limits=self.limits)
        except wire.WireError as e:
            self._refuse(e.reason, t.agent, e.detail)
            return None
        for reason, n in env.dropped.items():
            self.counters.drop(reason, n)
            if (reason, t.agent) not in self._logged:
                self._logged.add((reason, t.agent))
                log.warning("dropped %d samples from %s: %s (counted; further ones not logged)", n, t.agent, reason)
        if self.seen(t.agent, env.seq):
            self.counters.inc("duplicates")
            self.duplicates_by_agent[t.agent] += 1
            return None
        return Accepted(t, self._cap_series(t.agent, env))

    def _cap_series(self, agent: str, env: wire.Envelope) -> wire.Envelope:
        """Drop samples that would open a series past the agent's cap (a broken or hostile agent
        inventing tag values must not flood the store with millions of series)."""
        known = self._series.setdefault(agent, set())
        keep: list[Sample] = []
        over = 0
        for s in env.samples:
            key = hash((s.measurement, frozenset(s.tags.items())))
            if key not in known:
                if len(known) >= self.max_series_per_agent:
                    over += 1
                    continue
                known.add(key)
            keep.append(s)
        if not over:
            return env
        self.counters.drop("series_cap", over)
        if ("series_cap", agent) not in self._logged:
            self._logged.add(("series_cap", agent))
            log.warning(
                "agent %s has more than %d series: dropping samples of new ones (counted; raise "
                "limits.max_series_per_agent if this is real)",
                agent,
                self.max_series_per_agent,
            )
        return wire.Envelope(env.agent, env.site, env.seq, env.sent_ns, keep, env.dropped)

    def load_seen(self, agent: str, seqs: list[int]) -> None:
        """Restore what was stored before a restart, oldest first."""
        for seq in seqs:
            self.mark(agent, seq)

    def _status(self, t: Topic, payload: bytes) -> StatusUpdate | None:
        if not payload:
            return None  # a retained status being cleared
        if len(payload) > MAX_STATUS_BYTES:
            self._refuse("too_large", t.agent, "status message")
            return None
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            self._refuse("bad_json", t.agent, f"status: {e}")
            return None
        if not isinstance(doc, dict) or doc.get("state") not in ("online", "offline"):
            self._refuse("bad_schema", t.agent, "status needs state online|offline")
            return None
        if doc.get("agent", t.agent) != t.agent:
            self._refuse("agent_mismatch", t.agent, "status names another agent")
            return None
        self.counters.inc("status_messages")
        return StatusUpdate(t.agent, doc)


def samples_of(accepted: list[Accepted]) -> list[Sample]:
    return [s for a in accepted for s in a.envelope.samples]
