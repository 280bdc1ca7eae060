"""Checks a probe's metric catalogue both ways against the Samples its tests saw emitted
(Datadog's metadata.csv idea): every emitted field is catalogued with its type, and every
catalogued field was emitted by some scenario."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import probes
from probes.model import PROBE_STATUS, Sample

PROBES_DIR = Path(probes.__file__).resolve().parent
HEADER = ["measurement", "field", "type", "unit", "description"]
TYPES = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
}
# A field's name suffix promises its unit; the catalogue must agree.
# Longest suffix first: "_per_s" is a rate, not a duration.
SUFFIX_UNITS = {
    "_per_s": "1/s",
    "_ms": "ms",
    "_s": "s",
    "_pct": "%",
    "_bytes": "bytes",
    "_bps": "bit/s",
    "_pps": "packets/s",
}


@dataclass(frozen=True, slots=True)
class Entry:
    measurement: str
    field: str
    type: str
    unit: str
    description: str


def read_csv(path: Path) -> dict[tuple[str, str], Entry]:
    """Rows of a metrics.csv, checked for shape: header, known types, units matching suffixes."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows and rows[0] == HEADER, f"{path}: header must be {','.join(HEADER)}"
    out: dict[tuple[str, str], Entry] = {}
    for n, row in enumerate(rows[1:], start=2):
        assert len(row) == 5, f"{path}:{n}: expected 5 columns, got {len(row)}"
        e = Entry(*row)
        assert e.type in TYPES, f"{path}:{n}: type {e.type!r} is not one of {sorted(TYPES)}"
        assert e.description.strip(), f"{path}:{n}: {e.field} needs a description"
        assert (e.measurement, e.field) not in out, f"{path}:{n}: {e.measurement}.{e.field} listed twice"
        for suffix, unit in SUFFIX_UNITS.items():
            if e.field.endswith(suffix):
                assert e.unit == unit, f"{path}:{n}: {e.field} ends in {suffix} so its unit is {unit!r}"
                break
        out[(e.measurement, e.field)] = e
    return out


def load(kind: str) -> dict[tuple[str, str], Entry]:
    """A probe's own catalogue plus the shared probe_status one, plus the probe_status fields only
    this probe adds (``<kind>/probe_status.csv``, e.g. SNMP's pacing), when it has any."""
    own = read_csv(PROBES_DIR / kind / "metrics.csv")
    assert all(m != PROBE_STATUS for m, _ in own), f"{kind}: catalogue probe_status in probe_status.csv only"
    shared = read_csv(PROBES_DIR / "probe_status.csv")
    extra_path = PROBES_DIR / kind / "probe_status.csv"
    extra = read_csv(extra_path) if extra_path.exists() else {}
    assert all(m == PROBE_STATUS for m, _ in extra), f"{extra_path}: only probe_status rows belong here"
    assert not set(extra) & set(shared), f"{extra_path}: repeats fields of probes/probe_status.csv"
    return {**own, **shared, **extra}


def assert_both_ways(kind: str, samples: Iterable[Sample]) -> None:
    catalogue = load(kind)
    emitted: set[tuple[str, str]] = set()
    wrong: list[str] = []
    for s in samples:
        if s.measurement == PROBE_STATUS:
            assert s.tags.get("probe") == kind, f"probe_status from another probe: {s.tags}"
        for name, value in s.fields.items():
            key = (s.measurement, name)
            emitted.add(key)
            entry = catalogue.get(key)
            if entry is None:
                wrong.append(f"{s.measurement}.{name} = {value!r} is emitted but not catalogued")
            elif not TYPES[entry.type](value):
                wrong.append(f"{s.measurement}.{name} = {value!r} is not a {entry.type} as catalogued")
    assert not wrong, "\n".join(wrong)
    never = sorted(f"{m}.{f}" for m, f in set(catalogue) - emitted)
    assert not never, f"{kind}: catalogued but emitted by no test scenario: {', '.join(never)}"


README_SECTIONS = [
    "What it measures",
    "Requirements",
    "Configuration",
    "Metrics",
    "Example output",
    "Troubleshooting",
]


def assert_readme_current(kind: str) -> None:
    """The probe's README has the house sections in order, embeds its sample.yaml verbatim and
    names every catalogued field, so neither can drift from the code unnoticed."""
    readme = (PROBES_DIR / kind / "README.md").read_text(encoding="utf-8")
    headings = [line[3:].strip() for line in readme.splitlines() if line.startswith("## ")]
    assert headings == README_SECTIONS, f"{kind}/README.md sections: {headings}"
    sample = (PROBES_DIR / kind / "sample.yaml").read_text(encoding="utf-8").strip()
    assert sample in readme, f"{kind}/README.md must include sample.yaml as it is"
    missing = sorted({f for m, f in read_csv(PROBES_DIR / kind / "metrics.csv") if f"`{f}`" not in readme})
    assert not missing, f"{kind}/README.md does not mention: {', '.join(missing)}"
