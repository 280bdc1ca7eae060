"""The running collector: a pipeline of stages, each with one owner —

receive (MQTT session) → ingest (validate, de-duplicate) → store (fan-out to sinks) →
inventory (state.db) → alerting (its own thread) — and only then the acknowledgement to the
broker. A failure in one stage is counted in ``stats`` and never stops the others.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from collector import heap
from collector.alerting.stage import AlertHook, AlertStage
from collector.api import ApiServer, QueryUnsupported
from collector.audit import AuditLog
from collector.broker import EmbeddedBroker
from collector.config import CollectorConfig
from collector.diskspace import DiskGuard, is_disk_full
from collector.ingest import Classified, Ingest, Quota
from collector.inventory import Inventory
from collector.latest import LatestValues
from collector.receive import Receiver
from collector.registry import Registry
from collector.state import StateDB, read_agents, read_unknown_agents
from collector.stats import Counters
from collector.storage.base import Sink, StorageError
from collector.storage.buffered import BufferedSink
from collector.storage.fanout import Store
from probes.model import Sample

log = logging.getLogger("netwatch.collector")

MAX_MESSAGES_PER_WRITE = 500
#: how long the writer may gather messages into one transaction with the first...
GATHER_S = 0.1
#: ...but it stops as soon as none has come for this long: a broker with one message in
#: flight sends the next only after our ack, so waiting longer would only stall it.
GATHER_IDLE_S = 0.005
COUNTERS_EVERY_S = 5.0
PRUNE_EVERY_S = 3600.0
TRIM_EVERY_S = 60.0  # collector/heap.py: a few ms a minute
STOP_GRACE_S = 10.0
#: how often free space is looked at again while the data directory is below collector.min_free
DISK_RECHECK_S = 1.0
SELF_MEASUREMENT = "netwatch_collector"
#: refusals the default rules alert on, present in every self-sample (configs/rules/default.yaml)
ALERTED_REFUSALS = ("over_quota", "unknown_agent")


def build_sinks(cfg: CollectorConfig) -> list[Sink]:
    sinks: list[Sink] = []
    if cfg.sqlite_path is not None:
        from collector.storage.sqlite import SqliteSink

        assert cfg.sqlite is not None
        sinks.append(SqliteSink(cfg.sqlite_path, retention_s=cfg.sqlite.retention))
    if cfg.influxdb is not None:
        from collector.storage.influx import Influx1Sink, InfluxSink

        i = cfg.influxdb
        influx: Sink
        if i.version == 1:
            assert i.database is not None  # the config checked it
            influx = Influx1Sink(
                i.url,
                i.database,
                retention_policy=i.retention_policy or "",
                username=i.username or "",
                password=i.resolved_password(),
                batch_size=i.batch_size,
                timeout_s=i.timeout,
                verify_tls=i.verify_tls,
                ca_file=str(i.ca_file) if i.ca_file else None,
                drop_string_fields=i.drop_string_fields,
            )
        else:
            influx = InfluxSink(
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
            influx = BufferedSink(influx, cfg.data_dir / "spool-influxdb.db", max_bytes=i.spool_max_bytes)
        sinks.append(influx)
    return sinks


class Collector:
    def __init__(self, cfg: CollectorConfig, *, alert_engine: AlertHook | None = None) -> None:
        self.cfg = cfg
        self.counters = Counters()
        self._stopping = threading.Event()
        self.receiver = Receiver(
            cfg.mqtt,
            cfg.mqtt.client_id or f"netwatch-collector-{cfg.collector.id}",
            queue_bytes=cfg.limits.max_queue_bytes,
            counters=self.counters,
        )
        self.state = StateDB(cfg.state_path)
        # A broker that kept our session before keeps it across our restarts; the embedded one
        # starts afresh with us, so only a reconnect within one run may find it lost.
        self.receiver.expect_session = not cfg.embedded and self.state.had_session()
        self.registry = Registry.load(cfg.topology, self.state.admitted())
        lim = cfg.limits
        self.ingest = Ingest(
            cfg.mqtt.topic_root,
            lim.wire(),
            dedup_window=lim.dedup_window,
            max_series_per_agent=lim.max_series_per_agent,
            counters=self.counters,
            registry=self.registry,
            quota=Quota(float(lim.agent_bytes_per_s), lim.agent_messages_per_s, lim.quota_burst),
            known_series=self.state.load_series(),
        )
        disks = [cfg.data_dir] + ([cfg.sqlite_path.parent] if cfg.sqlite_path is not None else [])
        self.disk = DiskGuard(disks, cfg.collector.min_free)
        self._disk_low_logged = False
        self._state_failing = False
        self._last_self = 0.0
        self.store = Store(build_sinks(cfg), self.counters, self._stopping, on_retry=self._store_retry)
        topo = self.registry.topology
        self.latest_values = LatestValues(accept_site=(lambda s: s in topo.sites) if topo is not None else None)
        self.inventory = Inventory(self.state, lambda agent: (self.registry.identity(agent) or {}).get("county", ""))
        if alert_engine is None and cfg.alerting is not None:
            from collector.alerting.engine import AlertEngine

            engine = AlertEngine(cfg.alerting, data_dir=cfg.data_dir)
            engine.on_rules_changed = self._rules_changed
            alert_engine = engine
        self.alerting = AlertStage(alert_engine, self.counters) if alert_engine is not None else None
        # What was stored before a restart (or a SIGKILL) is not stored again when the broker redelivers it.
        for agent, seqs in self.state.load_seen(cfg.limits.dedup_window).items():
            self.ingest.load_seen(agent, seqs)
        # Batches whose write began before a crash and was never recorded: a store that keeps
        # duplicates is asked what it already holds before they are written again.
        self._unsure = self.state.load_intent()
        if self._unsure:
            log.info(
                "%d batches may be half-written from before a crash: checked with the stores when redelivered",
                len(self._unsure),
            )
        self.broker = EmbeddedBroker(cfg.mqtt.host, cfg.mqtt.port) if cfg.embedded else None
        # The audit log: agents' answers to the centre's control (who did what is the CLI's/API's part).
        from collector.control import open_audit

        self.audit: AuditLog | None = open_audit(cfg)
        self._config_seen: dict[str, tuple[str, str]] = {
            a["id"]: (a["config_version"], a["config_error"])
            for a in read_agents(cfg.state_path)
            if a["status"] == "online"
        }
        self._writer: threading.Thread | None = None
        self._api: ApiServer | None = None

    @property
    def connected(self) -> threading.Event:
        return self.receiver.connected

    # -- one group of messages through the stages ------------------------------------------------
    def _process(self, msgs: list[mqtt.MQTTMessage]) -> bool:
        """Store and acknowledge ``msgs``. False only when stopping while a store is down (the
        messages stay unacknowledged and the broker redelivers them)."""
        if not self._wait_for_room():
            return False
        group = self.ingest.classify((m.topic, bytes(m.payload)) for m in msgs)
        samples = group.samples
        batches = [(a.topic.agent, a.envelope.seq) for a in group.accepted]
        sure: list[Sample] = []
        unsure: list[Sample] = []
        for a, key in zip(group.accepted, batches, strict=True):
            (unsure if key in self._unsure else sure).extend(a.envelope.samples)
        intent = self.store.checks and bool(samples)
        if intent:
            self.state.record_intent(batches)  # committed before the write: a crash leaves it behind
        if not self.store.write(sure, unsure):
            return False
        if self.disk.store_full:
            self.disk.store_full = False
            self._emit_self_to_alerting()
        if not self._record(group, self.ingest.take_counts(), batches if intent else []):
            return False
        self._unsure.difference_update(batches)
        self._audit(group)
        try:
            self.latest_values.feed(samples)
        except Exception as e:
            self.counters.stage_error("latest", e)
        self.counters.inc("stored_batches", len(group.accepted))
        self.counters.inc("stored_samples", len(samples))
        if self.alerting is not None:
            for st in group.statuses:
                self.alerting.status(st.agent, st.status.site, st.status.state)
            self.alerting.submit(samples)
        self.receiver.ack(msgs)
        return True

    def _record(self, group: Classified, counts: dict[str, dict[str, int]], intents: list[tuple[str, int]]) -> bool:
        """The stored group into state.db (the seen log, the inventory, and the write intents it
        clears, in one transaction), retried while state.db cannot be written (a full disk): the
        messages are acknowledged only after it. False when stopping first (the broker redelivers
        them; their intents remain, so a store that keeps copies is checked before they are written
        again)."""
        delay = 0.5
        while True:
            try:
                with self.state.transaction():
                    self.ingest.commit(group.accepted, seen_log=self.state)
                    if intents:
                        self.state.clear_intent(intents)
                    try:
                        self.inventory.record(group.accepted, group.statuses, counts)
                    except sqlite3.Error:
                        raise  # the transaction is lost: the whole record is tried again
                    except Exception as e:
                        self.counters.stage_error("inventory", e)
            except sqlite3.Error as e:
                self.counters.stage_error("inventory", e)
                if not self._state_failing:
                    self._state_failing = True
                    log.error(
                        "cannot write state.db (%s): holding messages unacknowledged and retrying — "
                        "free disk space in %s / 无法写入 state.db，消息暂不确认",
                        e,
                        self.cfg.data_dir,
                    )
                newly_full = is_disk_full(e) and not self.disk.store_full
                if newly_full:
                    self.disk.store_full = True
                self._emit_self_to_alerting(every_interval=not newly_full)
                if self._stopping.wait(delay):
                    return False
                delay = min(delay * 2, 10.0)
                continue
            if self._state_failing:
                self._state_failing = False
                log.info("state.db is writable again")
            return True

    # -- a full disk -----------------------------------------------------------------------------
    def _wait_for_room(self) -> bool:
        """Wait while the data directory is below ``collector.min_free``: messages in hand (and
        all behind them) stay unacknowledged at the broker. False when stopping first."""
        free = self.disk.low()
        if free is None:
            return True
        self.counters.inc("disk_full_episodes")
        if not self._disk_low_logged:
            self._disk_low_logged = True
            log.error(
                "data directory %s: %d bytes free, below collector.min_free (%d): taking no more messages "
                "(they wait at the broker, unacknowledged) until there is room — free disk space / "
                "数据目录磁盘空间不足，暂停接收（消息保留在代理服务器），请清理磁盘",
                self.cfg.data_dir,
                free,
                self.disk.min_free,
            )
        self._emit_self_to_alerting()
        while free is not None:
            if self._stopping.wait(DISK_RECHECK_S):
                return False
            self._emit_self_to_alerting(every_interval=True)
            free = self.disk.low()
        self._disk_low_logged = False
        log.warning(
            "data directory %s has room again (%d bytes free): taking messages / 磁盘空间已恢复",
            self.cfg.data_dir,
            self.disk.free_bytes(),
        )
        self._emit_self_to_alerting()
        return True

    def _store_retry(self, sink: str, err: StorageError) -> None:
        """The store stage waits on an unavailable sink: a full disk shows in the self-metrics."""
        newly_full = is_disk_full(err) and not self.disk.store_full
        if newly_full:
            self.disk.store_full = True
        self._emit_self_to_alerting(every_interval=not newly_full)

    def _emit_self_to_alerting(self, *, every_interval: bool = False) -> None:
        """While the pipeline is held up: the collector's health to alerting only (the store
        cannot take it). With ``every_interval``, at most once per self_metrics_interval."""
        now = time.monotonic()
        if every_interval and now - self._last_self < self.cfg.collector.self_metrics_interval:
            return
        self._last_self = now
        if self.alerting is not None:
            self.alerting.submit([self.self_sample()])

    def _audit(self, group: Classified) -> None:
        """Into the audit log: what agents did with the centre's commands and configs."""
        if self.audit is None or not (group.results or group.statuses):
            return
        try:
            for r in group.results:
                res = r.result
                self.audit.record(
                    r.agent,
                    "command_result",
                    res.id,
                    res.status,
                    "mqtt",
                    {"exit_code": res.exit_code, "reason": res.reason},
                )
            for st in group.statuses:
                s = st.status
                now = (s.config_version, s.config_error)
                if s.state != "online" or self._config_seen.get(st.agent) == now:
                    continue
                before = self._config_seen.get(st.agent)
                self._config_seen[st.agent] = now
                if before is None:
                    continue  # first sight since start: nothing changed that we know of
                if s.config_error and s.config_error != before[1]:
                    self.audit.record(
                        st.agent, "config_refused", s.config_version, "refused", "mqtt", {"error": s.config_error}
                    )
                elif s.config_version != before[0]:
                    self.audit.record(st.agent, "config_applied", s.config_version, "ok", "mqtt")
        except Exception as e:
            self.counters.stage_error("audit", e)

    def _rules_changed(self, path: str, result: str, detail: str) -> None:
        if self.audit is not None:
            self.audit.record("collector", "rules_changed", path, result, "file", {"detail": detail})

    def _gather(self) -> list[mqtt.MQTTMessage]:
        first = self.receiver.get(0.2)
        if first is None:
            return []
        msgs = [first]
        # Gather what arrives in the next moment into the same transaction: one message per
        # transaction rewrites hundreds of SQLite pages for a few hundred samples.
        gather_until = time.monotonic() + GATHER_S
        while len(msgs) < MAX_MESSAGES_PER_WRITE:
            m = self.receiver.get(min(GATHER_IDLE_S, gather_until - time.monotonic()))
            if m is None:
                break
            msgs.append(m)
        return msgs

    def _writer_loop(self) -> None:
        last_counters = 0.0
        last_prune = last_trim = time.monotonic()
        stop_deadline: float | None = None
        while True:
            if self._stopping.is_set():
                # Store and acknowledge what has arrived, for a bounded time; the rest stays
                # unacknowledged at the broker and comes back on the next connection.
                stop_deadline = stop_deadline or time.monotonic() + STOP_GRACE_S
                if time.monotonic() > stop_deadline:
                    break
            msgs = self._gather()
            if not msgs and self._stopping.is_set():
                break
            try:
                if msgs and not self._process(msgs):
                    break  # stopping while a store is down: the broker keeps the unacknowledged rest
            except Exception as e:  # state.db failing: these stay unacknowledged, redelivered on reconnect
                self.counters.stage_error("inventory", e)
            now = time.monotonic()
            if now - self._last_self >= self.cfg.collector.self_metrics_interval or self.receiver.session_news.is_set():
                self.receiver.session_news.clear()
                self._last_self = now
                self._emit_self()
            if now - last_counters >= COUNTERS_EVERY_S:
                last_counters = now
                self._save_counters()
                self._reload_admitted()
            if now - last_prune >= PRUNE_EVERY_S:
                last_prune = now
                self._prune()
            if now - last_trim >= TRIM_EVERY_S:
                last_trim = now
                heap.trim()  # pages a burst (a backlog, a store's spool draining) used go back
        self._save_counters()

    def _reload_admitted(self) -> None:
        """Agents an operator admitted since (netwatch-collector agents admit, another process)."""
        try:
            self.registry.update_admitted(self.state.admitted())
        except Exception as e:
            self.counters.stage_error("ingest", e)

    def _save_counters(self) -> None:
        if self.receiver.connected.is_set() and not self.cfg.embedded:
            self.state.note_session()
        try:
            self.state.save_counters(self.stats())
        except Exception as e:
            self.counters.stage_error("inventory", e)

    def _prune(self) -> None:
        try:
            self.state.prune_seen(self.cfg.limits.dedup_window)
            self.store.prune()
        except Exception as e:
            self.counters.stage_error("store", e)

    # -- what the API and the CLI read -----------------------------------------------------------
    def store_spools(self) -> dict[str, int]:
        """Samples waiting in local spools for stores that were unreachable, and what they did."""
        out: dict[str, int] = {}
        for sink in self.store.sinks:
            if isinstance(sink, BufferedSink):
                st = sink.stats()
                out[f"store_spool_samples_{sink.name}"] = st.samples
                out[f"store_spool_spooled_{sink.name}"] = sink.spooled_samples
                out[f"store_spool_drained_{sink.name}"] = sink.drained_samples
                out[f"store_spool_rejected_{sink.name}"] = sink.rejected_samples
        return out

    def stats(self) -> dict[str, Any]:
        """Counters, stage queue depths and store spools: ``stats``, ``/api/stats``, state.db."""
        return {
            **self.counters.snapshot(),
            **self.store_spools(),
            "queue_depth": self.receiver.depth,
            "queue_bytes": self.receiver.depth_bytes,
            # device changes dated before the device's last recorded one (a late backlog): not recorded
            "availability_late_changes": self.state.transitions.late,
            **(self.alerting.stats() if self.alerting is not None else {}),
            # the embedded broker's connections that ended before a valid MQTT CONNECT, and CONNECTs refused
            **(self.broker.stats() if self.broker is not None else {}),
            "connected": self.receiver.connected.is_set(),
            # the data directory below collector.min_free, or a write refused for lack of space
            "disk_full": self.disk.full,
        }

    def agents(self) -> list[dict[str, Any]]:
        return read_agents(self.cfg.state_path)

    def unknown_agents(self) -> list[dict[str, Any]]:
        return read_unknown_agents(self.cfg.state_path)

    def sites(self) -> list[dict[str, Any]]:
        """The site tree from the topology file, flattened (``parent`` links it); [] without one."""
        if self.cfg.topology is None:
            return []
        from collector.alerting.topology import Topology

        topo = Topology.load(self.cfg.topology)
        return [
            {
                "id": s.id,
                "name": {"en": s.label("en"), "zh": s.label("zh")},
                "kind": s.kind,
                "parent": topo.parent[s.id],
                "agents": list(s.agents),
                "devices": list(s.devices),
            }
            for s in topo.sites.values()
        ]

    def latest(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Each site's latest key values (collector/latest.py), whatever the store."""
        return self.latest_values.as_dicts()

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Sample]:
        """Recent samples from the SQLite store; QueryUnsupported when there is none."""
        if self.cfg.sqlite_path is None:
            raise QueryUnsupported("no SQLite store configured; query InfluxDB through Grafana")
        from collector.storage.sqlite import SqliteSink

        reader = SqliteSink.open_readonly(self.cfg.sqlite_path)
        try:
            return reader.query(measurement, tags={"agent": agent} if agent else None, since_ns=since_ns, limit=limit)
        finally:
            reader.close()

    def self_sample(self) -> Sample:
        """The collector's own health, stored and fed to alerting (rules on ``netwatch_collector``)."""
        stats = self.stats()
        fields: dict[str, int | float | bool | str] = {
            k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, dict)
        }
        for stage, n in stats["stage_errors"].items():
            fields[f"stage_errors_{stage}"] = n
        # Always present, so that a rate rule sees them move from 0.
        for reason in ALERTED_REFUSALS:
            fields[f"rejected_{reason}"] = stats["rejected"].get(reason, 0)
        fields.setdefault("identity_overridden", 0)
        fields["mqtt_session_ok"] = self.receiver.session_ok
        fields["data_free_bytes"] = self.disk.free_bytes()
        return Sample(SELF_MEASUREMENT, {"collector": self.cfg.collector.id}, fields, time.time_ns())

    def overview(self) -> list[Sample]:
        """Sites' state and firing alerts as series (collector/overview.py); [] when unreadable."""
        from collector.overview import overview_samples

        engine = self.alerting.engine if self.alerting is not None else None
        firing = getattr(engine, "firing", None)
        try:
            rows = firing() if callable(firing) else []
            alerts = [a.to_dict() for a in rows]
            agents = read_agents(self.cfg.state_path)
            return overview_samples(self.sites(), agents, alerts, self.registry.site_tags, time.time_ns())
        except Exception as e:  # the overview is a view: never let it stop the self-sample
            self.counters.stage_error("overview", e)
            return []

    def _emit_self(self) -> None:
        s = self.self_sample()
        self.store.write([s, *self.overview()])
        if self.alerting is not None:
            self.alerting.submit([s])

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self.broker is not None:
            self.broker.start()
        if self.alerting is not None:
            self.alerting.start()
        self._writer = threading.Thread(target=self._writer_loop, name="collector-writer", daemon=True)
        self._writer.start()
        self.receiver.start()
        if self.cfg.api.enabled:
            from collector.api_app import Backend

            api = self.cfg.api
            self._api_backend = Backend.from_config(self.cfg, self.audit)
            if self._api_backend.users is not None and not self._api_backend.users.users():
                log.warning("the API has no users yet: run `netwatch-collector users init` to create the first admin")
            self._api = ApiServer(
                self,
                api.host,
                api.port,
                allowed_hosts=api.allowed_hosts,
                backend=self._api_backend,
                tls_cert_file=api.tls_cert_file,
                tls_key_file=api.tls_key_file,
            )
            self._api.start()
        m = self.cfg.mqtt
        if m.plaintext_off_host:
            log.warning("mqtt.tls is false: the password and all data cross the network to %s in clear", m.host)
        log.info(
            "collector %s: broker %s:%d%s, stores: %s, state %s",
            self.cfg.collector.id,
            m.host,
            m.port,
            " (embedded)" if self.cfg.embedded else "",
            ", ".join(s.name for s in self.store.sinks),
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
        self.receiver.stop()
        if self._api is not None:
            self._api.stop()
            self._api_backend.close()
        self.store.close()
        if self.alerting is not None:
            self.alerting.close()
        self.state.close()
        if self.audit is not None:
            self.audit.close()
        if self.broker is not None:
            self.broker.stop()
