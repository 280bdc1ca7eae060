"""What an snmpsim-data recording must yield, computed from the recording's own ``oid|type|value``
lines with the facts of DOMAIN.md §1–§2 — written apart from the probe's profiles, so a wrong OID,
scale or fallback in a profile shows up as a difference."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# DOMAIN.md §1: standard objects
SYS_DESCR, SYS_OBJECT_ID, SYS_UPTIME, SYS_NAME, SYS_LOCATION = (f"1.3.6.1.2.1.1.{n}.0" for n in (1, 2, 3, 5, 6))
IF_T = "1.3.6.1.2.1.2.2.1"
IF_X = "1.3.6.1.2.1.31.1.1.1"
IF_DESCR, IF_SPEED, IF_ADMIN, IF_OPER = (f"{IF_T}.{c}" for c in (2, 5, 7, 8))
IF_IN, IF_OUT = f"{IF_T}.10", f"{IF_T}.16"
IF_IN_DISC, IF_IN_ERR, IF_OUT_DISC, IF_OUT_ERR = (f"{IF_T}.{c}" for c in (13, 14, 19, 20))
IF_NAME, IF_HC_IN, IF_HC_OUT, IF_HIGH_SPEED, IF_ALIAS = (f"{IF_X}.{c}" for c in (1, 6, 10, 15, 18))
ENT_DESCR, ENT_NAME = "1.3.6.1.2.1.47.1.1.1.1.2", "1.3.6.1.2.1.47.1.1.1.1.7"
SENSOR = "1.3.6.1.2.1.99.1.1.1"  # .1 type .2 scale .3 precision .4 value .5 oper status
HR_LOAD = "1.3.6.1.2.1.25.3.3.1.2"
HR_STORAGE = "1.3.6.1.2.1.25.2.3.1"  # .2 type .3 descr .4 units .5 size .6 used
HR_RAM = "1.3.6.1.2.1.25.2.1.2"
# vendor tables
HUAWEI = "1.3.6.1.4.1.2011.5.25.31.1.1.1.1"  # .5 cpu .6 thr .7 mem .8 thr .11 temp .12 thr
H3C_TREES = ("1.3.6.1.4.1.25506.2.6.1.1.1.1", "1.3.6.1.4.1.2011.10.2.6.1.1.1.1")  # .6/.7 .8/.9 .12/.13
CISCO_CPM = "1.3.6.1.4.1.9.9.109.1.1.1.1"  # .2 phys index .5 old 5-min .8 5-min .12 used KB .13 free KB
CISCO_POOL = "1.3.6.1.4.1.9.9.48.1.1.1"  # .2 name .5 used .6 free
CISCO_TEMP, CISCO_FAN, CISCO_PSU = "1.3.6.1.4.1.9.9.13.1.3.1", "1.3.6.1.4.1.9.9.13.1.4.1", "1.3.6.1.4.1.9.9.13.1.5.1"
RUIJIE_CPU_1MIN = "1.3.6.1.4.1.4881.1.1.10.2.36.1.1.2.0"
RUIJIE_MEM = "1.3.6.1.4.1.4881.1.1.10.2.35.1.1.1.3"
RUIJIE_TEMP = "1.3.6.1.4.1.4881.1.1.10.2.1.1.23.1"  # .2 name .3 value .4 warn .5 crit
UPS = "1.3.6.1.2.1.33.1"
APC_PHASE_CURRENT = "1.3.6.1.4.1.318.1.1.26.6.3.1.5"
APC_POWER, APC_ENERGY = "1.3.6.1.4.1.318.1.1.26.4.3.1.5", "1.3.6.1.4.1.318.1.1.26.4.3.1.9"
APC_OUTLET = "1.3.6.1.4.1.318.1.1.26.9.4.3.1"  # .3 name .6 current (0.1 A) .7 power (W) .11 energy (0.1 kWh)

#: Everything read here; the recordings served to the probe keep all of it.
EXPECTATION_OIDS = {
    SYS_DESCR,
    SYS_OBJECT_ID,
    SYS_UPTIME,
    SYS_NAME,
    SYS_LOCATION,
    IF_DESCR,
    IF_SPEED,
    IF_ADMIN,
    IF_OPER,
    IF_IN,
    IF_OUT,
    IF_IN_DISC,
    IF_IN_ERR,
    IF_OUT_DISC,
    IF_OUT_ERR,
    IF_NAME,
    IF_HC_IN,
    IF_HC_OUT,
    IF_HIGH_SPEED,
    IF_ALIAS,
    ENT_DESCR,
    ENT_NAME,
    SENSOR,
    HR_LOAD,
    HR_STORAGE,
    HUAWEI,
    *H3C_TREES,
    CISCO_CPM,
    CISCO_POOL,
    CISCO_TEMP,
    CISCO_FAN,
    CISCO_PSU,
    RUIJIE_CPU_1MIN,
    RUIJIE_MEM,
    RUIJIE_TEMP,
    f"{UPS}.2",
    f"{UPS}.3.2.0",
    f"{UPS}.3.3.1",
    f"{UPS}.4",
    f"{UPS}.5",
    f"{UPS}.6.1",
    APC_PHASE_CURRENT,
    APC_OUTLET,
    APC_POWER,
    APC_ENERGY,
}

IF_ADMIN_NAMES = {1: "up", 2: "down", 3: "testing"}
IF_OPER_NAMES = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant", 6: "notPresent", 7: "lowerLayerDown"}
ENVMON_STATES = {1: "normal", 2: "warning", 3: "critical", 4: "shutdown", 5: "notPresent", 6: "notFunctioning"}
UPS_BATTERY = {1: "unknown", 2: "normal", 3: "low", 4: "depleted"}
UPS_SOURCE = {1: "other", 2: "none", 3: "normal", 4: "bypass", 5: "battery", 6: "booster", 7: "reducer"}
SENSOR_TYPES = {
    1: "other", 2: "unknown", 3: "voltage_ac", 4: "voltage_dc", 5: "current", 6: "power",
    7: "frequency", 8: "temperature", 9: "humidity", 10: "fan_speed", 11: "airflow", 12: "truth_value",
}  # fmt: skip
SCALE_POWER = {1: -24, 2: -21, 3: -18, 4: -15, 5: -12, 6: -9, 7: -6, 8: -3, 9: 0, 10: 3, 11: 6, 12: 9, 13: 12, 14: 18, 15: 15, 16: 21, 17: 24}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Range:
    """A value the recording makes move (snmpsim variation): only its bounds are known."""

    low: float
    high: float


@dataclass(frozen=True, slots=True)
class Value:
    tag: str  # the BER type as snmprec numbers it: 2, 4, 6, 64, 65, 66, 67, 70
    variation: str | None
    text: bytes

    @property
    def missing(self) -> bool:
        if self.hex:
            try:
                bytes.fromhex(self.text.decode())
            except ValueError:
                return True  # a broken line (UPS/juniper-ac's sysDescr): snmpsim serves noSuchInstance
        return self.tag in ("5", "128", "129", "130")

    def octets(self) -> bytes:
        return bytes.fromhex(self.text.decode()) if self.hex else self.text

    @property
    def hex(self) -> bool:
        return self.tag.endswith("x")

    def string(self) -> str:
        data = self.octets().rstrip(b"\x00")
        for codec in ("utf-8", "gb18030"):
            try:
                return data.decode(codec).strip()
            except UnicodeDecodeError:
                pass
        return data.decode("utf-8", "replace").strip()

    def number(self) -> int | float | Range | None:
        if self.missing:
            return None
        if self.variation is not None:
            return _variation_range(self.variation, self.text.decode())
        if self.tag.rstrip("x") in ("2", "65", "66", "67", "70"):
            return int(self.text)
        if self.tag.rstrip("x") == "4":
            try:
                return int(self.string())
            except ValueError:
                try:
                    return float(self.string())
                except ValueError:
                    return None
        return None


def _variation_range(variation: str, args: str) -> Range:
    opts = dict(a.split("=", 1) for a in args.split(",") if "=" in a)
    if variation == "numeric" and "max" in opts:
        return Range(float(opts.get("min", 0)), float(opts["max"]))
    return Range(0, math.inf)  # e.g. sysUpTime counting from when snmpsim started


@dataclass
class Recording:
    """One .snmprec file: OID -> Value, plus columns in file order."""

    name: str
    values: dict[str, Value] = field(default_factory=dict)

    @classmethod
    def read(cls, name: str, path: Path) -> Recording:
        rec = cls(name)
        for line in path.read_bytes().splitlines():
            if not line or line.startswith(b"#"):
                continue
            oid, tag, text = line.split(b"|", 2)
            kind, _, variation = tag.decode().partition(":")
            rec.values.setdefault(oid.decode(), Value(kind, variation or None, text))
        return rec

    def scalar(self, oid: str) -> Value | None:
        v = self.values.get(oid)
        return None if v is None or v.missing else v

    def column(self, base: str) -> dict[str, Value]:
        prefix = base + "."
        return {o[len(prefix) :]: v for o, v in self.values.items() if o.startswith(prefix) and not v.missing}

    def number(self, oid: str) -> int | float | Range | None:
        v = self.scalar(oid)
        return v.number() if v else None

    @property
    def sys_object_id(self) -> str | None:
        v = self.scalar(SYS_OBJECT_ID)
        return v.text.decode() if v else None


# An expected Sample: identity tags -> (all tags it must carry, all fields it must carry).
Expected = dict[tuple[str, ...], tuple[dict[str, str], dict[str, object]]]


def _num(col: dict[str, Value], idx: str, invalid: Iterable[int] = ()) -> int | float | Range | None:
    v = col.get(idx)
    n = v.number() if v else None
    return None if isinstance(n, int) and n in set(invalid) else n


def _text(col: dict[str, Value], idx: str) -> str:
    v = col.get(idx)
    return v.string() if v else ""


def _f(n: int | float | Range | None, scale: float = 1.0) -> float | Range | None:
    if n is None or isinstance(n, Range):
        return n
    return float(n * scale)


def _put(fields: dict[str, object], name: str, value: object) -> None:
    if value is not None:
        fields[name] = value


def _named(tags: dict[str, str], name: str, text: str) -> dict[str, str]:
    return {**tags, name: text} if text else tags


def vendor(rec: Recording) -> str | None:
    """DOMAIN.md: the profile follows sysObjectID's enterprise number (Huawei 2011, H3C 25506,
    Cisco 9, Ruijie 4881, ZTE 3902, APC 318); legacy H3C lives under Huawei's 2011.10."""
    oid = rec.sys_object_id or ""
    if oid.startswith("1.3.6.1.4.1.2011.10."):
        return "h3c"
    parts = oid.split(".")
    ent = int(parts[6]) if len(parts) > 6 and oid.startswith("1.3.6.1.4.1.") else None
    return {2011: "huawei", 25506: "h3c", 9: "cisco", 4881: "ruijie", 3902: "zte", 318: "apc"}.get(ent or -1)


