"""SNMP over pysnmp 7, every version (the only one for v3): ``PysnmpTransport`` sends one request PDU
on an engine shared by every session of the event loop, ``PysnmpSession`` is the shared ``Session``
logic over it. Also the one conversion of pysnmp values to plain VarBinds and the one table of v3
auth/priv protocols, both used by the trap receiver too."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from probes.snmp.session import (
    PduKind,
    Response,
    Session,
    SnmpAuthError,
    SnmpError,
    SnmpTimeout,
    TypedValue,
    VarBind,
    retries_text,
)

if TYPE_CHECKING:
    from probes.snmp.adapt import Adaptive
    from probes.snmp.config import SnmpConfig

# ------------------------------------------------------------------------ v3 protocols by name

#: config name -> the constant in ``pysnmp.entity.config`` (the hlapi's ``auth.usm*Protocol`` are the same objects)
AUTH_PROTOCOLS: dict[str, str] = {
    "MD5": "USM_AUTH_HMAC96_MD5",
    "SHA": "USM_AUTH_HMAC96_SHA",
    "SHA-224": "USM_AUTH_HMAC128_SHA224",
    "SHA-256": "USM_AUTH_HMAC192_SHA256",
    "SHA-384": "USM_AUTH_HMAC256_SHA384",
    "SHA-512": "USM_AUTH_HMAC384_SHA512",
}
PRIV_PROTOCOLS: dict[str, str] = {
    "DES": "USM_PRIV_CBC56_DES",
    "AES": "USM_PRIV_CFB128_AES",
    "AES-128": "USM_PRIV_CFB128_AES",
    "AES-192": "USM_PRIV_CFB192_AES_BLUMENTHAL",
    "AES-256": "USM_PRIV_CFB256_AES_BLUMENTHAL",
    "AES-192-C": "USM_PRIV_CFB192_AES",
    "AES-256-C": "USM_PRIV_CFB256_AES",
}


def auth_protocol(name: str) -> Any:
    """pysnmp's identifier of the v3 auth protocol ``name`` (``SHA``, ``SHA-256``, ...)."""
    from pysnmp.entity import config

    return getattr(config, AUTH_PROTOCOLS[name])


def priv_protocol(name: str) -> Any:
    """pysnmp's identifier of the v3 privacy protocol ``name`` (``AES``, ``DES``, ...)."""
    from pysnmp.entity import config

    return getattr(config, PRIV_PROTOCOLS[name])


# --------------------------------------------------------------------------- values as VarBinds


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
    """A pysnmp (ObjectName, value) pair as a plain VarBind (no MIB lookups)."""
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


def to_pysnmp(type_name: str, value: object) -> Any:
    """A VarBind's (type name, value) as the pysnmp value to SET: the inverse of :func:`to_varbind`."""
    from pysnmp.proto import rfc1902

    classes: dict[str, Any] = {
        "Integer": rfc1902.Integer32,
        "OctetString": rfc1902.OctetString,
        "ObjectIdentifier": rfc1902.ObjectIdentifier,
        "IpAddress": rfc1902.IpAddress,
        "Counter32": rfc1902.Counter32,
        "Gauge32": rfc1902.Gauge32,
        "TimeTicks": rfc1902.TimeTicks,
        "Opaque": rfc1902.Opaque,
        "Counter64": rfc1902.Counter64,
    }
    if type_name not in classes:
        raise ValueError(f"cannot SET a value of type {type_name}")
    return classes[type_name](value)


# ------------------------------------------------------------------ engines and the transport


@dataclass(slots=True)
class _Engine:
    """A pysnmp engine bound to one event loop, shared by every session on it."""

    engine: Any
    #: v3 user name -> the credentials it was registered with (USM holds one entry per name)
    users: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)
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


