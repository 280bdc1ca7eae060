"""The clock's offset from its time source, read from chrony, systemd-timesyncd or ntpd when
one of them is installed and answering; otherwise nothing (an offset is never guessed)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClockReading:
    """``offset_ms`` is local clock minus reference: positive when this node's clock is ahead.
    It is None when the daemon answers but is not synchronised (then nothing is known)."""

    source: str
    synced: bool
    offset_ms: float | None


_CHRONY_SYSTEM = re.compile(r"^System time\s*:\s*([\d.]+)\s+seconds\s+(fast|slow)\s+of\s+NTP time", re.M)
_CHRONY_LEAP = re.compile(r"^Leap status\s*:\s*(.+?)\s*$", re.M)


def parse_chronyc_tracking(text: str) -> ClockReading | None:
    """``chronyc tracking``: "System time : 0.000012 seconds fast of NTP time" (fast = ahead)."""
    m = _CHRONY_SYSTEM.search(text)
    leap = _CHRONY_LEAP.search(text)
    if not m or not leap:
        return None
    synced = leap.group(1).lower() != "not synchronised"
    offset = float(m.group(1)) * 1000.0 * (1 if m.group(2) == "fast" else -1)
    return ClockReading("chrony", synced, offset if synced else None)


_TSD_OFFSET = re.compile(r"^\s*Offset:\s*([+-]?[\d.]+)\s*(ns|us|µs|ms|s|min)\s*$", re.M)
_TSD_LEAP = re.compile(r"^\s*Leap:\s*(.+?)\s*$", re.M)
_TO_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "min": 60000.0}


def parse_timedatectl_timesync(text: str) -> ClockReading | None:
    """``timedatectl timesync-status``: "Offset: -1.234ms" is the NTP offset (server minus local),
    so the local clock's offset is its negation. No Offset line means no server answered yet."""
    m = _TSD_OFFSET.search(text)
    if not m:
        return None
    leap = _TSD_LEAP.search(text)
    synced = not (leap and leap.group(1).lower().startswith("not"))
    offset = -float(m.group(1)) * _TO_MS[m.group(2)]
    return ClockReading("timesyncd", synced, offset if synced else None)


def parse_ntpq_peers(text: str) -> ClockReading | None:
    """``ntpq -pn``: the peer marked ``*`` is the one the clock follows; its offset column (ms)
    is server minus local. No ``*`` line: ntpd runs but is not synchronised."""
    header = False
    for line in text.splitlines():
        if line.lstrip().startswith("remote"):
            header = True
            continue
        if not header or not line.startswith("*"):
            continue
        cols = line[1:].split()
        # remote refid st t when poll reach delay offset jitter
        if len(cols) >= 10:
            try:
                return ClockReading("ntpd", True, -float(cols[8]))
            except ValueError:
                return None
    return ClockReading("ntpd", False, None) if header else None


#: Tried in this order; the first that answers with something parseable wins.
SOURCES: tuple[tuple[str, tuple[str, ...], Callable[[str], ClockReading | None]], ...] = (
    ("chronyc", ("-n", "tracking"), parse_chronyc_tracking),
    ("timedatectl", ("timesync-status",), parse_timedatectl_timesync),
    ("ntpq", ("-pn",), parse_ntpq_peers),
)


async def _run(binary: str, args: tuple[str, ...], timeout_s: float) -> str | None:
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "LC_ALL": "C"},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out.decode("utf-8", "replace") if proc.returncode == 0 else None


async def read_clock(timeout_s: float) -> ClockReading | None:
    """Ask each installed time daemon's client in turn, within ``timeout_s`` overall."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for name, args, parse in SOURCES:
        binary = shutil.which(name)
        remaining = deadline - loop.time()
        if binary is None or remaining <= 0:
            continue
        try:
            text = await _run(binary, args, min(2.0, remaining))
        except OSError as e:  # present but not executable, and the like
            log.debug("%s: %s", name, e)
            continue
        reading = parse(text) if text else None
        if reading is not None:
            return reading
    return None
