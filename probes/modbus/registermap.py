"""Register maps as data: the pydantic models of a ``maps/*.yaml`` file, validated when the agent
config loads, and where a map named in a config is found (``maps_dir``, a path, or built in)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from probes.configfile import StrictModel, problems_from
from probes.modbus.codec import (
    BIT_TABLES,
    INTEGER_TYPES,
    WORDS,
    DataType,
    Layout,
    Order,
    Packed,
    Table,
    layout,
    negative_from,
    parse_manual_address,
    string_at,
)
from probes.scaling import exact_divisor

BUILTIN_DIR = Path(__file__).resolve().with_name("maps")
#: What a point's values look like in the Sample, by kind; also the default field names for
#: ``modbus_point`` (numbers -> value, bits -> active, enum codes -> state, text -> text).
DEFAULT_FIELDS: dict[str, str] = {"float": "value", "bool": "active", "int": "state", "string": "text"}
GENERIC_MEASUREMENT = "modbus_point"
_IDENT = r"^[a-z][a-z0-9_]*$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class MapError(ValueError):
    """A register map that cannot be used; ``str()`` names the file, the point and the fix."""


class Point(StrictModel):
    """One value on the device: where it lives, how it is encoded, and where it goes in a Sample."""

    name: str = Field(pattern=_NAME, max_length=64)
    table: Table
    address: int = Field(ge=0, le=65535)
    type: DataType = "uint16"
    order: Order = "ABCD"
    length: int | None = Field(None, ge=1, le=125, description="registers of a string")
    bit: int | None = Field(None, ge=0, le=15, description="bit of a register, 0 = least significant")
    scale: float = 1.0
    offset: float = 0.0
    negative_from: int | None = Field(None, ge=1, le=0xFFFFFFFF)
    unit: str = ""
    invalid: dict[int, str] = Field(default_factory=dict)
    enum: dict[int, str] = Field(default_factory=dict)
    invert: bool = False
    measurement: str = Field(GENERIC_MEASUREMENT, pattern=_IDENT, max_length=64)
    field: str | None = Field(None, pattern=_IDENT, max_length=64)
    tags: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _address_style(cls, data: Any) -> Any:
        # Without a table the address is a manual reference (40001 = holding 0); with one it is
        # the 0-based address on the wire, in decimal or hex.
        if not isinstance(data, dict) or "address" not in data:
            return data
        address = data["address"]
        if data.get("table") is None:
            table, number = parse_manual_address(address)
            return {**data, "table": table, "address": number}
        if isinstance(address, str):
            try:
                return {**data, "address": int(address.strip(), 0)}
            except ValueError:
                raise ValueError(
                    f"address {address!r} is not a number: with table: give the 0-based address "
                    "(2000 or 0x07D0), or leave table out and write the manual reference (40001)"
                ) from None
        return data

    @field_validator("invalid", mode="before")
    @classmethod
    def _invalid_list(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {raw: "invalid value" for raw in v}
        return v

    @field_validator("enum", mode="before")
    @classmethod
    def _bool_keys(cls, v: Any) -> Any:
        # YAML reads `true: open` with a boolean key; a bit's enum means 1/0.
        if isinstance(v, dict):
            return {int(k) if isinstance(k, bool) else k: val for k, val in v.items()}
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Point:
        t = self.type
        if self.table in BIT_TABLES:
            if t != "bit":
                raise ValueError(f"a {self.table} holds single bits: give type: bit (not {t})")
            if self.bit is not None:
                raise ValueError(f"bit: only picks a bit out of a register; a {self.table} is one bit already")
        elif t == "bit" and self.bit is None:
            raise ValueError(f"type bit on a {self.table} register needs bit: 0-15 (0 = least significant)")
        elif t != "bit" and self.bit is not None:
            raise ValueError("bit: needs type: bit")
        if t == "string":
            if self.length is None:
                raise ValueError("type string needs length: (registers, two characters each)")
            if self.enum or self.invalid or self.negative_from is not None:
                raise ValueError("a string has no enum, invalid or negative_from")
        elif self.length is not None:
            raise ValueError("length: is for type string only")
        if self.negative_from is not None and t not in INTEGER_TYPES:
            raise ValueError("negative_from: works on integer types only")
        if (self.enum or t in ("bit", "string")) and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale/offset apply to numbers; a {'enum' if self.enum else t} point takes neither")
        if self.invert and t != "bit":
            raise ValueError("invert: is for bits only")
        if self.address + self.words - 1 > 65535:
            raise ValueError(f"{t} at {self.address} runs past register 65535")
        if self.field is None and self.measurement != GENERIC_MEASUREMENT:
            raise ValueError(f"points on measurement {self.measurement!r} must name their field")
        return self

    @property
    def words(self) -> int:
        """Registers (or, in a bit table, bits) the point occupies."""
        if self.table in BIT_TABLES:
            return 1
        if self.type == "string":
            assert self.length is not None  # checked when the map loads
            return self.length
        return WORDS[self.type]

    @property
    def kind(self) -> Literal["float", "bool", "int", "string"]:
        """The type of the value in the Sample: fixed per point, so a series never changes type."""
        if self.type == "bit":
            return "bool"
        if self.type == "string":
            return "string"
        return "int" if self.enum else "float"

    @property
    def field_name(self) -> str:
        return self.field or DEFAULT_FIELDS[self.kind]

    def decode(self, data: Sequence[int] | Sequence[bool]) -> tuple[float | int | bool | str | None, str]:
        """This point's value from its own registers (or its one bit): (value, "") or (None, why not)."""
        if self.table in BIT_TABLES:
            return self.reader().read(data, 0)
        return self.reader().read(Packed(data), 0)

    def reader(self) -> PointReader:
        """The point compiled for the hot path: what to unpack, and how to scale and check it."""
        scale = self.scale
        kind: Literal["coil", "bit", "string", "enum", "number"]
        if self.table in BIT_TABLES:
            kind = "coil"
        elif self.type == "bit" or self.type == "string":
            kind = self.type
        else:
            kind = "enum" if self.enum else "number"
        lay = layout(self.type, self.order) if self.type in WORDS and self.type != "bit" else None
        return PointReader(
            kind=kind,
            layout=lay,
            order=self.order,
            words=self.words,
            bit=self.bit or 0,
            invert=self.invert,
            invalid=self.invalid,
            negative_from=self.negative_from,
            divisor=exact_divisor(scale),
            scale=scale,
            offset=self.offset,
            float32=self.type == "float32",
        )

    def state_name(self, value: int | bool) -> str:
        """The enum's word for ``value``; unknown codes read as ``unknown_<n>``."""
        code = int(value)
        return self.enum.get(code, f"unknown_{code}")

    @property
    def sample_tags(self) -> dict[str, str]:
        """The point's own tags; generic points are told apart by ``point``."""
        if self.measurement == GENERIC_MEASUREMENT and not self.tags:
            return {"point": self.name}
        return dict(self.tags)


