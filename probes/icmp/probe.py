"""ICMP echo to one host through datagram sockets, raw sockets or the system ``ping`` binary,
whichever this process may use; loss, RTT and jitter come back as one ``icmp`` Sample."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from icmplib import AsyncSocket, ICMPRequest, ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPError, ICMPLibError, SocketPermissionError, TimeoutExceeded
from icmplib.utils import unique_identifier

from probes.base import Probe
from probes.icmp.config import IcmpConfig
from probes.model import Sample, Status, clean_fields, status_sample

log = logging.getLogger(__name__)

Mode = Literal["datagram", "raw", "ping-binary"]
MEASUREMENT = "icmp"
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
_CONFIG_MODE: dict[str, Mode] = {"datagram": "datagram", "raw": "raw", "ping": "ping-binary"}


class IcmpUnavailable(Exception):
    """This process may not send ICMP the requested way; the message says how to allow it."""


# --- choosing how to send ---------------------------------------------------------------------


def ping_group_range(path: str = PING_GROUP_RANGE) -> tuple[int, int] | None:
    """The gids the kernel lets open ICMP datagram sockets, or None where the file is absent."""
    try:
        lo, hi = Path(path).read_text(encoding="ascii").split()[:2]
        return int(lo), int(hi)
    except (OSError, ValueError):
        return None


def _socket_allowed(sock_type: int) -> bool:
    try:
        socket.socket(socket.AF_INET, sock_type, socket.IPPROTO_ICMP).close()
    except OSError:
        return False
    return True


def _datagram_hint() -> str:
    rng = ping_group_range()
    where = f"net.ipv4.ping_group_range is {rng[0]} {rng[1]}" if rng else "no ping_group_range here"
    return f"gid {os.getgid()} may not open ICMP datagram sockets ({where})"


@functools.cache
def detect_mode() -> Mode:
    """How this process sends echo requests, decided once and logged once.

    Datagram sockets come first: the kernel hands each socket only its own replies, so many
    concurrent targets cost nothing extra. Raw sockets (CAP_NET_RAW) see every ICMP packet on
    the host; the ``ping`` binary costs a process per poll and is the last resort.
    """
    if _socket_allowed(socket.SOCK_DGRAM):
        rng = ping_group_range()
        log.info(
            "ICMP mode: datagram (ping_group_range %s allows gid %d)",
            rng and f"{rng[0]}-{rng[1]}",
            os.getgid(),
        )
        return "datagram"
    if _socket_allowed(socket.SOCK_RAW):
        log.info("ICMP mode: raw (%s; using CAP_NET_RAW)", _datagram_hint())
        return "raw"
    binary = shutil.which("ping")
    if binary:
        log.info("ICMP mode: ping-binary %s (%s and no CAP_NET_RAW)", binary, _datagram_hint())
    else:
        log.warning(
            "ICMP mode: none works — %s, no CAP_NET_RAW and no ping binary; icmp probes will report down "
            "until one of them is allowed",
            _datagram_hint(),
        )
    return "ping-binary"


# --- statistics ----------------------------------------------------------------------------------


def rtt_stats(sent: int, rtts_ms: Sequence[float]) -> dict[str, int | float | None]:
    """Loss and RTT statistics from the RTTs of the replies, in the order they were sent.

    Jitter is the mean absolute difference of successive RTTs (RFC 3550's idea, unsmoothed);
    it needs two replies, as RTT figures need one — otherwise they are None (absent).
    """
    received = len(rtts_ms)
    out: dict[str, int | float | None] = {
        "sent": sent,
        "received": received,
        "loss_pct": 100.0 * (sent - received) / sent if sent else None,
        "rtt_min_ms": min(rtts_ms) if rtts_ms else None,
        "rtt_avg_ms": sum(rtts_ms) / received if rtts_ms else None,
        "rtt_max_ms": max(rtts_ms) if rtts_ms else None,
        "jitter_ms": None,
    }
    if received >= 2:
        diffs = [abs(b - a) for a, b in zip(rtts_ms, rtts_ms[1:], strict=False)]
        out["jitter_ms"] = sum(diffs) / len(diffs)
    return out


@dataclass(slots=True)
class EchoRun:
    """What one burst of echo requests gave: how many went out, the RTT of each answered
    sequence number, and the last error seen (an ICMP error reply, a send failure...)."""

    sent: int = 0
    rtts_ms: dict[int, float] = field(default_factory=dict)
    error: str = ""

    def ordered_rtts(self) -> list[float]:
        return [self.rtts_ms[s] for s in sorted(self.rtts_ms)]


# --- sockets (datagram or raw), through icmplib ---------------------------------------------------


async def resolve(host: str, deadline: float) -> str:
    """An address literal for ``host`` (names resolve within the remaining budget)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM), max(0.0, deadline - loop.time())
        )
    except TimeoutError:
        raise OSError(f"no DNS answer for {host!r} in time") from None
    except socket.gaierror as e:
        raise OSError(f"cannot resolve {host!r}: {e.strerror}") from None
    return str(infos[0][4][0])