def expect_system(rec: Recording, device: str) -> Expected:
    fields: dict[str, object] = {}
    for name, oid in (("sys_descr", SYS_DESCR), ("sys_name", SYS_NAME), ("sys_location", SYS_LOCATION)):
        v = rec.scalar(oid)
        if v is not None:
            fields[name] = v.string()
    if rec.sys_object_id:
        fields["sys_object_id"] = rec.sys_object_id
    _put(fields, "uptime_s", _f(rec.number(SYS_UPTIME), 0.01))
    return {(): ({"device": device}, fields)} if fields else {}


def expect_interfaces(rec: Recording, device: str) -> Expected:
    cols = {oid: rec.column(oid) for oid in (IF_DESCR, IF_SPEED, IF_ADMIN, IF_OPER, IF_IN, IF_OUT, IF_IN_DISC,
                                             IF_IN_ERR, IF_OUT_DISC, IF_OUT_ERR, IF_NAME, IF_HC_IN, IF_HC_OUT,
                                             IF_HIGH_SPEED, IF_ALIAS)}  # fmt: skip
    numeric = [o for o in cols if o not in (IF_DESCR, IF_NAME, IF_ALIAS)]
    rows = dict.fromkeys(idx for o in numeric for idx in cols[o])
    out: Expected = {}
    for idx in rows:
        fields: dict[str, object] = {}

        def first(*oids: str, idx: str = idx) -> int | float | Range | None:
            return next((n for o in oids if (n := _num(cols[o], idx)) is not None), None)

        _put(fields, "in_octets", first(IF_HC_IN, IF_IN))
        _put(fields, "out_octets", first(IF_HC_OUT, IF_OUT))
        high = _num(cols[IF_HIGH_SPEED], idx)
        _put(fields, "speed_mbps", _f(high) if high is not None else _f(_num(cols[IF_SPEED], idx), 1e-6))
        for name, oid, names in (("admin_status", IF_ADMIN, IF_ADMIN_NAMES), ("oper_status", IF_OPER, IF_OPER_NAMES)):
            n = _num(cols[oid], idx)
            if isinstance(n, int):
                fields[name] = n
                _put(fields, f"{name}_name", names.get(n))
        for name, oid in (("in_discards", IF_IN_DISC), ("in_errors", IF_IN_ERR), ("out_discards", IF_OUT_DISC),
                          ("out_errors", IF_OUT_ERR)):  # fmt: skip
            _put(fields, name, _num(cols[oid], idx))
        tags = {"device": device, "ifindex": idx}
        tags = _named(tags, "ifname", _text(cols[IF_NAME], idx) or _text(cols[IF_DESCR], idx))
        tags = _named(tags, "ifalias", _text(cols[IF_ALIAS], idx))
        out[(idx,)] = (tags, fields)
    return out