@dataclass(frozen=True, slots=True)
class PointReader:
    """A point's decoding, precomputed: reads its value out of a :class:`Packed` reply at a
    register offset (coil/discrete points: out of the list of bits)."""

    kind: Literal["coil", "bit", "string", "enum", "number"]
    layout: Layout | None
    order: Order
    words: int
    bit: int
    invert: bool
    invalid: dict[int, str]
    negative_from: int | None
    divisor: float
    scale: float
    offset: float
    float32: bool

    def read(self, data: Any, off: int) -> tuple[float | int | bool | str | None, str]:
        kind = self.kind
        if kind == "coil":
            return bool(data[off]) != self.invert, ""
        if kind == "bit":
            return bool((data.words[off] >> self.bit) & 1) != self.invert, ""
        if kind == "string":
            return string_at(data, off, self.words, self.order), ""
        lay = self.layout
        assert lay is not None
        if self.invalid:
            raw = lay.raw(data, off)
            if raw in self.invalid:
                return None, f"{self.invalid[raw]} (raw 0x{raw:0{self.words * 4}X})"
        n = lay.read(data, off)
        if self.negative_from is not None:
            n = negative_from(int(n), self.negative_from)
        if kind == "enum":
            return int(n), ""
        if self.float32:
            if not math.isfinite(n):
                return None, "not a number (the device sent NaN or infinity)"
            n = float(f"{n:.7g}")  # a float32 holds ~7 digits; the rest is binary noise (25.3, not 25.2999992)
        value = n / self.divisor if self.divisor else n * self.scale
        if self.offset:
            value = round(value + self.offset, 9)
        if not math.isfinite(value):
            return None, "not a number (the device sent NaN or infinity)"
        return float(value), ""

    def value_of(self) -> Callable[[Any, int], float | int | bool | str | None]:
        """:meth:`read` without the reason, for the poll's hot path: the value, or None where
        :meth:`read` says why not (call it then for the words). Plain numbers, by far the most
        common points, get a function with their layout, scale and checks bound in; others go
        through :meth:`read`."""
        read = self.read
        lay = self.layout
        if self.kind != "number" or lay is None or self.invalid or self.negative_from is not None or self.offset:
            return lambda data, off: read(data, off)[0]
        unpack, swapped, divisor, scale = lay.value, lay.swapped, self.divisor, self.scale
        isfinite = math.isfinite
        if self.words == 1:
            # One register: the word itself, byte-swapped for BADC/DCBA, signed for int16 —
            # no packing of the reply at all.
            swap = self.order in ("BADC", "DCBA")
            signed = unpack(b"\xff\xff", 0)[0] < 0

            def word(data: Any, off: int) -> float | None:
                w: int = data.words[off]
                if swap:
                    w = ((w & 0xFF) << 8) | (w >> 8)
                if signed and w & 0x8000:
                    w -= 0x10000
                if divisor:
                    return w / divisor  # a 16-bit integer over a divisor >= 2: always finite
                value = float(w * scale)
                return value if isfinite(value) else None

            return word
        if self.float32:

            def float32(data: Any, off: int) -> float | None:
                n = unpack(data.le if swapped else data.be, 2 * off)[0]
                if not isfinite(n):
                    return None
                n = float(f"{n:.7g}")  # as in read()
                value = n / divisor if divisor else n * scale
                return value if isfinite(value) else None

            return float32
        if divisor:

            def divided(data: Any, off: int) -> float | None:
                value: float = unpack(data.le if swapped else data.be, 2 * off)[0] / divisor
                return value if isfinite(value) else None  # a float64 NaN stays NaN

            return divided

        def scaled(data: Any, off: int) -> float | None:
            value = float(unpack(data.le if swapped else data.be, 2 * off)[0] * scale)
            return value if isfinite(value) else None

        return scaled


