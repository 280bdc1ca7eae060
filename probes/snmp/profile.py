"""Device profiles as data: the schema of a ``profiles/*.yaml`` file (what to poll, how to name it,
scaling, enum maps, fallbacks, quirks), loading them, and choosing them for a device from its
sysObjectID."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from probes.configfile import StrictModel, problems_from

PROFILES_DIR = Path(__file__).resolve().with_name("profiles")
ENTERPRISES = "1.3.6.1.4.1"
_OID = re.compile(r"^\d+(\.\d+)+$")
_IDENT = r"^[a-z][a-z0-9_]*$"

FieldType = Literal["int", "float", "string", "oid"]
Rows = Literal["first", "max", "min", "sum"]
#: Named behaviours implemented in code and switched on by a profile (see poll.py).
Quirk = Literal["ups_runtime_zero_on_mains"]
Transform = Literal["entity_sensor"]


class ProfileError(ValueError):
    """A profile file that cannot be used; ``str()`` names the file, the key and the fix."""


def _oid(value: str) -> str:
    value = str(value).strip().lstrip(".")
    if not _OID.match(value):
        raise ValueError(f"{value!r} is not a numeric OID (write it dotted, e.g. 1.3.6.1.2.1.1.3.0)")
    return value


Oid = Annotated[str, AfterValidator(_oid)]
Ident = Annotated[str, Field(pattern=_IDENT, max_length=64)]


class Source(StrictModel):
    """Where a value is read: a scalar instance (``…​.0``) or a table column."""

    oid: Oid
    scale: float | None = Field(None, description="multiply the raw number by this")
    #: In a scalar group, read a table column and take its first row or an aggregate
    #: (e.g. the most loaded of a UPS's output lines).
    rows: Rows | None = None


class FieldSpec(StrictModel):
    """One field (or tag) of a Sample. ``oid`` (+ ``scale``/``rows``) is shorthand for a single
    source; ``sources`` lists fallbacks tried in order, per row: the first that has a usable value
    wins (ifHCInOctets, else ifInOctets)."""

    oid: Oid | None = None
    scale: float | None = None
    rows: Rows | None = None
    sources: tuple[Source, ...] = ()
    type: FieldType | None = Field(None, description="default: int with enum/map, else float")
    invalid: tuple[int, ...] = Field((), description="raw values meaning 'no reading' (-1, 0x7FFFFFFF, 65535)")
    map: dict[int, int] | None = Field(None, description="raw code -> code, before enum (vendor -> RFC codes)")
    enum: dict[int, str] | None = Field(None, description="code -> name; adds a <field>_name string field")
    emit: bool = Field(True, description="false: read for filters and derived values only")
    #: Tags only: the column holding this row's index into the table of ``oid`` (a foreign key,
    #: e.g. cpmCPUTotalPhysicalIndex -> entPhysicalName).
    via: Oid | None = None

    @model_validator(mode="after")
    def _one_form(self) -> FieldSpec:
        if self.oid is not None and self.sources:
            raise ValueError("give oid (one source) or sources (fallbacks), not both")
        if self.oid is None and not self.sources:
            raise ValueError("give oid or sources")
        if self.sources and (self.scale is not None or self.rows is not None):
            raise ValueError("with sources, put scale/rows on each source")
        return self

    @property
    def all_sources(self) -> tuple[Source, ...]:
        if self.sources:
            return self.sources
        assert self.oid is not None
        return (Source(oid=self.oid, scale=self.scale, rows=self.rows),)

    @property
    def kind(self) -> FieldType:
        if self.type is not None:
            return self.type
        return "int" if self.enum is not None or self.map is not None else "float"


class RateSpec(StrictModel):
    """A per-second rate of a counter field, from this poll and the previous one."""

    counter: Ident
    scale: float = Field(1.0, description="8 turns octets into bits")
    #: Drop a rate above ``limit_scale`` × this field (a counter reset that looks like a wrap).
    limit: Ident | None = None
    limit_scale: float = 1.0


class DeriveSpec(StrictModel):
    """A field computed from others of the same row: a sum, a product, or a percentage."""

    sum: tuple[Ident, ...] = ()
    product: tuple[Ident, ...] = ()
    percent: Ident | None = None
    of: Ident | None = None
    of_scale: float = 1.0
    type: Literal["int", "float"] = "float"
    emit: bool = True

    @model_validator(mode="after")
    def _one(self) -> DeriveSpec:
        kinds = [bool(self.sum), bool(self.product), self.percent is not None]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of sum, product, percent")
        if (self.percent is None) != (self.of is None):
            raise ValueError("percent needs of (and of needs percent)")
        return self

    def inputs(self) -> tuple[str, ...]:
        return self.sum or self.product or (self.percent or "", self.of or "")


class ScalarGroup(StrictModel):
    """One Sample per device from scalars (and table columns read with ``rows``)."""

    measurement: Ident
    static_tags: dict[Ident, str] = Field(default_factory=dict)
    fields: dict[Ident, FieldSpec]
    derive: dict[Ident, DeriveSpec] = Field(default_factory=dict)
    quirks: tuple[Quirk, ...] = ()


class TableSpec(StrictModel):
    """One Sample per table row: columns joined on their index."""

    measurement: Ident
    index_tag: Ident | None = Field(None, description="tag holding the row index")
    #: A suffix some agents append to the row index (UPS-MIB lines answered as ``1.0``, ``2.0``):
    #: dropped from the index tag, so line 1 is ``line="1"`` either way.
    index_drop_suffix: str | None = Field(None, pattern=r"^(\.\d+)+$")
    #: A scalar that counts the table's rows (UPS-MIB upsInputNumLines): rows numbered above it are
    #: dropped — agents of single-phase UPSes fill lines 2 and 3 with zeros.
    row_count: Oid | None = None
    static_tags: dict[Ident, str] = Field(default_factory=dict)
    tags: dict[Ident, FieldSpec] = Field(default_factory=dict)
    fields: dict[Ident, FieldSpec]
    #: Keep only rows whose field equals one of these (field must be read, e.g. hrStorageType).
    where: dict[Ident, tuple[str | int, ...]] = Field(default_factory=dict)
    #: Drop a row when all these fields read 0 (entities without the thing measured).
    skip_if_all_zero: tuple[Ident, ...] = ()
    #: Drop a row that lacks any of these fields after invalid values are removed.
    require: tuple[Ident, ...] = ()
    rates: dict[Ident, RateSpec] = Field(default_factory=dict)
    derive: dict[Ident, DeriveSpec] = Field(default_factory=dict)
    transform: Transform | None = None
    #: The probe's ``interfaces: {include, exclude}`` filter applies to this tag.
    filter_tag: Ident | None = None

    @model_validator(mode="after")
    def _names(self) -> TableSpec:
        known = set(self.fields) | set(self.rates)
        for name, d in self.derive.items():
            missing = [i for i in d.inputs() if i not in known]
            if missing:
                raise ValueError(f"derive.{name} uses {', '.join(missing)}, not defined before it")
            known.add(name)
        for name, r in self.rates.items():
            if r.counter not in self.fields:
                raise ValueError(f"rates.{name}: counter {r.counter!r} is not a field")
            if r.limit is not None and r.limit not in self.fields:
                raise ValueError(f"rates.{name}: limit {r.limit!r} is not a field")
        for group, names in (
            ("where", self.where),
            ("skip_if_all_zero", self.skip_if_all_zero),
            ("require", self.require),
        ):
            missing = [n for n in names if n not in known]
            if missing:
                raise ValueError(f"{group} names {', '.join(missing)}, which are not fields")
        if self.filter_tag is not None and self.filter_tag not in self.tags:
            raise ValueError(f"filter_tag {self.filter_tag!r} is not one of the tags")
        return self


class Match(StrictModel):
    """When auto-selection applies the profile."""

    #: Every device (the standard MIBs); an absent table costs one request.
    always: bool = False
    #: sysObjectID under 1.3.6.1.4.1.<n> (Huawei 2011, H3C 25506, Cisco 9, Ruijie 4881, ZTE 3902...).
    enterprises: tuple[int, ...] = ()
    #: More specific sysObjectID prefixes; a match here beats an enterprise-number match.
    sys_object_id_prefixes: tuple[Oid, ...] = ()
    #: Scalars asked for with the first request; the profile applies when any of them answers
    #: (a UPS-MIB agent says nothing about it in its sysObjectID).
    detect: tuple[Oid, ...] = ()


class Profile(StrictModel):
    name: Ident
    description: str = Field(min_length=1)
    match: Match = Field(default_factory=Match)
    scalars: tuple[ScalarGroup, ...] = ()
    tables: tuple[TableSpec, ...] = ()

    def oids(self) -> set[str]:
        """Every OID this profile can read (scalars, columns, fallbacks, detection)."""
        out: set[str] = set(self.match.detect)
        for group in self.scalars:
            for spec in group.fields.values():
                out.update(s.oid for s in spec.all_sources)
        for table in self.tables:
            if table.row_count is not None:
                out.add(table.row_count)
            for spec in (*table.fields.values(), *table.tags.values()):
                out.update(s.oid for s in spec.all_sources)
                if spec.via is not None:
                    out.add(spec.via)
        return out


def load_profile(path: Path) -> Profile:
    """Read and validate one profile file; the file name (without .yaml) must be its name."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"{path}: cannot read: {e}") from None
    if not isinstance(doc, dict):
        raise ProfileError(f"{path}: a profile is a mapping with name, description, match, scalars, tables")
    try:
        profile = Profile.model_validate(doc)
    except ValidationError as e:
        raise ProfileError("\n".join(p.render(str(path)) for p in problems_from(e, Profile))) from None
    if profile.name != path.stem:
        raise ProfileError(f"{path}: name {profile.name!r} must match the file name {path.stem!r}")
    return profile