def _entity_names(rec: Recording) -> dict[str, Value]:
    return rec.column(ENT_NAME)


def expect_cpu(rec: Recording, device: str) -> Expected:
    out: Expected = {}
    for idx, v in rec.column(HR_LOAD).items():
        out[("host_resources", idx)] = (
            {"device": device, "mib": "host_resources", "cpu": idx},
            {"cpu_pct": _f(v.number())},
        )
    names = _entity_names(rec)
    ven = vendor(rec)
    if ven == "huawei":
        for idx, row in _huawei_rows(rec).items():
            cpu, mem, temp = row
            if not (cpu or mem or temp) or cpu is None:
                continue
            fields = {"cpu_pct": _f(cpu)}
            _put(fields, "threshold_pct", _f(_num(rec.column(f"{HUAWEI}.6"), idx)))
            out[("huawei", idx)] = (
                _named({"device": device, "mib": "huawei", "cpu": idx}, "name", _text(names, idx)),
                fields,
            )
    elif ven == "h3c":
        for idx, (cpu, cpu_thr, mem, _mem_thr, _temp, _temp_thr) in _h3c_rows(rec).items():
            if cpu is None or not (cpu or mem):
                continue
            fields = {"cpu_pct": _f(cpu)}
            _put(fields, "threshold_pct", _f(cpu_thr))
            out[("h3c", idx)] = (
                _named({"device": device, "mib": "h3c", "cpu": idx}, "name", _text(names, idx)),
                fields,
            )
    elif ven == "cisco":
        new, old, phys = rec.column(f"{CISCO_CPM}.8"), rec.column(f"{CISCO_CPM}.5"), rec.column(f"{CISCO_CPM}.2")
        for idx in dict.fromkeys([*new, *old]):
            cpu = _num(new, idx) if idx in new else _num(old, idx)
            p = _num(phys, idx)
            name = _text(names, str(p)) if p else ""
            tags = _named({"device": device, "mib": "cisco_process", "cpu": idx}, "name", name)
            out[("cisco_process", idx)] = (tags, {"cpu_pct": _f(cpu)})
    elif ven == "ruijie":
        cpu = rec.number(RUIJIE_CPU_1MIN)
        if cpu is not None:
            out[("ruijie", "system")] = ({"device": device, "mib": "ruijie", "cpu": "system"}, {"cpu_pct": _f(cpu)})
    return out


