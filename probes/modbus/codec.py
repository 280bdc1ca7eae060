"""Turning Modbus registers into values and back: data types, word/byte orders, bits, manual-style
addresses (40001 = holding 0) and the dew point. Pure functions; nothing here does I/O."""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Table = Literal["coil", "discrete", "holding", "input"]
DataType = Literal["bit", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64", "string"]
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]

TABLES: tuple[Table, ...] = ("coil", "discrete", "holding", "input")
BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
#: registers a value of each type occupies (strings give their own length)
WORDS: dict[str, int] = {
    "bit": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
INTEGER_TYPES: frozenset[str] = frozenset({"int16", "uint16", "int32", "uint32", "int64", "uint64"})
NUMERIC_TYPES: frozenset[str] = INTEGER_TYPES | {"float32", "float64"}
_STRUCT: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "int64": ">q",
    "uint64": ">Q",
    "float64": ">d",
}
# The leading digit of a manual reference (0xxxx, 1xxxx, 3xxxx, 4xxxx) names the table.
_MANUAL_TABLE: dict[str, Table] = {"0": "coil", "1": "discrete", "3": "input", "4": "holding"}


def ordered_bytes(words: Sequence[int], order: Order) -> bytes:
    """The value's bytes, most significant first, from registers as the device sent them.

    ``ABCD`` is plain big-endian; ``CDAB`` swaps the words (registers), ``BADC`` the bytes inside
    each register, ``DCBA`` both. For a one-register value only the byte swap matters.
    """
    ws = list(words)
    if order in ("CDAB", "DCBA"):
        ws.reverse()
    swap = order in ("BADC", "DCBA")
    out = bytearray()
    for w in ws:
        out += (w & 0xFFFF).to_bytes(2, "little" if swap else "big")
    return bytes(out)


def device_words(data: bytes, order: Order) -> list[int]:
    """The inverse of :func:`ordered_bytes`: big-endian value bytes -> registers as the device holds them."""
    swap = order in ("BADC", "DCBA")
    ws = [int.from_bytes(data[i : i + 2], "little" if swap else "big") for i in range(0, len(data), 2)]
    if order in ("CDAB", "DCBA"):
        ws.reverse()
    return ws


