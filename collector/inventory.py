"""The inventory stage: what the centre knows of each agent — site, status, version, batches and
samples stored, duplicates dropped, and the agent's own account of its spool — kept in state.db,
with the agents' and devices' up/down changes for the availability report (collector/availability.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from collector.availability import DeviceTracker, agent_change_time
from collector.ingest import Accepted, StatusUpdate
from collector.state import StateDB
from protocol.status import HEALTH_MEASUREMENT


class Inventory:
    def __init__(self, state: StateDB, county_of: Callable[[str], str] | None = None) -> None:
        self.state = state
        #: an agent's county, for its availability changes (the registry's word)
        self.county_of = county_of or (lambda agent: "")
        self.devices = DeviceTracker(state.transitions)

    def record(
        self,
        accepted: Sequence[Accepted],
        statuses: Sequence[StatusUpdate],
        counts: Mapping[str, Mapping[str, int]],
    ) -> None:
        """Record one stored group of messages and the per-agent counts of the ingest stage
        (``Ingest.take_counts``); the caller holds the state.db transaction."""
        for a in accepted:
            e = a.envelope
            self.state.record_batch(e.agent, e.site, e.seq, len(e.samples))
            health = next((s for s in reversed(e.samples) if s.measurement == HEALTH_MEASUREMENT), None)
            if health is not None:
                self.state.record_agent_health(e.agent, health.fields)
            self.devices.observe(e.samples)
        log = self.state.transitions
        for st in statuses:
            self.state.record_status(st.agent, st.status)
            last = log.last("agent", st.agent)
            at = agent_change_time(st.status.time_ns, time.time_ns(), last[1] if last else None)
            log.note(
                "agent",
                st.agent,
                "up" if st.status.state == "online" else "down",
                at,
                site=st.status.site,
                county=self.county_of(st.agent),
            )
        for column in ("duplicates", "identity_overridden", "over_quota"):
            for agent, n in counts.get(column, {}).items():
                self.state.add_to_agent(column, agent, n)
        for agent, n in counts.get("unknown", {}).items():
            self.state.record_unknown(agent, n)
