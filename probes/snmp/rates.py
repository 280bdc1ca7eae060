"""Rate maths for SNMP counters, as pure functions: deltas across Counter32/Counter64 wrap,
reboot detection from sysUpTime, per-second rates and percentages."""

from __future__ import annotations

import math

COUNTER32_MOD = 2**32
COUNTER64_MOD = 2**64


def rebooted(prev_uptime: int | None, uptime: int | None) -> bool:
    """sysUpTime went back: the device (or its agent) restarted and every counter started over.
    Unknown uptimes are not a reboot. (sysUpTime itself wraps after 497 days; that too reads as a
    restart and costs one rate, which is the safe side.)"""
    return prev_uptime is not None and uptime is not None and uptime < prev_uptime


def counter_delta(prev: int, cur: int, bits: int) -> int | None:
    """How far a counter moved since ``prev``, or ``None`` when that cannot be known.

    A Counter32 that went down wrapped past 2^32 once (at multi-gigabit rates it can wrap more
    than once between polls; that is what ifHC counters are for). A Counter64 that went down is
    only a wrap if it was in its top half — 2^63 bytes do not pass between two polls — otherwise
    the counter was reset (cleared, line card restarted) and the delta is unknown.
    """
    if prev < 0 or cur < 0:
        return None
    if cur >= prev:
        return cur - prev
    if bits == 32:
        if prev >= COUNTER32_MOD:
            return None
        return cur + COUNTER32_MOD - prev
    if bits == 64 and prev >= COUNTER64_MOD // 2:
        return cur + COUNTER64_MOD - prev
    return None


def rate(delta: int | None, seconds: float, scale: float = 1.0) -> float | None:
    """``delta`` per second times ``scale`` (8 turns octets into bits); ``None`` without a delta
    or a positive, finite interval."""
    if delta is None or not math.isfinite(seconds) or seconds <= 0:
        return None
    return delta * scale / seconds


def counter_rate(
    prev: int, prev_t: float, cur: int, cur_t: float, *, bits: int, scale: float = 1.0, limit: float | None = None
) -> float | None:
    """The per-second rate between two readings of one counter, or ``None`` when it cannot be told
    (reset, no time passed, or above ``limit`` — a reset that looks like a wrap)."""
    value = rate(counter_delta(prev, cur, bits), cur_t - prev_t, scale)
    if value is not None and limit is not None and limit > 0 and value > limit:
        return None
    return value


def percent(part: float | None, whole: float | None, whole_scale: float = 1.0) -> float | None:
    """``part`` as a percentage of ``whole × whole_scale``; ``None`` when the whole is unknown or 0."""
    if part is None or whole is None:
        return None
    denominator = whole * whole_scale
    if not math.isfinite(denominator) or denominator <= 0:
        return None
    return part * 100.0 / denominator
