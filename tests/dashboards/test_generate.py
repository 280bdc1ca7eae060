"""The committed dashboards are what the code generates, and the provisioning files point a
Grafana at them: paths, dashboard uids and datasource uids."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.build import files
from dashboards.catalogue import SELF_FIELDS, CatalogueError, check
from dashboards.definitions import DASHBOARDS
from dashboards.queries import FLAVOURS

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "dashboards"
PROVISIONING = DASH / "provisioning"


def test_committed_files_equal_what_the_code_generates() -> None:
    generated = files()
    assert len(generated) == len(DASHBOARDS) * len(FLAVOURS) + 2
    for rel, text in generated.items():
        assert (DASH / rel).read_text(encoding="utf-8") == text, f"{rel} is stale: run python -m dashboards"
    # and nothing committed that the code no longer makes
    committed = {str(p.relative_to(DASH)) for p in (DASH / "json").rglob("*.json")}
    assert committed == {r for r in generated if r.startswith("json/")}
    r = subprocess.run([sys.executable, "-m", "dashboards", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_check_mode_names_a_stale_file(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "dashboards", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    victim = tmp_path / "json/promql/netwatch-city.json"
    victim.write_text(victim.read_text() + " ")
    r = subprocess.run(
        [sys.executable, "-m", "dashboards", "--out", str(tmp_path), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and str(victim) in r.stderr


def _expand(text: str, env: dict[str, str]) -> str:
    for k, v in env.items():
        text = text.replace("${" + k + "}", v).replace("$" + k, v)
    return text


def _datasource_refs(node: Any) -> list[dict[str, Any]]:
    out = []
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            out.append(node["datasource"])
        for v in node.values():
            out += _datasource_refs(v)
    elif isinstance(node, list):
        for v in node:
            out += _datasource_refs(v)
    return out


def test_provisioning_points_at_the_committed_dashboards() -> None:
    env = {"GF_PATHS_PROVISIONING": str(PROVISIONING)}
    ds_doc = yaml.safe_load(_expand((PROVISIONING / "datasources/netwatch.yaml").read_text(), env))
    assert ds_doc["apiVersion"] == 1
    datasources = {d["uid"]: d for d in ds_doc["datasources"]}
    assert {d["type"] for d in datasources.values()} == {"influxdb", "prometheus"}
    assert all(d["url"].startswith("http") and d["access"] == "proxy" for d in datasources.values())
    prov = yaml.safe_load(_expand((PROVISIONING / "dashboards/netwatch.yaml").read_text(), env))
    providers = prov["providers"]
    assert len(providers) == len(FLAVOURS) and len({p["folderUid"] for p in providers}) == len(FLAVOURS)
    all_uids: set[str] = set()
    for p in providers:
        assert p["type"] == "file"
        folder = Path(os.path.normpath(p["options"]["path"]))
        boards = sorted(folder.glob("*.json"))
        assert len(boards) == len(DASHBOARDS), folder
        types = set()
        for b in boards:
            doc = json.loads(b.read_text())
            assert doc["uid"] not in all_uids and len(doc["uid"]) <= 40
            all_uids.add(doc["uid"])
            refs = _datasource_refs(doc)
            assert refs, b
            for ref in refs:
                assert ref["uid"] in datasources, (b, ref)
                assert datasources[ref["uid"]]["type"] == ref["type"]
                types.add(ref["type"])
        assert len(types) == 1, f"{folder}: one flavour per folder, got {types}"
    # uids are stable: the definitions' uid and the flavour
    assert all_uids == {f"{d.uid}-{f}" for d in DASHBOARDS for f in FLAVOURS}


def test_every_dashboard_has_the_chained_variables() -> None:
    doc = json.loads((DASH / "json/influxql/netwatch-device.json").read_text())
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names == ["county", "township", "device", "interface"]
    last = doc["templating"]["list"][-1]["query"]
    assert "$county" in last and "$township" in last and "$device" in last
    doc = json.loads((DASH / "json/promql/netwatch-device.json").read_text())
    assert doc["templating"]["list"][-1]["query"].startswith("label_values(interface_oper_status{")


def test_a_renamed_field_fails_generation() -> None:
    city = DASHBOARDS[0]
    p = city.panels[3]
    bad_q = dataclasses.replace(p.queries[0], field="loss_percent")
    bad = dataclasses.replace(city, panels=(dataclasses.replace(p, queries=(bad_q,)),))
    with pytest.raises(CatalogueError, match="icmp.loss_percent"):
        check((bad,))
    string_q = dataclasses.replace(p.queries[0], measurement="interface", field="oper_status_name")
    with pytest.raises(CatalogueError, match="string field"):
        check((dataclasses.replace(city, panels=(dataclasses.replace(p, queries=(string_q,)),)),))


def test_self_catalogue_matches_the_collector() -> None:
    """dashboards may not import the collector; this test may, and holds the two together."""
    from collector.overview import ALERTS_MEASUREMENT, SITE_MEASUREMENT, overview_samples
    from collector.service import SELF_MEASUREMENT

    out = overview_samples([], [{"id": "a", "site": "s", "status": "online"}], [], lambda s: {"site": s}, 1)
    got = {s.measurement: {f: type(v).__name__ for f, v in s.fields.items()} for s in out}
    assert got[SITE_MEASUREMENT] == SELF_FIELDS[SITE_MEASUREMENT]
    assert got[ALERTS_MEASUREMENT] == SELF_FIELDS[ALERTS_MEASUREMENT]
    assert SELF_MEASUREMENT in SELF_FIELDS


def test_tables_get_rows_and_other_panels_one_series_per_group() -> None:
    """A stat fed a table would show only its last row; a table fed series, one column per group."""
    for flavour in FLAVOURS:
        for path in sorted((DASH / "json" / flavour).glob("*.json")):
            for p in json.loads(path.read_text())["panels"]:
                for t in p["targets"]:
                    as_table = t.get("format") == "table" or t.get("resultFormat") == "table"
                    assert as_table == (p["type"] == "table"), (path.name, p["title"])
                    if p["type"] != "table":
                        assert t.get("legendFormat") or t.get("alias"), (path.name, p["title"])
