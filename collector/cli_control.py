"""``netwatch-collector config diff|push``, ``exec`` and ``keys``: control of the agents from the
centre (collector/control.py does the work)."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from collector import config as collector_config
from collector.cli_common import ConfigOpt, JsonOpt, load_config
from collector.control import Controller, Progress, desired, diff, key_path, next_key_path, open_audit
from probes.configfile import ConfigError
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, EXIT_USAGE, console, lit, print_json_lines
from protocol.signing import SigningKey

config_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Desired agent configs: diff and push.")
keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The centre's signing key: show, rotate.")


def _issuer() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except OSError:
        return "cli"


def _targets(cfg: collector_config.CollectorConfig, agent: str | None, site: str | None, all_: bool) -> list[str]:
    if (agent is not None) + (site is not None) + all_ != 1:
        console().print("[red]name one AGENT, or --site SITE, or --all[/red]")
        raise typer.Exit(EXIT_USAGE)
    if agent is not None:
        return [agent]
    folder = cfg.control.configs
    have = sorted(p.stem for p in folder.glob("*.yaml")) if folder is not None and folder.is_dir() else []
    if all_:
        return have
    if cfg.topology is None:
        console().print("[red]--site needs the topology (identity.topology or alerting.topology)[/red]")
        raise typer.Exit(EXIT_USAGE)
    from collector.alerting.topology import Topology

    topo = Topology.load(cfg.topology)
    if site not in topo.sites:
        console().print(f"[red]no site {lit(site)} in {lit(cfg.topology)}[/red]")
        raise typer.Exit(EXIT_USAGE)
    sites = {site, *topo.below(site or "")}
    return sorted(a for a, s in topo.agent_site.items() if s in sites and a in have)


@config_app.command("diff")
def config_diff(agent: Annotated[str, typer.Argument(help="agent id")], config: ConfigOpt = None) -> None:
    """What a push would change for AGENT: the last pushed config against the desired one."""
    cfg = load_config(config)
    from collector.state import StateDB

    st = StateDB(cfg.state_path)
    try:
        _, last = st.last_pushed(agent)
    finally:
        st.close()
    try:
        text = diff(cfg, agent, orjson.loads(last) if last else None)
    except ConfigError as e:
        console().print(f"[red]{lit(e)}[/red]", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    sys.stdout.write(text or f"{agent}: nothing to push / 无变化\n")
    raise typer.Exit(EXIT_OK if text else EXIT_PROBLEM)


@config_app.command("push")
def config_push(
    agent: Annotated[str | None, typer.Argument(help="agent id (or --site / --all)")] = None,
    site: Annotated[str | None, typer.Option(help="every agent at this site and below")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every agent with a desired config")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the agents to answer")] = 30.0,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Sign and publish the desired config to agents; show who applied it, who refused and why,
    who has not answered. Exit 0 only when every agent applied it."""
    cfg = load_config(config)
    targets = _targets(cfg, agent, site, all_)
    if not targets:
        console().print("no agents to push to / 没有要下发的节点")
        raise typer.Exit(EXIT_PROBLEM)
    from collector.state import StateDB

    st = StateDB(cfg.state_path)
    pushes: dict[str, tuple[dict[str, object], int]] = {}
    try:
        for a in targets:
            try:
                doc = desired(cfg, a)
            except ConfigError as e:
                console().print(f"[red]{lit(e)}[/red]", soft_wrap=True)
                raise typer.Exit(EXIT_USAGE) from None
            pushes[a] = (doc, st.last_pushed(a)[0] + 1)
        issuer = _issuer()
        try:
            ctl = Controller(cfg, issuer=issuer)
        except (OSError, ConnectionError) as e:
            console().print(f"[red]cannot reach the broker: {lit(e)}[/red]")
            raise typer.Exit(EXIT_RUNTIME) from None
        for a, (doc, version) in pushes.items():
            st.record_push(a, version, orjson.dumps(doc).decode(), issuer)
        try:
            result = _push_live(ctl, pushes, timeout, quiet=json)
        finally:
            ctl.close()
    finally:
        st.close()
    audit = open_audit(cfg)
    try:
        for p in result:
            audit.record(issuer, "config_push", p.agent, p.state, "cli", {"version": p.version, "detail": p.detail})
    finally:
        audit.close()
    if json:
        print_json_lines(
            [{"agent": p.agent, "version": p.version, "state": p.state, "detail": p.detail} for p in result]
        )
    ok = all(p.state == "applied" for p in result)
    raise typer.Exit(EXIT_OK if ok else EXIT_PROBLEM)


def _table(rows: list[Progress]) -> object:
    from rich.table import Table

    t = Table(title="config push / 配置下发")
    for col in ("agent", "version", "state / 状态", "detail"):
        t.add_column(col, overflow="fold")
    colour = {"applied": "green", "refused": "red", "waiting": "yellow"}
    words = {"applied": "applied 已生效", "refused": "refused 已拒绝", "waiting": "waiting 等待中"}
    for p in sorted(rows, key=lambda r: r.agent):
        t.add_row(lit(p.agent), f"v{p.version}", f"[{colour[p.state]}]{words[p.state]}[/]", lit(p.detail))
    return t


