"""The fast path for SNMP v1/v2c GET and GETBULK walks: our own lean BER codec over one shared asyncio
UDP socket per event loop. v3 and traps stay on pysnmp; this covers the hot, high-volume case."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

# The session interface's types and errors are defined once, beside the pysnmp path.
from probes.snmp.session import MAX_WALK_ROWS, SnmpError, SnmpTimeout, VarBind

__all__ = ["BerError", "FastSession", "SnmpError", "SnmpTimeout", "VarBind", "decode_message", "encode_message"]


class BerError(ValueError):
    """Bytes that are not a well-formed SNMP v1/v2c message."""


# --- tags -------------------------------------------------------------------------------------

INTEGER, OCTET_STRING, NULL, OBJECT_ID, SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, OPAQUE, COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x44, 0x46
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 0x80, 0x81, 0x82

GET, GETNEXT, RESPONSE, SET, GETBULK, INFORM, TRAP_V2, REPORT = 0xA0, 0xA1, 0xA2, 0xA3, 0xA5, 0xA6, 0xA7, 0xA8
#: PDUs shaped request-id / error-status / error-index / varbinds (the v1 Trap-PDU, 0xA4, is not)
_PDU_TAGS = frozenset({GET, GETNEXT, RESPONSE, SET, GETBULK, INFORM, TRAP_V2, REPORT})

TYPE_OF_TAG: dict[int, str] = {
    INTEGER: "Integer",
    OCTET_STRING: "OctetString",
    NULL: "Null",
    OBJECT_ID: "ObjectIdentifier",
    IP_ADDRESS: "IpAddress",
    COUNTER32: "Counter32",
    GAUGE32: "Gauge32",
    TIMETICKS: "TimeTicks",
    OPAQUE: "Opaque",
    COUNTER64: "Counter64",
    NO_SUCH_OBJECT: "NoSuchObject",
    NO_SUCH_INSTANCE: "NoSuchInstance",
    END_OF_MIB_VIEW: "EndOfMibView",
}
TAG_OF_TYPE: dict[str, int] = {v: k for k, v in TYPE_OF_TAG.items()}
_UNSIGNED_MAX = {COUNTER32: 2**32 - 1, GAUGE32: 2**32 - 1, TIMETICKS: 2**32 - 1, COUNTER64: 2**64 - 1}

ERROR_NAMES = (
    "noError",
    "tooBig",
    "noSuchName",
    "badValue",
    "readOnly",
    "genErr",
    "noAccess",
    "wrongType",
    "wrongLength",
    "wrongEncoding",
    "wrongValue",
    "noCreation",
    "inconsistentValue",
    "resourceUnavailable",
    "commitFailed",
    "undoFailed",
    "authorizationError",
    "notWritable",
    "inconsistentName",
)
TOO_BIG, NO_SUCH_NAME = 1, 2

VERSIONS = {"1": 0, "2c": 1}


# --- encoding ---------------------------------------------------------------------------------


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(content)) + content


def encode_int_content(v: int) -> bytes:
    # Shortest two's complement: one sign bit more than the magnitude needs.
    return v.to_bytes((v + (v < 0)).bit_length() // 8 + 1, "big", signed=True)


def parse_oid(oid: str | Sequence[int]) -> tuple[int, ...]:
    """``"1.3.6.1"`` or ``".1.3.6.1"`` (or a sequence of arcs) → arcs, checked for BER."""
    try:
        arcs = tuple(int(x) for x in oid.strip().strip(".").split(".")) if isinstance(oid, str) else tuple(oid)
    except ValueError:
        raise ValueError(f"{oid!r} is not a numeric OID (write it like 1.3.6.1.2.1.1.3.0)") from None
    if len(arcs) < 2 or arcs[0] not in (0, 1, 2) or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise ValueError(f"{oid!r} is not a valid OID: it needs at least two arcs, the first 0, 1 or 2")
    return arcs


def encode_oid_content(oid: str | Sequence[int]) -> bytes:
    arcs = parse_oid(oid)
    out = bytearray()
    for v in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        if v < 0x80:
            out.append(v)
            continue
        chunk = []
        while v:
            chunk.append((v & 0x7F) | 0x80)
            v >>= 7
        chunk[0] &= 0x7F
        out += bytes(reversed(chunk))
    return bytes(out)


def encode_value(type_name: str, value: object) -> bytes:
    """One value as a TLV; ``value`` as the decoder returns it (int, bytes, str or None)."""
    tag = TAG_OF_TYPE[type_name]
    if tag == INTEGER:
        assert isinstance(value, int) and -(2**31) <= value < 2**31, value
        return tlv(tag, encode_int_content(value))
    if tag in _UNSIGNED_MAX:
        assert isinstance(value, int) and 0 <= value <= _UNSIGNED_MAX[tag], value
        return tlv(tag, encode_int_content(value))
    if tag in (OCTET_STRING, OPAQUE):
        assert isinstance(value, bytes | bytearray), value
        return tlv(tag, bytes(value))
    if tag == OBJECT_ID:
        assert isinstance(value, str), value
        return tlv(tag, encode_oid_content(value))
    if tag == IP_ADDRESS:
        return tlv(tag, ipaddress.IPv4Address(str(value)).packed)
    return tlv(tag, b"")  # Null and the three exceptions carry no content


def encode_message(
    version: int,
    community: bytes,
    pdu_tag: int,
    request_id: int,
    error_status: int,
    error_index: int,
    varbinds: Sequence[tuple[str, str, object]],
) -> bytes:
    """A whole v1/v2c message. For GETBULK, error_status/error_index are non-repeaters/max-repetitions."""
    vbs = b"".join(tlv(SEQUENCE, tlv(OBJECT_ID, encode_oid_content(o)) + encode_value(t, v)) for o, t, v in varbinds)
    pdu = (
        tlv(INTEGER, encode_int_content(request_id))
        + tlv(INTEGER, encode_int_content(error_status))
        + tlv(INTEGER, encode_int_content(error_index))
        + tlv(SEQUENCE, vbs)
    )
    body = tlv(INTEGER, encode_int_content(version)) + tlv(OCTET_STRING, community) + tlv(pdu_tag, pdu)
    return tlv(SEQUENCE, body)


# --- decoding ---------------------------------------------------------------------------------

_SUB = tuple(str(i) for i in range(128))
_FIRST = tuple(f"0.{v}" if v < 40 else f"1.{v - 40}" if v < 80 else f"2.{v - 80}" for v in range(128))


#: OID prefix bytes → dotted text with a trailing dot. A walk returns column after column of OIDs
#: that differ only in their last arc, so the prefix is decoded once per column, not once per row.
_HEADS: dict[bytes, str] = {}
_HEADS_MAX = 65_536


def _decode_full(b: bytes) -> str:
    if b.isascii():  # every arc below 128: one byte each
        if len(b) == 1:
            return _FIRST[b[0]]
        return _FIRST[b[0]] + "." + ".".join([_SUB[c] for c in b[1:]])
    arcs: list[int] = []
    v = 0
    fresh = True
    for c in b:
        if fresh and c == 0x80:
            raise BerError("OID sub-identifier with a leading 0x80 (not minimal)")
        v = (v << 7) | (c & 0x7F)
        if c & 0x80:
            fresh = False
            continue
        arcs.append(v)
        v = 0
        fresh = True
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return ".".join(map(str, (*head, *arcs[1:])))


def decode_oid(b: bytes) -> str:
    """OID content bytes → dotted string."""
    if not b or b[-1] & 0x80:
        raise BerError("truncated or empty OID")
    i = len(b) - 1
    if i == 0:
        return _FIRST[b[0]]
    if b[i - 1] < 0x80:
        tail = _SUB[b[i]]
    else:  # the last arc takes several bytes: find where it starts
        while i > 0 and b[i - 1] & 0x80:
            i -= 1
        if i == 0 or b[i] == 0x80:
            return _decode_full(b)
        v = 0
        for c in b[i:]:
            v = (v << 7) | (c & 0x7F)
        tail = str(v)
    prefix = b[:i]
    head = _HEADS.get(prefix)
    if head is None:
        head = _decode_full(prefix) + "."
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[prefix] = head
    return head + tail


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the TLV at ``pos``, checked to fit before ``end``."""
    if pos + 2 > end:
        raise BerError("truncated")
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > end:
            raise BerError("bad length (indefinite, too long or truncated)")
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise BerError("length runs past the end")
    return tag, pos, pos + n


