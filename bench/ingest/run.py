"""Collector ingest throughput — broker → SQLite and broker → VictoriaMetrics — against a raw
paho subscriber writing the same envelopes with sqlite3 / influxdb-client, measured in one run.

Every case gets a fresh Mosquitto pre-loaded with the whole data set for an offline persistent
session, so the timed part is only "subscriber connects → last sample stored and acknowledged".
See README.md beside this file for what each side does and how to read the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import io
import json
import logging
import os
import platform
import pstats
import queue
import random
import shlex
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion

from collector import config as collector_config
from collector.service import MAX_MESSAGES_PER_WRITE, Collector
from probes.model import Sample
from protocol import envelope as wire

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from services import Mosquitto, VictoriaMetrics, start_mosquitto, start_victoria_metrics  # noqa: E402

TOPIC_ROOT = "netwatch/v1"
#: What the collector subscribes to; the session the pre-load creates must hold the same.
SUBSCRIPTIONS = [(f"{TOPIC_ROOT}/agents/+/{kind}", 1) for kind in ("metrics", "events", "status")]
#: The collector's own InfluxSink default, used by the peer too so both send equal requests.
LINES_PER_REQUEST = 5000
SELF_MEASUREMENT = "netwatch_collector"  # the collector's self-metrics sample, not bench data
# ...and what it writes beside it for Grafana (collector/overview.py): sites' state and alert counts
OWN_MEASUREMENTS = (SELF_MEASUREMENT, "netwatch_site", "netwatch_alerts")
POLL_S = 0.002
NOISY_SHARE = 0.1  # of one core, taken by other processes during a timed run
POLL_INTERVAL_NS = 10 * 1_000_000_000


# ----------------------------------------------------------------------------------- data set


@dataclass(frozen=True, slots=True)
class Dataset:
    messages: list[tuple[str, bytes]]  # (topic, envelope), in publish order
    samples: int
    #: points VictoriaMetrics ends up with: one per non-string field (strings are dropped)
    vm_points: int
    payload_bytes: int
    body_bytes: int


def _agent_poll(rng: random.Random, agent: int, poll: int, t_ns: int, ports: int) -> list[Sample]:
    """One poll cycle of a township node: host, a few ICMP targets, a switch's ports, statuses."""
    tgt = {"target": "localhost"}
    out: list[Sample] = []
    busy = rng.uniform(2, 60)
    out.append(
        Sample(
            "host_cpu",
            {**tgt, "cpu": "total"},
            {
                "usage_pct": round(busy, 2),
                "user_pct": round(busy * 0.7, 2),
                "system_pct": round(busy * 0.3, 2),
                "idle_pct": round(100 - busy, 2),
                "iowait_pct": round(rng.uniform(0, 2), 2),
                "steal_pct": 0.0,
            },
            t_ns,
        )
    )
    total = 8 * 2**30
    used = rng.randrange(2 * 2**30, 6 * 2**30)
    out.append(
        Sample(
            "host_memory",
            tgt,
            {
                "total_bytes": total,
                "used_bytes": used,
                "available_bytes": total - used,
                "free_bytes": (total - used) // 2,
                "used_pct": round(100 * used / total, 2),
            },
            t_ns + 1_000_000,
        )
    )
    out.append(
        Sample(
            "host_disk",
            {**tgt, "mount": "/", "fstype": "ext4", "device": "/dev/sda1"},
            {
                "total_bytes": 120 * 2**30,
                "used_bytes": 40 * 2**30 + poll * 4096,
                "free_bytes": 80 * 2**30 - poll * 4096,
                "used_pct": 33.3,
                "inodes_total": 7_864_320,
                "inodes_used": 312_000 + poll,
                "inodes_used_pct": 3.97,
            },
            t_ns + 2_000_000,
        )
    )
    for j, ifname in enumerate(("eth0", "eth1")):
        out.append(
            Sample(
                "host_net",
                {**tgt, "interface": ifname},
                {
                    "bytes_sent": 10**9 + poll * 123_456,
                    "bytes_recv": 3 * 10**9 + poll * 654_321,
                    "packets_sent": 10**6 + poll * 900,
                    "packets_recv": 2 * 10**6 + poll * 1500,
                    "errors_in": 0,
                    "errors_out": 0,
                    "drops_in": poll // 7,
                    "drops_out": 0,
                    "link_up": True,
                    "recv_bps": round(rng.uniform(1e5, 5e7), 1),
                    "sent_bps": round(rng.uniform(1e5, 2e7), 1),
                },
                t_ns + (3 + j) * 1_000_000,
            )
        )
    out.append(
        Sample(
            "host_system",
            tgt,
            {
                "load1": round(rng.uniform(0, 2), 2),
                "load5": 0.8,
                "load15": 0.7,
                "uptime_s": 86400.0 + poll * 10,
                "cpu_count": 4,
                "process_count": 180 + rng.randrange(20),
            },
            t_ns + 5_000_000,
        )
    )
    for k in range(4):
        host = f"10.{agent // 250}.{agent % 250}.{k + 1}"
        rtt = rng.uniform(0.4, 40)
        out.append(
            Sample(
                "icmp",
                {"target": f"uplink-{k}", "host": host},
                {
                    "sent": 5,
                    "received": 5,
                    "loss_pct": 0.0,
                    "rtt_min_ms": round(rtt * 0.8, 3),
                    "rtt_avg_ms": round(rtt, 3),
                    "rtt_max_ms": round(rtt * 1.3, 3),
                    "jitter_ms": round(rtt * 0.1, 3),
                },
                t_ns + (6 + k) * 1_000_000,
            )
        )
    device = f"sw-{agent:03d}"
    for port in range(ports):
        base = (agent * 1000 + port) * 10**7
        out.append(
            Sample(
                "interface",
                {"device": device, "ifname": f"GigabitEthernet0/{port + 1}"},
                {
                    "in_octets": base + poll * 900_000 + rng.randrange(100_000),
                    "out_octets": base + poll * 400_000 + rng.randrange(100_000),
                    "in_bps": round(rng.uniform(0, 1e8), 1),
                    "out_bps": round(rng.uniform(0, 1e8), 1),
                    "in_errors": 0,
                    "out_errors": 0,
                    "oper_up": port % 5 != 4,
                },
                t_ns + (10 + port) * 1_000_000,
            )
        )
    for k, (probe, target) in enumerate(
        [("host", "localhost"), ("snmp", device)] + [("icmp", f"uplink-{i}") for i in range(4)]
    ):
        down = probe == "snmp" and poll % 13 == 12
        out.append(
            Sample(
                "probe_status",
                {"probe": probe, "target": target},
                {
                    "status": "down" if down else "ok",
                    "status_code": 2 if down else 0,
                    "error": f"snmp {device}: no response in 2 s after 2 retries — check community/ACL" if down else "",
                    "duration_ms": round(rng.uniform(1, 300), 3),
                },
                t_ns + (500 + k) * 1_000_000,
            )
        )
    return out


