"""Every measurement and field a panel names must exist: the probes' metric catalogues
(probes/*/metrics.csv, probes/probe_status.csv) plus the agent's and collector's own series. A
renamed field fails generation here instead of leaving a dead panel behind."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Final

import probes
from dashboards.model import Dashboard
from protocol.status import HEALTH_MEASUREMENT

#: what is not in a probe catalogue: the agent's account of itself (agent/runner.py self_sample),
#: the collector's (collector/service.py self_sample) and its site/alert series
#: (collector/overview.py); tests/dashboards checks these against the collector's constants
SELF_FIELDS: Final[dict[str, dict[str, str]]] = {
    HEALTH_MEASUREMENT: {
        "spool_depth": "int",
        "spool_bytes": "int",
        "spool_oldest_s": "float",
        "dropped_batches": "int",
        "dropped_samples": "int",
        "published_batches": "int",
        "acked_batches": "int",
        "connected": "bool",
        "draining": "bool",
        "reconnects": "int",
        "probe_runs": "int",
        "probe_overruns": "int",
        "publish_latency_ms": "float",
    },
    "netwatch_collector": {"stored_samples": "int", "rejected_total": "int", "queue_depth": "int"},
    "netwatch_site": {
        "agents_online": "int",
        "agents_total": "int",
        "alerts_warning": "int",
        "alerts_critical": "int",
        "state": "int",
    },
    "netwatch_alerts": {"firing": "int"},
}


class CatalogueError(ValueError):
    pass


def load() -> dict[str, dict[str, str]]:
    """measurement -> field -> type (int, float, bool, string)."""
    root = Path(probes.__file__).resolve().parent
    out: dict[str, dict[str, str]] = {m: dict(f) for m, f in SELF_FIELDS.items()}
    for path in sorted([*root.glob("*/metrics.csv"), root / "probe_status.csv"]):
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                out.setdefault(row["measurement"], {})[row["field"]] = row["type"]
    return out


def check(dashboards: tuple[Dashboard, ...]) -> None:
    """Raise CatalogueError listing every query that names an unknown or unusable field."""
    cat = load()
    problems: list[str] = []
    uids: set[str] = set()
    for d in dashboards:
        if d.uid in uids:
            problems.append(f"{d.uid}: uid used twice")
        uids.add(d.uid)
        for p in d.panels:
            for q in p.queries:
                where = f"{d.uid} / {p.title} / {q.ref}: {q.measurement}.{q.field}"
                kind = cat.get(q.measurement, {}).get(q.field)
                if kind is None:
                    problems.append(f"{where}: not in any metric catalogue (probes/*/metrics.csv) — renamed?")
                elif kind == "string":
                    problems.append(f"{where}: a string field (VictoriaMetrics does not store it): use its number")
                elif kind == "bool" and q.agg != "last":
                    problems.append(f"{where}: a bool field takes agg 'last' (InfluxQL cannot average booleans)")
    if problems:
        raise CatalogueError(
            "dashboards name fields that do not exist / 仪表盘引用了不存在的字段:\n  " + "\n  ".join(problems)
        )
