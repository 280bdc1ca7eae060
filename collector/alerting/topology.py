"""The site tree (city → counties → townships, any depth) and who is cut off when a site is
unreachable: pure functions from firing alerts and agent states to root causes and suppression."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError, field_validator, model_validator

from collector.alerting.rules import Matcher, Text, parse_matchers
from probes.configfile import ConfigError, StrictModel, problems_from, read_yaml

#: how a kind of site is counted in the "cut off" message: English one and many, Chinese (no
#: plural); a kind not listed is counted by its own name ("2 districts", "2 个district")
KIND_WORDS: dict[str, tuple[str, str, str]] = {
    "province": ("province", "provinces", "个省"),
    "city": ("city", "cities", "个市"),
    "county": ("county", "counties", "个县"),
    "township": ("township", "townships", "个乡镇"),
    "village": ("village", "villages", "个村"),
    "site": ("site", "sites", "个站点"),
}


def count_en(n: int, one: str, many: str) -> str:
    """``1 county``, ``2 counties``, ``0 counties``."""
    return f"{n} {one if n == 1 else many}"


class Uplink(BaseModel):
    """How the parent sees this site: an alert of ``rule`` whose labels match ``match`` — e.g. the
    parent agent's icmp/tcp probe tagged ``link=county-a``, or ``uplink_down`` on the parent's switch
    port (``device=sw-city, ifname=GE0/0/1``). Only alerts from ``agent`` (default: the parent
    site's agents) count: a township cannot declare its county cut off."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rule: str
    match: tuple[InstanceOf[Matcher], ...] = ()
    agent: str | None = None

    @field_validator("match", mode="before")
    @classmethod
    def _m(cls, v: Any) -> Any:
        return parse_matchers(v)


class Site(StrictModel):
    id: str = Field(pattern=r"^[\w.-]+$")
    name: Text | None = None
    kind: str = "site"
    agents: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    uplink: Uplink | None = None
    children: tuple[Site, ...] = ()

    def label(self, lang: str) -> str:
        return self.name.get(lang) if self.name else self.id


class TopologyFile(StrictModel):
    sites: tuple[Site, ...]

    @model_validator(mode="after")
    def _unique(self) -> TopologyFile:
        seen: set[str] = set()
        agents: dict[str, str] = {}
        for s, _ in _walk(self.sites, None):
            if s.id in seen:
                raise ValueError(f"site id {s.id!r} appears twice in the tree")
            seen.add(s.id)
            for a in s.agents:
                if a in agents:
                    raise ValueError(f"agent {a!r} is listed under both {agents[a]!r} and {s.id!r}")
                agents[a] = s.id
        return self


def _walk(sites: Iterable[Site], parent: Site | None) -> Iterator[tuple[Site, Site | None]]:
    for s in sites:
        yield s, parent
        yield from _walk(s.children, s)


@dataclass(frozen=True, slots=True)
class CutOff:
    """One unreachable site that is a root cause (its parent is reachable), and what it hides."""

    site: str
    reason: str  # "uplink" or "agents"
    below: tuple[str, ...]  # every site under it
    devices: int

    def summary(self, topo: Topology, lang: str) -> str:
        name = topo.sites[self.site].label(lang)
        kinds: dict[str, int] = {}
        for sid in self.below:
            k = topo.sites[sid].kind
            kinds[k] = kinds.get(k, 0) + 1
        words = {k: KIND_WORDS.get(k, (k, k + "s", "个" + k)) for k in kinds}
        if lang == "zh":
            what = "、".join([*(f"{n} {words[k][2]}" for k, n in kinds.items()), f"{self.devices} 台设备"])
            return f"{name} 不可达 — {what}失联"
        en = [count_en(n, words[k][0], words[k][1]) for k, n in kinds.items()]
        return f"{name} unreachable — {', '.join([*en, count_en(self.devices, 'device', 'devices')])} cut off"


class Topology:
    def __init__(self, doc: TopologyFile) -> None:
        self.roots = doc.sites
        self.sites: dict[str, Site] = {}
        self.parent: dict[str, str | None] = {}
        self.agent_site: dict[str, str] = {}
        self.device_site: dict[str, str] = {}
        for s, p in _walk(doc.sites, None):
            self.sites[s.id] = s
            self.parent[s.id] = p.id if p else None
            for a in s.agents:
                self.agent_site[a] = s.id
            for d in s.devices:
                self.device_site[d] = s.id
        self._below = {sid: tuple(x.id for x, _ in _walk(s.children, s)) for sid, s in self.sites.items()}

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        doc = read_yaml(path)
        try:
            return cls(TopologyFile.model_validate(doc))
        except ValidationError as e:
            raise ConfigError(path, problems_from(e, TopologyFile)) from None

    def below(self, site: str) -> tuple[str, ...]:
        return self._below.get(site, ())

    def path(self, site: str) -> str:
        """``city/county-a/t1``: lets a route match a subtree with one regex."""
        parts: list[str] = []
        cur: str | None = site
        while cur is not None and len(parts) < 64:
            parts.append(cur)
            cur = self.parent.get(cur)
        return "/".join(reversed(parts))

    def ancestor_of_kind(self, site: str, kind: str) -> str | None:
        """The nearest of ``site`` and its ancestors that is of ``kind`` (its county, say)."""
        cur: str | None = site
        for _ in range(64):
            if cur is None:
                return None
            node = self.sites.get(cur)
            if node is not None and node.kind == kind:
                return cur
            cur = self.parent.get(cur)
        return None

    def site_of(self, labels: Mapping[str, str]) -> str | None:
        """The site an alert belongs to: its site tag, else the site of its agent or device."""
        for key, table in (("site", self.sites), ("agent", self.agent_site), ("device", self.device_site)):
            v = labels.get(key)
            if v and key == "site" and v in table:
                return v
            if v and key != "site" and v in table:
                return table[v]  # type: ignore[return-value]
        return None

    def evidence_agents(self, site: str) -> frozenset[str]:
        """The agents whose alerts may say ``site``'s uplink is down."""
        up = self.sites[site].uplink
        if up is not None and up.agent is not None:
            return frozenset((up.agent,))
        parent = self.parent.get(site)
        return frozenset(self.sites[parent].agents) if parent is not None else frozenset()

    def uplink_evidence(self, site: str, rule: str, labels: Mapping[str, str]) -> bool:
        up = self.sites[site].uplink
        return (
            up is not None
            and up.rule == rule
            and labels.get("agent", "") in self.evidence_agents(site)
            and all(m(labels) for m in up.match)
        )

    def cut_off(self, firing: Iterable[tuple[str, Mapping[str, str]]], agents_down: set[str]) -> list[CutOff]:
        """Root causes: sites unreachable (uplink alert firing, or every agent down) whose parent is not."""
        firing = list(firing)
        unreachable: dict[str, str] = {}
        for sid, s in self.sites.items():
            if s.uplink is not None and any(self.uplink_evidence(sid, r, lab) for r, lab in firing):
                unreachable[sid] = "uplink"
            elif s.agents and all(a in agents_down for a in s.agents):
                unreachable[sid] = "agents"
        out = []
        for sid, reason in unreachable.items():
            anc = self.parent.get(sid)
            hidden = False
            while anc is not None:
                if anc in unreachable:
                    hidden = True
                    break
                anc = self.parent.get(anc)
            if not hidden:
                below = self.below(sid)
                devices = sum(len(self.sites[x].devices) for x in (sid, *below))
                out.append(CutOff(sid, reason, below, devices))
        return sorted(out, key=lambda c: c.site)

    def suppressed_sites(self, cuts: Iterable[CutOff]) -> dict[str, str]:
        """site -> the root-cause site that hides its alerts."""
        out: dict[str, str] = {}
        for c in cuts:
            for sid in (c.site, *c.below):
                out[sid] = c.site
        return out