def make_dataset(agents: int, batches: int, batch_size: int, ports: int, seed: int) -> Dataset:
    """``batches`` envelopes of ``batch_size`` samples, round-robin over ``agents``; every sample
    has its own (series, millisecond) so no store may merge two of them."""
    rng = random.Random(seed)
    t0 = (time.time_ns() - 3600 * 1_000_000_000) // 1_000_000_000 * 1_000_000_000
    streams: list[Iterator[Sample]] = []

    def stream(agent: int) -> Iterator[Sample]:
        offset = agent * 7_919_000  # agents do not poll in lockstep
        for poll in range(1_000_000):
            yield from _agent_poll(rng, agent, poll, t0 + offset + poll * POLL_INTERVAL_NS, ports)

    streams = [stream(a) for a in range(agents)]
    seqs = [0] * agents
    messages: list[tuple[str, bytes]] = []
    samples = vm_points = payload_bytes = body_bytes = 0
    for b in range(batches):
        a = b % agents
        batch = [next(streams[a]) for _ in range(batch_size)]
        seqs[a] += 1
        agent_id = f"twn-{a:03d}"
        payload = wire.encode(agent_id, f"county-{a % 12:02d}", seqs[a], batch)
        messages.append((f"{TOPIC_ROOT}/agents/{agent_id}/metrics", payload))
        samples += len(batch)
        vm_points += sum(1 for s in batch for v in s.fields.values() if not isinstance(v, str))
        payload_bytes += len(payload)
        body_bytes += len(zlib.decompress(payload[wire.HEADER_LEN :]))
    return Dataset(messages, samples, vm_points, payload_bytes, body_bytes)


# ------------------------------------------------------------------------------------- broker


