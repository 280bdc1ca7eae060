"""The netwatch demo: a portal stand-in, the collector (embedded broker, SQLite, alerting with the
default rules) and a city -> county -> township tree of agents, all on loopback. Two things happen
on a timeline printed at the start: the city machine room's air conditioning fails for a while
(the room alert fires and resolves), and East County's uplink is cut for a minute (one cut-off
notice for the county, not one per township, and its resolution). The collector's notices go to
a stand-in for a WeCom group robot that prints them here, in Chinese and English.
Ctrl-C stops everything it started."""

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
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import yaml
from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VAR = ROOT / "var" / "demo"
PORTAL_PORT, BROKER_PORT, API_PORT, MODBUS_PORT, SNMP_PORT = 18088, 18830, 18080, 18502, 16100
#: the notice sink (a WeCom robot stand-in), and East County's uplink to the city's broker
SINK_PORT, UPLINK_PORT = 18089, 18831
TCP_PORTS = (PORTAL_PORT, BROKER_PORT, API_PORT, MODBUS_PORT, SINK_PORT, UPLINK_PORT)
UDP_PORTS = (SNMP_PORT,)
#: the agents behind East County's uplink (their configs reach the broker through UPLINK_PORT)
CUT_AGENTS = ("county-east", "township-east-1", "township-east-2")
ROOM_RULE = "room_temperature_high"
#: --fast divides every rule's for / keep_firing_for / window by this (in a copy of the rules)
FAST = 4
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


def clock(t: float) -> str:
    """Seconds since the demo started as ``t+1m05s``."""
    t = max(0.0, t)
    m, s = divmod(round(t), 60)
    return f"t+{m}m{s:02d}s" if m else f"t+{s}s"


class NoticeSink(BaseHTTPRequestHandler):
    """A stand-in for a WeCom group robot (``POST /cgi-bin/webhook/send?key=...``, markdown
    messages): the collector's notices are printed in the demo's terminal and appended to
    ``var/demo/notices.jsonl``. The key says the language (the collector config routes every alert
    to ``demo-zh`` and ``demo-en``). It answers like the robot: ``{"errcode": 0}``, or an error code."""

    started = time.monotonic()
    log_path = VAR / "notices.jsonl"
    lock = threading.Lock()
    received = 0
    refused = 0
    MAX_BODY = 64 * 1024
    LANGS = {"demo-zh": "zh", "demo-en": "en"}

    def _reply(self, status: int, errcode: int, errmsg: str) -> None:
        if errcode:
            with NoticeSink.lock:
                NoticeSink.refused += 1
        body = orjson.dumps({"errcode": errcode, "errmsg": errmsg})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        lang = self.LANGS.get(parse_qs(url.query).get("key", [""])[0])
        if url.path != "/cgi-bin/webhook/send" or lang is None:
            return self._reply(404, 93000, "invalid webhook url")
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            length = -1
        if not 0 < length <= self.MAX_BODY:
            if length > 0:  # read a little of it, so the answer is not lost to a reset
                self.rfile.read(min(length, 16 * self.MAX_BODY))
            return self._reply(413, 40058, f"body must be 1 to {self.MAX_BODY} bytes")
        try:
            doc = orjson.loads(self.rfile.read(length))
            content = doc["markdown"]["content"] if doc.get("msgtype") == "markdown" else None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            content = None
        if not isinstance(content, str) or not content:
            return self._reply(400, 40008, "invalid message: expected msgtype markdown with content")
        t = time.monotonic() - NoticeSink.started
        with NoticeSink.lock:
            NoticeSink.received += 1
            with open(NoticeSink.log_path, "ab") as f:
                f.write(
                    orjson.dumps({"t": round(t, 1), "time": datetime.now().isoformat(), "lang": lang, "text": content})
                )
                f.write(b"\n")
            title = f"{clock(t)} · notice 通知 · {'中文' if lang == 'zh' else 'English'}"
            con.print(Panel(Markdown(content), title=title, title_align="left", border_style="magenta", expand=False))
        self._reply(200, 0, "ok")

    def log_message(self, *args: object) -> None:
        pass


