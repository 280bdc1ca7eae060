"""Poll one SNMP device with its profiles: ``snmp_system``, ``interface``, ``device_cpu``,
``device_memory``, ``device_sensor``, ``ups``, ``pdu`` Samples and a ``probe_status`` saying ok,
degraded (part of the data) or down (no answer, or credentials refused)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

from probes.base import Probe
from probes.model import FieldValue, Sample, Status, status_sample
from probes.snmp.config import SnmpConfig
from probes.snmp.connect import open_session
from probes.snmp.poll import Poller
from probes.snmp.session import SnmpAuthError, SnmpError, SnmpSession

log = logging.getLogger("netwatch.snmp")
_SHOWN_PROBLEMS = 3


class SnmpProbe(Probe):
    kind: ClassVar[str] = "snmp"
    config_model: ClassVar[type[SnmpConfig]] = SnmpConfig
    #: a weak access switch answers ~1 request/s: its 52 ports take ~45 s, paced by probes/snmp/adapt.py
    interval_share: ClassVar[float | None] = 0.9
    config: SnmpConfig

    def __init__(self, config: SnmpConfig, *, name: str, timeout_s: float = 10.0) -> None:
        super().__init__(config, name=name, timeout_s=timeout_s)
        self.poller = Poller(name, config)
        self._session: SnmpSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_status: Status | None = None
        self._last_adapted = ""

    def describe(self) -> str:
        cfg = self.config
        return f"snmp {self.name} ({cfg.address}, v{cfg.version}, profile {cfg.profile})"

    async def _session_now(self) -> SnmpSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is not loop:
            await self.aclose()  # a session belongs to the event loop it was opened on
        if self._session is None:
            self._session = open_session(self.config, self.poller.adaptive)
            self._loop = loop
        return self._session

    async def collect(self) -> list[Sample]:
        cfg = self.config
        t0 = time.perf_counter()
        where = f"device {self.name}"
        samples: list[Sample] = []
        withheld = 0
        try:
            session = await self._session_now()
            outcome = await self.poller.poll(session, budget_s=self.budget_s)
        except SnmpAuthError as e:
            status: Status = "down"
            error = f"{where}: {e}"
        except SnmpError as e:
            status, error = "down", f"{where}: {e}"
        except TimeoutError:
            status = "down"
            error = (
                f"{where} ({cfg.address}): no answer to the first request within {self.budget_s:g} s"
                " — check the address and credentials, or raise the entry's timeout"
            )
        else:
            samples, withheld = outcome.samples, outcome.withheld
            if outcome.problems:
                status = "degraded"
                shown = outcome.problems[:_SHOWN_PROBLEMS]
                more = len(outcome.problems) - len(shown)
                error = f"{where}: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
            else:
                status, error = "ok", ""
        self._log_change(status, error)
        st = status_sample(self.kind, self.name, status, error=error, duration_ms=(time.perf_counter() - t0) * 1000.0)
        fields = {**st.fields, **self._pacing_fields(), "rows_withheld": withheld}
        samples.append(Sample(st.measurement, st.tags, fields, st.time_ns))
        return samples

    def _pacing_fields(self) -> dict[str, FieldValue]:
        """How this device is being paced (see adapt.py): ``adapted`` says when and to what it
        backed off from the configured settings (empty when it did not)."""
        a = self.poller.adaptive
        adapted = a.describe()
        if adapted and adapted != self._last_adapted:
            log.info("device %s: %s", self.name, adapted)
        self._last_adapted = adapted
        fields: dict[str, FieldValue] = {
            "adapted": adapted,
            "in_flight": a.in_flight,
            "request_timeout_s": round(a.rto_s, 3),
            "max_repetitions": a.max_repetitions,
        }
        if a.srtt is not None:
            fields["rtt_ms"] = round(a.srtt * 1000.0, 3)
        return fields

    def _log_change(self, status: Status, error: str) -> None:
        # The first failure and the recovery, not every poll.
        if status != "ok" and self._last_status in (None, "ok"):
            log.warning("%s", error)
        elif status == "ok" and self._last_status not in (None, "ok"):
            log.info("device %s answers again", self.name)
        self._last_status = status

    async def aclose(self) -> None:
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()
