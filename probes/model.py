"""The one unit every layer passes on: a Sample, shaped like an InfluxDB point."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FieldValue = int | float | bool | str
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def storable(value: object) -> bool:
    """Whether a field value can be stored by every sink and sent on the wire: a bool, a string,
    a finite float or an integer within int64. The hot paths (envelope decoding, the SQLite and
    line-protocol writers) inline this test on exact types; this is the definition they follow."""
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    return False


#: Measurement name for per-target health, emitted by every probe.
PROBE_STATUS = "probe_status"
#: Measurement name for events (traps, state changes, device exceptions): the agent sends
#: these on its events topic at once instead of waiting for the next metrics batch.
EVENT = "event"
EventSeverity = Literal["info", "warning", "critical"]

Status = Literal["ok", "degraded", "down"]
STATUS_CODES: dict[str, int] = {"ok": 0, "degraded": 1, "down": 2}


def now_ns() -> int:
    return time.time_ns()


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement of one thing at one time.

    ``tags`` hold identity (site, agent, device, ifname...), ``fields`` the values with unit
    suffixes in their names; ``time_ns`` is when it was measured, in ns since the epoch.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int = field(default_factory=now_ns)

    def with_tags(self, extra: Mapping[str, str], *, override: bool = True) -> Sample:
        """A copy with ``extra`` tags merged in (``override`` decides who wins on conflict)."""
        merged = {**self.tags, **extra} if override else {**extra, **self.tags}
        return Sample(self.measurement, merged, self.fields, self.time_ns)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines shape every ``--json`` command prints."""
        return {
            "measurement": self.measurement,
            "tags": dict(self.tags),
            "fields": dict(self.fields),
            "time": self.time_ns,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sample:
        return cls(d["measurement"], dict(d["tags"]), dict(d["fields"]), int(d["time"]))


def _fast_init() -> None:
    """Sample stays frozen, but its ``__init__`` writes the slots through their descriptors instead
    of the generated ``object.__setattr__`` call per field: a probe makes a Sample per point per
    poll (20 for a 20-value meter), and this halves their cost (bench/modbus)."""
    slots = [Sample.__dict__[name].__set__ for name in ("measurement", "tags", "fields", "time_ns")]
    set_m, set_t, set_f, set_n = slots
    clock = time.time_ns

    def __init__(  # noqa: N807
        self: Sample,
        measurement: str,
        tags: Mapping[str, str],
        fields: Mapping[str, FieldValue],
        time_ns: int | None = None,
    ) -> None:
        set_m(self, measurement)
        set_t(self, tags)
        set_f(self, fields)
        set_n(self, clock() if time_ns is None else time_ns)

    __init__.__qualname__ = "Sample.__init__"
    setattr(Sample, "__init__", __init__)  # noqa: B010 - mypy keeps the dataclass signature


_fast_init()


def clean_fields(fields: Mapping[str, Any]) -> dict[str, FieldValue]:
    """Drop values no time-series store can hold (None, NaN, ±Inf, other types).

    Probes call this so a missing reading becomes an absent field, never a poisoned one.
    """
    out: dict[str, FieldValue] = {}
    for k, v in fields.items():
        if v is None:
            continue
        if isinstance(v, bool | int | str) or isinstance(v, float) and math.isfinite(v):
            out[k] = v
    return out


def event_sample(
    kind: str,
    source: str,
    message: str,
    *,
    severity: EventSeverity = "info",
    tags: Mapping[str, str] | None = None,
    fields: Mapping[str, Any] | None = None,
    time_ns: int | None = None,
) -> Sample:
    """Something that happened, as opposed to a reading: an SNMP trap, a Modbus exception,
    a link going down. ``kind`` says what (``snmp_trap``), ``source`` where it came from."""
    return Sample(
        EVENT,
        {"type": kind, "source": source, **(tags or {})},
        clean_fields({**(fields or {}), "message": message, "severity": severity}),
        time_ns if time_ns is not None else now_ns(),
    )


def status_sample(
    probe: str,
    target: str,
    status: Status,
    *,
    error: str = "",
    duration_ms: float | None = None,
    tags: Mapping[str, str] | None = None,
    time_ns: int | None = None,
) -> Sample:
    """The per-target health Sample: ok, degraded (part of the data) or down, with why.
    Every probe makes one per target per poll, so the fields are built clean rather than
    passed through :func:`clean_fields`: a missing or non-finite duration is left out."""
    fields: dict[str, FieldValue] = {"status": status, "status_code": STATUS_CODES[status], "error": error or ""}
    if duration_ms is not None and math.isfinite(duration_ms):
        fields["duration_ms"] = duration_ms
    return Sample(
        PROBE_STATUS,
        {"probe": probe, "target": target, **tags} if tags else {"probe": probe, "target": target},
        fields,
        time_ns if time_ns is not None else now_ns(),
    )
