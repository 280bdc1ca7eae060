"""A township agent's footprint: RSS and CPU of ``netwatch-agent run`` polling 20 devices (10 SNMP
via snmpsim, 5 Modbus via pymodbus servers, 3 ICMP and 2 HTTP on loopback) every ``--interval``
for ``--duration``, publishing to a local Mosquitto — against a bare interpreter that has imported
the same modules the agent has (the peer: what the libraries cost before netwatch does anything).

    .venv/bin/python bench/agent/run.py [--duration 600] [--interval 60] [--record bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from services import free_port, start_mosquitto  # noqa: E402

from configs.demo import sim_modbus, sim_snmp  # noqa: E402

SNMP_DEVICES = 10
MODBUS_DEVICES = 5
ICMP_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
HTTP_PATHS = ("/portal", "/api/health")
PROJECT = ("agent", "probes", "protocol", "collector", "configs")

#: Run in a child: load the config, build every probe as the agent does, import what `run` imports,
#: and print the module names that are not netwatch's — the peer imports exactly these.
CENSUS = """
import sys, json
from agent.config import load
from agent.scheduler import Scheduler
import agent.cli, agent.runner
cfg = load(sys.argv[1])
Scheduler(cfg.probes, lambda s: None, concurrency=16, tags={}, identity_tags={})
own = {"__main__", *PROJECT}
print(json.dumps(sorted(m for m in list(sys.modules) if m.split(".")[0] not in own)))
""".replace("PROJECT", repr(PROJECT))

PEER = """
import importlib, json, sys, time
failed = 0
for m in json.loads(open(sys.argv[1]).read()):
    try:
        importlib.import_module(m)
    except Exception:
        failed += 1
print(failed, flush=True)
while True:
    time.sleep(3600)
"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<html><body><h1>town portal</h1>" + b"<p>notice</p>" * 200 + b"</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def config_yaml(
    broker_port: int, snmp_port: int, modbus_ports: list[int], http_port: int, spool: Path, interval: int
) -> str:
    communities = [c for c in sim_snmp.DEMO_DEVICES.values()]
    lines = [
        "agent: {id: bench-agent, site: bench-site}",
        f"mqtt: {{host: 127.0.0.1, port: {broker_port}}}",
        f"spool: {{path: {spool}}}",
        f"scheduler: {{default_interval: {interval}s}}",
        "probes:",
    ]
    for i in range(SNMP_DEVICES):
        lines += [
            f"  - {{type: snmp, name: snmp-{i}, host: 127.0.0.1, port: {snmp_port}, version: 2c,"
            f" community: {communities[i % len(communities)]}, timeout: {min(30, interval)}s}}"
        ]
    for i, port in enumerate(modbus_ports):
        lines += [
            f"  - {{type: modbus, name: room-{i}, target: 'tcp://127.0.0.1:{port}', unit: 1, map: renke_rs_ws_n01}}"
        ]
    for host in ICMP_HOSTS:
        lines += [f"  - {{type: icmp, name: icmp-{host}, host: {host}, count: 3}}"]
    for path in HTTP_PATHS:
        lines += [f"  - {{type: http, name: 'http{path}', url: 'http://127.0.0.1:{http_port}{path}'}}"]
    return "\n".join(lines) + "\n"


