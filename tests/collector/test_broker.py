"""The embedded broker (amqtt) drops a client that goes silent past its keep-alive and publishes its
Last Will — amqtt 0.12 on its own keeps such a client for ever — and leaves a client that pings
alone."""

from __future__ import annotations

import queue
import socket
import struct
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from services import free_port

from collector.broker import EmbeddedBroker

GRACE_S = 1


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _connect_packet(client_id: str, keepalive_s: int, will_topic: str, will: bytes) -> bytes:
    """MQTT 3.1.1 CONNECT with a will, clean session (built by hand: this client never pings)."""
    var = _utf8("MQTT") + bytes((4, 0x04 | 0x02)) + struct.pack("!H", keepalive_s)
    payload = _utf8(client_id) + _utf8(will_topic) + struct.pack("!H", len(will)) + will
    body = var + payload
    assert len(body) < 128
    return bytes((0x10, len(body))) + body


@pytest.fixture()
def broker() -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker("127.0.0.1", free_port(), keepalive_grace_s=GRACE_S)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _subscriber(port: int, got: queue.Queue[tuple[str, bytes, float]]) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
    ready = queue.Queue[bool]()
    c.on_message = lambda _c, _u, m: got.put((m.topic, m.payload, time.monotonic()))
    c.on_subscribe = lambda *_a: ready.put(True)
    c.on_connect = lambda cl, *_a: cl.subscribe("will/#", qos=1)
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    assert ready.get(timeout=10)
    return c


def test_a_silent_client_is_dropped_and_its_will_published(broker: EmbeddedBroker) -> None:
    got: queue.Queue[tuple[str, bytes, float]] = queue.Queue()
    watcher = _subscriber(broker.port, got)
    try:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as s:
            s.sendall(_connect_packet("silent-agent", 1, "will/silent-agent", b"gone"))
            assert s.recv(4)[:1] == b"\x20"  # CONNACK
            t0 = time.monotonic()
            topic, payload, at = got.get(timeout=20)  # the socket stays open and says nothing
            assert (topic, payload) == ("will/silent-agent", b"gone")
            # not before keep-alive + grace (1 + 1 s) without a packet
            assert at - t0 >= 1 + GRACE_S - 0.2
            s.settimeout(5)
            assert s.recv(1) == b""  # and the broker closed the connection
    finally:
        watcher.loop_stop()
        watcher.disconnect()


def test_a_client_that_pings_is_kept(broker: EmbeddedBroker) -> None:
    got: queue.Queue[tuple[str, bytes, float]] = queue.Queue()
    watcher = _subscriber(broker.port, got)
    idle = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="idle-agent")
    idle.will_set("will/idle-agent", b"gone", qos=1)
    disconnected: list[object] = []
    idle.on_disconnect = lambda *a: disconnected.append(a)
    idle.connect("127.0.0.1", broker.port, keepalive=1)
    idle.loop_start()
    try:
        with pytest.raises(queue.Empty):
            got.get(timeout=1 + GRACE_S + 4)  # several keep-alive periods, pinging, no data
        assert not disconnected and idle.is_connected()
    finally:
        idle.loop_stop()
        idle.disconnect()
        watcher.loop_stop()
        watcher.disconnect()
