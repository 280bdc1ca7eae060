"""The embedded MQTT broker (amqtt) for a collector with no external broker: loopback only,
for the demo and for a single small site. Production uses Mosquitto or EMQX with TLS."""

from __future__ import annotations

import asyncio
import logging
import threading

log = logging.getLogger("netwatch.collector.broker")


#: Seconds past a client's keep-alive before it is dropped and its Last Will published. MQTT
#: asks for 1.5 × keep-alive; paho pings at keep-alive (+ up to 1 s), so half the agents' default
#: 30 s leaves room for a late ping.
KEEPALIVE_GRACE_S = 15

_patched = False


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
