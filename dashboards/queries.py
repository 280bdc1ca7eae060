"""The two query languages, from one ``Query``: InfluxQL (InfluxDB 1.8+, 2.x through DBRP, 3.x)
and PromQL/MetricsQL (VictoriaMetrics). The Foundation SDK has Prometheus targets but none for
InfluxDB: ``InfluxQLTarget`` and its builder are our own, in the SDK's style.

How line protocol lands in VictoriaMetrics (its InfluxDB ingestion docs, checked against what the
collector's sink writes in tests/e2e): ``measurement,tags field=v`` becomes the series
``{measurement}_{field}`` with the tags as labels; string fields are left out by the collector
(``drop_string_fields``), so panels use the numeric twin of every ``*_name`` field. Through
``/api/v2/write`` there is no ``db`` label (VictoriaMetrics adds one only from ``/write?db=``), so
the queries do not filter on it.
"""

from __future__ import annotations

import typing
from typing import Final, Literal

from grafana_foundation_sdk.builders import prometheus as prom_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dash_model
from grafana_foundation_sdk.models import prometheus as prom_model

from dashboards.model import VARIABLE_TAGS, Query

Flavour = Literal["influxql", "promql"]
FLAVOURS: Final[tuple[Flavour, ...]] = ("influxql", "promql")

#: the datasources the provisioning file creates; the dashboards refer to them by these uids
DATASOURCES: Final[dict[Flavour, dash_model.DataSourceRef]] = {
    "influxql": dash_model.DataSourceRef(type_val="influxdb", uid="netwatch-influxdb"),
    "promql": dash_model.DataSourceRef(type_val="prometheus", uid="netwatch-victoriametrics"),
}

_PROM_AGG: Final = {"mean": "avg", "max": "max", "min": "min", "last": "max", "sum": "sum"}
_PROM_OVER_TIME: Final = {"mean": "avg", "max": "max", "min": "min", "last": "last", "sum": "sum"}
#: "All" of a variable: every value, and also series without the tag (the city has no county)
ALL_VALUE: Final = ".*"


