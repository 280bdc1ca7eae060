"""``netwatch-agent snmp traps``: listen for SNMP traps and print each one as it arrives — the technician's
check that a switch or UPS sends its traps here, and of what they say. Also ``python -m agent.cli_snmp_traps``.

Exit codes: 0 ok (or stopped with Ctrl-C); 1 fewer than --count traps before --timeout; 2 usage error;
3 cannot listen (port taken, or below 1024 without the right to bind it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from probes.configfile import problems_from
from probes.model import EVENT, Sample
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, EXIT_USAGE, lit, print_samples_json, safe

EXIT_TOO_FEW = EXIT_PROBLEM

#: config keys -> the options that set them, so an error names what the technician typed
_OPTION_OF = {
    "communities": "--community",
    "communities_file": "--community-file",
    "communities_env": "--community-env",
    "users[0]": "--user",
    "users[0].auth_key_file": "--auth-key-file",
    "users[0].priv_key_file": "--priv-key-file",
}

_SEVERITY_STYLE = {"info": "green", "warning": "yellow", "critical": "bold red"}


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _row_table(header: bool) -> Table:
    # One table per trap, fixed widths, header on the first only: the rows line up as they stream in.
    t = Table(show_header=header, box=None, pad_edge=False, show_edge=False)
    t.add_column("time", no_wrap=True, width=8)
    t.add_column("source", no_wrap=True, width=15, overflow="ellipsis")
    t.add_column("severity", no_wrap=True, width=8)
    t.add_column("trap", no_wrap=True, width=22, overflow="ellipsis")
    t.add_column("message", overflow="fold", ratio=1)
    return t


def _print_row(con: Console, s: Sample, header: bool) -> None:
    f = s.fields
    sev = str(f.get("severity", "info"))
    style = _SEVERITY_STYLE.get(sev, "white")
    t = _row_table(header)
    # Everything but the time and the style comes from the sender: printed as written, never parsed.
    source = str(s.tags.get("source", ""))
    sender = f" ({f['sender_ip']})" if f.get("sender_ip") != s.tags.get("source") else ""
    t.add_row(
        datetime.fromtimestamp(s.time_ns / 1e9).strftime("%H:%M:%S"),
        lit(source + sender),
        f"[{style}]{lit(sev)}[/{style}]",
        lit(f.get("trap_name", "")),
        lit(f.get("message", "")),
    )
    con.print(t)
    # The varbinds whole, under the row: a technician compares them with the device's documentation.
    con.print(Text(f"          {safe(f.get('varbinds', ''))}", style="dim"), soft_wrap=True)


def traps(
    port: Annotated[int, typer.Option("--port", "-p", help="UDP port to listen on (162 needs root)")] = 1162,
    host: Annotated[str, typer.Option(help="address to listen on; 0.0.0.0 to hear the LAN")] = "127.0.0.1",
    community: Annotated[
        list[str] | None,
        typer.Option(
            "--community",
            "-c",
            help="accepted v1/v2c community, repeatable (discouraged: any local user sees it in the process list "
            "and it stays in shell history; kept for compatibility). Prefer --community-file or --community-env; "
            "with none of the three, NETWATCH_SNMP_COMMUNITY is read (comma-separated)",
            show_default=False,
        ),
    ] = None,
    community_file: Annotated[
        Path | None,
        typer.Option("--community-file", help="file with one accepted community per line (# starts a comment)"),
    ] = None,
    community_env: Annotated[
        str | None,
        typer.Option(
            "--community-env", metavar="VAR", help="environment variable holding communities, comma-separated"
        ),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="accepted SNMPv3 user")] = None,
    auth_proto: Annotated[
        str | None, typer.Option("--auth-proto", "-a", help="MD5, SHA, SHA-224, SHA-256, SHA-384, SHA-512")
    ] = None,
    auth_key: Annotated[
        str | None,
        typer.Option(
            "--auth-key",
            "-A",
            help="v3 auth passphrase (discouraged: visible in the process list). Prefer --auth-key-file or "
            "--auth-key-env; with none of the three, NETWATCH_SNMP_AUTH_KEY is read",
            show_default=False,
        ),
    ] = None,
    auth_key_file: Annotated[
        Path | None, typer.Option("--auth-key-file", help="file holding the auth passphrase")
    ] = None,
    auth_key_env: Annotated[
        str | None, typer.Option("--auth-key-env", metavar="VAR", help="environment variable holding it")
    ] = None,
    priv_proto: Annotated[
        str | None,
        typer.Option(
            "--priv-proto",
            "-x",
            help="DES, AES (=AES-128), AES-192, AES-256, AES-192-C, AES-256-C (Cisco key extension)",
        ),
    ] = None,
    priv_key: Annotated[
        str | None,
        typer.Option(
            "--priv-key",
            "-X",
            help="v3 privacy passphrase (discouraged: visible in the process list). Prefer --priv-key-file or "
            "--priv-key-env; with none of the three, NETWATCH_SNMP_PRIV_KEY is read",
            show_default=False,
        ),
    ] = None,
    priv_key_file: Annotated[
        Path | None, typer.Option("--priv-key-file", help="file holding the privacy passphrase")
    ] = None,
    priv_key_env: Annotated[
        str | None, typer.Option("--priv-key-env", metavar="VAR", help="environment variable holding it")
    ] = None,
    allow_noauth: Annotated[
        bool,
        typer.Option("--allow-noauth", help="also accept SNMPv3 noAuthNoPriv traps from --user (refused otherwise)"),
    ] = False,
    engine_id: Annotated[
        list[str] | None,
        typer.Option("--engine-id", "-e", help="the sender's snmpEngineID in hex, needed for v3 traps (repeatable)"),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="one JSON object per trap and line, for scripts")] = False,
    count: Annotated[int, typer.Option(help="stop after this many traps (0: until Ctrl-C)", min=0)] = 0,
    timeout: Annotated[float, typer.Option(help="stop after this many seconds (0: no limit)", min=0)] = 0.0,
) -> None:
    """Listen for SNMP traps and informs (v1, v2c, v3) and print each one."""
    from probes.snmp.traps_config import TrapConfig

    raw: dict[str, Any] = {"host": host, "port": port, "stats_interval": 86400, "allow_noauth": allow_noauth}
    communities = {"communities": community, "communities_file": community_file, "communities_env": community_env}
    communities = {k: v for k, v in communities.items() if v is not None}
    if not communities and os.environ.get("NETWATCH_SNMP_COMMUNITY"):
        communities = {"communities_env": "NETWATCH_SNMP_COMMUNITY"}
    raw |= communities
    if user is not None:
        entry: dict[str, Any] = {"user": user, "auth_proto": auth_proto, "priv_proto": priv_proto}
        for kind, proto, given in (
            ("auth", auth_proto, (auth_key, auth_key_file, auth_key_env)),
            ("priv", priv_proto, (priv_key, priv_key_file, priv_key_env)),
        ):
            sources = dict(zip((f"{kind}_key", f"{kind}_key_file", f"{kind}_key_env"), given, strict=True))
            sources = {k: v for k, v in sources.items() if v is not None}
            fallback = f"NETWATCH_SNMP_{kind.upper()}_KEY"
            if not sources and proto is not None and os.environ.get(fallback):
                sources = {f"{kind}_key_env": fallback}
            entry |= sources
        entry["engine_ids"] = list(engine_id or [])
        raw["users"] = [{k: v for k, v in entry.items() if v is not None}]
    elif auth_proto or priv_proto or engine_id:
        _err().print("[red]usage:[/red] --auth-proto, --priv-proto and --engine-id need --user")
        raise typer.Exit(EXIT_USAGE)
    if not communities and user is None:
        _err().print(
            "[red]usage:[/red] no credentials (there is no default community): give [bold]--community-file FILE[/bold] "
            "or [bold]--community-env VAR[/bold], set NETWATCH_SNMP_COMMUNITY, or --user for SNMPv3 "
            "(--community VALUE works too, but shows the secret in the process list)",
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_USAGE)
    try:
        cfg = TrapConfig.model_validate(raw)
    except ValidationError as e:
        con = _err()
        for p in problems_from(e, TrapConfig):
            key = _OPTION_OF.get(p.key, p.key)
            con.print(f"[red]{lit(key)}:[/red] {lit(p.message)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        code = asyncio.run(_listen(cfg, as_json=json, count=count, timeout_s=timeout))
    except OSError as e:
        _err().print(f"[red]error:[/red] {lit(e.strerror or e)}", soft_wrap=True)
        raise typer.Exit(EXIT_RUNTIME) from None
    raise typer.Exit(code)


async def _listen(cfg: Any, *, as_json: bool, count: int, timeout_s: float) -> int:
    from probes.snmp.traps import TrapListener

    listener = TrapListener(cfg, name="cli")
    out = Console(highlight=False, soft_wrap=False)
    err = _err()
    done = asyncio.Event()
    shown = 0

    def emit(samples: list[Sample]) -> None:
        nonlocal shown
        for s in samples:
            if s.measurement != EVENT or (count and shown >= count):
                continue
            if as_json:
                print_samples_json([s])
            else:
                _print_row(out, s, header=shown == 0)
            shown += 1
            if count and shown >= count:
                done.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, done.set)
    task = asyncio.create_task(listener.run(emit))
    stop = asyncio.create_task(done.wait())
    try:
        # Say where we listen once the socket is bound (or fail with the bind error).
        while listener.bound is None and not task.done():
            await asyncio.sleep(0.01)
        if listener.bound is not None and not as_json:
            users = lit(", ".join(u.user for u in cfg.users) or "none")
            err.print(
                f"listening on {listener.bound[0]}:{listener.bound[1]} — v1/v2c communities: "
                f"{len(cfg.community_list())}, v3 users: {users}"
                + (f"; stopping after {count} traps" if count else "")
                + (f" or {timeout_s:g} s" if timeout_s else "")
                + " — Ctrl-C to stop"
            )
        await asyncio.wait({task, stop}, timeout=timeout_s or None, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the listener only ends by raising (e.g. the bind failed)
    finally:
        for t in (task, stop):
            t.cancel()
        await asyncio.gather(task, stop, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    st = listener.stats
    err.print(
        f"traps shown {shown} · datagrams {st['received']} · unknown source {st['unknown_source']} · "
        f"bad community {st['bad_community']} · bad v3 auth {st['bad_auth']} · malformed {st['malformed']}"
        + (f" · rate-limited {st['rate_limited']}" if st["rate_limited"] else "")
        + (f" · v3 noAuthNoPriv refused {st['noauth_refused']}" if st["noauth_refused"] else "")
    )
    sys.stdout.flush()
    return EXIT_TOO_FEW if count and shown < count else EXIT_OK


app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})
app.command()(traps)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