def _connected_client(
    port: int, client_id: str, *, clean_session: bool, inflight: int = 20, timeout_s: float = 10.0
) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    up = threading.Event()
    c.on_connect = lambda *a: up.set()
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    if not up.wait(timeout_s):
        c.loop_stop()
        raise RuntimeError(f"no CONNACK from 127.0.0.1:{port} in {timeout_s} s")
    return c


def preload(broker: Mosquitto, client_id: str, data: Dataset, timeout_s: float = 60.0) -> None:
    """Create ``client_id``'s persistent QoS 1 session, go offline, publish everything at QoS 1:
    Mosquitto queues all of it for that session."""
    sub = _connected_client(broker.port, client_id, clean_session=False)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(SUBSCRIPTIONS)
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK for the pre-load session")
    sub.disconnect()
    sub.loop_stop()

    pub = _connected_client(broker.port, "bench-ingest-publisher", clean_session=True, inflight=100)
    infos = [pub.publish(topic, payload, qos=1) for topic, payload in data.messages]
    deadline = time.monotonic() + timeout_s
    for info in infos:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        if not info.is_published():
            raise RuntimeError(f"pre-load: broker did not acknowledge every publish in {timeout_s} s")
    pub.disconnect()
    pub.loop_stop()


# -------------------------------------------------------------------------------- the subjects


class Subject:
    """One subscriber under test: ``start()`` connects and begins storing, ``stored()`` counts
    samples durably stored (the collector's ``stored_samples`` counter moves after the store and
    state commits, right before it queues the PUBACKs; the peer's after it queued them),
    ``stop()`` disconnects and closes its store."""

    client_id = "bench-subscriber"
    writes = 0  # store calls, to show both sides write with the same granularity

    def start(self) -> None:
        raise NotImplementedError

    def stored(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def problems(self) -> list[str]:
        return []

    def writer_target(self) -> tuple[Any, str]:
        """(object, attribute) of the function the writer thread runs, for --profile."""
        raise NotImplementedError


class NetwatchSubject(Subject):
    """The real collector, in process, built from a config file like ``netwatch-collector run``."""

    client_id = "bench-collector"

    def __init__(self, workdir: Path, mqtt_port: int, *, sqlite: bool, vm_url: str | None) -> None:
        stores = "  sqlite: {retention: 30d}\n" if sqlite else ""
        if vm_url:
            stores += f"  influxdb: {{url: '{vm_url}', bucket: netwatch, drop_string_fields: true}}\n"
        path = workdir / "collector.yaml"
        path.write_text(
            f"collector: {{id: bench, data_dir: '{workdir / 'collector'}'}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, client_id: {self.client_id}}}\n"
            f"storage:\n{stores}"
            "api: {enabled: false}\n"
        )
        self.cfg = collector_config.load(path)
        self.collector = Collector(self.cfg)
        # the sinks: behind the store stage since the core refactor, on the collector before it
        store = getattr(self.collector, "store", None)
        for sink in store.sinks if store is not None else self.collector.sinks:
            _count_calls(self, sink)

    def start(self) -> None:
        self.collector.start()

    def stored(self) -> int:
        return int(self.collector.counters.snapshot().get("stored_samples", 0))

    def stop(self) -> None:
        self.collector.stop()

    def problems(self) -> list[str]:
        snap = self.collector.counters.snapshot()
        out = [f"{k}={v}" for k, v in snap.items() if k.startswith("store_") and v]
        # Samples parked in a local store spool count as stored for the collector, not for us.
        spools = getattr(self.collector, "store_spools", dict)()
        out += [f"{k}={v}" for k, v in spools.items() if k.startswith("store_spool_samples") and v]
        if snap["rejected_total"] or snap["dropped_samples"] or snap.get("duplicates"):
            out.append(
                f"rejected={snap['rejected']} dropped={snap['dropped_samples']} duplicates={snap.get('duplicates', 0)}"
            )
        return out

    def writer_target(self) -> tuple[Any, str]:
        return self.collector, "_writer_loop"


def _count_calls(subject: Subject, sink: Any) -> None:
    # Only the bench's batches count; the collector's self-metrics write is one call of one sample.
    write = sink.write

    def counted(samples: Any) -> None:
        if len(samples) > 1:
            subject.writes += 1
        write(samples)

    sink.write = counted


class PeerSubject(Subject):
    """The raw peer: what a developer writes with paho and a store client and nothing else.

    paho's network thread puts each message on a queue; one writer thread takes up to
    MAX_MESSAGES_PER_WRITE waiting messages (as the collector does), and for each one strips
    the 4-byte header, ``zlib.decompress``es, ``orjson.loads`` the body and adds the envelope's
    agent and site as tags (the collector does too); then it hands all their samples to the
    store in one call and acks every message after the store returned. No validation, no
    deduplication, no bookkeeping.
    """

    client_id = "bench-peer"

    def __init__(self, mqtt_port: int, store: PeerStore) -> None:
        self.store = store
        self._stored = 0
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue(maxsize=20_000)
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._port = mqtt_port
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False, manual_ack=True)
        c.on_connect = lambda client, *a: client.subscribe(SUBSCRIPTIONS)
        c.on_message = lambda client, userdata, msg: self._queue.put(msg)
        self.client = c
        self._writer = threading.Thread(target=self._writer_loop, name="peer-writer", daemon=True)

    def start(self) -> None:
        self._writer.start()
        self.client.connect_async("127.0.0.1", self._port, keepalive=30)
        self.client.loop_start()

    def _writer_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    msgs = [self._queue.get(timeout=0.2)]
                except queue.Empty:
                    continue
                while len(msgs) < MAX_MESSAGES_PER_WRITE:
                    try:
                        msgs.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                rows: list[tuple[str, dict[str, str], dict[str, Any], int]] = []
                for msg in msgs:
                    doc = orjson.loads(zlib.decompress(msg.payload[4:]))
                    extra = {"agent": doc["agent"], "site": doc["site"]}
                    rows += [(m, {**tags, **extra}, fields, ts) for m, tags, fields, ts in doc["samples"]]
                self.store.write(rows)
                self.writes += 1
                for msg in msgs:
                    self.client.ack(msg.mid, msg.qos)
                self._stored += len(rows)
        except BaseException as e:  # surfaced by problems(); the run then times out as void
            self._error = e
            raise

    def stored(self) -> int:
        return self._stored

    def stop(self) -> None:
        self._stopping.set()
        self._writer.join(10)
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()

    def problems(self) -> list[str]:
        return [f"writer failed: {self._error!r}"] if self._error is not None else []

    def writer_target(self) -> tuple[Any, str]:
        return self, "_writer_loop"