class Uplink:
    """East County's uplink to the city, as its agents use it: a TCP relay on UPLINK_PORT to the
    broker that the county's and its townships' agents connect through.

    ``cut()`` is the fibre cut seen from the centre: every connection across the link is reset and
    new ones are refused while it lasts. (On a real dead link the broker drops the sessions after
    1.5 × keepalive; the embedded broker does not time silent clients out, so the relay drops them at
    once — the broker publishes each agent's Last Will "offline", as it would then.) The agents keep
    probing and spool what they measure; ``restore()`` listens again, they reconnect on their own
    back-off (1, 2, 4 … 30 s) and send the backlog."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port, self.target_port = port, target_port
        self.is_cut = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="uplink", daemon=True)

    def start(self) -> Uplink:
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"the uplink relay could not listen on 127.0.0.1:{self.port}: {self._error}")
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._listen()
        except OSError as e:
            self._error = e
        self._ready.set()
        await self._stop.wait()
        self._drop_all()
        if self._server is not None:
            self._server.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self._conns.add(w)
        uw: asyncio.StreamWriter | None = None
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._conns.add(uw)
            await asyncio.gather(self._pump(r, uw), self._pump(ur, w))
        except OSError:
            pass
        finally:
            for x in (w, uw):
                if x is not None:
                    self._conns.discard(x)
                    x.transport.abort()

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()  # one side gone: so is the other

    def _drop_all(self) -> None:
        for w in list(self._conns):
            w.transport.abort()  # a reset, not a clean close: no DISCONNECT reaches the broker
        self._conns.clear()

    def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()

    def cut(self) -> None:
        self.is_cut = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._cut)

    def restore(self) -> None:
        self.is_cut = False
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def busy_ports() -> list[int]:
    return [p for p in TCP_PORTS if not port_free(p)] + [p for p in UDP_PORTS if not port_free(p, socket.SOCK_DGRAM)]


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


def demo_login(config: Path) -> str:
    """An operator account for the person watching (a fresh password each run: there are no default
    passwords), and an API token for this script's own polling. Returns the password."""
    import secrets

    from collector import config as collector_config
    from collector.users import LocalAdmin, UserDB

    cfg = collector_config.load(config)
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


# ------------------------------------------------------------------------------------ timeline


def fast_config(factor: int) -> Path:
    """The demo's collector config with the default rules sped up: a copy of the rules with every
    ``for``, ``keep_firing_for`` and ``window`` divided by ``factor``, and a copy of the config that
    uses it (paths made absolute). Both in var/demo; the shipped files are not touched."""
    from probes.base import parse_duration

    src = HERE / "collector.yaml"
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    rules_src = (HERE / doc["alerting"]["rules"]).resolve()
    rules = yaml.safe_load(rules_src.read_text(encoding="utf-8"))
    for r in rules["rules"]:
        for key in ("for", "keep_firing_for", "window"):
            if key in r:
                r[key] = f"{parse_duration(r[key]) / factor:g}s"
    rules_dst = VAR / "rules-fast.yaml"
    rules_dst.write_text(
        f"# {rules_src.relative_to(ROOT)} with every for / keep_firing_for / window divided by {factor},\n"
        "# written by configs/demo/demo.py --fast (a compressed timeline). Not for real use.\n"
        + yaml.safe_dump(rules, allow_unicode=True, sort_keys=False, width=200),
        encoding="utf-8",
    )
    doc["collector"]["data_dir"] = str((HERE / doc["collector"]["data_dir"]).resolve())
    doc["alerting"]["rules"] = str(rules_dst)
    doc["alerting"]["topology"] = str((HERE / doc["alerting"]["topology"]).resolve())
    dst = VAR / "collector-fast.yaml"
    dst.write_text(
        "# configs/demo/collector.yaml using rules-fast.yaml: written by demo.py --fast\n"
        + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=200),
        encoding="utf-8",
    )
    return dst


