"""``netwatch-agent diag``: is this node healthy, does it reach the centre, which device is wrong —
in one command, each failure with the first thing to check. Exit 0 all well, 1 something wrong,
2 the config itself is bad."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from agent.messages import Lang, LangOpt, lang, one, t

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from probes.model import Sample

Status = Literal["ok", "warn", "fail", "skip"]
#: a clock further off than this breaks TLS validity checks at the edges and skews every sample
CLOCK_FAIL_MS = 10_000.0
CLOCK_WARN_MS = 1_000.0
CERT_WARN_DAYS = 14
DISK_FAIL_BYTES = 64 * 1024 * 1024
#: batches waiting longer than this mean the link is not draining them
BACKLOG_WARN_S = 600.0
#: OpenSSL's verify codes for a certificate issued to another name or address
X509_HOSTNAME_MISMATCH, X509_IP_MISMATCH = 62, 64


@dataclass(frozen=True, slots=True)
class Text:
    """A catalogue message and its values, rendered in whatever language is asked for;
    ``zh_values`` overrides values that are themselves words (e.g. "anonymous")."""

    key: str
    values: Mapping[str, object] = field(default_factory=dict)
    zh_values: Mapping[str, object] = field(default_factory=dict)

    def render(self, language: Lang | None = None, sep: str = " / ") -> str:
        which = language or lang()
        en = one(self.key, "en", self.values)
        zh = one(self.key, "zh", {**self.values, **self.zh_values})
        if which == "en":
            return en
        if which == "zh":
            return zh
        return en if en == zh else f"{en}{sep}{zh}"


@dataclass(frozen=True, slots=True)
class Finding:
    #: config, clock, disk, spool, dns, tcp, tls, cert, auth, acked, device
    check: str
    status: Status
    #: a stable word for scripts: ok, dns_failed, tcp_refused, cert_expired, auth_refused, device_down...
    code: str
    message: Text
    fix: Text | None = None
    target: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "target": self.target,
            "status": self.status,
            "code": self.code,
            "message": self.message.render("en"),
            "message_zh": self.message.render("zh"),
            "fix": self.fix.render("en") if self.fix else "",
            "fix_zh": self.fix.render("zh") if self.fix else "",
            **({"data": self.data} if self.data else {}),
        }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------------- local state


def check_disk(cfg: AgentConfig) -> Finding:
    from agent.spool import read_stats

    path = cfg.spool.path
    where = path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    data = {"path": str(where), "free_bytes": usage.free, "total_bytes": usage.total}
    if not os.access(where, os.W_OK):
        return Finding(
            "disk", "fail", "disk_readonly", Text("disk_readonly", {"path": where}), Text("fix_disk_rw"), data=data
        )
    held = read_stats(path).bytes if path.exists() else 0
    need = max(0, cfg.spool.max_bytes - held)
    text = {"path": where, "free": _size(usage.free), "need": _size(need)}
    if usage.free < DISK_FAIL_BYTES:
        return Finding("disk", "fail", "disk_full", Text("disk_full", text), Text("fix_disk"), data=data)
    if usage.free < need:
        return Finding("disk", "warn", "disk_low", Text("disk_low", text), Text("fix_disk"), data=data)
    return Finding("disk", "ok", "ok", Text("disk_ok", text), data=data)


def check_spool(cfg: AgentConfig, now_ns: int) -> list[Finding]:
    from agent.spool import read_stats

    path = cfg.spool.path
    if not path.exists():
        none = Text("spool_none", {"path": path})
        return [
            Finding("spool", "warn", "no_spool", none),
            Finding("acked", "skip", "no_spool", none),
        ]
    st = read_stats(path)
    age = st.oldest_age_s(now_ns)
    data = {
        "depth": st.depth,
        "bytes": st.bytes,
        "oldest_unsent_s": round(age, 1),
        "last_seq": st.last_seq,
        "dropped_batches": st.dropped_batches,
        "dropped_samples": st.dropped_samples,
    }
    out: list[Finding] = []
    if st.depth and age > BACKLOG_WARN_S:
        out.append(
            Finding(
                "spool",
                "warn",
                "backlog",
                Text("spool_backlog", {"depth": st.depth, "age": _age(age)}),
                Text("fix_spool"),
                data=data,
            )
        )
    elif st.dropped_batches:
        out.append(
            Finding(
                "spool",
                "warn",
                "dropped",
                Text("spool_dropped", {"dropped": st.dropped_batches, "samples": st.dropped_samples}),
                Text("fix_spool"),
                data=data,
            )
        )
    else:
        state = {"depth": st.depth, "size": _size(st.bytes), "age": _age(age), "dropped": st.dropped_batches}
        out.append(Finding("spool", "ok", "ok", Text("spool_state", state), data=data))
    acked = {"last_acked_seq": st.last_acked_seq, "last_acked_ns": st.last_acked_ns, "last_seq": st.last_seq}
    if st.last_acked_seq:
        ago = max(0.0, (now_ns - st.last_acked_ns) / 1e9)
        text = Text("acked", {"seq": st.last_acked_seq, "age": _age(ago), "when": _when(st.last_acked_ns)})
        out.append(Finding("acked", "ok", "ok", text, data=acked))
    else:
        out.append(Finding("acked", "warn", "never_acked", Text("acked_never", {"last": st.last_seq}), data=acked))
    return out


async def check_clock(timeout_s: float) -> Finding:
    from probes.host.timesync import read_clock

    reading = await read_clock(timeout_s)
    if reading is None:
        return Finding(
            "clock", "warn", "clock_unknown", Text("clock_unknown"), Text("fix_clock_daemon"), data={"source": None}
        )
    data = {"source": reading.source, "synced": reading.synced, "offset_ms": reading.offset_ms}
    if not reading.synced or reading.offset_ms is None:
        return Finding(
            "clock",
            "warn",
            "clock_unsynced",
            Text("clock_unsynced", {"source": reading.source}),
            Text("fix_clock"),
            data=data,
        )
    values = {"source": reading.source, "offset_ms": f"{reading.offset_ms:+.1f}"}
    off = abs(reading.offset_ms)
    if off > CLOCK_FAIL_MS:
        return Finding("clock", "fail", "clock_off", Text("clock_off", values), Text("fix_clock"), data=data)
    if off > CLOCK_WARN_MS:
        return Finding("clock", "warn", "clock_off", Text("clock_off", values), Text("fix_clock"), data=data)
    return Finding("clock", "ok", "ok", Text("clock_synced", values), data=data)


# ---------------------------------------------------------------------------------- the broker


@dataclass(slots=True)
class CertInfo:
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    names: list[str]


def _cert_info(der: bytes) -> CertInfo:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    names: list[str] = []
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return CertInfo(
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        names,
    )


def _client_context(cfg: AgentConfig, verify: bool) -> ssl.SSLContext:
    from protocol.mqtt import Tls

    tls = cfg.mqtt.tls
    assert isinstance(tls, Tls)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if tls.ca_file:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        else:
            ctx.load_default_certs()
        ctx.check_hostname = not tls.insecure_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return ctx


async def _tls_connect(
    addr: str, port: int, ctx: ssl.SSLContext, server_hostname: str, timeout_s: float
) -> tuple[ssl.SSLObject | None, Exception | None]:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(addr, port, ssl=ctx, server_hostname=server_hostname), timeout_s
        )
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return None, e
    obj = writer.get_extra_info("ssl_object")
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)
    return obj, None


def _err(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    return getattr(e, "verify_message", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__


async def check_broker(cfg: AgentConfig, timeout_s: float, now: datetime) -> list[Finding]:
    """DNS, TCP, TLS handshake and certificate, MQTT login: each step only when the one before
    worked, so the first failure named is the one to fix."""
    m = cfg.mqtt
    out: list[Finding] = []
    target = f"{m.host}:{m.port}"

    def skipped(check: str, step: str) -> Finding:
        return Finding(check, "skip", "skipped", Text("skipped_after", {"step": step}), target=target)

    rest = ["tcp", "tls", "cert", "auth"]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM), timeout_s)
    except (OSError, TimeoutError) as e:
        out.append(
            Finding(
                "dns",
                "fail",
                "dns_failed",
                Text("dns_fail", {"host": m.host, "error": _err(e)}),
                Text("fix_dns"),
                target=target,
            )
        )
        return out + [skipped(c, "DNS") for c in rest]
    addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
    out.append(
        Finding(
            "dns",
            "ok",
            "ok",
            Text("dns_ok", {"host": m.host, "addrs": ", ".join(addrs)}),
            target=target,
            data={"addresses": addrs},
        )
    )

    # TCP: the first address that connects (as paho does)
    addr, last_err = "", None
    for a in addrs:
        t0 = time.perf_counter()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(a, m.port), timeout_s)
        except (OSError, TimeoutError) as e:
            last_err = e
            continue
        ms = (time.perf_counter() - t0) * 1000
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)
        addr = a
        out.append(
            Finding(
                "tcp",
                "ok",
                "ok",
                Text("tcp_ok", {"addr": f"{a}:{m.port}", "ms": f"{ms:.1f}"}),
                target=target,
                data={"address": a, "connect_ms": round(ms, 2)},
            )
        )
        break
    if not addr:
        where = f"{addrs[-1]}:{m.port}"
        if isinstance(last_err, ConnectionRefusedError):
            f = Finding(
                "tcp",
                "fail",
                "tcp_refused",
                Text("tcp_refused", {"addr": where}),
                Text("fix_tcp_refused"),
                target=target,
            )
        elif isinstance(last_err, TimeoutError):
            f = Finding(
                "tcp",
                "fail",
                "tcp_timeout",
                Text("tcp_timeout", {"addr": where, "timeout": f"{timeout_s:g}"}),
                Text("fix_tcp_timeout", {"port": m.port}),
                target=target,
            )
        else:
            f = Finding(
                "tcp",
                "fail",
                "tcp_error",
                Text("tcp_error", {"addr": where, "error": _err(last_err or OSError())}),
                Text("fix_tcp_timeout", {"port": m.port}),
                target=target,
            )
        return out + [f] + [skipped(c, "TCP") for c in rest[1:]]

    if not m.uses_tls:
        out.append(Finding("tls", "skip", "no_tls", Text("tls_off"), target=target))
    else:
        tls_findings = await _check_tls(cfg, addr, timeout_s, now, target)
        out += tls_findings
        if any(f.status == "fail" for f in tls_findings):
            return out + [skipped("auth", "TLS")]
    out.append(await asyncio.to_thread(_check_login, cfg, addr, timeout_s, target))
    return out


async def _check_tls(cfg: AgentConfig, addr: str, timeout_s: float, now: datetime, target: str) -> list[Finding]:
    m = cfg.mqtt
    from protocol.mqtt import Tls

    tls = m.tls
    assert isinstance(tls, Tls)
    # First without verification, to read the certificate whatever is wrong with it.
    obj, err = await _tls_connect(addr, m.port, _client_context(cfg, verify=False), m.host, timeout_s)
    if obj is None:
        return [
            Finding(
                "tls",
                "fail",
                "tls_failed",
                Text("tls_fail", {"error": _err(err or OSError())}),
                Text("fix_tls"),
                target=target,
            ),
            Finding("cert", "skip", "skipped", Text("skipped_after", {"step": "TLS"}), target=target),
        ]
    version = obj.version() or "TLS"
    der = obj.getpeercert(binary_form=True)
    info = _cert_info(der) if der else None
    vobj, verr = await _tls_connect(addr, m.port, _client_context(cfg, verify=True), m.host, timeout_s)
    out: list[Finding] = []
    if vobj is not None:
        out.append(
            Finding("tls", "ok", "ok", Text("tls_ok", {"version": version}), target=target, data={"version": version})
        )
    else:
        out.append(
            Finding(
                "tls",
                "fail",
                "tls_verify_failed",
                Text("tls_fail", {"error": _err(verr or OSError())}),
                target=target,
                data={"version": version},
            )
        )
    if info is None:
        return out
    data = {
        "subject": info.subject,
        "issuer": info.issuer,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "names": info.names,
    }
    base = {
        "subject": info.subject,
        "issuer": info.issuer,
        "until": info.not_after.strftime("%Y-%m-%d"),
        "start": info.not_before.strftime("%Y-%m-%d %H:%M"),
        "names": ", ".join(info.names) or info.subject,
        "host": m.host,
    }
    verify_code = getattr(verr, "verify_code", None)
    if info.not_after < now:
        days = (now - info.not_after).days
        out.append(
            Finding(
                "cert",
                "fail",
                "cert_expired",
                Text("cert_expired", {**base, "days": days}),
                Text("fix_cert_expired"),
                target=target,
                data=data,
            )
        )
    elif info.not_before > now:
        out.append(
            Finding(
                "cert",
                "fail",
                "cert_not_yet_valid",
                Text("cert_not_yet", base),
                Text("fix_clock"),
                target=target,
                data=data,
            )
        )
        out.append(
            Finding(
                "clock",
                "fail",
                "clock_before_cert",
                Text("clock_before_cert", {"now": now.strftime("%Y-%m-%d %H:%M"), "start": base["start"]}),
                Text("fix_clock"),
            )
        )
    elif vobj is None and (
        verify_code in (X509_HOSTNAME_MISMATCH, X509_IP_MISMATCH) or "mismatch" in _err(verr or OSError()).lower()
    ):
        out.append(
            Finding(
                "cert",
                "fail",
                "cert_hostname",
                Text("cert_hostname", base),
                Text("fix_cert_hostname"),
                target=target,
                data=data,
            )
        )
    elif vobj is None:
        out.append(
            Finding(
                "cert",
                "fail",
                "cert_untrusted",
                Text("cert_untrusted", {**base, "error": _err(verr or OSError())}),
                Text("fix_cert_untrusted"),
                target=target,
                data=data,
            )
        )
    else:
        days = (info.not_after - now).days
        status: Status = "warn" if days < CERT_WARN_DAYS else "ok"
        key = "cert_soon" if status == "warn" else "cert_ok"
        out.append(
            Finding(
                "cert",
                status,
                "cert_expires_soon" if status == "warn" else "ok",
                Text(key, {**base, "days": days}),
                Text("fix_cert_soon") if status == "warn" else None,
                target=target,
                data={**data, "days_left": days},
            )
        )
    # the TLS step failed because of the certificate: the certificate finding says why
    if vobj is None and out[-1].check in ("cert", "clock"):
        out[0] = replace(out[0], fix=out[-1].fix)
    return out


def _check_login(cfg: AgentConfig, addr: str, timeout_s: float, target: str) -> Finding:
    """An MQTT CONNECT with the agent's credentials under a client id of its own (the running
    agent's session is not taken over), and the CONNACK's code."""
    from probes.configfile import SecretMissing
    from protocol.mqtt import make_client

    m = cfg.mqtt
    who, who_zh = ({"user": m.username}, {}) if m.username else ({"user": "anonymous"}, {"user": "匿名"})
    try:
        client = make_client(m, f"netwatch-diag-{cfg.agent.id}-{os.getpid()}", clean_session=True)
    except SecretMissing as e:
        return Finding(
            "auth",
            "fail",
            "secret_missing",
            Text("auth_no_answer", {"timeout": 0, "error": str(e)}),
            Text("fix_auth_secret"),
            target=target,
        )
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result["code"] = int(reason.value) if hasattr(reason, "value") else int(reason)
        result["reason"] = str(reason)
        result["failure"] = bool(getattr(reason, "is_failure", False))
        done.set()

    def on_disconnect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        result.setdefault("disconnect", str(reason))
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    t0 = time.perf_counter()
    try:
        client.connect(addr if not m.uses_tls else m.host, m.port, keepalive=max(5, int(m.keepalive)))
    except (OSError, ssl.SSLError) as e:
        return Finding(
            "auth",
            "fail",
            "connect_failed",
            Text("auth_no_answer", {"timeout": f"{timeout_s:g}", "error": _err(e)}),
            Text("fix_tls" if m.uses_tls else "fix_tcp_refused"),
            target=target,
        )
    deadline = time.monotonic() + timeout_s
    while not done.is_set() and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    ms = (time.perf_counter() - t0) * 1000
    with contextlib.suppress(Exception):
        client.disconnect()
        client.loop(timeout=0.1)
    if "code" not in result:
        why = result.get("disconnect", "timeout")
        return Finding(
            "auth",
            "fail",
            "no_connack",
            Text("auth_no_answer", {"timeout": f"{timeout_s:g}", "error": why}),
            Text("fix_auth"),
            target=target,
        )
    values = {"code": result["code"], "reason": result["reason"], "ms": f"{ms:.1f}"}
    data = {"connack": result["code"], "reason": result["reason"], "username": m.username}
    if result["failure"]:
        return Finding(
            "auth",
            "fail",
            "auth_refused",
            Text("auth_refused", {**values, **who}, who_zh),
            Text("fix_auth"),
            target=target,
            data=data,
        )
    return Finding(
        "auth",
        "ok",
        "ok",
        Text("auth_ok", {**values, **who}, who_zh),
        target=target,
        data={**data, "connect_ms": round(ms, 2)},
    )


# ---------------------------------------------------------------------------------- devices


def first_check(kind: str, error: str) -> Text:
    """The first thing a technician should look at when a probe of ``kind`` fails with ``error``."""
    e = error.lower()
    if kind == "snmp":
        if "refused the credentials" in e or "auth" in e and "v3" in e or "unknown user" in e or "usm" in e:
            return Text("fix_snmp_auth")
        if "no answer" in e or "timeout" in e or "no response" in e or "timed out" in e:
            return Text("fix_snmp_timeout")
        return Text("fix_snmp_partial")
    if kind == "modbus":
        if "cannot connect" in e or "connect" in e and "failed" in e or "serial port" in e:
            return Text("fix_modbus_connect")
        if "exception" in e or "illegal" in e:
            return Text("fix_modbus_exception")
        return Text("fix_modbus_silent")
    if kind == "tcp":
        return Text("fix_tcp_dev_refused" if "refused" in e else "fix_tcp_dev_timeout")
    if kind == "http":
        if "refused" in e:
            return Text("fix_tcp_dev_refused")
        return Text("fix_http")
    if kind == "icmp":
        return Text("fix_icmp_perm" if "permission" in e or "cap_net_raw" in e else "fix_icmp")
    if kind == "host":
        return Text("fix_host")
    return Text("fix_generic")


async def check_devices(cfg: AgentConfig, timeout_s: float) -> list[Finding]:
    """Every configured probe once, each bounded by ``timeout_s`` (or its own shorter timeout)."""
    from agent.scheduler import Scheduler
    from probes.model import PROBE_STATUS

    entries = [replace(e, timeout_s=min(e.timeout_s, timeout_s)) for e in cfg.probes if not e.listener]
    if not entries:
        return []
    sched = Scheduler(entries, lambda s: None, concurrency=cfg.scheduler.concurrency)
    try:
        samples: list[Sample] = await sched.run_once()
    finally:
        for p in sched.probes:
            with contextlib.suppress(Exception):
                await p.aclose()
    by_target = {p.target: (e, p) for e, p in zip(sched.entries, sched.probes, strict=True)}
    out: list[Finding] = []
    for s in samples:
        if s.measurement != PROBE_STATUS:
            continue
        target = s.tags.get("target", "")
        entry = by_target.get(target, (None, None))[0]
        kind = entry.kind if entry is not None else s.tags.get("probe", "")
        name = entry.name if entry is not None else target
        status = str(s.fields.get("status", "ok"))
        error = str(s.fields.get("error", ""))
        ms = s.fields.get("duration_ms")
        data = {"kind": kind, "status": status, "error": error, "duration_ms": ms}
        if status == "ok":
            out.append(
                Finding(
                    "device",
                    "ok",
                    "ok",
                    Text("dev_ok", {"kind": kind, "ms": f"{float(ms or 0):.0f}"}),
                    target=name,
                    data=data,
                )
            )
        else:
            out.append(
                Finding(
                    "device",
                    "fail",
                    f"device_{status}",
                    Text(
                        "dev_bad",
                        {"kind": kind, "status": status, "error": error},
                        {"status": {"down": "故障", "degraded": "降级"}.get(status, status)},
                    ),
                    first_check(kind, error),
                    target=name,
                    data=data,
                )
            )
    return out


# ---------------------------------------------------------------------------------- command


async def run_checks(cfg: AgentConfig, timeout_s: float, devices: bool = True) -> list[Finding]:
    now_ns = time.time_ns()
    now = datetime.fromtimestamp(now_ns / 1e9, UTC)
    clock, broker, devs = await asyncio.gather(
        check_clock(min(timeout_s, 3.0)),
        check_broker(cfg, timeout_s, now),
        check_devices(cfg, timeout_s) if devices else asyncio.sleep(0, []),
    )
    out = [
        Finding("config", "ok", "ok", Text("config_valid", {"path": cfg.path, "n": len(cfg.probes)})),
    ]
    # a clock before the certificate's start found by the TLS step replaces the daemon's word
    clock_from_cert = [f for f in broker if f.check == "clock"]
    if clock.code == "clock_unknown" and not cfg.mqtt.uses_tls:  # no certificate to hold the clock against
        clock = replace(clock, message=Text("clock_unknown_plain"))
    out.append(clock_from_cert[0] if clock_from_cert else clock)
    out.append(check_disk(cfg))
    out += check_spool(cfg, now_ns)
    out += [f for f in broker if f.check != "clock"]
    out += devs
    return out


_ICON = {"ok": "[green]✔[/green]", "warn": "[yellow]![/yellow]", "fail": "[red]✘[/red]", "skip": "[dim]-[/dim]"}


def _print(findings: list[Finding], title: str) -> None:
    from rich.table import Table

    from probes.output import console, lit

    con = console()
    table = Table(title=lit(title), show_lines=True)
    table.add_column(t("col_check"), no_wrap=True)
    table.add_column(f"{t('col_detail')} → {t('col_fix')}", overflow="fold")
    for f in findings:
        colour = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}[f.status]
        name = f"{_ICON[f.status]} [{colour}]{t('chk_' + f.check, sep=chr(10))}[/{colour}]"
        if f.check == "device":
            name += f"\n  {lit(f.target)}"
        detail = lit(f.message.render(sep="\n"))
        if f.fix and f.status != "ok":
            detail += "\n[bold]→ " + lit(f.fix.render(sep="\n→ ")) + "[/bold]"
        table.add_row(name, detail)
    con.print(table)
    problems = [f for f in findings if f.status == "fail"]
    if problems:
        con.print(f"[red]{lit(t('diag_problems', n=len(problems)))}[/red]")
        first = problems[0]
        if first.fix:
            con.print(
                f"→ {lit(t('chk_' + first.check))} {lit(first.target)}: {lit(first.fix.render())}", soft_wrap=True
            )
    else:
        con.print(f"[green]{lit(t('diag_all_ok'))}[/green]")


def diag(
    config: Annotated[Path, typer.Option("--config", "-c", help="agent config file (YAML)")],
    json: Annotated[bool, typer.Option("--json", help="one JSON object per check, then a summary line")] = False,
    timeout: Annotated[str, typer.Option(help="how long each network step and each device may take")] = "3s",
    no_devices: Annotated[bool, typer.Option("--no-devices", help="check the node and the broker only")] = False,
    lang: LangOpt = None,
) -> None:
    """Diagnose this node: config, clock, disk and spool, the broker step by step (DNS, TCP, TLS,
    certificate, login), the last acknowledged batch, and every configured device once — with the
    first thing to check for each problem. Exit 0 all well, 1 something wrong, 2 bad config."""
    from agent import config as agent_config
    from probes.base import parse_duration
    from probes.configfile import ConfigError
    from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, console, lit, print_json_lines

    try:
        timeout_s = parse_duration(timeout)
    except ValueError as e:
        console().print(f"[red]--timeout: {lit(e)}[/red]")
        raise typer.Exit(EXIT_USAGE) from None
    try:
        cfg = agent_config.load(config)
    except ConfigError as e:
        f = Finding(
            "config",
            "fail",
            "config_invalid",
            Text("config_invalid", {"path": config}),
            Text("fix_config"),
            data={"problems": str(e)},
        )
        if json:
            print_json_lines([f.to_dict(), {"check": "summary", "status": "fail", "failed": 1, "exit": EXIT_USAGE}])
        else:
            console().print(f"[red]{lit(t('config_error'))}[/red]:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    import logging

    logging.basicConfig(level=logging.CRITICAL)  # the table says what failed; no log lines on top of it
    findings = asyncio.run(run_checks(cfg, timeout_s, devices=not no_devices))
    failed = [f for f in findings if f.status == "fail"]
    code = EXIT_PROBLEM if failed else EXIT_OK
    if json:
        counts = {s: sum(1 for f in findings if f.status == s) for s in ("ok", "warn", "fail", "skip")}
        print_json_lines(
            [f.to_dict() for f in findings]
            + [
                {
                    "check": "summary",
                    "status": "fail" if failed else "ok",
                    **counts,
                    "first_problem": failed[0].to_dict() if failed else None,
                    "exit": code,
                }
            ]
        )
    else:
        _print(findings, t("diag_title", agent=cfg.agent.id, site=cfg.agent.site))
    raise typer.Exit(code)