Row = tuple[str, dict[str, str], dict[str, Any], int]


class PeerStore:
    name = "?"

    def write(self, rows: list[Row]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PeerSqlite(PeerStore):
    """One flat table, tags and fields as JSON text; WAL + synchronous=NORMAL like the collector's
    store; one ``executemany`` per batch in one transaction."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE points (measurement TEXT, tags TEXT, fields TEXT, time_ns INTEGER)")

    def write(self, rows: list[Row]) -> None:
        dumps = orjson.dumps
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO points VALUES (?, ?, ?, ?)", [(m, dumps(t), dumps(f), ts) for m, t, f, ts in rows]
        )
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class PeerInflux(PeerStore):
    """influxdb-client's ``write_api(write_options=SYNCHRONOUS)``, ns precision, requests of
    LINES_PER_REQUEST points. String fields are left out, as the collector's
    ``drop_string_fields`` does, so both sides store the same points.

    ``form="lineproto"``: each point is one f-string ``m,k=v,... f=1i,g=0.5 ts`` — no escaping
    (this data needs none), which a real peer would need for arbitrary tags; it favours the peer.
    ``form="dict"``: the documented dict records ``{"measurement", "tags", "fields", "time"}``,
    which influxdb-client turns into line protocol itself.
    """

    name = "influxdb"

    def __init__(self, url: str, form: str) -> None:
        self.form = form
        self.client = InfluxDBClient(url=url, token=None, org="", timeout=10_000)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, rows: list[Row]) -> None:
        records: list[Any]
        if self.form == "dict":
            records = [
                {
                    "measurement": m,
                    "tags": t,
                    "fields": {k: v for k, v in f.items() if not isinstance(v, str)},
                    "time": ts,
                }
                for m, t, f, ts in rows
            ]
        else:
            records = [_line(m, t, f, ts) for m, t, f, ts in rows]
        for i in range(0, len(records), LINES_PER_REQUEST):
            self.write_api.write(
                bucket="netwatch", org="", record=records[i : i + LINES_PER_REQUEST], write_precision=WritePrecision.NS
            )

    def close(self) -> None:
        self.write_api.close()
        self.client.close()


def _value(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return None


def _line(m: str, tags: dict[str, str], fields: dict[str, Any], ts: int) -> str:
    tag_text = ",".join(f"{k}={v}" for k, v in tags.items() if v)
    field_text = ",".join(f"{k}={t}" for k, v in fields.items() if (t := _value(v)) is not None)
    return f"{m},{tag_text} {field_text} {ts}"


# ----------------------------------------------------------------------------- measuring a case


@dataclass(slots=True)
class Result:
    case: str
    subject: str  # netwatch | peer
    store: str  # sqlite | vm
    samples: int
    wall_s: float
    cpu_s: float
    writes: int
    broker_cpu_s: float
    store_cpu_s: float | None  # VictoriaMetrics' own CPU; None for SQLite (in process)
    #: CPU every other process on the machine used meanwhile: noise when it is not near 0
    other_cpu_s: float
    stored_count: int
    expected_count: int
    problems: list[str] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s

    @property
    def cpu_us_per_sample(self) -> float:
        return self.cpu_s / self.samples * 1e6

    @property
    def valid(self) -> bool:
        return self.stored_count == self.expected_count and not self.problems

    @property
    def noisy(self) -> bool:
        """Other processes took more than a tenth of a core while this run was timed."""
        return self.other_cpu_s > NOISY_SHARE * self.wall_s

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            samples_per_s=round(self.samples_per_s, 1),
            cpu_us_per_sample=round(self.cpu_us_per_sample, 2),
            valid=self.valid,
        )
        return d


def proc_cpu_s(pid: int | None) -> float:
    """user + system CPU seconds of another process, from /proc (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all processes have been busy since boot, from the first line of /proc/stat."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(max_s: float) -> None:
    """Wait (at most ``max_s``) for a second in which the whole machine is nearly idle: other
    sessions' test suites on a shared 2-core box would otherwise be measured too."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        before = machine_busy_s()
        time.sleep(1.0)
        if machine_busy_s() - before < 0.05:
            return


def vm_count(vm: VictoriaMetrics, expected: int, timeout_s: float) -> int:
    """Points stored in VictoriaMetrics, not counting the collector's own series. Polls until
    ``expected`` show up (new series become searchable about 1 s after the write) or time's up."""
    deadline = time.monotonic() + timeout_s
    vm.flush()
    while True:
        have = sum(
            len(s["values"])
            for s in vm.export('{__name__=~".+"}')
            if not s["metric"]["__name__"].startswith(tuple(m + "_" for m in OWN_MEASUREMENTS))
        )
        if have >= expected or time.monotonic() > deadline:
            return have
        time.sleep(0.25)


def sqlite_count(path: Path, netwatch: bool) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if netwatch:
            sql = (
                "SELECT count(*) FROM points p JOIN series s ON s.id = p.series_id"
                f" WHERE s.measurement NOT IN ({', '.join(repr(m) for m in OWN_MEASUREMENTS)})"
            )
        else:
            sql = "SELECT count(*) FROM points"
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


@contextlib.contextmanager
def profiled(target: tuple[Any, str], out: list[pstats.Stats]) -> Iterator[None]:
    """Run the subject's writer thread under cProfile (cProfile sees one thread only)."""
    obj, attr = target
    inner = getattr(obj, attr)

    def run() -> None:
        prof = cProfile.Profile()
        try:
            prof.runcall(inner)
        finally:
            out.append(pstats.Stats(prof))

    setattr(obj, attr, run)
    if isinstance(obj, PeerSubject):  # its thread was built with the bound method already
        obj._writer = threading.Thread(target=run, name="peer-writer", daemon=True)
    yield


def run_case(
    case: str, data: Dataset, args: argparse.Namespace, workroot: Path, profile_out: list[pstats.Stats] | None = None
) -> Result:
    subject_kind, store, *rest = case.split("-")
    form = rest[0] if rest else "lineproto"
    workdir = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=workroot))
    broker = start_mosquitto(workdir / "mosquitto", extra_config=f"max_inflight_messages {args.max_inflight}")
    vm = start_victoria_metrics(workdir / "vm") if store == "vm" else None
    subject: Subject | None = None
    try:
        if subject_kind == "netwatch":
            subject = NetwatchSubject(workdir, broker.port, sqlite=store == "sqlite", vm_url=vm.url if vm else None)
            sqlite_path = subject.cfg.sqlite_path
        else:
            sqlite_path = workdir / "peer.db"
            peer_store: PeerStore = PeerInflux(vm.url, form) if vm else PeerSqlite(sqlite_path)
            subject = PeerSubject(broker.port, peer_store)
        preload(broker, subject.client_id, data)
        if profile_out is not None:
            ctx: contextlib.AbstractContextManager[None] = profiled(subject.writer_target(), profile_out)
        else:
            ctx = contextlib.nullcontext()
        with ctx:
            wait_quiet(args.quiet_wait)
            gc.collect()
            broker_cpu0, store_cpu0 = proc_cpu_s(broker.pid), proc_cpu_s(vm.pid if vm else None)
            busy0 = machine_busy_s()
            cpu0, t0 = time.process_time(), time.perf_counter()
            subject.start()
            deadline = t0 + args.timeout
            polls = 0
            while subject.stored() < data.samples and time.perf_counter() < deadline:
                polls += 1
                if polls % 250 == 0 and subject.problems():  # not every poll: it may query a spool
                    break
                # 2 ms resolution while it matters; slower polls on long runs keep the poller's
                # own CPU (counted in the process's) out of the per-sample figure.
                time.sleep(POLL_S if polls < 2500 else 5 * POLL_S)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            broker_cpu = proc_cpu_s(broker.pid) - broker_cpu0
            store_cpu = proc_cpu_s(vm.pid) - store_cpu0 if vm else None
            other_cpu = max(0.0, machine_busy_s() - busy0 - cpu - broker_cpu - (store_cpu or 0.0))
            problems = subject.problems()
            if subject.stored() < data.samples:
                problems.append(f"only {subject.stored()} of {data.samples} samples stored in {args.timeout} s")
            subject.stop()
        writes = subject.writes
        subject = None
        if vm is not None:
            expected = data.vm_points
            stored = vm_count(vm, expected, timeout_s=30)
        else:
            assert sqlite_path is not None
            expected = data.samples
            stored = sqlite_count(sqlite_path, netwatch=subject_kind == "netwatch")
        return Result(
            case,
            subject_kind,
            store,
            data.samples,
            wall,
            cpu,
            writes,
            broker_cpu,
            store_cpu,
            other_cpu,
            stored,
            expected,
            problems,
        )
    finally:
        if subject is not None:
            with contextlib.suppress(Exception):
                subject.stop()
        if vm is not None:
            vm.close()
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------------- reporting