async def echo_sockets(address: str, cfg: IcmpConfig, *, privileged: bool, deadline: float) -> EchoRun:
    """Send ``cfg.count`` requests every ``packet_interval`` while collecting replies, so a poll
    takes about (count-1) × interval + one reply time, never past ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    sock_cls = ICMPv6Socket if ipaddress.ip_address(address).version == 6 else ICMPv4Socket
    try:
        icmp_sock = sock_cls(privileged=privileged)
    except SocketPermissionError:
        if privileged:
            raise IcmpUnavailable(
                "raw ICMP sockets need CAP_NET_RAW — grant it to the agent (systemd AmbientCapabilities="
                "CAP_NET_RAW) or use mode: auto"
            ) from None
        raise IcmpUnavailable(
            f"{_datagram_hint()} — widen it (sysctl net.ipv4.ping_group_range='0 2147483647') or use mode: auto"
        ) from None

    run = EchoRun()
    sent_at: dict[int, float] = {}  # sequence -> icmplib's send timestamp (wall clock, as its replies)
    ident = unique_identifier()
    start = loop.time()
    # Until the sender is done, listen as long as the last planned request could be answered.
    last_due = start + (cfg.count - 1) * cfg.packet_interval + cfg.packet_timeout
    sending_done = False

    async def send_all(sock: AsyncSocket) -> None:
        nonlocal ident, sending_done, last_due
        last_sent = loop.time()
        try:
            for seq in range(cfg.count):
                wait = start + seq * cfg.packet_interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if loop.time() >= deadline:
                    break
                request = ICMPRequest(address, ident, seq, payload_size=cfg.size)
                sock.send(request)
                # A datagram socket's kernel rewrites the identifier; replies carry the new one.
                ident = request.id
                sent_at[seq] = request.time
                last_sent = loop.time()
                run.sent += 1
        except ICMPLibError as e:
            run.error = f"send failed: {e}"
        finally:
            sending_done = True
            # Nothing more will go out: listen one reply time past the last request, if any.
            last_due = last_sent + cfg.packet_timeout if sent_at else loop.time()

    with AsyncSocket(icmp_sock) as sock:
        sender = asyncio.create_task(send_all(sock))
        try:
            while True:
                if sending_done and len(run.rtts_ms) >= run.sent:
                    break
                now = loop.time()
                horizon = min(deadline, last_due)
                if now >= horizon:
                    break
                # Wake at least every 100 ms to notice the sender finishing early.
                try:
                    reply = await sock.receive(None, min(horizon - now, 0.1))
                except TimeoutExceeded:
                    continue
                except ICMPLibError as e:
                    # The socket itself failed (not one bad packet): retrying would only spin.
                    run.error = f"receive failed: {e}"
                    break
                if reply.id != ident or reply.sequence not in sent_at or reply.sequence in run.rtts_ms:
                    continue  # someone else's echo, a late duplicate, or our own request on loopback
                try:
                    reply.raise_for_status()
                except ICMPError as e:
                    run.error = str(e)
                    continue
                rtt_ms = (reply.time - sent_at[reply.sequence]) * 1000.0
                if rtt_ms <= cfg.packet_timeout * 1000.0:
                    run.rtts_ms[reply.sequence] = max(rtt_ms, 0.0)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return run


# --- the system ping binary ------------------------------------------------------------------------

_REPLY = re.compile(r"\b(?:icmp_)?seq=(\d+)\b.*?\btime[=<]\s*([\d.]+)\s*ms")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_FROM_ERROR = re.compile(r"^From \S+.*?(?:icmp_)?seq=\d+\s+(.+)$")


def parse_ping_output(text: str) -> EchoRun:
    """Parse iputils or BusyBox ``ping`` output (LC_ALL=C): per-reply RTTs and the summary."""
    run = EchoRun()
    summary_sent: int | None = None
    for line in text.splitlines():
        if "DUP!" in line:
            continue
        if m := _REPLY.search(line):
            seq = int(m.group(1))
            run.rtts_ms.setdefault(seq, float(m.group(2)))
        elif m := _SUMMARY.search(line):
            summary_sent = int(m.group(1))
        elif m := _FROM_ERROR.match(line.strip()):
            run.error = m.group(1).strip()
    if summary_sent is not None:
        run.sent = summary_sent
    return run


async def echo_ping_binary(host: str, cfg: IcmpConfig, *, deadline: float) -> EchoRun:
    """Run ``ping``; at the deadline send it SIGINT, on which it prints its summary and exits."""
    binary = shutil.which("ping")
    if binary is None:
        raise IcmpUnavailable(
            f"no ping binary on PATH and {_datagram_hint()} without CAP_NET_RAW — install iputils-ping, "
            "grant CAP_NET_RAW or widen net.ipv4.ping_group_range"
        )
    loop = asyncio.get_running_loop()
    args = [
        binary,
        "-n",
        "-c",
        str(cfg.count),
        "-i",
        f"{cfg.packet_interval:g}",
        "-W",
        f"{cfg.packet_timeout:g}",
    ]
    args += ["-s", str(cfg.size), host]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LC_ALL": "C"},
    )
    # Leave a little of the budget for ping to print its summary after SIGINT.
    grace = min(0.3, max(0.0, deadline - loop.time()) / 4)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), max(0.0, deadline - loop.time() - grace))
    except TimeoutError:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), grace)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
    run = parse_ping_output(out.decode("utf-8", "replace"))
    if run.sent == 0 and not run.rtts_ms:
        detail = err.decode("utf-8", "replace").strip() or f"ping exited with code {proc.returncode}"
        raise OSError(re.sub(r"^\S*ping: ", "", detail))
    if run.sent == 0:
        # Killed before its summary: assume it sent them all, which can only overstate loss.
        run.sent = max(cfg.count, len(run.rtts_ms))
    return run


# --- the probe -----------------------------------------------------------------------------------


class IcmpProbe(Probe):
    kind: ClassVar[str] = "icmp"
    config_model: ClassVar[type[IcmpConfig]] = IcmpConfig
    config: IcmpConfig

    def mode(self) -> Mode:
        """The forced mode from config, else what this process detected."""
        return _CONFIG_MODE.get(self.config.mode) or detect_mode()

    async def collect(self) -> list[Sample]:
        cfg = self.config
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        deadline = loop.time() + self.budget_s
        mode = self.mode()
        where = f"icmp {self.target} ({cfg.host}, {mode})"
        try:
            if mode == "ping-binary":
                run = await echo_ping_binary(cfg.host, cfg, deadline=deadline)
            else:
                address = await resolve(cfg.host, deadline)
                run = await echo_sockets(address, cfg, privileged=mode == "raw", deadline=deadline)
        except (IcmpUnavailable, OSError) as e:
            return [self._status("down", f"{where}: {e}", t0)]

        stats = rtt_stats(run.sent, run.ordered_rtts())
        samples: list[Sample] = []
        if run.sent:
            tags = {"target": self.target, "host": cfg.host}
            samples.append(Sample(MEASUREMENT, tags, clean_fields(stats)))
        status, error = self._judge(run, where)
        samples.append(self._status(status, error, t0))
        return samples

    def _judge(self, run: EchoRun, where: str) -> tuple[Status, str]:
        cfg = self.config
        received = len(run.rtts_ms)
        why = f" (last error: {run.error})" if run.error else ""
        if run.sent == 0:
            return "down", f"{where}: no echo request could be sent{why}"
        if received == 0:
            return "down", (
                f"{where}: no reply to {run.sent} echo requests within {cfg.packet_timeout:g} s each{why} — "
                "check the link, the route and any firewall dropping ICMP"
            )
        problems = []
        if received < run.sent:
            problems.append(f"{run.sent - received} of {run.sent} echo requests lost")
        if run.sent < cfg.count:
            problems.append(
                f"only {run.sent} of {cfg.count} sent within the {self.budget_s:g} s budget — "
                "lower count or packet_interval, or raise the timeout"
            )
        return ("degraded", f"{where}: {'; '.join(problems)}{why}") if problems else ("ok", "")

    def _status(self, status: Status, error: str, t0: float) -> Sample:
        return status_sample(
            self.kind, self.target, status, error=error, duration_ms=(time.perf_counter() - t0) * 1000.0
        )
