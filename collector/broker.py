"""The embedded MQTT broker (amqtt) for a collector with no external broker: loopback only,
for the demo and for a single small site. Production uses Mosquitto or EMQX with TLS."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import Counter
from typing import Any

log = logging.getLogger("netwatch.collector.broker")


#: Seconds past a client's keep-alive before it is dropped and its Last Will published. MQTT
#: asks for 1.5 × keep-alive; paho pings at keep-alive (+ up to 1 s), so half the agents' default
#: 30 s leaves room for a late ping.
KEEPALIVE_GRACE_S = 15

#: Connections that end before a valid MQTT CONNECT (``nc -z`` health checks, port scanners, an
#: HTTP probe) and CONNECTs the broker refuses are counted; the log gets the first of each kind and
#: then at most one line per this many seconds, saying how many came since.
LOG_EVERY_S = 60.0

_patch_lock = threading.Lock()  # two brokers starting at once (tests) patch amqtt once
_patched = False
_counted = False
#: the EmbeddedBroker whose event loop runs in this thread (each runs amqtt on a thread of its own)
_owner = threading.local()
#: set in a connection's task once we counted its failure: amqtt's own lines about it (an ERROR
#: and a WARNING per connection) are dropped by _AmqttQuiet
_counted_here: contextvars.ContextVar[bool] = contextvars.ContextVar("netwatch_broker_counted", default=False)


class _AmqttQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _counted_here.get()


def _enforce_keepalive() -> None:
    """amqtt 0.12 waits out a silent client's keep-alive and then does nothing: a client behind a
    dead link stays connected for ever and its Last Will never goes out, so the collector would
    see a cut-off county as online. Drop the connection on that timeout as the MQTT spec says
    (3.1.2.10), which makes amqtt publish the will as for any abnormal disconnect."""
    global _patched
    if _patched:
        return
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    def handle_read_timeout(self: BrokerProtocolHandler) -> None:
        client = self.session.client_id if self.session is not None else "?"
        log.warning("MQTT client %s sent nothing within its keep-alive: dropped, its Last Will goes out", client)
        asyncio.ensure_future(self.handle_connection_closed())

    BrokerProtocolHandler.handle_read_timeout = handle_read_timeout
    _patched = True


def _count_failed_connects() -> None:
    """amqtt logs an ERROR (and a WARNING) for every connection that closes before its CONNECT —
    every `nc -z` health check and port scan — and two WARNINGs for every CONNECT it refuses.
    Count them per broker and log them as EmbeddedBroker._failed_connect says instead."""
    global _counted
    with _patch_lock:
        if not _counted:
            _patch_failed_connects()
            _counted = True


def _patch_failed_connects() -> None:
    from amqtt.errors import AMQTTError, MQTTError, NoDataError
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    original = BrokerProtocolHandler.init_from_connect

    async def init_from_connect(cls: Any, reader: Any, writer: Any, plugins_manager: Any, loop: Any = None) -> Any:
        try:
            return await original(reader, writer, plugins_manager, loop)
        except (NoDataError, AMQTTError, MQTTError) as e:
            owner = getattr(_owner, "broker", None)
            if owner is not None:
                _counted_here.set(True)  # this connection's task: amqtt's lines about it are dropped
                try:
                    peer = writer.get_peer_info()
                except Exception:
                    peer = None
                owner._failed_connect(isinstance(e, MQTTError), peer, e)
            raise

    BrokerProtocolHandler.init_from_connect = classmethod(init_from_connect)
    logging.getLogger("amqtt.broker").addFilter(_AmqttQuiet())


class EmbeddedBroker:
    def __init__(self, host: str, port: int, *, keepalive_grace_s: int = KEEPALIVE_GRACE_S) -> None:
        self.host = host
        self.port = port
        self.keepalive_grace_s = keepalive_grace_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._failed: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}

    def stats(self) -> dict[str, int]:
        """``broker_no_connect``: connections that ended before a valid MQTT CONNECT;
        ``broker_connect_refused``: CONNECTs refused (protocol version, client id)."""
        with self._lock:
            return {f"broker_{kind}": self._failed[kind] for kind in ("no_connect", "connect_refused")}

    def _failed_connect(self, refused: bool, peer: tuple[str, int] | None, err: BaseException) -> None:
        kind = "connect_refused" if refused else "no_connect"
        now = time.monotonic()
        with self._lock:
            self._failed[kind] += 1
            last = self._logged_at.get(kind)
            if last is not None and now - last < LOG_EVERY_S:
                self._unlogged[kind] += 1
                return
            more, self._unlogged[kind] = self._unlogged[kind], 0
            self._logged_at[kind] = now
        where = f"{peer[0]}:{peer[1]}" if peer else "an unknown peer"
        since = f"; {more} more since the last such line" if more else ""
        tail = f" (counted in stats as broker_{kind}; logged at most once per {LOG_EVERY_S:g} s{since})"
        if refused:
            # a client that tries and is turned away: a misconfigured agent, worth a warning
            log.warning("embedded broker refused the MQTT CONNECT from %s: %r%s", where, str(err)[:200], tail)
        else:
            # a TCP health check (`nc -z`) or a port scan: expected on a network, information only
            log.info(
                "embedded broker: a connection from %s ended without an MQTT CONNECT (%r)%s",
                where,
                str(err)[:200],
                tail,
            )

    def start(self, timeout_s: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"embedded broker did not start on {self.host}:{self.port} within {timeout_s:g}s")
        if self._error is not None:
            raise RuntimeError(
                f"embedded broker could not listen on {self.host}:{self.port}: {self._error}"
            ) from self._error
        log.info("embedded MQTT broker (amqtt) listening on %s:%d", self.host, self.port)

    def _run(self) -> None:
        # amqtt logs every packet at INFO; keep our log about our own work.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from amqtt.broker import Broker

        _enforce_keepalive()
        _count_failed_connects()
        _owner.broker = self

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            broker = Broker(
                {
                    "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                    # Waits keep_alive + this many seconds for a packet before dropping the client.
                    "timeout_disconnect_delay": self.keepalive_grace_s,
                    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
                }
            )
            try:
                await broker.start()
            except BaseException as e:  # port in use and the like: report to start()
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await self._stop.wait()
            await broker.shutdown()

        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
