"""``netwatch-collector``: run the centre, and look at what it has (agents, stored samples).

Exit codes: 0 fine; 1 nothing found; 2 bad config or usage; 3 runtime failure.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from collector.cli_common import ConfigOpt, JsonOpt, load_config
from probes.base import parse_duration
from probes.output import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    EXIT_USAGE,
    console,
    lit,
    print_json_lines,
    print_samples_json,
    samples_table,
)

EXIT_EMPTY, EXIT_CONFIG = EXIT_PROBLEM, EXIT_USAGE

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="netwatch collector: receives agents' metrics over MQTT, stores them, and shows the tree.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _first_admin(path: Path) -> None:
    """On the very first run there is no account: make ``admin`` with a one-time password and show
    it here, once (never logged, never stored in clear; it must be changed at first login)."""
    from collector.users import UserDB

    db = UserDB(path)
    try:
        if db.users():
            return
        password = db.ensure_first_admin()
    finally:
        db.close()
    if password is not None:
        typer.echo(
            f"first run: user admin, one-time password {password} — change it at first login; it is not "
            "shown again / 首次运行：用户 admin，一次性密码如上，首次登录须修改，不再显示",
            err=True,
        )


@app.command()
def run(
    config: ConfigOpt = None, log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info"
) -> None:
    """Run the collector until stopped (SIGINT/SIGTERM)."""
    cfg = load_config(config)
    os.umask(0o077)  # whatever the service manager gave: what we write is ours alone
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from collector.service import Collector

    _first_admin(cfg.data_dir / "users.db")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        col = Collector(cfg)
        col.start()
    except (OSError, RuntimeError) as e:
        logging.getLogger("netwatch.collector").error("collector could not start: %s", e)
        raise typer.Exit(EXIT_RUNTIME) from None
    if col.api_url:
        logging.getLogger("netwatch.collector").info("status page: %s", col.api_url)
    while not stop.wait(0.5):
        pass
    logging.getLogger("netwatch.collector").info("stopping")
    col.stop()


def _ago(ns: int | None) -> str:
    if not ns:
        return "—"
    s = max(0.0, time.time() - ns / 1e9)
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.1f}h ago"


agents_app = typer.Typer(
    help="The agents the centre knows, those it refused as unknown, and admitting one.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(agents_app, name="agents")


@agents_app.callback()
def agents(ctx: typer.Context, config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """List the agents the collector knows: site, status, last seen, batches and samples."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = load_config(config)
    from collector.state import read_agents

    if not cfg.state_path.exists():
        console().print(f"no collector state at {lit(cfg.state_path)} (has the collector run?) / 尚无采集中心数据")
        raise typer.Exit(EXIT_EMPTY)
    rows = read_agents(cfg.state_path)
    if json:
        print_json_lines(rows)
        raise typer.Exit(EXIT_OK if rows else EXIT_EMPTY)
    from rich.table import Table

    t = Table(title=f"{len(rows)} agent{'s' if len(rows) != 1 else ''} / {len(rows)} 个采集节点")
    for col in (
        "site",
        "agent",
        "status",
        "last seen",
        "batches",
        "samples",
        "dups",
        "refused",
        "spool",
        "dropped",
        "version",
        "config",
    ):
        t.add_column(col, overflow="fold")
    for r in rows:
        colour = {"online": "green", "offline": "red"}.get(r["status"], "yellow")
        spool = (
            "—"
            if r["spool_depth"] is None
            else f"{r['spool_depth']}"
            + (f" ({r['spool_oldest_s']:.0f}s old{', draining' if r['draining'] else ''})" if r["spool_depth"] else "")
        )
        # everything in a row came from an agent (status document, batches): printed, never parsed
        t.add_row(
            lit(r["site"]),
            lit(r["id"]),
            f"[{colour}]{lit(r['status'])}[/{colour}]",
            _ago(r["last_seen_ns"]),
            lit(r["batches"]),
            lit(r["samples"]),
            lit(r["duplicates"]),
            # messages over quota / samples whose own site or county tags the centre replaced
            f"{r['over_quota']}/{r['identity_overridden']}" if r["over_quota"] or r["identity_overridden"] else "—",
            lit(spool),
            "—" if r["dropped_samples"] is None else lit(r["dropped_samples"]),
            lit(r["version"]),
            lit(r["config_version"]),
        )
    con = console()
    con.print(t)
    online = sum(1 for r in rows if r["status"] == "online")
    con.print(
        f"online {online} · offline/unknown {len(rows) - online}  |  在线 {online} · 离线/未知 {len(rows) - online}"
    )
    from collector.state import read_unknown_agents

    unknown = read_unknown_agents(cfg.state_path)
    if unknown:
        names = ", ".join(lit(u["id"]) for u in unknown[:10]) + (" …" if len(unknown) > 10 else "")
        con.print(
            f"[yellow]refused, not in the topology: {names}[/yellow] — see `netwatch-collector agents unknown`, "
            f"admit with `netwatch-collector agents admit ID --site SITE`  |  拒收的未知代理 {len(unknown)} 个"
        )
    raise typer.Exit(EXIT_OK if rows else EXIT_EMPTY)