def _int(data: bytes, pos: int, end: int) -> tuple[int, int]:
    tag, s, e = _tlv(data, pos, end)
    if tag != INTEGER or s == e:
        raise BerError("expected an INTEGER")
    return int.from_bytes(data[s:e], "big", signed=True), e


@dataclass(slots=True)
class Message:
    version: int
    community: bytes
    pdu_tag: int
    request_id: int
    error_status: int
    error_index: int
    varbinds: list[VarBind]


def decode_message(data: bytes) -> Message:
    """A whole v1/v2c message (any PDU but the v1 Trap-PDU). Raises BerError on anything malformed."""
    end = len(data)
    tag, pos, mend = _tlv(data, 0, end)
    if tag != SEQUENCE or mend != end:
        raise BerError("not one SEQUENCE")
    version, pos = _int(data, pos, end)
    if version not in (0, 1):
        raise BerError(f"version {version} is not v1/v2c")
    tag, s, pos = _tlv(data, pos, end)
    if tag != OCTET_STRING:
        raise BerError("expected the community")
    community = data[s:pos]
    pdu_tag, pos, pend = _tlv(data, pos, end)
    if pdu_tag not in _PDU_TAGS or pend != end:
        raise BerError(f"unsupported PDU 0x{pdu_tag:02x}")
    request_id, pos = _int(data, pos, pend)
    error_status, pos = _int(data, pos, pend)
    error_index, pos = _int(data, pos, pend)
    tag, pos, vend = _tlv(data, pos, pend)
    if tag != SEQUENCE or vend != pend:
        raise BerError("expected the varbind list")
    return Message(version, community, pdu_tag, request_id, error_status, error_index, _varbinds(data, pos, vend))