# ------------------------------------------------------------------------------------ InfluxQL
class InfluxQLTarget(cogvariants.Dataquery):
    """A raw InfluxQL query of Grafana's InfluxDB datasource (query language InfluxQL)."""

    def __init__(
        self,
        ref_id: str = "A",
        query: str = "",
        result_format: Literal["time_series", "table"] = "time_series",
        alias: str | None = None,
        datasource: dash_model.DataSourceRef | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            out["alias"] = self.alias
        if self.datasource is not None:
            out["datasource"] = self.datasource
        return out


class InfluxQLTargetBuilder(cogbuilder.Builder[InfluxQLTarget]):
    def __init__(self) -> None:
        self._internal = InfluxQLTarget()

    def build(self) -> InfluxQLTarget:
        return self._internal

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def query(self, query: str) -> typing.Self:
        self._internal.query = query
        return self

    def result_format(self, result_format: Literal["time_series", "table"]) -> typing.Self:
        self._internal.result_format = result_format
        return self

    def alias(self, alias: str) -> typing.Self:
        self._internal.alias = alias
        return self

    def datasource(self, datasource: dash_model.DataSourceRef) -> typing.Self:
        self._internal.datasource = datasource
        return self


def _iq_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql(q: Query) -> str:
    """The InfluxQL text, with Grafana's ``$timeFilter``, ``$__interval`` and ``$variable``s."""
    conds = [f"{_iq_ident(tag)} =~ /^${VARIABLE_TAGS[tag]}$/" for tag in q.variables]
    conds += [f"{_iq_ident(tag)} =~ /^{rx}$/" for tag, rx in q.match]
    conds.append("$timeFilter")
    by = ", ".join(_iq_ident(t) for t in q.by)
    if q.shape == "series":
        group = "GROUP BY time($__interval)" + (f", {by}" if by else "") + " fill(none)"
    else:
        group = f"GROUP BY {by}" if by else ""
    text = (
        f'SELECT {q.agg}({_iq_ident(q.field)}) AS "Value" FROM {_iq_ident(q.measurement)} WHERE {" AND ".join(conds)}'
    )
    return f"{text} {group}".rstrip()


def _legend(q: Query, tag: str) -> str:
    return " ".join([*(tag.format(t) for t in q.by), q.legend_suffix]).strip() or q.field


def influxql_target(q: Query, *, table: bool = False) -> InfluxQLTargetBuilder:
    """``table``: one row per group (table panels); otherwise one series per group (graphs,
    state timelines, and stats, which show each series' value)."""
    b = (
        InfluxQLTargetBuilder()
        .ref_id(q.ref)
        .query(influxql(q))
        .result_format("table" if table else "time_series")
        .datasource(DATASOURCES["influxql"])
    )
    if not table:
        b.alias(_legend(q, "$tag_{}"))
    return b


# -------------------------------------------------------------------------------------- PromQL
def _prom_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prom_metric(measurement: str, field: str) -> str:
    return f"{measurement}_{field}"


def prom_selector(q: Query) -> str:
    matchers = [f"{tag}=~{_prom_str('$' + VARIABLE_TAGS[tag])}" for tag in q.variables]
    matchers += [f"{tag}=~{_prom_str(rx)}" for tag, rx in q.match]
    return prom_metric(q.measurement, q.field) + ("{" + ", ".join(matchers) + "}" if matchers else "")


def promql(q: Query) -> str:
    """The PromQL text, with Grafana's ``$__range`` and ``$variable``s."""
    sel = prom_selector(q)
    inner = sel if q.shape == "series" else f"{_PROM_OVER_TIME[q.agg]}_over_time({sel}[$__range])"
    return f"{_PROM_AGG[q.agg]} by ({', '.join(q.by)}) ({inner})"


def promql_target(q: Query, *, table: bool = False) -> prom_builder.Dataquery:
    b = prom_builder.Dataquery().ref_id(q.ref).expr(promql(q)).datasource(DATASOURCES["promql"])
    if q.shape == "series":
        b.range()
    else:
        b.instant()
    if table:
        b.format(prom_model.PromQueryFormat.TABLE)
    else:
        b.legend_format(_legend(q, "{{{{{}}}}}"))
    return b


def target(q: Query, flavour: Flavour, *, table: bool = False) -> cogbuilder.Builder[cogvariants.Dataquery]:
    return influxql_target(q, table=table) if flavour == "influxql" else promql_target(q, table=table)


# --------------------------------------------------------------------------- template variables
#: the chain county -> township -> device -> interface: (tag, measurement, field it is read from)
VARIABLE_SOURCES: Final[dict[str, tuple[str, str, str]]] = {
    "county": ("county", "netwatch_agent", "spool_depth"),
    "township": ("site", "netwatch_agent", "spool_depth"),
    "device": ("device", "snmp_system", "uptime_s"),
    "interface": ("ifname", "interface", "oper_status"),
}
VARIABLE_CHAIN: Final = ("county", "township", "device", "interface")


def variable_query(name: str, flavour: Flavour) -> str:
    """``SHOW TAG VALUES ... WHERE`` / ``label_values(...)`` filtered by the variables before it."""
    tag, measurement, field = VARIABLE_SOURCES[name]
    before = VARIABLE_CHAIN[: VARIABLE_CHAIN.index(name)]
    parents = [(VARIABLE_SOURCES[v][0], v) for v in before]
    if flavour == "influxql":
        where = " AND ".join(f"{_iq_ident(t)} =~ /^${v}$/" for t, v in parents)
        return f"SHOW TAG VALUES FROM {_iq_ident(measurement)} WITH KEY = {_iq_ident(tag)}" + (
            f" WHERE {where}" if where else ""
        )
    matchers = ", ".join(f"{t}=~{_prom_str('$' + v)}" for t, v in parents)
    sel = prom_metric(measurement, field) + ("{" + matchers + "}" if matchers else "")
    return f"label_values({sel}, {tag})"
