"""What ``netwatch-agent run`` loads (issue 12, a small agent): measured in a fresh interpreter that
does what ``run`` does before its loop — import the CLI and the runner, load a config, build every
probe — and lists the heavy modules present. Each assertion names a library the agent used to load
for nothing; deleting the lazy import it guards makes it fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CENSUS = """
import json, sys
import agent.cli, agent.runner
from agent.config import load
from agent.scheduler import Scheduler
cfg = load(sys.argv[1])
Scheduler(cfg.probes, lambda s: None, concurrency=4, tags={}, identity_tags={})
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(tmp_path: Path, probes: str) -> set[str]:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "agent: {id: a1, site: s1}\nmqtt: {host: 127.0.0.1, port: 1883}\n"
        f"spool: {{path: {tmp_path}/spool.db}}\nprobes:\n{probes}"
    )
    r = subprocess.run([sys.executable, "-c", CENSUS, str(cfg)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


def test_run_path_without_modbus_snmp_v3_or_control(tmp_path: Path) -> None:
    mods = _loaded(
        tmp_path,
        "  - {type: icmp, name: up, host: 127.0.0.1}\n"
        "  - {type: http, name: web, url: 'https://127.0.0.1:9/'}\n"
        "  - {type: snmp, name: sw, host: 127.0.0.1, version: 2c, community: public}\n",
    )
    assert "probes.http.probe" in mods  # the census did build the probes
    for absent in (
        "httpx",  # replaced by the http probe's own client (test_http_poll_without_httpx polls too)
        "pymodbus",  # only with modbus entries (used to come in with the modbus CLI)
        "pysnmp",  # only SNMPv3 and traps; v2c has its own BER path
        "rich",  # only when a table is printed
        "typer",  # `run` is parsed by agent.daemon (argparse); the typer app is for the other commands
        "click",  # used to come with httpx's CLI (the one typer vendors is typer._click)
        "pygments",
        "cryptography",  # control's signatures and x509 expiry parsing
        "importlib.metadata",  # pydantic's plugin discovery
        "agent.cli_modbus",
        "agent.cli_snmp",
        "agent.control",
    ):
        assert absent not in mods, f"{absent} is loaded by the run path"


POLL = """
import asyncio, json, sys
import agent.cli, agent.runner
from agent.config import load
from agent.scheduler import Scheduler
cfg = load(sys.argv[1])
sched = Scheduler(cfg.probes, lambda s: None, concurrency=4, tags={}, identity_tags={})
samples = asyncio.run(sched.probes[0].collect())
print(json.dumps({"status": samples[-1].fields, "modules": sorted(sys.modules)}))
"""


def test_http_poll_without_httpx(tmp_path: Path) -> None:
    # httpx and what it pulls in at the first request (anyio, h11, httpcore) took about 7 MB of the
    # 50 MB aim; the probe's own client (probes/http/client.py) does the job. A real poll, so the
    # lazily imported parts would show.
    import http.server
    import threading

    body = b"<html>county portal</html>"

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(
            "agent: {id: a1, site: s1}\nmqtt: {host: 127.0.0.1, port: 1883}\n"
            f"spool: {{path: {tmp_path}/spool.db}}\nprobes:\n"
            f"  - {{type: http, name: web, url: 'http://127.0.0.1:{srv.server_address[1]}/'}}\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", POLL, str(cfg)], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"]["status"] == "ok", out["status"]  # the page was fetched
    for absent in ("httpx", "anyio", "h11", "httpcore", "sniffio", "certifi"):
        assert absent not in out["modules"], f"{absent} is loaded by an http poll"


def test_modbus_entries_bring_pymodbus(tmp_path: Path) -> None:
    mods = _loaded(tmp_path, "  - {type: modbus, name: th, target: 'tcp://127.0.0.1:502', map: renke_rs_ws_n01}\n")
    assert "pymodbus" in mods  # loaded when needed, so the test above is not vacuous
    assert "agent.cli_modbus" not in mods


def test_sub_command_groups_load_on_use() -> None:
    for group, command in (("modbus", "scan"), ("snmp", "traps")):
        r = subprocess.run(
            [sys.executable, "-m", "agent.cli", group, "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert r.returncode == 0, r.stderr
        assert command in r.stdout
    top = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert "modbus" in top.stdout and "snmp" in top.stdout
