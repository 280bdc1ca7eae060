"""The site/alert series the collector writes for Grafana (collector/overview.py), on hand-made
agents and alerts whose expected counts and states are worked out below."""

from __future__ import annotations

from typing import Any

from collector.overview import ALERTS_MEASUREMENT, SITE_MEASUREMENT, overview_samples


def _tags(site: str) -> dict[str, str]:
    return {"site": site, "county": "county-a"} if site != "city" else {"site": "city"}


def _alert(
    i: int, labels: dict[str, str], severity: str, rule: str, suppressed_by: str | None = None
) -> dict[str, Any]:
    return {"id": i, "labels": labels, "severity": severity, "rule": rule, "suppressed_by": suppressed_by}


AGENTS = [
    {"id": "a1", "site": "county-a", "status": "online"},
    {"id": "a2", "site": "county-a", "status": "offline"},
    {"id": "t1", "site": "t1", "status": "offline"},  # every agent of t1 offline: down
    {"id": "c", "site": "city", "status": "online"},
    {"id": "t2", "site": "t2", "status": "online"},
]


def _by_site(out: list[Any]) -> dict[str, Any]:
    return {s.tags["site"]: s for s in out if s.measurement == SITE_MEASUREMENT}


def test_site_state_and_alert_counts_without_topology() -> None:
    firing = [
        _alert(1, {"site": "county-a", "alertname": "x"}, "warning", "x"),
        _alert(2, {"site": "county-a", "alertname": "y"}, "warning", "y"),
        _alert(3, {"site": "city", "alertname": "z"}, "critical", "z"),
        _alert(4, {"site": "t3"}, "warning", "site_unreachable"),  # a site without agents, cut off
        _alert(5, {"alertname": "no-site"}, "critical", "w"),  # no site, agent or device: nobody's
    ]
    out = overview_samples([], AGENTS, firing, _tags, 123)
    sites = _by_site(out)
    assert set(sites) == {"county-a", "t1", "city", "t2", "t3"}
    # county-a: two warnings (and one of two agents offline) → 1; t1 all offline → 3; city critical → 2
    assert {k: v.fields["state"] for k, v in sites.items()} == {"county-a": 1, "t1": 3, "city": 2, "t2": 0, "t3": 3}
    assert (sites["county-a"].fields["agents_online"], sites["county-a"].fields["agents_total"]) == (1, 2)
    assert sites["county-a"].fields["alerts_warning"] == 2 and sites["city"].fields["alerts_critical"] == 1
    assert dict(sites["t1"].tags) == {"site": "t1", "county": "county-a"}
    alerts = {
        (s.tags["site"], s.tags["severity"]): s.fields["firing"] for s in out if s.measurement == ALERTS_MEASUREMENT
    }
    # every severity of every site, zeros included; 4 of the 5 alerts belong to a site
    assert len(alerts) == 5 * 3 and sum(alerts.values()) == 4
    assert alerts[("county-a", "warning")] == 2 and alerts[("city", "critical")] == 1 and alerts[("t2", "info")] == 0
    assert all(s.time_ns == 123 for s in out)


def test_same_states_as_the_status_page_with_a_topology() -> None:
    """city → county-a → t1, t2; county-a is cut off: everything below it is down whatever its own
    agents say, the alert hidden behind the cut does not colour t2, and an alert with only an
    ``agent`` label counts for that agent's site."""
    sites = [
        {"id": "city", "kind": "city", "parent": None, "agents": ["c"], "devices": []},
        {"id": "county-a", "kind": "county", "parent": "city", "agents": ["a1", "a2"], "devices": ["sw-a"]},
        {"id": "t1", "kind": "township", "parent": "county-a", "agents": ["t1"], "devices": []},
        {"id": "t2", "kind": "township", "parent": "county-a", "agents": ["t2"], "devices": []},
        {"id": "t9", "kind": "township", "parent": "city", "agents": ["t9"], "devices": []},  # never reported
    ]
    firing = [
        _alert(1, {"site": "county-a"}, "critical", "site_unreachable"),
        _alert(2, {"site": "t2"}, "critical", "service_down", suppressed_by="county-a"),
        _alert(3, {"agent": "c"}, "warning", "disk_full"),
        _alert(4, {"device": "sw-a"}, "critical", "iface_down"),
    ]
    out = _by_site(overview_samples(sites, AGENTS, firing, _tags, 1))
    # t9: nothing watches it and no alert names it → left out (the page's "unknown")
    assert {k: v.fields["state"] for k, v in out.items()} == {"city": 1, "county-a": 3, "t1": 3, "t2": 3}
    # counts place alerts by site, agent or device label: county-a has its cut-off and sw-a's alert
    assert (out["county-a"].fields["alerts_critical"], out["city"].fields["alerts_warning"]) == (2, 1)
    assert out["t2"].fields["alerts_critical"] == 1  # hidden, still firing, still counted
