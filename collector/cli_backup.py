"""``netwatch-collector backup FILE`` and ``restore FILE``: the centre's state, keys and defining
files in one archive, and back, with the audit log verified (collector/backup.py)."""

from __future__ import annotations

import getpass
import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from collector.audit import AuditReader
from collector.backup import BackupError, backup, restore
from collector.cli_common import ConfigOpt, load_config
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, EXIT_USAGE, console, lit
from protocol.signing import KeyFileError, PublicKey


def _actor() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except OSError:
        return "cli"


def backup_cmd(
    file: Annotated[Path, typer.Argument(help="the archive to write (.tar.gz, created 0600)")],
    config: ConfigOpt = None,
) -> None:
    """Back up the centre: state, alerts, audit log, users, keys, this config, the topology, the
    rules and the desired agent configs (not the metrics). Safe while the collector runs."""
    cfg = load_config(config)
    from collector.control import open_audit

    try:
        m = backup(cfg, file)
    except (OSError, sqlite3.Error) as e:
        console().print(f"[red]backup failed[/red] / 备份失败: {lit(e)}")
        raise typer.Exit(EXIT_RUNTIME) from None
    audit = open_audit(cfg)
    try:
        audit.record(_actor(), "backup", str(file), "ok", "cli", {"files": len(m.files)})
    finally:
        audit.close()
    console().print(f"backed up {len(m.files)} files to {lit(file)} / 已备份 {len(m.files)} 个文件")


def restore_cmd(
    file: Annotated[Path, typer.Argument(help="an archive made by `netwatch-collector backup`")],
    etc: Annotated[
        Path | None,
        typer.Option(help="where the config files from the backup go, to review (default: DATA_DIR/restored-etc)"),
    ] = None,
    force: Annotated[bool, typer.Option(help="replace the databases in data_dir (stop the collector first)")] = False,
    config: ConfigOpt = None,
) -> None:
    """Restore the centre's databases and keys into data_dir (and its config files into --etc, to
    review), then verify the restored audit log. Exit 0 only when the log is intact."""
    cfg = load_config(config)
    try:
        r = restore(file, cfg.data_dir, etc if etc is not None else cfg.data_dir / "restored-etc", force=force)
    except BackupError as e:
        console().print(f"[red]not restored[/red] / 未恢复: {lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    console().print(f"restored {r.files} files (backup of {lit(r.manifest.collector)}) / 已恢复 {r.files} 个文件")
    audit_db = cfg.data_dir / "audit.db"
    if not audit_db.exists():
        console().print("no audit log in the backup / 备份中没有审计日志")
        raise typer.Exit(EXIT_OK)
    keys_dir = cfg.data_dir / "keys"
    try:
        keys = [PublicKey.load(p) for p in sorted(keys_dir.glob("*.pub"))]
    except KeyFileError as e:
        console().print(f"[red]{lit(e)}[/red]")
        raise typer.Exit(EXIT_PROBLEM) from None
    reader = AuditReader(audit_db)
    try:
        report = reader.verify(keys)
    finally:
        reader.close()
    if not report.ok:
        console().print(
            f"[red]the restored audit log is NOT intact[/red] / 恢复的审计日志不完整: {len(report.problems)} problems"
        )
        for p in report.problems[:10]:
            console().print(f"  {lit(p.message)}")
        raise typer.Exit(EXIT_PROBLEM)
    console().print(f"audit log verified: {report.records} records, chain and signatures intact / 审计日志校验通过")
    from collector.control import open_audit

    audit = open_audit(cfg)
    try:
        audit.record(_actor(), "restore", str(file), "ok", "cli", {"files": r.files, "audit_records": report.records})
    finally:
        audit.close()