def _huawei_rows(rec: Recording) -> dict[str, tuple[object, object, object]]:
    cpu, mem, temp = (rec.column(f"{HUAWEI}.{c}") for c in (5, 7, 11))
    rows = dict.fromkeys([*cpu, *mem, *temp])
    return {i: (_num(cpu, i), _num(mem, i), _num(temp, i, [0x7FFFFFFF])) for i in rows}


def _h3c_rows(rec: Recording) -> dict[str, tuple[object, ...]]:
    """Per entity and column: the 25506 tree's value, else the legacy tree's; 65535 = no sensor."""
    cols = {c: [rec.column(f"{tree}.{c}") for tree in H3C_TREES] for c in (6, 7, 8, 9, 12, 13)}
    rows = dict.fromkeys(i for c in cols.values() for col in c for i in col)
    out = {}
    for i in rows:
        vals = []
        for c in (6, 7, 8, 9, 12, 13):
            vals.append(next((n for col in cols[c] if (n := _num(col, i, [65535])) is not None), None))
        out[i] = tuple(vals)
    return out


def expect_memory(rec: Recording, device: str) -> Expected:
    out: Expected = {}
    types, descr, units, size, used = (rec.column(f"{HR_STORAGE}.{c}") for c in (2, 3, 4, 5, 6))
    for idx, t in types.items():
        if t.text.decode() != HR_RAM:
            continue
        u, s, n = _num(units, idx), _num(size, idx), _num(used, idx)
        if not all(isinstance(x, int) for x in (u, s, n)):
            continue
        fields: dict[str, object] = {"memory_total_bytes": s * u, "memory_used_bytes": n * u}  # type: ignore[operator]
        if s * u > 0:  # type: ignore[operator]
            fields["memory_pct"] = n * u * 100.0 / (s * u)  # type: ignore[operator]
        tags = _named({"device": device, "mib": "host_resources", "memory": idx}, "name", _text(descr, idx))
        out[("host_resources", idx)] = (tags, fields)
    names = _entity_names(rec)
    ven = vendor(rec)
    if ven == "huawei":
        for idx, (cpu, mem, temp) in _huawei_rows(rec).items():
            if not (cpu or mem or temp) or mem is None:
                continue
            fields = {"memory_pct": _f(mem)}
            _put(fields, "threshold_pct", _f(_num(rec.column(f"{HUAWEI}.8"), idx)))
            out[("huawei", idx)] = (
                _named({"device": device, "mib": "huawei", "memory": idx}, "name", _text(names, idx)),
                fields,
            )
    elif ven == "h3c":
        for idx, (cpu, _c, mem, mem_thr, _t, _tt) in _h3c_rows(rec).items():
            if mem is None or not (cpu or mem):
                continue
            fields = {"memory_pct": _f(mem)}
            _put(fields, "threshold_pct", _f(mem_thr))
            out[("h3c", idx)] = (
                _named({"device": device, "mib": "h3c", "memory": idx}, "name", _text(names, idx)),
                fields,
            )
    elif ven == "cisco":
        phys = rec.column(f"{CISCO_CPM}.2")
        used, free = rec.column(f"{CISCO_CPM}.12"), rec.column(f"{CISCO_CPM}.13")
        for idx in used:
            if idx not in free:
                continue
            u, f = _num(used, idx) * 1024, _num(free, idx) * 1024  # type: ignore[operator]
            p = _num(phys, idx)
            tags = _named(
                {"device": device, "mib": "cisco_process", "memory": idx}, "name", _text(names, str(p)) if p else ""
            )
            out[("cisco_process", idx)] = (tags, _mem(u, f))
        pname, pused, pfree = (rec.column(f"{CISCO_POOL}.{c}") for c in (2, 5, 6))
        for idx in pused:
            if idx not in pfree:
                continue
            tags = _named({"device": device, "mib": "cisco_memory_pool", "memory": idx}, "name", _text(pname, idx))
            out[("cisco_memory_pool", idx)] = (tags, _mem(_num(pused, idx), _num(pfree, idx)))
    elif ven == "ruijie":
        for idx, v in rec.column(RUIJIE_MEM).items():
            out[("ruijie", idx)] = ({"device": device, "mib": "ruijie", "memory": idx}, {"memory_pct": _f(v.number())})
    return out