@functools.cache
def builtin_profiles() -> dict[str, Profile]:
    """Every profile shipped in profiles/, by name (read once per process)."""
    return {p.name: p for p in (load_profile(f) for f in sorted(PROFILES_DIR.glob("*.yaml")))}


def known_profiles() -> set[str]:
    return set(builtin_profiles())


def enterprise_of(sys_object_id: str | None) -> int | None:
    """``1.3.6.1.4.1.2011.2.23.276`` -> 2011; None when it is not under enterprises."""
    if not sys_object_id:
        return None
    parts = sys_object_id.strip(".").split(".")
    if len(parts) > 6 and ".".join(parts[:6]) == ENTERPRISES:
        try:
            return int(parts[6])
        except ValueError:
            return None
    return None


def detect_oids(profiles: Iterable[Profile]) -> list[str]:
    return sorted({oid for p in profiles for oid in p.match.detect})


def select(
    profiles: Sequence[Profile],
    sys_object_id: str | None,
    *,
    detected: Iterable[str] = (),
    names: Sequence[str] | None = None,
) -> list[Profile]:
    """The profiles for one device: the standard ones (``always``) plus either the ones named in
    the config or, for auto, the vendor ones its sysObjectID picks (longest matching prefix first,
    else enterprise number) and any whose ``detect`` OIDs answered."""
    by_name = {p.name: p for p in profiles}
    # The standard ones first, the system group before the rest (it leads a poll's Samples).
    standard = sorted((p for p in profiles if p.match.always), key=lambda p: p.name != "system")
    if names is not None:
        chosen = [by_name[n] for n in names]
    else:
        oid = (sys_object_id or "").strip(".")
        best = max(
            (
                len(prefix)
                for p in profiles
                for prefix in p.match.sys_object_id_prefixes
                if oid == prefix or oid.startswith(prefix + ".")
            ),
            default=0,
        )
        if best:
            vendor = [
                p
                for p in profiles
                if any(
                    len(prefix) == best and (oid == prefix or oid.startswith(prefix + "."))
                    for prefix in p.match.sys_object_id_prefixes
                )
            ]
        else:
            ent = enterprise_of(oid)
            vendor = [p for p in profiles if ent is not None and ent in p.match.enterprises]
        seen = set(detected)
        vendor += [p for p in profiles if p not in vendor and any(d in seen for d in p.match.detect)]
        chosen = vendor
    out: dict[str, Profile] = {}
    for p in [*standard, *chosen]:
        out.setdefault(p.name, p)
    return list(out.values())
