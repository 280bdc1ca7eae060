"""The embedded broker (amqtt) drops a client that goes silent past its keep-alive and publishes its
Last Will — amqtt 0.12 on its own keeps such a client for ever — and leaves a client that pings
alone; connections that end without an MQTT CONNECT (health checks, scanners) and refused CONNECTs
are counted and logged once a while, not an ERROR each."""

from __future__ import annotations

import logging
import queue
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from services import free_port

import collector.broker as broker_mod
from collector import config as collector_config
from collector.broker import EmbeddedBroker
from collector.service import Collector

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


def _ours(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "netwatch.collector.broker" and "listening on" not in r.getMessage()
    ]


def _settle(b: EmbeddedBroker, caplog: pytest.LogCaptureFixture, want: dict[str, int], lines: int) -> None:
    """Readiness: the broker's thread has counted (and logged) what it was sent (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    while (b.stats() != want or len(_ours(caplog)) < lines) and time.monotonic() < deadline:
        time.sleep(0.02)


def _knock(port: int, data: bytes = b"") -> None:
    """A TCP connection that says ``data`` (or nothing, as `nc -z` does) and closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if data:
            s.sendall(data)


def _wrong_level_connect() -> bytes:
    """A CONNECT of MQTT 3.1 (level 3), which amqtt refuses with CONNACK code 1."""
    var = _utf8("MQTT") + bytes((3, 0x02)) + struct.pack("!H", 30)
    body = var + _utf8("old-client")
    return bytes((0x10, len(body))) + body


def test_connections_without_connect_are_counted_and_logged_once_a_while(
    broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="netwatch.collector.broker")
    for _ in range(5):
        _knock(broker.port)  # nc -z
    _knock(broker.port, b"GET / HTTP/1.0\r\n\r\n")  # an HTTP probe
    _knock(broker.port, b"\x10\x20\x00")  # a CONNECT cut short
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as s:
        s.sendall(_wrong_level_connect())
        assert s.recv(4) == b"\x20\x02\x00\x01"  # CONNACK: unacceptable protocol version
    _settle(broker, caplog, {"broker_no_connect": 7, "broker_connect_refused": 1}, lines=2)
    assert broker.stats() == {"broker_no_connect": 7, "broker_connect_refused": 1}
    # the broker goes on: a real client connects and subscribes
    watcher = _subscriber(broker.port, queue.Queue())
    watcher.loop_stop()
    watcher.disconnect()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.name.startswith("amqtt")]  # its two lines per connection
    ours = _ours(caplog)
    assert len(ours) == 2, ours  # the first of each kind
    by_level = dict(ours)  # one INFO, one WARNING (the broker's thread may log them in either order)
    text, text2 = by_level["INFO"], by_level["WARNING"]
    assert "ended without an MQTT CONNECT" in text and "127.0.0.1:" in text
    assert "counted in stats as broker_no_connect" in text
    assert "refused the MQTT CONNECT" in text2 and "broker_connect_refused" in text2

    # once the interval is over, the next one is logged with how many were not
    monkeypatch.setattr(broker_mod, "LOG_EVERY_S", 0.0)
    caplog.clear()
    _knock(broker.port)
    _settle(broker, caplog, {"broker_no_connect": 8, "broker_connect_refused": 1}, lines=1)
    ((level, line),) = _ours(caplog)
    assert level == "INFO" and "6 more since the last such line" in line


def test_the_collector_counts_them_in_its_stats(tmp_path: Path) -> None:
    """A collector on its embedded broker: its own MQTT session is not counted, two port checks are."""
    port = free_port()
    (tmp_path / "c.yaml").write_text(
        f"collector: {{data_dir: {tmp_path / 'data'}}}\nembedded_broker: {{port: {port}}}\napi: {{enabled: false}}\n"
    )
    col = Collector(collector_config.load(tmp_path / "c.yaml"))
    col.start()
    try:
        assert col.receiver.connected.wait(10)
        _knock(port)
        _knock(port)
        deadline = time.monotonic() + 10  # readiness: counted on the broker's thread
        while col.stats()["broker_no_connect"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        st = col.stats()
        assert (st["broker_no_connect"], st["broker_connect_refused"]) == (2, 0)
    finally:
        col.stop()
