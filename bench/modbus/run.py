"""Modbus probe overhead: requests/s and CPU per request through ``ModbusProbe.collect`` against the
same reads done with a bare pymodbus client (read + pymodbus' own converters), in the same run,
against the same pymodbus server (a child process, so its CPU is not ours).

    .venv/bin/python bench/modbus/run.py [--requests 2000] [--repeats 3] [--record bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

#: Turns per repeat and subject (see bench()).
CHUNKS = 10
METER_POINTS = 20  # float32 values, words swapped (CDAB): one request of 40 registers


def serve(port: int) -> None:
    """The server child: unit 1 a Renke T/H sensor, unit 3 a 20-value power meter."""
    import logging

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    from probes.modbus.codec import encode

    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)

    def device(unit: int, holding: list[int]) -> SimDevice:
        return SimDevice(
            unit,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=holding, datatype=DataType.REGISTERS)],
                [SimData(0, values=[0], datatype=DataType.REGISTERS)],
            ),
        )

    meter = [w for i in range(METER_POINTS) for w in encode(230.0 + i / 10, "float32", "CDAB")]

    async def main() -> None:
        server = ModbusTcpServer([device(1, [553, 235]), device(3, meter)], address=("127.0.0.1", port))
        await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"server not listening on {port} after {timeout_s} s")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of another process, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    case: str
    subject: str
    requests: int
    wall_s: float
    cpu_s: float
    server_cpu_s: float

    @property
    def per_s(self) -> float:
        return self.requests / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.requests * 1e6


async def measure(case: str, subject: str, n: int, one: Callable[[], Awaitable[Any]], server_pid: int) -> Run:
    """``n`` sequential calls of ``one`` (each one read request), timed on the wall and the CPU clock."""
    s0 = proc_cpu_s(server_pid)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await one()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return Run(case, subject, n, wall, cpu, proc_cpu_s(server_pid) - s0)


def merged(case: str, subject: str, turns: list[Run]) -> Run:
    return Run(
        case,
        subject,
        sum(t.requests for t in turns),
        sum(t.wall_s for t in turns),
        sum(t.cpu_s for t in turns),
        sum(t.server_cpu_s for t in turns),
    )


async def bench(port: int, server_pid: int, n: int, repeats: int) -> list[Run]:
    from pymodbus.client import AsyncModbusTcpClient

    from probes.modbus.config import ModbusConfig
    from probes.modbus.probe import ModbusProbe

    url = f"tcp://127.0.0.1:{port}"
    meter_map = {
        "model": "bench meter",
        "order": "CDAB",
        "points": [
            {"name": f"v{i}", "table": "holding", "address": 2 * i, "type": "float32", "unit": "V"}
            for i in range(METER_POINTS)
        ],
    }
    renke = ModbusProbe(ModbusConfig.model_validate({"target": url, "unit": 1, "map": "renke_rs_ws_n01"}), name="th")
    meter = ModbusProbe(ModbusConfig.model_validate({"target": url, "unit": 3, "map": meter_map}), name="meter")
    assert len(renke.blocks) == len(meter.blocks) == 1  # one request per collect, like the peer

    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    await client.connect()
    conv, dtype = client.convert_from_registers, client.DATATYPE

    async def bare_renke() -> tuple[float, float]:
        regs = (await client.read_holding_registers(0, count=2, device_id=1)).registers
        return conv(regs[0:1], dtype.UINT16) / 10, conv(regs[1:2], dtype.INT16) / 10  # type: ignore[operator]

    async def bare_meter() -> list[float]:
        regs = (await client.read_holding_registers(0, count=2 * METER_POINTS, device_id=3)).registers
        return [conv(regs[2 * i : 2 * i + 2], dtype.FLOAT32, word_order="little") for i in range(METER_POINTS)]  # type: ignore[misc]

    async def probe_ok(p: ModbusProbe) -> None:
        samples = await p.collect()
        assert samples[-1].fields["status"] == "ok", samples[-1].fields

    # Same answers from both before timing anything.
    th = await renke.collect()
    assert (th[0].fields["humidity_pct"], th[0].fields["temperature_c"]) == await bare_renke()
    m = await meter.collect()
    assert [s.fields["value"] for s in m if s.measurement == "modbus_point"] == [
        round(v, 1) for v in await bare_meter()
    ]

    cases: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = [
        ("Renke T/H: 2 registers, 2 points + dew point", bare_renke, lambda: probe_ok(renke)),
        (f"meter: {2 * METER_POINTS} registers, {METER_POINTS} float32 CDAB", bare_meter, lambda: probe_ok(meter)),
    ]
    runs: list[Run] = []
    for case, peer, ours in cases:
        await measure(case, "warm-up", max(100, n // 10), peer, server_pid)
        await measure(case, "warm-up", max(100, n // 10), ours, server_pid)
        for _ in range(repeats):
            # One repeat is CHUNKS short turns each, alternating peer-netwatch and netwatch-peer,
            # summed per subject: drift in machine load within the repeat falls on both alike, and
            # neither always runs first after the switch.
            turns: dict[str, list[Run]] = {"peer": [], "netwatch": []}
            for k in range(CHUNKS):
                order = [("peer", peer), ("netwatch", ours)]
                for subject, one in order if k % 2 == 0 else order[::-1]:
                    turns[subject].append(await measure(case, subject, max(1, n // CHUNKS), one, server_pid))
            runs.extend(merged(case, subject, turns[subject]) for subject in ("peer", "netwatch"))
    client.close()
    await renke.aclose()
    await meter.aclose()
    return runs


def median(runs: list[Run], case: str, subject: str, key: Callable[[Run], float]) -> tuple[float, float, float]:
    vals = [key(r) for r in runs if r.case == case and r.subject == subject]
    return statistics.median(vals), min(vals), max(vals)


def report(runs: list[Run], command: str, n: int, repeats: int) -> str:
    load = os.getloadavg()[0]
    out = [
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC — {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}, 1-min load average {load:.2f} at the end of the run",
        "",
        f"Command: `{command}`",
        "",
        f"Each case: {n:,} sequential read requests per run over one Modbus TCP connection to a pymodbus server "
        f"in a child process; median of {repeats} runs after a warm-up, each run {CHUNKS} turns of {n // CHUNKS:,} "
        "requests alternating with the peer's (peer first, then netwatch first). CPU is this process only "
        "(time.process_time); the server's is shown apart. Peer: a bare `AsyncModbusTcpClient` doing the same "
        "read and converting with pymodbus' `convert_from_registers`; netwatch: `ModbusProbe.collect()` (plan, "
        "bus queue, per-request timeout, decode, Samples, probe_status).",
        "",
        "| case | subject | requests/s | range | CPU-µs/request | server CPU-µs/request |",
        "|---|---|---:|---:|---:|---:|",
    ]
    summary = []
    for case in dict.fromkeys(r.case for r in runs):
        row = {}
        for subject in ("peer", "netwatch"):
            rate, lo, hi = median(runs, case, subject, lambda r: r.per_s)
            cpu, _, _ = median(runs, case, subject, lambda r: r.cpu_us)
            srv, _, _ = median(runs, case, subject, lambda r: r.server_cpu_s / r.requests * 1e6)
            row[subject] = (rate, cpu)
            name = "peer: bare pymodbus client" if subject == "peer" else "netwatch ModbusProbe"
            out.append(f"| {case} | {name} | {rate:,.0f} | {lo:,.0f}–{hi:,.0f} | {cpu:.0f} | {srv:.0f} |")
        (p_rate, p_cpu), (n_rate, n_cpu) = row["peer"], row["netwatch"]
        # Other load on the machine only ever adds CPU time, so the quietest run of each is a
        # second, less noisy estimate of the overhead.
        best_p = median(runs, case, "peer", lambda r: r.cpu_us)[1]
        best_n = median(runs, case, "netwatch", lambda r: r.cpu_us)[1]
        # Each repeat interleaves the peer's turns with netwatch's: the ratio within a pair sees the
        # same machine state, so the median of those ratios is the least drift-prone estimate.
        peers = [r for r in runs if r.case == case and r.subject == "peer"]
        ours = [r for r in runs if r.case == case and r.subject == "netwatch"]
        paired = sorted(n.cpu_us / p.cpu_us for p, n in zip(peers, ours, strict=True))
        q1, q3 = paired[len(paired) // 4], paired[(3 * len(paired)) // 4]
        summary.append(
            f"- {case}: netwatch/peer throughput **{n_rate / p_rate:.2f}×**, CPU per request "
            f"**{n_cpu / p_cpu:.2f}×** — overhead {100 * (n_cpu / p_cpu - 1):+.0f} % CPU "
            f"({n_cpu - p_cpu:+.0f} µs), {100 * (p_rate / n_rate - 1):+.0f} % time per request; "
            f"quietest runs: {best_p:.0f} vs {best_n:.0f} CPU-µs, {100 * (best_n / best_p - 1):+.0f} %; "
            f"interleaved pairs: median overhead **{100 * (statistics.median(paired) - 1):+.0f} %** "
            f"(quartiles {100 * (q1 - 1):+.0f} % to {100 * (q3 - 1):+.0f} %, {len(paired)} pairs)"
        )
    return "\n".join(out + [""] + summary)


def record(path: Path, body: str, interpretation: str) -> None:
    """Append our section; another bench may be appending its own at the same time, so read just
    before, add a header only to a missing file, and write in one append."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    head = "" if existing.strip() else "# Benchmark results\n"
    sep = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    with path.open("a", encoding="utf-8") as f:
        f.write(f"{head}{sep}## modbus\n\n{body}\n\n{interpretation}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per run and case")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--record", type=Path, help="append the result to this file (bench/RESULTS.md)")
    ap.add_argument("--note", default="", help="a sentence of interpretation to record with the table")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_port(port, proc)
        runs = asyncio.run(bench(port, proc.pid, args.requests, args.repeats))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    command = ".venv/bin/python bench/modbus/run.py " + " ".join(sys.argv[1:])
    body = report(runs, command.strip(), args.requests, args.repeats)
    print(body)
    if args.record:
        record(args.record, body, args.note)
        print(f"\nappended to {args.record}")


if __name__ == "__main__":
    main()
