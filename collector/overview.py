"""Each site's state and its firing alerts as time series, written with the collector's own
self-sample, so that Grafana (which reads only the stores) can draw "every site's state" and
"active alerts by site and severity": alerts live in alerts.db and agents' presence in state.db,
neither of which is a time series.

``netwatch_site`` (tags ``site``, ``county``): ``agents_online``, ``agents_total``,
``alerts_warning``, ``alerts_critical``, ``state`` (0 ok, 1 warning, 2 critical, 3 down: every
agent offline or the site unreachable). ``netwatch_alerts`` (tags ``site``, ``county``,
``severity``): ``firing``, written for every severity of every known site so 0 is a value, not a gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from probes.model import Sample

SITE_MEASUREMENT: Final = "netwatch_site"
ALERTS_MEASUREMENT: Final = "netwatch_alerts"
SEVERITIES: Final = ("info", "warning", "critical")
#: the state a site's worst condition gives it (dashboards map these numbers to words and colours)
STATE_OK, STATE_WARNING, STATE_CRITICAL, STATE_DOWN = 0, 1, 2, 3
_UNREACHABLE = "site_unreachable"


def overview_samples(
    agents: Iterable[Mapping[str, Any]],
    firing: Iterable[tuple[Mapping[str, str], str, str]],
    site_tags: Callable[[str], dict[str, str]],
    now_ns: int,
) -> list[Sample]:
    """``agents``: state.db rows (``site``, ``status``); ``firing``: (labels, severity, rule) of
    each firing alert; ``site_tags``: the tags the centre stamps for a site (site, county)."""
    online: dict[str, int] = {}
    total: dict[str, int] = {}
    for a in agents:
        site = str(a.get("site") or "")
        if not site:
            continue
        total[site] = total.get(site, 0) + 1
        online[site] = online.get(site, 0) + (a.get("status") == "online")
    counts: dict[tuple[str, str], int] = {}
    down: set[str] = set()
    for labels, severity, rule in firing:
        site = labels.get("site", "")
        if not site or severity not in SEVERITIES:
            continue
        counts[(site, severity)] = counts.get((site, severity), 0) + 1
        if rule == _UNREACHABLE:
            down.add(site)
    out: list[Sample] = []
    for site in sorted(set(total) | {s for s, _ in counts}):
        tags = {**site_tags(site), "site": site}
        n = {sev: counts.get((site, sev), 0) for sev in SEVERITIES}
        if site in down or (total.get(site, 0) > 0 and online.get(site, 0) == 0):
            state = STATE_DOWN
        elif n["critical"]:
            state = STATE_CRITICAL
        elif n["warning"]:
            state = STATE_WARNING
        else:
            state = STATE_OK
        out.append(
            Sample(
                SITE_MEASUREMENT,
                tags,
                {
                    "agents_online": online.get(site, 0),
                    "agents_total": total.get(site, 0),
                    "alerts_warning": n["warning"],
                    "alerts_critical": n["critical"],
                    "state": state,
                },
                now_ns,
            )
        )
        out += [Sample(ALERTS_MEASUREMENT, {**tags, "severity": sev}, {"firing": n[sev]}, now_ns) for sev in SEVERITIES]
    return out
