"""Every panel query of every dashboard, in both flavours, with its template variables set to real
values, run against the real engines the collector loaded from one short real run
(tests/e2e/dashrun.py): VictoriaMetrics for PromQL, InfluxDB 1.x for InfluxQL. Each must return
exactly the series the agents' own records (their --tee files) and the run's topology say it
should — no panel that can only be empty — and the template-variable queries the values the run
was configured with."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from e2e.dashrun import Run, real_run
from e2e.procs import read_tee
from services import Influxd

from dashboards.definitions import AGENTS, CITY, DEVICE, PORTALS, ROOM, SITE
from dashboards.model import VARIABLE_TAGS, Dashboard, Query
from dashboards.queries import ALL_VALUE, Flavour, influxql, promql, variable_query

# One real run for the module: keep its tests on one pytest-xdist worker (tests/run.sh: --dist loadfile).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("dashboards-run")]

#: the run's topology (tests/e2e/dashrun.py): site -> county stamped by the centre
COUNTY_OF = {"county-a": "county-a", "t1": "county-a", "t2": "county-a"}
SITES = {"city", "county-a", "t1", "t2"}
AGENT_IDS = ("agent-city", "agent-county", "agent-t1", "agent-t2")
ALL = None  # "All" in a variable

#: what an operator would pick on each dashboard: every panel must show something with these
SELECTIONS: dict[str, dict[str, list[str] | None]] = {
    CITY.uid: {"county": ALL},
    SITE.uid: {"county": ["county-a"], "township": ["t1"]},
    DEVICE.uid: {
        "county": ["county-a"],
        "township": ["county-a"],
        "device": ["core-county-a", "sw-county-a"],  # multi-value: Grafana sends (a|b)
        "interface": ["GE0/0/2"],
    },
    ROOM.uid: {"county": ["county-a"], "township": ["t1"]},
    PORTALS.uid: {"county": ALL, "township": ["city"]},
    AGENTS.uid: {"county": ["county-a"], "township": ALL},
}


# ------------------------------------------------------------------ Grafana's interpolation
_REGEX_SPECIAL = re.compile(r"([\\^$.|?*+()\[\]{}/])")


def _regex(values: list[str] | None) -> str:
    """A variable's value in a regex context, as Grafana writes it (includeAll variables are
    regex-escaped; several values become (a|b); All is our allValue)."""
    if values is None:
        return ALL_VALUE
    escaped = [_REGEX_SPECIAL.sub(r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(text: str, selection: dict[str, list[str] | None], flavour: Flavour, **builtins: str) -> str:
    for name in sorted(VARIABLE_TAGS.values(), key=len, reverse=True):
        value = _regex(selection.get(name))
        if flavour == "promql":
            value = value.replace("\\", "\\\\")  # inside a PromQL double-quoted string
        text = text.replace("$" + name, value)
    for k, v in builtins.items():
        text = text.replace(k, v)
    assert not re.search(r"\$\w", text), f"a variable left in {text}"
    return text


# ------------------------------------------------------------------------------- the oracle
def tee_rows(run: Run) -> list[dict[str, Any]]:
    """What every agent recorded sending so far (an agent still starting has no record yet)."""
    paths = [run.tmp / f"{aid}.tee" for aid in AGENT_IDS]
    return [s for p in paths if p.exists() for s in read_tee(p)]


def expected_groups(
    run: Run,
    q: Query,
    selection: dict[str, list[str] | None],
    collector: str,
    *,
    tee: list[dict[str, Any]] | None = None,
    until_ns: int | None = None,
) -> set[tuple[str, ...]]:
    """The groups a query must return, from what the agents recorded sending (their tee files)
    or, for the collector's own series, from the run's topology and configuration."""
    filters = [(tag, _regex(selection.get(VARIABLE_TAGS[tag]))) for tag in q.variables]
    filters += list(q.match)

    def keep(tags: dict[str, str]) -> bool:
        return all(re.fullmatch(rx, tags.get(tag, "")) for tag, rx in filters)

    if q.measurement in ("netwatch_site", "netwatch_alerts"):
        rows = [
            {"site": s, "county": COUNTY_OF.get(s, ""), "severity": sev}
            for s in SITES
            for sev in (("info", "warning", "critical") if q.measurement == "netwatch_alerts" else ("",))
        ]
    elif q.measurement == "netwatch_collector":
        rows = [{"collector": collector}]
    else:
        until = until_ns or run.end_ns
        rows = [
            {**s["tags"], "county": COUNTY_OF.get(s["tags"]["site"], "")}
            for s in (tee if tee is not None else tee_rows(run))
            if s["measurement"] == q.measurement and q.field in s["fields"] and s["time"] <= until
        ]
    return {tuple(r.get(b, "") for b in q.by) for r in rows if keep(r)}


# ------------------------------------------------------------------------------- the engines
def _get(url: str, params: dict[str, str]) -> Any:
    with urllib.request.urlopen(url + "?" + urllib.parse.urlencode(params), timeout=10) as r:
        return json.loads(r.read())


class Prom:
    flavour: Flavour = "promql"

    def __init__(self, run: Run) -> None:
        self.url = run.vm.url
        self.start_s = run.start_ns / 1e9 - 5
        self.end_s = run.end_ns / 1e9
        self.collector = "col-vm"

    def groups(self, q: Query, selection: dict[str, list[str] | None]) -> dict[tuple[str, ...], float]:
        now = self.end_s
        text = substitute(promql(q), selection, "promql", **{"$__range": f"{int(now - self.start_s) + 1}s"})
        if q.shape == "series":
            params = {"query": text, "start": f"{self.start_s:.3f}", "end": f"{now:.3f}", "step": "2s"}
            doc = _get(self.url + "/api/v1/query_range", params)
        else:
            doc = _get(self.url + "/api/v1/query", {"query": text, "time": f"{now:.3f}"})
        assert doc["status"] == "success", (text, doc)
        out = {}
        for r in doc["data"]["result"]:
            value = r["values"][-1][1] if "values" in r else r["value"][1]
            out[tuple(r["metric"].get(b, "") for b in q.by)] = float(value)
        return out

    def label_values(self, name: str, selection: dict[str, list[str] | None]) -> set[str]:
        text = substitute(variable_query(name, "promql"), selection, "promql")
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", text)
        assert m, text
        params = {"match[]": m.group(1), "start": f"{self.start_s:.3f}", "end": f"{self.end_s:.3f}"}
        doc = _get(f"{self.url}/api/v1/label/{m.group(2)}/values", params)
        return set(doc["data"])


class Influx:
    flavour: Flavour = "influxql"

    def __init__(self, run: Run) -> None:
        self.influx = run.influx
        self.db = run.influx_db
        self.start_ms = run.start_ns // 1_000_000 - 5000
        self.end_ms = run.end_ns // 1_000_000
        self.collector = "col-influx"

    def _query(self, text: str) -> list[dict[str, Any]]:
        doc = self.influx.query(text, db=self.db, epoch="ms")
        res = doc["results"][0]
        assert "error" not in res, (text, res)
        return list(res.get("series", []))

    def groups(self, q: Query, selection: dict[str, list[str] | None]) -> dict[tuple[str, ...], float]:
        text = substitute(
            influxql(q),
            selection,
            "influxql",
            **{"$timeFilter": f"time >= {self.start_ms}ms AND time <= {self.end_ms}ms", "$__interval": "2s"},
        )
        out = {}
        for s in self._query(text):
            tags = s.get("tags", {})
            cols = s["columns"]
            value = s["values"][-1][cols.index("Value")]
            out[tuple(tags.get(b, "") for b in q.by)] = float(value)
        return out

    def label_values(self, name: str, selection: dict[str, list[str] | None]) -> set[str]:
        text = substitute(variable_query(name, "influxql"), selection, "influxql")
        return {v for s in self._query(text) for _, v in s["values"]}


ENGINES = ["promql", "influxql"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, influxd: Influxd) -> Iterator[Run]:
    """One real run for the whole module, feeding VictoriaMetrics and InfluxDB 1.x at once."""
    tmp = tmp_path_factory.mktemp("dashrun")
    config = influxd.storage_config(influxd.new_database("dash"), tmp / "influx.pass")
    with real_run(tmp, ready=_ready, influx=influxd, influx_config=config) as r:
        yield r


#: alerts the run's rules must raise: GE0/0/2 of sw-county-a and of sw-t1 (warning), t1's room (critical)
FIRING = 3


def _ready(run: Run) -> bool:
    """Every panel has something to show (by the agents' records) and every alert has fired."""
    tee, now = tee_rows(run), time.time_ns()
    for d, _, q in _all_queries():
        if not expected_groups(run, q, SELECTIONS[d.uid], "-", tee=tee, until_ns=now):
            return False
    return all(c.get("/api/stats").get("alerting_active", 0) >= FIRING for c in run.collectors)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, run: Run) -> Prom | Influx:
    if request.param == "influxql":
        e: Prom | Influx = Influx(run)
    else:
        e = Prom(run)
    return e


