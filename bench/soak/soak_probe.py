"""The simulated township's devices for the soak: a probe that "measures" ``series`` switch ports
and writes one line per run to a run log *before* it hands anything to the agent.

The run log is the soak's oracle, like the target's own log in the crash-window drill: it is
written by the thing being measured, with ``os.write`` on an ``O_APPEND`` file (in the kernel as
soon as the call returns, so a SIGKILL of the agent process cannot take it back), and the values
are a fixed function of (agent, port, time) that the checker recomputes from the log alone.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import ClassVar

from probes.base import Probe, ProbeConfig
from probes.model import Sample, status_sample

MEASUREMENT = "soak"
FIELDS = ("in_bps", "util_pct")
PORTS_PER_DEVICE = 8


class SoakConfig(ProbeConfig):
    series: int = 84
    runlog: str


def port_name(i: int) -> str:
    return f"p{i:03d}"


def device_name(i: int) -> str:
    return f"sw{i // PORTS_PER_DEVICE:02d}"


def values(agent: str, port: int, time_ns: int) -> tuple[float, float]:
    """The two field values of ``agent``'s ``port`` measured at ``time_ns`` (exact in float64 and
    in VictoriaMetrics' storage: an integer below 2**30, and a multiple of 1/8 below 100)."""
    base = zlib.crc32(f"{agent}/{port}".encode())
    second = time_ns // 1_000_000_000
    return float((base + second * 7919) % 1_000_000_007), ((base + second) % 800) / 8.0


class SoakProbe(Probe):
    kind: ClassVar[str] = "soak"
    config_model: ClassVar[type[SoakConfig]] = SoakConfig
    config: SoakConfig

    def __init__(self, config: SoakConfig, *, name: str, timeout_s: float = 10.0) -> None:
        super().__init__(config, name=name, timeout_s=timeout_s)
        self._log = os.open(config.runlog, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def collect(self) -> list[Sample]:
        t = time.time_ns()
        t -= t % 1_000_000  # VictoriaMetrics keeps milliseconds: the log and the store agree exactly
        os.write(self._log, f"{self.name} {t}\n".encode())
        out = []
        for i in range(self.config.series):
            a, b = values(self.name, i, t)
            out.append(
                Sample(MEASUREMENT, {"device": device_name(i), "port": port_name(i)}, {FIELDS[0]: a, FIELDS[1]: b}, t)
            )
        out.append(status_sample(self.kind, self.name, "ok"))
        return out

    async def aclose(self) -> None:
        os.close(self._log)
