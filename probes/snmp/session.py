"""The SNMP transport interface the poller talks to (``SnmpSession``: get, walk, close), its errors,
and ``PysnmpSession`` — every version on pysnmp 7, one engine per event loop. ``open_session`` is
the one place that picks the transport for a device."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from probes.snmp.config import SnmpConfig

VarBind = tuple[str, str, object]
"""(OID dotted, no leading dot; type name; value).

Type names: Integer, OctetString, ObjectIdentifier, IpAddress, Counter32, Gauge32, TimeTicks,
Opaque, Counter64, Null, NoSuchObject, NoSuchInstance, EndOfMibView. Values: int for the numeric
types, bytes for OctetString and Opaque, str for ObjectIdentifier and IpAddress, None otherwise."""

#: Types that carry no value: the OID is absent at the agent (or the walk ran off its end).
MISSING_TYPES = frozenset({"Null", "NoSuchObject", "NoSuchInstance", "EndOfMibView"})
#: A walk that returns more than this is cut off as an agent that loops (bounds every loop).
MAX_WALK_ROWS = 200_000


class SnmpError(Exception):
    """A request that failed: what, where, and what to do. ``str()`` is the operator's message."""


class SnmpTimeout(SnmpError):
    """No answer within the timeout after every retry (for v1/v2c also what a wrong community
    looks like: agents drop such requests silently)."""


class SnmpAuthError(SnmpError):
    """The agent refused the credentials: unknown v3 user, wrong auth or priv key or protocol."""


@runtime_checkable
class SnmpSession(Protocol):
    """One device. Implementations: ``PysnmpSession`` (all versions) and the v1/v2c fast path."""

    async def get(self, oids: Sequence[str]) -> list[VarBind]:
        """One VarBind per OID, in the order asked; absent ones typed NoSuchObject/NoSuchInstance.
        Splits into as many requests as the agent needs (tooBig, v1 noSuchName)."""
        ...

    async def walk(self, base_oid: str, *, max_repetitions: int) -> list[VarBind]:
        """Every VarBind in the subtree under ``base_oid``, in the agent's order (GETBULK, or
        GETNEXT for v1). Stops at the subtree's end, EndOfMibView, or an OID seen before."""
        ...

    async def close(self) -> None: ...


def open_session(cfg: SnmpConfig) -> SnmpSession:
    """The transport for this device: v1/v2c on our own lean BER path (fastwalk.py — about 20×
    less CPU per varbind than pysnmp, see bench/snmp), v3 on pysnmp."""
    if cfg.version in ("1", "2c"):
        from probes.snmp.config import SecretMissing
        from probes.snmp.fastwalk import FastSession  # imports this module: import here

        try:
            community = cfg.community_value()
        except SecretMissing as e:
            raise SnmpAuthError(f"{cfg.address}: {e} — fix the secret source in the config") from None
        return FastSession(cfg.host, cfg.port, community, version=cfg.version, timeout_s=cfg.request_timeout,
                           retries=cfg.retries, max_repetitions=cfg.max_repetitions,
                           max_oids_per_get=cfg.max_oids_per_get)
    return PysnmpSession(cfg)


def oid_tuple(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.strip().strip(".").split("."))


def in_subtree(oid: str, base: str) -> bool:
    return oid.startswith(base + ".")


# ------------------------------------------------------------------------------------- pysnmp


def _type_names() -> dict[Any, str]:
    from pyasn1.type import univ
    from pysnmp.proto import rfc1902, rfc1905

    pairs = [
        (rfc1902.Integer32, "Integer"),
        (rfc1902.OctetString, "OctetString"),
        (rfc1902.ObjectIdentifier, "ObjectIdentifier"),
        (rfc1902.IpAddress, "IpAddress"),
        (rfc1902.Counter32, "Counter32"),
        (rfc1902.Gauge32, "Gauge32"),
        (rfc1902.TimeTicks, "TimeTicks"),
        (rfc1902.Opaque, "Opaque"),
        (rfc1902.Counter64, "Counter64"),
        (univ.Null, "Null"),
        (rfc1905.NoSuchObject, "NoSuchObject"),
        (rfc1905.NoSuchInstance, "NoSuchInstance"),
        (rfc1905.EndOfMibView, "EndOfMibView"),
    ]
    return {cls.tagSet: name for cls, name in pairs}


_TYPES: dict[Any, str] = {}
_NUMERIC = frozenset({"Integer", "Counter32", "Gauge32", "TimeTicks", "Counter64"})


