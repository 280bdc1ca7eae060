"""``netwatch-collector alerts`` (list, ack, silence, history) and ``rules check``: they work on
alerts.db directly (WAL), so they run beside a live collector, which picks changes up on its next tick.

Exit codes: 0 fine; 1 nothing found; 2 bad config, rule file or usage; 3 runtime failure.
"""

from __future__ import annotations

import getpass
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from collector import config as collector_config
from collector.alerting.rules import Matcher, load_rules
from collector.alerting.store import AlertStore
from probes.base import parse_duration
from probes.configfile import ConfigError
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, EXIT_USAGE, console, lit, safe

EXIT_EMPTY, EXIT_CONFIG = EXIT_PROBLEM, EXIT_USAGE

alerts_app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    help="Alerts: list what is firing, acknowledge, silence, and read the history.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
rules_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Alert rule files.")

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="collector config (YAML): where alerts.db lives")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")]


def _emit(rows: list[dict[str, object]]) -> None:
    for r in rows:
        typer.echo(orjson.dumps(r).decode())


def _store(config: Path | None) -> AlertStore:
    try:
        cfg = collector_config.load(config)
    except ConfigError as e:
        console().print(f"[red]config error[/red] / 配置错误:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None
    path = cfg.data_dir / "alerts.db"
    if not path.exists():
        console().print(f"no alert database at {lit(path)}: the collector has not run with alerting on yet")
        raise typer.Exit(EXIT_EMPTY)
    try:
        return AlertStore(path)
    except sqlite3.Error as e:
        console().print(f"[red]cannot open {lit(path)}[/red]: {lit(e)}")
        raise typer.Exit(EXIT_RUNTIME) from None


def _when(ns: int | None) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S") if ns else "—"


@alerts_app.callback()
def alerts(ctx: typer.Context, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """List firing alerts (the default)."""
    if ctx.invoked_subcommand is not None:
        return
    list_(config, json)


@alerts_app.command("list")
def list_(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Firing alerts, most severe first: suppressed (cut off), silenced and acked ones marked."""
    store = _store(config)
    try:
        rows = store.firing()
    finally:
        store.close()
    rank = {"critical": 0, "warning": 1, "info": 2}
    rows.sort(key=lambda a: (rank.get(a.severity, 3), a.starts_ns))
    if json:
        _emit([a.to_dict() for a in rows])
    else:
        for a in rows:
            flags = " ".join(
                x
                for x in (
                    f"[cut off by {a.suppressed_by}]" if a.suppressed_by else "",
                    f"[acked by {a.acked_by}: {a.ack_comment}]" if a.acked_by else "",
                    "" if a.notified_ns else "[not sent]",
                )
                if x
            )
            # summaries and labels carry agent-supplied text: no terminal control sequences through
            typer.echo(
                safe(
                    f"#{a.id:<5} {a.severity:<8} {_when(a.starts_ns)}  {a.summary_en}  {a.summary_zh} {flags}"
                ).rstrip()
            )
        if not rows:
            typer.echo("no alerts firing / 无告警")
    raise typer.Exit(EXIT_OK if rows else EXIT_EMPTY)


@alerts_app.command()
def ack(
    alert_id: Annotated[int, typer.Argument(help="the alert's number, from `alerts`")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="what you are doing about it")],
    author: Annotated[str | None, typer.Option(help="who; default: your login name")] = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Acknowledge a firing alert: no more repeats; its resolve is still sent."""
    store = _store(config)
    try:
        ok = store.ack(alert_id, author or getpass.getuser(), comment)
    finally:
        store.close()
    if json:
        _emit([{"id": alert_id, "acked": ok}])
    else:
        typer.echo(f"alert #{alert_id} acknowledged" if ok else f"no firing alert #{alert_id}")
    raise typer.Exit(EXIT_OK if ok else EXIT_EMPTY)


@alerts_app.command()
def silence(
    match: Annotated[list[str], typer.Option("--match", "-m", help="label matcher: site=county-a, alertname=~ups_.*")],
    for_: Annotated[str, typer.Option("--for", help="how long, e.g. 2h")] = "2h",
    comment: Annotated[str, typer.Option("--comment", help="why")] = "",
    author: Annotated[str | None, typer.Option(help="who; default: your login name")] = None,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Silence alerts whose labels match every matcher: still recorded, not sent."""
    try:
        for m in match:
            Matcher.parse(m)
        seconds = parse_duration(for_)
    except ValueError as e:
        console().print(f"[red]bad silence[/red]: {lit(e)}")
        raise typer.Exit(EXIT_CONFIG) from None
    if not comment:
        console().print("[red]a silence needs --comment[/red] saying why (it is recorded in the audit history)")
        raise typer.Exit(EXIT_CONFIG)
    store = _store(config)
    now = time.time_ns()
    try:
        sid = store.add_silence(list(match), now, now + int(seconds * 1e9), author or getpass.getuser(), comment)
    finally:
        store.close()
    if json:
        _emit([{"id": sid, "matchers": list(match), "starts": now, "ends": now + int(seconds * 1e9)}])
    else:
        typer.echo(f"silence #{sid}: {safe(' '.join(match))} until {_when(now + int(seconds * 1e9))}")


@alerts_app.command()
def history(
    since: Annotated[str, typer.Option("--since", help="how far back, e.g. 24h")] = "24h",
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """What happened: fired, notified, suppressed, acked, silenced, resolved."""
    try:
        back = parse_duration(since)
    except ValueError as e:
        console().print(f"[red]bad --since[/red]: {lit(e)}")
        raise typer.Exit(EXIT_CONFIG) from None
    store = _store(config)
    try:
        rows = store.history(time.time_ns() - int(back * 1e9), limit=100_000)
    finally:
        store.close()
    if json:
        _emit(rows)
    else:
        for r in rows:
            who = f"#{r['alert_id']} {r['rule']}" if r["alert_id"] else ""
            typer.echo(safe(f"{_when(r['time'])}  {r['event']:<12} {who}  {r['detail']}"))
    raise typer.Exit(EXIT_OK if rows else EXIT_EMPTY)


@rules_app.command()
def check(file: Annotated[Path, typer.Argument(help="a rule file (YAML)")], json: JsonOpt = False) -> None:
    """Validate a rule file and say what each rule does, in plain words."""
    try:
        rules = load_rules(file)
    except ConfigError as e:
        if json:
            _emit([{"ok": False, "error": str(e)}])
        else:
            console().print(f"[red]rule file error[/red] / 规则文件错误:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if json:
        _emit(
            [
                {"ok": True, "name": r.name, "kind": r.kind, "severity": r.severity, "explain": r.explain()}
                for r in rules
            ]
        )
    else:
        for r in rules:
            typer.echo(safe(f"{r.name}: {r.explain()}"))
        typer.echo(f"{len(rules)} rules OK")
    raise typer.Exit(EXIT_OK if rules else EXIT_EMPTY)
