"""``netwatch-collector report --month 2026-11``: the monthly availability report (collector/report.py)
as HTML (printable, bilingual), CSV (UTF-8 with BOM, for Excel) or JSON; reads state.db and
alerts.db read-only, so it runs beside a live collector.

Exit codes: 0 written; 1 written, but nothing was observed in the month; 2 bad month, format or
config; 3 the databases could not be read or the file not written.
"""

from __future__ import annotations

import sqlite3
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from collector.cli_common import ConfigOpt, JsonOpt, load_config
from probes.configfile import ConfigError
from probes.files import private_file
from probes.output import EXIT_OK, EXIT_PROBLEM, EXIT_RUNTIME, EXIT_USAGE, lit


def console() -> Console:
    # the report itself may go to stdout: what is said about it goes to stderr
    return Console(stderr=True, highlight=False)


class Format(StrEnum):
    html = "html"
    csv = "csv"


def report_cmd(
    month: Annotated[str, typer.Option("--month", "-m", help="the month, YYYY-MM (e.g. 2026-11)", metavar="YYYY-MM")],
    config: ConfigOpt = None,
    format: Annotated[Format, typer.Option("--format", "-f", help="html (printable) or csv (Excel)")] = Format.html,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write to this file (0600) instead of stdout", metavar="<path>")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """The monthly availability report / 月度网络运行情况通报: per site, uplink and agent uptime,
    outages, downtime and mean time to recover, worst devices; counties and townships ranked.
    Months follow collector.timezone (default Asia/Shanghai)."""
    from collector import report as rep

    cfg = load_config(config)
    try:
        r = rep.build(cfg, month)
    except rep.ReportError as e:
        console().print(f"[red]--month[/red]: {lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except ConfigError as e:
        console().print(f"[red]config error[/red] / 配置错误:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except sqlite3.Error as e:
        console().print(f"[red]cannot read the collector's databases in {lit(cfg.data_dir)}[/red]: {lit(e)}")
        raise typer.Exit(EXIT_RUNTIME) from None
    if json:
        body = orjson.dumps(rep.to_json(r)) + b"\n"
    elif format is Format.csv:
        body = rep.to_csv(r)
    else:
        body = rep.to_html(r).encode("utf-8")
    if out is None:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    else:
        try:
            private_file(out, sqlite=False)
            out.write_bytes(body)
        except OSError as e:
            console().print(f"[red]cannot write {lit(out)}[/red]: {lit(e)} — check the folder exists and is writable")
            raise typer.Exit(EXIT_RUNTIME) from None
        console().print(f"wrote {lit(out)} ({len(body)} bytes) / 已写入", soft_wrap=True)
    observed = any(s.uplink.observed_ns or s.agents.observed_ns or s.devices.observed_ns for s in r.sites)
    if not observed:
        console().print(f"nothing was observed in {r.month} / {r.month} 无观测记录", soft_wrap=True)
    raise typer.Exit(EXIT_OK if observed else EXIT_PROBLEM)
