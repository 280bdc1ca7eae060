"""Each site's state and its firing alerts as time series, written with the collector's own
self-sample, so that Grafana (which reads only the stores) can draw "every site's state" and
"active alerts by site and severity": alerts live in alerts.db and agents' presence in state.db,
neither of which is a time series.

``netwatch_site`` (tags ``site``, ``county``): ``agents_online``, ``agents_total``,
``alerts_warning``, ``alerts_critical``, ``state`` (0 ok, 1 warning, 2 critical, 3 down: the
status page's "unreachable" — cut off, below a cut-off site, or every agent offline). ``netwatch_alerts`` (tags ``site``, ``county``,
``severity``): ``firing``, written for every severity of every known site so 0 is a value, not a gap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from probes.model import Sample

SITE_MEASUREMENT: Final = "netwatch_site"
ALERTS_MEASUREMENT: Final = "netwatch_alerts"
SEVERITIES: Final = ("info", "warning", "critical")
#: the state a site's worst condition gives it (dashboards map these numbers to words and colours)
STATE_OK, STATE_WARNING, STATE_CRITICAL, STATE_DOWN = 0, 1, 2, 3
_STATE_NUMBER: Final = {"ok": STATE_OK, "warning": STATE_WARNING, "critical": STATE_CRITICAL, "unreachable": STATE_DOWN}


def overview_samples(
    sites: list[dict[str, Any]],
    agents: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    site_tags: Callable[[str], dict[str, str]],
    now_ns: int,
) -> list[Sample]:
    """``sites``: the topology flattened (CollectorView.sites(); [] without one); ``agents``:
    state.db rows (``id``, ``site``, ``status``); ``alerts``: the firing alerts as dicts
    (AlertRow.to_dict()); ``site_tags``: the tags the centre stamps for a site (site, county).

    Each site's state is the status page's (collector/site_state.py), so Grafana and the page never
    disagree; a site nothing watches and no alert names (the page's "unknown") is left out."""
    from collector.site_state import assess, build_tree, walk

    if not sites:  # no topology: the sites the agents and the alerts name, flat
        named = {str(a.get("site") or "") for a in agents} | {
            str((al.get("labels") or {}).get("site", "")) for al in alerts
        }
        sites = [
            {
                "id": s,
                "kind": "site",
                "parent": None,
                "devices": [],
                "agents": [str(a["id"]) for a in agents if a.get("site") == s],
            }
            for s in sorted(named - {""})
        ]
    roots = build_tree(sites, agents)
    placed = assess(roots, agents, alerts)
    online: dict[str, int] = {}
    total: dict[str, int] = {}
    for a in agents:
        site = str(a.get("site") or "")
        if site:
            total[site] = total.get(site, 0) + 1
            online[site] = online.get(site, 0) + (a.get("status") == "online")
    counts: dict[tuple[str, str], int] = {}
    for al in alerts:
        sid = placed.get(int(al["id"]))
        if sid is not None and al.get("severity") in SEVERITIES:
            counts[(sid, str(al["severity"]))] = counts.get((sid, str(al["severity"])), 0) + 1
    out: list[Sample] = []
    for node in walk(roots):
        site = node.id
        if node.state == "unknown" and not node.alerts:
            continue
        tags = {**site_tags(site), "site": site}
        n = {sev: counts.get((site, sev), 0) for sev in SEVERITIES}
        out.append(
            Sample(
                SITE_MEASUREMENT,
                tags,
                {
                    "agents_online": online.get(site, 0),
                    "agents_total": total.get(site, 0),
                    "alerts_warning": n["warning"],
                    "alerts_critical": n["critical"],
                    "state": _STATE_NUMBER.get(node.state, STATE_OK),
                },
                now_ns,
            )
        )
        out += [Sample(ALERTS_MEASUREMENT, {**tags, "severity": sev}, {"firing": n[sev]}, now_ns) for sev in SEVERITIES]
    return out
