"""The running collector: subscribe (persistent session, QoS 1), validate, deduplicate, store,
and only then acknowledge each message to the broker."""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from collector.broker import EmbeddedBroker
from collector.config import CollectorConfig
from collector.ingest import Accepted, Counters, Ingest, StatusUpdate
from collector.state import StateDB
from collector.storage.base import Sink, StoreRejected, StoreUnavailable
from collector.storage.buffered import BufferedSink
from probes.model import Sample

log = logging.getLogger("netwatch.collector")

MAX_MESSAGES_PER_WRITE = 500
#: how long the writer may gather messages into one transaction with the first...
GATHER_S = 0.1
#: ...but it stops as soon as none has come for this long: a broker with one message in
#: flight sends the next only after our ack, so waiting longer would only stall it.
GATHER_IDLE_S = 0.005
COUNTERS_EVERY_S = 5.0
SELF_METRICS_EVERY_S = 30.0
PRUNE_EVERY_S = 3600.0


class AlertHook(Protocol):
    """What the writer thread tells alerting (collector/alerting/engine.py implements it)."""

    def observe(self, samples: list[Sample]) -> None:
        """Samples just stored (every one, in arrival order)."""

    def agent_status(self, agent: str, site: str, state: str) -> None:
        """An agent's retained status: online, or offline (its Last Will or a clean stop)."""

    def tick(self, now_ns: int) -> None:
        """About once a second: evaluate time-based conditions (for, absent, repeat)."""

    def close(self) -> None: ...


def build_sinks(cfg: CollectorConfig) -> list[Sink]:
    sinks: list[Sink] = []
    if cfg.sqlite_path is not None:
        from collector.storage.sqlite import SqliteSink

        assert cfg.sqlite is not None
        sinks.append(SqliteSink(cfg.sqlite_path, retention_s=cfg.sqlite.retention))
    if cfg.influxdb is not None:
        from collector.storage.influx import InfluxSink

        i = cfg.influxdb
        influx: Sink = InfluxSink(
            i.url,
            i.org,
            i.bucket,
            i.resolved_token(),
            batch_size=i.batch_size,
            timeout_s=i.timeout,
            verify_tls=i.verify_tls,
            ca_file=str(i.ca_file) if i.ca_file else None,
            drop_string_fields=i.drop_string_fields,
        )
        if i.spool_max_bytes > 0:
            from collector.storage.buffered import BufferedSink

            influx = BufferedSink(influx, cfg.data_dir / "spool-influxdb.db", max_bytes=i.spool_max_bytes)
        sinks.append(influx)
    return sinks