CASE_LABELS = {
    "netwatch-sqlite": "netwatch collector → SQLite",
    "peer-sqlite": "peer: paho + sqlite3 → SQLite",
    "netwatch-vm": "netwatch collector → VictoriaMetrics",
    "peer-vm-lineproto": "peer: paho + influxdb-client, f-string lines → VM",
    "peer-vm-dict": "peer: paho + influxdb-client, dict records → VM",
}
#: (label, netwatch case, peer case): the first two are the headline ratios
RATIOS = [
    ("SQLite", "netwatch-sqlite", "peer-sqlite"),
    ("VictoriaMetrics", "netwatch-vm", "peer-vm-lineproto"),
    ("VictoriaMetrics vs dict-record peer", "netwatch-vm", "peer-vm-dict"),
]


@dataclass(slots=True)
class CaseRuns:
    """Every repeat of one case; the reported run is the one with the median wall time."""

    runs: list[Result]

    @property
    def median(self) -> Result:
        ordered = sorted(self.runs, key=lambda r: r.wall_s)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.runs)

    def spread(self) -> str:
        rates = sorted(r.samples_per_s for r in self.runs)
        return f"{rates[0]:,.0f}–{rates[-1]:,.0f}" if len(rates) > 1 else "–"


def _noisy(runs: list[Result]) -> bool:
    return sum(r.other_cpu_s for r in runs) > NOISY_SHARE * sum(r.wall_s for r in runs)


