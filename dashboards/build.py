"""Dashboards -> Grafana JSON through the Foundation SDK's builders, one file per dashboard and
flavour, plus the provisioning files (datasources and the dashboard providers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dash_model

from dashboards.catalogue import check
from dashboards.definitions import DASHBOARDS
from dashboards.model import Dashboard, Panel
from dashboards.queries import ALL_VALUE, DATASOURCES, FLAVOURS, Flavour, target, variable_query

HERE: Final = Path(__file__).resolve().parent
VARIABLE_LABELS: Final = {
    "county": "County 县区",
    "township": "Township 乡镇/站点",
    "device": "Device 设备",
    "interface": "Interface 接口",
}
#: device and interface may take several values at once (Grafana then sends a regex (a|b))
MULTI: Final = frozenset({"device", "interface"})
FLAVOUR_NAMES: Final[dict[Flavour, str]] = {"influxql": "InfluxDB", "promql": "VictoriaMetrics"}


def dashboard_uid(d: Dashboard, flavour: Flavour) -> str:
    return f"{d.uid}-{flavour}"


def _panel(p: Panel, flavour: Flavour) -> cogbuilder.Builder[dash_model.Panel]:
    b: timeseries.Panel | stat.Panel | table.Panel | statetimeline.Panel | bargauge.Panel
    if p.kind == "timeseries":
        b = timeseries.Panel().fill_opacity(10).show_points(common_model.VisibilityMode.NEVER)
        if p.thresholds:
            b.thresholds_style(
                common_builder.GraphThresholdsStyleConfig().mode(common_model.GraphThresholdsStyleMode.DASHED)
            )
    elif p.kind == "stat":
        b = stat.Panel().reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    elif p.kind == "table":
        b = table.Panel()
        b.with_transformation(
            dash_model.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})
        )
        if p.sort_by:
            b.with_transformation(
                dash_model.DataTransformerConfig(
                    id_val="sortBy", options={"fields": {}, "sort": [{"field": p.sort_by, "desc": True}]}
                )
            )
        if p.limit:
            b.with_transformation(dash_model.DataTransformerConfig(id_val="limit", options={"limitField": p.limit}))
    elif p.kind == "state":
        b = statetimeline.Panel().show_value(common_model.VisibilityMode.AUTO).merge_values(True)
    else:
        b = bargauge.Panel()
    b.title(p.title).datasource(DATASOURCES[flavour]).span(p.width).height(p.height)
    if p.description:
        b.description(p.description)
    if p.unit:
        b.unit(p.unit)
    if p.min is not None:
        b.min(p.min)
    if p.max is not None:
        b.max(p.max)
    if p.thresholds:
        b.thresholds(
            dash_builder.ThresholdsConfig()
            .mode(dash_model.ThresholdsMode.ABSOLUTE)
            .steps([dash_model.Threshold(value=v, color=c) for v, c in p.thresholds])
        )
    if p.mappings:
        options = {
            str(m.value): dash_model.ValueMappingResult(text=m.text, color=m.color, index=i)
            for i, m in enumerate(p.mappings)
        }
        if {m.value for m in p.mappings} == {0, 1}:
            # InfluxDB returns booleans as true/false, VictoriaMetrics as 1/0: map both
            options |= {str(bool(m.value)).lower(): options[str(m.value)] for m in p.mappings}
        b.mappings([dash_model.ValueMap(options=options)])
    for q in p.queries:
        b.with_target(target(q, flavour, table=p.kind == "table"))
    return b


def _variable(name: str, flavour: Flavour) -> dash_builder.QueryVariable:
    return (
        dash_builder.QueryVariable(name)
        .label(VARIABLE_LABELS[name])
        .query(variable_query(name, flavour))
        .datasource(DATASOURCES[flavour])
        .refresh(dash_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_model.VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(ALL_VALUE)
        .multi(name in MULTI)
        .current(dash_model.VariableOption(selected=True, text="All", value="$__all"))
    )


def build(d: Dashboard, flavour: Flavour) -> dict[str, object]:
    b = (
        dash_builder.Dashboard(f"{d.title} ({FLAVOUR_NAMES[flavour]})")
        .uid(dashboard_uid(d, flavour))
        .description(d.description)
        .tags(["netwatch", flavour, *d.tags])
        .time("now-6h", "now")
        .timezone("browser")
        .refresh("1m")
        .tooltip(dash_model.DashboardCursorSync.CROSSHAIR)
        .link(
            dash_builder.DashboardLink("netwatch")
            .type(dash_model.DashboardLinkType.DASHBOARDS)
            .tags(["netwatch", flavour])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for v in d.variables:
        b.with_variable(_variable(v, flavour))
    for p in d.panels:
        b.with_panel(_panel(p, flavour))
    out: dict[str, object] = json.loads(json.dumps(b.build(), cls=JSONEncoder))
    return out


def render_json(doc: dict[str, object]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------- provisioning
def json_dir(flavour: Flavour) -> str:
    """Where a flavour's JSON lives, relative to the dashboards folder."""
    return f"json/{flavour}"


