"""Agent backlog drain — a 24-hour township backlog (1,440 batches of 200 samples) leaving a real
agent process at ``publish.drain_rate`` while live probes keep running, stored by a real collector
process; against a raw paho publisher pushing the same payloads unthrottled, in the same run.

See README.md beside this file for what each case does and how to read the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import platform
import pstats
import random
import shlex
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from agent.spool import Spool, read_stats
from collector.storage.sqlite import SqliteReader, SqliteSink
from probes.base import parse_size
from probes.model import Sample
from protocol import envelope as wire

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from e2e.procs import CollectorProc, Proc  # noqa: E402
from e2e.rig import Listener  # noqa: E402
from services import Mosquitto, free_port, start_mosquitto  # noqa: E402

AGENT_ID = "twn-backlog"
SITE = "township-07"
TOPIC_ROOT = "netwatch/v1"
BATCHES = 1440  # one per minute for 24 h
SAMPLES_PER_BATCH = 200
MINUTE_NS = 60 * 1_000_000_000
#: the agent cuts a batch this long after the minute's polls started (its default batch_interval)
BATCH_CUT_NS = 5 * 1_000_000_000
LIVE_PROBES = 3  # tcp probes at 1 s against a local listener while the backlog drains
PROGRESS_POLL_S = 0.02  # how often the stored backlog's newest time is read (an index lookup)
DELAY_POLL_S = 0.5  # how often the newest live sample's age is read
BURST_SKIP_S = 2.0  # rates are taken from this long after the first store: past the start burst
RATE_WINDOW_S = 10.0  # window for the achieved-rate spread of a throttled drain
MAX_INFLIGHT = 20  # the agent's default mqtt.max_inflight, used by the peer too
DEFAULT_RATE = "128KiB"

# ----------------------------------------------------------------------------------- backlog


@dataclass(frozen=True, slots=True)
class Backlog:
    path: Path  # the pre-filled spool; each netwatch run gets a copy
    payloads: list[bytes]  # in seq order, for the peer
    samples: int
    payload_bytes: int
    body_bytes: int
    first_ns: int  # the minute the oldest batch was measured in
    #: every backlog sample is older than this and every live sample newer
    end_ns: int
    cum_bytes: list[int]  # payload bytes of batches 0..i
    build_s: float

    def batch_of(self, time_ns: int) -> int:
        return min(len(self.payloads) - 1, max(0, (time_ns - self.first_ns) // MINUTE_NS))

    def bytes_through(self, time_ns: int | None) -> int:
        """Payload bytes of the batches up to the one measured at ``time_ns``."""
        return 0 if time_ns is None else self.cum_bytes[self.batch_of(time_ns)]


@dataclass(frozen=True, slots=True)
class Port:
    device: str
    ifname: str
    ifalias: str
    up: bool
    peak_bps: float


class Township:
    """One township node's 200 series, polled once a minute: 120 switch ports (5 switches × 24,
    SNMP-like ``interface``), 40 ICMP targets, and 40 machine-room sensors (``room_env``, ``ups``,
    ``contact``, Modbus-like). Counters grow, traffic and temperatures follow the day."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ports: list[Port] = []
        for device, role in (
            ("sw-core", "core"),
            ("sw-clinic", "clinic"),
            ("sw-school", "school"),
            ("sw-office", "office"),
            ("sw-market", "market"),
        ):
            for n in range(1, 25):
                up = n <= 2 or rng.random() < 0.65  # uplinks always up, a third of access ports empty
                alias = f"uplink-{role}-{n}" if n <= 2 else f"{role}-access-{n:02d}"
                peak = rng.uniform(2e7, 3e8) if n <= 2 else rng.uniform(1e5, 4e7)
                self.ports.append(Port(device, f"GigabitEthernet0/{n}", alias, up, peak if up else 0.0))
        self.octets = [[rng.randrange(10**9, 10**12), rng.randrange(10**9, 10**12)] for _ in self.ports]
        self.errors = [[0, 0, 0, 0] for _ in self.ports]
        kinds = ["clinic", "school", "tower", "office", "pump", "cctv", "isp", "bank"]
        self.targets = [
            (f"{kinds[i % len(kinds)]}-{i // len(kinds) + 1:02d}", f"10.7.{i // 20}.{i % 20 + 10}") for i in range(40)
        ]
        self.base_rtt = [rng.uniform(0.5, 45.0) for _ in self.targets]
        self.rooms = [
            "core-room",
            "clinic-rack",
            "school-rack",
            "office-rack",
            "market-rack",
            "tower-hut",
            "pump-hut",
            "ups-room",
        ]
        self.room_base = [rng.uniform(19.0, 27.0) for _ in self.rooms]

    def minute(self, index: int, t_ns: int, identity: dict[str, str]) -> list[Sample]:
        rng = self.rng
        hour = (t_ns // 3_600_000_000_000) % 24
        day = 0.15 + 0.85 * max(0.0, math.sin(math.pi * (hour - 6) / 14))  # busy 6:00-20:00
        out: list[Sample] = []
        for k, (target, host) in enumerate(self.targets):
            lost = rng.choices((0, 1, 5), weights=(96, 3, 1))[0]
            fields: dict[str, int | float | bool | str] = {
                "sent": 5,
                "received": 5 - lost,
                "loss_pct": 100.0 * lost / 5,
            }
            if lost < 5:
                rtt = self.base_rtt[k] * (1 + 0.6 * day * rng.random())
                fields.update(
                    rtt_min_ms=round(rtt * 0.85, 3),
                    rtt_avg_ms=round(rtt, 3),
                    rtt_max_ms=round(rtt * 1.4, 3),
                    jitter_ms=round(rtt * rng.uniform(0.02, 0.2), 3),
                )
            out.append(
                Sample(
                    "icmp", {**identity, "target": target, "host": host}, fields, t_ns + 400_000_000 + k * 11_000_000
                )
            )
        for k, p in enumerate(self.ports):
            ocs, errs = self.octets[k], self.errors[k]
            in_bps = p.peak_bps * day * rng.uniform(0.3, 1.0)
            out_bps = in_bps * rng.uniform(0.1, 0.6)
            ocs[0] += int(in_bps * 60 / 8)
            ocs[1] += int(out_bps * 60 / 8)
            if p.up and rng.random() < 0.01:
                errs[rng.randrange(4)] += rng.randrange(1, 40)
            tags = {**identity, "device": p.device, "ifname": p.ifname, "ifalias": p.ifalias}
            out.append(
                Sample(
                    "interface",
                    tags,
                    {
                        "in_octets": ocs[0],
                        "out_octets": ocs[1],
                        "in_bps": round(in_bps, 1),
                        "out_bps": round(out_bps, 1),
                        "in_errors": errs[0],
                        "out_errors": errs[1],
                        "in_discards": errs[2],
                        "out_discards": errs[3],
                        "oper_up": p.up,
                        "speed_mbps": 1000,
                    },
                    t_ns + 1_500_000_000 + k * 4_000_000,
                )
            )
        t = t_ns + 3_000_000_000
        for r, room in enumerate(self.rooms):
            temp = self.room_base[r] + 3.0 * day + rng.gauss(0, 0.15)
            hum = 45.0 + 10.0 * (1 - day) + rng.gauss(0, 0.8)
            dew = temp - (100.0 - hum) / 5.0
            env = {**identity, "device": f"env-{room}", "room": room}
            out.append(
                Sample(
                    "room_env",
                    {**env, "sensor": "main"},
                    {"temperature_c": round(temp, 1), "humidity_pct": round(hum, 1), "dew_point_c": round(dew, 1)},
                    t + r * 9_000_000,
                )
            )
            for n in (1, 2, 3):
                out.append(
                    Sample(
                        "room_env",
                        {**env, "sensor": f"ntc{n}"},
                        {"temperature_c": round(temp + n * 1.5 + rng.gauss(0, 0.2), 1)},
                        t + r * 9_000_000 + n * 1_000_000,
                    )
                )
        for u in range(4):
            on_battery = index % 360 < 8 and u == 0  # a short mains cut every 6 hours at one UPS
            out.append(
                Sample(
                    "ups",
                    {**identity, "device": f"ups-{u + 1}", "room": self.rooms[u * 2]},
                    {
                        "battery_pct": round(100.0 - (index % 360) * 2.5 if on_battery else 100.0, 1),
                        "runtime_min": round(rng.uniform(38, 42) if not on_battery else 20.0, 1),
                        "load_pct": round(30 + 20 * day + rng.uniform(-2, 2), 1),
                        "input_v": 0.0 if on_battery else round(rng.gauss(229, 2), 1),
                        "on_battery": on_battery,
                    },
                    t + 100_000_000 + u * 5_000_000,
                )
            )
        for c, contact in enumerate(("door-core", "door-ups", "smoke-core", "water-ups")):
            out.append(
                Sample(
                    "contact",
                    {**identity, "device": "di-core", "contact": contact},
                    {"active": contact.startswith("door") and hour in (8, 17) and rng.random() < 0.1},
                    t + 200_000_000 + c * 1_000_000,
                )
            )
        assert len(out) == SAMPLES_PER_BATCH, len(out)
        return out


def build_backlog(path: Path, seed: int) -> Backlog:
    """Write 24 hours of one-minute batches into an agent spool, encoded as the agent encodes them."""
    t = time.perf_counter()
    rng = random.Random(seed)
    town = Township(rng)
    identity = {"site": SITE, "agent": AGENT_ID}
    # Whole minutes, ending a minute before now: every backlog sample is in the past.
    first = (time.time_ns() // MINUTE_NS - BATCHES - 1) * MINUTE_NS
    spool = Spool(path, max_bytes=2**40, max_age_s=30 * 86400)
    payloads: list[bytes] = []
    cum: list[int] = []
    samples = body = 0
    try:
        for i in range(BATCHES):
            t_ns = first + i * MINUTE_NS
            batch = town.minute(i, t_ns, identity)
            created = t_ns + BATCH_CUT_NS
            spool.put(
                lambda seq, b=batch, c=created: wire.encode(AGENT_ID, SITE, seq, b, sent_ns=c),
                len(batch),
                created_ns=created,
            )
            samples += len(batch)
        rows = spool.pending(BATCHES)
    finally:
        spool.close()
    for _seq, _topic, payload in rows:
        payloads.append(bytes(payload))
        cum.append((cum[-1] if cum else 0) + len(payload))
        body += len(zlib.decompress(payload[wire.HEADER_LEN :]))
    return Backlog(
        path, payloads, samples, cum[-1], body, first, first + BATCHES * MINUTE_NS, cum, time.perf_counter() - t
    )


# ------------------------------------------------------------------------------- measuring


def cpu_s(pid: int | None) -> float:
    """user + system CPU seconds of a process (0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        c = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(c.user + c.system)


def written_mib(pid: int | None) -> float:
    """MiB a process has handed to write(2) and friends: its files, WAL and checkpoints included."""
    if pid is None:
        return 0.0
    try:
        counters = psutil.Process(pid).io_counters()
    except (psutil.Error, AttributeError):
        return 0.0
    return float(getattr(counters, "write_chars", counters.write_bytes)) / 2**20


def machine_busy_s() -> float:
    c = psutil.cpu_times()
    return float(c.user + c.nice + c.system + getattr(c, "irq", 0) + getattr(c, "softirq", 0) + getattr(c, "steal", 0))


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"n": len(values), "p50": round(q[49], 3), "p95": round(q[94], 3), "max": round(max(values), 3)}


@dataclass(slots=True)
class Result:
    case: str
    rate: int | None  # drain_rate in bytes/s (0: unlimited); None for the peer
    #: subject started (agent process launched / peer connecting) → first backlog sample stored
    start_s: float
    #: first backlog sample stored → all of them stored: the headline drain time
    drain_s: float
    #: what the rate allows for that window: (payload bytes − the bucket's 1 s burst) ÷ rate
    ideal_s: float | None
    #: payload bytes ÷ s stored from BURST_SKIP_S after the first store to the end
    sustained_bps: float
    window_bps: tuple[float, float] | None  # slowest and fastest RATE_WINDOW_S window
    #: first → last backlog payload passing the broker (the monitor subscriber): publishing alone
    published_s: float | None
    delay_during: dict[str, float | int | None]
    delay_steady: dict[str, float | int | None]
    live_samples: int
    publisher_cpu_s: float  # agent process over the drain window, or the peer's thread in all
    collector_cpu_s: float
    #: MiB written by the agent (its spool: acks) and the collector (SQLite, WAL, state.db)
    agent_written_mib: float | None
    collector_written_mib: float
    broker_cpu_s: float
    bench_cpu_s: float  # this process: pollers, monitor subscriber (and the peer's thread)
    other_cpu_s: float  # every other process on the machine: noise when not near 0
    stored: int
    expected: int
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.stored == self.expected and not self.problems

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["valid"] = self.valid
        return d


class Store:
    """Read-only view of the collector's SQLite file, as the status page reads it."""

    def __init__(self, path: Path, backlog: Backlog) -> None:
        self.reader: SqliteReader = SqliteSink.open_readonly(path)
        # Counting by time alone (every backlog sample is older than end_ns, every other one
        # newer) is an index range the reader's API does not offer; plain SQL on the same file.
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.end_ns = backlog.end_ns

    def newest_backlog_ns(self) -> int | None:
        # points_by_time index: one lookup, cheap enough to poll every 20 ms
        row = self.db.execute("SELECT max(time_ns) FROM points WHERE time_ns < ?", (self.end_ns,)).fetchone()
        return None if row[0] is None else int(row[0])

    def backlog_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM points WHERE time_ns < ?", (self.end_ns,)).fetchone()[0])

    def newest_live_ns(self, since_ns: int) -> int | None:
        rows = self.reader.query("tcp", tags={"agent": AGENT_ID}, since_ns=since_ns, newest_first=True, limit=1)
        return rows[0].time_ns if rows else None

    def first_live_ns(self, since_ns: int) -> int | None:
        rows = self.reader.query("tcp", tags={"agent": AGENT_ID}, since_ns=since_ns, limit=1)
        return rows[0].time_ns if rows else None

    def live_count(self, since_ns: int) -> int:
        return len(self.reader.query("tcp", tags={"agent": AGENT_ID}, since_ns=since_ns))

    def close(self) -> None:
        self.reader.close()
        self.db.close()


@dataclass(slots=True)
class Watch:
    """What the poll loop saw: drain progress and the live data's age."""

    t_first: float | None = None  # monotonic time the first backlog sample was seen stored
    t_done: float | None = None
    first_bytes: int = 0  # backlog bytes already stored when first seen
    progress: list[tuple[float, int]] = field(default_factory=list)  # (t, bytes stored)
    #: (wall-clock ns of the poll, measurement time of the newest live sample stored then, if any)
    live_polls: list[tuple[int, int | None]] = field(default_factory=list)
    cpu_at_first: dict[str, float] = field(default_factory=dict)


def watch_drain(
    store: Store,
    backlog: Backlog,
    *,
    deadline: float,
    live_since_ns: int | None,
    cpu: Callable[[], dict[str, float]],
    alive: Callable[[], bool],
) -> Watch:
    """Poll until the whole backlog is stored (or the deadline, or the subject died)."""
    w = Watch()
    next_delay = time.monotonic()
    newest: int | None = None
    for _ in range(int((deadline - time.monotonic()) / PROGRESS_POLL_S) + 2):
        now = time.monotonic()
        if now > deadline or not alive():
            break
        n = store.newest_backlog_ns()
        if n is not None and n != newest:
            newest = n
            if w.t_first is None:
                w.t_first, w.first_bytes = now, backlog.bytes_through(n)
                w.cpu_at_first = cpu()
            w.progress.append((now, backlog.bytes_through(n)))
        # The full count only once the newest batch is in; batches may land slightly out of order.
        last = newest is not None and backlog.batch_of(newest) == len(backlog.payloads) - 1
        if last and store.backlog_count() >= backlog.samples:
            w.t_done = time.monotonic()
            break
        if live_since_ns is not None and now >= next_delay:
            next_delay = now + DELAY_POLL_S
            if w.t_first is not None:
                w.live_polls.append((time.time_ns(), store.newest_live_ns(live_since_ns)))
        time.sleep(PROGRESS_POLL_S)
    return w


def steady_polls(store: Store, since_ns: int, seconds: float) -> list[tuple[int, int | None]]:
    """The live data's age with no backlog left: the reference the drain is compared with."""
    out: list[tuple[int, int | None]] = []
    for _ in range(int(seconds / DELAY_POLL_S)):
        time.sleep(DELAY_POLL_S)
        out.append((time.time_ns(), store.newest_live_ns(since_ns)))
    return out


def live_delays(polls: list[tuple[int, int | None]], first_live_ns: int | None) -> list[float]:
    """How far the centre's view of live data is behind, at each poll: now − the newest live
    sample stored. Before any is stored, the view is behind since the first live sample was
    measured (it exists, the centre has not got it); polls before that are skipped."""
    out: list[float] = []
    for at, newest in polls:
        ref = newest if newest is not None else first_live_ns
        if ref is not None and ref <= at:
            out.append((at - ref) / 1e9)
    return out


def past_burst(progress: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The progress from BURST_SKIP_S after the first store on: past the token bucket's
    start-up burst (one second's worth of bytes), which would inflate any rate that includes it."""
    if not progress:
        return []
    return [p for p in progress if p[0] - progress[0][0] >= BURST_SKIP_S] or progress[-1:]


def sustained_rate(progress: list[tuple[float, int]], total: int, t_done: float) -> float:
    """Bytes/s stored from BURST_SKIP_S after the first store to the end."""
    rest = past_burst(progress)
    if not rest or t_done <= rest[0][0]:
        return 0.0
    return (total - rest[0][1]) / (t_done - rest[0][0])


def window_rates(progress: list[tuple[float, int]]) -> tuple[float, float] | None:
    """Slowest and fastest byte rate over consecutive RATE_WINDOW_S windows, past the burst."""
    rest = past_burst(progress)
    rates: list[float] = []
    start_t, start_b = rest[0] if rest else (0.0, 0)
    for t, b in rest[1:]:
        if t - start_t >= RATE_WINDOW_S:
            rates.append((b - start_b) / (t - start_t))
            start_t, start_b = t, b
    return (min(rates), max(rates)) if len(rates) >= 2 else None


# ------------------------------------------------------------------------------- the cases


class Monitor:
    """A QoS 0 subscriber on the agents' metrics topic: when each backlog payload passed the
    broker, which times the publishing side alone (the collector's pace does not enter)."""

    def __init__(self, port: int, backlog: Backlog) -> None:
        self.index = {p: i for i, p in enumerate(backlog.payloads)}
        self.seen: dict[int, float] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-backlog-monitor", clean_session=True)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe(f"{TOPIC_ROOT}/agents/+/metrics", 0)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=60)
        self.client.loop_start()
        if not subscribed.wait(10):
            self.close()
            raise RuntimeError(f"monitor: no SUBACK from 127.0.0.1:{port} in 10 s")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        i = self.index.get(msg.payload)
        if i is not None:
            with self._lock:
                self.seen.setdefault(i, time.monotonic())

    def window(self) -> tuple[float, float, int] | None:
        """(first, last, distinct backlog payloads) seen so far."""
        with self._lock:
            if not self.seen:
                return None
            return min(self.seen.values()), max(self.seen.values()), len(self.seen)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(slots=True)
class Services:
    """A fresh Mosquitto and collector process (fresh data dir) for one case."""

    workdir: Path
    broker: Mosquitto
    collector: CollectorProc
    store: Store
    monitor: Monitor

    @classmethod
    @contextlib.contextmanager
    def start(cls, workdir: Path, backlog: Backlog) -> Iterator[Services]:
        broker = start_mosquitto(workdir / "mosquitto")
        col: CollectorProc | None = None
        store: Store | None = None
        monitor: Monitor | None = None
        try:
            api_port = free_port()
            cfg = workdir / "collector.yaml"
            cfg.write_text(
                f"collector: {{id: bench-backlog, data_dir: '{workdir / 'collector'}'}}\n"
                f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\n"
                "storage:\n  sqlite: {retention: 30d}\n"
                f"api: {{port: {api_port}}}\n"
            )
            col = CollectorProc(cfg, api_port, workdir / "collector.log")
            col.wait_ready()
            store = Store(workdir / "collector" / "metrics.db", backlog)
            monitor = Monitor(broker.port, backlog)
            yield cls(workdir, broker, col, store, monitor)
        finally:
            if monitor is not None:
                monitor.close()
            if store is not None:
                store.close()
            if col is not None:
                col.stop()
            broker.close()

    def cpu(self, **extra: int | None) -> dict[str, float]:
        out = {
            "collector": cpu_s(self.collector.p.pid),
            "broker": cpu_s(self.broker.pid),
            "bench": time.process_time(),
            "busy": machine_busy_s(),
        }
        out["collector_written"] = written_mib(self.collector.p.pid)
        for name, pid in extra.items():
            out[name] = cpu_s(pid)
            out[f"{name}_written"] = written_mib(pid)
        return out

    def collector_problems(self) -> list[str]:
        st = self.collector.get("/api/stats")
        out = []
        if st.get("rejected_total") or st.get("dropped_samples"):
            out.append(f"collector rejected={st.get('rejected')} dropped_samples={st.get('dropped_samples')}")
        out += [f"{k}={v}" for k, v in st.items() if k.startswith("store_") and v]
        return out


def agent_config(workdir: Path, broker_port: int, spool: Path, rate: int, target_port: int) -> Path:
    probes = "".join(
        f"  - {{type: tcp, name: live-{i}, host: 127.0.0.1, port: {target_port}, interval: 1s, jitter: 0s, timeout: 1s}}\n"
        for i in range(LIVE_PROBES)
    )
    path = workdir / "agent.yaml"
    path.write_text(
        f"agent: {{id: {AGENT_ID}, site: {SITE}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker_port}, max_inflight: {MAX_INFLIGHT}}}\n"
        f"spool: {{path: '{spool}'}}\n"
        f"publish: {{batch_interval: 1s, drain_rate: {rate}, self_metrics_interval: 5s}}\n"
        f"probes:\n{probes}"
    )
    return path


def finish(
    case: str,
    rate: int | None,
    backlog: Backlog,
    svc: Services,
    w: Watch,
    t_launch: float,
    cpu_end: dict[str, float],
    publisher_cpu: float,
    during: list[float],
    steady: list[float],
    live_samples: int,
    problems: list[str],
) -> Result:
    stored = svc.store.backlog_count()
    if w.t_first is None or w.t_done is None:
        problems.append(f"only {stored:,} of {backlog.samples:,} backlog samples stored before the timeout")
    t_first = w.t_first if w.t_first is not None else t_launch
    t_done = w.t_done if w.t_done is not None else time.monotonic()
    drain = t_done - t_first
    moved = backlog.payload_bytes - w.first_bytes
    c0 = w.cpu_at_first or cpu_end
    col, brk, bench = (cpu_end[k] - c0[k] for k in ("collector", "broker", "bench"))
    agent = cpu_end["agent"] - c0["agent"] if "agent" in cpu_end else 0.0
    other = max(0.0, cpu_end["busy"] - c0["busy"] - agent - col - brk - bench)
    seen = svc.monitor.window()
    published = None
    if seen is not None and seen[2] == len(backlog.payloads):
        published = seen[1] - seen[0]
    else:
        problems.append(f"the monitor saw {seen[2] if seen else 0} of {len(backlog.payloads)} backlog payloads")
    return Result(
        case,
        rate,
        t_first - t_launch,
        drain,
        max(0.0, moved - rate) / rate if rate else None,
        sustained_rate(w.progress, backlog.payload_bytes, t_done),
        window_rates(w.progress) if rate else None,
        published,
        percentiles(during),
        percentiles(steady),
        live_samples,
        agent if "agent" in cpu_end else publisher_cpu,
        col,
        cpu_end["agent_written"] - c0["agent_written"] if "agent" in cpu_end else None,
        cpu_end["collector_written"] - c0["collector_written"],
        brk,
        bench,
        other,
        stored,
        backlog.samples,
        problems + svc.collector_problems(),
    )


def run_agent(
    case: str, rate: int, backlog: Backlog, workroot: Path, target: Listener, args: argparse.Namespace
) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=workroot))
    try:
        with Services.start(workdir, backlog) as svc:
            spool = workdir / "agent-spool.db"
            shutil.copyfile(backlog.path, spool)
            cfg = agent_config(workdir, svc.broker.port, spool, rate, target.port)
            live_since = time.time_ns()
            t_launch = time.monotonic()
            prof = workdir / "agent.prof" if args.profile else None
            profiler = ["-m", "cProfile", "-o", str(prof)] if prof is not None else []
            argv = [sys.executable, *profiler, "-m", "agent.cli", "run", "--config", str(cfg)]
            agent = Proc("agent", argv, workdir / "agent.log")
            problems: list[str] = []
            try:
                timeout = args.timeout if not rate else min(args.timeout, 2 * backlog.payload_bytes / rate + 60)
                w = watch_drain(
                    svc.store,
                    backlog,
                    deadline=t_launch + timeout,
                    live_since_ns=live_since,
                    cpu=lambda: svc.cpu(agent=agent.p.pid),
                    alive=agent.alive,
                )
                cpu_end = svc.cpu(agent=agent.p.pid)
                after = steady_polls(svc.store, live_since, args.steady) if rate and w.t_done else []
            finally:
                rc = agent.stop()
            if rc != 0:
                problems.append(f"agent exited {rc}: {agent.tail(5)}")
            if prof is not None and prof.exists():
                buf = io.StringIO()
                pstats.Stats(str(prof), stream=buf).sort_stats("tottime").print_stats(20)
                PROFILES[case] = buf.getvalue()
            st = read_stats(spool)
            if st.dropped_samples:
                problems.append(f"agent spool dropped {st.dropped_samples} samples")
            left = backlog_left(spool, len(backlog.payloads))
            if left:
                problems.append(f"{left} backlog batches are still in the agent's spool, never acknowledged")
            live = svc.store.live_count(live_since)
            if live == 0:
                problems.append("no live sample was stored during the run")
            first_live = svc.store.first_live_ns(live_since)
            during, steady = live_delays(w.live_polls, first_live), live_delays(after, first_live)
            return finish(case, rate, backlog, svc, w, t_launch, cpu_end, 0.0, during, steady, live, problems)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


#: --profile: the agent's cProfile by case, printed at the end
PROFILES: dict[str, str] = {}


def backlog_left(spool: Path, batches: int) -> int:
    """Backlog batches (seq 1..batches) still in a stopped agent's spool."""
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM batches WHERE seq <= ?", (batches,)).fetchone()[0])
    finally:
        db.close()


class PeerPublisher(threading.Thread):
    """The unthrottled floor: one paho client, QoS 1, the same payloads in seq order, as fast as
    the broker acknowledges them with the agent's in-flight window; paho's loop runs in this
    thread, so its CPU is this thread's."""

    def __init__(self, port: int, payloads: list[bytes], timeout_s: float) -> None:
        super().__init__(name="peer-publisher", daemon=True)
        self.port = port
        self.payloads = payloads
        self.timeout_s = timeout_s
        self.acked = 0
        self.cpu_s = 0.0  # this thread's CPU, connect to last PUBACK
        self.error: str | None = None

    def run(self) -> None:
        topic = f"{TOPIC_ROOT}/agents/{AGENT_ID}/metrics"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-backlog-peer", clean_session=True)
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.max_queued_messages_set(0)
        deadline = time.monotonic() + self.timeout_s
        try:
            c.connect("127.0.0.1", self.port, keepalive=60)
            while not c.is_connected() and time.monotonic() < deadline:
                c.loop(0.05)
            infos = [c.publish(topic, p, qos=1) for p in self.payloads]
            while time.monotonic() < deadline:
                self.acked = sum(1 for i in infos if i.is_published())
                if self.acked == len(infos):
                    break
                c.loop(0.05)
            else:
                self.error = f"broker acknowledged {self.acked} of {len(infos)} publishes in {self.timeout_s} s"
            self.cpu_s = time.thread_time()
            c.disconnect()
        except Exception as e:  # reported as a problem: the run is void
            self.error = repr(e)


def run_peer(case: str, backlog: Backlog, workroot: Path, args: argparse.Namespace) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=workroot))
    try:
        with Services.start(workdir, backlog) as svc:
            peer = PeerPublisher(svc.broker.port, backlog.payloads, args.timeout)
            t_launch = time.monotonic()
            peer.start()
            w = watch_drain(
                svc.store,
                backlog,
                deadline=t_launch + args.timeout,
                live_since_ns=None,
                cpu=svc.cpu,
                alive=lambda: peer.is_alive() or peer.error is None,
            )
            cpu_end = svc.cpu()
            peer.join(args.timeout)
            problems = [f"peer: {peer.error}"] if peer.error else []
            return finish(case, None, backlog, svc, w, t_launch, cpu_end, peer.cpu_s, [], [], 0, problems)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------- reporting

