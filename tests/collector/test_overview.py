"""The site/alert series the collector writes for Grafana (collector/overview.py), on hand-made
agents and alerts whose expected counts and states are worked out below."""

from __future__ import annotations

from collector.overview import ALERTS_MEASUREMENT, SITE_MEASUREMENT, overview_samples


def _tags(site: str) -> dict[str, str]:
    return {"site": site, "county": "county-a"} if site != "city" else {"site": "city"}


def test_site_state_and_alert_counts() -> None:
    agents = [
        {"id": "a1", "site": "county-a", "status": "online"},
        {"id": "a2", "site": "county-a", "status": "offline"},
        {"id": "t1", "site": "t1", "status": "offline"},  # every agent of t1 offline: down
        {"id": "c", "site": "city", "status": "online"},
        {"id": "t2", "site": "t2", "status": "online"},
    ]
    firing = [
        ({"site": "county-a", "alertname": "x"}, "warning", "x"),
        ({"site": "county-a", "alertname": "y"}, "warning", "y"),
        ({"site": "city", "alertname": "z"}, "critical", "z"),
        ({"site": "t3"}, "warning", "site_unreachable"),  # a site without agents, cut off
        ({"alertname": "no-site"}, "critical", "w"),  # no site label: not a site's alert
    ]
    out = overview_samples(agents, firing, _tags, 123)
    sites = {s.tags["site"]: s for s in out if s.measurement == SITE_MEASUREMENT}
    assert set(sites) == {"county-a", "t1", "city", "t2", "t3"}
    assert {k: v.fields["state"] for k, v in sites.items()} == {"county-a": 1, "t1": 3, "city": 2, "t2": 0, "t3": 3}
    assert (sites["county-a"].fields["agents_online"], sites["county-a"].fields["agents_total"]) == (1, 2)
    assert sites["county-a"].fields["alerts_warning"] == 2 and sites["city"].fields["alerts_critical"] == 1
    assert dict(sites["t1"].tags) == {"site": "t1", "county": "county-a"}
    alerts = {
        (s.tags["site"], s.tags["severity"]): s.fields["firing"] for s in out if s.measurement == ALERTS_MEASUREMENT
    }
    # every severity of every site, zeros included
    assert len(alerts) == 5 * 3 and sum(alerts.values()) == 4
    assert alerts[("county-a", "warning")] == 2 and alerts[("city", "critical")] == 1 and alerts[("t2", "info")] == 0
    assert all(s.time_ns == 123 for s in out)