class PysnmpTransport:
    """One device over pysnmp 7, any version: one request PDU out, its Response back. Requests go out
    on the loop's shared engine and socket; a slow device only holds its own requests. Credentials
    are read when the session first talks to the device, and never appear in ``repr`` or messages."""

    def __init__(self, cfg: SnmpConfig, adaptive: Adaptive | None = None) -> None:
        self.cfg = cfg
        self.version = cfg.version
        #: told of round trips and timeouts (pysnmp retransmits by itself with the configured
        #: timeout, so here the pacing adapts requests in flight and rows, not the timeout)
        self.adaptive = adaptive
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slot: _Engine | None = None
        self._key: Any = None
        self._addr_name: str | None = None
        self._setup_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"PysnmpTransport({self.cfg.address}, v{self.cfg.version})"

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

        from probes.configfile import SecretMissing

        cfg = self.cfg
        try:
            if cfg.version == "3":
                auth_key, priv_key = cfg.auth_key_value(), cfg.priv_key_value()
                creds: tuple[Any, ...] | None = (cfg.auth_proto, auth_key, cfg.priv_proto, priv_key)
                user: str | None = cfg.user
                auth_data: Any = UsmUserData(
                    cfg.user,
                    authKey=auth_key,
                    privKey=priv_key,
                    authProtocol=auth_protocol(cfg.auth_proto) if cfg.auth_proto else None,
                    privProtocol=priv_protocol(cfg.priv_proto) if cfg.priv_proto else None,
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

    async def request(
        self, kind: PduKind, oids: Sequence[str], max_repetitions: int = 0, values: Sequence[TypedValue] = ()
    ) -> Response:
        """OIDs go out as they are, with no MIB lookup either way."""
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

        if kind == "set":
            if len(values) != len(oids):
                raise ValueError(f"a SET needs one value per OID ({len(oids)} OIDs, {len(values)} values)")
            varbinds = [(rfc1902.ObjectName(oid), to_pysnmp(*tv)) for oid, tv in zip(oids, values, strict=True)]
        else:
            varbinds = [(rfc1902.ObjectName(oid), univ.Null("")) for oid in oids]
        context = self.cfg.context.encode()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        epoch = self.adaptive.epoch if self.adaptive is not None else 0
        try:
            if kind == "set":
                cmdgen.SetCommandGenerator().send_varbinds(engine, addr_name, None, context, varbinds, done)
            elif kind == "get":
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
            if self.adaptive is not None:
                self.adaptive.timed_out(epoch, bulk_reps=max_repetitions if kind == "bulk" else 0)
            raise self._timeout() from None
        if err_ind:
            error = self._indication(err_ind)
            if isinstance(error, SnmpTimeout) and self.adaptive is not None:
                self.adaptive.timed_out(epoch, bulk_reps=max_repetitions if kind == "bulk" else 0)
            raise error
        if self.adaptive is not None:
            rtt = loop.time() - sent  # longer than one timeout: pysnmp re-sent it (Karn: not measured)
            self.adaptive.answered(rtt, retransmitted=rtt > self.cfg.request_timeout)
        return Response(err_status, err_index, [to_varbind(name, value) for name, value in vbs])

    def _timeout(self) -> SnmpTimeout:
        cfg = self.cfg
        who = "the user and keys" if cfg.version == "3" else "the community"
        # Agents drop what they cannot read: a wrong community, or a v3 message they cannot decrypt.
        also = " (a wrong priv_key looks like this too)" if cfg.security_level == "authPriv" else ""
        return SnmpTimeout(
            f"{self.where}: no response in {cfg.request_timeout:g} s after {retries_text(cfg.retries)}"
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


class PysnmpSession(Session):
    """One device over pysnmp, any version; ``open_session`` uses it for v3."""

    def __init__(self, cfg: SnmpConfig, adaptive: Adaptive | None = None) -> None:
        super().__init__(
            PysnmpTransport(cfg, adaptive),
            max_repetitions=cfg.max_repetitions,
            max_oids_per_get=cfg.max_oids_per_get,
            adaptive=adaptive,
        )
        self.cfg = cfg