CASE_LABELS = {
    "netwatch-throttled": "netwatch agent, drain_rate {rate}, live probes",
    "netwatch-unlimited": "netwatch agent, drain_rate 0 (unlimited), live probes",
    "peer-paho": "peer: raw paho QoS 1, unthrottled, same payloads",
}


@dataclass(slots=True)
class CaseRuns:
    runs: list[Result]

    @property
    def median(self) -> Result:
        ordered = sorted(self.runs, key=lambda r: r.drain_s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.runs)

    def spread(self) -> str:
        d = sorted(r.drain_s for r in self.runs)
        return f"{d[0]:.2f}–{d[-1]:.2f}" if len(d) > 1 else "–"


def kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def _delay(d: dict[str, float | int | None]) -> str:
    if not d["n"]:
        return "–"
    return f"{d['p50']:.2f} / {d['p95']:.2f} / {d['max']:.2f}"


def ratios(results: dict[str, CaseRuns]) -> dict[str, float]:
    out: dict[str, float] = {}
    t = results.get("netwatch-throttled")
    if t is not None and t.median.ideal_s and t.median.rate:
        r = t.median
        out["throttled_drain_over_ideal"] = round(r.drain_s / r.ideal_s, 3)
        out["throttled_sustained_over_rate"] = round(r.sustained_bps / r.rate, 3)
        during, steady = r.delay_during["p95"], r.delay_steady["p95"]
        if during is not None and steady:
            out["live_delay_p95_during_over_after"] = round(during / steady, 3)
    u, p = results.get("netwatch-unlimited"), results.get("peer-paho")
    if u is not None and p is not None:
        out["unlimited_over_peer_stored"] = round(u.median.drain_s / p.median.drain_s, 3)
        up, pp = u.median.published_s, p.median.published_s
        if up is not None and pp:
            out["unlimited_over_peer_published"] = round(up / pp, 3)
    return out


