"""The ingest stage: turns MQTT messages into accepted batches and status updates — topic parsing,
envelope validation, de-duplication by (agent, sequence) — and counts everything it refuses.

De-duplication lives here whole: a copy already stored (the seen window, restored from state.db
after a restart), a copy earlier in the same group of messages, and the record of what was
stored (``commit``), which the pipeline calls only after the store stage has the samples.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from collector.registry import Registry
from collector.stats import Counters
from probes.model import Sample
from probes.ratelimit import TokenBucket
from protocol import envelope
from protocol.control import ControlRefused, Result
from protocol.status import Status, decode_status
from protocol.topics import Topic, Topics

log = logging.getLogger("netwatch.collector.ingest")


class SeqWindow:
    """The sequence numbers seen from one agent, bounded to the ``size`` highest: the lowest are
    forgotten first (as ``state.db`` prunes them). The default window (100k batches: about six days
    at one batch per 5 s) outlasts any redelivery the broker makes; a copy older than that is
    absorbed by idempotent stores (a VictoriaMetrics without ``-dedup.minScrapeInterval`` would
    keep it).

    Kept as sorted, disjoint runs ``[lo, hi]`` of consecutive numbers. An agent's numbers are
    consecutive but for gaps (batches its spool dropped) and a backlog arriving after newer live
    batches, so an agent costs a few runs however full its window — not an entry per batch: an
    ordered dict of 100k numbers took 13 MiB, about 2 GiB for a city's 150 agents once their
    windows filled (the soak saw the collector's memory grow with every batch)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lo: list[int] = []  # first number of each run, ascending
        self._hi: list[int] = []  # last number of each run (inclusive)
        self._count = 0

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._lo, seq) - 1
        return i >= 0 and seq <= self._hi[i]

    def add(self, seq: int) -> None:
        lo, hi = self._lo, self._hi
        i = bisect.bisect_right(lo, seq) - 1
        if i >= 0 and seq <= hi[i]:
            return
        left = i >= 0 and hi[i] == seq - 1
        right = i + 1 < len(lo) and lo[i + 1] == seq + 1
        if left and right:  # fills the gap between two runs
            hi[i] = hi[i + 1]
            del lo[i + 1], hi[i + 1]
        elif left:
            hi[i] = seq
        elif right:
            lo[i + 1] = seq
        else:
            lo.insert(i + 1, seq)
            hi.insert(i + 1, seq)
        self._count += 1
        while self._count > self.size:  # forget the lowest
            excess = self._count - self.size
            first = hi[0] - lo[0] + 1
            if first <= excess:
                del lo[0], hi[0]
                self._count -= first
            else:
                lo[0] += excess
                self._count -= excess

    def __len__(self) -> int:
        return self._count

    @property
    def runs(self) -> int:
        """How many runs of consecutive numbers are held (what the window costs)."""
        return len(self._lo)


class SeenLog(Protocol):
    """Where stored sequence numbers (and new series) are made durable (state.db), so a restart
    still drops copies and still knows each agent's series."""

    def record_seen(self, agent: str, seq: int) -> None: ...

    def record_series(self, agent: str, keys: Iterable[int]) -> None: ...


def series_key(measurement: str, tags: Mapping[str, str]) -> int:
    """A series' identity that is the same in every process (``hash()`` is salted per process)."""
    text = "\x00".join([measurement, *(f"{k}\x01{v}" for k, v in sorted(tags.items()))])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


@dataclass(frozen=True, slots=True)
class Quota:
    """What one agent may send: bytes and messages per second, averaged over ``burst_s``."""

    bytes_per_s: float
    messages_per_s: float
    burst_s: float = 10.0


@dataclass(slots=True)
class Accepted:
    topic: Topic
    envelope: envelope.Envelope


@dataclass(slots=True)
class StatusUpdate:
    agent: str
    status: Status


@dataclass(slots=True)
class CommandResult:
    agent: str
    result: Result


@dataclass(slots=True)
class Classified:
    """What a group of messages amounts to."""

    accepted: list[Accepted] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)

    @property
    def samples(self) -> list[Sample]:
        return [s for a in self.accepted for s in a.envelope.samples]


