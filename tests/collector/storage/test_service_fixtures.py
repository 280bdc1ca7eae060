"""The service fixtures work: a real Mosquitto round trip, persistence across a restart, TLS + passwords."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from services import Mosquitto, VictoriaMetrics

pytestmark = pytest.mark.integration


class Client:
    """A paho client that waits for CONNACK and collects messages, for these tests only."""

    def __init__(
        self,
        broker: Mosquitto,
        *,
        client_id: str | None = None,
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.c.username_pw_set(username, password)
        if tls:
            self.c.tls_set_context(broker.ssl_context())
        self.connected = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.messages: list[tuple[str, bytes]] = []
        self.got = threading.Condition()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.loop_start()

    def _on_connect(self, client, userdata, flags, reason, props) -> None:  # noqa: ANN001
        self.reason = reason
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self.got:
            self.messages.append((msg.topic, msg.payload))
            self.got.notify_all()

    def wait_connack(self) -> mqtt.ReasonCode:
        assert self.connected.wait(5), "no CONNACK within 5 s"
        assert self.reason is not None
        return self.reason

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos=1)
        assert done.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def wait_messages(self, n: int) -> list[tuple[str, bytes]]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.messages) >= n, 5), self.messages
            return list(self.messages)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_publish_subscribe_round_trip(mosquitto: Mosquitto) -> None:
    sub = Client(mosquitto)
    assert not sub.wait_connack().is_failure
    sub.subscribe("netwatch/v1/agents/+/metrics")
    pub = Client(mosquitto)
    pub.wait_connack()
    pub.publish("netwatch/v1/agents/ag-1/metrics", "县 payload".encode())
    assert sub.wait_messages(1) == [("netwatch/v1/agents/ag-1/metrics", "县 payload".encode())]
    sub.close()
    pub.close()


def test_persistent_session_survives_broker_restart(mosquitto: Mosquitto) -> None:
    """A QoS 1 message for an offline persistent session is still delivered after a restart."""
    sub = Client(mosquitto, client_id="collector-1", clean=False)
    sub.wait_connack()
    sub.subscribe("t/#")
    sub.close()
    pub = Client(mosquitto)
    pub.wait_connack()
    pub.publish("t/x", b"queued while offline")
    pub.close()
    port, pid = mosquitto.port, mosquitto.pid
    mosquitto.stop()
    mosquitto.start()
    assert mosquitto.port == port and mosquitto.pid != pid
    sub = Client(mosquitto, client_id="collector-1", clean=False)
    sub.wait_connack()
    assert sub.wait_messages(1) == [("t/x", b"queued while offline")]
    sub.close()


def test_secure_broker_accepts_right_password_over_tls(mosquitto_secure: Mosquitto) -> None:
    b = mosquitto_secure
    assert b.ca_path is not None and b.ca_path.is_file() and b.username and b.password
    c = Client(b, username=b.username, password=b.password, tls=True)
    assert not c.wait_connack().is_failure
    c.subscribe("a/b")
    c.publish("a/b", b"x")
    assert c.wait_messages(1) == [("a/b", b"x")]
    c.close()


def test_secure_broker_rejects_wrong_password(mosquitto_secure: Mosquitto) -> None:
    b = mosquitto_secure
    c = Client(b, username=b.username, password=b.password + "-wrong", tls=True)  # type: ignore[operator]
    reason = c.wait_connack()
    assert reason.is_failure and reason.value in (4, 5, 0x86, 0x87)  # bad credentials / not authorised
    c.close()
    anon = Client(b, tls=True)
    assert anon.wait_connack().is_failure
    anon.close()


def test_victoria_metrics_fixture(victoria_metrics: VictoriaMetrics) -> None:
    assert victoria_metrics.series_count() == 0
    assert victoria_metrics.export('{__name__=~".+"}') == []
    pid = victoria_metrics.pid
    victoria_metrics.stop()
    assert not victoria_metrics.running
    victoria_metrics.start()
    assert victoria_metrics.running and victoria_metrics.pid != pid


def test_missing_binary_fails_with_install_hint() -> None:
    from conftest import _run
    from services import INSTALL_HINT, ServiceMissing, find_binary

    with pytest.raises(ServiceMissing, match="README"):
        find_binary("no-such-netwatch-service", "NETWATCH_NO_SUCH_BINARY", "/nonexistent/bin")

    def start() -> Mosquitto:
        raise ServiceMissing(f"mosquitto is not installed: {INSTALL_HINT}")

    with pytest.raises(pytest.fail.Exception, match="README"):  # a failure, never a skip
        next(_run(start))