def _all_queries() -> list[tuple[Dashboard, str, Query]]:
    return [(d, p.title, q) for d in (CITY, SITE, DEVICE, ROOM, PORTALS, AGENTS) for p in d.panels for q in p.queries]


@pytest.mark.parametrize(
    ("dash", "title", "q"), _all_queries(), ids=[f"{d.uid}:{t}:{q.ref}" for d, t, q in _all_queries()]
)
def test_panel_returns_the_expected_series(
    run: Run, engine: Prom | Influx, dash: Dashboard, title: str, q: Query
) -> None:
    selection = SELECTIONS[dash.uid]
    want = expected_groups(run, q, selection, engine.collector)
    assert want, f"{title}: the run produced nothing for it — the test rig must feed every panel"
    got = engine.groups(q, selection)
    # A series the store took in just before the run's end can take a moment to become searchable:
    # once, under load, the PromQL query lacked one group the agents had sent (a new series, most
    # likely not yet searchable 1.5 s after the flush). Missing groups get a few more seconds; a
    # group that should not be there fails at once.
    deadline = time.monotonic() + 10
    while set(got) < want and time.monotonic() < deadline:
        time.sleep(1.0)
        got = engine.groups(q, selection)
    assert set(got) == want, f"{dash.uid} / {title} ({engine.flavour}): got {sorted(got)}, want {sorted(want)}"


