"""The soak: a city's townships (150 by default, played by a few fleet processes running the agent's
own code) through Mosquitto → collector → VictoriaMetrics for 30 minutes, with a fault every few
minutes; at the end every probe run the simulated devices logged is accounted for exactly, and
the collector's memory is compared between the start and the end of the run.

See README.md beside this file for the faults, the checks and how to read the table.

    .venv/bin/python bench/soak/run.py [--minutes 30] [--agents 150] [--record bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))  # before tests/: its collector/ and agent/ folders are test packages

from e2e.procs import CollectorProc, Proc  # noqa: E402
from e2e.rig import LinkProxy, StoreProxy  # noqa: E402
from services import free_port, start_mosquitto, start_victoria_metrics  # noqa: E402
from soak_probe import FIELDS, MEASUREMENT, port_name, values  # noqa: E402

from agent.spool import read_stats  # noqa: E402

MIB = 1024 * 1024

# ------------------------------------------------------------------------------------ the store link


class StoreLink(StoreProxy):
    """The collector's link to VictoriaMetrics. It counts, per soak line (series and millisecond),
    how many writes holding it the store acknowledged — a second acknowledged write of a line is a
    duplicate whatever the store does with it — and can be cut (``StoreProxy.cut``)."""

    def __init__(self, backend_url: str) -> None:
        super().__init__(backend_url)
        self.acked: Counter[bytes] = Counter()
        self._prefix = MEASUREMENT.encode() + b","

    def on_acked_write(self, body: bytes) -> None:
        keys = []
        for line in body.splitlines():
            if line.startswith(self._prefix):
                series, _, rest = line.partition(b" ")
                keys.append(series + b" " + rest.rpartition(b" ")[2])
        with self._lock:
            self.acked.update(keys)

    def twice(self) -> int:
        with self._lock:
            return sum(1 for n in self.acked.values() if n > 1)


# ------------------------------------------------------------------------------------------ the rig


@dataclass
class Event:
    at_s: float
    fault: str
    what: str
    down_s: float = 0.0


#: the faults, in the order they are injected (then again from the top)
FAULTS = (
    "collector-kill",
    "county-cut",
    "fleet-kill",
    "store-stopped",
    "broker-restart",
    "two-counties-cut",
    "store-link-cut",
    "fleet-kill",
    "broker-restart",
    "county-cut",
)


@dataclass
class Options:
    agents: int
    counties: int
    series: int
    interval_s: float
    minutes: float
    fault_every_s: float
    warmup_s: float
    workdir: Path
    per_fleet: int = 50
    faults: tuple[str, ...] = FAULTS
    settle_s: float = 10.0


def agent_ids(o: Options) -> list[tuple[str, int]]:
    """(agent id, county index) for every township, spread evenly over the counties."""
    return [(f"twn-{i % o.counties + 1:02d}-{i // o.counties + 1:03d}", i % o.counties) for i in range(o.agents)]


class Soak:
    def __init__(self, o: Options) -> None:
        self.o = o
        w = o.workdir
        self.t0 = time.monotonic()
        self.events: list[Event] = []
        self.broker = start_mosquitto(w / "broker")
        self.vm = start_victoria_metrics(w / "vm", dedup=None)  # keeps every duplicate
        self.link = StoreLink(self.vm.url)
        self.proxies = [LinkProxy(self.broker.port) for _ in range(o.counties)]
        self.api_port = free_port()
        self.runlog = w / "runs.log"
        # paho's network loop uses select(), which cannot watch a descriptor above 1023, and each agent
        # holds about seven (spool, WAL, socket, paho's wake-up pair...): one process can play ~130.
        self.cfg_dirs = [w / f"agents-{k}" for k in range(-(-o.agents // o.per_fleet))]
        for d in self.cfg_dirs:
            d.mkdir()
        self.spools: list[Path] = []
        for n, (aid, county) in enumerate(agent_ids(o)):
            spool = w / "spools" / f"{aid}.db"
            self.spools.append(spool)
            (self.cfg_dirs[n % len(self.cfg_dirs)] / f"{aid}.yaml").write_text(
                f"agent: {{id: {aid}, site: {aid}, tags: {{county: county-{county + 1:02d}}}}}\n"
                f"mqtt: {{host: 127.0.0.1, port: {self.proxies[county].port}, keepalive: 30s}}\n"
                f"spool: {{path: {spool}}}\n"
                # publish: the defaults (batch_interval 5 s, drain_rate 32 KiB/s)
                f"probes:\n  - {{type: soak, name: {aid}, interval: {o.interval_s}s, "
                f"series: {o.series}, runlog: {self.runlog}}}\n"
            )
        (w / "spools").mkdir()
        self.collector_cfg = w / "collector.yaml"
        self.collector_cfg.write_text(
            f"collector: {{id: soak, data_dir: {w / 'collector'}}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {self.broker.port}}}\n"
            f"storage:\n  influxdb: {{url: '{self.link.url}', bucket: netwatch, drop_string_fields: true, timeout: 5s}}\n"
            f"api: {{port: {self.api_port}}}\n"
        )
        self.runs: Counter[str] = Counter()
        self.col = self._start_collector()
        self.fleets = self._start_fleets()
        self.kills: list[float] = []  # wall-clock ns of each fleet SIGKILL
        self.collector_started = self.now()
        self.stats_by_run: dict[int, dict[str, Any]] = {}
        self.samples: list[dict[str, Any]] = []  # RSS/CPU every few seconds
        self._cpu_last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_loop, daemon=True)
        self._sampler.start()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _start_collector(self) -> CollectorProc:
        n = self.runs["collector"] = self.runs["collector"] + 1
        col = CollectorProc(self.collector_cfg, self.api_port, self.o.workdir / f"collector-{n}.log")
        col.wait_ready(90)
        return col

    def _start_fleets(self) -> list[Proc]:
        n = self.runs["fleet"] = self.runs["fleet"] + 1
        return [
            Proc(
                f"fleet{k}",
                [sys.executable, str(HERE / "fleet.py"), "--configs", str(d), "--drain", "180"],
                self.o.workdir / f"fleet{k}-{n}.log",
            )
            for k, d in enumerate(self.cfg_dirs)
        ]

    # -- watching ------------------------------------------------------------------------------
    def _procs(self) -> dict[str, int | None]:
        return {
            "collector": self.col.p.pid if self.col.alive() else None,
            "vm": self.vm.pid,
            "broker": self.broker.pid,
            **{f.name: f.p.pid if f.alive() else None for f in self.fleets},
        }

    def _sample_loop(self) -> None:
        while not self._stop.wait(5.0):
            row: dict[str, Any] = {"t": round(self.now(), 1)}
            for name, pid in self._procs().items():
                if pid is None:
                    continue
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(pid)
                    row[name] = p.memory_info().rss / MIB
                    ct = p.cpu_times()
                    self._cpu_last[pid] = (name, ct.user + ct.system)
                    if name == "collector":
                        row["collector_pid"] = pid
            self.samples.append(row)
            with contextlib.suppress(OSError, ValueError):
                self.stats_by_run[self.runs["collector"]] = self.col.get("/api/stats")

    def cpu_s(self) -> dict[str, float]:
        out: dict[str, float] = defaultdict(float)
        for name, cpu in self._cpu_last.values():
            out[name] += cpu
        return dict(out)

    # -- faults --------------------------------------------------------------------------------
    def inject(self, fault: str, budget_s: float, log: Callable[[str], None]) -> Event:
        o = self.o
        ev = Event(round(self.now(), 1), fault, "")
        started = time.monotonic()
        cut_s = min(240.0, budget_s * 0.75)
        if fault == "collector-kill":
            self.col.kill()
            time.sleep(5)
            self.col = self._start_collector()
            self.collector_started = self.now()
            ev.what = "collector SIGKILLed, restarted after 5 s"
        elif fault in ("county-cut", "two-counties-cut"):
            n = 1 if fault == "county-cut" else 2
            first = (len(self.events) * 3) % o.counties
            cut = [(first + k) % o.counties for k in range(n)]
            for c in cut:
                self.proxies[c].cut()
            time.sleep(cut_s)
            for c in cut:
                self.proxies[c].restore()
            names = ", ".join(f"county-{c + 1:02d}" for c in cut)
            ev.what = f"{names} cut off for {cut_s:.0f} s ({n * o.agents // o.counties} townships)"
        elif fault == "store-stopped":
            down = min(90.0, budget_s * 0.5)
            self.vm.stop()
            time.sleep(down)
            self.vm.start(60)
            ev.what = f"VictoriaMetrics stopped (SIGTERM) for {down:.0f} s"
        elif fault == "store-link-cut":
            down = min(90.0, budget_s * 0.5)
            self.link.cut()
            time.sleep(down)
            self.link.restore()
            ev.what = f"collector → VictoriaMetrics link cut for {down:.0f} s"
        elif fault == "broker-restart":
            self.broker.stop()
            time.sleep(5)
            self.broker.start()
            ev.what = "Mosquitto restarted (SIGTERM, persistence on), down 5 s"
        elif fault == "fleet-kill":
            self.kills.append(time.time_ns())
            for f in self.fleets:
                f.p.send_signal(signal.SIGKILL)
            for f in self.fleets:
                f.kill()  # reaped
            time.sleep(5)
            self.fleets = self._start_fleets()
            ev.what = f"all {o.agents} agents SIGKILLed ({len(self.fleets)} processes), restarted after 5 s"
        else:
            raise ValueError(fault)
        ev.down_s = round(time.monotonic() - started, 1)
        self.events.append(ev)
        log(f"[{ev.at_s:7.1f} s] {ev.what}")
        return ev

    def close(self) -> None:
        self._stop.set()
        for p in (*self.fleets, self.col):
            p.kill()
        for x in self.proxies:
            x.close()
        self.link.close()
        self.vm.close()
        self.broker.close()


# ---------------------------------------------------------------------------------- the accounting


@dataclass
class Account:
    runs_logged: int = 0
    runs_stored: int = 0
    runs_missing: int = 0
    runs_partial: int = 0
    interrupted_counted: int = 0
    missing_not_near_kill: int = 0
    agents_over: list[str] = field(default_factory=list)  # more runs missing than counted
    points_expected: int = 0
    points_stored: int = 0
    points_extra: int = 0
    points_twice_in_store: int = 0
    lines_written_twice: int = 0
    value_mismatches: int = 0
    spool_left_batches: int = 0
    spool_dropped_samples: int = 0
    spool_write_errors: int = 0

    @property
    def exact(self) -> bool:
        return (
            self.runs_logged == self.runs_stored + self.runs_missing
            and self.runs_partial == 0
            and not self.agents_over
            and self.missing_not_near_kill == 0
            and self.points_extra == 0
            and self.points_twice_in_store == 0
            and self.lines_written_twice == 0
            and self.value_mismatches == 0
            and self.spool_left_batches == 0
            and self.spool_dropped_samples == 0
        )


def read_runlog(path: Path) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = defaultdict(list)
    for line in path.read_bytes().splitlines():
        aid, _, t = line.decode().partition(" ")
        runs[aid].append(int(t))
    return runs


def vm_export(vm_url: str, match: str) -> list[dict[str, Any]]:
    body = urllib.parse.urlencode({"match[]": match}).encode()
    with urllib.request.urlopen(urllib.request.Request(vm_url + "/api/v1/export", data=body), timeout=300) as r:
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


def vm_count(vm_url: str) -> int:
    """Points of ``soak_in_bps`` in the store now (duplicates included)."""
    q = urllib.parse.urlencode({"query": f"sum(count_over_time({MEASUREMENT}_{FIELDS[0]}[30d]))"})
    with urllib.request.urlopen(vm_url + "/api/v1/query?" + q, timeout=60) as r:
        res = json.loads(r.read())["data"]["result"]
    return int(float(res[0]["value"][1])) if res else 0


def account(s: Soak, interval_s: float, series: int) -> Account:
    a = Account()
    logged = read_runlog(s.runlog)
    per_agent_interrupted: dict[str, int] = {}
    for spool in s.spools:
        st = read_stats(spool)
        per_agent_interrupted[spool.stem] = st.interrupted_runs
        a.interrupted_counted += st.interrupted_runs
        a.spool_left_batches += st.depth
        a.spool_dropped_samples += st.dropped_samples
    a.lines_written_twice = s.link.twice()
    # what the store holds: (agent, port, field, ms) -> values (a duplicate shows as two)
    stored: dict[tuple[str, str, str, int], list[float]] = defaultdict(list)
    for row in vm_export(s.vm.url, f'{{__name__=~"{MEASUREMENT}_.*"}}'):
        m = row["metric"]
        fld = m["__name__"][len(MEASUREMENT) + 1 :]
        for ts, v in zip(row["timestamps"], row["values"], strict=True):
            stored[(m.get("agent", "?"), m.get("port", "?"), fld, ts)].append(v)
    a.points_stored = sum(len(v) for v in stored.values())
    seen: set[tuple[str, str, str, int]] = set()
    kill_windows = [(k - int((interval_s + 2) * 1e9), k) for k in s.kills]
    for aid, times in logged.items():
        missing_here = 0
        for t in times:
            a.runs_logged += 1
            ms = t // 1_000_000
            have = 0
            for i in range(series):
                want = values(aid, i, t)
                for fld, w in zip(FIELDS, want, strict=True):
                    key = (aid, port_name(i), fld, ms)
                    got = stored.get(key)
                    a.points_expected += 1
                    if got:
                        have += 1
                        seen.add(key)
                        if len(got) > 1:
                            a.points_twice_in_store += len(got) - 1
                        if any(v != w for v in got):
                            a.value_mismatches += 1
            if have == series * len(FIELDS):
                a.runs_stored += 1
            elif have == 0:
                a.runs_missing += 1
                missing_here += 1
                if not any(lo <= t <= hi for lo, hi in kill_windows):
                    a.missing_not_near_kill += 1
            else:
                a.runs_partial += 1
        if missing_here > per_agent_interrupted.get(aid, 0):
            a.agents_over.append(aid)
    a.points_extra = sum(len(v) for k, v in stored.items() if k not in seen)
    return a


# ------------------------------------------------------------------------------------------- memory


def rss_flat(samples: list[dict[str, Any]], since_s: float, until_s: float) -> dict[str, Any]:
    """The collector's RSS between ``since_s`` and ``until_s``: the median of its first and last
    fifth, the least-squares slope, and whether it is flat (last fifth within 5 % + 2 MiB of the first)."""
    pts = [(r["t"], r["collector"]) for r in samples if "collector" in r and since_s <= r["t"] <= until_s]
    if len(pts) < 10:
        return {"points": len(pts), "flat": False, "why": "too few samples after warm-up"}
    k = max(2, len(pts) // 5)
    first = statistics.median(v for _, v in pts[:k])
    last = statistics.median(v for _, v in pts[-k:])
    mt = statistics.fmean(t for t, _ in pts)
    mv = statistics.fmean(v for _, v in pts)
    slope = sum((t - mt) * (v - mv) for t, v in pts) / sum((t - mt) ** 2 for t, _ in pts)
    return {
        "points": len(pts),
        "window_s": [round(pts[0][0]), round(pts[-1][0])],
        "first_mib": round(first, 1),
        "last_mib": round(last, 1),
        "max_mib": round(max(v for _, v in pts), 1),
        "slope_mib_per_h": round(slope * 3600, 2),
        "flat": last <= first * 1.05 + 2.0,
    }


# ----------------------------------------------------------------------------------------------- run


def run(o: Options, log: Callable[[str], None]) -> dict[str, Any]:
    s = Soak(o)
    try:
        duration = o.minutes * 60
        log(
            f"soak: {o.agents} agents in {o.counties} counties, {o.series} ports each every {o.interval_s:g} s, "
            f"{o.minutes:g} min, a fault every {o.fault_every_s:g} s; workdir {o.workdir}"
        )
        k = 0
        while True:
            next_at = (k + 1) * o.fault_every_s
            if next_at + o.fault_every_s * 0.75 > duration:
                break
            while s.now() < next_at:
                time.sleep(0.5)
                for f in s.fleets:
                    if not f.alive():
                        raise RuntimeError(f"{f.name} died:\n{f.tail()}")
            s.inject(o.faults[k % len(o.faults)], o.fault_every_s, log)
            k += 1
        while s.now() < duration:
            time.sleep(0.5)
        end_s = s.now()
        log(f"[{end_s:7.1f} s] stopping the fleet (SIGTERM: stop probing, drain the spools)")
        for f in s.fleets:
            f.p.send_signal(signal.SIGTERM)
        rc = max(f.stop(240) for f in s.fleets)  # their spools are read below
        drained_s = s.now()
        # wait for the collector to have written everything: every run logged and not counted as
        # interrupted has its points in the store, and the count has stopped moving (a late second
        # copy would show up meanwhile)
        runs = sum(len(v) for v in read_runlog(s.runlog).values())
        interrupted = sum(read_stats(p).interrupted_runs for p in s.spools)
        target = (runs - interrupted) * o.series
        last, same_since = -1, time.monotonic()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(
                    urllib.request.Request(s.vm.url + "/internal/force_flush", method="POST"), timeout=10
                ).read()
            n = vm_count(s.vm.url)
            if n != last:
                last, same_since = n, time.monotonic()
            elif n >= target and time.monotonic() - same_since > o.settle_s:
                break
            time.sleep(1)
        settled_s = s.now()
        col_stats = s.col.get("/api/stats")
        s.stats_by_run[s.runs["collector"]] = col_stats
        acc = account(s, o.interval_s, o.series)
        mem = rss_flat(s.samples, s.collector_started + o.warmup_s, end_s)
        # every RSS/CPU sample, for a closer look (kept with --workdir)
        (o.workdir / "samples.json").write_text(
            json.dumps({"samples": s.samples, "events": [asdict(e) for e in s.events]})
        )
        rejected = sum(int(st.get("rejected_total", 0)) for st in s.stats_by_run.values())
        dropped = sum(sum(st.get("dropped_samples", {}).values()) for st in s.stats_by_run.values())
        return {
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()},
            "events": [asdict(e) for e in s.events],
            "fleet_exit": rc,
            "end_s": round(end_s, 1),
            "drain_s": round(drained_s - end_s, 1),
            "settle_s": round(settled_s - drained_s, 1),
            "account": asdict(acc),
            "exact": acc.exact,
            "collector_rejected": rejected,
            "collector_dropped": dropped,
            "collector_runs": s.runs["collector"],
            "fleet_runs": s.runs["fleet"],
            "fleet_processes": len(s.fleets),
            "store_link_refused": s.link.refused,
            "store_writes": s.link.writes,
            "rss": mem,
            "rss_end_mib": {k: round(v, 1) for k, v in s.samples[-1].items() if k not in ("t", "collector_pid")}
            if s.samples
            else {},
            "cpu_s": {k: round(v, 1) for k, v in s.cpu_s().items()},
            "ok": acc.exact and mem.get("flat", False) and rc == 0 and rejected == 0 and dropped == 0,
        }
    finally:
        s.close()


def render(r: dict[str, Any]) -> str:
    o, a = r["options"], r["account"]
    lines = [
        f"{o['agents']} simulated townships in {o['counties']} counties ({r['fleet_processes']} fleet processes "
        f"running the agent's own code: scheduler, journal, spool, publisher; default batch_interval 5 s and drain_rate 32 KiB/s), each "
        f"{o['series']} switch ports × {len(FIELDS)} fields every {o['interval_s']:g} s "
        f"({o['agents'] * o['series'] / o['interval_s']:.0f} samples/s) → Mosquitto → collector → VictoriaMetrics "
        f"(no deduplication) for {o['minutes']:g} min; a fault every {o['fault_every_s']:g} s.",
        "",
        "| at s | fault | what |",
        "|---:|---|---|",
    ]
    lines += [f"| {e['at_s']:.0f} | {e['fault']} | {e['what']} |" for e in r["events"]]
    lines += [
        "",
        "| accounting | count |",
        "|---|---:|",
        f"| probe runs in the devices' run log | {a['runs_logged']:,} |",
        f"| … stored whole (every point, right value) | {a['runs_stored']:,} |",
        f"| … missing (killed before their journal commit) | {a['runs_missing']:,} |",
        f"| … of those not within one interval before a fleet SIGKILL | {a['missing_not_near_kill']:,} |",
        f"| … stored in part | {a['runs_partial']:,} |",
        f"| interrupted runs the agents counted | {a['interrupted_counted']:,} |",
        f"| agents with more runs missing than they counted | {len(a['agents_over'])} |",
        f"| points expected / stored | {a['points_expected']:,} / {a['points_stored']:,} |",
        f"| points in the store twice | {a['points_twice_in_store']:,} |",
        f"| soak lines the store acknowledged twice | {a['lines_written_twice']:,} |",
        f"| points stored that no run logged | {a['points_extra']:,} |",
        f"| values differing from the device's | {a['value_mismatches']:,} |",
        f"| batches left in spools / samples dropped by spools | {a['spool_left_batches']} / "
        f"{a['spool_dropped_samples']} |",
        f"| collector refusals / dropped samples (all {r['collector_runs']} collector runs) | "
        f"{r['collector_rejected']} / {r['collector_dropped']} |",
        "",
    ]
    m = r["rss"]
    if "first_mib" in m:
        lines.append(
            f"Collector RSS after warm-up ({m['window_s'][0]}–{m['window_s'][1]} s, {m['points']} samples): "
            f"first fifth median {m['first_mib']} MiB, last fifth {m['last_mib']} MiB, max {m['max_mib']} MiB, "
            f"slope {m['slope_mib_per_h']:+.2f} MiB/h — {'flat' if m['flat'] else 'GROWING'}."
        )
    else:
        lines.append(f"Collector RSS: {m}")
    lines.append(
        "RSS at the end (MiB): "
        + ", ".join(f"{k} {v}" for k, v in r["rss_end_mib"].items())
        + "; CPU-s over the run: "
        + ", ".join(f"{k} {v}" for k, v in r["cpu_s"].items())
        + f"; fleet drained in {r['drain_s']} s (exit {r['fleet_exit']}), store settled {r['settle_s']} s later."
    )
    lines.append("")
    lines.append(
        f"**{'EXACT' if r['exact'] else 'NOT EXACT'}**, collector memory {'flat' if m.get('flat') else 'NOT flat'}."
    )
    return "\n".join(lines)


def record(path: Path, r: dict[str, Any], argv: list[str], note: str) -> None:
    load = os.getloadavg()[0]
    head = (
        f"\n## soak\n\n{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC — {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.platform()}, 1-min load average {load:.2f} at the end of the run\n\n"
        f"Command: `{shlex.join(argv)}`\n\n"
    )
    with open(path, "a") as f:
        f.write(head + render(r) + "\n" + (f"\n{note}\n" if note else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=150)
    ap.add_argument("--counties", type=int, default=10)
    ap.add_argument("--series", type=int, default=84, help="switch ports per township (2 fields each)")
    ap.add_argument("--interval", type=float, default=15.0, help="probe interval, s")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fault-every", type=float, default=180.0, help="seconds between faults")
    ap.add_argument("--warmup", type=float, default=300.0, help="s after the collector's (re)start not judged for RSS")
    ap.add_argument("--per-fleet", type=int, default=50, help="agents per fleet process")
    ap.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated, in order, repeated (default: {','.join(FAULTS)})"
    )
    ap.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary directory)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--record", type=Path, help="append the result to this RESULTS.md")
    ap.add_argument("--note", default="", help="a paragraph to add under the recorded result")
    args = ap.parse_args()
    if args.counties < 3 or args.agents < args.counties:
        ap.error("need at least 3 counties and one township per county")
    unknown = sorted(set(args.faults.split(",")) - set(FAULTS))
    if unknown:
        ap.error(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(set(FAULTS)))}")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="netwatch-soak-")))
        workdir.mkdir(parents=True, exist_ok=True)
        o = Options(
            args.agents,
            args.counties,
            args.series,
            args.interval,
            args.minutes,
            args.fault_every,
            args.warmup,
            workdir,
            per_fleet=args.per_fleet,
            faults=tuple(f.strip() for f in args.faults.split(",") if f.strip()),
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        r = run(o, log)
    print(json.dumps(r, indent=2) if args.json else render(r))
    if args.record:
        record(args.record, r, [".venv/bin/python", "bench/soak/run.py", *sys.argv[1:]], args.note)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