def table(results: dict[str, CaseRuns]) -> str:
    lines = [
        "| case | runs | start s | drain s (stored) | range | ideal s | sustained KiB/s | 10-s windows KiB/s "
        "| published s | live delay during p50/p95/max s | live delay after p50/p95/max s | live samples "
        "| publisher CPU s | collector CPU s | agent MiB written | collector MiB written | broker CPU s "
        "| other procs CPU s | stored/expected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for case, runs in results.items():
        r = runs.median
        label = CASE_LABELS[case].format(rate=f"{kib(r.rate or 0)} KiB/s")
        ok = f"{r.stored:,}/{r.expected:,}" + ("" if runs.valid else " **VOID**")
        win = f"{kib(r.window_bps[0])}–{kib(r.window_bps[1])}" if r.window_bps else "–"
        ideal = f"{r.ideal_s:.2f}" if r.ideal_s else "–"
        pub = f"{r.published_s:.2f}" if r.published_s is not None else "–"
        lines.append(
            f"| {label} | {len(runs.runs)} | {r.start_s:.2f} | {r.drain_s:.2f} | {runs.spread()} | {ideal} "
            f"| {kib(r.sustained_bps)} | {win} | {pub} | {_delay(r.delay_during)} | {_delay(r.delay_steady)} "
            f"| {r.live_samples or '–'} | {r.publisher_cpu_s:.2f} | {r.collector_cpu_s:.2f} "
            f"| {f'{r.agent_written_mib:,.0f}' if r.agent_written_mib is not None else '–'} "
            f"| {r.collector_written_mib:,.0f} | {r.broker_cpu_s:.2f} "
            f"| {r.other_cpu_s:.2f} | {ok} |"
        )
    every = [r for runs in results.values() for r in runs.runs]
    other, wall = sum(r.other_cpu_s for r in every), sum(r.drain_s for r in every)
    lines += [
        "",
        f"Other processes on the machine used {other:.1f} CPU-s during the {wall:.1f} s of drain windows."
        + (
            " **The machine was busy: these numbers are skewed; rerun on a quiet machine.**"
            if other > 0.1 * wall
            else ""
        ),
        "",
    ]
    q = ratios(results)
    if "throttled_drain_over_ideal" in q:
        lines.append(
            f"- throttled drain ÷ ideal ((bytes − 1 s burst) ÷ rate): **{q['throttled_drain_over_ideal']:.3f}×**; "
            f"sustained ÷ configured rate {q['throttled_sustained_over_rate']:.3f}"
        )
    if "live_delay_p95_during_over_after" in q:
        lines.append(
            f"- live data delay p95, during the throttled drain ÷ after it: **{q['live_delay_p95_during_over_after']:.2f}×**"
        )
    if "unlimited_over_peer_stored" in q:
        lines.append(f"- netwatch unlimited ÷ raw paho, drain until stored: **{q['unlimited_over_peer_stored']:.2f}×**")
    if "unlimited_over_peer_published" in q:
        lines.append(
            "- netwatch unlimited ÷ raw paho, publishing alone (first → last payload through the broker): "
            f"**{q['unlimited_over_peer_published']:.2f}×**"
        )
    for c, runs in results.items():
        for r in runs.runs:
            if not r.valid:
                lines.append(
                    f"- **VOID** {c}: stored {r.stored:,} of {r.expected:,}; "
                    + "; ".join(r.problems or ["lost samples"])
                )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1min_at_start": _LOAD_AT_START,
    }