class Packed:
    """One reply's registers, for values read out of it: ``words`` as received; ``be`` the
    registers big-endian as sent and ``le`` each register byte-swapped, each packed on first use
    only, so every multi-register value is a single ``struct.unpack_from`` and a reply of
    16-bit values alone (read from ``words``) packs nothing. A value's order picks the buffer and
    the endianness (see :func:`layout`)."""

    __slots__ = ("words", "be", "le")
    be: bytes
    le: bytes

    def __init__(self, words: Sequence[int]) -> None:
        self.words = words

    def __getattr__(self, name: str) -> bytes:
        # Called only while the slot is still empty: fill it, and later reads are plain slot reads.
        if name == "be":
            self.be = struct.pack(f">{len(self.words)}H", *self.words)
            return self.be
        if name == "le":
            self.le = struct.pack(f"<{len(self.words)}H", *self.words)
            return self.le
        raise AttributeError(name)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a value of one type and order sits in a :class:`Packed` reply."""

    swapped: bool  # read from ``le`` (CDAB, BADC), else from ``be``
    value: Callable[[bytes, int], tuple[Any, ...]]  # struct unpack_from for the type
    unsigned: Callable[[bytes, int], tuple[Any, ...]]  # same width, unsigned: for sentinels

    def read(self, packed: Packed, word: int) -> int | float:
        v: int | float = self.value(packed.le if self.swapped else packed.be, 2 * word)[0]
        return v

    def raw(self, packed: Packed, word: int) -> int:
        v: int = self.unsigned(packed.le if self.swapped else packed.be, 2 * word)[0]
        return v


@functools.lru_cache(maxsize=64)
def layout(dtype: DataType, order: Order) -> Layout:
    """ABCD reads the registers big-endian; DCBA the same bytes little-endian (all reversed);
    BADC the byte-swapped registers big-endian; CDAB those little-endian (words reversed). This
    gives exactly :func:`ordered_bytes` for every width, without building bytes per value."""
    swapped = order in ("CDAB", "BADC")
    endian = "<" if order in ("CDAB", "DCBA") else ">"
    fmt = _STRUCT[dtype][1]
    unsigned = {2: "H", 4: "I", 8: "Q"}[struct.calcsize(fmt)]
    return Layout(swapped, struct.Struct(endian + fmt).unpack_from, struct.Struct(endian + unsigned).unpack_from)


def raw_unsigned(words: Sequence[int], order: Order) -> int:
    """The registers as one unsigned integer in value order — what sentinels (0x8000) are compared with."""
    dtype: DataType = {1: "uint16", 2: "uint32", 4: "uint64"}[len(words)]  # type: ignore[assignment]
    return layout(dtype, order).raw(Packed(words), 0)


def decode(words: Sequence[int], dtype: DataType, order: Order = "ABCD") -> int | float | str:
    """Registers -> the number (or text) they hold, before scale and offset."""
    if dtype == "string":
        return decode_string(words, order)
    if dtype == "bit":
        dtype = "uint16"
    return layout(dtype, order).read(Packed(words), 0)


def encode(value: float, dtype: DataType, order: Order = "ABCD") -> list[int]:
    """A number -> the registers a device using ``order`` would hold (for simulators and tests)."""
    fmt = _STRUCT[dtype]
    number: int | float = value if dtype.startswith("float") else int(value)
    return device_words(struct.pack(fmt, number), order)


def decode_string(words: Sequence[int], order: Order = "ABCD") -> str:
    """Model and serial registers: two ASCII characters per register, padding (NUL, space) dropped.
    ``BADC``/``DCBA`` mean the low byte holds the first character; strings never swap words."""
    return string_at(Packed(words), 0, len(words), order)


def string_at(packed: Packed, word: int, length: int, order: Order) -> str:
    data = (packed.le if order in ("BADC", "DCBA") else packed.be)[2 * word : 2 * (word + length)]
    return data.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def encode_string(text: str, length: int, order: Order = "ABCD") -> list[int]:
    data = text.encode("ascii")[: length * 2].ljust(length * 2, b"\0")
    swap = order in ("BADC", "DCBA")
    return [int.from_bytes(data[i : i + 2], "little" if swap else "big") for i in range(0, len(data), 2)]


def bit_of(word: int, index: int) -> bool:
    """Bit ``index`` of a register; bit 0 is the least significant, as device manuals count."""
    return bool((word >> index) & 1)


def negative_from(raw: int, threshold: int) -> int:
    """Sign-magnitude with an offset (KinCony SHT30 temperature): raw values from ``threshold`` up
    stand for ``-(raw - threshold)``; below it the raw value is the number."""
    return -(raw - threshold) if raw >= threshold else raw


def parse_manual_address(ref: int | str) -> tuple[Table, int]:
    """A manual-style reference -> (table, 0-based address).

    ``40001`` is holding register 0, ``30100`` input register 99, ``10001`` discrete input 0,
    ``"00001"`` coil 0; six-digit references (``400001``, up to ``465536``) work the same way.
    """
    text = str(ref).strip()
    if not text.isdigit() or len(text) not in (5, 6):
        hint = "; a coil reference starts with 0, so quote it: '00001'" if text.isdigit() and len(text) < 5 else ""
        raise ValueError(
            f"{ref!r} is not a manual-style register reference (5 or 6 digits such as 40001, 30100, 400001)"
            f"{hint}; or give table: and a 0-based address"
        )
    table = _MANUAL_TABLE.get(text[0])
    if table is None:
        raise ValueError(
            f"{ref!r}: a manual reference starts with 0 (coil), 1 (discrete input), 3 (input register) "
            "or 4 (holding register)"
        )
    number = int(text[1:])
    if number < 1 or number > 65536:
        raise ValueError(f"{ref!r}: the register number after the leading digit must be 1-65536 (it counts from 1)")
    return table, number - 1


def manual_reference(table: Table, address: int) -> str:
    """(holding, 0) -> '40001': how a device manual would write a 0-based address."""
    digit = {v: k for k, v in _MANUAL_TABLE.items()}[table]
    return f"{digit}{address + 1:04d}" if address < 9999 else f"{digit}{address + 1:05d}"


# Magnus coefficients over water (Sonntag 1990), good to ~0.1 °C from -45 to 60 °C.
_MAGNUS_B = 17.62
_MAGNUS_C = 243.12


def dew_point_c(temperature_c: float, humidity_pct: float) -> float | None:
    """Dew point by the Magnus formula; None where it is undefined (RH not in (0, 100])."""
    if not (0.0 < humidity_pct <= 100.0) or not math.isfinite(temperature_c):
        return None
    gamma = math.log(humidity_pct / 100.0) + _MAGNUS_B * temperature_c / (_MAGNUS_C + temperature_c)
    return _MAGNUS_C * gamma / (_MAGNUS_B - gamma)
