"""``netwatch-agent run``: the command a node's service runs all day, parsed with argparse so the
running agent never loads the CLI framework (typer and its click: about 2.7 MiB RSS of a 50 MiB
aim, bench/agent). ``agent.cli`` sends ``run`` here; ``run --help`` and every other command go to
the typer app in ``agent.cli_app``, whose ``run`` takes the same options and calls :func:`run`.

Exit codes as the CLI's: 0 stopped cleanly; 2 bad config or usage; 3 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from probes.output import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE

if TYPE_CHECKING:
    from agent.config import AgentConfig

log = logging.getLogger("netwatch.agent")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="netwatch-agent run", description="Run the agent until stopped (SIGINT/SIGTERM).")
    ap.add_argument("--config", "-c", type=Path, required=True, help="agent config file (YAML)")
    ap.add_argument("--log-level", default="info", help="debug, info, warning, error")
    ap.add_argument(
        "--tee", type=Path, help="also append every sample spooled to this file (JSON lines, with the batch's seq)"
    )
    return ap


def run(cfg: AgentConfig, log_level: str, tee: Path | None) -> int:
    """Run the agent on ``cfg`` until SIGINT/SIGTERM; the exit code."""
    os.umask(0o077)  # whatever the service manager gave: the spool and records are ours alone
    setup_logging(log_level)
    from agent.runner import Agent  # imports paho: only when running

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if any(e.kind == "icmp" for e in cfg.probes):
            from probes.icmp.probe import detect_mode

            log.info("ICMP mode: %s", detect_mode())
        await Agent(cfg, tee=tee).run(stop)

    try:
        asyncio.run(main())
    except OSError as e:
        log.error("agent stopped: %s", e)
        return EXIT_RUNTIME
    return EXIT_OK


def main(argv: list[str]) -> int:
    """``netwatch-agent run ARGV``."""
    args = parser().parse_args(argv)  # a usage error exits 2, as the CLI's do
    from agent.config import load
    from probes.configfile import ConfigError

    try:
        cfg = load(args.config)
    except ConfigError as e:
        from agent.messages import t  # the rare path may load the CLI's message table

        print(f"{t('config_error')}:\n{e}", file=sys.stderr)
        return EXIT_USAGE
    return run(cfg, args.log_level, args.tee)
