"""``netwatch-collector audit``: list, verify and export the audit log (``<data_dir>/audit.db``).
Read-only, with the public key only: it runs beside a live collector and an auditor needs no
access to the centre's private key.

Exit codes: 0 fine (``--verify``: intact); 1 nothing found, no log, or (``--verify``) the log is
not intact; 2 bad config or usage; 3 runtime failure.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from collector import config as collector_config
from collector.audit import AuditReader, VerifyReport
from probes.base import parse_duration
from probes.configfile import ConfigError
from probes.files import private_file
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, EXIT_USAGE, console, lit, print_json_lines
from protocol.signing import KeyFileError, PublicKey, SigningKey

audit_app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    help="The audit log: who did what, from where, when, with what result; --verify checks it was not altered.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

HEADERS = (
    ("seq", "序号"),
    ("time", "时间"),
    ("actor", "操作人"),
    ("source", "来源"),
    ("action", "操作"),
    ("target", "对象"),
    ("result", "结果"),
    ("detail", "详情"),
)


def audit_paths(config: Path | None) -> tuple[Path, Path]:
    """``(audit.db, centre.key)`` under the collector's data_dir."""
    try:
        cfg = collector_config.load(config)
    except ConfigError as e:
        console().print(f"[red]config error[/red] / 配置错误:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    return cfg.data_dir / "audit.db", cfg.data_dir / "keys" / "centre.key"


def _open(path: Path) -> AuditReader:
    if not path.exists():
        console().print(f"no audit log at {lit(path)}: nothing recorded yet / 尚无审计日志")
        raise typer.Exit(EXIT_PROBLEM)
    try:
        return AuditReader(path)
    except sqlite3.Error as e:
        console().print(f"[red]cannot open {lit(path)}[/red]: {lit(e)}")
        raise typer.Exit(EXIT_RUNTIME) from None


def _trusted_keys(centre_key: Path, extra: list[Path]) -> list[PublicKey]:
    """The centre's public key (``centre.key.pub``; the private key only when the .pub is gone)
    and any ``--key`` files (keys used before a rotation)."""
    keys: list[PublicKey] = []
    pub = centre_key.with_name(centre_key.name + ".pub")
    try:
        if pub.exists():
            keys.append(PublicKey.load(pub))
        elif centre_key.exists():
            keys.append(SigningKey.load(centre_key).public)
        else:
            console().print(
                f"[yellow]no public key at {lit(pub)}[/yellow]: checkpoints cannot be checked — pass --key FILE"
                f" / 找不到公钥，请用 --key 指定"
            )
        # the centre's earlier keys, kept by `keys rotate --finish`: their checkpoints stay valid
        keys += [PublicKey.load(p) for p in sorted(centre_key.parent.glob(centre_key.name + ".retired-*.pub"))]
        keys += [PublicKey.load(p) for p in extra]
    except KeyFileError as e:
        console().print(f"[red]key error[/red] / 密钥错误: {lit(e)}")
        raise typer.Exit(EXIT_USAGE) from None
    return keys


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _print_report(report: VerifyReport) -> None:
    con = console()
    span = f"{report.first_seq}–{report.last_seq}" if report.records else "—"
    if report.ok:
        con.print(
            f"[green]audit log intact[/green]: {report.records} records (seq {span}), {report.checkpoints}"
            f" checkpoints, signed up to seq {report.signed_up_to}\n"
            f"[green]审计日志完整[/green]：{report.records} 条记录（序号 {span}），{report.checkpoints} 个检查点，"
            f"已签名至序号 {report.signed_up_to}"
        )
        if report.unsigned_tail:
            con.print(
                f"{report.unsigned_tail} records after the last checkpoint are not signed yet (the collector signs"
                f" within a minute and on exit) / 最后 {report.unsigned_tail} 条记录尚未签名（采集器一分钟内或退出时签名）"
            )
        return
    con.print(
        f"[red]audit log NOT intact[/red]: {len(report.problems) + report.more_problems} problems in"
        f" {report.records} records (seq {span}), {report.checkpoints} checkpoints\n"
        f"[red]审计日志不完整[/red]：发现 {len(report.problems) + report.more_problems} 个问题"
    )
    for p in report.problems:
        con.print(f"  [red]{lit(p.kind)}[/red]: {lit(p.message)}\n      {lit(p.message_zh)}", soft_wrap=True)
    if report.more_problems:
        con.print(f"  … and {report.more_problems} more / 另有 {report.more_problems} 个")


@audit_app.callback()
def audit(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="collector config (YAML): where audit.db lives")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="how far back, e.g. 1d, 12h (list: 1d; export: everything)")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="only this user or agent")] = None,
    action: Annotated[str | None, typer.Option("--action", help="only this action, e.g. login_failed")] = None,
    json: Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="check the hash chain and signed checkpoints")] = False,
    export: Annotated[
        str | None, typer.Option("--export", metavar="FILE|-", help="write records as JSON lines (0600 file)")
    ] = None,
    key: Annotated[
        list[Path] | None, typer.Option("--key", help="another trusted public key file (.pub), e.g. before a rotation")
    ] = None,
) -> None:
    """List audit records (the default), or --verify, or --export."""
    if verify and export is not None:
        console().print("[red]--verify and --export are separate runs[/red] / 不能同时使用")
        raise typer.Exit(EXIT_USAGE)
    since_ns: int | None = None
    if since is not None or (not verify and export is None):
        try:
            since_ns = time.time_ns() - int(parse_duration(since or "1d") * 1e9)
        except ValueError as e:
            console().print(f"[red]bad --since[/red]: {lit(e)}")
            raise typer.Exit(EXIT_USAGE) from None
    db_path, key_path = audit_paths(config)
    keys = _trusted_keys(key_path, key or []) if verify else []
    log = _open(db_path)
    try:
        if verify:
            report = log.verify(keys)
            if json:
                print_json_lines([report.to_dict()])
            else:
                _print_report(report)
            raise typer.Exit(EXIT_OK if report.ok else EXIT_PROBLEM)
        if export is not None:
            rows = (
                d
                for d in log.export(since_ns)
                if (actor is None or d["actor"] == actor) and (action is None or d["action"] == action)
            )
            if export == "-":
                print_json_lines(rows)
            else:
                n = 0
                with private_file(export, sqlite=False).open("wb") as f:
                    for d in rows:
                        f.write(orjson.dumps(d) + b"\n")
                        n += 1
                console().print(f"exported {n} records to {lit(export)} / 已导出 {n} 条记录")
            raise typer.Exit(EXIT_OK)
        records = log.query(since_ns, actor=actor, action=action)
    except sqlite3.Error as e:
        console().print(f"[red]cannot read {lit(db_path)}[/red]: {lit(e)}")
        raise typer.Exit(EXIT_RUNTIME) from None
    except OSError as e:
        console().print(f"[red]cannot write {lit(export)}[/red]: {lit(e)}")
        raise typer.Exit(EXIT_RUNTIME) from None
    finally:
        log.close()
    if json:
        print_json_lines(r.to_dict() for r in records)
    elif records:
        table = Table(title="audit log / 审计日志")
        for en, zh in HEADERS:
            table.add_column(f"{en} / {zh}", overflow="fold", no_wrap=en in ("seq", "time"))
        # actors, targets and details come from users and agents: never markup, never terminal codes
        for r in records:
            colour = "green" if r.result == "ok" else "red"
            table.add_row(
                str(r.seq),
                _when(r.time_ns),
                lit(r.actor),
                lit(r.source),
                lit(r.action),
                lit(r.target),
                f"[{colour}]{lit(r.result)}[/{colour}]",
                lit(orjson.dumps(r.detail).decode()) if r.detail else "",
            )
        console().print(table)
    else:
        typer.echo("no audit records / 无审计记录")
    raise typer.Exit(EXIT_OK if records else EXIT_PROBLEM)


if __name__ == "__main__":
    audit_app()
