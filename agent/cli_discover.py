"""``netwatch-agent discover``: find the SNMP devices in address ranges (trying each credential in
turn; profile chosen by sysObjectID) and the Modbus units on buses, and write config entries to a
new file for the technician to review — never into their config."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agent.messages import LangOpt, t

if TYPE_CHECKING:
    from probes.snmp.config import SnmpConfig

#: more addresses than this in one run is a typo (a /16 instead of a /24), not a room
MAX_ADDRESSES = 4096
MAX_CONCURRENCY = 256
SYS_DESCR, SYS_OBJECT_ID, SYS_NAME = "1.3.6.1.2.1.1.1.0", "1.3.6.1.2.1.1.2.0", "1.3.6.1.2.1.1.5.0"
#: the credential keys of an snmp entry that discover copies into what it writes
CREDENTIAL_KEYS = (
    "version",
    "community",
    "community_env",
    "community_file",
    "user",
    "auth_proto",
    "auth_key",
    "auth_key_env",
    "auth_key_file",
    "priv_proto",
    "priv_key",
    "priv_key_env",
    "priv_key_file",
    "context",
)
#: Modbus exceptions that show the unit exists (it understood the request; the register is not there)
UNIT_PRESENT_EXCEPTIONS = frozenset({"illegal_function", "illegal_data_address", "illegal_data_value"})
_RANGE_TAIL = re.compile(r"^(?P<base>.+\.)(?P<a>\d+)-(?P<b>\d+)$")
_NAME_BAD = re.compile(r"[^A-Za-z0-9._-]+")


class UsageError(ValueError):
    """Bad input on the command line or in the credentials file; ``str()`` says what to fix."""


def parse_addresses(specs: Iterable[str], limit: int = MAX_ADDRESSES) -> list[str]:
    """``10.2.0.0/29``, ``10.2.0.1-20``, ``10.2.0.1-10.2.0.20``, ``a,b,c`` or a single address ->
    the addresses, in order, without repeats. More than ``limit`` is refused."""
    out: dict[str, None] = {}

    def add(ip: str) -> None:
        out[ip] = None
        if len(out) > limit:
            raise UsageError(f"more than {limit} addresses: scan a room's ranges, not a whole network")

    for spec in specs:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            try:
                if "/" in part:
                    net = ipaddress.ip_network(part, strict=False)
                    if net.num_addresses > limit:
                        raise UsageError(f"{part}: {net.num_addresses} addresses, more than {limit}")
                    hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
                    for h in hosts:
                        add(str(h))
                elif "-" in part:
                    first, _, last = part.partition("-")
                    m = _RANGE_TAIL.match(part)
                    if m and "." not in m.group("b"):
                        first, last = m.group("base") + m.group("a"), m.group("base") + m.group("b")
                    a, b = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
                    if a.version != b.version or int(b) < int(a):
                        raise UsageError(f"{part}: a range goes from a lower to a higher address of one family")
                    if int(b) - int(a) + 1 > limit:
                        raise UsageError(f"{part}: {int(b) - int(a) + 1} addresses, more than {limit}")
                    for n in range(int(a), int(b) + 1):
                        add(str(ipaddress.ip_address(n)))
                else:
                    add(str(ipaddress.ip_address(part)))
            except ValueError as e:
                if isinstance(e, UsageError):
                    raise
                raise UsageError(
                    f"{part!r} is not an address, range or network (e.g. 10.2.0.1, 10.2.0.1-20, 10.2.0.0/28)"
                ) from None
    return list(out)


@dataclass(frozen=True, slots=True)
class Credential:
    """One way to log in, as the technician wrote it (env/file references stay references)."""

    keys: dict[str, Any]
    config: SnmpConfig

    @property
    def label(self) -> str:
        """What to show: which variable or file, never the secret."""
        k = self.keys
        for key in ("community_env", "community_file"):
            if key in k:
                return f"{key}: {k[key]}"
        if "community" in k:
            return "community: (in the credentials file)"
        return f"v3 user {k.get('user')}"


def load_credentials(path: Path | None, env_vars: Sequence[str]) -> list[Credential]:
    """The ``snmp:`` list of a credentials file (keys as in an snmp entry: community_env,
    community_file, community, or v3 user/auth/priv), then one v2c credential per ``env_vars``."""
    from pydantic import ValidationError

    from probes.base import validation_context
    from probes.configfile import ConfigError, Problem, problems_from, read_yaml
    from probes.snmp.config import SnmpConfig

    raw: list[Any] = []
    if path is not None:
        doc = read_yaml(path)
        unknown = sorted(set(doc) - {"snmp"})
        if unknown or not isinstance(doc.get("snmp"), list):
            raise ConfigError(
                path,
                [Problem(", ".join(unknown) or "snmp", "a credentials file has one key, snmp: a list", "see README")],
            )
        raw = list(doc["snmp"])
        if path.stat().st_mode & 0o077 and any(
            isinstance(c, dict) and {"community", "auth_key", "priv_key"} & set(c) for c in raw
        ):
            raise ConfigError(path, [Problem("snmp", "holds secrets but others may read it", f"chmod 600 {path}")])
    raw += [{"community_env": v} for v in env_vars]
    if not raw:
        raise UsageError("give --credentials FILE or --community-env VAR: discover needs something to log in with")
    ctx = validation_context(path)
    out: list[Credential] = []
    problems: list[Problem] = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or set(c) - set(CREDENTIAL_KEYS):
            extra = sorted(set(c) - set(CREDENTIAL_KEYS)) if isinstance(c, dict) else []
            problems.append(
                Problem(
                    f"snmp[{i}]",
                    f"not a credential{': ' + ', '.join(extra) if extra else ''}",
                    f"use only {', '.join(CREDENTIAL_KEYS)}",
                )
            )
            continue
        try:
            cfg = SnmpConfig.model_validate({"host": "127.0.0.1", **c}, context=ctx)
        except ValidationError as e:
            problems += problems_from(e, SnmpConfig, prefix=("snmp", i))
            continue
        keys = {k: getattr(cfg, k) for k in c}
        # a file reference is written out resolved: the new config may live elsewhere
        keys = {k: str(v) if isinstance(v, Path) else v for k, v in keys.items()}
        keys = {k: (v.get_secret_value() if hasattr(v, "get_secret_value") else v) for k, v in keys.items()}
        out.append(Credential(keys, cfg))
    if problems:
        raise ConfigError(path or "--community-env", problems)
    return out


@dataclass(slots=True)
class SnmpFound:
    address: str
    port: int
    credential: Credential
    sys_object_id: str
    sys_name: str
    sys_descr: str
    profiles: list[str]
    response_ms: float


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


async def probe_snmp(
    address: str, port: int, creds: Sequence[Credential], timeout_s: float, retries: int
) -> SnmpFound | None:
    """The first credential the device at ``address`` answers to, and what it says it is."""
    from probes.snmp.connect import open_session
    from probes.snmp.profile import builtin_profiles, detect_oids, select
    from probes.snmp.session import MISSING_TYPES, SnmpError

    profiles = list(builtin_profiles().values())
    detect = detect_oids(profiles)
    for cred in creds:
        cfg = cred.config.model_copy(
            update={"host": address, "port": port, "request_timeout": timeout_s, "retries": retries}
        )
        t0 = time.perf_counter()
        try:
            session = open_session(cfg)
        except SnmpError:
            continue
        try:
            vbs = await asyncio.wait_for(
                session.get([SYS_OBJECT_ID, SYS_DESCR, SYS_NAME, *detect]), timeout_s * (retries + 1) + 1
            )
        except (SnmpError, TimeoutError, OSError):
            continue
        finally:
            await session.close()
        ms = (time.perf_counter() - t0) * 1000
        got = {oid: value for oid, typ, value in vbs if typ not in MISSING_TYPES}
        sys_oid = _text(got.get(SYS_OBJECT_ID)).strip(".")
        chosen = select(profiles, sys_oid or None, detected=[o for o in detect if o in got])
        vendor = [p.name for p in chosen if not p.match.always]
        return SnmpFound(
            address, port, cred, sys_oid, _text(got.get(SYS_NAME)), _text(got.get(SYS_DESCR)), vendor, round(ms, 1)
        )
    return None


async def find_snmp(
    addresses: Sequence[str], port: int, creds: Sequence[Credential], timeout_s: float, retries: int, concurrency: int
) -> list[SnmpFound]:
    gate = asyncio.Semaphore(concurrency)

    async def one(a: str) -> SnmpFound | None:
        async with gate:
            return await probe_snmp(a, port, creds, timeout_s, retries)

    results = await asyncio.gather(*(one(a) for a in addresses))
    return [r for r in results if r is not None]


async def find_modbus(
    targets: Sequence[str], units: str, timeout_s: float
) -> list[tuple[str, list[dict[str, Any]], str]]:
    """Each bus scanned unit id by unit id (a bus answers one request at a time); buses at once."""
    from agent.cli_modbus import parse_units, scan_units
    from probes.modbus.transport import parse_target

    parsed = []
    for url in targets:
        try:
            tgt = parse_target(url)
            ids = parse_units(units, 1 if tgt.rtu else 0, 247 if tgt.rtu else 255)
        except ValueError as e:
            raise UsageError(f"--modbus {url}: {e}") from None
        parsed.append((url, tgt, ids))

    async def one(url: str, tgt: Any, ids: list[int]) -> tuple[str, list[dict[str, Any]], str]:
        answered, unreachable = await scan_units(tgt, ids, "holding", 0, timeout_s)
        # A unit that is there answers with values, or says it lacks that register. A gateway (or
        # a simulator) answers for absent units too — "path unavailable", "device failure": not found.
        found = [u for u in answered if u["reply"] == "values" or u["error"] in UNIT_PRESENT_EXCEPTIONS]
        return url, found, unreachable

    return list(await asyncio.gather(*(one(*p) for p in parsed)))


# ---------------------------------------------------------------------------------- writing


def _name(text: str, fallback: str, taken: set[str]) -> str:
    base = _NAME_BAD.sub("-", text).strip("-._")[:64] or fallback
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _comment(text: str) -> str:
    """Device text made safe for one YAML comment line (a sysDescr may hold newlines or escapes)."""
    from probes.output import safe

    return safe(" ".join(text.split()))[:160]


@dataclass(slots=True)
class Plan:
    """What will be written: the entries, each with its comment lines."""

    entries: list[tuple[list[str], dict[str, Any]]] = field(default_factory=list)


def plan_entries(
    snmp: Sequence[SnmpFound],
    modbus: Sequence[tuple[str, list[dict[str, Any]], str]],
    existing: Sequence[dict[str, Any]] = (),
) -> Plan:
    """Config entries for what was found, skipping devices the config already has (same host and
    port, or same bus and unit) and keeping names distinct from its names."""
    from probes.modbus.registermap import builtin_names

    taken = {str(e.get("name")) for e in existing if e.get("name")}
    have_snmp = {(str(e.get("host")), int(e.get("port", 161))) for e in existing if e.get("type") == "snmp"}
    have_modbus = {(str(e.get("target")), int(e.get("unit", 1))) for e in existing if e.get("type") == "modbus"}
    plan = Plan()
    for f in snmp:
        if (f.address, f.port) in have_snmp:
            continue
        entry: dict[str, Any] = {
            "type": "snmp",
            "name": _name(f.sys_name, f"snmp-{f.address}", taken),
            "host": f.address,
        }
        if f.port != 161:
            entry["port"] = f.port
        entry.update(f.credential.keys)
        entry["profile"] = f.profiles if f.profiles else "auto"
        notes = [
            f"sysObjectID {f.sys_object_id or '?'} -> profiles: standard + {', '.join(f.profiles) or 'none'}",
            f"sysDescr: {_comment(f.sys_descr)}",
        ]
        plan.entries.append((notes, entry))
    for url, found, _ in modbus:
        for unit in found:
            if (url, int(unit["unit"])) in have_modbus:
                continue
            entry = {
                "type": "modbus",
                "name": _name(f"modbus-{url.split('://')[-1].replace(':', '-')}-u{unit['unit']}", "modbus", taken),
                "target": url,
                "unit": int(unit["unit"]),
                # a placeholder that reads the register the scan asked for: replace with the device's map
                "map": {
                    "model": "discovered unit: replace with its register map",
                    "points": [{"name": "holding_0", "table": "holding", "address": 0}],
                },
            }
            notes = [
                f"unit {unit['unit']} answered the scan with {unit['reply']} in {unit['response_ms']} ms",
                f"map: replace with the device's map; built in: {', '.join(builtin_names())}",
            ]
            plan.entries.append((notes, entry))
    return plan


def render(plan: Plan, agent: dict[str, Any], header: Sequence[str]) -> str:
    import yaml

    lines = [f"# {h}" for h in header]
    lines.append(yaml.safe_dump({"agent": agent}, sort_keys=False, allow_unicode=True, default_flow_style=None).strip())
    lines.append("probes:")
    for notes, entry in plan.entries:
        lines += [f"  # {n}" for n in notes]
        body = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)
        lines += ["  " + ln for ln in body.rstrip("\n").splitlines()]
    if not plan.entries:
        lines[-1] = "probes: []"
    return "\n".join(lines) + "\n"


def write_new(path: Path, text: str) -> None:
    """Create ``path`` (0600: it may carry credentials); refuse to replace anything."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