def ratios(results: dict[str, CaseRuns]) -> list[dict[str, Any]]:
    out = []
    for label, ours, peer in RATIOS:
        if ours in results and peer in results:
            a, b = results[ours].median, results[peer].median
            out.append(
                {
                    "store": label,
                    "netwatch": ours,
                    "peer": peer,
                    "throughput_ratio": round(a.samples_per_s / b.samples_per_s, 3),
                    "cpu_per_sample_ratio": round(a.cpu_us_per_sample / b.cpu_us_per_sample, 3),
                }
            )
    return out


def table(results: dict[str, CaseRuns]) -> str:
    lines = [
        "| case | samples/s | range over repeats | CPU-µs/sample | wall s | CPU s | writes | broker CPU s "
        "| VM CPU s | other procs CPU s | stored/expected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for runs in results.values():
        r = runs.median
        vm_cpu = f"{r.store_cpu_s:.2f}" if r.store_cpu_s is not None else "–"
        ok = f"{r.stored_count:,}/{r.expected_count:,}" + ("" if runs.valid else " **VOID**")
        lines.append(
            f"| {CASE_LABELS[r.case]} | {r.samples_per_s:,.0f} | {runs.spread()} "
            f"| {r.cpu_us_per_sample:.1f} | {r.wall_s:.2f} | {r.cpu_s:.2f} | {r.writes} "
            f"| {r.broker_cpu_s:.2f} | {vm_cpu} | {r.other_cpu_s:.2f} | {ok} |"
        )
    every = [r for runs in results.values() for r in runs.runs]
    lines += [
        "",
        f"Other processes on the machine used {sum(r.other_cpu_s for r in every):.1f} CPU-s during the "
        f"{sum(r.wall_s for r in every):.1f} s of timed windows (all reported runs)."
        + (" **The machine was busy: these numbers are skewed; rerun on a quiet machine.**" if _noisy(every) else ""),
        "",
    ]
    for q in ratios(results):
        lines.append(
            f"- netwatch/peer, {q['store']}: throughput **{q['throughput_ratio']:.2f}×**, "
            f"CPU per sample {q['cpu_per_sample_ratio']:.2f}× (CPU below 1 = netwatch cheaper)"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Another busy process on a 2-core box skews every number: say how quiet it was.
        "loadavg_1min_at_start": _LOAD_AT_START,
    }


_LOAD_AT_START = round(os.getloadavg()[0], 2)


def describe(args: argparse.Namespace, data: Dataset) -> str:
    return (
        f"{data.samples:,} samples in {len(data.messages)} envelopes of {args.batch_size} from {args.agents} "
        f"agents ({data.payload_bytes / 2**20:.1f} MiB compressed, {data.body_bytes / 2**20:.1f} MiB JSON; "
        f"{data.vm_points:,} numeric points for VictoriaMetrics); Mosquitto max_inflight_messages "
        f"{args.max_inflight}; median of {args.repeat} interleaved runs per case after {args.warmup} warm-up round(s)"
    )


def record(path: Path, command: str, args: argparse.Namespace, data: Dataset, results: dict[str, CaseRuns]) -> None:
    m = machine()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = [
        "",
        "## ingest",
        "",
        f"{when} — {m['nproc']} CPUs, Python {m['python']}, {m['platform']}, "
        f"1-min load average {m['loadavg_1min_at_start']} before the run",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {describe(args, data)}.",
        "",
        table(results),
        "",
    ]
    if not path.exists():
        path.write_text(
            "# Benchmark results\n\nAppended by the `bench/*/run.py` scripts, newest last; each entry "
            "names the command that produced it. See `bench/README.md`.\n"
        )
    with path.open("a") as f:
        f.write("\n".join(text))


# --------------------------------------------------------------------------------------- main

ALL_CASES = list(CASE_LABELS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=200, help="agents the envelopes come from (default 200)")
    p.add_argument("--batches", type=int, default=300, help="envelopes to publish (default 300)")
    p.add_argument("--batch-size", type=int, default=500, help="samples per envelope (default 500)")
    p.add_argument("--ports", type=int, default=24, help="switch ports per agent, one sample each per poll")
    p.add_argument("--repeat", type=int, default=3, help="runs per case, interleaved; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="unreported rounds over every case first (default 1)")
    p.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma-separated, of {', '.join(ALL_CASES)}")
    p.add_argument(
        "--max-inflight",
        type=int,
        default=20,
        help="Mosquitto max_inflight_messages: unacked QoS 1 messages in flight per client "
        "(default 20, Mosquitto's own default)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds one run may take before it is void")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each timed run, wait up to S seconds for the machine to be idle (default 0)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="run a case again, up to this many times, when other processes were busy during it",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="RESULTS_MD",
        help="append the results to this file (bench/RESULTS.md) under '## ingest'",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="run each case once with cProfile on its writer thread and print the top functions "
        "(slower: its numbers are not comparable, so --record is refused)",
    )
    a = p.parse_args(argv)
    unknown = set(a.cases.split(",")) - set(ALL_CASES)
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_CASES)}")
    if not 1 <= a.batches <= 90_000:
        p.error("--batches must be 1..90000 (the test broker queues at most 100000 messages per session)")
    if (
        a.batch_size < 1
        or a.agents < 1
        or a.ports < 0
        or not 1 <= a.repeat <= 20
        or not 0 <= a.warmup <= 5
        or not 0 <= a.retries <= 5
        or not 0 <= a.quiet_wait <= 600
        or a.max_inflight < 0
    ):
        p.error(
            "--batch-size, --agents, --repeat (≤ 20) must be positive; --ports, --max-inflight, --warmup (≤ 5), "
            "--retries (≤ 5), --quiet-wait (≤ 600) not negative"
        )
    if a.profile and a.record:
        p.error("--profile slows the writer thread down: its numbers must not be recorded")
    if a.profile:
        a.repeat, a.warmup = 1, 0
    return a


