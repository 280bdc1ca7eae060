"""The receive stage: the collector's MQTT session. Persistent (clean_session false), QoS 1, and
manual acknowledgement: a message is acknowledged only when the pipeline says its samples are
durably stored, so the broker keeps everything else across a collector restart or crash."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt

from collector.stats import Counters
from protocol.mqtt import Mqtt, make_client
from protocol.topics import Topics

log = logging.getLogger("netwatch.collector")

#: messages received and not yet taken by the pipeline, by count and by bytes; when either is
#: reached, paho's network thread waits, and so the broker waits (it sends no more than the
#: in-flight window without acks)
QUEUE_MESSAGES = 20_000
QUEUE_BYTES = 64 * 1024 * 1024
#: how long ``mqtt_session_ok`` stays false after a lost session (the default rule fires on it)
SESSION_LOST_ALERT_S = 3600


class _BoundedQueue:
    """A FIFO bounded in items and in payload bytes; one message is always let in, whatever its size."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[mqtt.MQTTMessage] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def put(self, msg: mqtt.MQTTMessage) -> None:
        size = len(msg.payload)
        with self._cond:
            while self._items and (len(self._items) >= self.max_items or self._bytes + size > self.max_bytes):
                self._cond.wait()
            self._items.append(msg)
            self._bytes += size
            self._cond.notify_all()

    def get(self, timeout: float) -> mqtt.MQTTMessage | None:
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            if not self._items:
                return None
            msg = self._items.popleft()
            self._bytes -= len(msg.payload)
            self._cond.notify_all()
            return msg

    def qsize(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes


class Receiver:
    def __init__(
        self,
        settings: Mqtt,
        client_id: str,
        *,
        queue_messages: int = QUEUE_MESSAGES,
        queue_bytes: int = QUEUE_BYTES,
        counters: Counters | None = None,
    ) -> None:
        self.settings = settings
        self.counters = counters or Counters()
        #: whether the broker should hold a session for us (set from state.db, then after each connect)
        self.expect_session = False
        self.session_lost_ns: int | None = None
        #: set when the session was found lost, so the pipeline reports it at once
        self.session_news = threading.Event()
        self.topics = Topics(settings.topic_root)
        self.connected = threading.Event()
        self.queue = _BoundedQueue(queue_messages, queue_bytes)
        self.client = make_client(settings, client_id, clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    @property
    def session_ok(self) -> bool:
        """False for an hour after the broker was found to have lost our session."""
        lost = self.session_lost_ns
        return lost is None or time.time_ns() - lost > SESSION_LOST_ALERT_S * 1_000_000_000

    @property
    def depth_bytes(self) -> int:
        return self.queue.bytes

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the collector: %s", reason)
            return
        if self.expect_session and not flags.session_present:
            # Whatever the broker queued for us while we were away is gone: agents deleted it from
            # their spools on the broker's ack. Someone may have connected with our client id.
            self.session_lost_ns = time.time_ns()
            self.counters.inc("mqtt_session_lost")
            self.session_news.set()
            log.error(
                "the broker kept no session for the collector: messages queued while it was away are lost "
                "(a broker restart without persistence, or another client took its client id) — counted as "
                "mqtt_session_lost / 会话丢失"
            )
        self.expect_session = True
        # Subscribe every time: a broker that lost our session (or amqtt, which keeps none) still feeds us.
        client.subscribe([(t, 1) for t in self.topics.subscriptions()])
        self.connected.set()
        log.info("subscribed at %s:%d under %s/agents/+/…", self.settings.host, self.settings.port, self.topics.root)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self.connected.is_set():
            log.warning("lost the broker (%s); reconnecting — unacknowledged messages wait at the broker", reason)
        self.connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.queue.put(msg)  # blocks when the pipeline is behind: back-pressure to the broker

    def get(self, timeout: float) -> mqtt.MQTTMessage | None:
        return self.queue.get(timeout)

    def ack(self, messages: list[mqtt.MQTTMessage]) -> None:
        for msg in messages:
            self.client.ack(msg.mid, msg.qos)

    def start(self) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=int(self.settings.keepalive))
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
