"""The SNMP session the poller talks to: ``SnmpSession`` (get, walk, close), its errors, the plain
``VarBind``, and ``Session`` — the request logic every transport shares (GET splitting, tooBig halving,
the v1 noSuchName retry, the walk loop) over a ``Transport`` that only sends one PDU and returns what
came back. Transports: the BER fast path (fastwalk.py) and pysnmp (pysnmp_session.py); connect.py picks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from probes.snmp.adapt import Adaptive, Gate

VarBind = tuple[str, str, object]
"""(OID dotted, no leading dot; type name; value).

Type names: Integer, OctetString, ObjectIdentifier, IpAddress, Counter32, Gauge32, TimeTicks,
Opaque, Counter64, Null, NoSuchObject, NoSuchInstance, EndOfMibView. Values: int for the numeric
types, bytes for OctetString and Opaque, str for ObjectIdentifier and IpAddress, None otherwise."""

#: Types that carry no value: the OID is absent at the agent (or the walk ran off its end).
MISSING_TYPES = frozenset({"Null", "NoSuchObject", "NoSuchInstance", "EndOfMibView"})
#: A walk that returns more than this is cut off as an agent that loops (bounds every loop).
MAX_WALK_ROWS = 200_000

#: error-status values, RFC 3416 §3
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
NO_ACCESS, AUTHORIZATION_ERROR = 6, 16


class SnmpError(Exception):
    """A request that failed: what, where, and what to do. ``str()`` is the operator's message."""


class SnmpTimeout(SnmpError):
    """No answer within the timeout after every retry (for v1/v2c also what a wrong community
    looks like: agents drop such requests silently)."""


class SnmpAuthError(SnmpError):
    """The agent refused the credentials: unknown v3 user, wrong auth or priv key or protocol."""


def parse_oid(oid: str | Sequence[int]) -> tuple[int, ...]:
    """``"1.3.6.1"`` or ``".1.3.6.1"`` (or a sequence of arcs) → arcs, checked for BER."""
    try:
        arcs = tuple(int(x) for x in oid.strip().strip(".").split(".")) if isinstance(oid, str) else tuple(oid)
    except ValueError:
        raise ValueError(f"{oid!r} is not a numeric OID (write it like 1.3.6.1.2.1.1.3.0)") from None
    if len(arcs) < 2 or arcs[0] not in (0, 1, 2) or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise ValueError(f"{oid!r} is not a valid OID: it needs at least two arcs, the first 0, 1 or 2")
    return arcs


def parse_oid_text(oid: str) -> str:
    """``".1.3.6.1"`` -> ``"1.3.6.1"``, checked by :func:`parse_oid`."""
    return ".".join(map(str, parse_oid(oid)))


def retries_text(n: int) -> str:
    return "1 retry" if n == 1 else f"{n} retries"


@runtime_checkable
class SnmpSession(Protocol):
    """One device. Implementation: ``Session`` over either transport; tests use in-memory fakes."""

    async def get(self, oids: Sequence[str]) -> list[VarBind]:
        """One VarBind per OID, in the order asked; absent ones typed NoSuchObject/NoSuchInstance.
        Splits into as many requests as the agent needs (tooBig, v1 noSuchName)."""
        ...

    async def walk(self, base_oid: str, *, max_repetitions: int) -> list[VarBind]:
        """Every VarBind in the subtree under ``base_oid``, in the agent's order (GETBULK, or
        GETNEXT for v1). Stops at the subtree's end, EndOfMibView, or an OID seen before."""
        ...

    async def close(self) -> None: ...


# ---------------------------------------------------------------------- one PDU over a transport

PduKind = Literal["get", "next", "bulk", "set"]


#: a value to SET: (VarBind type name, value), e.g. ("Integer", 2)
TypedValue = tuple[str, object]


class Response(NamedTuple):
    """What a Response-PDU said: error-status, error-index (1-based, 0 for none) and the varbinds."""

    error_status: int
    error_index: int
    varbinds: list[VarBind]


class Transport(Protocol):
    """Sends one request PDU to one device and returns the agent's response. Timeouts, retries and
    credential failures are the transport's (raised as SnmpTimeout / SnmpAuthError); what the
    response means is ``Session``'s."""

    @property
    def version(self) -> str:
        """The SNMP version spoken: "1", "2c" or "3"."""
        ...

    @property
    def where(self) -> str:
        """host:port, for messages."""
        ...

    async def request(
        self, kind: PduKind, oids: Sequence[str], max_repetitions: int = 0, values: Sequence[TypedValue] = ()
    ) -> Response:
        """One GET, GETNEXT or GETBULK (non-repeaters 0) of ``oids``, sent as given; for a SET,
        ``values`` holds one (type name, value) per OID, as VarBind types and values are written."""
        ...

    async def close(self) -> None: ...


