"""``netwatch-agent run`` without the CLI framework (issue 12, a small agent): the entry point hands
``run`` to ``agent.daemon`` (argparse), so the process a node's service keeps running never loads
typer or click; ``run --help`` and the other commands still get the typer app."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import typer

from agent import daemon
from agent.cli_app import app
from agent.spool import read_stats

ROOT = Path(__file__).resolve().parents[2]


def test_run_takes_the_same_options_as_the_typer_command() -> None:
    cmd = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    typer_opts = {o for p in cmd.params for o in p.opts}
    argparse_opts = {o for a in daemon.parser()._actions for o in a.option_strings} - {"-h", "--help"}
    assert typer_opts == argparse_opts == {"--config", "-c", "--log-level", "--tee"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_running_agent_never_imports_typer_or_click(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # the tcp probe's target
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "agent: {id: a1, site: s1}\n"
        f"mqtt: {{host: 127.0.0.1, port: {_closed_port()}}}\n"  # no broker: batches stay in the spool
        f"spool: {{path: {tmp_path / 'spool.db'}}}\n"
        "publish: {batch_interval: 200ms}\n"
        f"probes:\n  - {{type: tcp, name: t, host: 127.0.0.1, port: {listener.getsockname()[1]}, interval: 200ms}}\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "agent.cli", "run", "--config", str(cfg), "--log-level", "warning"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None:
            if (tmp_path / "spool.db").exists() and read_stats(tmp_path / "spool.db").depth >= 2:
                break
            time.sleep(0.1)
        assert read_stats(tmp_path / "spool.db").depth >= 2  # it ran: probed and spooled
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        listener.close()
    assert p.returncode == 0, err[-2000:]
    imported = {line.split("|")[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    assert "agent.runner" in imported and "agent.daemon" in imported
    for absent in ("typer", "click", "typer._click", "rich", "agent.cli_app", "shellingham"):
        assert absent not in imported, f"{absent} loaded by `netwatch-agent run`"


def test_run_with_a_bad_config_names_the_key_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("agent: {id: a1}\n")
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "agent.site" in r.stderr and "配置错误" in r.stderr and str(cfg) in r.stderr


def test_run_help_and_other_commands_go_to_the_typer_app() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert r.returncode == 0 and "--tee" in r.stdout and "Usage: netwatch-agent run" in r.stdout
    r = subprocess.run([sys.executable, "-m", "agent.cli", "run"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--config" in r.stderr  # usage error, as the CLI's exit codes say
