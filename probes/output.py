"""How Samples look to people (rich tables) and to scripts (JSON lines, one object each), and
the exit codes both CLIs share. Probes never print: this serves the agent's and the collector's CLIs."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from probes.model import PROBE_STATUS, Sample

if TYPE_CHECKING:  # rich is imported when something is shown to a person, not for JSON or a running agent
    from rich.console import Console
    from rich.table import Table

HIDDEN_TAGS = {"site", "agent"}

#: What every netwatch command exits with: 0 all well · 1 a target is down or degraded (or, for a
#: query, nothing found) · 2 bad config or usage · 3 a runtime failure.
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


#: C0/C1 control characters but tab and newline (ESC starts terminal sequences: colours, OSC 8 hyperlinks, title
#: changes), DEL, and the Unicode direction overrides that reorder what a line seems to say
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe(value: object) -> str:
    """Text that came from outside (an agent, a device, a payload) made harmless for a terminal:
    control and direction-override characters are shown as ``\\xNN`` / ``\\uNNNN``."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", str(value))


def lit(value: object) -> str:
    """Outside text to put inside rich markup: made :func:`safe`, then markup-escaped, so ``[/x]``
    or ``[link=...]`` is printed as written instead of being parsed."""
    from rich.markup import escape

    return escape(safe(value))


def print_json_lines(rows: Iterable[Mapping[str, Any]]) -> None:
    out = sys.stdout.buffer
    for row in rows:
        out.write(orjson.dumps(row) + b"\n")
    out.flush()


def print_samples_json(samples: Iterable[Sample]) -> None:
    print_json_lines(s.to_dict() for s in samples)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 1e12 else f"{v:.4g}"
    return str(v)


def samples_table(samples: Sequence[Sample], *, title: str | None = None, show_identity: bool = False) -> Table:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("time", no_wrap=True)
    table.add_column("measurement", style="cyan", overflow="fold")
    table.add_column("tags", overflow="fold")
    table.add_column("fields", overflow="fold")
    # tags and field values come from agents and devices: never markup
    for s in samples:
        tags = " ".join(
            f"{lit(k)}={lit(v)}" for k, v in sorted(s.tags.items()) if show_identity or k not in HIDDEN_TAGS
        )
        fields = " ".join(f"{lit(k)}={lit(_fmt(v))}" for k, v in s.fields.items())
        if s.measurement == PROBE_STATUS:
            colour = {"ok": "green", "degraded": "yellow", "down": "red"}.get(str(s.fields.get("status")), "white")
            fields = f"[{colour}]{fields}[/{colour}]"
        ts = datetime.fromtimestamp(s.time_ns / 1e9).strftime("%H:%M:%S")
        table.add_row(ts, lit(s.measurement), tags, fields)
    return table


def status_counts(samples: Iterable[Sample]) -> dict[str, int]:
    counts = {"ok": 0, "degraded": 0, "down": 0}
    for s in samples:
        if s.measurement == PROBE_STATUS:
            st = str(s.fields.get("status", "ok"))
            counts[st] = counts.get(st, 0) + 1
    return counts


def summary_line(counts: dict[str, int]) -> str:
    """Bilingual, for the technician in the equipment room."""
    return (
        f"ok {counts['ok']} · degraded {counts['degraded']} · down {counts['down']}"
        f"  |  正常 {counts['ok']} · 降级 {counts['degraded']} · 故障 {counts['down']}"
    )