def to_varbind(name: Any, value: Any) -> VarBind:
    """A pysnmp (ObjectName, value) pair as a plain VarBind."""
    if not _TYPES:
        _TYPES.update(_type_names())
    oid = str(name)
    kind = _TYPES.get(value.tagSet)
    if kind is None:  # an application type we do not model (e.g. NsapAddress): keep its bytes
        return oid, "Opaque", bytes(value.asOctets()) if hasattr(value, "asOctets") else None
    if kind in _NUMERIC:
        return oid, kind, int(value)
    if kind in ("OctetString", "Opaque"):
        return oid, kind, bytes(value.asOctets())
    if kind == "ObjectIdentifier":
        return oid, kind, str(value)
    if kind == "IpAddress":
        return oid, kind, ".".join(str(b) for b in value.asNumbers())
    return oid, kind, None


@dataclass(slots=True)
class _Engine:
    """A pysnmp engine bound to one event loop, shared by every session on it."""

    engine: Any
    #: v3 user name -> the credentials it was registered with (USM holds one entry per name)
    users: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    refs: int = 0


# loop -> credentials key -> engine. Key ``None`` is the shared engine; a v3 user name that is
# already registered there with other keys gets an engine of its own (USM keeps one entry per
# user name per engine, so two devices with the same user and different passwords cannot share).
_ENGINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, _Engine]] = weakref.WeakKeyDictionary()


def engines_open() -> int:
    """Engines alive on the running loop (tests check that sessions share one)."""
    return len(_ENGINES.get(asyncio.get_running_loop(), {}))


def _acquire_engine(user: str | None, creds: tuple[Any, ...] | None) -> tuple[Any, _Engine]:
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

    per_loop = _ENGINES.setdefault(asyncio.get_running_loop(), {})
    key: Any = None
    shared = per_loop.get(None)
    if user is not None and shared is not None and shared.users.get(user, creds) != creds:
        key = ("v3", user, creds)
    slot = per_loop.get(key)
    if slot is None:
        slot = per_loop[key] = _Engine(SnmpEngine())
    if user is not None:
        slot.users[user] = creds
    slot.refs += 1
    return key, slot


def _release_engine(loop: asyncio.AbstractEventLoop, key: Any) -> None:
    per_loop = _ENGINES.get(loop)
    slot = per_loop.get(key) if per_loop else None
    if slot is None or per_loop is None:
        return
    slot.refs -= 1
    if slot.refs <= 0:
        del per_loop[key]
        with contextlib.suppress(Exception):  # closing must not mask the caller's own error
            slot.engine.close_dispatcher()


def _auth_protocols() -> tuple[dict[str, Any], dict[str, Any]]:
    from pysnmp.hlapi.v3arch.asyncio import auth

    authp = {
        "MD5": auth.usmHMACMD5AuthProtocol,
        "SHA": auth.usmHMACSHAAuthProtocol,
        "SHA-224": auth.usmHMAC128SHA224AuthProtocol,
        "SHA-256": auth.usmHMAC192SHA256AuthProtocol,
        "SHA-384": auth.usmHMAC256SHA384AuthProtocol,
        "SHA-512": auth.usmHMAC384SHA512AuthProtocol,
    }
    privp = {
        "DES": auth.usmDESPrivProtocol,
        "AES": auth.usmAesCfb128Protocol,
        "AES-128": auth.usmAesCfb128Protocol,
        "AES-192": auth.usmAesBlumenthalCfb192Protocol,
        "AES-256": auth.usmAesBlumenthalCfb256Protocol,
        "AES-192-C": auth.usmAesCfb192Protocol,
        "AES-256-C": auth.usmAesCfb256Protocol,
    }
    return authp, privp


def _retries(n: int) -> str:
    return "1 retry" if n == 1 else f"{n} retries"


