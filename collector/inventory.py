"""The inventory stage: what the centre knows of each agent — site, status, version, batches and
samples stored, duplicates dropped, and the agent's own account of its spool — kept in state.db."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from collector.ingest import Accepted, StatusUpdate
from collector.state import StateDB
from protocol.status import HEALTH_MEASUREMENT


class Inventory:
    def __init__(self, state: StateDB) -> None:
        self.state = state

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
        for st in statuses:
            self.state.record_status(st.agent, st.status)
        for column in ("duplicates", "identity_overridden", "over_quota"):
            for agent, n in counts.get(column, {}).items():
                self.state.add_to_agent(column, agent, n)
        for agent, n in counts.get("unknown", {}).items():
            self.state.record_unknown(agent, n)