# ---------------------------------------------------------------------------------- command


def discover(
    addresses: Annotated[
        list[str] | None,
        typer.Argument(help="addresses to try for SNMP: 10.2.0.0/28, 10.2.0.1-20, 10.2.0.1-10.2.0.9, a,b,c"),
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            "--credentials",
            help="YAML file with snmp: a list of credentials tried in order (community_env, community_file, or v3 "
            "user/auth/priv as in an snmp entry); 0600 if it holds a secret itself",
        ),
    ] = None,
    community_env: Annotated[
        list[str] | None,
        typer.Option("--community-env", metavar="VAR", help="also try the v2c community in this environment variable"),
    ] = None,
    modbus: Annotated[
        list[str] | None,
        typer.Option(
            "--modbus", metavar="TARGET", help="a bus to scan for unit ids: tcp://host:502, rtu:///dev/ttyUSB0"
        ),
    ] = None,
    units: Annotated[str, typer.Option(help="Modbus unit ids to try on each bus")] = "1-247",
    port: Annotated[int, typer.Option(help="SNMP UDP port")] = 161,
    timeout: Annotated[str, typer.Option(help="wait for each SNMP or Modbus reply")] = "1s",
    retries: Annotated[int, typer.Option(help="SNMP re-sends after a timeout")] = 0,
    concurrency: Annotated[int, typer.Option(help=f"addresses asked at once (at most {MAX_CONCURRENCY})")] = 32,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="your agent config: its agent section is reused and its devices skipped"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="file to write (must not exist); default discovered-<time>.yaml here"),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="one JSON object per device or unit found, then the file")
    ] = False,
    lang: LangOpt = None,
) -> None:
    """Find SNMP devices and Modbus units and write config entries to a new file for review.
    Exit 0 something found, 1 nothing found, 2 usage or credentials error."""
    from probes.base import parse_duration
    from probes.configfile import ConfigError, read_yaml
    from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, console, lit, print_json_lines

    con = console()

    def usage(message: str) -> typer.Exit:
        con.print(f"[red]usage:[/red] {lit(message)}", soft_wrap=True)
        return typer.Exit(EXIT_USAGE)

    try:
        timeout_s = parse_duration(timeout)
        if not 0 < timeout_s <= 30:
            raise UsageError("--timeout: between 10ms and 30s")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency: 1 to {MAX_CONCURRENCY}")
        if not 1 <= port <= 65535 or not 0 <= retries <= 3:
            raise UsageError("--port 1-65535, --retries 0-3")
        addrs = parse_addresses(addresses or [])
        if not addrs and not modbus:
            raise UsageError("give addresses to scan for SNMP, or --modbus TARGET, or both")
        creds = load_credentials(credentials, community_env or []) if addrs else []
        existing: list[dict[str, Any]] = []
        agent: dict[str, Any] = {"id": "discovered", "site": "review"}
        if config is not None:
            doc = read_yaml(config)
            existing = [e for e in doc.get("probes") or [] if isinstance(e, dict)]
            if isinstance(doc.get("agent"), dict):
                agent = {k: doc["agent"][k] for k in ("id", "site") if k in doc["agent"]} or agent
        now = datetime.now(UTC)
        target = out or Path(f"discovered-{now:%Y%m%d-%H%M%S}.yaml")
        if target.exists():
            raise UsageError(f"{target} exists: discover writes only new files; give another --out")
    except (UsageError, ValueError) as e:
        raise usage(str(e)) from None
    except ConfigError as e:
        con.print(f"[red]{lit(t('config_error'))}[/red]:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None

    async def main() -> tuple[list[SnmpFound], list[tuple[str, list[dict[str, Any]], str]]]:
        snmp_found, modbus_found = await asyncio.gather(
            find_snmp(addrs, port, creds, timeout_s, retries, concurrency), find_modbus(modbus or [], units, timeout_s)
        )
        return snmp_found, modbus_found

    import logging

    logging.basicConfig(level=logging.CRITICAL)
    try:
        snmp_found, modbus_found = asyncio.run(main())
    except UsageError as e:
        raise usage(str(e)) from None
    plan = plan_entries(snmp_found, modbus_found, existing)
    header = [
        f"netwatch-agent discover, {now:%Y-%m-%d %H:%M} UTC: {len(snmp_found)} SNMP devices, "
        f"{sum(len(f) for _, f, _ in modbus_found)} Modbus units; {len(plan.entries)} new entries.",
        "Review each entry, then copy the ones you keep into the probes: list of your agent config.",
        "The agent: section is there so that `netwatch-agent check` can read this file on its own.",
    ]
    if plan.entries:
        write_new(target, render(plan, agent, header))
    if json:
        rows: list[dict[str, Any]] = [
            {
                "kind": "snmp",
                "address": f.address,
                "port": f.port,
                "sys_object_id": f.sys_object_id,
                "sys_name": f.sys_name,
                "sys_descr": f.sys_descr,
                "profiles": f.profiles,
                "credential": f.credential.label,
                "response_ms": f.response_ms,
            }
            for f in snmp_found
        ]
        for url, found, unreachable in modbus_found:
            rows += [{"kind": "modbus", **u} for u in found]
            if unreachable:
                rows.append({"kind": "modbus", "target": url, "error": "connect_failed", "detail": unreachable})
        rows.append({"kind": "file", "path": str(target) if plan.entries else None, "entries": len(plan.entries)})
        print_json_lines(rows)
    else:
        _show(snmp_found, modbus_found, len(addrs), addrs)
        if plan.entries:
            con.print(lit(t("disc_written", n=len(plan.entries), path=target)), soft_wrap=True)
    if not snmp_found and not any(f for _, f, _ in modbus_found):
        if not json:
            con.print(f"[yellow]{lit(t('disc_nothing'))}[/yellow]")
        raise typer.Exit(EXIT_PROBLEM)
    raise typer.Exit(EXIT_OK)


def _show(
    snmp: Sequence[SnmpFound], modbus: Sequence[tuple[str, list[dict[str, Any]], str]], tried: int, addrs: list[str]
) -> None:
    from rich.table import Table

    from probes.output import console, lit

    con = console()
    if tried:
        span = addrs[0] if tried == 1 else f"{addrs[0]} … {addrs[-1]}"
        table = Table(title=lit(t("disc_snmp_found", n=len(snmp), tried=tried)) + f" ({lit(span)})")
        for col in ("col_address", "col_name", "col_profiles", "col_cred", "col_descr"):
            table.add_column(t(col), overflow="fold")
        for f in snmp:
            table.add_row(
                lit(f.address if f.port == 161 else f"{f.address}:{f.port}"),
                lit(f.sys_name),
                lit(", ".join(f.profiles) or "standard"),
                lit(f.credential.label),
                lit(_comment(f.sys_descr)[:60]),
            )
        con.print(table)
    for url, found, unreachable in modbus:
        if found:
            con.print(lit(t("disc_modbus_found", target=url, units=", ".join(str(u["unit"]) for u in found))))
        else:
            con.print(f"[yellow]{lit(t('disc_modbus_none', target=url))}[/yellow] {lit(unreachable)}")