@dataclass(frozen=True)
class Plan:
    """When things happen (seconds after the agents start), and what follows from the rules."""

    heat_at: float
    cut_at: float
    cut_for: float
    limit_c: float  # the room rule fires above this
    clear_c: float  # and resolves at or below this
    rule_for: float  # after holding this long
    settle: float
    group_wait: float
    poll_s: float  # how often the city-centre agent reads the room sensor

    def heat_wave(self) -> Any:
        """The room stays above the limit until the firing notice has surely gone out: the rule's
        ``for``, two polls (the first one past the limit may come a poll late), the settle window and
        the group wait, and 5 s to spare. Then it cools below the clear line."""
        from sim_modbus import HeatWave

        need = self.rule_for + 2 * self.poll_s + self.settle + self.group_wait + 5.0
        wave = HeatWave(at_s=self.heat_at, hold_s=0.0, peak_c=self.limit_c + 1.5)
        lo, hi = wave.above_s(self.limit_c)
        return HeatWave(at_s=self.heat_at, hold_s=max(0.0, need - (hi - lo)), peak_c=self.limit_c + 1.5)

    def events(self) -> list[tuple[float, str, str]]:
        """(time, English, Chinese): what the newcomer will see, in order."""
        w = self.heat_wave()
        hot, cool = w.above_s(self.limit_c)[0], w.above_s(self.clear_c)[1]
        notice = self.settle + self.group_wait
        out = [
            (
                self.heat_at,
                f"the city machine room's air conditioning fails: {w.base_c:g} → {w.peak_c:g} °C",
                f"市中心机房空调故障：{w.base_c:g} → {w.peak_c:g} °C",
            ),
            (
                hot + self.rule_for + self.poll_s / 2 + notice,
                f"≈ notice: room temperature above {self.limit_c:g} °C (held {self.rule_for:g} s: {ROOM_RULE})",
                f"≈ 通知：机房温度高于 {self.limit_c:g} °C（持续 {self.rule_for:g} 秒）",
            ),
            (
                w.at_s + w.ramp_s + w.hold_s,
                f"the air conditioning is repaired; ≈ {cool - (w.at_s + w.ramp_s + w.hold_s) + self.poll_s:.0f} s later "
                f"the room is below {self.clear_c:g} °C: resolved",
                f"空调修复；约 {cool - (w.at_s + w.ramp_s + w.hold_s) + self.poll_s:.0f} 秒后低于 {self.clear_c:g} °C：告警恢复",
            ),
            (
                self.cut_at,
                f"East County's uplink is cut for {self.cut_for:g} s: the county and its 2 townships go dark",
                f"东区县上联中断 {self.cut_for:g} 秒：县及其 2 个乡镇失联",
            ),
            (
                self.cut_at + 1 + notice,
                "≈ ONE notice: East County unreachable (its townships are not paged one by one)",
                "≈ 一条通知：东区县不可达（不逐个乡镇告警）",
            ),
            (
                self.cut_at + self.cut_for,
                "the uplink is back; within 30 s (their back-off) the agents reconnect, send what they "
                "kept, and the cut-off resolves",
                "上联恢复；30 秒内各节点重连、补传缓存数据，告警恢复",
            ),
        ]
        return sorted(out, key=lambda e: e[0])


def make_plan(args: argparse.Namespace, config: Path) -> Plan:
    from agent.config import load as load_agent
    from collector import config as collector_config
    from collector.alerting.rules import load_rules

    cfg = collector_config.load(config)
    assert cfg.alerting is not None
    rule = next((r for r in load_rules(cfg.alerting.rules) if r.name == ROOM_RULE), None)
    if rule is None or rule.when is None or rule.clear is None or not isinstance(rule.when.const, float):
        raise SystemExit(f"{cfg.alerting.rules}: the demo needs the {ROOM_RULE} rule (when: '> N', clear: '<= M')")
    assert isinstance(rule.clear.const, float)
    routes = cfg.alerting.routes
    room = next(
        p
        for p in load_agent(HERE / "agents" / "city-centre.yaml", check_files=False).probes
        if p.name == "city-room-th"
    )
    fast = args.fast
    return Plan(
        heat_at=args.heat_at if args.heat_at is not None else (5.0 if fast else 20.0),
        cut_at=args.cut_at if args.cut_at is not None else (10.0 if fast else 60.0),
        cut_for=args.cut_for if args.cut_for is not None else (25.0 if fast else 60.0),
        limit_c=rule.when.const,
        clear_c=rule.clear.const,
        rule_for=rule.for_s,
        settle=cfg.alerting.settle,
        group_wait=max((r.group_wait for r in routes), default=0.0),
        poll_s=room.interval_s,
    )