def _mem(used: object, free: object) -> dict[str, object]:
    assert isinstance(used, int) and isinstance(free, int)
    total = used + free
    fields: dict[str, object] = {"memory_used_bytes": used, "memory_free_bytes": free, "memory_total_bytes": total}
    if total > 0:
        fields["memory_pct"] = used * 100.0 / total
    return fields


def expect_sensors(rec: Recording, device: str) -> Expected:
    out: Expected = {}
    names = _entity_names(rec)
    descrs = rec.column(ENT_DESCR)
    kind, scale, prec, value, status = (rec.column(f"{SENSOR}.{c}") for c in (1, 2, 3, 4, 5))
    for idx in value:
        k, raw = _num(kind, idx), _num(value, idx)
        if not isinstance(k, int) or not isinstance(raw, int):
            continue
        power = SCALE_POWER[_num(scale, idx) or 9] - (_num(prec, idx) or 0)  # type: ignore[index,operator]
        reading = raw * 10.0**power
        fields: dict[str, object] = {"temperature_c": reading} if k == 8 else {"value": reading}
        unit = {3: "V", 4: "V", 5: "A", 6: "W", 7: "Hz", 9: "%RH", 10: "rpm", 11: "m3/min"}.get(k)
        if k != 8 and unit:
            fields["unit"] = unit
        st = _num(status, idx)
        if isinstance(st, int):
            fields["oper_status"] = st
            _put(fields, "oper_status_name", {1: "ok", 2: "unavailable", 3: "nonoperational"}.get(st))
        tags = {"device": device, "mib": "entity_sensor", "sensor": idx, "type": SENSOR_TYPES.get(k, "other")}
        out[("entity_sensor", SENSOR_TYPES.get(k, "other"), idx)] = (
            _named(tags, "name", _text(names, idx) or _text(descrs, idx)),
            fields,
        )
    ven = vendor(rec)
    if ven == "huawei":
        thr = rec.column(f"{HUAWEI}.12")
        for idx, (cpu, mem, temp) in _huawei_rows(rec).items():
            if not (cpu or mem or temp) or temp is None:
                continue
            fields = {"temperature_c": _f(temp)}
            _put(fields, "threshold_warn_c", _f(_num(thr, idx, [0x7FFFFFFF])))
            tags = {"device": device, "mib": "huawei", "type": "temperature", "sensor": idx}
            out[("huawei", "temperature", idx)] = (_named(tags, "name", _text(names, idx)), fields)
    elif ven == "h3c":
        for idx, (cpu, _c, mem, _m, temp, temp_thr) in _h3c_rows(rec).items():
            if temp is None or not (cpu or mem or temp):
                continue
            fields = {"temperature_c": _f(temp)}
            _put(fields, "threshold_warn_c", _f(temp_thr))
            tags = {"device": device, "mib": "h3c", "type": "temperature", "sensor": idx}
            out[("h3c", "temperature", idx)] = (_named(tags, "name", _text(names, idx)), fields)
    elif ven == "cisco":
        cols = {c: rec.column(f"{CISCO_TEMP}.{c}") for c in (2, 3, 4, 6)}
        for idx in cols[3]:
            fields = {"temperature_c": _f(_num(cols[3], idx))}
            _put(fields, "threshold_crit_c", _f(_num(cols[4], idx)))
            st = _num(cols[6], idx)
            if isinstance(st, int):
                fields["state"] = st
                _put(fields, "state_name", ENVMON_STATES.get(st))
            tags = {"device": device, "mib": "cisco_envmon", "type": "temperature", "sensor": idx}
            out[("cisco_envmon", "temperature", idx)] = (_named(tags, "name", _text(cols[2], idx)), fields)
        for table, kind_name in ((CISCO_FAN, "fan"), (CISCO_PSU, "power_supply")):
            descr, state = rec.column(f"{table}.2"), rec.column(f"{table}.3")
            for idx in state:
                st = _num(state, idx)
                fields = {"state": st}
                _put(fields, "state_name", ENVMON_STATES.get(st))  # type: ignore[arg-type]
                tags = {"device": device, "mib": "cisco_envmon", "type": kind_name, "sensor": idx}
                out[("cisco_envmon", kind_name, idx)] = (_named(tags, "name", _text(descr, idx)), fields)
    elif ven == "ruijie":
        name, val, warn, crit = (rec.column(f"{RUIJIE_TEMP}.{c}") for c in (2, 3, 4, 5))
        for idx in val:
            t, w, c = _num(val, idx), _num(warn, idx), _num(crit, idx)
            if not (t or w or c):
                continue  # absent module: 0 with 0 thresholds
            fields = {"temperature_c": _f(t)}
            _put(fields, "threshold_warn_c", _f(w))
            _put(fields, "threshold_crit_c", _f(c))
            tags = {"device": device, "mib": "ruijie", "type": "temperature", "sensor": idx}
            out[("ruijie", "temperature", idx)] = (_named(tags, "name", _text(name, idx)), fields)
    return out