_LOAD_AT_START = round(os.getloadavg()[0], 2)


def describe(backlog: Backlog) -> str:
    return (
        f"{backlog.samples:,} samples in {len(backlog.payloads)} one-minute batches of {SAMPLES_PER_BATCH} "
        f"(120 `interface`, 40 `icmp`, 32 `room_env`, 4 `ups`, 4 `contact` per minute) over 24 h: "
        f"{backlog.payload_bytes / 2**20:.2f} MiB of zlib payloads ({backlog.body_bytes / 2**20:.1f} MiB JSON), "
        f"{backlog.payload_bytes / len(backlog.payloads) / 1024:.1f} KiB per batch"
    )


def record(path: Path, command: str, args: argparse.Namespace, backlog: Backlog, results: dict[str, CaseRuns]) -> None:
    m = machine()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "",
        "## backlog",
        "",
        f"{when} — {m['nproc']} CPUs, Python {m['python']}, {m['platform']}, "
        f"1-min load average {m['loadavg_1min_at_start']} before the run",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {describe(backlog)}. Live: {LIVE_PROBES} tcp probes at 1 s, `batch_interval: 1s`. "
        f"Unthrottled cases: median of {args.repeat} interleaved runs.",
        "",
        table(results),
        "",
    ]
    with path.open("a") as f:
        f.write("\n".join(text))


