"""Each site's state for the status page — ok, warning, critical, unreachable (cut off), unknown —
from the firing alerts and the agents' status: a pure function, so the page and its tests agree.

- **unreachable**: a ``site_unreachable`` alert names the site, or it lies below one (cut off), or
  every one of its agents is offline;
- **critical** / **warning**: the worst firing alert that belongs to the site (its ``site`` label,
  else the site of its ``agent`` or ``device``), acked or silenced or not — an ack says someone is
  on it, not that it is fixed — unless the engine suppressed it behind a cut-off site (the parent's
  failing probe of the cut-off uplink included); a warning too when one of several agents is offline;
- **unknown**: nothing watches the site yet (no agent of it ever reported) and no alert names it;
- **ok**: otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

UNREACHABLE_RULE = "site_unreachable"
STATES = ("ok", "warning", "critical", "unreachable", "unknown")
#: how bad, for "the worst below"
RANK = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3, "unreachable": 4}


@dataclass(slots=True)
class SiteNode:
    id: str
    name: dict[str, str]
    kind: str
    parent: str | None
    agents: list[str]
    devices: list[str]
    children: list[SiteNode] = field(default_factory=list)
    state: str = "unknown"
    cut_off_by: str | None = None
    alerts: list[int] = field(default_factory=list)
    worst_below: str = "ok"

    def label(self, lang: str) -> str:
        return self.name.get(lang) or self.id


def build_tree(sites: list[dict[str, Any]], agents: list[dict[str, Any]]) -> list[SiteNode]:
    """The roots of the site tree; without a topology (``sites`` empty) a flat list of the sites
    the agents name."""
    nodes: dict[str, SiteNode] = {}
    if sites:
        for s in sites:
            nodes[s["id"]] = SiteNode(
                s["id"],
                dict(s.get("name") or {}),
                s.get("kind", "site"),
                s.get("parent"),
                list(s["agents"]),
                list(s["devices"]),
            )
    else:
        for a in agents:
            site = str(a.get("site") or "")
            node = nodes.setdefault(site, SiteNode(site, {}, "site", None, [], []))
            node.agents.append(str(a["id"]))
    roots: list[SiteNode] = []
    for n in nodes.values():
        parent = nodes.get(n.parent) if n.parent is not None else None
        (parent.children if parent is not None else roots).append(n)
    return roots


def walk(roots: Iterable[SiteNode]) -> Iterable[SiteNode]:
    for n in roots:
        yield n
        yield from walk(n.children)


def site_of(labels: Mapping[str, str], nodes: Mapping[str, SiteNode], agent_site: Mapping[str, str]) -> str | None:
    """The site an alert belongs to (as collector/alerting/topology.py decides it)."""
    site = labels.get("site")
    if site and site in nodes:
        return site
    agent = labels.get("agent")
    if agent and agent in agent_site:
        return agent_site[agent]
    device = labels.get("device")
    if device:
        for n in nodes.values():
            if device in n.devices:
                return n.id
    return None


def assess(roots: list[SiteNode], agents: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> dict[int, str]:
    """Set every node's ``state``, ``alerts``, ``cut_off_by`` and ``worst_below``; returns alert id →
    site id for the alerts that belong to a site."""
    nodes = {n.id: n for n in walk(roots)}
    agent_site = {a: n.id for n in nodes.values() for a in n.agents}
    status = {str(a["id"]): str(a.get("status", "unknown")) for a in agents}
    placed: dict[int, str] = {}
    worst_alert: dict[str, str] = {}
    unreachable: set[str] = set()
    for al in alerts:
        labels = al.get("labels") or {}
        sid = site_of(labels, nodes, agent_site)
        if sid is None:
            continue
        placed[int(al["id"])] = sid
        nodes[sid].alerts.append(int(al["id"]))
        if al.get("rule") == UNREACHABLE_RULE:
            unreachable.add(sid)
            continue
        if al.get("suppressed_by"):
            continue  # hidden behind a cut-off site, or the uplink evidence its alert replaces
        sev = "critical" if al.get("severity") == "critical" else "warning" if al.get("severity") == "warning" else ""
        if sev and RANK[sev] > RANK.get(worst_alert.get(sid, "ok"), 0):
            worst_alert[sid] = sev

    def mark_cut(n: SiteNode, by: str) -> None:
        for c in n.children:
            c.state, c.cut_off_by = "unreachable", by
            mark_cut(c, by)

    for n in nodes.values():
        seen = [status[a] for a in n.agents if a in status]
        offline = [s for s in seen if s == "offline"]
        if n.id in unreachable or (n.agents and seen and len(offline) == len(n.agents)):
            n.state = "unreachable"
        elif n.id in worst_alert:
            n.state = worst_alert[n.id]
        elif offline:
            n.state = "warning"
        elif seen:
            n.state = "ok"
        else:
            n.state = "unknown"
    for n in walk(roots):  # parents first: a cut-off subtree is unreachable whatever it said before
        if n.id in unreachable and n.cut_off_by is None:
            mark_cut(n, n.id)

    def roll(n: SiteNode) -> str:
        worst = "ok"
        for c in n.children:
            below = roll(c)
            for s in (c.state, below):
                if RANK[s] > RANK[worst]:
                    worst = s
        n.worst_below = worst
        return worst

    for r in roots:
        roll(r)
    return placed
