"""CPU-seconds per 1,000 varbinds walking IF-MIB (and the whole of MIB-2) from net-snmp ``snmpd`` on
loopback: netwatch's fast path (probes/snmp/fastwalk.py) against stock pysnmp, net-snmp's
``snmpbulkwalk`` and ``prometheus-snmp-exporter``, all on the same target in the same run.

See README.md beside this file for what each side does and how to read the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from probes.snmp import ber, fastwalk  # noqa: E402

COMMUNITY = "public"
#: the same GETBULK max-repetitions for every side (snmp_exporter's default)
MAX_REPETITIONS = 25
TARGETS: dict[str, list[str]] = {
    # what snmp_exporter's if_mib module walks: ifTable and friends, then ifXTable and friends
    "if-mib": ["1.3.6.1.2.1.2", "1.3.6.1.2.1.31"],
    "mib-2": ["1.3.6.1.2.1"],
}
SUBJECTS = ["fastwalk", "fastwalk-cold", "pysnmp", "snmpbulkwalk", "snmp_exporter"]
LABELS = {
    "fastwalk": "netwatch fast path (FastSession, OID-prefix memo warm)",
    "fastwalk-cold": "netwatch fast path, memo cleared before every walk",
    "pysnmp": "stock pysnmp 7 bulk_walk_cmd, one engine, lookupMib=False",
    "snmpbulkwalk": "net-snmp snmpbulkwalk, one process per subtree",
    "snmp_exporter": "prometheus-snmp-exporter /snmp scrape",
}
NET_SNMP_ENV = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}


# --------------------------------------------------------------------------------- services


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of another process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def find(name: str, *fallbacks: str) -> str:
    for c in (shutil.which(name), *fallbacks):
        if c and os.access(c, os.X_OK):
            return c
    raise SystemExit(f"{name} is not installed: apt-get install {name.replace('snmpbulkwalk', 'snmp')}")


def start_snmpd(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port(socket.SOCK_DGRAM)
    conf = work / "snmpd.conf"
    conf.write_text(f"agentaddress udp:127.0.0.1:{port}\nrocommunity {COMMUNITY} 127.0.0.1\n")
    env = {**NET_SNMP_ENV, "SNMP_PERSISTENT_DIR": str(work)}
    with open(work / "snmpd.log", "wb") as log:
        proc = subprocess.Popen(
            [find("snmpd", "/usr/sbin/snmpd"), "-f", "-Lo", "-C", "-c", str(conf)],
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    probe = ber.encode_message(1, COMMUNITY.encode(), ber.GET, 1, 0, 0, [("1.3.6.1.2.1.1.3.0", "Null", None)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        for _ in range(100):
            if proc.poll() is not None:
                raise SystemExit(f"snmpd exited: {(work / 'snmpd.log').read_text()}")
            s.sendto(probe, ("127.0.0.1", port))
            try:
                s.recv(2000)
                return proc, port
            except TimeoutError:
                continue
    stop(proc)
    raise SystemExit("snmpd did not answer within 10 s")


# snmp_exporter 0.21 config format (module-level auth), written by hand: no generator, no MIB files.
# Every IF-MIB column becomes a metric, as in the exporter's stock if_mib module but without the
# label lookups (which would only add work on the exporter's side).
_IF_COLUMNS = {
    "1.3.6.1.2.1.2.2.1": {
        1: ("ifIndex", "gauge"),
        2: ("ifDescr", "DisplayString"),
        3: ("ifType", "gauge"),
        4: ("ifMtu", "gauge"),
        5: ("ifSpeed", "gauge"),
        6: ("ifPhysAddress", "PhysAddress48"),
        7: ("ifAdminStatus", "gauge"),
        8: ("ifOperStatus", "gauge"),
        9: ("ifLastChange", "gauge"),
        **{
            n: (name, "counter")
            for n, name in zip(
                range(10, 21),
                [
                    "ifInOctets",
                    "ifInUcastPkts",
                    "ifInNUcastPkts",
                    "ifInDiscards",
                    "ifInErrors",
                    "ifInUnknownProtos",
                    "ifOutOctets",
                    "ifOutUcastPkts",
                    "ifOutNUcastPkts",
                    "ifOutDiscards",
                    "ifOutErrors",
                ],
                strict=True,
            )
        },
        21: ("ifOutQLen", "gauge"),
    },
    "1.3.6.1.2.1.31.1.1.1": {
        1: ("ifName", "DisplayString"),
        **{
            n: (name, "counter")
            for n, name in zip(
                range(2, 14),
                [
                    "ifInMulticastPkts",
                    "ifInBroadcastPkts",
                    "ifOutMulticastPkts",
                    "ifOutBroadcastPkts",
                    "ifHCInOctets",
                    "ifHCInUcastPkts",
                    "ifHCInMulticastPkts",
                    "ifHCInBroadcastPkts",
                    "ifHCOutOctets",
                    "ifHCOutUcastPkts",
                    "ifHCOutMulticastPkts",
                    "ifHCOutBroadcastPkts",
                ],
                strict=True,
            )
        },
        14: ("ifLinkUpDownTrapEnable", "gauge"),
        15: ("ifHighSpeed", "gauge"),
        16: ("ifPromiscuousMode", "gauge"),
        17: ("ifConnectorPresent", "gauge"),
        18: ("ifAlias", "DisplayString"),
        19: ("ifCounterDiscontinuityTime", "gauge"),
    },
}


def exporter_config() -> str:
    def module(name: str, walk: list[str], metrics: list[str]) -> list[str]:
        return [
            f"{name}:",
            "  version: 2",
            f"  max_repetitions: {MAX_REPETITIONS}",
            "  retries: 0",
            "  timeout: 10s",
            "  auth:",
            f"    community: {COMMUNITY}",
            "  walk:",
            *[f"  - {w}" for w in walk],
            "  metrics:",
            *metrics,
        ]

    if_metrics = ["  - {name: ifNumber, oid: 1.3.6.1.2.1.2.1, type: gauge, help: interfaces}"]
    for table, cols in _IF_COLUMNS.items():
        for n, (name, typ) in cols.items():
            if_metrics += [
                f"  - name: {name}",
                f"    oid: {table}.{n}",
                f"    type: {typ}",
                f"    help: IF-MIB {name}",
                "    indexes:",
                "    - {labelname: ifIndex, type: gauge}",
            ]
    # MIB-2 as a whole has no fixed shape to map without the generator: the exporter walks and
    # decodes every varbind but turns only sysUpTime into a metric (its cheapest possible case).
    mib2_metrics = ["  - {name: sysUpTime, oid: 1.3.6.1.2.1.1.3, type: gauge, help: uptime}"]
    lines = module("if_mib", TARGETS["if-mib"], if_metrics) + module("mib2", TARGETS["mib-2"], mib2_metrics)
    return "\n".join(lines) + "\n"


def start_exporter(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = find("prometheus-snmp-exporter", "/usr/bin/prometheus-snmp-exporter")
    (work / "snmp.yml").write_text(exporter_config())
    port = free_port()
    with open(work / "exporter.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={work / 'snmp.yml'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"snmp_exporter exited: {(work / 'exporter.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise SystemExit("snmp_exporter did not start within 15 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------------------------- subjects
# Each walks the target's subtrees ``n`` times and returns the varbinds it got (its own count).


async def fast_walks(port: int, subtrees: list[str], n: int, *, cold: bool, timed: Callable[[], None]) -> int:
    s = fastwalk.FastSession("127.0.0.1", port, COMMUNITY, timeout_s=5, retries=0)
    try:
        for base in subtrees:  # untimed warm-up: socket, imports, the memo for the warm case
            await s.walk(base, max_repetitions=MAX_REPETITIONS)
        timed()
        got = 0
        for _ in range(n):
            for base in subtrees:
                if cold:
                    ber._HEADS.clear()
                got += len(await s.walk(base, max_repetitions=MAX_REPETITIONS))
        return got
    finally:
        await s.close()


async def pysnmp_walks(port: int, subtrees: list[str], n: int, *, timed: Callable[[], None]) -> int:
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        bulk_walk_cmd,
    )

    engine = SnmpEngine()
    target = await UdpTransportTarget.create(("127.0.0.1", port), timeout=5, retries=0)

    async def walk(base: str) -> int:
        got = 0
        async for err, status, _, vbs in bulk_walk_cmd(
            engine,
            CommunityData(COMMUNITY, mpModel=1),
            target,
            ContextData(),
            0,
            MAX_REPETITIONS,
            ObjectType(ObjectIdentity(base)),
            lexicographicMode=False,
            lookupMib=False,
        ):
            if err or status:
                raise RuntimeError(f"pysnmp walk of {base}: {err or status.prettyPrint()}")
            got += len(vbs)
        return got

    try:
        for base in subtrees:
            await walk(base)
        timed()
        return sum([await walk(base) for _ in range(n) for base in subtrees])
    finally:
        engine.close_dispatcher()


def snmpbulkwalk_walks(port: int, subtrees: list[str], n: int, *, timed: Callable[[], None]) -> int:
    binary = find("snmpbulkwalk", "/usr/bin/snmpbulkwalk")
    timed()
    got = 0
    for _ in range(n):
        for base in subtrees:
            out = subprocess.run(
                [binary, "-v2c", "-c", COMMUNITY, "-On", f"-Cr{MAX_REPETITIONS}", f"127.0.0.1:{port}", base],
                env=NET_SNMP_ENV,
                capture_output=True,
                check=True,
            ).stdout
            got += sum(1 for line in out.splitlines() if line.startswith(b"."))
    return got


_PDUS = re.compile(rb"^snmp_scrape_pdus_returned (\d+)$", re.M)


def exporter_scrapes(http_port: int, snmpd_port: int, target: str, n: int, *, timed: Callable[[], None]) -> int:
    module = "if_mib" if target == "if-mib" else "mib2"
    url = f"http://127.0.0.1:{http_port}/snmp?target=127.0.0.1:{snmpd_port}&module={module}"

    def scrape() -> int:
        with urllib.request.urlopen(url, timeout=60) as r:
            body = r.read()
        m = _PDUS.search(body)
        if m is None:
            raise RuntimeError(f"no snmp_scrape_pdus_returned in the scrape: {body[-500:]!r}")
        return int(m.group(1))

    scrape()
    timed()
    return sum(scrape() for _ in range(n))


# --------------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Run:
    subject: str
    target: str
    walks: int
    varbinds: int
    cpu_s: float  # CPU of the side doing the walking (this process, the child, or the exporter)
    wall_s: float
    snmpd_cpu_s: float

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s / self.varbinds * 1000

    @property
    def snmpd_per_1000(self) -> float:
        return self.snmpd_cpu_s / self.varbinds * 1000


def measure(subject: str, target: str, n: int, ports: dict[str, int], pids: dict[str, int]) -> Run:
    subtrees = TARGETS[target]
    marks: dict[str, float] = {}

    def timed() -> None:
        # called by the subject once its untimed warm-up is done
        marks.update(
            wall=time.perf_counter(),
            self=time.process_time(),
            children=children_cpu_s(),
            exporter=proc_cpu_s(pids["exporter"]),
            snmpd=proc_cpu_s(pids["snmpd"]),
        )

    if subject in ("fastwalk", "fastwalk-cold"):
        got = asyncio.run(fast_walks(ports["snmpd"], subtrees, n, cold=subject == "fastwalk-cold", timed=timed))
        cpu = time.process_time() - marks["self"]
    elif subject == "pysnmp":
        got = asyncio.run(pysnmp_walks(ports["snmpd"], subtrees, n, timed=timed))
        cpu = time.process_time() - marks["self"]
    elif subject == "snmpbulkwalk":
        got = snmpbulkwalk_walks(ports["snmpd"], subtrees, n, timed=timed)
        cpu = children_cpu_s() - marks["children"]
    else:
        got = exporter_scrapes(ports["exporter"], ports["snmpd"], target, n, timed=timed)
        cpu = proc_cpu_s(pids["exporter"]) - marks["exporter"]
    wall = time.perf_counter() - marks["wall"]
    return Run(subject, target, n, got, cpu, wall, proc_cpu_s(pids["snmpd"]) - marks["snmpd"])


def walks_for(subject: str, target: str, scale: float) -> int:
    """Walks per timed run: enough CPU time (~0.3 s and more) that clock ticks do not matter."""
    base = {
        ("if-mib", "snmpbulkwalk"): 40,
        ("if-mib", "pysnmp"): 40,
        ("mib-2", "snmpbulkwalk"): 4,
        ("mib-2", "pysnmp"): 2,
    }.get((target, subject), 200 if target == "if-mib" else 8)
    return max(1, round(base * scale))


# ---------------------------------------------------------------------------------- reporting


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        for subject in SUBJECTS:
            mine = [r for r in runs if r.subject == subject and r.target == target]
            if not mine:
                continue
            per = sorted(r.cpu_per_1000 for r in mine)
            rows.append(
                {
                    "target": target,
                    "subject": subject,
                    # one walk = every subtree of the target once (what one exporter scrape covers)
                    "varbinds_per_walk": round(statistics.median(r.varbinds / r.walks for r in mine)),
                    "walks_per_run": mine[0].walks,
                    "runs": len(mine),
                    "cpu_s_per_1000": statistics.median(per),
                    "cpu_s_per_1000_min": per[0],
                    "cpu_s_per_1000_max": per[-1],
                    "wall_ms_per_walk": statistics.median(r.wall_s / r.walks * 1000 for r in mine),
                    "snmpd_cpu_s_per_1000": statistics.median(r.snmpd_per_1000 for r in mine),
                }
            )
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for target in TARGETS:
        by = {r["subject"]: r["cpu_s_per_1000"] for r in rows if r["target"] == target}
        for ours in ("fastwalk", "fastwalk-cold"):
            for peer in ("snmp_exporter", "pysnmp", "snmpbulkwalk"):
                if ours in by and peer in by:
                    out.append({"target": target, "ours": ours, "peer": peer, "ratio": by[ours] / by[peer]})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| target | side | varbinds/walk | walks/run | CPU-s per 1,000 varbinds (median) | range over runs | "
        "wall ms/walk | snmpd CPU-s per 1,000 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {LABELS[r['subject']]} | {r['varbinds_per_walk']:,} | {r['walks_per_run']} | "
            f"**{r['cpu_s_per_1000']:.4f}** | {r['cpu_s_per_1000_min']:.4f}–{r['cpu_s_per_1000_max']:.4f} | "
            f"{r['wall_ms_per_walk']:.1f} | {r['snmpd_cpu_s_per_1000']:.4f} |"
        )
    return "\n".join(lines)


def ratio_lines(rows: list[dict[str, Any]]) -> str:
    out = []
    for q in ratios(rows):
        word = "cheaper" if q["ratio"] < 1 else "dearer"
        out.append(
            f"- {q['target']}: {q['ours']} / {q['peer']} = **{q['ratio']:.2f}×** CPU per varbind "
            f"(netwatch {word}; below 1 = netwatch cheaper)"
        )
    return "\n".join(out)


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}, "
        f"1-min load average {os.getloadavg()[0]:.2f} at the start"
    )


def versions() -> str:
    import pysnmp

    def first_line(*argv: str) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    return (
        f"pysnmp {pysnmp.__version__}; {first_line('snmpd', '-v') or 'net-snmp'}; "
        f"{first_line('prometheus-snmp-exporter', '--version')}"
    )


def record(path: Path, body: str) -> None:
    """Append our section; other benches may append theirs too, so read just before and write once."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    head = "" if existing.strip() else "# Benchmark results\n"
    sep = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{head}{sep}## snmp\n\n{body}\n")