def expect_ups(rec: Recording, device: str) -> Expected:
    """RFC 1628 with DOMAIN.md §2's quirks: −1 unknown; runtime 0 on mains is no reading; the
    first input/output line (instances may carry a trailing .0); load of the most loaded line."""
    status = rec.number(f"{UPS}.2.1.0")
    if status is None:
        return {}

    def scalar(oid: str) -> int | None:
        n = rec.number(oid)
        return None if n == -1 else n  # type: ignore[return-value]

    def line(oid: str) -> list[int]:
        return [n for v in rec.column(oid).values() if isinstance(n := v.number(), int) and n != -1]

    fields: dict[str, object] = {}
    source = scalar(f"{UPS}.4.1.0")
    if status != -1:
        fields["battery_status"] = status
        _put(fields, "battery_status_name", UPS_BATTERY.get(status))  # type: ignore[arg-type]
    _put(fields, "on_battery_s", scalar(f"{UPS}.2.2.0"))
    runtime = scalar(f"{UPS}.2.3.0")
    if runtime is not None and not (runtime == 0 and source != 5):
        fields["runtime_min"] = float(runtime)
    _put(fields, "charge_pct", _f(scalar(f"{UPS}.2.4.0")))
    _put(fields, "battery_voltage_v", _f(scalar(f"{UPS}.2.5.0"), 0.1))
    _put(fields, "battery_temperature_c", _f(scalar(f"{UPS}.2.7.0")))
    if freq := line(f"{UPS}.3.3.1.2"):
        fields["input_frequency_hz"] = freq[0] * 0.1
    if volts := line(f"{UPS}.3.3.1.3"):
        fields["input_voltage_v"] = float(volts[0])
    if source is not None:
        fields["output_source"] = source
        _put(fields, "output_source_name", UPS_SOURCE.get(source))
    if volts := line(f"{UPS}.4.4.1.2"):
        fields["output_voltage_v"] = float(volts[0])
    if load := line(f"{UPS}.4.4.1.5"):
        fields["load_pct"] = float(max(load))
    _put(fields, "alarms_present", scalar(f"{UPS}.6.1.0"))
    return {("ups_mib",): ({"device": device, "mib": "ups_mib"}, fields)}


