"""The receive stage: the collector's MQTT session. Persistent (clean_session false), QoS 1, and
manual acknowledgement: a message is acknowledged only when the pipeline says its samples are
durably stored, so the broker keeps everything else across a collector restart or crash."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt

from protocol.mqtt import Mqtt, make_client
from protocol.topics import Topics

log = logging.getLogger("netwatch.collector")

#: messages received and not yet taken by the pipeline; when full, paho's network thread waits,
#: and so the broker waits (it sends no more than the in-flight window without acks)
QUEUE_MESSAGES = 20_000


class Receiver:
    def __init__(self, settings: Mqtt, client_id: str, *, queue_messages: int = QUEUE_MESSAGES) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_root)
        self.connected = threading.Event()
        self.queue: queue.Queue[mqtt.MQTTMessage] = queue.Queue(maxsize=queue_messages)
        self.client = make_client(settings, client_id, clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the collector: %s", reason)
            return
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
        try:
            return self.queue.get(timeout=timeout) if timeout > 0 else self.queue.get_nowait()
        except queue.Empty:
            return None

    def ack(self, messages: list[mqtt.MQTTMessage]) -> None:
        for msg in messages:
            self.client.ack(msg.mid, msg.qos)

    def start(self) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=int(self.settings.keepalive))
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
