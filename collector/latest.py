"""Each site's latest key values — uplink loss and RTT, room temperature and humidity, UPS on
battery and runtime — kept in memory as samples pass ingest, so the status page shows them whatever
store is configured (SQLite, InfluxDB, VictoriaMetrics, or none that can be read back).

Bounded: a few fields of a few measurements, at most ``MAX_SERIES_PER_SITE`` series a site and
``MAX_SITES`` sites; a value older than ``STALE_S`` is dropped when read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from probes.model import Sample

#: measurement → the fields the page shows (probes/*/metrics.csv)
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "icmp": ("loss_pct", "rtt_avg_ms"),
    "room_env": ("temperature_c", "humidity_pct"),
    "ups": ("on_battery_s", "runtime_min", "charge_pct"),
}
MAX_SITES = 5000
MAX_SERIES_PER_SITE = 64
#: a value not refreshed for this long is not shown (the probe stopped, the device went away)
STALE_S = 3600.0


@dataclass(frozen=True, slots=True)
class Reading:
    value: float
    time_ns: int
    series: str  # what it was measured on: the probe / sensor / device, for the page's tooltip


def _series(s: Sample) -> str:
    t = s.tags
    return (
        "/".join(v for v in (t.get("agent"), t.get("device"), t.get("target"), t.get("sensor")) if v) or s.measurement
    )


def uplink_site(s: Sample) -> str | None:
    """The site whose uplink an icmp sample measures: ``link=<site>`` from the parent's probe (the
    topology's convention), or the sample's own site when tagged ``link=uplink`` or its probe is
    named ``uplink…``; None for any other ping."""
    link = s.tags.get("link", "")
    site = s.tags.get("site", "")
    if link and link != "uplink":
        return link
    if link == "uplink" or s.tags.get("target", "").startswith("uplink"):
        return site or None
    return None


class LatestValues:
    """Fed by the collector's writer thread (``feed``), read by the API's threads (``snapshot``)."""

    def __init__(self, accept_site: Callable[[str], bool] | None = None) -> None:
        #: with a topology, only its sites are kept: an agent's invented ``link`` names fill nothing
        self.accept_site = accept_site
        self._lock = threading.Lock()
        #: site → (measurement, field, series) → reading
        self._sites: dict[str, dict[tuple[str, str, str], Reading]] = {}
        self.dropped = 0

    def feed(self, samples: Iterable[Sample]) -> None:
        for s in samples:
            fields = KEY_FIELDS.get(s.measurement)
            if fields is None:
                continue
            site = uplink_site(s) if s.measurement == "icmp" else s.tags.get("site")
            if not site or (self.accept_site is not None and not self.accept_site(site)):
                continue
            series = _series(s)
            got = [(f, s.fields[f]) for f in fields if f in s.fields]
            with self._lock:
                per = self._sites.get(site)
                if per is None:
                    if len(self._sites) >= MAX_SITES:
                        self.dropped += 1
                        continue
                    per = self._sites[site] = {}
                for f, v in got:
                    if isinstance(v, bool) or not isinstance(v, int | float):
                        continue
                    key = (s.measurement, f, series)
                    old = per.get(key)
                    if old is None and len(per) >= MAX_SERIES_PER_SITE:
                        self.dropped += 1
                        continue
                    if old is None or old.time_ns <= s.time_ns:
                        per[key] = Reading(float(v), s.time_ns, series)

    def as_dicts(self, now_ns: int | None = None) -> dict[str, dict[str, dict[str, object]]]:
        """``snapshot`` as plain data (CollectorView.latest, for the page)."""
        return {
            site: {k: {"value": r.value, "time_ns": r.time_ns, "series": r.series} for k, r in vals.items()}
            for site, vals in self.snapshot(now_ns).items()
        }

    def snapshot(self, now_ns: int | None = None) -> dict[str, dict[str, Reading]]:
        """site → key → the reading the page shows: ``uplink_loss_pct``/``uplink_rtt_ms`` (the worst
        uplink), ``temperature_c``/``humidity_pct`` (the hottest sensor, and its humidity),
        ``on_battery_s`` (the longest), ``runtime_min`` and ``charge_pct`` (the lowest)."""
        floor = (now_ns or time.time_ns()) - int(STALE_S * 1e9)
        with self._lock:
            sites = {site: {k: r for k, r in per.items() if r.time_ns >= floor} for site, per in self._sites.items()}
        out: dict[str, dict[str, Reading]] = {}
        for site, per in sites.items():
            vals: dict[str, Reading] = {}

            def pick(
                measurement: str, field: str, worst: str, per: dict[tuple[str, str, str], Reading] = per
            ) -> Reading | None:
                rs = [r for (m, f, _), r in per.items() if m == measurement and f == field]
                if not rs:
                    return None
                return max(rs, key=lambda r: r.value) if worst == "max" else min(rs, key=lambda r: r.value)

            loss = pick("icmp", "loss_pct", "max")
            if loss is not None:
                vals["uplink_loss_pct"] = loss
                rtt = per.get(("icmp", "rtt_avg_ms", loss.series))
                if rtt is None:
                    rtt = pick("icmp", "rtt_avg_ms", "max")
                if rtt is not None:
                    vals["uplink_rtt_ms"] = rtt
            temp = pick("room_env", "temperature_c", "max")
            if temp is not None:
                vals["temperature_c"] = temp
                hum = per.get(("room_env", "humidity_pct", temp.series))
                if hum is not None:
                    vals["humidity_pct"] = hum
            elif (hum := pick("room_env", "humidity_pct", "max")) is not None:
                vals["humidity_pct"] = hum
            for key, worst in (("on_battery_s", "max"), ("runtime_min", "min"), ("charge_pct", "min")):
                r = pick("ups", key, worst)
                if r is not None:
                    vals[key] = r
            if vals:
                out[site] = vals
        return out