DATASOURCES_YAML: Final = """\
# Grafana datasources for netwatch (generated by `python -m dashboards`; edit the URLs here or
# in dashboards/build.py). The dashboards find them by uid, so keep the uids.
# Grafana expands $VARIABLES from its environment in this file.
apiVersion: 1
datasources:
  # InfluxQL: InfluxDB 1.8+ (database netwatch), 2.x through a DBRP mapping of the bucket
  # (influx v1 dbrp create --db netwatch --rp autogen --bucket-id ...), 3.x's InfluxQL endpoint.
  # 1.x with auth: set user and secureJsonData.password; 2.x/3.x: uncomment the token header.
  - name: netwatch InfluxDB (InfluxQL)
    uid: {influx_uid}
    type: influxdb
    access: proxy
    url: http://127.0.0.1:8086
    jsonData:
      dbName: netwatch
      httpMode: POST
      # httpHeaderName1: Authorization
    # secureJsonData:
    #   httpHeaderValue1: Token $NETWATCH_INFLUX_TOKEN
  # PromQL/MetricsQL: VictoriaMetrics single node (cluster: http://vmselect:8481/select/0/prometheus)
  - name: netwatch VictoriaMetrics
    uid: {vm_uid}
    type: prometheus
    access: proxy
    url: http://127.0.0.1:8428
    jsonData:
      httpMethod: POST
"""

PROVIDERS_YAML: Final = """\
# Grafana dashboard providers for netwatch (generated by `python -m dashboards`): one folder per
# store. Point Grafana at dashboards/provisioning with the environment variable
# GF_PATHS_PROVISIONING=/path/to/netwatch/dashboards/provisioning — the paths below use it.
# Delete the provider (and datasource) of the store you do not run.
apiVersion: 1
providers:
{providers}"""

_PROVIDER: Final = """\
  - name: netwatch-{flavour}
    orgId: 1
    folder: netwatch ({name})
    folderUid: netwatch-{flavour}
    type: file
    disableDeletion: false
    allowUiUpdates: false
    updateIntervalSeconds: 60
    options:
      path: ${{GF_PATHS_PROVISIONING}}/../{json_dir}
"""


def files() -> dict[str, str]:
    """Every generated file: path relative to the dashboards folder -> text."""
    check(DASHBOARDS)
    out: dict[str, str] = {}
    for flavour in FLAVOURS:
        for d in DASHBOARDS:
            out[f"{json_dir(flavour)}/{d.uid}.json"] = render_json(build(d, flavour))
    out["provisioning/datasources/netwatch.yaml"] = DATASOURCES_YAML.format(
        influx_uid=DATASOURCES["influxql"].uid, vm_uid=DATASOURCES["promql"].uid
    )
    out["provisioning/dashboards/netwatch.yaml"] = PROVIDERS_YAML.format(
        providers="".join(_PROVIDER.format(flavour=f, name=FLAVOUR_NAMES[f], json_dir=json_dir(f)) for f in FLAVOURS)
    )
    return out
