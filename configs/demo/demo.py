"""The netwatch demo: a portal stand-in, the collector (embedded broker, SQLite) and a
city -> county -> township tree of agents, all on loopback. Ctrl-C stops everything it started."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VAR = ROOT / "var" / "demo"
PORTAL_PORT, BROKER_PORT, API_PORT, MODBUS_PORT, SNMP_PORT = 18088, 18830, 18080, 18502, 16100
con = Console(highlight=False)


class Portal(BaseHTTPRequestHandler):
    """A county government's portal: its date and visit counter change, its content does not."""

    visits = 0
    defaced = False

    def do_GET(self) -> None:  # noqa: N802
        Portal.visits += 1
        body = (
            "<h1>网站已被入侵 — hacked</h1>"
            if Portal.defaced
            else "<h1>东区人民政府</h1><p>政务公开 · 办事服务 · 互动交流</p>"
        )
        page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>东区人民政府门户网站</title></head><body>{body}"
            f"<p>{datetime.now():%Y-%m-%d %H:%M:%S} · 访问量 {Portal.visits}</p></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def approve_portal_baseline() -> None:
    """What an operator does once: fetch the portal, look at it, approve its fingerprint."""
    from probes.http.config import HttpConfig
    from probes.http.probe import HttpProbe

    cfg = HttpConfig.model_validate(
        {
            "url": f"http://127.0.0.1:{PORTAL_PORT}/",
            "fingerprint": {"enabled": True, "ignore": [r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", r"访问量 \d+"]},
        }
    )
    samples = asyncio.run(HttpProbe(cfg, name="portal", timeout_s=5).collect())
    sha = next(s.fields["content_sha256"] for s in samples if "content_sha256" in s.fields)
    (VAR / "portal.baseline").write_text(f"{sha}\n", encoding="utf-8")


_TOKEN: list[str] = []


def demo_login() -> str:
    """An operator account for the person watching (a fresh password each run: there are no default
    passwords), and an API token for this script's own polling. Returns the password."""
    import secrets

    from collector import config as collector_config
    from collector.users import LocalAdmin, UserDB

    cfg = collector_config.load(HERE / "collector.yaml")
    db = UserDB(cfg.data_dir / "users.db")
    me = LocalAdmin("demo")
    password = "Nw-" + secrets.token_urlsafe(12)
    while "demo" in password.lower():  # the policy refuses a password containing the user name
        password = "Nw-" + secrets.token_urlsafe(12)
    try:
        if "demo" in {u.name for u in db.users()}:
            db.set_password(me, "demo", password, must_change=False)
        else:
            db.add_user(me, "demo", "operator", password)
            db.set_password(me, "demo", password, must_change=False)
        _TOKEN[:] = [db.create_token(me, "demo", f"demo-{secrets.token_hex(4)}", 86400).secret]
    finally:
        db.close()
    return password


def get_json(path: str) -> object:
    headers = {"Authorization": f"Bearer {_TOKEN[0]}"} if _TOKEN else {}
    req = urllib.request.Request(f"http://127.0.0.1:{API_PORT}{path}", headers=headers)
    with urllib.request.urlopen(req, timeout=2) as r:
        return orjson.loads(r.read())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--duration", type=float, default=0, help="stop by itself after this many seconds (0: until Ctrl-C)"
    )
    ap.add_argument(
        "--deface-after",
        type=float,
        default=0,
        help="deface the portal after this many seconds (shows tamper detection)",
    )
    args = ap.parse_args()

    busy = [p for p in (PORTAL_PORT, BROKER_PORT, API_PORT, MODBUS_PORT) if not port_free(p)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", SNMP_PORT))
        except OSError:
            busy.append(SNMP_PORT)
    if busy:
        con.print(f"[red]ports in use on 127.0.0.1: {busy}[/red] — is another demo running? / 端口被占用")
        return 3
    # Each demo starts from nothing, so what it shows is what this run did.
    if VAR.exists():
        shutil.rmtree(VAR)
    (VAR / "logs").mkdir(parents=True)

    portal = ThreadingHTTPServer(("127.0.0.1", PORTAL_PORT), Portal)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    approve_portal_baseline()
    # A township equipment room: a T/H sensor whose temperature drifts past 27 °C and back
    # every 3 minutes, and a door contact (configs/demo/sim_modbus.py).
    sys.path.insert(0, str(HERE))
    import sim_modbus

    password = demo_login()  # before anything starts, so a failure here leaves nothing running
    room = sim_modbus.start(MODBUS_PORT, period_s=180)
    # Switches and a UPS: snmpsim serving recordings of real devices (configs/demo/sim_snmp.py).
    # Its index of the recordings is kept outside var/demo, so only the first demo builds it.
    import sim_snmp

    con.print("starting the simulated switches and UPS (the first time indexes the recordings) …")
    devices = sim_snmp.start(ROOT / "var" / "demo-snmp", SNMP_PORT)

    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(name: str, argv: list[str]) -> None:
        log = open(VAR / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        procs.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)))

    try:
        start("collector", [sys.executable, "-m", "collector.cli", "run", "--config", str(HERE / "collector.yaml")])
        deadline = time.monotonic() + 20
        while True:
            try:
                if get_json("/health"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or procs[0][1].poll() is not None:
                con.print(f"[red]the collector did not start[/red]; see {VAR / 'logs' / 'collector.log'}")
                return 3
            time.sleep(0.3)
        agents = sorted((HERE / "agents").glob("*.yaml"))
        for cfg in agents:
            start(cfg.stem, [sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)])

        rel = lambda p: os.path.relpath(p, Path.cwd())  # noqa: E731
        con.rule("[bold]netwatch demo / 演示[/bold]")
        con.print(f"status page 状态页      http://127.0.0.1:{API_PORT}/")
        con.print(f"log in 登录             demo / {password}   (operator; a new password each run 每次运行新密码)")
        con.print(
            f"agents 采集节点         .venv/bin/netwatch-collector agents --config {rel(HERE / 'collector.yaml')}"
        )
        con.print(
            f"stored samples 样本     .venv/bin/netwatch-collector query icmp --since 5m --config {rel(HERE / 'collector.yaml')}"
        )
        con.print(f"one node, once 单节点   .venv/bin/netwatch-agent once --config {rel(agents[-1])}")
        con.print(f"logs 日志               {rel(VAR / 'logs')}/")
        con.print("Ctrl-C stops everything / 按 Ctrl-C 停止")
        started = time.monotonic()
        while not stop.wait(10 if args.duration == 0 or args.duration > 10 else 1):
            elapsed = time.monotonic() - started
            if args.deface_after and elapsed >= args.deface_after and not Portal.defaced:
                Portal.defaced = True
                con.print("[yellow]the portal has been defaced / 门户网站被篡改[/yellow]")
            for name, p in procs:
                if p.poll() is not None:
                    con.print(f"[red]{name} exited with {p.returncode}[/red]; see {VAR / 'logs' / (name + '.log')}")
                    return 3
            try:
                rows = get_json("/api/agents")
                st = get_json("/api/stats")
            except OSError:
                continue
            assert isinstance(rows, list) and isinstance(st, dict)
            online = sum(1 for r in rows if r["status"] == "online")
            t = Table(box=None, show_header=False)
            t.add_row(
                f"{datetime.now():%H:%M:%S}",
                f"agents online {online}/{len(agents)} 在线",
                f"samples stored {st.get('stored_samples', 0)} 已存样本",
                f"rejected {st.get('rejected_total', 0)} 拒收",
            )
            con.print(t)
            if args.duration and elapsed >= args.duration:
                break
    finally:
        con.print("stopping / 正在停止 …")
        for _name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                con.print(f"[yellow]{name} did not stop in 20 s; killing pid {p.pid}[/yellow]")
                p.kill()
                p.wait()
        portal.shutdown()
        portal.server_close()
        room.stop()
        devices.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
