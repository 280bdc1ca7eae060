"""Probe-result durability — what closing the crash window costs the agent per probe run.

Each case drives the agent's own path for N probe runs of 2 samples each (an http sample and its
probe_status), cut into a batch every 100 runs (what ``publish.batch_interval`` does in the
agent), against a real spool file on this machine's disk:

- ``before``: the old path — results wait in memory until the batch is cut (the crash window);
- ``journal normal``: each run journaled before it starts and its result when measured, in WAL
  with ``synchronous=NORMAL`` (``spool.sync: normal``, the default: survives the process being
  killed, not power loss);
- ``journal full``: the same with an fsync per commit (``spool.sync: full``: survives power loss).

``--per-turn`` results finish in the same turn of the event loop (group commit). Reported: runs/s
and CPU-µs per sample (this process, time.process_time), the event loop blocked per journal
commit (p50/p99) and bytes the process wrote to disk per sample. Median of ``--repeats``
interleaved runs. The spool lives in a temporary directory under ``--dir`` (default: beside this
file, on the disk the worktree is on — not tmpfs, where fsync is free).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from agent.journal import Journal
from agent.runner import _encode
from agent.spool import Spool
from probes.model import Sample, status_sample

CUT_EVERY = 100  # runs per batch


def _samples(i: int) -> list[Sample]:
    tags = {"target": f"portal-{i % 50}", "url": f"https://10.0.{i % 50}.1/", "site": "t1", "agent": "a1"}
    fields = {"status_code": 200, "response_ms": 12.5 + i % 7, "content_bytes": 5120 + i, "cert_days_left": 80.5}
    return [Sample("http", tags, fields), status_sample("http", tags["target"], "ok", duration_ms=13.1)]


async def _case(mode: str, runs: int, per_turn: int, where: Path) -> dict[str, float]:
    d = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=where))
    sp = Spool(d / "spool.db", max_bytes=1 << 30, max_age_s=86400, journal_sync="full" if mode == "full" else "normal")
    buf: list[tuple[int, Sample]] = []
    j = Journal(sp, {"site": "t1", "agent": "a1"}, buf.extend)
    lat: list[float] = []
    real = sp.journal

    def timed(*a: Any) -> None:
        t = time.perf_counter()
        real(*a)
        lat.append(time.perf_counter() - t)

    sp.journal = timed  # type: ignore[method-assign]
    io0 = psutil.Process().io_counters().write_bytes
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = 0
    while done < runs:
        n = min(per_turn, runs - done)
        if mode == "before":
            for k in range(n):
                buf.extend((0, s) for s in _samples(done + k))
        else:
            ids = [j.begin("http", f"portal-{(done + k) % 50}", "t") for k in range(n)]
            for k, run in enumerate(ids):
                s = _samples(done + k)
                buf.extend(zip(j.record(s), s, strict=True))
                j.end(run)
        await asyncio.sleep(0)  # the loop turn ends: the group commit
        prev, done = done, done + n
        if done // CUT_EVERY != prev // CUT_EVERY or done == runs:  # the batch cut, as Agent.flush
            if mode != "before":
                j.commit()
            rows, buf[:] = buf[:], []
            batch = [s for _, s in rows]
            sp.put(partial(_encode, "a1", "t1", batch, True), len(batch), release_upto=max(i for i, _ in rows))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    written = psutil.Process().io_counters().write_bytes - io0
    assert sp.journaled() == [] and sp.stats().depth == -(-runs // CUT_EVERY)
    sp.close()
    shutil.rmtree(d)
    lat.sort()
    samples = runs * 2
    return {
        "runs_s": runs / wall,
        "cpu_us": cpu / samples * 1e6,
        "p50_ms": lat[len(lat) // 2] * 1e3 if lat else 0.0,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else 0.0,
        "bytes": written / samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2000, help="probe runs per case and repeat")
    ap.add_argument("--per-turn", type=int, nargs="+", default=[1, 8], help="results finishing per loop turn")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent, help="where the spool goes")
    ap.add_argument("--record", type=Path, help="append the result to this RESULTS.md")
    a = ap.parse_args()
    modes = ["before", "normal", "full"]
    names = {
        "before": "before: in memory until the batch",
        "normal": "journal, sync normal (default)",
        "full": "journal, sync full",
    }
    res: dict[tuple[int, str], list[dict[str, float]]] = {}
    load0 = os.getloadavg()[0]
    for _ in range(a.repeats):
        for pt in a.per_turn:
            for m in modes:
                res.setdefault((pt, m), []).append(asyncio.run(_case(m, a.runs, pt, a.dir)))
    load1 = os.getloadavg()[0]
    cmd = "$ .venv/bin/python " + " ".join(shlex.quote(x) for x in sys.argv)
    lines = [
        "## journal (probe-result durability)",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC — {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}, spool on {a.dir} (ext4, virtio disk); 1-min load average {load0:.2f} at the start, "
        f"{load1:.2f} at the end (the machine was shared with other helpers' test runs)",
        "",
        f"Command: `{cmd[2:]}`",
        "",
        f"{a.runs} probe runs of 2 samples per case, a batch cut every {CUT_EVERY} runs; median of {a.repeats} "
        "interleaved repeats. CPU: this process only. Loop blocked: time one journal commit holds the event loop.",
        "",
        "| results per loop turn | path | runs/s | CPU-µs/sample | loop blocked per commit p50 / p99 | bytes written/sample |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for pt in a.per_turn:
        for m in modes:
            rs = res[(pt, m)]

            def med(k: str, rs: list[dict[str, float]] = rs) -> float:
                return statistics.median(r[k] for r in rs)

            blocked = "—" if m == "before" else f"{med('p50_ms'):.3f} / {med('p99_ms'):.3f} ms"
            lines.append(
                f"| {pt} | {names[m]} | {med('runs_s'):,.0f} | {med('cpu_us'):.1f} | {blocked} | {med('bytes'):,.0f} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.record:
        with a.record.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
