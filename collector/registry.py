"""Who is who, decided at the centre: which agent serves which site, and the county above it.

The registry is the topology file (each site lists its ``agents``) plus the agents an operator
admitted (``netwatch-collector agents admit ID --site S``, kept in state.db). Every sample from an
agent gets its ``site`` and ``county`` from here, whatever its payload says; an agent the registry
does not know is refused and listed for an operator to admit. Without a topology file the
collector runs open: sites come from the agents themselves (fine on one machine, not in a city).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from collector.alerting.topology import Topology

log = logging.getLogger("netwatch.collector.registry")

COUNTY_KIND = "county"


class Registry:
    def __init__(self, topology: Topology | None, admitted: Mapping[str, str] | None = None) -> None:
        self.topology = topology
        self._identity: dict[str, dict[str, str]] = {}
        self.update_admitted(admitted or {})

    @classmethod
    def load(cls, topology_path: Path | None, admitted: Mapping[str, str] | None = None) -> Registry:
        reg = cls(Topology.load(topology_path) if topology_path is not None else None, admitted)
        if reg.open:
            log.warning(
                "no topology file: agents' sites are taken from what they send (set identity.topology, "
                "or alerting.topology, so that the centre decides)"
            )
        return reg

    @property
    def open(self) -> bool:
        """No registry: every agent the broker lets in is accepted with the site it names."""
        return self.topology is None

    def _stamp(self, site: str) -> dict[str, str]:
        out = {"site": site}
        topo = self.topology
        if topo is not None:
            cur: str | None = site
            while cur is not None:
                node = topo.sites.get(cur)
                if node is not None and node.kind == COUNTY_KIND:
                    out["county"] = cur
                    break
                cur = topo.parent.get(cur)
        return out

    def site_tags(self, site: str) -> dict[str, str]:
        """The tags the centre stamps for ``site``: site, and its county when the topology has one."""
        return self._stamp(site)

    def update_admitted(self, admitted: Mapping[str, str]) -> None:
        """(Re)build the identity table: the topology's agents, then those admitted by hand."""
        table: dict[str, dict[str, str]] = {}
        if self.topology is not None:
            for agent, site in self.topology.agent_site.items():
                table[agent] = self._stamp(site)
            for agent, site in admitted.items():
                if agent not in table:  # the topology file wins over an old admission
                    table[agent] = self._stamp(site)
        self._identity = table

    def identity(self, agent: str) -> dict[str, str] | None:
        """The tags the centre stamps on ``agent``'s samples (site, county); None: not known.
        In open mode, an empty dict: the agent's own site stands."""
        if self.topology is None:
            return {}
        return self._identity.get(agent)

    def known(self) -> set[str]:
        return set(self._identity)