class DewPoint(StrictModel):
    """Dew point (Magnus) from two points; written into the temperature point's Sample."""

    temperature: str
    humidity: str
    field: str = Field("dew_point_c", pattern=_IDENT)


class SerialDefaults(StrictModel):
    """The device's factory serial settings, for hints when it does not answer."""

    baud: int = Field(9600, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = "N"
    stop: Literal[1, 2] = 1
    address: int = Field(1, ge=1, le=247)


class RegisterMap(StrictModel):
    """A device model's registers. ``order`` is the default for points that give none."""

    model: str = Field(min_length=1)
    vendor: str = ""
    description: str = ""
    source: str = ""
    order: Order = "ABCD"
    serial: SerialDefaults | None = None
    max_registers: int = Field(125, ge=1, le=125, description="most registers the device returns per request")
    max_bits: int = Field(2000, ge=1, le=2000, description="most coils/inputs per request")
    gap_fill: int = Field(8, ge=0, le=124, description="unused registers read across to merge two requests")
    points: list[Point] = Field(min_length=1)
    dew_point: list[DewPoint] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _default_order(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("points"), list):
            order = data.get("order", "ABCD")
            data = {**data, "points": [{"order": order, **p} if isinstance(p, dict) else p for p in data["points"]]}
        return data

    @model_validator(mode="after")
    def _whole_map(self) -> RegisterMap:
        by_name: dict[str, int] = {}
        fields: dict[tuple[str, tuple[tuple[str, str], ...], str], str] = {}
        kinds: dict[tuple[str, str], str] = {}
        for i, p in enumerate(self.points):
            where = f"points[{i}] {p.name!r}"
            if p.name in by_name:
                raise ValueError(f"{where}: the name is already used by points[{by_name[p.name]}]; names must differ")
            by_name[p.name] = i
            out = [(p.field_name, p.kind)] + ([(f"{p.field_name}_name", "string")] if p.enum else [])
            group = (p.measurement, tuple(sorted(p.sample_tags.items())))
            for name, kind in out:
                other = fields.get((*group, name))
                if other is not None:
                    raise ValueError(
                        f"{where}: writes {p.measurement}.{name} with the same tags as point {other!r}; "
                        "give one of them other tags (e.g. sensor:) or another field"
                    )
                fields[(*group, name)] = p.name
                seen = kinds.setdefault((p.measurement, name), kind)
                if seen != kind:
                    raise ValueError(
                        f"{where}: {p.measurement}.{name} would be {kind} here but {seen} elsewhere; a field keeps "
                        "one type (time-series stores refuse a change)"
                    )
        for j, d in enumerate(self.dew_point):
            for role in ("temperature", "humidity"):
                ref = getattr(d, role)
                if ref not in by_name:
                    raise ValueError(f"dew_point[{j}].{role}: no point named {ref!r}; points: {', '.join(by_name)}")
                if self.points[by_name[ref]].kind != "float":
                    raise ValueError(f"dew_point[{j}].{role}: point {ref!r} is not a plain number")
            t = self.points[by_name[d.temperature]]
            key = (t.measurement, tuple(sorted(t.sample_tags.items())), d.field)
            if key in fields:
                raise ValueError(f"dew_point[{j}]: field {d.field} is already written by point {fields[key]!r}")
        return self

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MapError(f"register map {path}: cannot read it ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MapError(f"register map {path}: not valid YAML{where} — check indentation and quoting") from None


def parse_map(doc: Any, source: str) -> RegisterMap:
    """Validate a map document; the error names ``source``, each bad point by name, and the fix."""
    if not isinstance(doc, dict):
        raise MapError(f"register map {source}: must be a mapping with model: and points:")
    try:
        return RegisterMap.model_validate(doc)
    except ValidationError as e:
        lines = []
        raw_points = doc.get("points")
        points: list[Any] = raw_points if isinstance(raw_points, list) else []
        for problem in problems_from(e, RegisterMap):
            key = _name_points(problem.key, points)
            text = f"{key}: {problem.message}" if key else problem.message
            lines.append(f"  {text}" + (f"\n    fix: {problem.fix}" if problem.fix else ""))
        raise MapError(f"register map {source}:\n" + "\n".join(lines)) from None


def _name_points(key: str, points: list[Any]) -> str:
    """'points[3].type' -> "points[3] 'humidity' .type", so the reader finds the point by name."""
    m = re.match(r"^points\[(\d+)\](.*)$", key)
    if not m:
        return key
    i = int(m.group(1))
    name = points[i].get("name") if i < len(points) and isinstance(points[i], dict) else None
    return f"points[{i}] {name!r}{m.group(2)}" if name else key


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def names_in(folder: Path | None) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder is not None and folder.is_dir() else []


def find_map(spec: str, maps_dir: Path | None = None, base_dir: Path | None = None) -> Path:
    """``renke_rs_ws_n01`` -> that map in ``maps_dir``, else the built-in one; a spec with a slash
    or ending in .yaml/.yml is a path (relative ones count from ``base_dir``, the config's folder)."""
    if "/" in spec or spec.endswith((".yaml", ".yml")):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():
            raise MapError(f"register map file {path} does not exist (relative paths count from the config's folder)")
        return path.resolve()
    for folder in (maps_dir, BUILTIN_DIR):
        if folder is not None and (Path(folder) / f"{spec}.yaml").is_file():
            return (Path(folder) / f"{spec}.yaml").resolve()
    known = names_in(maps_dir) + builtin_names()
    raise MapError(
        f"no register map named {spec!r}"
        + (f" in {maps_dir} or" if maps_dir is not None else "")
        + f" among the built-in ones; known: {', '.join(known)} — or give a path to a .yaml map file"
    )


_CACHE: dict[tuple[Path, int], RegisterMap] = {}


def load_map_file(path: Path) -> RegisterMap:
    """A map file, validated once per version (many entries share one map)."""
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as e:
        raise MapError(f"register map {path}: cannot read it ({e.strerror or e})") from None
    cached = _CACHE.get((path, stamp))
    if cached is None:
        cached = _CACHE[(path, stamp)] = parse_map(_read(path), str(path))
    return cached


def load_map(spec: str, maps_dir: Path | None = None, base_dir: Path | None = None) -> tuple[Path, RegisterMap]:
    path = find_map(spec, maps_dir, base_dir)
    return path, load_map_file(path)


def check_names(names: Iterable[str], register_map: RegisterMap, key: str) -> None:
    known = {p.name for p in register_map.points}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"{key}: {', '.join(map(repr, unknown))} not in the map {register_map.model!r}; its points: "
            + ", ".join(sorted(known))
        )