def _rel(path: str) -> str:
    """``path`` relative to the repository when it is inside it, for a command others can paste."""
    p = Path(path).absolute()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


class _DropPlannedDisconnect(logging.Filter):
    # The bench disconnects the collector on purpose after each run; that warning is noise here.
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("lost the broker")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # A plain SIGTERM would skip the finally blocks and atexit: the services would outlive us.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("netwatch.collector").addFilter(_DropPlannedDisconnect())
    command = shlex.join([_rel(sys.executable), _rel(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)])
    t = time.perf_counter()
    data = make_dataset(args.agents, args.batches, args.batch_size, args.ports, args.seed)
    if max(len(p) for _, p in data.messages) > wire.Limits().max_payload_bytes:
        print("an envelope exceeds the collector's 1 MiB payload limit: lower --batch-size", file=sys.stderr)
        return 2
    say = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"data: {describe(args, data)} ({time.perf_counter() - t:.1f} s to make)")
    cases = args.cases.split(",")
    results: dict[str, CaseRuns] = {c: CaseRuns([]) for c in cases}
    profiles: dict[str, pstats.Stats] = {}
    with tempfile.TemporaryDirectory(prefix="netwatch-bench-ingest-") as tmp:
        # Interleaved (round-robin over cases) so slow drift on the machine hits every case alike,
        # starting one case later each round so no case is always first. Warm-up rounds are run
        # and verified but not reported: the first runs in a process pay for growing its heap.
        rounds = args.warmup + args.repeat
        for rnd in range(rounds):
            warm = rnd < args.warmup
            for i in range(len(cases)):
                case = cases[(rnd + i) % len(cases)]
                prof: list[pstats.Stats] | None = [] if args.profile else None
                r = run_case(case, data, args, Path(tmp), prof)
                for _ in range(args.retries):
                    if not r.noisy or not r.valid:
                        break
                    say(
                        f"    {case}: other processes took {r.other_cpu_s:.2f} CPU-s in {r.wall_s:.2f} s, running again"
                    )
                    r = run_case(case, data, args, Path(tmp), prof)
                if not warm or not r.valid:  # a void warm-up voids the result too
                    results[case].runs.append(r)
                if prof:
                    profiles[case] = prof[0]
                status = (
                    "ok"
                    if r.valid
                    else "VOID: " + "; ".join(r.problems or [f"stored {r.stored_count} of {r.expected_count}"])
                )
                label = "warm-up" if warm else f"{rnd - args.warmup + 1}/{args.repeat}"
                say(
                    f"[{label}] {case}: {r.samples_per_s:,.0f} samples/s, "
                    f"{r.cpu_us_per_sample:.1f} CPU-µs/sample, {r.writes} writes — {status}"
                )
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "command": command,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "data": {
                        "samples": data.samples,
                        "envelopes": len(data.messages),
                        "vm_points": data.vm_points,
                        "payload_bytes": data.payload_bytes,
                        "body_bytes": data.body_bytes,
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
    for case, stats in profiles.items():
        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(25)
        print(f"\n=== cProfile of {case}'s writer thread (by own time) ===\n{buf.getvalue()}", file=sys.stderr)
    if args.record is not None:
        record(args.record, command, args, data, results)
    return 0 if all(runs.valid for runs in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
