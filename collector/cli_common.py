"""What every ``netwatch-collector`` command shares: the --config and --json options, and loading
the config with its errors shown as file, key and fix (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from collector import config as collector_config
from probes.configfile import ConfigError
from probes.output import EXIT_USAGE, console, lit

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="collector config (YAML); default: embedded broker + SQLite in var/collector",
        metavar="<path>",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")]


def load_config(path: Path | None) -> collector_config.CollectorConfig:
    try:
        return collector_config.load(path)
    except ConfigError as e:
        console().print(f"[red]config error[/red] / 配置错误:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
