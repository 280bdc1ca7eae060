"""The agent's own node through psutil: CPU, load, memory, swap, disks, interfaces, uptime and,
when a time daemon can tell, the clock offset. Counters are read raw; rates come from the
previous reading this probe holds."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import psutil

from probes.base import Probe
from probes.host.config import HostConfig
from probes.host.timesync import read_clock
from probes.model import Sample, Status, clean_fields, status_sample

#: How long the first poll watches the CPU when there is no previous reading to compare with.
FIRST_CPU_WINDOW_S = 0.2
#: Share of the budget the clock lookup may use; the daemons' clients answer in milliseconds.
CLOCK_BUDGET_S = 2.0

# psutil's cpu_times fields summed into "busy"; guest time is already inside user/nice on Linux.
_CPU_PCT_FIELDS = ("user", "system", "idle", "iowait", "steal")
_NOT_IN_TOTAL = ("guest", "guest_nice")
_NET_COUNTERS = (
    "bytes_sent",
    "bytes_recv",
    "packets_sent",
    "packets_recv",
    "errin",
    "errout",
    "dropin",
    "dropout",
)
_NET_FIELD = {"errin": "errors_in", "errout": "errors_out", "dropin": "drops_in", "dropout": "drops_out"}


class PartError(Exception):
    """One part of the host could not be read; the rest still is."""


#: What one part gives: its Samples, and problems that left it with part of its data.
PartResult = tuple[list[Sample], list[str]]


# --- pure maths, unit-tested ---------------------------------------------------------------------


def cpu_percentages(before: NamedTuple, after: NamedTuple) -> dict[str, float] | None:
    """Per-state CPU % between two ``psutil.cpu_times()`` readings; None if no time passed.

    ``usage_pct`` counts everything but idle and iowait, as ``psutil.cpu_percent`` does.
    """
    names = after._fields
    deltas = {n: max(0.0, getattr(after, n) - getattr(before, n)) for n in names}
    total = sum(v for n, v in deltas.items() if n not in _NOT_IN_TOTAL)
    if total <= 0:
        return None
    out = {f"{n}_pct": 100.0 * deltas[n] / total for n in _CPU_PCT_FIELDS if n in deltas}
    idle = deltas.get("idle", 0.0) + deltas.get("iowait", 0.0)
    out["usage_pct"] = min(100.0, max(0.0, 100.0 * (total - idle) / total))
    return out


@dataclass(frozen=True, slots=True)
class CounterReading:
    at_s: float  # monotonic seconds
    values: Mapping[str, int]


def counter_rates(prev: CounterReading | None, cur: CounterReading) -> dict[str, float] | None:
    """Per-second rates of each counter since ``prev``; None on the first reading or when any
    counter went back (interface re-created, driver reset, 32-bit wrap) — a gap, not a spike."""
    if prev is None:
        return None
    dt = cur.at_s - prev.at_s
    if dt <= 0:
        return None
    rates: dict[str, float] = {}
    for name, value in cur.values.items():
        before = prev.values.get(name)
        if before is None or value < before:
            return None
        rates[name] = (value - before) / dt
    return rates


# --- the probe -----------------------------------------------------------------------------------


class HostProbe(Probe):
    kind: ClassVar[str] = "host"
    config_model: ClassVar[type[HostConfig]] = HostConfig
    config: HostConfig

    def __init__(self, config: HostConfig, *, name: str, timeout_s: float = 10.0) -> None:
        super().__init__(config, name=name, timeout_s=timeout_s)
        self._cpu_prev: tuple[Any, list[Any]] | None = None
        self._net_prev: dict[str, CounterReading] = {}
        self._statvfs_pending: dict[str, asyncio.Future[os.statvfs_result]] = {}

    async def collect(self) -> list[Sample]:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        deadline = loop.time() + self.budget_s
        readers: dict[str, Callable[[float], Awaitable[PartResult]]] = {
            "cpu": self._cpu,
            "memory": self._memory,
            "swap": self._swap,
            "disk": self._disk,
            "net": self._net,
            "system": self._system,
            "time": self._time,
        }
        parts = list(self.config.include)

        # Parts that watch their own time (one slow mount) get to say so a moment before the
        # hard stop that catches any part that does not.
        soft_deadline = deadline - min(0.05, self.budget_s * 0.1)

        async def bounded(part: str) -> PartResult:
            try:
                return await asyncio.wait_for(readers[part](soft_deadline), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise PartError(f"{part}: no reading within {self.budget_s:g} s") from None

        results = await asyncio.gather(*(bounded(p) for p in parts), return_exceptions=True)
        samples: list[Sample] = []
        problems: list[str] = []
        failed = 0
        for part, res in zip(parts, results, strict=True):
            if isinstance(res, PartError):
                problems.append(str(res))
                failed += 1
            elif isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                problems.append(f"{part}: {type(res).__name__}: {res}")
                failed += 1
            else:
                samples.extend(res[0])
                problems.extend(res[1])
        status: Status = "ok" if not problems else ("down" if failed == len(parts) else "degraded")
        error = f"host {self.target}: " + "; ".join(problems) if problems else ""
        samples.append(
            status_sample(self.kind, self.target, status, error=error, duration_ms=(time.perf_counter() - t0) * 1000)
        )
        return samples

    def _sample(self, measurement: str, fields: Mapping[str, Any], **tags: str) -> Sample:
        return Sample(measurement, {"target": self.target, **tags}, clean_fields(fields))

    # --- parts ---

    def _read_cpu(self) -> tuple[Any, list[Any]]:
        return psutil.cpu_times(), (psutil.cpu_times(percpu=True) if self.config.per_cpu else [])

    async def _cpu(self, deadline: float) -> PartResult:
        loop = asyncio.get_running_loop()
        cur = await asyncio.to_thread(self._read_cpu)
        prev = self._cpu_prev
        if prev is None:
            # No earlier reading: watch a short window now rather than report since-boot averages.
            await asyncio.sleep(min(FIRST_CPU_WINDOW_S, max(0.0, deadline - loop.time()) / 4))
            prev, cur = cur, await asyncio.to_thread(self._read_cpu)
        self._cpu_prev = cur
        out: list[Sample] = []
        total = cpu_percentages(prev[0], cur[0])
        if total is not None:
            out.append(self._sample("host_cpu", total, cpu="total"))
        if len(prev[1]) == len(cur[1]):  # CPUs hot-plugged in between: skip per-CPU this once
            for i, (a, b) in enumerate(zip(prev[1], cur[1], strict=True)):
                pct = cpu_percentages(a, b)
                if pct is not None:
                    out.append(self._sample("host_cpu", pct, cpu=f"cpu{i}"))
        return out, []

    async def _memory(self, deadline: float) -> PartResult:
        vm = await asyncio.to_thread(psutil.virtual_memory)
        fields = {
            "total_bytes": vm.total,
            "used_bytes": vm.used,
            "available_bytes": vm.available,
            "free_bytes": vm.free,
            "used_pct": float(vm.percent),
        }
        return [self._sample("host_memory", fields)], []

    async def _swap(self, deadline: float) -> PartResult:
        sw = await asyncio.to_thread(psutil.swap_memory)
        fields = {
            "total_bytes": sw.total,
            "used_bytes": sw.used,
            "free_bytes": sw.free,
            "used_pct": float(sw.percent),
        }
        return [self._sample("host_swap", fields)], []

    async def _system(self, deadline: float) -> PartResult:
        def read() -> dict[str, Any]:
            boot = psutil.boot_time()
            load1, load5, load15 = psutil.getloadavg()
            return {
                "load1": load1,
                "load5": load5,
                "load15": load15,
                "uptime_s": max(0.0, time.time() - boot),
                "boot_time_s": int(boot),
                "cpu_count": psutil.cpu_count() or None,
                "process_count": len(psutil.pids()),
            }

        return [self._sample("host_system", await asyncio.to_thread(read))], []

    async def _time(self, deadline: float) -> PartResult:
        loop = asyncio.get_running_loop()
        reading = await read_clock(min(CLOCK_BUDGET_S, max(0.0, deadline - loop.time())))
        if reading is None:
            return [], []  # no daemon answered: the offset is unknown, and unknown is not reported
        fields = {"offset_ms": reading.offset_ms, "synced": reading.synced, "source": reading.source}
        return [self._sample("host_time", fields)], []

    def _mounts(self) -> list[Any]:
        ignore = set(self.config.ignore_fstypes)
        seen: set[str] = set()
        out = []
        for part in psutil.disk_partitions(all=True):
            if part.fstype in ignore or part.mountpoint in seen or not self.config.mounts.matches(part.mountpoint):
                continue
            seen.add(part.mountpoint)
            out.append(part)
        return out

    async def _disk(self, deadline: float) -> PartResult:
        loop = asyncio.get_running_loop()
        mounts = await asyncio.to_thread(self._mounts)

        async def one(part: Any) -> Sample | str | None:
            mp = part.mountpoint
            # Each mount in its own thread: a hung NFS server stalls only its own mount. A call
            # still stuck from an earlier poll is not repeated, so hung mounts cannot pile up
            # threads until the agent's executor is full.
            pending = self._statvfs_pending.get(mp)
            if pending is not None:
                return (
                    f"disk {mp}: statvfs still has not answered since an earlier poll — check that filesystem's server"
                )
            call = loop.run_in_executor(None, os.statvfs, mp)
            self._statvfs_pending[mp] = call
            call.add_done_callback(functools.partial(self._statvfs_done, mp))
            try:
                st = await asyncio.wait_for(asyncio.shield(call), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return f"disk {mp}: statvfs gave no answer in time — check that filesystem's server"
            except OSError as e:
                return f"disk {part.mountpoint}: {e.strerror}"
            if st.f_blocks == 0:
                return None  # a filesystem with no blocks holds nothing to fill
            total = st.f_blocks * st.f_frsize
            free = st.f_bavail * st.f_frsize
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            # As df: the share of what non-root users could use, root's reserve left out.
            fields: dict[str, Any] = {
                "total_bytes": total,
                "used_bytes": used,
                "free_bytes": free,
                "used_pct": 100.0 * used / (used + free) if used + free else None,
                "inodes_total": st.f_files or None,
                "inodes_used": (st.f_files - st.f_ffree) if st.f_files else None,
                "inodes_used_pct": 100.0 * (st.f_files - st.f_ffree) / st.f_files if st.f_files else None,
            }
            return self._sample("host_disk", fields, mount=part.mountpoint, fstype=part.fstype, device=part.device)

        results = await asyncio.gather(*(one(p) for p in mounts))
        problems = [r for r in results if isinstance(r, str)]
        samples = [r for r in results if isinstance(r, Sample)]
        if problems and not samples:
            raise PartError("; ".join(problems))
        return samples, problems

    def _statvfs_done(self, mountpoint: str, call: asyncio.Future[os.statvfs_result]) -> None:
        self._statvfs_pending.pop(mountpoint, None)
        if not call.cancelled():
            call.exception()  # a late answer or error of an abandoned call: retrieved, not logged

    async def _net(self, deadline: float) -> PartResult:
        def read() -> tuple[float, dict[str, Any], dict[str, Any]]:
            return time.monotonic(), psutil.net_io_counters(pernic=True, nowrap=False), psutil.net_if_stats()

        at, counters, stats = await asyncio.to_thread(read)
        out: list[Sample] = []
        seen: set[str] = set()
        for name, c in counters.items():
            if not self.config.interfaces.matches(name):
                continue
            seen.add(name)
            cur = CounterReading(at, {k: getattr(c, k) for k in _NET_COUNTERS})
            rates = counter_rates(self._net_prev.get(name), cur)
            self._net_prev[name] = cur
            fields: dict[str, Any] = {_NET_FIELD.get(k, k): v for k, v in cur.values.items()}
            st = stats.get(name)
            fields["link_up"] = bool(st.isup) if st is not None else None
            if rates is not None:
                fields["recv_bps"] = rates["bytes_recv"] * 8.0
                fields["sent_bps"] = rates["bytes_sent"] * 8.0
                fields["recv_pps"] = rates["packets_recv"]
                fields["sent_pps"] = rates["packets_sent"]
            out.append(self._sample("host_net", fields, interface=name))
        for gone in set(self._net_prev) - seen:  # interface removed: start afresh if it returns
            del self._net_prev[gone]
        return out, []