def test_values_worked_out_from_the_simulators(run: Run, engine: Prom | Influx) -> None:
    """A few figures known from the run's set-up, through the dashboards' own queries."""
    panel = {p.title: p for d in (CITY, SITE, DEVICE, ROOM, PORTALS) for p in d.panels}
    # rules in dashrun.RULES: sw-county-a and sw-t1 GE0/0/2 at 94 % (warning); t1's room above 18 °C (critical)
    alerts = engine.groups(panel["Active alerts by site and severity 各站点活动告警"].queries[0], SELECTIONS[CITY.uid])
    # (>= 1: under load a poll that runs out of time can send GE0/0/2 without its ifName, a
    # second series — and a second alert; probes/snmp's behaviour, not the dashboards')
    assert alerts[("county-a", "warning")] >= 1 and alerts[("t1", "warning")] >= 1
    assert alerts[("t1", "critical")] == 1
    assert alerts[("city", "critical")] == alerts[("t2", "warning")] == alerts[("county-a", "critical")] == 0
    state = engine.groups(panel["Every site now 各站点状态"].queries[0], SELECTIONS[CITY.uid])
    assert state == {("", "city"): 0, ("county-a", "county-a"): 1, ("county-a", "t1"): 2, ("county-a", "t2"): 0}
    online = engine.groups(panel["Agents online 在线采集节点"].queries[0], SELECTIONS[CITY.uid])
    assert online == {(s,): 1 for s in SITES}
    # the moving switch's GE0/0/2: 11 750 000 octets/s = 94 Mb/s of 100 Mb/s
    busiest = engine.groups(panel["Busiest interfaces 利用率最高的接口"].queries[0], SELECTIONS[SITE.uid])
    assert 93 < busiest[("sw-t1", "GE0/0/2")] < 95
    # the Eaton recording: 1092 min runtime; the portal's certificate: 30 days from now
    runtime = engine.groups(panel["UPS runtime 剩余时间"].queries[0], SELECTIONS[ROOM.uid])
    assert set(runtime.values()) == {1092.0}
    leak = engine.groups(panel["Leak cable 漏水感应线"].queries[0], SELECTIONS[ROOM.uid])
    assert leak == {("t1", "leak-cable"): 1.0}
    distance = engine.groups(panel["Leak distance 漏水位置"].queries[0], SELECTIONS[ROOM.uid])
    assert distance == {("t1", "leak-cable"): 12.5}
    cert = engine.groups(panel["Certificate days left 证书剩余天数"].queries[0], SELECTIONS[PORTALS.uid])
    assert all(29.9 < v <= 30.0 for v in cert.values()) and cert


@pytest.mark.parametrize(
    ("name", "selection", "want"),
    [
        ("county", {}, {"county-a"}),
        ("township", {"county": ["county-a"]}, {"county-a", "t1", "t2"}),
        ("township", {"county": ALL}, SITES),
        ("device", {"county": ["county-a"], "township": ["county-a"]}, {"sw-county-a", "core-county-a"}),
        ("device", {"county": ["county-a"], "township": ["t1"]}, {"sw-t1", "ups-t1", "pdu-t1"}),
        ("device", {"county": ALL, "township": ["city"]}, {"ups-city"}),
        (
            "interface",
            {"county": ["county-a"], "township": ["county-a"], "device": ["sw-county-a"]},
            {"GE0/0/1", "GE0/0/2"},  # the moving switch's recording (configs/demo/sim_snmp.py)
        ),
    ],
)
def test_template_variables_return_the_configured_values(
    run: Run, engine: Prom | Influx, name: str, selection: dict[str, list[str] | None], want: set[str]
) -> None:
    assert engine.label_values(name, selection) == want