def _varbinds(data: bytes, pos: int, end: int) -> list[VarBind]:
    # The hot loop: lengths are read inline (short form first) rather than through _tlv.
    out: list[VarBind] = []
    append = out.append
    from_bytes = int.from_bytes
    while pos < end:
        if data[pos] != SEQUENCE or pos + 2 > end:
            raise BerError("expected a varbind SEQUENCE")
        n = data[pos + 1]
        if n < 0x80:
            pos += 2
            vb_end = pos + n
        else:
            _, pos, vb_end = _tlv(data, pos, end)
        if vb_end > end or pos + 2 > vb_end or data[pos] != OBJECT_ID:
            raise BerError("expected the varbind's OID")
        n = data[pos + 1]
        if n < 0x80:
            s = pos + 2
            pos = s + n
        else:
            _, s, pos = _tlv(data, pos, vb_end)
        if pos + 2 > vb_end:
            raise BerError("varbind without a value")
        oid = decode_oid(data[s:pos])
        tag = data[pos]
        n = data[pos + 1]
        if n < 0x80:
            s = pos + 2
            pos = s + n
        else:
            tag, s, pos = _tlv(data, pos, vb_end)
        if pos != vb_end:
            raise BerError("varbind length does not match its parts")
        if tag == OCTET_STRING:
            append((oid, "OctetString", data[s:pos]))
        elif tag == INTEGER:
            if s == pos:
                raise BerError("empty INTEGER")
            append((oid, "Integer", from_bytes(data[s:pos], "big", signed=True)))
        elif COUNTER32 <= tag <= TIMETICKS or tag == COUNTER64:
            if s == pos:
                raise BerError("empty unsigned value")
            append((oid, TYPE_OF_TAG[tag], from_bytes(data[s:pos], "big")))
        elif tag == OBJECT_ID:
            append((oid, "ObjectIdentifier", decode_oid(data[s:pos])))
        elif tag == IP_ADDRESS:
            if pos - s != 4:
                raise BerError("IpAddress is not 4 bytes")
            append((oid, "IpAddress", "%d.%d.%d.%d" % tuple(data[s:pos])))  # noqa: UP031 - fastest here
        elif tag == OPAQUE:
            append((oid, "Opaque", data[s:pos]))
        elif tag == NULL or tag in (NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
            if s != pos:
                raise BerError("NULL-like value with content")
            append((oid, TYPE_OF_TAG[tag], None))
        else:
            raise BerError(f"unknown value type 0x{tag:02x}")
    return out


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


def _retries(n: int) -> str:
    return "1 retry" if n == 1 else f"{n} retries"


class FastSession:
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
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"the fast path speaks SNMP v1 and v2c, not {version!r}")
        self.host = host.strip("[]")
        self.port = port
        self.version = version
        self.timeout_s = timeout_s
        self.retries = max(0, retries)
        self.max_repetitions = max(1, max_repetitions)
        self.max_oids_per_get = max(1, max_oids_per_get)
        self._version = VERSIONS[version]
        self._community = community.encode()
        self._addr: tuple[str, int] | None = None
        self._family = socket.AF_INET
        self._shared: _Shared | None = None
        self._closed = False

    def __repr__(self) -> str:  # the community stays out of logs and tracebacks
        return f"FastSession({self.where}, v{self.version})"

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

    async def _request(self, pdu_tag: int, oids: Sequence[str], a: int = 0, b: int = 0) -> Message:
        shared = await self._open()
        assert self._addr is not None
        rid = shared.next_id()
        data = encode_message(self._version, self._community, pdu_tag, rid, a, b, [(o, "Null", None) for o in oids])
        pend = _Pending(self._addr, self._community)
        loop = shared.loop
        async with shared.sem:
            shared.pending[rid] = pend
            try:
                # The same message (and request id) on every retry: a late answer to an earlier try counts.
                for _ in range(self.retries + 1):
                    fut: asyncio.Future[Message | None] = loop.create_future()
                    pend.future = fut
                    if shared.transport is None:
                        raise SnmpError(f"{self.where}: socket closed")
                    shared.transport.sendto(data, self._addr)
                    handle = loop.call_later(self.timeout_s, _expire, fut)
                    try:
                        reply = await fut
                    finally:
                        handle.cancel()
                    if reply is not None:
                        return reply
            finally:
                del shared.pending[rid]
        raise SnmpTimeout(
            f"{self.where}: no response in {self.timeout_s:g} s after {_retries(self.retries)} "
            f"(SNMPv{self.version}) — check the address, that SNMP is enabled, the community and the device's SNMP ACL"
        )

    def _error(self, msg: Message, what: str, oids: Sequence[str]) -> SnmpError:
        st, i = msg.error_status, msg.error_index
        name = ERROR_NAMES[st] if 0 <= st < len(ERROR_NAMES) else f"error {st}"
        at = f" at {oids[i - 1]}" if 1 <= i <= len(oids) else ""
        hint = " — the view for this community may not include it" if st in (6, 16) else ""
        return SnmpError(f"{self.where}: {what} answered {name}{at}{hint}")

    async def get(self, oids: Sequence[str]) -> list[VarBind]:
        """One VarBind per OID, in the order asked; missing ones typed NoSuchObject/NoSuchInstance."""
        oids = [o.strip().strip(".") for o in oids]
        per = self.max_oids_per_get
        out: list[VarBind] = []
        for i in range(0, len(oids), per):
            out += await self._get_chunk(oids[i : i + per])
        return out

    async def _get_chunk(self, oids: list[str]) -> list[VarBind]:
        msg = await self._request(GET, oids)
        if msg.error_status == TOO_BIG and len(oids) > 1:
            half = len(oids) // 2  # the answer does not fit one packet: ask in halves
            return [*await self._get_chunk(oids[:half]), *await self._get_chunk(oids[half:])]
        if msg.error_status == NO_SUCH_NAME and self._version == 0 and 1 <= msg.error_index <= len(oids):
            # v1 fails the whole GET for one missing OID: drop it and ask again, like v2c answers.
            i = msg.error_index - 1
            rest = await self._get_chunk(oids[:i] + oids[i + 1 :]) if len(oids) > 1 else []
            return [*rest[:i], (oids[i], "NoSuchObject", None), *rest[i:]]
        if msg.error_status:
            raise self._error(msg, "GET", oids)
        if len(msg.varbinds) != len(oids):
            raise SnmpError(f"{self.where}: GET of {len(oids)} OIDs answered {len(msg.varbinds)} values")
        return msg.varbinds

    async def walk(self, base_oid: str, *, max_repetitions: int | None = None) -> list[VarBind]:
        """Every VarBind under ``base_oid``, in the agent's order: GETBULK for v2c, GETNEXT for v1.
        Stops at the subtree's end, EndOfMibView, or an OID seen before (an agent that loops)."""
        base = ".".join(map(str, parse_oid(base_oid)))
        prefix = base + "."
        reps = max(1, max_repetitions or self.max_repetitions)
        out: list[VarBind] = []
        append = out.append
        seen: set[str] = set()
        last = base
        while len(out) < MAX_WALK_ROWS:
            if self._version == 0:
                msg = await self._request(GETNEXT, [last])
            else:
                msg = await self._request(GETBULK, [last], 0, reps)
            if msg.error_status:
                if msg.error_status == NO_SUCH_NAME and self._version == 0:
                    return out  # v1's way of saying "end of the MIB"
                if msg.error_status == TOO_BIG and reps > 1:
                    reps = max(1, reps // 2)
                    continue
                raise self._error(msg, "GETBULK" if self._version else "GETNEXT", [last])
            if not msg.varbinds:
                return out
            for vb in msg.varbinds:
                oid = vb[0]
                # Rows out of order are followed (the order is the agent's); one seen before means
                # the agent loops: stop there, as the pysnmp path does.
                if vb[1] == "EndOfMibView" or not oid.startswith(prefix) or oid in seen:
                    return out
                seen.add(oid)
                append(vb)
            last = out[-1][0]
        raise SnmpError(f"{self.where}: walk of {base} passed {MAX_WALK_ROWS} rows — the agent seems to loop")

    async def close(self) -> None:
        self._closed = True
        if self._shared is not None:
            _release(self._shared)
            self._shared = None

    async def __aenter__(self) -> FastSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