#: RFC 1628 line tables: (measurement, table entry, NumLines scalar, {field: (column, scale)}).
UPS_LINES = (
    ("ups_input", f"{UPS}.3.3.1", f"{UPS}.3.2.0",
     {"frequency_hz": (2, 0.1), "voltage_v": (3, 1.0), "current_a": (4, 0.1), "power_w": (5, 1.0)}),
    ("ups_output", f"{UPS}.4.4.1", f"{UPS}.4.3.0",
     {"voltage_v": (2, 1.0), "current_a": (3, 0.1), "power_w": (4, 1.0), "load_pct": (5, 1.0)}),
    ("ups_bypass", f"{UPS}.5.3.1", f"{UPS}.5.2.0",
     {"voltage_v": (2, 1.0), "current_a": (3, 0.1), "power_w": (4, 1.0)}),
)  # fmt: skip


def _expect_lines(measurement: str) -> Callable[[Recording, str], Expected]:
    """RFC 1628's input/output/bypass tables, one Sample per line (tag line = the instance without
    a trailing .0), lines above upsXNumLines left out, -1 (unknown) left out."""
    _, entry, num_lines, columns = next(t for t in UPS_LINES if t[0] == measurement)

    def expect(rec: Recording, device: str) -> Expected:
        if rec.number(f"{UPS}.2.1.0") is None:
            return {}  # not a UPS-MIB agent: the profile is not chosen
        count = rec.number(num_lines)
        out: Expected = {}
        for field_name, (col, scale) in columns.items():
            for idx, v in rec.column(f"{entry}.{col}").items():
                line = idx[:-2] if idx.endswith(".0") else idx
                if isinstance(count, int) and int(line.split(".")[0]) > count:
                    continue
                n = v.number()
                if n is None or n == -1:
                    continue
                tags = {"device": device, "mib": "ups_mib", "line": line}
                out.setdefault(("ups_mib", line), (tags, {}))[1][field_name] = _f(n, scale)
        return out

    return expect