class PysnmpSession:
    """One device over pysnmp 7, any version. Requests go out on the loop's shared engine and
    socket; a slow device only holds its own requests. Credentials are read when the session
    first talks to the device, and never appear in ``repr`` or messages."""

    def __init__(self, cfg: SnmpConfig) -> None:
        self.cfg = cfg
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slot: _Engine | None = None
        self._key: Any = None
        self._addr_name: str | None = None
        self._setup_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PysnmpSession({self.cfg.address}, v{self.cfg.version})"

    @property
    def where(self) -> str:
        return self.cfg.address

    # -- setup ---------------------------------------------------------------------------------

    async def _ready(self) -> str:
        if self._addr_name is not None:
            return self._addr_name
        async with self._setup_lock:
            if self._addr_name is None:
                if self._closed:
                    raise SnmpError(f"{self.where}: session is closed")
                self._addr_name = await self._setup()
        return self._addr_name

    async def _setup(self) -> str:
        from pysnmp.hlapi.v3arch.asyncio import (
            CommunityData,
            Udp6TransportTarget,
            UdpTransportTarget,
            UsmUserData,
        )
        from pysnmp.hlapi.v3arch.asyncio.lcd import CommandGeneratorLcdConfigurator

        from probes.snmp.config import SecretMissing

        cfg = self.cfg
        try:
            if cfg.version == "3":
                authp, privp = _auth_protocols()
                auth_key, priv_key = cfg.auth_key_value(), cfg.priv_key_value()
                creds: tuple[Any, ...] | None = (cfg.auth_proto, auth_key, cfg.priv_proto, priv_key)
                user: str | None = cfg.user
                auth_data: Any = UsmUserData(
                    cfg.user,
                    authKey=auth_key,
                    privKey=priv_key,
                    authProtocol=authp[cfg.auth_proto] if cfg.auth_proto else None,
                    privProtocol=privp[cfg.priv_proto] if cfg.priv_proto else None,
                )
            else:
                creds, user = None, None
                auth_data = CommunityData(cfg.community_value(), mpModel=0 if cfg.version == "1" else 1)
        except SecretMissing as e:
            raise SnmpAuthError(f"{self.where}: {e} — fix the secret source in the config") from None
        try:
            six = ipaddress.ip_address(cfg.host).version == 6
        except ValueError:
            six = False
        target_cls = Udp6TransportTarget if six else UdpTransportTarget
        try:
            target = await target_cls.create((cfg.host, cfg.port), timeout=cfg.request_timeout, retries=cfg.retries)
        except Exception as e:  # noqa: BLE001 - pysnmp wraps resolver errors in its own types
            raise SnmpError(f"{self.where}: cannot resolve {cfg.host}: {e} — check the host name") from None
        self._loop = asyncio.get_running_loop()
        self._key, self._slot = _acquire_engine(user, creds)
        addr_name, _ = CommandGeneratorLcdConfigurator().configure(
            self._slot.engine, auth_data, target, cfg.context.encode()
        )
        return str(addr_name)

    async def close(self) -> None:
        self._closed = True
        if self._slot is not None and self._loop is not None:
            _release_engine(self._loop, self._key)
        self._slot = None
        self._addr_name = None

    # -- requests ------------------------------------------------------------------------------

    async def _send(self, kind: str, oids: Sequence[str], max_repetitions: int = 0) -> tuple[int, int, list[Any]]:
        """One request (``get``, ``next`` or ``bulk``) -> (error-status, error-index, varbinds).
        OIDs go out as they are, with no MIB lookup either way."""
        from pyasn1.type import univ
        from pysnmp.entity.rfc3413 import cmdgen
        from pysnmp.proto import rfc1902

        addr_name = await self._ready()
        assert self._slot is not None
        engine = self._slot.engine
        fut: asyncio.Future[tuple[Any, int, int, list[Any]]] = asyncio.get_running_loop().create_future()

        def done(
            _engine: Any, _handle: Any, err_ind: Any, err_status: Any, err_index: Any, vbs: Any, _ctx: Any
        ) -> bool:
            if not fut.done():  # a late answer after the caller gave up is dropped
                fut.set_result((err_ind, int(err_status or 0), int(err_index or 0), list(vbs or ())))
            return False  # single request: never ask pysnmp to continue

        varbinds = [(rfc1902.ObjectName(oid), univ.Null("")) for oid in oids]
        context = self.cfg.context.encode()
        try:
            if kind == "get":
                cmdgen.GetCommandGenerator().send_varbinds(engine, addr_name, None, context, varbinds, done)
            elif kind == "next":
                cmdgen.NextCommandGeneratorSingleRun().send_varbinds(engine, addr_name, None, context, varbinds, done)
            else:
                cmdgen.BulkCommandGeneratorSingleRun().send_varbinds(
                    engine, addr_name, None, context, 0, max_repetitions, varbinds, done
                )
        except Exception as e:  # noqa: BLE001 - pysnmp raises its own types for local config errors
            raise SnmpError(f"{self.where}: request not sent: {e}") from None
        # pysnmp times out by itself; this bound only guards against a callback that never comes.
        limit = self.cfg.request_timeout * (self.cfg.retries + 1) + 2.0
        try:
            err_ind, err_status, err_index, vbs = await asyncio.wait_for(fut, limit)
        except TimeoutError:
            raise self._timeout() from None
        if err_ind:
            raise self._indication(err_ind)
        return err_status, err_index, vbs

    def _timeout(self) -> SnmpTimeout:
        cfg = self.cfg
        who = "the user and keys" if cfg.version == "3" else "the community"
        # Agents drop what they cannot read: a wrong community, or a v3 message they cannot decrypt.
        also = " (a wrong priv_key looks like this too)" if cfg.security_level == "authPriv" else ""
        return SnmpTimeout(
            f"{self.where}: no response in {cfg.request_timeout:g} s after {_retries(cfg.retries)}"
            f" (SNMPv{cfg.version}) — check the address, that SNMP is enabled, {who}{also} and the device's SNMP ACL"
        )

    def _indication(self, err_ind: Any) -> SnmpError:
        from pysnmp.proto import errind

        cfg = self.cfg
        user = f"SNMPv3 user {cfg.user!r}"
        if isinstance(err_ind, errind.RequestTimedOut):
            return self._timeout()
        if isinstance(err_ind, errind.UnknownUserName):
            return SnmpAuthError(f"{self.where}: authentication failed: the device does not know {user} — check user")
        if isinstance(err_ind, errind.WrongDigest | errind.AuthenticationFailure | errind.AuthenticationError):
            return SnmpAuthError(
                f"{self.where}: authentication failed for {user}: wrong auth_key or auth_proto ({cfg.auth_proto})"
                " — check them against the device"
            )
        if isinstance(err_ind, errind.DecryptionError):
            return SnmpAuthError(
                f"{self.where}: authentication failed for {user}: the device cannot decrypt — wrong priv_key"
                f" or priv_proto ({cfg.priv_proto})"
            )
        if isinstance(err_ind, errind.UnsupportedSecurityLevel):
            return SnmpAuthError(
                f"{self.where}: authentication failed: the device does not allow {cfg.security_level} for {user}"
                " — match auth_proto/priv_proto to the user's level on the device"
            )
        if isinstance(err_ind, errind.UnknownSecurityName | errind.UnknownCommunityName):
            return SnmpAuthError(f"{self.where}: authentication failed: credentials not accepted ({err_ind})")
        if isinstance(err_ind, errind.NotInTimeWindow):
            return SnmpError(f"{self.where}: SNMPv3 time window error — the device's engine clock jumped; retry")
        return SnmpError(f"{self.where}: {err_ind}")

    def _pdu_error(self, what: str, status: int, index: int, oids: Sequence[str]) -> SnmpError:
        names = {1: "tooBig", 2: "noSuchName", 3: "badValue", 5: "genErr", 6: "noAccess", 16: "authorizationError"}
        name = names.get(status, f"error {status}")
        at = f" at {oids[index - 1]}" if 1 <= index <= len(oids) else ""
        hint = " — the view for these credentials may not include it" if status in (6, 16) else ""
        return SnmpError(f"{self.where}: {what} answered {name}{at}{hint}")

    async def get(self, oids: Sequence[str]) -> list[VarBind]:
        oids = [o.strip().strip(".") for o in oids]
        if not oids:
            return []
        per = self.cfg.max_oids_per_get
        out: list[VarBind] = []
        for i in range(0, len(oids), per):
            out += await self._get_chunk(oids[i : i + per])
        return out

    async def _get_chunk(self, oids: list[str]) -> list[VarBind]:
        status, index, vbs = await self._send("get", oids)
        if status == 1 and len(oids) > 1:  # tooBig: the answer does not fit one packet; ask in halves
            half = len(oids) // 2
            return [*await self._get_chunk(oids[:half]), *await self._get_chunk(oids[half:])]
        if status == 2 and self.cfg.version == "1" and 1 <= index <= len(oids):
            # v1 fails the whole GET for one missing OID: drop it and ask again, like v2c answers.
            i = index - 1
            rest = await self._get_chunk(oids[:i] + oids[i + 1 :]) if len(oids) > 1 else []
            return [*rest[:i], (oids[i], "NoSuchObject", None), *rest[i:]]
        if status:
            raise self._pdu_error("GET", status, index, oids)
        if len(vbs) != len(oids):
            raise SnmpError(f"{self.where}: GET of {len(oids)} OIDs answered {len(vbs)} values")
        return [to_varbind(name, value) for name, value in vbs]

    async def walk(self, base_oid: str, *, max_repetitions: int) -> list[VarBind]:
        base = base_oid.strip().strip(".")
        reps = max(1, max_repetitions)
        v1 = self.cfg.version == "1"
        out: list[VarBind] = []
        seen: set[str] = set()
        last = base
        while len(out) < MAX_WALK_ROWS:
            status, index, vbs = await (self._send("next", [last]) if v1 else self._send("bulk", [last], reps))
            if status:
                if v1 and status == 2:
                    return out  # v1's way of saying "end of the MIB"
                if status == 1 and reps > 1:
                    reps = max(1, reps // 2)
                    continue
                raise self._pdu_error("GETNEXT" if v1 else "GETBULK", status, index, [last])
            if not vbs:
                return out
            for name, value in vbs:
                vb = to_varbind(name, value)
                # An agent that returns rows out of order is followed (its order is its own);
                # one that comes back to an OID already seen is looping: stop there.
                if vb[1] == "EndOfMibView" or not in_subtree(vb[0], base) or vb[0] in seen:
                    return out
                seen.add(vb[0])
                out.append(vb)
            last = out[-1][0]
        raise SnmpError(f"{self.where}: walk of {base} passed {MAX_WALK_ROWS} rows — the agent seems to loop")
