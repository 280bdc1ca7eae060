"""The alerts/rules CLI against a real alerts.db: exit codes, --json, silences and acks land."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import typer
from typer.testing import CliRunner

from collector.alerting.store import AlertStore
from collector.cli_alerts import alerts_app, rules_app

PACK = Path(__file__).parents[3] / "configs" / "rules" / "default.yaml"
runner = CliRunner()
app = typer.Typer()
app.add_typer(alerts_app, name="alerts")
app.add_typer(rules_app, name="rules")


def test_rules_check(tmp_path: Path) -> None:
    r = runner.invoke(app, ["rules", "check", str(PACK)])
    assert r.exit_code == 0, r.output
    assert "ups_on_battery: critical: fires when ups.output_source is equal to 5" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n- {name: x, measurement: m, field: f, when: 'hot', summary: s}\n")
    r = runner.invoke(app, ["rules", "check", str(bad), "--json"])
    assert r.exit_code == 2 and "rules[0].when" in orjson.loads(r.output.splitlines()[0])["error"]


def test_list_ack_silence_history(tmp_path: Path) -> None:
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(f"collector: {{id: c, data_dir: {tmp_path / 'data'}}}\n")
    r = runner.invoke(app, ["alerts", "--config", str(cfg)])
    assert r.exit_code == 1  # no database yet
    store = AlertStore(tmp_path / "data" / "alerts.db")
    aid = store.open_alert("fp", "hot", {"site": "t1"}, "warning", ("t1 hot", "t1 过热"), 29.0, time.time_ns())
    store.close()
    r = runner.invoke(app, ["alerts", "--config", str(cfg), "--json"])
    assert r.exit_code == 0 and orjson.loads(r.output)["summary"]["zh"] == "t1 过热"
    r = runner.invoke(app, ["alerts", "ack", str(aid), "--comment", "on it", "--author", "wang", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["alerts", "ack", "999", "--comment", "x", "--config", str(cfg)]).exit_code == 1
    r = runner.invoke(
        app, ["alerts", "silence", "--match", "site=t1", "--for", "2h", "--comment", "AC work", "--config", str(cfg)]
    )
    assert r.exit_code == 0, r.output
    assert (
        runner.invoke(app, ["alerts", "silence", "--match", "site", "--comment", "x", "--config", str(cfg)]).exit_code
        == 2
    )
    r = runner.invoke(app, ["alerts", "history", "--since", "1h", "--json", "--config", str(cfg)])
    events = [orjson.loads(x)["event"] for x in r.output.splitlines()]
    assert r.exit_code == 0 and events == ["firing", "acked", "silence"]
    store = AlertStore(tmp_path / "data" / "alerts.db")
    assert store.firing()[0].acked_by == "wang" and store.silences(time.time_ns())[0]["matchers"] == ["site=t1"]
    store.close()
