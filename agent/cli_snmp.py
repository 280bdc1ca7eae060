"""``netwatch-agent snmp``: the technician's SNMP tools — get, walk, and one poll of a device with its
profiles — with credentials as options or taken from an agent config's snmp entry; and ``set``, the one
device change, limited to the objects in probes/snmp/settable.py.

Exit codes: 0 ok; 1 the device is down, refused the credentials or answered with an error (or the
poll was degraded); 2 bad usage or config; 3 runtime failure.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.table import Table

from probes.base import parse_duration
from probes.configfile import ConfigError, problems_from
from probes.model import Sample
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
    status_counts,
    summary_line,
)
from probes.snmp.config import SnmpConfig
from probes.snmp.connect import open_session
from probes.snmp.poll import decode_text
from probes.snmp.session import MISSING_TYPES, SnmpError, SnmpSession, VarBind
from probes.snmp.settable import SETTABLE, SetRequest, parse_set

EXIT_TARGET_DOWN, EXIT_CONFIG = EXIT_PROBLEM, EXIT_USAGE
T = TypeVar("T")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SNMP get, walk and one poll of a device with its profiles (v1, v2c, v3), for the technician on site.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

TargetArg = Annotated[
    str | None, typer.Argument(help="host[:port] (port 161 if left out); optional with --config/--device")
]
VersionOpt = Annotated[str, typer.Option("--version", "-v", help="SNMP version: 1, 2c or 3")]
#: Why a secret given as an option value is discouraged: it is in every local user's process list.
_VISIBLE = "discouraged: any local user sees it in the process list (/proc/PID/cmdline) and it stays in shell history"
CommunityOpt = Annotated[
    str | None,
    typer.Option(
        "--community",
        "-c",
        help=f"v1/v2c community ({_VISIBLE}; kept for compatibility). Prefer --community-file or "
        "--community-env; with none of the three, NETWATCH_SNMP_COMMUNITY is read from the environment",
        show_default=False,
    ),
]
CommunityFileOpt = Annotated[
    Path | None, typer.Option("--community-file", help="file holding the v1/v2c community (first line)")
]
CommunityEnvOpt = Annotated[
    str | None, typer.Option("--community-env", metavar="VAR", help="environment variable holding the community")
]
UserOpt = Annotated[str | None, typer.Option("--v3-user", "-u", help="SNMPv3 user name")]
AuthProtoOpt = Annotated[
    str | None, typer.Option("--auth-proto", "-a", help="MD5, SHA, SHA-224, SHA-256, SHA-384, SHA-512")
]
AuthKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--auth-key",
        "-A",
        help=f"v3 auth pass phrase ({_VISIBLE}). Prefer --auth-key-file or --auth-key-env; with none of the "
        "three, NETWATCH_SNMP_AUTH_KEY is read from the environment",
        show_default=False,
    ),
]
AuthKeyFileOpt = Annotated[Path | None, typer.Option("--auth-key-file", help="file holding the v3 auth pass phrase")]
AuthKeyEnvOpt = Annotated[
    str | None, typer.Option("--auth-key-env", metavar="VAR", help="environment variable holding the auth pass phrase")
]
PrivProtoOpt = Annotated[
    str | None, typer.Option("--priv-proto", "-x", help="DES, AES, AES-192, AES-256 (AES-192-C, AES-256-C: Cisco)")
]
PrivKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--priv-key",
        "-X",
        help=f"v3 privacy pass phrase ({_VISIBLE}). Prefer --priv-key-file or --priv-key-env; with none of the "
        "three, NETWATCH_SNMP_PRIV_KEY is read from the environment",
        show_default=False,
    ),
]
PrivKeyFileOpt = Annotated[Path | None, typer.Option("--priv-key-file", help="file holding the v3 privacy pass phrase")]
PrivKeyEnvOpt = Annotated[
    str | None,
    typer.Option("--priv-key-env", metavar="VAR", help="environment variable holding the privacy pass phrase"),
]
TimeoutOpt = Annotated[str, typer.Option("--timeout", "-t", help="wait for each reply, e.g. 2s or 500ms")]
RetriesOpt = Annotated[int, typer.Option("--retries", "-r", help="re-sends after a timeout")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="agent config whose snmp entry to use")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="name of the snmp entry in --config")]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")]


def _fail(message: str, code: int) -> typer.Exit:
    console().print(message, soft_wrap=True)
    return typer.Exit(code)


def _looks_like_oid(text: str | None) -> bool:
    return bool(text) and text.strip(".").replace(".", "").isdigit() and text.count(".") >= 3  # type: ignore[union-attr]


def _host_port(target: str) -> tuple[str, int | None]:
    if target.startswith("["):  # [v6]:port
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if target.count(":") == 1:
        host, port = target.split(":")
        return host, int(port)
    return target, None


def _from_config(config: Path, device: str | None) -> tuple[dict[str, Any], str]:
    from agent import config as agent_config

    try:
        cfg = agent_config.load(config)
    except ConfigError as e:
        raise _fail(f"[red]config error[/red] / 配置错误:\n{lit(e)}", EXIT_CONFIG) from None
    entries = [e for e in cfg.probes if e.kind == "snmp"]
    if not entries:
        raise _fail(f"[red]{lit(config)} has no snmp entries[/red]", EXIT_CONFIG)
    if device is None and len(entries) == 1:
        device = entries[0].name
    chosen = next((e for e in entries if e.name == device), None)
    if chosen is None:
        names = ", ".join(e.name for e in entries)
        raise _fail(
            f"[red]no snmp entry named {lit(repr(device))} in {lit(config)}[/red]; there are: {lit(names)}", EXIT_CONFIG
        )
    assert isinstance(chosen.config, SnmpConfig)
    # Round-trip through the model keeps secrets' sources (env, file) as the config has them.
    raw = chosen.config.model_dump(exclude_unset=True)
    for key in ("community", "auth_key", "priv_key"):
        secret = getattr(chosen.config, key)
        if secret is not None:
            raw[key] = secret.get_secret_value()
    return raw, chosen.name


@dataclass(frozen=True, slots=True)
class Credentials:
    """The credential options as given; each secret from at most one of value, file, env."""

    community: str | None = None
    community_file: Path | None = None
    community_env: str | None = None
    user: str | None = None
    auth_proto: str | None = None
    auth_key: str | None = None
    auth_key_file: Path | None = None
    auth_key_env: str | None = None
    priv_proto: str | None = None
    priv_key: str | None = None
    priv_key_file: Path | None = None
    priv_key_env: str | None = None

    def sources(self, name: str) -> dict[str, Any]:
        """``{community: …}`` / ``{community_file: …}`` / ``{community_env: …}`` for the config model,
        falling back to ``NETWATCH_SNMP_<NAME>`` in the environment (read, like ``_env``, when used)."""
        given = {k: getattr(self, k) for k in (name, f"{name}_file", f"{name}_env") if getattr(self, k) is not None}
        if len(given) > 1:
            options = ", ".join(_OPTION_OF[k] for k in given)
            raise _fail(f"[red]give only one of {options}[/red] (the same secret from two places)", EXIT_CONFIG)
        fallback = f"NETWATCH_SNMP_{name.upper()}"
        if not given and os.environ.get(fallback):
            given = {f"{name}_env": fallback}
        return given


#: model keys -> the options that set them, so an error names what the technician typed
_OPTION_OF = {
    "community": "--community",
    "community_file": "--community-file",
    "community_env": "--community-env",
    "user": "--v3-user",
    "auth_proto": "--auth-proto",
    "auth_key": "--auth-key",
    "auth_key_file": "--auth-key-file",
    "auth_key_env": "--auth-key-env",
    "priv_proto": "--priv-proto",
    "priv_key": "--priv-key",
    "priv_key_file": "--priv-key-file",
    "priv_key_env": "--priv-key-env",
    "host": "TARGET",
    "port": "TARGET",
    "request_timeout": "--timeout",
    "retries": "--retries",
}

NO_COMMUNITY = (
    "[red]SNMP v{version} needs a community[/red] (there is no default): give [bold]--community-file FILE[/bold] "
    "or [bold]--community-env VAR[/bold], or set NETWATCH_SNMP_COMMUNITY "
    "(--community VALUE works too, but shows the secret in the process list)"
)


def build_config(
    target: str | None,
    *,
    version: str,
    creds: Credentials,
    timeout: str,
    retries: int,
    config: Path | None,
    device: str | None,
    extra: dict[str, Any] | None = None,
) -> tuple[SnmpConfig, str]:
    """The device's settings from the options, or from the agent config's entry (TARGET, when
    given too, replaces the entry's address). Exits 2 with the problem on bad input."""
    if config is not None:
        raw, name = _from_config(config, device)
    elif target is None:
        raise _fail("[red]give TARGET (host[:port]) or --config FILE --device NAME[/red]", EXIT_CONFIG)
    else:
        name = target
        raw = {"version": version, "request_timeout": timeout, "retries": retries}
        if version.lower().removeprefix("v") == "3":
            raw |= {"user": creds.user, "auth_proto": creds.auth_proto, "priv_proto": creds.priv_proto}
            # The environment fallback applies only where a protocol asks for the key.
            raw |= creds.sources("auth_key") if creds.auth_proto or _given(creds, "auth_key") else {}
            raw |= creds.sources("priv_key") if creds.priv_proto or _given(creds, "priv_key") else {}
        else:
            found = creds.sources("community")
            if not found and version.lower().removeprefix("v") in ("1", "2c"):
                raise _fail(NO_COMMUNITY.format(version=lit(version.lower().removeprefix("v"))), EXIT_CONFIG)
            raw |= found
    if target is not None:
        try:
            host, port = _host_port(target)
        except ValueError:
            raise _fail(f"[red]TARGET {lit(target)} must be host or host:port[/red]", EXIT_CONFIG) from None
        raw["host"] = host
        if port is not None:
            raw["port"] = port
    raw.update(extra or {})
    try:
        cfg = SnmpConfig.model_validate({k: v for k, v in raw.items() if v is not None})
    except ValidationError as e:
        for p in problems_from(e, SnmpConfig):
            key = _OPTION_OF.get(p.key, p.key) if config is None else p.key
            console().print(f"[red]{lit(key or 'options')}: {lit(p.message)}[/red] {lit(p.fix)}", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None
    return cfg, name


def _given(creds: Credentials, name: str) -> bool:
    return any(getattr(creds, k) is not None for k in (name, f"{name}_file", f"{name}_env"))


def show_value(kind: str, value: object) -> object:
    """A value as people (and JSON) read it: text when the octets are text, else 0x-hex."""
    if isinstance(value, bytes):
        text = decode_text(value)
        printable = all(ch.isprintable() or ch in "\r\n\t" for ch in text)
        return text if printable and (text or not value) else "0x" + value.hex()
    return value


def _run(main: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except SnmpError as e:
        raise _fail(f"[red]{lit(e)}[/red]", EXIT_TARGET_DOWN) from None
    except (typer.Exit, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - a technician's tool reports, it does not trace back
        raise _fail(f"[red]failed: {type(e).__name__}: {lit(e)}[/red]", EXIT_RUNTIME) from None


def _print_varbinds(rows: list[VarBind], as_json: bool, title: str) -> None:
    if as_json:
        print_json_lines({"oid": oid, "type": kind, "value": show_value(kind, value)} for oid, kind, value in rows)
        return
    table = Table(title=lit(title))
    table.add_column("oid", no_wrap=True)
    table.add_column("type", style="cyan")
    table.add_column("value", overflow="fold")
    for oid, kind, value in rows:
        # OIDs, types and values come from the device: printed as written, never parsed as markup
        table.add_row(lit(oid), lit(kind), lit(show_value(kind, value)))
    con = console()
    con.print(table)
    con.print(f"{len(rows)} values / 个值")


async def _with_session(cfg: Any, op: Callable[[SnmpSession], Awaitable[list[VarBind]]]) -> list[VarBind]:
    """Open the device's session, run one operation, always close it."""
    session = open_session(cfg)
    try:
        return await op(session)
    finally:
        await session.close()


@app.command()
def get(
    target: TargetArg = None,
    oids: Annotated[list[str] | None, typer.Argument(help="numeric OIDs, e.g. 1.3.6.1.2.1.1.5.0")] = None,
    version: VersionOpt = "2c",
    community: CommunityOpt = None,
    community_file: CommunityFileOpt = None,
    community_env: CommunityEnvOpt = None,
    v3_user: UserOpt = None,
    auth_proto: AuthProtoOpt = None,
    auth_key: AuthKeyOpt = None,
    auth_key_file: AuthKeyFileOpt = None,
    auth_key_env: AuthKeyEnvOpt = None,
    priv_proto: PrivProtoOpt = None,
    priv_key: PrivKeyOpt = None,
    priv_key_file: PrivKeyFileOpt = None,
    priv_key_env: PrivKeyEnvOpt = None,
    timeout: TimeoutOpt = "2s",
    retries: RetriesOpt = 1,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    json: JsonOpt = False,
) -> None:
    """GET one or more OIDs (as few requests as the device allows)."""
    if config is not None and _looks_like_oid(target):  # `get --config F --device D OID...`
        oids, target = [target, *(oids or [])], None  # type: ignore[list-item]
    if not oids:
        raise _fail("[red]give at least one OID[/red], e.g. 1.3.6.1.2.1.1.5.0 (sysName.0)", EXIT_CONFIG)
    creds = Credentials(
        community, community_file, community_env, v3_user, auth_proto, auth_key, auth_key_file, auth_key_env,
        priv_proto, priv_key, priv_key_file, priv_key_env,
    )  # fmt: skip
    cfg, name = build_config(
        target, creds=creds, version=version, timeout=timeout, retries=retries, config=config, device=device,
    )  # fmt: skip

    rows = _run(lambda: _with_session(cfg, lambda session: session.get(oids)))
    _print_varbinds(rows, json, f"GET {name}")
    raise typer.Exit(EXIT_OK)


@app.command()
def walk(
    target: TargetArg = None,
    oid: Annotated[str | None, typer.Argument(help="the subtree to walk, e.g. 1.3.6.1.2.1.31.1.1.1.1")] = None,
    version: VersionOpt = "2c",
    community: CommunityOpt = None,
    community_file: CommunityFileOpt = None,
    community_env: CommunityEnvOpt = None,
    v3_user: UserOpt = None,
    auth_proto: AuthProtoOpt = None,
    auth_key: AuthKeyOpt = None,
    auth_key_file: AuthKeyFileOpt = None,
    auth_key_env: AuthKeyEnvOpt = None,
    priv_proto: PrivProtoOpt = None,
    priv_key: PrivKeyOpt = None,
    priv_key_file: PrivKeyFileOpt = None,
    priv_key_env: PrivKeyEnvOpt = None,
    timeout: TimeoutOpt = "2s",
    retries: RetriesOpt = 1,
    max_repetitions: Annotated[int, typer.Option(help="rows per GETBULK request")] = 25,
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    json: JsonOpt = False,
) -> None:
    """Walk a subtree (GETBULK; GETNEXT for v1)."""
    if config is not None and oid is None and _looks_like_oid(target):  # `walk --config F --device D OID`
        oid, target = target, None
    if oid is None:
        raise _fail("[red]give the OID to walk[/red], e.g. 1.3.6.1.2.1.2.2.1.2 (ifDescr)", EXIT_CONFIG)
    creds = Credentials(
        community, community_file, community_env, v3_user, auth_proto, auth_key, auth_key_file, auth_key_env,
        priv_proto, priv_key, priv_key_file, priv_key_env,
    )  # fmt: skip
    cfg, name = build_config(
        target, creds=creds, version=version, timeout=timeout, retries=retries, config=config, device=device,
        extra={"max_repetitions": max_repetitions},
    )  # fmt: skip

    rows = _run(lambda: _with_session(cfg, lambda session: session.walk(oid, max_repetitions=cfg.max_repetitions)))
    _print_varbinds(rows, json, f"walk {oid} on {name}")
    raise typer.Exit(EXIT_OK)


@app.command()
def poll(
    target: TargetArg = None,
    profile: Annotated[str, typer.Option(help="auto, a profile name, or names joined by commas")] = "auto",
    version: VersionOpt = "2c",
    community: CommunityOpt = None,
    community_file: CommunityFileOpt = None,
    community_env: CommunityEnvOpt = None,
    v3_user: UserOpt = None,
    auth_proto: AuthProtoOpt = None,
    auth_key: AuthKeyOpt = None,
    auth_key_file: AuthKeyFileOpt = None,
    auth_key_env: AuthKeyEnvOpt = None,
    priv_proto: PrivProtoOpt = None,
    priv_key: PrivKeyOpt = None,
    priv_key_file: PrivKeyFileOpt = None,
    priv_key_env: PrivKeyEnvOpt = None,
    timeout: TimeoutOpt = "2s",
    retries: RetriesOpt = 1,
    poll_timeout: Annotated[str, typer.Option(help="time for the whole poll (big chassis take long)")] = "60s",
    config: ConfigOpt = None,
    device: DeviceOpt = None,
    json: JsonOpt = False,
) -> None:
    """Poll the device once with its profiles and print the Samples the agent would send."""
    from probes.snmp.probe import SnmpProbe

    names = [p.strip() for p in profile.split(",") if p.strip()]
    extra: dict[str, Any] = {}
    if names and names != ["auto"]:
        extra["profile"] = names if len(names) > 1 else names[0]
    elif config is None:
        extra["profile"] = "auto"
    creds = Credentials(
        community, community_file, community_env, v3_user, auth_proto, auth_key, auth_key_file, auth_key_env,
        priv_proto, priv_key, priv_key_file, priv_key_env,
    )  # fmt: skip
    cfg, name = build_config(
        target, creds=creds, version=version, timeout=timeout, retries=retries, config=config, device=device,
        extra=extra,
    )  # fmt: skip
    try:
        budget = parse_duration(poll_timeout)
    except ValueError as e:
        raise _fail(f"[red]--poll-timeout: {lit(e)}[/red]", EXIT_CONFIG) from None
    probe = SnmpProbe(cfg, name=name, timeout_s=budget)

    async def main() -> list[Sample]:
        try:
            return await probe.collect()
        finally:
            await probe.aclose()

    samples = _run(main)
    if json:
        print_samples_json(samples)
    else:
        con = console()
        con.print(samples_table(samples, title=lit(f"snmp {name} ({cfg.address})")))
        con.print(summary_line(status_counts(samples)))
    counts = status_counts(samples)
    raise typer.Exit(EXIT_TARGET_DOWN if counts["down"] or counts["degraded"] else EXIT_OK)


@dataclass(frozen=True, slots=True)
class SetOutcome:
    before: VarBind
    after: VarBind


def warn_change(what: str) -> None:
    """The one line a device change always prints (on stderr, so ``--json`` output stays clean)."""
    from rich.console import Console

    Console(stderr=True, highlight=False).print(
        f"[yellow]warning / 警告:[/yellow] changing a device / 正在更改设备: {lit(what)}", soft_wrap=True
    )


@app.command("set")
def set_(
    value: Annotated[str, typer.Argument(metavar="VALUE", help="the new value, e.g. up or down for ifAdminStatus")],
    device: Annotated[str, typer.Option("--device", help="name of the snmp entry in --config")],
    obj: Annotated[
        str,
        typer.Option(
            "--object",
            help="what to set, with its instance: "
            + ", ".join(f"{s.name}.{s.index} ({'|'.join(s.values)})" for s in SETTABLE.values()),
        ),
    ],
    config: ConfigOpt = None,
    json: JsonOpt = False,
) -> None:
    """SET one allow-listed object (today ifAdminStatus.IFINDEX up|down) on a device of the config:
    reads it first, sets it, reads it back; exit 0 only when the device reports the new value."""
    try:
        req = parse_set(obj, value)  # before anything is loaded or sent
    except ValueError as e:
        raise _fail(f"[red]refused / 拒绝:[/red] {lit(e)}", EXIT_USAGE) from None
    if config is None:
        raise _fail(
            "[red]give --config FILE[/red]: the device's address and credentials come from its snmp entry / "
            "需要 --config", EXIT_USAGE,
        )  # fmt: skip
    cfg, name = build_config(
        None, creds=Credentials(), version="2c", timeout="2s", retries=1, config=config, device=device
    )
    warn_change(f"{name} ({cfg.address}) {req.object} → {req.value_text}")
    outcome = _run(lambda: _set_and_confirm(cfg, req))
    before, after = outcome.before, outcome.after
    confirmed = after[1] == req.settable.type and after[2] == req.value
    if json:
        print_json_lines(
            [
                {
                    "device": name,
                    "address": cfg.address,
                    "object": req.object,
                    "oid": req.oid,
                    "requested": req.value,
                    "before": before[2],
                    "after": after[2] if after[1] not in MISSING_TYPES else None,
                    "confirmed": confirmed,
                }
            ]
        )
    else:
        show = req.settable.name_of
        line = f"{lit(req.object)} on {lit(name)} ({lit(cfg.address)}): {lit(show(before[2]))} → {lit(show(after[2]))}"
        if confirmed:
            console().print(f"[green]{line}[/green] — confirmed by reading back / 已回读确认", soft_wrap=True)
        else:
            console().print(
                f"[red]{line}[/red] — the device accepted the SET but reports {lit(show(after[2]))}, "
                f"not {lit(req.value_text)} / 设备未应用新值",
                soft_wrap=True,
            )
    raise typer.Exit(EXIT_OK if confirmed else EXIT_TARGET_DOWN)


async def _set_and_confirm(cfg: SnmpConfig, req: SetRequest) -> SetOutcome:
    session = open_session(cfg)
    try:
        (before,) = await session.get([req.oid])
        if before[1] in MISSING_TYPES:
            raise SnmpError(
                f"{session.where}: {req.object} does not exist on the device ({before[1]}) — check the "
                f"{req.settable.index} with: netwatch-agent snmp walk --config FILE --device NAME {req.settable.oid}"
            )
        await session.set([(req.oid, req.settable.type, req.value)])
        (after,) = await session.get([req.oid])
        return SetOutcome(before, after)
    finally:
        await session.close()


if __name__ == "__main__":
    app()