# ------------------------------------------------------------------------------------ main

ALL_CASES = list(CASE_LABELS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--rate",
        default=DEFAULT_RATE,
        help=f"the throttled case's publish.drain_rate, e.g. 64KiB (default {DEFAULT_RATE}: ~85 s for the 10.5 MiB backlog)",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each unthrottled case, interleaved; median reported")
    p.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated, of {', '.join(ALL_CASES)}")
    p.add_argument(
        "--steady", type=float, default=10.0, help="seconds of live delay measured after the throttled drain"
    )
    p.add_argument("--timeout", type=float, default=240.0, help="seconds one run may take before it is void")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--record", type=Path, default=None, metavar="RESULTS_MD", help="append a '## backlog' section")
    p.add_argument(
        "--profile",
        action="store_true",
        help="run each agent under cProfile and print its top functions (slower: --record is refused)",
    )
    a = p.parse_args(argv)
    unknown = set(a.cases.split(",")) - set(ALL_CASES)
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_CASES)}")
    try:
        a.rate_bytes = parse_size(a.rate)
    except ValueError as e:
        p.error(f"--rate: {e}")
    if a.rate_bytes <= 0:
        p.error("--rate must be above 0 (the unlimited case is measured anyway)")
    if a.profile and a.record:
        p.error("--profile slows the agent down: its numbers must not be recorded")
    if not 1 <= a.repeat <= 10 or not 0 <= a.steady <= 120 or not 10 <= a.timeout <= 1800:
        p.error("--repeat 1..10, --steady 0..120 and --timeout 10..1800")
    return a


