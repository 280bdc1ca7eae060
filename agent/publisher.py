"""Ships spooled batches to the broker over MQTT (paho-mqtt 2.x, QoS 1), and keeps the
agent's retained online/offline status, with the offline message as the Last Will."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from agent import __version__
from agent.config import AgentConfig
from agent.spool import Spool
from probes.ratelimit import TokenBucket
from protocol.mqtt import make_client
from protocol.status import State, Status
from protocol.topics import Kind, Topics

log = logging.getLogger("netwatch.agent.publisher")


#: the topic kinds a spooled batch may go to
_SPOOL_KINDS: dict[str, Kind] = {"metrics": "metrics", "events": "events"}


class Publisher:
    def __init__(
        self, cfg: AgentConfig, spool: Spool, *, config_version: str = "", capabilities: list[str] | None = None
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.topics = Topics(cfg.mqtt.topic_root).of_agent(cfg.agent.id)
        self.config_version = config_version
        self.capabilities = capabilities or []
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._inflight: dict[int, tuple[int, float]] = {}  # mid -> (seq, sent monotonic)
        # Batches up to this sequence number were spooled before the current connection:
        # the backlog, sent oldest first under the drain rate. Later ones are live.
        self._live_after = 0
        self._acks: list[int] = []  # acknowledged, not yet removed from the spool
        self._bucket = TokenBucket(float(cfg.publish.drain_rate))
        self._first_failure_logged = False
        self._stopped = False
        # counters, reported in the agent's own metrics
        self.published = 0
        self.acked = 0
        self.connects = 0
        self.disconnects = 0
        self.last_latency_ms: float | None = None
        #: set by the runner when control from the centre is on: (kind, payload) of config/cmd messages
        self.on_control: Callable[[str, bytes], None] | None = None
        self.config_error = ""
        self.control_key = ""

        m = cfg.mqtt
        client_id = m.client_id or f"netwatch-agent-{cfg.agent.id}"
        self.client = make_client(m, client_id, clean_session=True)
        self.client.max_inflight_messages_set(m.max_inflight)
        self.client.will_set(self.topics["status"], self._status_payload("offline"), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # -- status -------------------------------------------------------------------------
    def _status_payload(self, state: State) -> bytes:
        return Status(
            state=state,
            agent=self.cfg.agent.id,
            site=self.cfg.agent.site,
            version=__version__,
            config_version=self.config_version,
            capabilities=tuple(self.capabilities),
            time_ns=time.time_ns(),
            config_error=self.config_error,
            control_key=self.control_key,
        ).encode()

    def publish_status(self) -> None:
        """Tell the centre again (the applied config version or why one was refused changed)."""
        if self.connected:
            self.client.publish(self.topics["status"], self._status_payload("online"), qos=1, retain=True)

    def publish_result(self, payload: bytes) -> None:
        """A command's result on ``cmd/result``; paho keeps it while the link is down."""
        self.client.publish(self.topics["cmd/result"], payload, qos=1)

    # -- paho callbacks (network thread) -> hop onto the asyncio loop ------------------
    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._hop, fn, *args)

    def _hop(self, fn: Any, *args: Any) -> None:
        # A callback from paho's thread can be queued just before stop() and run after it, when the
        # spool is closed (an agent stopping while its connection comes up): nothing is left to do.
        if not self._stopped:
            fn(*args)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._call(self._note_failure, f"broker refused the connection: {reason}")
            return
        client.publish(self.topics["status"], self._status_payload("online"), qos=1, retain=True)
        if self.on_control is not None:
            # QoS 1: a command sent while the link was down waits at the broker... for this session only
            client.subscribe([(self.topics["config"], 1), (self.topics["cmd"], 1)])
        self._call(self._connected)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._call(self._disconnected, str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        handler = self.on_control
        if handler is None:
            return
        kind = "config" if msg.topic == self.topics["config"] else "cmd" if msg.topic == self.topics["cmd"] else None
        if kind is not None:
            self._call(handler, kind, bytes(msg.payload))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._call(self._acked, mid)

    # -- state changes (asyncio thread) -------------------------------------------------
    def _connected(self) -> None:
        self.connected = True
        self.connects += 1
        self._first_failure_logged = False
        # Whatever was in flight on the old connection is resent from the spool; the collector
        # drops the copies it already has by (agent, seq).
        self._inflight.clear()
        self._live_after = self.spool.stats().last_seq
        m = self.cfg.mqtt
        backlog = self.spool.stats().depth
        log.info(
            "connected to broker %s:%d%s%s",
            m.host,
            m.port,
            " (TLS)" if m.uses_tls else "",
            f"; draining a backlog of {backlog} batches" if backlog else "",
        )
        self._kick()

    def _disconnected(self, reason: str) -> None:
        if self.connected:
            self.disconnects += 1
            log.warning("lost the broker connection (%s); batches stay in the spool until it is back", reason)
        self.connected = False
        self._inflight.clear()

    def _note_failure(self, text: str) -> None:
        if not self._first_failure_logged:
            log.error("%s", text)
            self._first_failure_logged = True

    def _acked(self, mid: int) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return  # the status message, or an ack from a connection we already gave up on
        seq, sent = entry
        # Acks arrive one by one; remove them from the spool in one commit per loop turn (one
        # disk sync instead of one per batch — it matters on a township node's SD card).
        if not self._acks:
            assert self._loop is not None
            self._loop.call_soon(self._flush_acks)
        self._acks.append(seq)
        self.acked += 1
        self.last_latency_ms = (time.monotonic() - sent) * 1000

    def _flush_acks(self) -> None:
        seqs, self._acks = self._acks, []
        self.spool.ack(seqs)
        self._kick()

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- running ------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        m = self.cfg.mqtt
        self.client.connect_async(m.host, m.port, keepalive=int(m.keepalive))
        self.client.loop_start()

    def notify(self) -> None:
        """A new batch is in the spool."""
        self._kick()

    def _fill(self) -> None:
        room = self.cfg.mqtt.max_inflight - len(self._inflight)
        if room <= 0 or not self.connected:
            return
        busy = {seq for seq, _ in self._inflight.values()}
        # Live batches first (the centre sees the present at once), then the backlog, oldest
        # first, as fast as the drain rate allows.
        live = [b for b in self.spool.pending(room, exclude=busy, newest_first=True) if b[0] > self._live_after]
        for seq, topic, payload in reversed(live):
            if not self._send(seq, topic, payload):
                return
        room -= len(live)
        if room <= 0:
            return
        busy.update(b[0] for b in live)
        for seq, topic, payload in self.spool.pending(room, exclude=busy):
            if seq > self._live_after:
                break
            if not self._bucket.take(len(payload)):
                break
            if not self._send(seq, topic, payload):
                return

    @property
    def draining(self) -> bool:
        """Whether a backlog from before this connection is still being sent."""
        pending = self.spool.pending(1)
        return bool(pending) and pending[0][0] <= self._live_after

    def _send(self, seq: int, topic: str, payload: bytes) -> bool:
        info = self.client.publish(self.topics[_SPOOL_KINDS[topic]], payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False  # disconnected under us; the on_disconnect hop will follow
        self._inflight[info.mid] = (seq, time.monotonic())
        self.published += 1
        return True

    async def pump(self, stop: asyncio.Event) -> None:
        assert self._wake is not None
        while not stop.is_set():
            self._fill()
            self._wake.clear()
            # While a rate-limited backlog drains, look again soon for new tokens.
            wait = 0.1 if self.connected and self.draining else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def drain(self, timeout_s: float) -> bool:
        """At shutdown: publish what is spooled and wait for acks, up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._fill()
            if self.connected and not self._inflight and not self._acks and not self.spool.pending(1):
                return True
            await asyncio.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopped = True
        if self.connected:
            info = self.client.publish(self.topics["status"], self._status_payload("offline"), qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
