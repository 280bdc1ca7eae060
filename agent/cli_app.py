"""``netwatch-agent``'s commands (typer): run the agent, check its config, and the field technician's
one-shot tools. ``agent.cli`` is the entry point: it runs ``run`` itself (``agent.daemon``) and
hands everything else here.

Exit codes: 0 all well; 1 a target is down or degraded; 2 bad config or usage; 3 runtime failure.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from agent import __version__
from agent.messages import LangOpt, Msg, t
from probes.output import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    console,
    lit,
    print_json_lines,
    print_samples_json,
    samples_table,
    status_counts,
)

if TYPE_CHECKING:  # imported where used: `run` never pays for the one-shot tools, nor they for each other
    from agent import config as agent_config
    from probes.model import Sample

EXIT_TARGET_DOWN, EXIT_CONFIG = EXIT_PROBLEM, EXIT_USAGE

#: Sub-command groups in their own modules: name -> (module with a Typer ``app``, help). Imported only
#: when that group runs or help lists it, so `run` never loads pymodbus, the SNMP tools or their tables.
GROUPS: dict[str, tuple[str, str]] = {
    "modbus": ("agent.cli_modbus", "Modbus: read registers with a map or by hand, scan a bus for unit ids."),
    "snmp": ("agent.cli_snmp", "SNMP: get, walk, poll a device with its profile, listen for traps."),
}


def _load_group(name: str) -> Any:  # a click command (typer vendors its own click)
    import importlib

    module, help_text = GROUPS[name]
    sub: typer.Typer = importlib.import_module(module).app
    if name == "snmp":
        from agent.cli_snmp_traps import traps

        if not any(c.name == "traps" for c in sub.registered_commands):
            sub.command("traps")(traps)
    cmd = typer.main.get_command(sub)
    cmd.name, cmd.help = name, help_text
    return cmd


class _LazyGroups(TyperGroup):
    """The top-level command group, loading the groups in GROUPS on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in GROUPS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in GROUPS and cmd_name not in self.commands:
            self.commands[cmd_name] = _load_group(cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_LazyGroups,
    add_completion=False,
    no_args_is_help=True,
    help="netwatch agent: probes links, switches and room sensors at a site and ships the results to the centre.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="agent config file (YAML)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")]


def _setup_logging(level: str) -> None:
    from agent.daemon import setup_logging

    setup_logging(level)


def _load(path: Path) -> agent_config.AgentConfig:
    from agent import config as agent_config
    from probes.configfile import ConfigError

    try:
        return agent_config.load(path)
    except ConfigError as e:
        console().print(f"[red]{lit(t('config_error'))}[/red]:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None


def _exit_for(samples: list[Sample]) -> int:
    c = status_counts(samples)
    return EXIT_TARGET_DOWN if c["down"] or c["degraded"] else EXIT_OK


def _report(samples: list[Sample], as_json: bool, title: str) -> None:
    if as_json:
        print_samples_json(samples)
        return
    con = console()
    con.print(samples_table(samples, title=lit(title)))
    c = status_counts(samples)
    con.print(lit(t("summary", ok=c["ok"], degraded=c["degraded"], down=c["down"])))


@app.command()
def run(
    config: ConfigOpt,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    tee: Annotated[
        Path | None,
        typer.Option(help="also append every sample spooled to this file (JSON lines, with the batch's seq)"),
    ] = None,
) -> None:
    """Run the agent until stopped (SIGINT/SIGTERM)."""
    # `netwatch-agent run` itself is parsed by agent.cli without typer; this command is what
    # `run --help` shows (the same options: tests/agent/test_daemon.py).
    from agent import daemon

    code = daemon.run(_load(config), log_level, tee)
    if code:
        raise typer.Exit(code)


@app.command()
def check(config: ConfigOpt, json: JsonOpt = False, lang: LangOpt = None) -> None:
    """Validate the config and print what would run."""
    cfg = _load(config)
    rows = [
        {
            "type": e.kind,
            "name": e.name,
            "interval_s": e.interval_s,
            "timeout_s": e.timeout_s,
            "jitter_s": e.jitter_s,
            "tags": e.tags,
        }
        for e in cfg.probes
    ]
    if json:
        print_json_lines(
            [
                {
                    "agent": cfg.agent.id,
                    "site": cfg.agent.site,
                    "broker": f"{cfg.mqtt.host}:{cfg.mqtt.port}",
                    "tls": cfg.mqtt.uses_tls,
                    "probes": rows,
                }
            ]
        )
        return
    from rich.table import Table

    con = console()
    m = cfg.mqtt
    con.print(
        f"[green]{lit(t('config_ok'))}[/green]: [bold]{lit(config)}[/bold] — "
        + lit(t("at_site", agent=cfg.agent.id, site=cfg.agent.site))
    )
    con.print(
        lit(
            t(
                "broker_line",
                broker=f"{m.host}:{m.port}",
                tls="TLS" if m.uses_tls else Msg("no_tls"),
                user=Msg("user", {"user": m.username}) if m.username else "",
                spool=cfg.spool.path,
            )
        )
    )
    table = Table(title=lit(t("n_probes", n=len(rows))))
    for col in ("type", "name", "interval", "timeout", "tags"):
        table.add_column(col, overflow="fold")
    for e in cfg.probes:
        table.add_row(
            lit(e.kind),
            lit(e.name),
            f"{e.interval_s:g}s",
            f"{e.timeout_s:g}s",
            " ".join(f"{lit(k)}={lit(v)}" for k, v in e.tags.items()),
        )
    con.print(table)


@app.command()
def once(config: ConfigOpt, json: JsonOpt = False, lang: LangOpt = None) -> None:
    """Run every configured probe once, print the samples, and exit (the technician's first command)."""
    cfg = _load(config)
    _setup_logging("error")  # the table says what failed; no log lines on top of it
    from agent.scheduler import Scheduler

    sched = Scheduler(
        cfg.probes,
        lambda s: None,
        concurrency=cfg.scheduler.concurrency,
        tags=cfg.agent.tags,
        identity_tags={"site": cfg.agent.site, "agent": cfg.agent.id},
    )

    async def main() -> list[Sample]:
        try:
            return await sched.run_once()
        finally:
            for p in sched.probes:
                await p.aclose()

    samples = asyncio.run(main())
    _report(samples, json, f"{cfg.agent.id} @ {cfg.agent.site}")
    raise typer.Exit(_exit_for(samples))


@app.command()
def status(config: ConfigOpt, json: JsonOpt = False, lang: LangOpt = None) -> None:
    """Show the spool: batches waiting, oldest unsent, drops, and what was acknowledged."""
    cfg = _load(config)
    from agent.spool import read_stats

    if not cfg.spool.path.exists():
        console().print(lit(t("no_spool", path=cfg.spool.path)))
        raise typer.Exit(EXIT_OK)
    st = read_stats(cfg.spool.path)
    row = {
        "agent": cfg.agent.id,
        "spool": str(cfg.spool.path),
        "depth": st.depth,
        "bytes": st.bytes,
        "oldest_unsent_s": round(st.oldest_age_s(), 1),
        "last_seq": st.last_seq,
        "dropped_batches": st.dropped_batches,
        "dropped_samples": st.dropped_samples,
        "interrupted_runs": st.interrupted_runs,
        "unclean_reboots": st.unclean_reboots,
        "acked_batches": st.acked_batches,
        "acked_samples": st.acked_samples,
    }
    if json:
        print_json_lines([row])
        return
    con = console()
    for k, v in row.items():
        con.print(f"{k:>16}: {lit(v)}")


def _one_shot(kind: str, raw: dict[str, Any], name: str, timeout_s: float, as_json: bool) -> None:
    from pydantic import ValidationError

    from probes import registry
    from probes.base import Probe
    from probes.configfile import problems_from
    from probes.model import status_sample

    cls = registry.get(kind)
    if not issubclass(cls, Probe):
        raise typer.Exit(EXIT_CONFIG)  # a listener has no one-shot form
    try:
        cfg = cls.config_model.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as e:
        for p in problems_from(e, cls.config_model):
            console().print(f"[red]{lit(p.key)}: {lit(p.message)}[/red] {lit(p.fix)}")
        raise typer.Exit(EXIT_CONFIG) from None
    probe = cls(cfg, name=name, timeout_s=timeout_s)

    async def main() -> list[Sample]:
        try:
            return await asyncio.wait_for(probe.collect(), timeout_s + 1)
        except TimeoutError:
            return [status_sample(kind, probe.target, "down", error=f"no result within {timeout_s:g}s (timeout)")]
        finally:
            await probe.aclose()

    samples = asyncio.run(main())
    _report(samples, as_json, f"{kind} {name}")
    raise typer.Exit(_exit_for(samples))


def _host_port(target: str, default_port: int | None = None) -> tuple[str, int | None]:
    if target.startswith("["):  # [v6]:port
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if target.count(":") == 1:
        host, port = target.split(":")
        return host, int(port)
    return target, default_port


@app.command()
def ping(
    target: Annotated[str, typer.Argument(help="host name or address")],
    count: Annotated[int, typer.Option(help="echo requests to send")] = 5,
    interval: Annotated[str, typer.Option(help="pause between requests")] = "200ms",
    timeout: Annotated[str, typer.Option(help="wait for each reply")] = "1s",
    json: JsonOpt = False,
) -> None:
    """Ping a host: loss, RTT min/avg/max and jitter."""
    from probes.base import parse_duration

    budget = count * (parse_duration(interval) + parse_duration(timeout)) + 2
    _one_shot(
        "icmp",
        {"host": target, "count": count, "packet_interval": interval, "packet_timeout": timeout},
        target,
        budget,
        json,
    )


@app.command()
def tcp(
    target: Annotated[str, typer.Argument(help="host:port")],
    send: Annotated[str | None, typer.Option(help="text to send after connecting (\\r\\n allowed)")] = None,
    expect: Annotated[str | None, typer.Option(help="regex the reply must match")] = None,
    timeout: Annotated[str, typer.Option(help="connect/reply timeout")] = "3s",
    json: JsonOpt = False,
) -> None:
    """Connect to host:port: connect time, and optionally send/expect."""
    from probes.base import parse_duration

    host, port = _host_port(target)
    if port is None:
        console().print("[red]TARGET must be host:port[/red], e.g. 10.2.0.1:22")
        raise typer.Exit(EXIT_CONFIG)
    _one_shot(
        "tcp", {"host": host, "port": port, "send": send, "expect": expect}, target, parse_duration(timeout), json
    )


@app.command()
def http(
    url: Annotated[str, typer.Argument(help="http:// or https:// URL")],
    expect_regex: Annotated[str | None, typer.Option("--expect", help="regex the body must match")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="do not verify the TLS certificate")] = False,
    header_env: Annotated[
        list[str] | None,
        typer.Option(
            "--header-env",
            metavar="NAME=VAR",
            help="send header NAME with the value of environment variable VAR, e.g. Authorization=PORTAL_AUTH "
            "(repeatable; keeps tokens out of the process list)",
        ),
    ] = None,
    header_file: Annotated[
        list[str] | None,
        typer.Option("--header-file", metavar="NAME=FILE", help="send header NAME with the first line of FILE"),
    ] = None,
    timeout: Annotated[str, typer.Option(help="request timeout")] = "10s",
    json: JsonOpt = False,
) -> None:
    """Fetch a URL: status, response time, certificate days left, content fingerprint. Credentials in
    the URL (user:password@, ?token=) are used but never shown; they are visible in the process list,
    so prefer --header-env/--header-file for tokens."""
    from probes.base import parse_duration
    from probes.http.config import redact_url

    raw: dict[str, Any] = {"url": url, "body_regex": expect_regex, "fingerprint": {"enabled": True}}
    if insecure:
        raw["verify_tls"] = False
    for key, given in (("headers_env", header_env), ("headers_file", header_file)):
        pairs = [item.partition("=") for item in given or []]
        if any(not name or not sep or not value for name, sep, value in pairs):
            console().print(
                f"[red]--{key.replace('headers_', 'header-')} takes NAME=VALUE[/red], e.g. Authorization=VAR"
            )
            raise typer.Exit(EXIT_CONFIG)
        raw[key] = {name.strip(): value.strip() for name, _, value in pairs}
    _one_shot("http", raw, redact_url(url), parse_duration(timeout), json)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"netwatch-agent {__version__}")


from agent.cli_diag import diag  # noqa: E402 - field kit: imports what it needs when it runs
from agent.cli_discover import discover  # noqa: E402

app.command()(diag)
app.command()(discover)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
