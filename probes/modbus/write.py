"""Writing one register-map point: a value as people give it (22.5, on, an enum word) turned into
the registers or the coil the device holds — the inverse of what reading does (scale, offset,
type, order, negative_from, invert) — refusing what the point cannot hold. Pure; no I/O."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from probes.modbus.codec import INTEGER_TYPES, encode, encode_string
from probes.modbus.registermap import Point

#: Tables a write may go to: holding registers (4xxxx) and coils (0xxxx). Input registers and
#: discrete inputs are read-only in Modbus itself.
WRITABLE_TABLES = frozenset({"holding", "coil"})
_RANGE: dict[str, tuple[int, int]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}
_TRUE = {"1", "on", "true", "yes", "closed"}
_FALSE = {"0", "off", "false", "no", "open"}


class WriteRefused(ValueError):
    """A value or point that cannot be written; ``str()`` says why and what would do."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """What goes on the wire: ``registers`` for a holding point, ``coil`` for a coil."""

    registers: tuple[int, ...] = ()
    coil: bool | None = None


def encode_point(point: Point, text: str, *, invert: bool = False) -> Encoded:
    """``text`` as the device must hold it for ``point``; WriteRefused when it cannot be written.
    ``invert`` is the config's own ``invert:`` for this point (on top of the map's)."""
    where = f"point {point.name} ({point.table} {point.address})"
    if point.table not in WRITABLE_TABLES:
        kind = "an input register (3xxxx)" if point.table == "input" else "a discrete input (1xxxx)"
        raise WriteRefused(f"{where} is {kind}: read-only in Modbus; only holding registers and coils take writes")
    if point.table == "coil":
        return Encoded(coil=_bit(point, text) != (point.invert != invert))
    if point.type == "bit":
        raise WriteRefused(
            f"{where} is bit {point.bit} of a register: writing single bits of a register is not supported"
        )
    if point.type == "string":
        assert point.length is not None
        if not text.isascii() or len(text) > 2 * point.length:
            raise WriteRefused(f"{where} holds up to {2 * point.length} ASCII characters")
        return Encoded(registers=tuple(encode_string(text, point.length, point.order)))
    number: int | float = _enum_code(point, text) if point.enum else _engineering_to_raw(point, text)
    if point.type in INTEGER_TYPES:
        assert isinstance(number, int)
        if point.negative_from is not None:
            number = _negative_to_raw(point, number)
        low, high = _RANGE[point.type]
        if not low <= number <= high:
            raise WriteRefused(f"{text} is out of range for {where}: its {point.type} holds {_span(point, low, high)}")
        raw_unsigned = int(number) & ((1 << (16 * point.words)) - 1)
        if raw_unsigned in point.invalid:
            raise WriteRefused(f"{text} is the point's '{point.invalid[raw_unsigned]}' marker, not a value")
    regs = encode(number, point.type, point.order)
    return Encoded(registers=tuple(regs))


def _bit(point: Point, text: str) -> bool:
    word = text.strip().lower()
    for code, name in point.enum.items():
        if word == name.lower():
            return bool(code)
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    names = "/".join(point.enum.values())
    raise WriteRefused(f"{text!r} is not on/off (1/0{'/' + names if names else ''}) for coil {point.name}")


def _enum_code(point: Point, text: str) -> int:
    word = text.strip()
    for code, name in point.enum.items():
        if word.lower() == name.lower():
            return code
    try:
        number: int | None = int(word, 0)
    except ValueError:
        number = None
    if number is None or number not in point.enum:
        choices = ", ".join(f"{n} ({c})" for c, n in point.enum.items())
        raise WriteRefused(f"{text!r} is not one of point {point.name}'s states: {choices}")
    return number


def _engineering_to_raw(point: Point, text: str) -> int | float:
    """22.5 °C on a ×0.1 int16 -> 225: (value − offset) / scale, exact or refused."""
    try:
        value = float(text)
    except ValueError:
        raise WriteRefused(f"{text!r} is not a number (point {point.name} takes {point.type})") from None
    if not math.isfinite(value):
        raise WriteRefused(f"{text!r}: write a finite number")
    if point.scale == 0:
        raise WriteRefused(f"point {point.name} has scale 0: no value can be written")
    raw = (value - point.offset) / point.scale
    if point.type in INTEGER_TYPES:
        whole = round(raw)
        if abs(raw - whole) > 1e-6 * max(1.0, abs(raw)):
            step = f"{point.scale:g}"
            raise WriteRefused(
                f"{text} is not a step of point {point.name}'s resolution ({step} {point.unit})".rstrip()
            )
        return whole
    limit = _FLOAT_MAX[point.type]
    if abs(raw) > limit:
        raise WriteRefused(f"{text} is out of range for point {point.name}'s {point.type}")
    if point.type == "float32":
        (raw,) = struct.unpack(">f", struct.pack(">f", raw))
    return raw


def _negative_to_raw(point: Point, number: int) -> int:
    """The inverse of negative_from: −n is stored as threshold + n; positives must stay below it."""
    threshold = point.negative_from
    assert threshold is not None
    if number < 0:
        return threshold - number
    if number >= threshold:
        raise WriteRefused(f"point {point.name}: positive raw values stop below {threshold}")
    return number


def _span(point: Point, low: int, high: int) -> str:
    if point.enum:
        return f"{low}..{high}"
    lo, hi = low * point.scale + point.offset, high * point.scale + point.offset
    return f"{min(lo, hi):g}..{max(lo, hi):g} {point.unit}".rstrip()