def expect_pdu_outlets(rec: Recording, device: str) -> Expected:
    if vendor(rec) != "apc":
        return {}
    out: Expected = {}
    names = rec.column(f"{APC_OUTLET}.3")
    for field_name, col, scale in (("current_a", 6, 0.1), ("power_w", 7, 1.0), ("energy_kwh", 11, 0.1)):
        for idx, v in rec.column(f"{APC_OUTLET}.{col}").items():
            n = v.number()
            if n is None or n == -1:
                continue
            tags = _named({"device": device, "mib": "apc_rpdu2", "outlet": idx}, "name", _text(names, idx))
            out.setdefault(("apc_rpdu2", idx), (tags, {}))[1][field_name] = _f(n, scale)
    return out


def expect_pdu(rec: Recording, device: str) -> Expected:
    if vendor(rec) != "apc":
        return {}
    out: Expected = {}
    for idx, v in rec.column(APC_PHASE_CURRENT).items():
        n = v.number()
        if isinstance(n, int) and n != -1:
            out[("phase", idx)] = ({"device": device, "mib": "apc_rpdu2", "phase": idx}, {"current_a": n * 0.1})
    power, energy = rec.column(APC_POWER), rec.column(APC_ENERGY)
    for idx in dict.fromkeys([*power, *energy]):
        fields: dict[str, object] = {}
        p, e = _num(power, idx, [-1]), _num(energy, idx, [-1])
        _put(fields, "power_kw", _f(p, 0.01))
        _put(fields, "energy_kwh", _f(e, 0.1))
        if fields:
            out[("pdu", idx)] = ({"device": device, "mib": "apc_rpdu2", "pdu": idx}, fields)
    return out


EXPECTERS = {
    "snmp_system": expect_system,
    "interface": expect_interfaces,
    "device_cpu": expect_cpu,
    "device_memory": expect_memory,
    "device_sensor": expect_sensors,
    "ups": expect_ups,
    "ups_input": _expect_lines("ups_input"),
    "ups_output": _expect_lines("ups_output"),
    "ups_bypass": _expect_lines("ups_bypass"),
    "pdu": expect_pdu,
    "pdu_outlet": expect_pdu_outlets,
}
