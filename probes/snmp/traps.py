"""SNMP trap receiver (``type: snmp_traps``): pysnmp's asyncio notification receiver turns each v1/v2c/v3
trap or inform from a known source into an ``event`` Sample; bad input is counted, never raised."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import orjson

from probes.base import Emit, Listener
from probes.model import EventSeverity, Sample, event_sample
from probes.ratelimit import TokenBucket
from probes.snmp.pysnmp_session import auth_protocol, priv_protocol, to_varbind
from probes.snmp.session import VarBind
from probes.snmp.traps_config import TrapConfig, TrapUser, engine_id_bytes

log = logging.getLogger("netwatch.probes.snmp.traps")

STATS = "snmp_trap_stats"

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
#: added by pysnmp when it converts a v1 trap; holds the community, so it never leaves the receiver
SNMP_TRAP_COMMUNITY = "1.3.6.1.6.3.18.1.4.0"

#: trap OID -> (name, severity); DOMAIN.md §1 and §2
KNOWN_TRAPS: dict[str, tuple[str, EventSeverity]] = {
    "1.3.6.1.6.3.1.1.5.1": ("coldStart", "warning"),
    "1.3.6.1.6.3.1.1.5.2": ("warmStart", "warning"),
    "1.3.6.1.6.3.1.1.5.3": ("linkDown", "warning"),
    "1.3.6.1.6.3.1.1.5.4": ("linkUp", "info"),
    "1.3.6.1.6.3.1.1.5.5": ("authenticationFailure", "warning"),
    "1.3.6.1.2.1.33.2.1": ("upsTrapOnBattery", "critical"),
    "1.3.6.1.2.1.33.2.2": ("upsTrapTestCompleted", "info"),
    "1.3.6.1.2.1.33.2.3": ("upsTrapAlarmEntryAdded", "warning"),
    "1.3.6.1.2.1.33.2.4": ("upsTrapAlarmEntryRemoved", "info"),
}

# IF-MIB columns a linkDown/linkUp carries (and that some devices add)
IF_INDEX, IF_DESCR = "1.3.6.1.2.1.2.2.1.1.", "1.3.6.1.2.1.2.2.1.2."
IF_ADMIN, IF_OPER = "1.3.6.1.2.1.2.2.1.7.", "1.3.6.1.2.1.2.2.1.8."
IF_NAME, IF_ALIAS = "1.3.6.1.2.1.31.1.1.1.1.", "1.3.6.1.2.1.31.1.1.1.18."
IF_STATUS = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant", 6: "notPresent", 7: "lowerLayerDown"}

# UPS-MIB (RFC 1628)
UPS_SECONDS_ON_BATTERY = "1.3.6.1.2.1.33.1.2.2.0"
UPS_MINUTES_REMAINING = "1.3.6.1.2.1.33.1.2.3.0"
UPS_ALARM_ID, UPS_ALARM_DESCR = "1.3.6.1.2.1.33.1.6.2.1.1.", "1.3.6.1.2.1.33.1.6.2.1.2."
UPS_TEST_RESULT = "1.3.6.1.2.1.33.1.7.3.0"
UPS_TEST_RESULTS = {
    1: "donePass",
    2: "doneWarning",
    3: "doneError",
    4: "aborted",
    5: "inProgress",
    6: "noTestsInitiated",
}
#: the well-known alarms, 1.3.6.1.2.1.33.1.6.3.x (DOMAIN.md §2)
UPS_ALARMS = {
    f"1.3.6.1.2.1.33.1.6.3.{i}": name
    for i, name in enumerate(
        (
            "batteryBad",
            "onBattery",
            "lowBattery",
            "depletedBattery",
            "tempBad",
            "inputBad",
            "outputBad",
            "outputOverload",
            "onBypass",
        ),
        start=1,
    )
}

#: limits on what one trap may put into an event (a hostile sender can fill a 64 KiB datagram)
MAX_VARBINDS_KEPT = 64
MAX_TEXT = 256

VERSION_OF_MP = {0: "1", 1: "2c", 3: "3"}


# --- from a trap's varbinds to an event --------------------------------------------------------


def _text(value: object) -> object:
    """A varbind value as JSON-friendly data: printable octets as text, other octets as 0x-hex."""
    if isinstance(value, bytes):
        try:
            s = value.decode()
        except UnicodeDecodeError:
            s = ""
        else:
            if s.isprintable():
                return s[:MAX_TEXT]
        return "0x" + value[: MAX_TEXT // 2].hex()
    return value


def _label(value: object) -> str | None:
    v = _text(value)
    return v.strip() or None if isinstance(v, str) else None


def _index_after(oid: str, prefix: str) -> int | None:
    rest = oid[len(prefix) :]
    return int(rest) if rest.isdigit() else None


def trap_event(
    varbinds: Sequence[VarBind],
    *,
    sender_ip: str,
    device: str | None = None,
    version: str = "2c",
    user: str | None = None,
    time_ns: int | None = None,
) -> Sample:
    """One received notification (SNMPv2 form: sysUpTime.0, snmpTrapOID.0, then the objects) as an
    ``event`` Sample: what happened in words, how bad, and the varbinds that say so."""
    trap_oid = ""
    uptime: int | None = None
    rest: list[VarBind] = []
    for oid, typ, value in varbinds:
        if oid == SNMP_TRAP_OID and typ == "ObjectIdentifier":
            trap_oid = str(value)
        elif oid == SYS_UPTIME and isinstance(value, int):
            uptime = value
        elif oid != SNMP_TRAP_COMMUNITY:
            rest.append((oid, typ, value))
    name, severity = KNOWN_TRAPS.get(trap_oid, (trap_oid or "unknown", "info"))
    source = device or sender_ip
    tags = {"device": source, "trap": name}
    fields: dict[str, Any] = {
        "trap_oid": trap_oid,
        "trap_name": name,
        "sender_ip": sender_ip,
        "snmp_version": version,
        "varbinds": orjson.dumps([[o, t, _text(v)] for o, t, v in rest[:MAX_VARBINDS_KEPT]]).decode(),
    }
    if user:
        fields["user"] = user
    if uptime is not None:
        fields["sender_uptime_s"] = uptime / 100

    if name in ("linkDown", "linkUp"):
        message = _link(name, rest, fields, tags)
    elif name == "upsTrapOnBattery":
        mins = next((v for o, _, v in rest if o == UPS_MINUTES_REMAINING and isinstance(v, int)), None)
        secs = next((v for o, _, v in rest if o == UPS_SECONDS_ON_BATTERY and isinstance(v, int)), None)
        fields.update(runtime_min=mins, on_battery_s=secs)
        message = "UPS on battery" + (f", {mins} min of runtime left" if mins is not None and mins >= 0 else "")
    elif name in ("upsTrapAlarmEntryAdded", "upsTrapAlarmEntryRemoved"):
        descr = next((str(v) for o, t, v in rest if o.startswith(UPS_ALARM_DESCR) and t == "ObjectIdentifier"), None)
        alarm_id = next((v for o, _, v in rest if o.startswith(UPS_ALARM_ID) and isinstance(v, int)), None)
        alarm = UPS_ALARMS.get(descr or "", descr or "unknown")
        fields.update(alarm=alarm, alarm_oid=descr, alarm_id=alarm_id)
        tags["alarm"] = alarm
        message = f"UPS alarm {'raised' if name.endswith('Added') else 'cleared'}: {alarm}"
    elif name == "upsTrapTestCompleted":
        code = next((v for o, _, v in rest if o == UPS_TEST_RESULT and isinstance(v, int)), None)
        result = UPS_TEST_RESULTS.get(code, str(code)) if code is not None else None
        fields.update(test_result=result, test_result_code=code)
        message = "UPS self-test completed" + (f": {result}" if result else "")
        if code in (2, 3):  # doneWarning, doneError: someone should look
            severity = "warning"
    elif name == "coldStart":
        message = "cold start: the device (re)booted"
    elif name == "warmStart":
        message = "warm start: the SNMP agent restarted"
    elif name == "authenticationFailure":
        message = "authentication failure: something polled the device with wrong SNMP credentials"
    else:
        message = f"trap {trap_oid or '(no snmpTrapOID)'} with {len(rest)} varbinds"
    return event_sample("snmp_trap", source, message, severity=severity, tags=tags, fields=fields, time_ns=time_ns)


def _link(name: str, rest: Sequence[VarBind], fields: dict[str, Any], tags: dict[str, str]) -> str:
    if_index = admin = oper = None
    ifname = descr = alias = None
    for oid, _, value in rest:
        if oid.startswith(IF_INDEX) and isinstance(value, int):
            if_index = value
        elif oid.startswith(IF_ADMIN) and isinstance(value, int):
            admin, if_index = value, if_index or _index_after(oid, IF_ADMIN)
        elif oid.startswith(IF_OPER) and isinstance(value, int):
            oper, if_index = value, if_index or _index_after(oid, IF_OPER)
        elif oid.startswith(IF_NAME):
            ifname = _label(value)
        elif oid.startswith(IF_DESCR):
            descr = _label(value)
        elif oid.startswith(IF_ALIAS):
            alias = _label(value)
    fields.update(if_index=if_index, admin_status=admin, oper_status=oper, if_descr=descr, if_alias=alias)
    label = ifname or descr
    if label:
        tags["ifname"] = label
    where = label or (f"ifIndex {if_index}" if if_index is not None else "an interface")
    states = ", ".join(
        f"{what} {IF_STATUS.get(v, v)}" for what, v in (("admin", admin), ("oper", oper)) if v is not None
    )
    return f"link {'down' if name == 'linkDown' else 'up'} on {where}" + (f" ({states})" if states else "")


# --- the listener ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    received: int = 0
    events: int = 0
    unknown_source: int = 0
    bad_community: int = 0
    bad_auth: int = 0
    malformed: int = 0
    rate_limited: int = 0
    noauth_refused: int = 0
    sources_overflow: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# pysnmp's own counters (the SNMPv2-MIB and USM statistics it keeps anyway) -> our names
_ENGINE_COUNTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "malformed": (("__SNMPv2-MIB", "snmpInASNParseErrs"), ("__SNMPv2-MIB", "snmpInBadVersions")),
    "bad_community": (("__SNMPv2-MIB", "snmpInBadCommunityNames"),),
    "bad_auth": tuple(
        ("__SNMP-USER-BASED-SM-MIB", f"usmStats{n}")
        for n in (
            "UnsupportedSecLevels",
            "NotInTimeWindows",
            "UnknownUserNames",
            "UnknownEngineIDs",
            "WrongDigests",
            "DecryptionErrors",
        )
    ),
}

#: unknown source addresses remembered for "log once" (beyond this, they are only counted)
_LOGGED_SOURCES_MAX = 1024
#: the receive buffer asked for (the kernel caps it at net.core.rmem_max)
_RCVBUF = 4 * 1024 * 1024
#: said at start (and by ``describe``) when the receiver trusts every source address
NO_ALLOW_LIST = (
    "no devices allow-list: traps from ANY source address are accepted (whoever knows a community can "
    "inject events) — list your devices under devices: {IP: name}"
)


class TrapListener(Listener):
    """Receives traps and informs for the agent's whole life. Events from known sources (all sources
    when ``devices`` is empty) go to ``emit``; everything else is counted in ``stats`` and, every
    ``stats_interval``, emitted as a ``snmp_trap_stats`` Sample."""

    kind: ClassVar[str] = "snmp_traps"
    config_model: ClassVar[type[TrapConfig]] = TrapConfig
    config: TrapConfig

    def __init__(self, config: TrapConfig, *, name: str) -> None:
        super().__init__(config, name=name)
        self._own = _Counters()
        #: engine counters folded in from earlier runs (the agent restarts a listener that failed)
        self._engine_base: dict[str, int] = {k: 0 for k in _ENGINE_COUNTERS}
        self._engine: Any = None
        #: (address, port) actually bound, once listening
        self.bound: tuple[str, int] | None = None
        self._logged_sources: set[str] = set()
        self._rate = config.max_events_per_s
        #: one bucket per source address (a burst of two seconds' worth, see TrapConfig), at most
        #: ``max_sources`` of them; sources past that share ``_overflow``
        self._buckets: dict[str, TokenBucket] = {}
        self._overflow = self._new_bucket()
        self._next_purge = 0.0
        #: sources being rate-limited now (for "log the first and the recovery"), and each source's
        #: count of rate-limited traps (bounded like the buckets)
        self._storming: set[str] = set()
        self.rate_limited_by_source: dict[str, int] = {}
        self._context: dict[str, Any] = {}

    # -- counters --------------------------------------------------------------------------

    def _engine_counts(self) -> dict[str, int]:
        counts = dict(self._engine_base)
        if self._engine is None:
            return counts
        builder = self._engine.get_mib_builder()
        for ours, symbols in _ENGINE_COUNTERS.items():
            for module, symbol in symbols:
                with contextlib.suppress(Exception):  # a counter this pysnmp lacks is just not counted
                    (obj,) = builder.import_symbols(module, symbol)
                    counts[ours] += int(obj.syntax)
        return counts

    def describe(self) -> str:
        cfg = self.config
        trust = f"{len(cfg.devices)} known devices" if cfg.devices else f"ANY source — {NO_ALLOW_LIST}"
        return f"{self.kind} {self.name} on {cfg.host}:{cfg.port}, {trust}"

    @property
    def stats(self) -> dict[str, int]:
        """Totals since the listener was made: received, events, unknown_source, bad_community,
        bad_auth, malformed, rate_limited, noauth_refused, sources_overflow."""
        out = self._own.as_dict()
        for k, v in self._engine_counts().items():
            out[k] += v
        return out

    def stats_sample(self) -> Sample:
        return Sample(STATS, {"listener": self.name}, dict(self.stats))

    # -- the socket: count everything, drop unknown sources before pysnmp parses them -------

    def _accept(self, addr: tuple[Any, ...]) -> bool:
        """The gate in front of pysnmp, on the source address alone: nothing of the datagram is
        decoded before the source is known (allow-list) and within its rate."""
        self._own.received += 1
        ip = _norm_ip(str(addr[0]))
        devices = self.config.devices
        if devices and ip not in devices:
            self._unknown(ip)
            return False
        if not self._take_token(ip):
            self._own.rate_limited += 1
            if ip in self.rate_limited_by_source or len(self.rate_limited_by_source) < self.config.max_sources:
                self.rate_limited_by_source[ip] = self.rate_limited_by_source.get(ip, 0) + 1
            return False
        return True

    def _unknown(self, ip: str) -> None:
        self._own.unknown_source += 1
        if ip not in self._logged_sources and len(self._logged_sources) < _LOGGED_SOURCES_MAX:
            self._logged_sources.add(ip)
            log.warning(
                "%s: dropping traps from %s, which is not in devices — add it there if it is yours "
                "(counted as unknown_source; logged once per address)",
                self.name,
                ip,
            )

    def _new_bucket(self) -> TokenBucket:
        return TokenBucket(self._rate, burst=2 * self._rate)

    def _bucket_for(self, ip: str) -> TokenBucket:
        bucket = self._buckets.get(ip)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self.config.max_sources:
            self._purge_idle()
        if len(self._buckets) >= self.config.max_sources:
            self._own.sources_overflow += 1
            return self._overflow
        bucket = self._buckets[ip] = self._new_bucket()
        return bucket

    def _purge_idle(self) -> None:
        # A bucket that has refilled completely holds no state: dropping it changes nothing. Looked
        # for at most once a second, so a flood of spoofed sources costs no scan per datagram.
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + 1.0
        for ip, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.last) * bucket.rate >= bucket.burst:
                del self._buckets[ip]

    def _take_token(self, ip: str) -> bool:
        if self._bucket_for(ip).take(1):
            if ip in self._storming:
                self._storming.discard(ip)
                log.info("%s: traps from %s back under %g/s", self.name, ip, self._rate)
            return True
        if ip not in self._storming and len(self._storming) < _LOGGED_SOURCES_MAX:
            self._storming.add(ip)
            log.warning(
                "%s: more than %g traps/s from %s — dropping its excess before decoding (counted as rate_limited; "
                "other sources are not affected)",
                self.name,
                self._rate,
                ip,
            )
        return False

    # -- pysnmp callbacks --------------------------------------------------------------------

    def _on_request(self, engine: Any, execpoint: str, variables: dict[str, Any], ctx: Any) -> None:
        # Called by pysnmp just before it hands the same message to _on_notification: keep what
        # the notification callback is not given (version, security name).
        self._context = variables

    def _on_notification(
        self, engine: Any, state_ref: Any, context_engine_id: Any, context_name: Any, var_binds: Any, ctx: Any
    ) -> None:
        try:
            _, addr = engine.message_dispatcher.get_transport_info(state_ref)
            sender = _norm_ip(str(addr[0]))
            variables, self._context = self._context, {}
            version = VERSION_OF_MP.get(int(variables.get("messageProcessingModel", 1)), "2c")
            user = str(variables.get("securityName", "")) if version == "3" else None
            if version == "3" and int(variables.get("securityLevel", 1)) < 2 and not self.config.allow_noauth:
                self._refuse_noauth(sender, user)
                return
            sample = trap_event(
                [to_varbind(name, value) for name, value in var_binds],
                sender_ip=sender,
                device=self.config.devices.get(sender),
                version=version,
                user=user,
            )
        except Exception:  # a notification we cannot read is bad input: count it, keep listening
            self._own.malformed += 1
            log.debug("%s: unreadable notification", self.name, exc_info=True)
            return
        self._own.events += 1
        self._emit([sample])

    def _refuse_noauth(self, sender: str, user: str | None) -> None:
        self._own.noauth_refused += 1
        key = f"noauth {sender}"
        if key not in self._logged_sources and len(self._logged_sources) < _LOGGED_SOURCES_MAX:
            self._logged_sources.add(key)
            log.warning(
                "%s: refused an SNMPv3 noAuthNoPriv trap from %s (user %r): unauthenticated traps can be forged "
                "— configure auth on the device, or set allow_noauth: true (counted as noauth_refused; logged once "
                "per address)",
                self.name,
                sender,
                user,
            )

    # -- run -------------------------------------------------------------------------------

    def _build_engine(self) -> Any:
        from pysnmp.entity import config as snmp_config
        from pysnmp.entity import engine as snmp_engine
        from pysnmp.entity.rfc3413 import ntfrcv
        from pysnmp.proto.rfc1902 import OctetString

        eng = snmp_engine.SnmpEngine()
        for i, community in enumerate(self.config.community_list()):
            snmp_config.add_v1_system(eng, f"netwatch-{i}", community)
        for user in self.config.users:
            engine_ids: list[str | None] = [*user.engine_ids] or [None]
            for engine_id in engine_ids:
                _add_user(
                    eng, snmp_config, user, None if engine_id is None else OctetString(engine_id_bytes(engine_id))
                )
        eng.observer.register_observer(self._on_request, "rfc3412.receiveMessage:request")
        ntfrcv.NotificationReceiver(eng, self._on_notification)
        return eng

    async def run(self, emit: Emit) -> None:
        from pysnmp.carrier.asyncio.dgram import udp, udp6
        from pysnmp.entity import config as snmp_config

        self._emit = emit
        cfg = self.config
        six = ipaddress.ip_address(cfg.host).version == 6
        eng = self._build_engine()
        sock_cls = _socket_class(udp6.Udp6AsyncioTransport if six else udp.UdpAsyncioTransport)
        transport = sock_cls(self)
        snmp_config.add_transport(eng, udp6.DOMAIN_NAME if six else udp.DOMAIN_NAME, transport)
        self._engine = eng
        try:
            # Bind here, synchronously, so a taken port fails run() at once with a clear message;
            # pysnmp then reads from the bound socket.
            sock = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind((cfg.host, cfg.port))
            except OSError as e:
                sock.close()
                hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" if cfg.port < 1024 else ""
                raise OSError(
                    e.errno, f"snmp_traps {self.name}: cannot listen on {cfg.host}:{cfg.port}: {e.strerror}{hint}"
                ) from e
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                # Room for a burst: a storm from one sender must not overflow the kernel's queue
                # before the per-source gate has a chance to drop it.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            sockname = sock.getsockname()
            transport.open_server_mode(sock=sock)
            self.bound = (str(sockname[0]), int(sockname[1]))
            log.info(
                "%s: listening for SNMP traps on %s:%d (%d communities, %d v3 users, %s)",
                self.name,
                *self.bound,
                len(cfg.community_list()),
                len(cfg.users),
                f"{len(cfg.devices)} known devices" if cfg.devices else "any source",
            )
            if not cfg.devices:
                log.warning("%s: %s", self.name, NO_ALLOW_LIST)
            while True:
                await asyncio.sleep(cfg.stats_interval)
                emit([self.stats_sample()])
        finally:
            self.bound = None
            counts = self._engine_counts()
            self._engine = None
            self._engine_base = counts
            with contextlib.suppress(Exception):
                eng.close_dispatcher()


def _add_user(eng: Any, snmp_config: Any, user: TrapUser, engine_id: Any) -> None:
    kwargs: dict[str, Any] = {}
    if user.auth_proto is not None:
        kwargs.update(authProtocol=auth_protocol(user.auth_proto), authKey=user.key("auth"))
    if user.priv_proto is not None:
        kwargs.update(privProtocol=priv_protocol(user.priv_proto), privKey=user.key("priv"))
    if engine_id is not None:
        kwargs["securityEngineId"] = engine_id
    snmp_config.add_v3_user(eng, user.user, **kwargs)


def _norm_ip(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _socket_class(base: type) -> type:
    """pysnmp's UDP transport, with our gate in front: count every datagram, drop unknown sources
    before any parsing, and keep a failure in pysnmp's processing from escaping as anything but a count."""

    class _Gated(base):  # type: ignore[misc]
        def __init__(self, owner: TrapListener) -> None:
            super().__init__()
            self._owner = owner

        def datagram_received(self, datagram: bytes, addr: Any) -> None:
            if self._owner._accept(addr):
                self.loop.call_soon(self._deliver, datagram, addr)

        def _deliver(self, datagram: bytes, addr: Any) -> None:
            cb = self._callback_function
            if cb is None:
                return
            try:
                cb(self, addr, datagram)
            except Exception:
                self._owner._own.malformed += 1
                log.debug("%s: pysnmp failed on a datagram from %s", self._owner.name, addr, exc_info=True)

    return _Gated
