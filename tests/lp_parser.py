"""A small, independent line-protocol reader for the tests: the spec's escapes, nothing more.

Names: ``\\`` before a character the context escapes (measurement ``,`` space; tag keys/values
and field keys ``,`` ``=`` space) yields that character; any other backslash is literal.
String field values: ``\\\\`` and ``\\"`` are escapes, any other backslash is literal.
"""

from __future__ import annotations

from dataclasses import dataclass

MEASUREMENT_ESCAPES = frozenset(", ")
KEY_ESCAPES = frozenset(",= ")


@dataclass
class Line:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, int | float | bool | str]
    time_ns: int


class ParseError(ValueError):
    pass


def _name(line: str, i: int, escapes: frozenset[str], stops: str) -> tuple[str, int]:
    out = []
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in escapes:
            out.append(line[i + 1])
            i += 2
            continue
        if c in stops:
            break
        out.append(c)
        i += 1
    if not out:
        raise ParseError(f"empty name at {i} in {line!r}")
    return "".join(out), i


def _expect(line: str, i: int, c: str) -> int:
    if i >= len(line) or line[i] != c:
        raise ParseError(f"expected {c!r} at {i} in {line!r}")
    return i + 1


def _value(line: str, i: int) -> tuple[int | float | bool | str, int]:
    if line[i] == '"':
        i += 1
        out = []
        while True:
            if i >= len(line):
                raise ParseError(f"unterminated string in {line!r}")
            c = line[i]
            if c == "\\" and i + 1 < len(line) and line[i + 1] in '\\"':
                out.append(line[i + 1])
                i += 2
            elif c == '"':
                return "".join(out), i + 1
            else:
                out.append(c)
                i += 1
    j = i
    while j < len(line) and line[j] not in ", ":
        j += 1
    text = line[i:j]
    if text in ("true", "false"):
        return text == "true", j
    if text.endswith("i"):
        return int(text[:-1]), j
    return float(text), j


def parse(line: str) -> Line:
    if "\n" in line:
        raise ParseError("a line must not contain a newline")
    measurement, i = _name(line, 0, MEASUREMENT_ESCAPES, ", ")
    tags: dict[str, str] = {}
    while i < len(line) and line[i] == ",":
        key, i = _name(line, i + 1, KEY_ESCAPES, ",= ")
        i = _expect(line, i, "=")
        value, i = _name(line, i, KEY_ESCAPES, ", ")
        if key in tags:
            raise ParseError(f"duplicate tag {key!r}")
        tags[key] = value
    i = _expect(line, i, " ")
    fields: dict[str, int | float | bool | str] = {}
    while True:
        key, i = _name(line, i, KEY_ESCAPES, ",= ")
        i = _expect(line, i, "=")
        fields[key], i = _value(line, i)
        if i < len(line) and line[i] == ",":
            i += 1
            continue
        break
    i = _expect(line, i, " ")
    return Line(measurement, tags, fields, int(line[i:]))
