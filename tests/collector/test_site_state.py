"""collector/site_state.py: each site's colour on the status page, from hand-built alerts and agent
states over the shipped example topology (configs/topology.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.alerting.topology import Topology
from collector.site_state import SiteNode, assess, build_tree, walk

ROOT = Path(__file__).resolve().parents[2]


def sites() -> list[dict[str, Any]]:
    """As CollectorView.sites() flattens the topology file."""
    topo = Topology.load(ROOT / "configs" / "topology.yaml")
    return [
        {
            "id": s.id,
            "name": {"en": s.label("en"), "zh": s.label("zh")},
            "kind": s.kind,
            "parent": topo.parent[s.id],
            "agents": list(s.agents),
            "devices": list(s.devices),
        }
        for s in topo.sites.values()
    ]


def online(*ids: str) -> list[dict[str, Any]]:
    return [{"id": a, "status": "online"} for a in ids]


EVERY_AGENT = online(
    "agent-city", "agent-county-a", "agent-a-t1", "agent-a-t2", "agent-a-t3", "agent-county-b", "agent-b-t1"
)


def alert(aid: int, rule: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"id": aid, "rule": rule, "severity": severity, "labels": {"alertname": rule, **labels}}


def states(roots: list[SiteNode]) -> dict[str, str]:
    return {n.id: n.state for n in walk(roots)}


def test_all_quiet_is_ok_and_the_tree_is_nested() -> None:
    roots = build_tree(sites(), EVERY_AGENT)
    assert [r.id for r in roots] == ["city"]
    assert [c.id for c in roots[0].children] == ["county-a", "county-b"]
    assert [c.id for c in roots[0].children[0].children] == ["county-a-t1", "county-a-t2", "county-a-t3"]
    assert assess(roots, EVERY_AGENT, []) == {}
    assert set(states(roots).values()) == {"ok"}
    assert roots[0].label("zh") == "市中心" and roots[0].worst_below == "ok"


def test_alerts_colour_their_site_by_severity_and_roll_up() -> None:
    roots = build_tree(sites(), EVERY_AGENT)
    placed = assess(
        roots,
        EVERY_AGENT,
        [
            alert(1, "room_hot", "warning", site="county-a-t2"),
            alert(2, "ups_on_battery", "critical", device="ups-county-b"),  # by device
            alert(3, "cpu_high", "warning", agent="agent-county-b"),  # by agent: county-b stays critical
            alert(4, "portal_changed", "info", site="county-a-t3"),  # info does not colour
            alert(5, "nowhere", "critical", site="mars"),  # not in the tree: listed, not placed
        ],
    )
    assert placed == {1: "county-a-t2", 2: "county-b", 3: "county-b", 4: "county-a-t3"}
    s = states(roots)
    assert s["county-a-t2"] == "warning" and s["county-b"] == "critical" and s["county-a-t3"] == "ok"
    assert s["city"] == "ok" and s["county-a"] == "ok"
    city = roots[0]
    assert city.worst_below == "critical" and city.children[0].worst_below == "warning"


def test_cut_off_county_makes_its_subtree_unreachable() -> None:
    roots = build_tree(sites(), EVERY_AGENT)
    assess(
        roots,
        EVERY_AGENT,
        [
            alert(7, "site_unreachable", "critical", site="county-a", reason="uplink"),
            # the evidence, measured from the city, which the engine marks as replaced by alert 7
            {**alert(8, "wan_loss_high", "critical", link="county-a", agent="agent-city"), "suppressed_by": "county-a"},
            {**alert(9, "room_hot", "warning", site="county-a-t1"), "suppressed_by": "county-a"},
            alert(10, "cpu_high", "warning", site="county-b"),
        ],
    )
    s = states(roots)
    assert {k: v for k, v in s.items() if v == "unreachable"} == {
        "county-a": "unreachable",
        "county-a-t1": "unreachable",
        "county-a-t2": "unreachable",
        "county-a-t3": "unreachable",
    }
    nodes = {n.id: n for n in walk(roots)}
    assert nodes["county-a"].cut_off_by is None and nodes["county-a-t2"].cut_off_by == "county-a"
    assert s["city"] == "ok" and s["county-b"] == "warning"  # the city is fine: county A is the problem
    assert roots[0].worst_below == "unreachable" and nodes["city"].alerts == [8]  # listed there, not colouring


def test_agents_decide_when_no_alert_does() -> None:
    agents = [
        *online("agent-city", "agent-county-a", "agent-a-t1"),
        {"id": "agent-a-t2", "status": "offline"},
        {"id": "agent-county-b", "status": "offline"},
    ]
    roots = build_tree(sites(), agents)
    assess(roots, agents, [])
    s = states(roots)
    # every agent of the site offline: unreachable; never seen: unknown
    assert s["county-a-t2"] == "unreachable" and s["county-b"] == "unreachable"
    assert s["county-a-t3"] == "unknown" and s["county-b-t1"] == "unknown"
    assert s["county-a-t1"] == "ok"
    # and a warning when one of two agents of a site is offline
    two = [{"id": "x1", "status": "online"}, {"id": "x2", "status": "offline"}]
    roots = build_tree(
        [{"id": "s", "name": {}, "kind": "site", "parent": None, "agents": ["x1", "x2"], "devices": []}], two
    )
    assess(roots, two, [])
    assert roots[0].state == "warning"


def test_without_topology_the_agents_sites_are_a_flat_list() -> None:
    agents = [
        {"id": "a1", "site": "town-1", "status": "online"},
        {"id": "a2", "site": "town-1", "status": "online"},
        {"id": "a3", "site": "town-2", "status": "online"},
    ]
    roots = build_tree([], agents)
    assert [(r.id, r.agents) for r in roots] == [("town-1", ["a1", "a2"]), ("town-2", ["a3"])]
    assess(roots, agents, [alert(1, "svc", "critical", site="town-2")])
    assert states(roots) == {"town-1": "ok", "town-2": "critical"}