# ---------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--duration", type=float, default=0, help="stop by itself after this many seconds (0: until Ctrl-C)"
    )
    ap.add_argument(
        "--deface-after",
        type=float,
        default=0,
        help="deface the portal after this many seconds (shows tamper detection)",
    )
    ap.add_argument(
        "--fast",
        action="store_true",
        help=f"a compressed timeline (for tests and the impatient): the default rules' for / keep_firing_for / "
        f"window divided by {FAST} (in a copy under var/demo), the room heats at 5 s, the cut is at 10 s for 25 s",
    )
    ap.add_argument("--heat-at", type=float, help="seconds until the city machine room's cooling fails (20; --fast 5)")
    ap.add_argument("--cut-at", type=float, help="seconds until East County's uplink is cut (60; --fast 10)")
    ap.add_argument("--cut-for", type=float, help="how long the cut lasts, in seconds (60; --fast 25)")
    args = ap.parse_args()

    sys.path.insert(0, str(HERE))
    # The cut must outlast what it takes to page it: the settle window and the group wait, and a
    # little. (Checked on the shipped config, before anything is touched: --fast keeps both.)
    shipped = make_plan(args, HERE / "collector.yaml")
    if shipped.cut_for < shipped.settle + shipped.group_wait + 5:
        con.print(
            f"[red]--cut-for {shipped.cut_for:g} is too short[/red]: the collector holds an alert for settle "
            f"({shipped.settle:g} s) and the group wait ({shipped.group_wait:g} s) before it pages; give at least "
            f"{shipped.settle + shipped.group_wait + 5:g} s / 中断时间太短，告警来不及发出"
        )
        return 2
    busy = busy_ports()
    if busy:
        con.print(f"[red]ports in use on 127.0.0.1: {busy}[/red] — is another demo running? / 端口被占用")
        return 3
    # Each demo starts from nothing, so what it shows is what this run did.
    if VAR.exists():
        shutil.rmtree(VAR)
    (VAR / "logs").mkdir(parents=True)
    config = fast_config(FAST) if args.fast else HERE / "collector.yaml"
    plan = make_plan(args, config)

    portal = ThreadingHTTPServer(("127.0.0.1", PORTAL_PORT), Portal)
    threading.Thread(target=portal.serve_forever, daemon=True).start()
    sink = ThreadingHTTPServer(("127.0.0.1", SINK_PORT), NoticeSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    approve_portal_baseline()
    # Machine rooms on Modbus (configs/demo/sim_modbus.py): a township's, calm, with a door contact,
    # and the city's, whose air conditioning fails on the timeline.
    import sim_modbus

    password = demo_login(config)  # before anything else starts, so a failure here leaves little running
    rooms = sim_modbus.start(MODBUS_PORT, period_s=600, swing_c=0.8, heat_wave=plan.heat_wave())
    # Switches and a UPS: snmpsim serving recordings of real devices (configs/demo/sim_snmp.py).
    # Its index of the recordings is kept outside var/demo, so only the first demo builds it.
    import sim_snmp

    con.print("starting the simulated switches and UPS (the first time indexes the recordings) …")
    devices = sim_snmp.start(ROOT / "var" / "demo-snmp", SNMP_PORT)
    uplink = Uplink(UPLINK_PORT, BROKER_PORT).start()

    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(name: str, argv: list[str]) -> None:
        log = open(VAR / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        procs.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)))

    try:
        start("collector", [sys.executable, "-m", "collector.cli", "run", "--config", str(config)])
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
        # The timeline starts once every agent reports: a cut before East County's agents were ever
        # seen would be a county that never came up, not one cut off.
        con.print("waiting for the agents to report / 等待各节点上线 …")
        deadline = time.monotonic() + 90
        while online_agents() < len(agents):
            dead = [name for name, p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline or stop.wait(0.5):
                if stop.is_set():
                    return 0
                con.print(
                    f"[red]not every agent came online[/red] ({', '.join(dead) or 'in 90 s'}); see {VAR / 'logs'}"
                )
                return 3
        started = time.monotonic()
        rooms.reset_clock()
        NoticeSink.started = started

        def rel(p: Path) -> str:
            return os.path.relpath(p, Path.cwd())

        cli = f".venv/bin/netwatch-collector {{}} --config {rel(config)}"
        con.rule("[bold]netwatch demo / 演示[/bold]")
        con.print(f"status page 状态页      http://127.0.0.1:{API_PORT}/")
        con.print(f"log in 登录             demo / {password}   (operator; a new password each run 每次运行新密码)")
        con.print(f"agents 采集节点         {cli.format('agents')}")
        con.print(f"alerts 告警             {cli.format('alerts history --since 1h')}")
        con.print(f"stored samples 样本     {cli.format('query room_env --since 5m')}")
        con.print(f"one node, once 单节点   .venv/bin/netwatch-agent once --config {rel(agents[-1])}")
        con.print(f"logs 日志               {rel(VAR / 'logs')}/   notices 通知 {rel(NoticeSink.log_path)}")
        if args.fast:
            con.print(
                f"[yellow]--fast: the rules' durations are divided by {FAST} ({rel(VAR / 'rules-fast.yaml')})[/yellow]"
            )
        con.print("Ctrl-C stops everything / 按 Ctrl-C 停止")
        con.rule("timeline 时间线 (t+0: now 现在)")
        for t, en, zh in plan.events():
            con.print(f"  {clock(t):>9}  {en}\n  {'':>9}  {zh}")
        con.rule()

        cut_start, cut_end = plan.cut_at, plan.cut_at + plan.cut_for
        wave = plan.heat_wave()
        repaired = wave.at_s + wave.ramp_s + wave.hold_s
        said: set[str] = set()
        next_status = 10.0
        while not stop.wait(0.5):
            elapsed = time.monotonic() - started
            if args.deface_after and elapsed >= args.deface_after and not Portal.defaced:
                Portal.defaced = True
                con.print(f"[yellow]{clock(elapsed)}  the portal has been defaced / 门户网站被篡改[/yellow]")
            if elapsed >= plan.heat_at and "heat" not in said:
                said.add("heat")
                con.print(
                    f"[yellow]{clock(elapsed)}  the city machine room's air conditioning fails / 市中心机房空调故障[/yellow]"
                )
            if elapsed >= repaired and "repaired" not in said:
                said.add("repaired")
                con.print(f"[green]{clock(elapsed)}  the air conditioning is repaired / 空调已修复[/green]")
            if cut_start <= elapsed < cut_end and not uplink.is_cut and "cut" not in said:
                said.add("cut")
                uplink.cut()
                con.print(f"[yellow]{clock(elapsed)}  East County's uplink is cut / 东区县上联中断[/yellow]")
            if elapsed >= cut_end and uplink.is_cut:
                uplink.restore()
                con.print(f"[green]{clock(elapsed)}  East County's uplink is back / 东区县上联恢复[/green]")
            for name, p in procs:
                if p.poll() is not None:
                    con.print(f"[red]{name} exited with {p.returncode}[/red]; see {VAR / 'logs' / (name + '.log')}")
                    return 3
            last = bool(args.duration) and elapsed >= args.duration
            if elapsed >= next_status or last:
                next_status += 10.0
                status_line(rooms, uplink, len(agents))
            if last:
                break
    finally:
        con.print("stopping / 正在停止 …")
        # The collector first: agents stopping one by one are not a site going dark.
        for name, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            if name == "collector":
                stop_proc(name, p)
        for name, p in procs:
            stop_proc(name, p)
        for server in (portal, sink):
            server.shutdown()
            server.server_close()
        uplink.stop()
        rooms.stop()
        devices.stop()
        con.print(f"notices received 收到通知 {NoticeSink.received}, refused 拒收 {NoticeSink.refused}")
    return 0


def stop_proc(name: str, p: subprocess.Popen[bytes]) -> None:
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        con.print(f"[yellow]{name} did not stop in 20 s; killing pid {p.pid}[/yellow]")
        p.kill()
        p.wait()


def online_agents() -> int:
    try:
        rows = get_json("/api/agents")
    except OSError:
        return 0
    assert isinstance(rows, list)
    return sum(1 for r in rows if r["status"] == "online")


def status_line(rooms: Any, uplink: Uplink, n_agents: int) -> None:
    try:
        rows = get_json("/api/agents")
        st = get_json("/api/stats")
        firing = get_json("/api/alerts")
    except OSError:
        return
    assert isinstance(rows, list) and isinstance(st, dict) and isinstance(firing, list)
    online = sum(1 for r in rows if r["status"] == "online")
    room = rooms.hot_room
    t = Table(box=None, show_header=False)
    t.add_row(
        f"{datetime.now():%H:%M:%S}",
        f"agents online {online}/{n_agents} 在线",
        f"samples stored {st.get('stored_samples', 0)} 已存样本",
        f"rejected {st.get('rejected_total', 0)} 拒收",
        f"alerts {len(firing)} 告警",
        f"city room {room.temperature_c(room.elapsed()):.1f} °C 机房",
        "[red]uplink cut 上联中断[/red]" if uplink.is_cut else "",
    )
    con.print(t)


if __name__ == "__main__":
    sys.exit(main())
