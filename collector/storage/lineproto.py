"""InfluxDB line protocol from Samples, fast: cached series keys, str.translate escaping, no Point objects.

Escaping follows the line-protocol spec: measurement ``,`` and space; tag keys, tag values and
field keys ``,`` ``=`` and space; string field values ``\\`` and ``"``. Tags are sorted by key.
Integers are ``123i``, booleans ``true``/``false``, floats ``repr`` (shortest round-trip form),
timestamps nanoseconds.

Two cases the spec cannot express are rewritten rather than sent ambiguously:

* A backslash in a name that ends the name or comes before another backslash, a special
  character or a control character. The spec has no escape for backslash there, and servers
  disagree on what they read (InfluxDB keeps ``\\\\`` as two backslashes, VictoriaMetrics makes
  it one; a trailing one swallows the separator after it). Such a run of backslashes becomes
  the same number of ``/`` — ``C:\\`` is written ``C:/``, ``\\\\srv\\share`` ``//srv\\share``. A lone
  backslash before an ordinary character (``DOMAIN\\user``) is kept: every parser reads it
  literally.
* Newline, carriage return and tab, which end or split a line: in names they become the two
  characters ``\\n``, ``\\r``, ``\\t`` (as influxdb-client writes them); in string field values
  likewise, so an error text with a line break is stored with a literal ``\\n``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from math import isfinite

from probes.model import INT64_MAX, INT64_MIN, FieldValue, Sample

_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESC_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", **_CONTROL})
_ESC_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", **_CONTROL})
_ESC_STRING = str.maketrans({"\\": "\\\\", '"': '\\"', **{k: "\\" + v for k, v in _CONTROL.items()}})

# A run of backslashes that is not a single backslash followed by an ordinary character.
_BAD_BACKSLASHES = re.compile(r'\\\\+|\\(?=[,= "\n\r\t]|\Z)')


def _slashes(m: re.Match[str]) -> str:
    return "/" * len(m.group())


def escape_measurement(name: str) -> str:
    if "\\" in name:
        name = _BAD_BACKSLASHES.sub(_slashes, name)
    return name.translate(_ESC_MEASUREMENT)


def escape_key(name: str) -> str:
    """Escape a tag key, tag value or field key."""
    if "\\" in name:
        name = _BAD_BACKSLASHES.sub(_slashes, name)
    return name.translate(_ESC_KEY)


_AS_READ = str.maketrans(_CONTROL)


def as_read(name: str) -> str:
    """A measurement, tag or field name as a server reads it back from our escaped form."""
    if "\\" in name:
        name = _BAD_BACKSLASHES.sub(_slashes, name)
    return name.translate(_AS_READ)


def escape_string(value: str) -> str:
    """Escape a string field value (without the surrounding quotes)."""
    return value.translate(_ESC_STRING)


def format_value(value: FieldValue) -> str | None:
    """One field value in line protocol, or None when it cannot be stored (NaN, ±Inf, > int64)."""
    # bool first: it is a subclass of int.
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return f"{value}i" if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        return repr(value) if isfinite(value) else None
    if isinstance(value, str):
        return f'"{value.translate(_ESC_STRING)}"'
    return None


class LineEncoder:
    """Turns Samples into lines, caching the escaped ``measurement,tags`` prefix of each series.

    The cache is keyed on the tags in the order the Sample holds them (no sort on a hit) and is
    cleared when it reaches ``max_series``: a city has ~50k series, so in steady state it never
    fills, and clearing costs one re-escape per series rather than LRU bookkeeping per line.
    ``drop_string_fields`` leaves string fields out, for stores that cannot hold them
    (VictoriaMetrics turns a string into a 0-valued series). ``skipped`` counts samples that
    had nothing encodable (no measurement, or no storable field).
    """

    def __init__(self, *, max_series: int = 100_000, drop_string_fields: bool = False) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.max_series = max_series
        self.drop_string_fields = drop_string_fields
        self.skipped = 0
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._field_keys: dict[str, str] = {}

    def series_key(self, measurement: str, tags: Mapping[str, str]) -> str:
        """``measurement,k1=v1,k2=v2`` escaped, tags sorted by key; empty tags are left out."""
        cache_key = (measurement, tuple(tags.items()))
        key = self._series.get(cache_key)
        if key is None:
            parts = [escape_measurement(measurement)]
            for k, v in sorted(tags.items()):
                if k and v:  # line protocol has no empty tag key or value: absent means empty
                    parts.append(f"{escape_key(k)}={escape_key(v)}")
            key = ",".join(parts)
            if len(self._series) >= self.max_series:
                self._series.clear()
            self._series[cache_key] = key
        return key

    def _field_key(self, name: str) -> str:
        key = self._field_keys.get(name)
        if key is None:
            key = escape_key(name)
            if len(self._field_keys) >= 10_000:  # field names are few; bound it anyway
                self._field_keys.clear()
            self._field_keys[name] = key
        return key

    def encode(self, sample: Sample) -> str | None:
        """One line (no trailing newline), or None if the sample holds nothing storable."""
        measurement = sample.measurement
        # A line starting with '#' is a comment to the server: the sample would vanish silently.
        if not measurement or measurement[0] == "#":
            self.skipped += 1
            return None
        fields = []
        field_keys = self._field_keys
        drop_strings = self.drop_string_fields
        # Dispatch on the exact type (bool before int matters only for subclasses, handled last).
        for name, value in sample.fields.items():
            key = field_keys.get(name)
            if key is None:
                if not name:
                    continue
                key = self._field_key(name)
            t = type(value)
            # (exact-type tests mypy cannot follow through ``t``; probes.model.storable is the rule)
            if t is float:
                if isfinite(value):  # type: ignore[arg-type]
                    fields.append(f"{key}={value!r}")
            elif t is int:
                if INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
                    fields.append(f"{key}={value}i")
            elif t is str:
                if not drop_strings:
                    fields.append(f'{key}="{value.translate(_ESC_STRING)}"')  # type: ignore[union-attr]
            elif t is bool:
                fields.append(f"{key}=true" if value else f"{key}=false")
            elif not (drop_strings and isinstance(value, str)):
                text = format_value(value)
                if text is not None:
                    fields.append(f"{key}={text}")
        if not fields:
            self.skipped += 1
            return None
        return f"{self.series_key(measurement, sample.tags)} {','.join(fields)} {int(sample.time_ns)}"

    def encode_many(self, samples: Iterable[Sample]) -> list[str]:
        """Lines for ``samples``, leaving out (and counting in ``skipped``) the unstorable ones."""
        encode = self.encode
        return [line for line in map(encode, samples) if line is not None]