class Collector:
    def __init__(self, cfg: CollectorConfig) -> None:
        self.cfg = cfg
        self.counters = Counters()
        self.ingest = Ingest(
            cfg.mqtt.topic_root,
            cfg.limits.wire(),
            dedup_window=cfg.limits.dedup_window,
            max_series_per_agent=cfg.limits.max_series_per_agent,
            counters=self.counters,
        )
        self.sinks = build_sinks(cfg)
        self.state = StateDB(cfg.state_path)
        # Alerting sees every stored sample and status change; it sends from its own threads.
        self.alerts: AlertHook | None = None
        if cfg.alerting is not None:
            from collector.alerting.engine import AlertEngine

            self.alerts = AlertEngine(cfg.alerting, data_dir=cfg.data_dir)
        # What was stored before a restart (or a SIGKILL) is not stored again when the broker redelivers it.
        for agent, seqs in self.state.load_seen(cfg.limits.dedup_window).items():
            self.ingest.load_seen(agent, seqs)
        self.broker = EmbeddedBroker(cfg.mqtt.host, cfg.mqtt.port) if cfg.embedded else None
        self.connected = threading.Event()
        self._queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue(maxsize=20_000)
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self._api: Any = None
        self._store_failing: set[str] = set()
        self.client = self._make_client()

    # -- MQTT -----------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        m = self.cfg.mqtt
        client_id = m.client_id or f"netwatch-collector-{self.cfg.collector.id}"
        # Persistent session + manual ack: the broker keeps what we have not stored yet.
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)
        c.reconnect_delay_set(1, 30)
        if m.username:
            c.username_pw_set(m.username, m.resolved_password())
        if m.tls is not None:
            c.tls_set(
                ca_certs=str(m.tls.ca_file) if m.tls.ca_file else None,
                certfile=str(m.tls.cert_file) if m.tls.cert_file else None,
                keyfile=str(m.tls.key_file) if m.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            c.tls_insecure_set(m.tls.insecure_hostname)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the collector: %s", reason)
            return
        root = self.cfg.mqtt.topic_root.rstrip("/")
        # Subscribe every time: a broker that lost our session (or amqtt, which keeps none) still feeds us.
        client.subscribe(
            [(f"{root}/agents/+/metrics", 1), (f"{root}/agents/+/events", 1), (f"{root}/agents/+/status", 1)]
        )
        self.connected.set()
        log.info("subscribed at %s:%d under %s/agents/+/…", self.cfg.mqtt.host, self.cfg.mqtt.port, root)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set():
            log.warning("lost the broker (%s); reconnecting — unacknowledged messages wait at the broker", reason)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(msg)  # blocks when the writer is behind: back-pressure to the broker

    # -- storing ----------------------------------------------------------------------------
    def _write_all(self, samples: list[Sample]) -> bool:
        """Write to every sink, retrying while a store is unavailable. False only when stopping."""
        for sink in self.sinks:
            delay = 0.5
            while True:
                try:
                    sink.write(samples)
                    if sink.name in self._store_failing:
                        self._store_failing.discard(sink.name)
                        log.info("store %s is back", sink.name)
                    break
                except StoreUnavailable as e:
                    self.counters.inc(f"store_retries_{sink.name}")
                    if sink.name not in self._store_failing:
                        self._store_failing.add(sink.name)
                        log.error(
                            "store %s unavailable: %s — holding messages unacknowledged and retrying", sink.name, e
                        )
                    if self._stopping.wait(delay):
                        return False
                    delay = min(delay * 2, 10.0)
                except StoreRejected as e:
                    self.counters.inc(f"store_rejected_{sink.name}", len(samples))
                    log.error("store %s refused %d samples: %s", sink.name, len(samples), e)
                    break
        return True

    def _process(self, msgs: list[mqtt.MQTTMessage]) -> bool:
        accepted: list[Accepted] = []
        statuses: list[StatusUpdate] = []
        in_batch: set[tuple[str, int]] = set()
        for msg in msgs:
            r = self.ingest.handle(msg.topic, msg.payload)
            if isinstance(r, Accepted):
                key = (r.topic.agent, r.envelope.seq)
                if key in in_batch:
                    self.counters.inc("duplicates")
                    self.ingest.duplicates_by_agent[r.topic.agent] += 1
                    continue
                in_batch.add(key)
                accepted.append(r)
            elif isinstance(r, StatusUpdate):
                statuses.append(r)
        samples = [s for a in accepted for s in a.envelope.samples]
        if samples and not self._write_all(samples):
            return False
        self.state.begin()
        try:
            for a in accepted:
                e = a.envelope
                self.state.record_batch(e.agent, e.site, e.seq, len(e.samples))
                self.state.record_seen(e.agent, e.seq)
                self.ingest.mark(e.agent, e.seq)
                for s in e.samples:
                    if s.measurement == "netwatch_agent":
                        self.state.record_agent_health(e.agent, s.fields)
            for st in statuses:
                self.state.record_status(st.agent, st.doc)
            for agent, n in self.ingest.duplicates_by_agent.items():
                self.state.record_duplicates(agent, n)
            self.ingest.duplicates_by_agent.clear()
        finally:
            self.state.commit()
        self.counters.inc("stored_batches", len(accepted))
        self.counters.inc("stored_samples", len(samples))
        if self.alerts is not None:
            for st in statuses:
                self.alerts.agent_status(st.agent, str(st.doc.get("site") or ""), str(st.doc["state"]))
            if samples:
                self.alerts.observe(samples)
        for msg in msgs:
            self.client.ack(msg.mid, msg.qos)
        return True

    def self_sample(self) -> Sample:
        snap = self.counters.snapshot()
        fields: dict[str, int | float | bool | str] = {k: v for k, v in snap.items() if isinstance(v, int)}
        fields["queue_depth"] = self._queue.qsize()
        fields["connected"] = self.connected.is_set()
        for name, value in self.store_spools().items():
            fields[name] = value
        return Sample("netwatch_collector", {"collector": self.cfg.collector.id}, fields, time.time_ns())

    def _writer_loop(self) -> None:
        last_counters = last_self = last_tick = 0.0
        last_prune = time.monotonic()
        stop_deadline: float | None = None
        while True:
            if self._stopping.is_set():
                # Store and acknowledge what has arrived, for a bounded time; the rest stays
                # unacknowledged at the broker and comes back on the next connection.
                stop_deadline = stop_deadline or time.monotonic() + 10.0
                if time.monotonic() > stop_deadline:
                    break
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                first = None
                if self._stopping.is_set():
                    break
            msgs = [first] if first is not None else []
            # Gather what arrives in the next moment into the same transaction: one message per
            # transaction rewrites hundreds of SQLite pages for a few hundred samples.
            gather_until = time.monotonic() + GATHER_S
            while first is not None and len(msgs) < MAX_MESSAGES_PER_WRITE:
                wait = min(GATHER_IDLE_S, gather_until - time.monotonic())
                try:
                    msgs.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            if msgs and not self._process(msgs):
                break  # stopping while a store is down: the broker keeps the unacknowledged rest
            now = time.monotonic()
            if self.alerts is not None and now - last_tick >= 1.0:
                last_tick = now
                self.alerts.tick(time.time_ns())
            if now - last_self >= SELF_METRICS_EVERY_S:
                last_self = now
                self._write_all([self.self_sample()])
            if now - last_counters >= COUNTERS_EVERY_S:
                last_counters = now
                self.state.save_counters(self.counters.snapshot())
            if now - last_prune >= PRUNE_EVERY_S:
                last_prune = now
                self._prune()
        self.state.save_counters(self.counters.snapshot())

    def store_spools(self) -> dict[str, int]:
        """Samples waiting in local spools for stores that were unreachable."""
        out: dict[str, int] = {}
        for sink in self.sinks:
            stats = getattr(sink, "stats", None)
            if isinstance(sink, BufferedSink) and stats is not None:
                st = sink.stats()
                out[f"store_spool_samples_{sink.name}"] = st.samples
                out[f"store_spool_drained_{sink.name}"] = sink.drained_samples
        return out

    def _prune(self) -> None:
        self.state.prune_seen(self.cfg.limits.dedup_window)
        for sink in self.sinks:
            prune = getattr(sink, "prune", None)
            if prune is not None:
                n = prune()
                if n:
                    log.info("retention: pruned %d old points from %s", n, sink.name)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self.broker is not None:
            self.broker.start()
        self._writer = threading.Thread(target=self._writer_loop, name="collector-writer", daemon=True)
        self._writer.start()
        m = self.cfg.mqtt
        self.client.connect_async(m.host, m.port, keepalive=int(m.keepalive))
        self.client.loop_start()
        if self.cfg.api.enabled:
            from collector.api import ApiServer

            self._api = ApiServer(self, self.cfg.api.host, self.cfg.api.port)
            self._api.start()
        stores = ", ".join(s.name for s in self.sinks)
        log.info(
            "collector %s: broker %s:%d%s, stores: %s, state %s",
            self.cfg.collector.id,
            m.host,
            m.port,
            " (embedded)" if self.cfg.embedded else "",
            stores,
            self.cfg.state_path,
        )

    @property
    def api_url(self) -> str | None:
        return self._api.url if self._api is not None else None

    def stop(self) -> None:
        # Let the writer store and acknowledge what it holds while the connection is still up,
        # then disconnect; anything left unacknowledged is redelivered by the broker later.
        self._stopping.set()
        if self._writer is not None:
            self._writer.join(40)
        self.client.disconnect()
        self.client.loop_stop()
        if self._api is not None:
            self._api.stop()
        for sink in self.sinks:
            sink.close()
        if self.alerts is not None:
            self.alerts.close()
        self.state.close()
        if self.broker is not None:
            self.broker.stop()
