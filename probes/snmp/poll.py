"""Running device profiles against one session: the first GET (system group, detection), the plan
(one GET for every scalar, one walk per column, fallback columns only where rows lack values),
rows joined on their index into Samples, and rates against the previous poll."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from probes.model import FieldValue, Sample, clean_fields, now_ns
from probes.scaling import scaled
from probes.snmp import rates
from probes.snmp.adapt import Adaptive, Gate
from probes.snmp.config import SnmpConfig
from probes.snmp.profile import (
    FieldSpec,
    Profile,
    ScalarGroup,
    Source,
    TableSpec,
    builtin_profiles,
    detect_oids,
    select,
)
from probes.snmp.session import MISSING_TYPES, SnmpError, SnmpSession, VarBind

SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
FIRST_GET = [SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME, SYS_LOCATION]

# ENTITY-SENSOR-MIB SensorDataScale -> power of ten: 9 is units, each step 10^3, except that the
# MIB lists exa(14) before peta(15).
_SENSOR_EXP = {scale: 3 * (scale - 9) for scale in range(1, 18)} | {14: 18, 15: 15}
# SensorDataType -> (`type` tag, unit)
_SENSOR_TYPES = {
    1: ("other", ""),
    2: ("unknown", ""),
    3: ("voltage_ac", "V"),
    4: ("voltage_dc", "V"),
    5: ("current", "A"),
    6: ("power", "W"),
    7: ("frequency", "Hz"),
    8: ("temperature", "C"),
    9: ("humidity", "%RH"),
    10: ("fan_speed", "rpm"),
    11: ("airflow", "m3/min"),
    12: ("truth_value", ""),
}
_UPS_ON_BATTERY = 5


def decode_text(raw: object) -> str:
    """An OctetString as text: UTF-8, else GB 18030 (Chinese devices' ifAlias and names), else
    UTF-8 with replacement; trailing NULs and surrounding space dropped."""
    if isinstance(raw, bytes):
        data = raw.rstrip(b"\x00")
        for codec in ("utf-8", "gb18030"):
            try:
                return data.decode(codec).strip()
            except UnicodeDecodeError:
                continue
        return data.decode("utf-8", "replace").strip()
    return "" if raw is None else str(raw).strip()


def _number(raw: object) -> int | float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, bytes):  # some agents send numbers as DisplayString
        text = decode_text(raw)
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
            return value if math.isfinite(value) else None
    return None


def decode_value(vb: VarBind | None, spec: FieldSpec, source: Source) -> FieldValue | None:
    """One VarBind as the field ``spec`` wants it; ``None`` for absent or invalid readings."""
    if vb is None or vb[1] in MISSING_TYPES:
        return None
    raw = vb[2]
    kind = spec.kind
    if kind == "string":
        return decode_text(raw)
    if kind == "oid":
        return raw if isinstance(raw, str) else decode_text(raw)
    n = _number(raw)
    if n is None:
        return None
    if isinstance(n, int):
        if n in spec.invalid:
            return None
        if spec.map is not None:
            n = spec.map.get(n, n)
    if source.scale is not None:
        n = scaled(n, source.scale)
    if kind == "int":
        return int(round(n))
    return float(n)


@dataclass(slots=True)
class Column:
    """One walked column: index (the OID suffix after the column) -> VarBind, in walk order."""

    rows: dict[str, VarBind]
    t: float


@dataclass(slots=True)
class PollOutcome:
    samples: list[Sample]
    #: what could not be read (walks or GETs that failed, or did not finish in time)
    problems: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    #: table rows left out because a name tag could not be read and none was remembered
    withheld: int = 0


@dataclass(slots=True)
class _Reading:
    value: int
    t: float
    bits: int


class Poller:
    """Polls one device with its profiles; keeps the previous counters for rates between polls."""

    def __init__(
        self,
        device: str,
        cfg: SnmpConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        profiles: Mapping[str, Profile] | None = None,
        adaptive: Adaptive | None = None,
    ) -> None:
        self.device = device
        self.cfg = cfg
        #: how hard this device may be pushed, learnt across polls (the session reports to it)
        self.adaptive = (
            adaptive
            if adaptive is not None
            else Adaptive(
                timeout_s=cfg.request_timeout, max_in_flight=cfg.max_in_flight, max_repetitions=cfg.max_repetitions
            )
        )
        self.clock = clock
        self.profiles = dict(profiles) if profiles is not None else builtin_profiles()
        self._readings: dict[tuple[Any, ...], _Reading] = {}
        #: (profile, table number, row index, tag) -> the tag as last read in full; stands in when
        #: this poll could not read it, so a row keeps its series (tags are a series' identity)
        self._tags: dict[tuple[str, int, str, str], str] = {}
        self._uptime: int | None = None

    # -- one poll ------------------------------------------------------------------------------

    async def poll(self, session: SnmpSession, *, budget_s: float) -> PollOutcome:
        """One poll. Raises SnmpError when the device does not answer the first GET (down);
        anything that fails after that is a problem in the outcome (degraded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        names = self.cfg.profile_names()
        try:
            return await self._poll(session, deadline, names)
        finally:
            self.adaptive.poll_done()

    async def _poll(self, session: SnmpSession, deadline: float, names: list[str] | None) -> PollOutcome:
        time_ns = now_ns()
        all_profiles = list(self.profiles.values())
        first = FIRST_GET + ([o for o in detect_oids(all_profiles) if o not in FIRST_GET] if names is None else [])
        async with asyncio.timeout_at(deadline):
            answer = await session.get(first)
        scalars: dict[str, VarBind] = {oid: vb for oid, vb in zip(first, answer, strict=False)}
        sys_oid = scalars.get(SYS_OBJECT_ID)
        sys_object_id = sys_oid[2] if sys_oid and sys_oid[1] == "ObjectIdentifier" else None
        detected = [o for o in first[len(FIRST_GET) :] if o in scalars and scalars[o][1] not in MISSING_TYPES]
        chosen = select(all_profiles, str(sys_object_id) if sys_object_id else None, detected=detected, names=names)
        uptime_vb = scalars.get(SYS_UPTIME)
        uptime = uptime_vb[2] if uptime_vb and isinstance(uptime_vb[2], int) else None

        fetch = _Fetch(session, self.cfg, self.clock, deadline, scalars, self.adaptive)
        await fetch.run(_scalar_oids(chosen), _first_columns(chosen))
        # Then tags of tables with rows, and fallbacks: bounded by the longest list of sources.
        rounds = 1 + max(
            (
                len(spec.all_sources)
                for p in chosen
                for t in p.tables
                for spec in (*t.fields.values(), *t.tags.values())
            ),
            default=0,
        )
        for _ in range(rounds):
            more = _next_columns(chosen, fetch.columns, fetch.failed)
            if not more:
                break
            await fetch.run([], more)

        reboot = rates.rebooted(self._uptime, uptime)
        self._uptime = uptime if uptime is not None else self._uptime
        if reboot:
            self._tags.clear()  # a restarted device may number its rows anew
        samples: list[Sample] = []
        withheld: dict[tuple[str, tuple[str, ...]], int] = {}
        for profile in chosen:
            for group in profile.scalars:
                s = self._scalar_sample(group, fetch, time_ns)
                if s is not None:
                    samples.append(s)
            for n, table in enumerate(profile.tables):
                samples += self._table_samples(profile.name, n, table, fetch, time_ns, reboot, withheld)
        problems = list(fetch.problems)
        for (measurement, unread), n in withheld.items():
            problems.append(
                f"{n} {measurement} row{'s' if n != 1 else ''} left out: {', '.join(unread)} not read this poll and not known"
                f" from an earlier one (without {'it' if len(unread) == 1 else 'them'} a row would start a second series)"
            )
        return PollOutcome(samples, problems, [p.name for p in chosen], sum(withheld.values()))

    # -- scalar groups -------------------------------------------------------------------------

    def _scalar_sample(self, group: ScalarGroup, fetch: _Fetch, time_ns: int) -> Sample | None:
        fields: dict[str, Any] = {}
        for name, spec in group.fields.items():
            value = None
            for source in spec.all_sources:
                if source.rows is None:
                    value = decode_value(fetch.scalars.get(source.oid), spec, source)
                else:
                    col = fetch.columns.get(source.oid)
                    values = [decode_value(vb, spec, source) for vb in (col.rows.values() if col else ())]
                    value = _aggregate(source.rows, [v for v in values if v is not None])
                if value is not None:
                    break
            if value is not None:
                _put(fields, name, spec, value)
        # RFC 1628 agents read 0 minutes while on mains: that is "not estimated", not empty.
        if (
            "ups_runtime_zero_on_mains" in group.quirks
            and fields.get("runtime_min") == 0
            and fields.get("output_source") != _UPS_ON_BATTERY
        ):
            fields.pop("runtime_min")
        _derive(fields, group.derive)
        emitted = _emitted(fields, group.fields, group.derive)
        if not emitted:
            return None
        return Sample(group.measurement, {"device": self.device, **group.static_tags}, emitted, time_ns)

    # -- tables --------------------------------------------------------------------------------

    def _table_samples(
        self,
        profile: str,
        number: int,
        table: TableSpec,
        fetch: _Fetch,
        time_ns: int,
        reboot: bool,
        withheld: dict[tuple[str, tuple[str, ...]], int],
    ) -> list[Sample]:
        out: list[Sample] = []
        count = _row_count(table, fetch.scalars)
        for index in _row_indices(table, fetch.columns):
            if count is not None and _row_number(index) > count:
                continue
            fields: dict[str, Any] = {}
            kinds: dict[str, tuple[str, float]] = {}
            for name, spec in table.fields.items():
                for source in spec.all_sources:
                    col = fetch.columns.get(source.oid)
                    vb = col.rows.get(index) if col else None
                    value = decode_value(vb, spec, source)
                    if value is not None:
                        _put(fields, name, spec, value)
                        assert col is not None and vb is not None
                        kinds[name] = (vb[1], col.t)
                        break
            if not _keep(table, fields):
                continue
            tags = {"device": self.device, **table.static_tags}
            if table.index_tag is not None:
                suffix = table.index_drop_suffix
                tags[table.index_tag] = index.removesuffix(suffix) if suffix else index
            unknown = []
            for name, spec in table.tags.items():
                key = (profile, number, index, name)
                text = _tag_value(spec, index, fetch.columns, fetch.failed)
                if text is not None:
                    self._tags[key] = text
                else:
                    text = self._tags.get(key)
                    if text is None:
                        unknown.append(name)
                if text:
                    tags[name] = text
            if table.transform == "entity_sensor" and not _entity_sensor(fields, tags):
                continue
            if unknown:
                what = (table.measurement, tuple(unknown))
                withheld[what] = withheld.get(what, 0) + 1
                continue
            if table.filter_tag is not None and not self.cfg.interfaces.keeps(tags.get(table.filter_tag, index)):
                continue
            self._rates(fields, kinds, table, (profile, number, index), reboot)
            _derive(fields, table.derive)
            emitted = _emitted(fields, table.fields, table.derive, table.rates)
            if emitted:
                out.append(Sample(table.measurement, tags, emitted, time_ns))
        return out

    def _rates(
        self,
        fields: dict[str, Any],
        kinds: Mapping[str, tuple[str, float]],
        table: TableSpec,
        key: tuple[Any, ...],
        reboot: bool,
    ) -> None:
        for name, spec in table.rates.items():
            cur = fields.get(spec.counter)
            if not isinstance(cur, int) or spec.counter not in kinds:
                continue
            vtype, t = kinds[spec.counter]
            bits = 64 if vtype == "Counter64" else 32
            rkey = (*key, spec.counter)
            prev = self._readings.get(rkey)
            self._readings[rkey] = _Reading(cur, t, bits)
            # After a reboot every counter restarted: this poll only sets the new baseline.
            if prev is None or reboot or prev.bits != bits:
                continue
            limit = fields.get(spec.limit) if spec.limit else None
            value = rates.counter_rate(
                prev.value,
                prev.t,
                cur,
                t,
                bits=bits,
                scale=spec.scale,
                limit=limit * spec.limit_scale if isinstance(limit, int | float) and limit > 0 else None,
            )
            if value is not None:
                fields[name] = value


class _Fetch:
    """What one poll read so far, and the requests that read it (bounded by the poll's deadline
    and the device's cap on requests in flight)."""

    def __init__(
        self,
        session: SnmpSession,
        cfg: SnmpConfig,
        clock: Callable[[], float],
        deadline: float,
        scalars: dict[str, VarBind],
        adaptive: Adaptive,
    ) -> None:
        self.session = session
        self.cfg = cfg
        self.clock = clock
        self.deadline = deadline
        self.scalars = scalars
        self.columns: dict[str, Column] = {}
        self.failed: set[str] = set()
        self.problems: list[str] = []
        self.adaptive = adaptive
        # Walks at once: the device's current pacing (its configured max_in_flight until it backs off).
        self._sem = Gate(adaptive.in_flight_now)

    async def run(self, scalar_oids: Iterable[str], columns: Iterable[str]) -> None:
        todo_scalars = [o for o in dict.fromkeys(scalar_oids) if o not in self.scalars]
        todo_columns = [c for c in dict.fromkeys(columns) if c not in self.columns and c not in self.failed]
        jobs: dict[asyncio.Task[None], str] = {}
        if todo_scalars:
            jobs[asyncio.create_task(self._get(todo_scalars))] = f"GET of {len(todo_scalars)} scalars"
        for col in todo_columns:
            jobs[asyncio.create_task(self._walk(col))] = f"walk of {col}"
        if not jobs:
            return
        remaining = self.deadline - asyncio.get_running_loop().time()
        done, pending = await asyncio.wait(jobs, timeout=max(0.0, remaining))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            unfinished = sorted(jobs[t] for t in pending)
            self.failed.update(jobs[t].removeprefix("walk of ") for t in pending)
            a = self.adaptive
            if a.adapted and a.srtt is not None:
                # Paced to a slow device: its round trip, not the GETBULK size, is what takes the time.
                hint = (
                    f"the device is slow (round trip {a.srtt:.2g} s, {a.in_flight} in flight, see adapted):"
                    " raise the entry's timeout"
                )
            else:
                hint = "raise the entry's timeout or lower max_repetitions"
            self.problems.append(
                f"{len(unfinished)} requests unfinished when the poll's time ran out ({unfinished[0]}"
                f"{', …' if len(unfinished) > 1 else ''}) — {hint}"
            )
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, SnmpError):
                raise exc

    async def _get(self, oids: Sequence[str]) -> None:
        async with self._sem:
            try:
                answer = await self.session.get(oids)
            except SnmpError as e:
                self.problems.append(f"GET of {len(oids)} scalars failed: {e}")
                return
        for oid, vb in zip(oids, answer, strict=False):
            self.scalars[oid] = vb

    async def _walk(self, column: str) -> None:
        async with self._sem:
            try:
                varbinds = await self.session.walk(column, max_repetitions=self.cfg.max_repetitions)
            except SnmpError as e:
                self.failed.add(column)
                self.problems.append(f"walk of {column} failed: {e}")
                return
        prefix = column + "."
        rows = {vb[0][len(prefix) :]: vb for vb in varbinds if vb[0].startswith(prefix)}
        self.columns[column] = Column(rows, self.clock())


# -- planning ----------------------------------------------------------------------------------


def _scalar_oids(profiles: Iterable[Profile]) -> list[str]:
    return [
        s.oid
        for p in profiles
        for g in p.scalars
        for spec in g.fields.values()
        for s in spec.all_sources
        if s.rows is None
    ] + [t.row_count for p in profiles for t in p.tables if t.row_count is not None]


def _first_columns(profiles: Iterable[Profile]) -> list[str]:
    """Columns of the first round: the first source of every field. Tag columns wait until a
    table turns out to have rows (most devices have no ENTITY-SENSOR rows to name, for one)."""
    out: list[str] = []
    for p in profiles:
        for g in p.scalars:
            out += [s.oid for spec in g.fields.values() for s in spec.all_sources if s.rows is not None]
        for t in p.tables:
            out += [spec.all_sources[0].oid for spec in t.fields.values()]
    return out


def _row_count(table: TableSpec, scalars: Mapping[str, VarBind]) -> int | None:
    """How many rows the table's ``row_count`` scalar says it has (``None``: no such scalar, or
    it did not answer a number — then every row counts)."""
    vb = scalars.get(table.row_count) if table.row_count is not None else None
    if vb is None or vb[1] in MISSING_TYPES or isinstance(vb[2], bool) or not isinstance(vb[2], int):
        return None
    return vb[2]


def _row_number(index: str) -> int:
    head = index.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _row_indices(table: TableSpec, columns: Mapping[str, Column]) -> list[str]:
    """Rows of a table: every index seen in any of its field columns, in walk order."""
    seen: dict[str, None] = {}
    for spec in table.fields.values():
        for source in spec.all_sources:
            col = columns.get(source.oid)
            if col is not None:
                seen.update(dict.fromkeys(col.rows))
    return list(seen)


def _next_columns(profiles: Iterable[Profile], columns: Mapping[str, Column], failed: set[str]) -> list[str]:
    """The columns for the next round: the tag columns of tables that have rows, and the next
    source of every field or tag whose sources so far left some row without a usable value (or
    found nothing at all) — ifInOctets only where ifHCInOctets is missing."""
    out: list[str] = []

    def done(oid: str) -> bool:
        return oid in columns or oid in failed

    for p in profiles:
        for t in p.tables:
            rows = _row_indices(t, columns)
            # Without a single-source field to list every row, a row may exist only in a fallback
            # column (a ZTE unit with just the 2-minute CPU; an H3C with only the legacy tree):
            # then every source is read.
            anchored = any(len(spec.all_sources) == 1 for spec in t.fields.values())
            if not anchored:
                out += [s.oid for spec in t.fields.values() for s in spec.all_sources if not done(s.oid)]
            specs = list(t.fields.values())
            if rows:
                for spec in t.tags.values():
                    if spec.via is not None:
                        if not done(spec.via):
                            out.append(spec.via)
                        if not done(spec.all_sources[0].oid):
                            out.append(spec.all_sources[0].oid)
                    else:
                        specs.append(spec)
            for spec in specs:
                sources = spec.all_sources
                read = 0
                while read < len(sources) and done(sources[read].oid):
                    read += 1
                if read == 0:
                    out.append(sources[0].oid)  # a tag column not read yet
                    continue
                if read >= len(sources):
                    continue
                values = [columns[s.oid] for s in sources[:read] if s.oid in columns]
                lacking = not any(c.rows for c in values) or any(
                    all(
                        decode_value(c.rows.get(i), spec, s) in (None, "")
                        for c, s in zip(values, sources, strict=False)
                    )
                    for i in rows
                )
                if lacking:
                    out.append(sources[read].oid)
    return out


# -- rows --------------------------------------------------------------------------------------


def _put(fields: dict[str, Any], name: str, spec: FieldSpec, value: FieldValue) -> None:
    fields[name] = value
    if spec.enum is not None and isinstance(value, int):
        label = spec.enum.get(value)
        if label is not None:
            fields[f"{name}_name"] = label


def _aggregate(how: str | None, values: list[FieldValue]) -> FieldValue | None:
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not values:
        return None
    if how == "first" or not nums:
        return values[0]
    if how == "max":
        return max(nums)
    if how == "min":
        return min(nums)
    return sum(nums)


def _keep(table: TableSpec, fields: Mapping[str, Any]) -> bool:
    for name, allowed in table.where.items():
        if name not in fields or str(fields[name]) not in {str(a) for a in allowed}:
            return False
    if table.skip_if_all_zero and all(not fields.get(n) for n in table.skip_if_all_zero):
        return False
    return all(n in fields for n in table.require)


def _tag_value(spec: FieldSpec, index: str, columns: Mapping[str, Column], failed: set[str]) -> str | None:
    """The tag of one row ("" when the device has none for it), or ``None`` when a column it
    depends on could not be read this poll (its walk failed or ran out of time): then ifDescr
    standing in for an unread ifName, or no name at all, would not be the row's name."""
    key = index
    if spec.via is not None:
        if spec.via in failed:
            return None
        via = columns.get(spec.via)
        vb = via.rows.get(index) if via else None
        if vb is None or vb[1] in MISSING_TYPES or not vb[2]:
            return ""  # e.g. cpmCPUTotalPhysicalIndex 0: no entity to name it by
        key = decode_text(vb[2]) if isinstance(vb[2], bytes) else str(vb[2])
    for source in spec.all_sources:
        if source.oid in failed:
            return None
        col = columns.get(source.oid)
        value = decode_value(col.rows.get(key) if col else None, spec, source)
        if value not in (None, ""):
            return str(value)
    return ""


def _entity_sensor(fields: dict[str, Any], tags: dict[str, str]) -> bool:
    """ENTITY-SENSOR-MIB: value × 10^(3·(scale−9)) × 10^−precision; celsius as temperature_c."""
    kind, scale, raw = fields.get("sensor_type"), fields.get("sensor_scale", 9), fields.get("sensor_value")
    precision = fields.get("sensor_precision", 0)
    if not isinstance(kind, int) or not isinstance(raw, int):
        return False
    exp = _SENSOR_EXP.get(scale if isinstance(scale, int) else 9, 0) - (precision if isinstance(precision, int) else 0)
    value = raw * 10**exp if exp >= 0 else raw / 10 ** (-exp)
    name, unit = _SENSOR_TYPES.get(kind, ("other", ""))
    tags["type"] = name
    if kind == 8:
        fields["temperature_c"] = float(value)
    else:
        fields["value"] = float(value)
        if unit:
            fields["unit"] = unit
    return True


def _derive(fields: dict[str, Any], derive: Mapping[str, Any]) -> None:
    for name, d in derive.items():
        given = [fields.get(i) for i in d.inputs()]
        args = [a for a in given if isinstance(a, int | float) and not isinstance(a, bool)]
        if len(args) != len(given):
            continue
        if d.sum:
            value: float | None = sum(args)
        elif d.product:
            value = math.prod(args)
        else:
            value = rates.percent(args[0], args[1], d.of_scale)
        if value is not None:
            fields[name] = int(round(value)) if d.type == "int" else float(value)


def _emitted(
    fields: Mapping[str, Any], specs: Mapping[str, FieldSpec], *extra: Mapping[str, Any]
) -> dict[str, FieldValue]:
    hidden = {n for n, s in specs.items() if not s.emit} | {
        n for group in extra for n, d in group.items() if not getattr(d, "emit", True)
    }
    hidden |= {f"{n}_name" for n in hidden}
    return clean_fields({k: v for k, v in fields.items() if k not in hidden})