def _push_live(
    ctl: Controller, pushes: dict[str, tuple[dict[str, object], int]], timeout: float, *, quiet: bool
) -> list[Progress]:
    if quiet:
        return ctl.push(pushes, timeout_s=timeout)
    from rich.live import Live

    with Live(console=console(), refresh_per_second=4) as live:
        result = ctl.push(pushes, timeout_s=timeout, on_progress=lambda rows: live.update(_table(rows)))  # type: ignore[arg-type]
        live.update(_table(result))  # type: ignore[arg-type]
    return result


def exec_(
    agent: Annotated[str, typer.Argument(help="agent id")],
    argv: Annotated[list[str], typer.Argument(help="the agent CLI command, after --: snmp walk ... ")],
    timeout: Annotated[float, typer.Option(help="seconds the command may run on the agent")] = 60.0,
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """Run an agent CLI command on AGENT and print what it printed, as if run on the node:
    `netwatch-collector exec town-1 -- snmp walk --device sw1 1.3.6.1.2.1.1`. Exits with its code."""
    cfg = load_config(config)
    argv = list(argv[1:] if argv and argv[0] == "--" else argv)
    if not argv:
        console().print("[red]give the agent's command after --, e.g. -- snmp walk --device sw1 1.3.6.1.2.1.1[/red]")
        raise typer.Exit(EXIT_USAGE)
    try:
        ctl = Controller(cfg, issuer=_issuer())
    except (OSError, ConnectionError) as e:
        console().print(f"[red]cannot reach the broker: {lit(e)}[/red]")
        raise typer.Exit(EXIT_RUNTIME) from None
    try:
        r = ctl.run(agent, argv, timeout_s=timeout)
    finally:
        ctl.close()
    audit = open_audit(cfg)
    try:
        audit.record(
            ctl.issuer,
            "command",
            agent,
            r.status if r is not None else "no_answer",
            "cli",
            {"argv": argv, "exit_code": r.exit_code if r else None, "reason": r.reason if r else ""},
        )
    finally:
        audit.close()
    if r is None:
        console().print(f"[red]no answer from {lit(agent)} in {timeout + 10:g}s[/red] / 无应答")
        raise typer.Exit(EXIT_RUNTIME)
    if json:
        print_json_lines(
            [{"id": r.id, "status": r.status, "exit_code": r.exit_code, "output": r.output, "reason": r.reason}]
        )
    elif r.status == "refused":
        console().print(f"[red]refused by {lit(agent)}[/red]: {lit(r.reason)}", soft_wrap=True)
    else:
        sys.stdout.write(r.output)
        sys.stdout.flush()
        if r.status == "timeout":
            console().print(f"[red]{lit(r.reason)}[/red]")
    raise typer.Exit(
        r.exit_code if r.status in ("ok", "failed") else (EXIT_USAGE if r.status == "refused" else EXIT_RUNTIME)
    )


def _audit_key(
    cfg: collector_config.CollectorConfig, action: str, key: str, detail: dict[str, str] | None = None
) -> None:
    audit = open_audit(cfg)
    try:
        audit.record(_issuer(), action, key, "ok", "cli", detail)
    finally:
        audit.close()


@keys_app.command("show")
def keys_show(config: ConfigOpt = None) -> None:
    """The centre's public key (what agents' control.centre_key holds), and the next one if a
    rotation is under way."""
    cfg = load_config(config)
    key = SigningKey.load_or_create(key_path(cfg))
    console().print(f"current {key.id}: {key.public.text}")
    nxt = next_key_path(cfg)
    if nxt.exists():
        console().print(
            f"next    {SigningKey.load(nxt).id}: {SigningKey.load(nxt).public.text} (announced with every push)"
        )


@keys_app.command("rotate")
def keys_rotate(
    finish: Annotated[bool, typer.Option(help="sign with the next key from now on")] = False,
    config: ConfigOpt = None,
) -> None:
    """Start a rotation (a next key, announced to agents with every push signed by the current
    one), or --finish it (the next key becomes the current; agents that got the announcement
    follow; agents that did not will refuse until their centre_key is updated on the node)."""
    cfg = load_config(config)
    cur, nxt = key_path(cfg), next_key_path(cfg)
    if not finish:
        if nxt.exists():
            console().print(f"a rotation is under way already: next key {SigningKey.load(nxt).id}")
            raise typer.Exit(EXIT_PROBLEM)
        SigningKey.load_or_create(cur)
        k = SigningKey.generate()
        k.save(nxt)
        _audit_key(cfg, "key_rotation_started", k.id)
        console().print(f"next key {k.id} created; push to every agent, then `keys rotate --finish`")
        return
    if not nxt.exists():
        console().print("[red]no rotation under way (run `keys rotate` first)[/red]")
        raise typer.Exit(EXIT_USAGE)
    old = SigningKey.load(cur)
    # kept: the audit log's checkpoints signed with it still verify (collector/cli_audit.py)
    old.save(cur.with_name(cur.name + f".retired-{old.id}"))
    nxt.replace(cur)
    Path(str(nxt) + ".pub").replace(Path(str(cur) + ".pub"))
    _audit_key(cfg, "key_rotated", SigningKey.load(cur).id, {"retired": old.id})
    console().print(f"signing with {SigningKey.load(cur).id} now; {old.id} retired")