def _rel(path: str) -> str:
    p = Path(path).absolute()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([_rel(sys.executable), _rel(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)])
    say = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    cases = args.cases.split(",")
    results: dict[str, CaseRuns] = {c: CaseRuns([]) for c in cases}
    target = Listener()
    try:
        with tempfile.TemporaryDirectory(prefix="netwatch-bench-backlog-") as tmp:
            backlog = build_backlog(Path(tmp) / "backlog-spool.db", args.seed)
            say(f"backlog: {describe(backlog)} ({backlog.build_s:.1f} s to build)")
            # The throttled run once (its pace is set by the rate); the short unthrottled ones
            # interleaved, each round starting one case later, so drift hits them alike.
            fast = [c for c in cases if c != "netwatch-throttled"]
            plan: list[str] = ["netwatch-throttled"] if "netwatch-throttled" in cases else []
            for rnd in range(args.repeat):
                plan += [fast[(rnd + i) % len(fast)] for i in range(len(fast))]
            for case in plan:
                if case == "peer-paho":
                    r = run_peer(case, backlog, Path(tmp), args)
                else:
                    rate = args.rate_bytes if case == "netwatch-throttled" else 0
                    r = run_agent(case, rate, backlog, Path(tmp), target, args)
                results[case].runs.append(r)
                status = "ok" if r.valid else "VOID: " + "; ".join(r.problems or ["lost samples"])
                say(
                    f"{case}: drain {r.drain_s:.2f} s (start {r.start_s:.2f} s), {kib(r.sustained_bps)} KiB/s, "
                    f"published in {r.published_s} s, live delay p95 {r.delay_during['p95']}, "
                    f"stored {r.stored:,}/{r.expected:,} — {status}"
                )
    finally:
        target.close()
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "command": command,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "backlog": {
                        "samples": backlog.samples,
                        "batches": len(backlog.payloads),
                        "payload_bytes": backlog.payload_bytes,
                        "body_bytes": backlog.body_bytes,
                        "mib": round(backlog.payload_bytes / 2**20, 3),
                    },
                    "cases": {
                        c: {
                            "median": runs.median.to_json(),
                            "valid": runs.valid,
                            "runs": [r.to_json() for r in runs.runs],
                        }
                        for c, runs in results.items()
                    },
                    "ratios": ratios(results),
                },
                indent=2,
            )
        )
    else:
        print(table(results))
    for case, text in PROFILES.items():
        print(f"\n=== cProfile of the agent in {case} (by own time) ===\n{text}", file=sys.stderr)
    if args.record is not None:
        record(args.record, command, args, backlog, results)
    return 0 if all(runs.valid for runs in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