class Session:
    """One device over a ``Transport``: the request logic of SNMP itself, the same whichever
    transport carries it."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_repetitions: int = 25,
        max_oids_per_get: int = 40,
        adaptive: Adaptive | None = None,
    ) -> None:
        self.transport = transport
        self.max_repetitions = max(1, max_repetitions)
        self.max_oids_per_get = max(1, max_oids_per_get)
        #: the device's pacing (shared with the transport, which measures the round trips); without
        #: one, requests go out as configured
        self.adaptive = adaptive
        self._gate = Gate(adaptive.in_flight_now) if adaptive is not None else None

    async def _request(
        self, kind: PduKind, oids: Sequence[str], max_repetitions: int = 0, values: Sequence[TypedValue] = ()
    ) -> Response:
        """One request, waiting for a free slot when the device is paced to fewer in flight."""
        if self._gate is None:
            return await self.transport.request(kind, oids, max_repetitions, values)
        async with self._gate:
            return await self.transport.request(kind, oids, max_repetitions, values)

    def __repr__(self) -> str:  # credentials stay out of logs and tracebacks
        return f"{type(self).__name__}({self.where}, v{self.version})"

    @property
    def where(self) -> str:
        return self.transport.where

    @property
    def version(self) -> str:
        return self.transport.version

    def _pdu_error(self, what: str, status: int, index: int, oids: Sequence[str]) -> SnmpError:
        name = ERROR_NAMES[status] if 0 <= status < len(ERROR_NAMES) else f"error {status}"
        at = f" at {oids[index - 1]}" if 1 <= index <= len(oids) else ""
        who = "these credentials" if self.version == "3" else "this community"
        hint = f" — the view for {who} may not include it" if status in (NO_ACCESS, AUTHORIZATION_ERROR) else ""
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
        status, index, vbs = await self._request("get", oids)
        if status == TOO_BIG and len(oids) > 1:
            half = len(oids) // 2  # the answer does not fit one packet: ask in halves
            return [*await self._get_chunk(oids[:half]), *await self._get_chunk(oids[half:])]
        if status == NO_SUCH_NAME and self.version == "1" and 1 <= index <= len(oids):
            # v1 fails the whole GET for one missing OID: drop it and ask again, like v2c answers.
            i = index - 1
            rest = await self._get_chunk(oids[:i] + oids[i + 1 :]) if len(oids) > 1 else []
            return [*rest[:i], (oids[i], "NoSuchObject", None), *rest[i:]]
        if status:
            raise self._pdu_error("GET", status, index, oids)
        if len(vbs) != len(oids):
            raise SnmpError(f"{self.where}: GET of {len(oids)} OIDs answered {len(vbs)} values")
        return vbs

    async def set(self, varbinds: Sequence[VarBind]) -> list[VarBind]:
        """One SET of all ``varbinds`` at once (the agent applies all or none); returns what the
        agent answered. An error-status (notWritable, wrongValue, noAccess...) raises SnmpError
        naming the OID."""
        oids = [parse_oid_text(oid) for oid, _, _ in varbinds]
        status, index, vbs = await self._request("set", oids, values=[(t, v) for _, t, v in varbinds])
        if status:
            raise self._pdu_error("SET", status, index, oids)
        return vbs

    async def walk(self, base_oid: str, *, max_repetitions: int | None = None) -> list[VarBind]:
        """Every VarBind under ``base_oid``, in the agent's order: GETBULK, or GETNEXT for v1.
        Stops at the subtree's end, EndOfMibView, or an OID seen before (an agent that loops)."""
        base = ".".join(map(str, parse_oid(base_oid)))
        prefix = base + "."
        reps = max(1, max_repetitions or self.max_repetitions)
        if self.adaptive is not None:  # what this device answered well so far
            reps = min(reps, self.adaptive.max_repetitions)
        v1 = self.version == "1"
        request = self._request
        out: list[VarBind] = []
        append = out.append
        seen: set[str] = set()
        last = base
        while len(out) < MAX_WALK_ROWS:
            status, index, vbs = await (request("next", [last]) if v1 else request("bulk", [last], reps))
            if status:
                if v1 and status == NO_SUCH_NAME:
                    return out  # v1's way of saying "end of the MIB"
                if status == TOO_BIG and reps > 1:
                    if self.adaptive is not None:
                        self.adaptive.too_big(reps)  # remembered for the next walks and polls
                    reps = max(1, reps // 2)
                    continue
                raise self._pdu_error("GETNEXT" if v1 else "GETBULK", status, index, [last])
            if not vbs:
                return out
            for vb in vbs:
                oid = vb[0]
                # Rows out of order are followed (the order is the agent's); one seen before means
                # the agent loops: stop there.
                if vb[1] == "EndOfMibView" or not oid.startswith(prefix) or oid in seen:
                    return out
                seen.add(oid)
                append(vb)
            last = out[-1][0]
        raise SnmpError(f"{self.where}: walk of {base} passed {MAX_WALK_ROWS} rows — the agent seems to loop")

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