@agents_app.command("unknown")
def agents_unknown(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Agents that sent something but are neither in the topology nor admitted (refused, counted)."""
    cfg = load_config(config)
    from collector.state import read_unknown_agents

    rows = read_unknown_agents(cfg.state_path) if cfg.state_path.exists() else []
    if json:
        print_json_lines(rows)
        raise typer.Exit(EXIT_OK if rows else EXIT_EMPTY)
    from rich.table import Table

    t = Table(
        title=f"{len(rows)} unknown agent{'s' if len(rows) != 1 else ''}, refused / {len(rows)} 个未知代理（已拒收）"
    )
    for col in ("agent", "first seen", "last seen", "messages refused"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(lit(r["id"]), _ago(r["first_seen_ns"]), _ago(r["last_seen_ns"]), lit(r["messages"]))
    console().print(t)
    raise typer.Exit(EXIT_OK if rows else EXIT_EMPTY)


@agents_app.command("admit")
def agents_admit(
    agent: Annotated[str, typer.Argument(help="the agent id (its MQTT username)")],
    site: Annotated[str, typer.Option(help="the site it serves; the centre stamps it on all its samples")],
    comment: Annotated[str, typer.Option(help="why, for the record")] = "",
    config: ConfigOpt = None,
) -> None:
    """Accept an agent the topology does not list, as serving SITE (the running collector picks it
    up within seconds). Better still: add it to the topology file."""
    from protocol.ids import valid_id

    cfg = load_config(config)
    if not valid_id(agent) or not valid_id(site):
        console().print("[red]agent and site ids are letters, digits, '.', '_' and '-', at most 64[/red]")
        raise typer.Exit(EXIT_CONFIG)
    if cfg.topology is not None:
        from collector.alerting.topology import Topology

        topo = Topology.load(cfg.topology)
        if site not in topo.sites:
            console().print(
                f"[red]site {lit(site)} is not in {lit(cfg.topology)}[/red]; sites: {lit(', '.join(topo.sites))}"
            )
            raise typer.Exit(EXIT_CONFIG)
    from collector.state import StateDB

    st = StateDB(cfg.state_path)
    try:
        st.admit(agent, site, comment)
    finally:
        st.close()
    from collector.control import open_audit

    audit = open_audit(cfg)
    try:
        audit.record(
            f"{os.environ.get('USER', 'local')}@cli",
            "agent_admitted",
            agent,
            "ok",
            "cli",
            {"site": site, "comment": comment},
        )
    finally:
        audit.close()
    console().print(f"admitted {lit(agent)} at site {lit(site)} / 已接纳")


@app.command()
def query(
    measurement: Annotated[str, typer.Argument(help="measurement name, e.g. icmp, http, host_cpu")],
    config: ConfigOpt = None,
    agent: Annotated[str | None, typer.Option(help="only this agent")] = None,
    site: Annotated[str | None, typer.Option(help="only this site")] = None,
    since: Annotated[str, typer.Option(help="how far back, e.g. 10m, 2h, 7d")] = "10m",
    limit: Annotated[int, typer.Option(help="at most this many samples (newest kept)")] = 1000,
    json: JsonOpt = False,
) -> None:
    """Print stored samples of one measurement from the SQLite store."""
    cfg = load_config(config)
    if cfg.sqlite_path is None or not cfg.sqlite_path.exists():
        console().print(
            f"no SQLite store at {lit(cfg.sqlite_path)} / 没有 SQLite 存储"
            if cfg.sqlite_path
            else "this collector stores only into InfluxDB: query it through Grafana or the InfluxDB API"
        )
        raise typer.Exit(EXIT_EMPTY)
    try:
        since_s = parse_duration(since)
    except ValueError as e:
        console().print(f"[red]--since: {lit(e)}[/red]")
        raise typer.Exit(EXIT_CONFIG) from None
    from collector.storage.sqlite import SqliteSink

    tags = {k: v for k, v in (("agent", agent), ("site", site)) if v}
    reader = SqliteSink.open_readonly(cfg.sqlite_path)
    try:
        rows = reader.query(measurement, tags=tags or None, since_ns=time.time_ns() - int(since_s * 1e9))
    finally:
        reader.close()
    rows = rows[-limit:] if limit > 0 else rows
    if json:
        print_samples_json(rows)
    else:
        con = console()
        con.print(
            samples_table(
                rows,
                title=f"{lit(measurement)} — {len(rows)} sample{'s' if len(rows) != 1 else ''} since {lit(since)} / {len(rows)} 个样本",
                show_identity=True,
            )
        )
        if rows:
            con.print(
                f"from {datetime.fromtimestamp(rows[0].time_ns / 1e9):%Y-%m-%d %H:%M:%S} "
                f"to {datetime.fromtimestamp(rows[-1].time_ns / 1e9):%H:%M:%S}"
            )
    raise typer.Exit(EXIT_OK if rows else EXIT_EMPTY)


@app.command()
def stats(config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """The collector's counters: received, stored, duplicates, rejected by reason."""
    cfg = load_config(config)
    from collector.state import read_counters

    if not cfg.state_path.exists():
        console().print(f"no collector state at {lit(cfg.state_path)}")
        raise typer.Exit(EXIT_EMPTY)
    c = read_counters(cfg.state_path)
    if json:
        print_json_lines([c])
        return
    con = console()
    for k, v in sorted(c.items()):
        con.print(f"{lit(k):>22}: {lit(v)}")


# Alerts and rules (collector/cli_alerts.py): netwatch-collector alerts …, netwatch-collector rules check FILE
from collector.cli_alerts import alerts_app, rules_app  # noqa: E402 - after app is defined

app.add_typer(alerts_app, name="alerts")
# Control of the agents (collector/cli_control.py): config diff|push, exec, keys
from collector.cli_control import config_app, exec_, keys_app  # noqa: E402 - after app is defined

app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
from collector.cli_users import users_app  # noqa: E402 - after app is defined

app.add_typer(users_app, name="users")
from collector.cli_audit import audit_app  # noqa: E402 - after app is defined

app.add_typer(audit_app, name="audit")
from collector.cli_backup import backup_cmd, restore_cmd  # noqa: E402 - after app is defined

app.command("backup")(backup_cmd)
app.command("restore")(restore_cmd)
app.command("exec", context_settings={"allow_interspersed_args": False})(exec_)
app.add_typer(rules_app, name="rules")
# The monthly availability report (collector/cli_report.py, collector/report.py)
from collector.cli_report import report_cmd  # noqa: E402 - after app is defined

app.command("report")(report_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
