"""The fast path for SNMP v1/v2c: ``BerTransport`` sends GET/GETNEXT/GETBULK PDUs, encoded by our lean
BER codec (ber.py), over one shared asyncio UDP socket per event loop; ``FastSession`` is the shared
``Session`` logic over it. v3 and traps stay on pysnmp; this covers the hot, high-volume case."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import random
import socket
from collections.abc import Sequence
from typing import cast

from probes.snmp.adapt import Adaptive
from probes.snmp.ber import (
    GET,
    GETBULK,
    GETNEXT,
    RESPONSE,
    SET,
    VERSIONS,
    BerError,
    Message,
    decode_message,
    encode_message,
)
from probes.snmp.session import PduKind, Response, Session, SnmpError, SnmpTimeout, TypedValue, retries_text

# --- transport: one UDP socket per event loop and address family, shared by every session ------

#: requests on the wire at once per shared socket; more wait their turn
MAX_IN_FLIGHT = 256


class _Pending:
    __slots__ = ("future", "addr", "community")

    def __init__(self, addr: tuple[str, int], community: bytes) -> None:
        self.future: asyncio.Future[Message | None] | None = None
        self.addr = addr
        self.community = community


class _Shared(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, family: int) -> None:
        self.loop = loop
        self.family = family
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, _Pending] = {}
        self.users = 0
        self.sem = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.ready: asyncio.Task[None] | None = None
        # Request ids from a random start so a restarted process does not accept stale replies.
        self._ids = itertools.count(random.randrange(1, 2**30))
        #: replies that did not decode / matched no request (late, spoofed, wrong community)
        self.malformed = 0
        self.unmatched = 0

    async def open(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            # Bursts of GETBULK replies from many devices at once must not overflow the default buffer.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.bind(("::", 0) if self.family == socket.AF_INET6 else ("0.0.0.0", 0))
            sock.setblocking(False)
            await self.loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def next_id(self) -> int:
        while True:
            rid = next(self._ids) & 0x7FFFFFFF
            if rid and rid not in self.pending:
                return rid

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            msg = decode_message(data)
        except (BerError, IndexError, ValueError):
            self.malformed += 1  # a device's garbage never reaches the caller, nor stops the socket
            return
        p = self.pending.get(msg.request_id)
        if (
            p is None
            or (addr[0], addr[1]) != p.addr
            or msg.community != p.community
            or msg.pdu_tag != RESPONSE
            or p.future is None
            or p.future.done()
        ):
            self.unmatched += 1
            return
        p.future.set_result(msg)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors: the request simply times out and is retried

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.transport = None


_SHARED: dict[tuple[int, int], _Shared] = {}


async def _acquire(family: int) -> _Shared:
    loop = asyncio.get_running_loop()
    key = (id(loop), family)
    shared = _SHARED.get(key)
    if shared is None or shared.loop is not loop:
        shared = _Shared(loop, family)
        _SHARED[key] = shared
        shared.ready = loop.create_task(shared.open())
    shared.users += 1
    try:
        assert shared.ready is not None
        await asyncio.shield(shared.ready)
    except BaseException:
        _release(shared)
        raise
    return shared


def _release(shared: _Shared) -> None:
    shared.users -= 1
    if shared.users <= 0:
        shared.close()
        key = (id(shared.loop), shared.family)
        if _SHARED.get(key) is shared:
            del _SHARED[key]


def transport_stats() -> dict[str, int]:
    """Replies dropped by the shared sockets of this process: ``malformed`` and ``unmatched``."""
    return {
        "malformed": sum(s.malformed for s in _SHARED.values()),
        "unmatched": sum(s.unmatched for s in _SHARED.values()),
    }


def _expire(fut: asyncio.Future[Message | None]) -> None:
    if not fut.done():
        fut.set_result(None)


_PDU_OF_KIND: dict[PduKind, int] = {"get": GET, "next": GETNEXT, "bulk": GETBULK, "set": SET}


class BerTransport:
    """One v1/v2c agent through the shared socket: one request PDU out, its Response back."""

    def __init__(
        self,
        host: str,
        port: int,
        community: str,
        *,
        version: str = "2c",
        timeout_s: float = 2.0,
        retries: int = 1,
        adaptive: Adaptive | None = None,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"the fast path speaks SNMP v1 and v2c, not {version!r}")
        self.host = host.strip("[]")
        self.port = port
        self.version = version
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        #: when set, each attempt waits its RTO (derived from the measured round trips) and reports
        #: answers and timeouts to it; otherwise every attempt waits ``timeout_s``
        self.adaptive = adaptive
        self._version = VERSIONS[version]
        self._community = community.encode()
        self._addr: tuple[str, int] | None = None
        self._family = socket.AF_INET
        self._shared: _Shared | None = None
        self._closed = False

    def __repr__(self) -> str:  # the community stays out of logs and tracebacks
        return f"BerTransport({self.where}, v{self.version})"

    @property
    def where(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def _open(self) -> _Shared:
        if self._closed:
            raise SnmpError(f"{self.where}: session is closed")
        if self._addr is None:
            try:
                ip = ipaddress.ip_address(self.host)
            except ValueError:
                try:
                    infos = await asyncio.get_running_loop().getaddrinfo(
                        self.host, self.port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP
                    )
                    ip = ipaddress.ip_address(infos[0][4][0])
                except (OSError, IndexError, ValueError) as e:
                    raise SnmpError(f"{self.where}: cannot resolve {self.host}: {e} — check the host name") from None
            self._addr = (str(ip), self.port)
            self._family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if self._shared is None:
            self._shared = await _acquire(self._family)
        return self._shared

    async def request(
        self, kind: PduKind, oids: Sequence[str], max_repetitions: int = 0, values: Sequence[TypedValue] = ()
    ) -> Response:
        if kind == "set" and len(values) != len(oids):
            raise ValueError(f"a SET needs one value per OID ({len(oids)} OIDs, {len(values)} values)")
        shared = await self._open()
        assert self._addr is not None
        rid = shared.next_id()
        data = encode_message(
            self._version,
            self._community,
            _PDU_OF_KIND[kind],
            rid,
            0,
            max_repetitions if kind == "bulk" else 0,  # GETBULK: non-repeaters, max-repetitions
            [(o, *values[i]) for i, o in enumerate(oids)] if kind == "set" else [(o, "Null", None) for o in oids],
        )
        pend = _Pending(self._addr, self._community)
        loop = shared.loop
        async with shared.sem:
            shared.pending[rid] = pend
            try:
                # The same message (and request id) on every retry: a late answer to an earlier try counts.
                adaptive = self.adaptive
                waited = self.timeout_s
                sent = loop.time()
                for attempt in range(self.retries + 1):
                    fut: asyncio.Future[Message | None] = loop.create_future()
                    pend.future = fut
                    if shared.transport is None:
                        raise SnmpError(f"{self.where}: socket closed")
                    epoch = adaptive.epoch if adaptive is not None else 0
                    waited = adaptive.rto_s if adaptive is not None else self.timeout_s
                    shared.transport.sendto(data, self._addr)
                    handle = loop.call_later(waited, _expire, fut)
                    try:
                        reply = await fut
                    finally:
                        handle.cancel()
                    if reply is not None:
                        if adaptive is not None:
                            adaptive.answered(loop.time() - sent, retransmitted=attempt > 0)
                        return Response(reply.error_status, reply.error_index, reply.varbinds)
                    if adaptive is not None:
                        adaptive.timed_out(epoch, bulk_reps=max_repetitions if kind == "bulk" else 0)
            finally:
                del shared.pending[rid]
        raise SnmpTimeout(
            f"{self.where}: no response in {waited:.3g} s after {retries_text(self.retries)} "
            f"(SNMPv{self.version}) — check the address, that SNMP is enabled, the community and the device's SNMP ACL"
        )

    async def close(self) -> None:
        self._closed = True
        if self._shared is not None:
            _release(self._shared)
            self._shared = None


class FastSession(Session):
    """One v1/v2c agent, polled through the shared socket: the polling side's ``SnmpSession`` for
    the hot case. Same answers and errors as ``PysnmpSession`` for the same agent."""

    def __init__(
        self,
        host: str,
        port: int,
        community: str,
        *,
        version: str = "2c",
        timeout_s: float = 2.0,
        retries: int = 1,
        max_repetitions: int = 25,
        max_oids_per_get: int = 40,
        adaptive: Adaptive | None = None,
    ) -> None:
        transport = BerTransport(
            host, port, community, version=version, timeout_s=timeout_s, retries=retries, adaptive=adaptive
        )
        super().__init__(
            transport, max_repetitions=max_repetitions, max_oids_per_get=max_oids_per_get, adaptive=adaptive
        )