class Ingest:
    def __init__(
        self,
        root: str,
        limits: envelope.Limits,
        *,
        dedup_window: int = 100_000,
        max_series_per_agent: int = 20_000,
        counters: Counters | None = None,
        registry: Registry | None = None,
        quota: Quota | None = None,
        known_series: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        self.topics = Topics(root)
        self.limits = limits
        self.dedup_window = dedup_window
        self.max_series_per_agent = max_series_per_agent
        self.counters = counters or Counters()
        self.registry = registry or Registry(None)
        self.quota = quota
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}
        self._windows: dict[str, SeqWindow] = {}
        # Series per agent: stable keys (persisted, so the cap holds across restarts) and, for
        # the hot path, the per-process hashes of the ones seen since start.
        self._stable: dict[str, set[int]] = {a: set(keys) for a, keys in (known_series or {}).items()}
        self._series: dict[str, set[int]] = {}
        self._new_series: dict[str, list[int]] = {}
        self._logged: set[tuple[str, str]] = set()
        self._duplicates: Counter[str] = Counter()
        self._overridden: Counter[str] = Counter()
        self._unknown: Counter[str] = Counter()
        self._over_quota: Counter[str] = Counter()

    def _log_once(self, reason: str, agent: str, text: str, *args: object) -> None:
        # Once per (reason, agent): a broken agent must not flood the log.
        if (reason, agent) not in self._logged:
            self._logged.add((reason, agent))
            log.warning(text + " (counted; further ones not logged)", *args)

    def _refuse(self, reason: str, agent: str, detail: str) -> None:
        self.counters.reject(reason)
        self._log_once(reason, agent, "refused a message from %s: %s: %s", agent, reason, detail)

    # -- de-duplication ------------------------------------------------------------------------
    def seen(self, agent: str, seq: int) -> bool:
        w = self._windows.get(agent)
        return w is not None and seq in w

    def mark(self, agent: str, seq: int) -> None:
        w = self._windows.get(agent)
        if w is None:
            w = self._windows[agent] = SeqWindow(self.dedup_window)
        w.add(seq)

    def load_seen(self, agent: str, seqs: Iterable[int]) -> None:
        """Restore what was stored before a restart, oldest first."""
        for seq in seqs:
            self.mark(agent, seq)

    def _duplicate(self, agent: str) -> None:
        self.counters.inc("duplicates")
        self._duplicates[agent] += 1

    def take_counts(self) -> dict[str, dict[str, int]]:
        """Per agent since the last call: duplicates, samples whose tags tried to override the
        centre's identity, messages over quota; and messages from unknown agents."""
        out = {
            "duplicates": dict(self._duplicates),
            "identity_overridden": dict(self._overridden),
            "over_quota": dict(self._over_quota),
            "unknown": dict(self._unknown),
        }
        self._duplicates, self._overridden, self._over_quota, self._unknown = (
            Counter(),
            Counter(),
            Counter(),
            Counter(),
        )
        return out

    def commit(self, accepted: Sequence[Accepted], seen_log: SeenLog | None = None) -> None:
        """The batches are stored: remember them (and make that durable in ``seen_log``, with the
        series they opened)."""
        for a in accepted:
            e = a.envelope
            self.mark(e.agent, e.seq)
            if seen_log is not None:
                seen_log.record_seen(e.agent, e.seq)
        if seen_log is not None:
            for agent, keys in self._new_series.items():
                seen_log.record_series(agent, keys)
        self._new_series.clear()

    # -- classifying -----------------------------------------------------------------------------
    def classify(self, messages: Iterable[tuple[str, bytes]]) -> Classified:
        """A group of (topic, payload) messages stored together: what to store, what to record."""
        out = Classified()
        in_group: set[tuple[str, int]] = set()
        for topic, payload in messages:
            try:
                r = self.handle(topic, payload, in_group=in_group)
            except Exception as e:  # a bug in validation: this message is refused, the rest go on
                self.counters.stage_error("ingest", e)
                self._refuse("internal_error", "?", f"{type(e).__name__} on {topic[:200]}")
                continue
            if isinstance(r, Accepted):
                out.accepted.append(r)
            elif isinstance(r, StatusUpdate):
                out.statuses.append(r)
            elif isinstance(r, CommandResult):
                out.results.append(r)
        return out

    def handle(
        self, topic: str, payload: bytes, *, in_group: set[tuple[str, int]] | None = None
    ) -> Accepted | StatusUpdate | CommandResult | None:
        """Classify one message. Returns what to store or record, or None when refused/duplicate.

        ``in_group``: the (agent, seq) of batches accepted earlier in the same group, which this
        call adds to; a copy of one of them is a duplicate too."""
        self.counters.inc("received_messages")
        self.counters.inc("received_bytes", len(payload))
        t = self.topics.parse(topic)
        if t is None:
            self._refuse("bad_topic", "?", topic[:200])
            return None
        identity = self.registry.identity(t.agent)
        if identity is None:
            self._unknown[t.agent] += 1
            self._refuse("unknown_agent", t.agent, "not in the topology nor admitted — see netwatch-collector agents")
            return None
        if not self._within_quota(t.agent, len(payload)):
            self._over_quota[t.agent] += 1
            self._refuse("over_quota", t.agent, "more than limits.agent_bytes_per_s / agent_messages_per_s")
            return None
        if t.kind == "status":
            return self._status(t, payload, identity)
        if t.kind == "cmd/result":
            try:
                return CommandResult(t.agent, Result.decode(payload))
            except ControlRefused as e:
                self._refuse(e.reason, t.agent, f"command result: {e.detail}")
                return None
        if t.kind not in ("metrics", "events"):
            return None
        try:
            env = envelope.decode(
                payload, topic_agent=t.agent, limits=self.limits, identity=identity if identity else None
            )
        except envelope.WireError as e:
            self._refuse(e.reason, t.agent, e.detail)
            return None
        # A copy is counted as a duplicate and nothing else: its dropped samples and overridden
        # tags were counted with the first copy (a redelivery must not count them again).
        key = (t.agent, env.seq)
        if self.seen(t.agent, env.seq) or (in_group is not None and key in in_group):
            self._duplicate(t.agent)
            return None
        if in_group is not None:
            in_group.add(key)
        if env.overridden:
            self._overridden[t.agent] += env.overridden
            self.counters.inc("identity_overridden", env.overridden)
            self._log_once(
                "identity_overridden",
                t.agent,
                "%d samples from %s carried their own site/county tags: replaced by the centre's",
                env.overridden,
                t.agent,
            )
        for reason, n in env.dropped.items():
            self.counters.drop(reason, n)
            self._log_once(reason, t.agent, "dropped %d samples from %s: %s", n, t.agent, reason)
        return Accepted(t, self._cap_series(t.agent, env))

    def _within_quota(self, agent: str, size: int) -> bool:
        q = self.quota
        if q is None:
            return True
        buckets = self._buckets.get(agent)
        if buckets is None:
            buckets = self._buckets[agent] = (
                TokenBucket(q.bytes_per_s, burst=q.bytes_per_s * q.burst_s),
                TokenBucket(q.messages_per_s, burst=q.messages_per_s * q.burst_s),
            )
        return buckets[1].take(1) and buckets[0].take(size)

    def _cap_series(self, agent: str, env: envelope.Envelope) -> envelope.Envelope:
        """Drop samples that would open a series past the agent's cap (a broken or hostile agent
        inventing tag values must not flood the store with millions of series). The cap counts
        the series known before a restart too."""
        known = self._series.setdefault(agent, set())
        stable = self._stable.setdefault(agent, set())
        keep: list[Sample] = []
        over = 0
        for s in env.samples:
            key = hash((s.measurement, frozenset(s.tags.items())))
            if key not in known:
                skey = series_key(s.measurement, s.tags)
                if skey not in stable:
                    if len(stable) >= self.max_series_per_agent:
                        over += 1
                        continue
                    stable.add(skey)
                    self._new_series.setdefault(agent, []).append(skey)
                known.add(key)
            keep.append(s)
        if not over:
            return env
        self.counters.drop("series_cap", over)
        self._log_once(
            "series_cap",
            agent,
            "agent %s has more than %d series: dropping samples of new ones (raise "
            "limits.max_series_per_agent if this is real)",
            agent,
            self.max_series_per_agent,
        )
        return envelope.Envelope(env.agent, env.site, env.seq, env.sent_ns, keep, env.dropped, env.overridden)

    def _status(self, t: Topic, payload: bytes, identity: Mapping[str, str]) -> StatusUpdate | None:
        if not payload:
            return None  # a retained status being cleared
        try:
            status = decode_status(payload, topic_agent=t.agent)
        except envelope.WireError as e:
            self._refuse(e.reason, t.agent, e.detail)
            return None
        if identity.get("site"):
            status = dataclasses.replace(status, site=identity["site"])  # the centre's word, not the agent's
        self.counters.inc("status_messages")
        return StatusUpdate(t.agent, status)