def proc_sample(pid: int) -> tuple[float, float, float, float]:
    """(RSS MiB, peak RSS MiB, anonymous RSS MiB, CPU seconds) of a process, from /proc."""
    kb = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon"):
            kb[key] = int(value.split()[0]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return kb["VmRSS"], kb["VmHWM"], kb["RssAnon"], cpu


@dataclass
class Trace:
    name: str
    t: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    anon: list[float] = field(default_factory=list)
    hwm: float = 0.0
    cpu0: float = 0.0
    cpu: float = 0.0


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def tee_statuses(path: Path) -> dict[str, str]:
    """kind/target -> its last probe_status status, from the agent's --tee file."""
    last: dict[str, str] = {}
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        s = json.loads(line)
        if s.get("measurement") == "probe_status":
            tags = s.get("tags", {})
            last[f"{tags.get('probe')}/{tags.get('target')}"] = s["fields"]["status"]
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds to measure (default 600)")
    ap.add_argument("--interval", type=int, default=60, help="probe interval in seconds (default 60)")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between two /proc samples")
    ap.add_argument("--record", type=Path, help="append the result to this file (bench/RESULTS.md)")
    ap.add_argument("--note", default="", help="a sentence of interpretation to record with the table")
    args = ap.parse_args()
    python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv/bin/python").exists() else sys.executable

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nw-bench-agent-")))
        broker = start_mosquitto(work / "broker")
        stack.callback(broker.close)
        snmp_port = free_port()
        snmp = sim_snmp.start(work / "snmp", snmp_port)
        stack.callback(snmp.stop)
        modbus_ports = []
        for _ in range(MODBUS_DEVICES):
            port = free_port()
            sim = sim_modbus.start(port)
            stack.callback(sim.stop)
            modbus_ports.append(port)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        stack.callback(httpd.shutdown)
        cfg = work / "agent.yaml"
        cfg.write_text(
            config_yaml(broker.port, snmp_port, modbus_ports, httpd.server_address[1], work / "spool.db", args.interval)
        )
        census = subprocess.run([python, "-c", CENSUS, str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        if census.returncode != 0:
            raise SystemExit(f"census failed: {census.stderr[-3000:]}")
        modules = work / "modules.json"
        modules.write_text(census.stdout)
        n_modules = len(json.loads(census.stdout))

        tee = work / "tee.jsonl"
        agent = subprocess.Popen(
            [python, "-m", "agent.cli", "run", "--config", str(cfg), "--log-level", "warning", "--tee", str(tee)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "agent.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        stack.callback(stop, agent)
        peer = subprocess.Popen(
            [python, "-c", PEER, str(modules)],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        stack.callback(stop, peer)
        assert peer.stdout is not None
        peer_failed = int(peer.stdout.readline() or b"-1")
        traces = {"agent": Trace("agent"), "peer": Trace("peer")}
        pids = {"agent": agent.pid, "peer": peer.pid}
        t0 = time.monotonic()
        for name, pid in pids.items():
            traces[name].cpu0 = proc_sample(pid)[3]
        deadline = t0 + args.duration
        while time.monotonic() < deadline:
            if agent.poll() is not None:
                raise SystemExit(f"agent exited with {agent.returncode}: {(work / 'agent.log').read_text()[-2000:]}")
            for name, pid in pids.items():
                rss, hwm, anon, cpu = proc_sample(pid)
                tr = traces[name]
                tr.t.append(time.monotonic() - t0)
                tr.rss.append(rss)
                tr.anon.append(anon)
                tr.hwm, tr.cpu = hwm, cpu - tr.cpu0
            time.sleep(min(args.every, max(0.0, deadline - time.monotonic())))
        for name, pid in pids.items():
            rss, hwm, anon, cpu = proc_sample(pid)
            traces[name].rss.append(rss)
            traces[name].anon.append(anon)
            traces[name].hwm, traces[name].cpu = hwm, cpu - traces[name].cpu0
        elapsed = time.monotonic() - t0
        stop(agent)
        statuses = tee_statuses(tee) if tee.exists() else {}
        from agent.spool import read_stats

        st = read_stats(work / "spool.db")
        log_tail = (work / "agent.log").read_text(errors="replace").strip().splitlines()[-5:]

    command = "bench/agent/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    body = report(traces, elapsed, args, n_modules, peer_failed, statuses, st.acked_samples, st.acked_batches, log_tail)
    print(f"Command: `.venv/bin/python {command.strip()}`\n")
    print(body)
    if args.record:
        record(args.record, f"Command: `.venv/bin/python {command.strip()}`\n\n{body}", args.note)
        print(f"\nappended to {args.record}")


def env_note() -> str:
    arenas = os.environ.get("MALLOC_ARENA_MAX")
    return f", with MALLOC_ARENA_MAX={arenas} (as the systemd unit sets it) for both subjects" if arenas else ""


def report(
    traces: dict[str, Trace],
    elapsed: float,
    args: argparse.Namespace,
    n_modules: int,
    peer_failed: int,
    statuses: dict[str, str],
    acked_samples: int,
    acked_batches: int,
    log_tail: list[str],
) -> str:
    polls = max(1, int(elapsed // args.interval) + 1)
    out = [
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC — {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}, 1-min load average {os.getloadavg()[0]:.2f} at the end of the run",
        "",
        f"`netwatch-agent run` with {SNMP_DEVICES} SNMP devices (snmpsim, {len(sim_snmp.DEMO_DEVICES)} recordings), "
        f"{MODBUS_DEVICES} Modbus (one pymodbus server each), {len(ICMP_HOSTS)} ICMP and {len(HTTP_PATHS)} HTTP on "
        f"loopback, every {args.interval} s, for {elapsed:.0f} s (~{polls} polls of each device), publishing to "
        f"Mosquitto{env_note()}. Peer: a bare interpreter that imported the same {n_modules} non-netwatch modules "
        f"({peer_failed} failed to import) and then sleeps. RSS from /proc/PID/status every {args.every:g} s.",
        "",
        "| subject | RSS at end MiB | of which anonymous MiB | median RSS MiB | peak RSS (VmHWM) MiB | CPU-s | CPU % of one core | CPU-ms per poll round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in (("agent", "netwatch agent, 20 devices"), ("peer", "peer: same imports, idle")):
        tr = traces[name]
        out.append(
            f"| {label} | {tr.rss[-1]:.1f} | {tr.anon[-1]:.1f} | {statistics.median(tr.rss):.1f} | {tr.hwm:.1f} | {tr.cpu:.2f} | "
            f"{100 * tr.cpu / elapsed:.2f} | {1000 * tr.cpu / polls:.0f} |"
        )
    a, p = traces["agent"], traces["peer"]
    ok = sum(1 for s in statuses.values() if s == "ok")
    out += [
        "",
        f"- agent − peer: {a.rss[-1] - p.rss[-1]:+.1f} MiB RSS at the end, {a.hwm - p.hwm:+.1f} MiB peak; "
        f"agent/peer RSS {a.rss[-1] / p.rss[-1]:.2f}×",
        f"- devices whose last probe_status was ok: {ok} of {len(statuses)}"
        + (
            f" (not ok: {', '.join(f'{k}={v}' for k, v in statuses.items() if v != 'ok')})"
            if ok < len(statuses)
            else ""
        ),
        f"- acknowledged by the broker: {acked_samples:,} samples in {acked_batches:,} batches",
    ]
    if log_tail:
        out.append("- last agent log lines: " + " / ".join(f"`{line[:160]}`" for line in log_tail))
    return "\n".join(out)


def record(path: Path, body: str, interpretation: str) -> None:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    head = "" if existing.strip() else "# Benchmark results\n"
    sep = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{head}{sep}## agent\n\n{body}\n\n{interpretation}\n")


if __name__ == "__main__":
    main()