# --------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per side and target, interleaved (median)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the walks per run (default 1)")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    ap.add_argument("--subjects", default=",".join(SUBJECTS), help=f"comma-separated, of {', '.join(SUBJECTS)}")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--record", type=Path, metavar="RESULTS_MD", help="append a '## snmp' section to this file")
    ap.add_argument("--note", default="", help="interpretation to record under the table")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    subjects = [s for s in args.subjects.split(",") if s]
    bad = (set(targets) - set(TARGETS)) | (set(subjects) - set(SUBJECTS))
    if bad or not 1 <= args.repeats <= 50 or not 0 < args.scale <= 20:
        ap.error(f"bad --targets/--subjects ({', '.join(sorted(bad))}), --repeats 1..50 or --scale (0, 20]")
    started = machine()

    with tempfile.TemporaryDirectory(prefix="netwatch-bench-snmp-") as tmp:
        work = Path(tmp)
        snmpd, snmpd_port = start_snmpd(work)
        exporter = None
        try:
            exporter, exporter_port = start_exporter(work)
            ports = {"snmpd": snmpd_port, "exporter": exporter_port}
            pids = {"snmpd": snmpd.pid, "exporter": exporter.pid}
            runs: list[Run] = []
            cases = [(t, s) for t in targets for s in subjects]
            for rep in range(args.repeats):
                # rotate the order each round so no side always runs first (or right after another)
                k = rep % len(cases)
                for target, subject in cases[k:] + cases[:k]:
                    run = measure(subject, target, walks_for(subject, target, args.scale), ports, pids)
                    runs.append(run)
                    if not args.json:
                        print(
                            f"  round {rep + 1}/{args.repeats} {target:7s} {subject:14s} "
                            f"{run.varbinds:7d} varbinds  {run.cpu_per_1000:.4f} CPU-s/1000",
                            file=sys.stderr,
                        )
        finally:
            if exporter is not None:
                stop(exporter)
            stop(snmpd)

    rows = summarise(runs)
    if args.json:
        print(json.dumps({"machine": started, "rows": rows, "ratios": ratios(rows), "runs": [asdict(r) for r in runs]}))
        return 0
    command = ".venv/bin/python bench/snmp/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n\n".join(
        [
            f"{when} — {started}",
            f"Command: `{command.strip()}`",
            f"Versions: {versions()}. Target: net-snmp `snmpd` on 127.0.0.1 serving this host's MIB-2 "
            f"(v2c, GETBULK max-repetitions {MAX_REPETITIONS} on every side); median of {args.repeats} "
            "interleaved runs per side; CPU of the side doing the walking only (this process for "
            "netwatch and pysnmp, the child for snmpbulkwalk, the exporter's PID for snmp_exporter).",
            table(rows),
            ratio_lines(rows),
        ]
        + ([args.note] if args.note else [])
    )
    print(body)
    if args.record:
        record(args.record, body)
        print(f"\nappended to {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
