"""The alert engine the collector calls (AlertHook): evaluates rules on stored samples, folds
unreachable subtrees into one alert, applies silences, maintenance and acks, and queues notices."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from collector.alerting.config import AlertingConfig
from collector.alerting.notify import Notifier
from collector.alerting.rules import (
    NS,
    SEVERITY_RANK,
    Evaluator,
    Matcher,
    RuleFileWatcher,
    Transition,
    fingerprint,
    render,
)
from collector.alerting.store import AlertRow, AlertStore
from collector.alerting.topology import CutOff, Topology
from probes.model import Sample

log = logging.getLogger("netwatch.alerting")

UNREACHABLE = "site_unreachable"
_LAST_SEEN_EVERY_S = 10.0


class AlertEngine:
    def __init__(
        self,
        config: AlertingConfig,
        *,
        data_dir: Path,
        start_notifier: bool = True,
        now_ns: int | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = config
        self.started_ns = now_ns if now_ns is not None else time.time_ns()
        self.watcher = RuleFileWatcher(config.rules)
        self.evaluator = Evaluator(self.watcher.rules)
        # Samples arriving before the first tick (a backlog at start-up) are judged against this.
        self.evaluator.clock_ns = self.started_ns
        self.topology = Topology.load(config.topology) if config.topology else None
        self.store = AlertStore(Path(data_dir) / "alerts.db")
        self.active: dict[str, AlertRow] = {a.fp: a for a in self.store.firing()}
        self.agents_offline: set[str] = set()
        self.eligible_since: dict[str, int] = {}  # fp -> when it last became sendable (settle window)
        self._pending: list[Transition] = []
        self._silences: list[dict[str, Any]] = []
        self._seen_dirty: dict[tuple[str, str], tuple[Mapping[str, str], int]] = {}
        self._last_seen_saved = 0.0
        self._last_prune = 0.0
        self._uplinks_started = False
        self._restore()
        self.notifier = notifier
        #: told when the rule file changed (path, ok|refused, detail): the collector's audit log
        self.on_rules_changed: Callable[[str, str, str], None] | None = None
        if self.notifier is None and start_notifier:
            self.notifier = Notifier(self.store.path, config.channels)
            self.notifier.start()

    # -- restart ---------------------------------------------------------------------------
    def _restore(self) -> None:
        """Firing alerts stay firing (no second notice); silent agents still get alerted, but
        only after a grace period that lets the ones that are fine reconnect first."""
        for a in self.active.values():
            if a.rule != UNREACHABLE:
                self.evaluator.restore(a.rule, a.labels, firing=True, last_ns=a.starts_ns, value=a.value)
        # A site cut off because its agents were offline stays so until their retained statuses
        # say otherwise (they come again on reconnecting): else the first tick after a restart
        # would resolve it, and re-fire it a moment later — a phantom recovery in the report too.
        if self.topology is not None:
            for a in self.active.values():
                site = self.topology.sites.get(a.labels.get("site", ""))
                if a.rule == UNREACHABLE and a.labels.get("reason") == "agents" and site is not None:
                    self.agents_offline.update(site.agents)
        for rule_name, labels, last_ns in self.store.last_seen():
            rule = self.watcher.rules.by_name.get(rule_name)
            if rule is None:
                continue
            floor = self.started_ns - int((rule.for_s - self.cfg.startup_grace) * NS)
            self.evaluator.restore(rule_name, labels, firing=False, last_ns=max(last_ns, min(floor, self.started_ns)))

    # -- AlertHook ---------------------------------------------------------------------------
    def observe(self, samples: list[Sample]) -> None:
        ev = self.evaluator
        absent = [r for r in ev.rules.rules if r.kind == "absent"]
        for s in samples:
            self._pending += ev.observe(s)
            for r in absent:
                if r.selects(s):
                    labels = r.series_labels(s.tags)
                    self._seen_dirty[(r.name, fingerprint(r.name, labels))] = (labels, s.time_ns)

    def agent_status(self, agent: str, site: str, state: str) -> None:
        if state == "offline":
            self.agents_offline.add(agent)
        else:
            self.agents_offline.discard(agent)

    def tick(self, now_ns: int) -> None:
        error_before = self.watcher.last_error
        if self.watcher.poll():
            self.evaluator.replace_rules(self.watcher.rules)
            if self.on_rules_changed is not None:
                self.on_rules_changed(str(self.watcher.path), "ok", f"{len(self.watcher.rules.rules)} rules")
        elif self.watcher.last_error != error_before and self.watcher.last_error and self.on_rules_changed is not None:
            self.on_rules_changed(str(self.watcher.path), "refused", self.watcher.last_error[:1000])
        transitions, self._pending = self._pending + self.evaluator.tick(now_ns), []
        # silences and acks are written by the CLI straight into alerts.db: read them every tick
        self._silences = self.store.silences(now_ns)
        with self.store.transaction():
            for t in transitions:
                self._apply(t, now_ns)
            self._start_uplinks(now_ns)
            self._topology(now_ns)
            self._notify(now_ns)
            self._housekeeping(now_ns)

    def close(self) -> None:
        try:
            self._save_last_seen(force=True)
        finally:
            if self.notifier is not None:
                self.notifier.stop()
            self.store.close()

    # -- state -------------------------------------------------------------------------------
    def _apply(self, t: Transition, now_ns: int) -> None:
        rule = self.evaluator.rules.by_name.get(t.rule)
        if t.state == "firing":
            if t.fp in self.active or rule is None:
                return
            labels = {**t.labels, **rule.labels, "alertname": t.rule, "severity": rule.severity}
            if self.topology is not None:
                site = self.topology.site_of(labels)
                if site is not None:
                    labels["site_path"] = self.topology.path(site)
            values: dict[str, Any] = {**labels, "value": t.value if t.value is not None else ""}
            summary = (render(rule.summary.en, values), render(rule.summary.zh, values))
            aid = self.store.open_alert(t.fp, t.rule, labels, rule.severity, summary, t.value, t.at_ns)
            a = self.store.get(aid)
            assert a is not None
            self.active[t.fp] = a
            return
        a = self.active.pop(t.fp, None)
        if a is not None:
            self._close(a, t.at_ns, t.value, now_ns)

    def _close(self, a: AlertRow, at_ns: int, value: Any, now_ns: int) -> None:
        why = self._blocked(a, now_ns)
        sent = a.notified_ns is not None
        detail = "resolved" if sent and not why else f"resolved; no notice ({why or 'never notified'})"
        self.store.resolve(a.id, at_ns, value, detail)
        self.eligible_since.pop(a.fp, None)
        if sent and not why:
            a.state = "resolved"
            for route, channel in self._routes(a):
                if route.send_resolved:
                    self.store.enqueue(a.id, "resolved", channel, route.language, route.group_wait, now_ns)

    # -- availability: a site's uplink is down while its site_unreachable alert fires ----------------
    def _uplink(self, site: str, state: Literal["up", "down"], at_ns: int, detail: str = "") -> None:
        topo = self.topology
        if topo is None or site not in topo.sites:
            return
        county = topo.ancestor_of_kind(site, "county") or ""
        self.store.transitions.note("uplink", site, state, at_ns, site=site, county=county, detail=detail)

    def _start_uplinks(self, now_ns: int) -> None:
        """On the first tick: every site's uplink record starts (up) unless it has one; a cut-off
        restored from alerts.db stays down from when it began."""
        if self._uplinks_started or self.topology is None:
            return
        self._uplinks_started = True
        cut = {a.labels.get("site", ""): a for a in self.active.values() if a.rule == UNREACHABLE}
        for sid in self.topology.sites:
            a = cut.get(sid)
            if a is not None:
                self._uplink(sid, "down", a.starts_ns, a.labels.get("reason", ""))
            elif self.store.transitions.last("uplink", sid) is None:
                self._uplink(sid, "up", now_ns, "monitoring started")

    def _topology(self, now_ns: int) -> None:
        topo = self.topology
        if topo is None:
            return
        down = set(self.agents_offline)
        for a in self.active.values():
            if a.rule == self.cfg.agent_rule and a.labels.get("agent"):
                down.add(a.labels["agent"])
        firing = [(a.rule, a.labels) for a in self.active.values() if a.rule != UNREACHABLE]
        cuts = {c.site: c for c in topo.cut_off(firing, down)}
        # one alert per root-cause site; it resolves when the site is reachable again
        for fp, a in list(self.active.items()):
            if a.rule == UNREACHABLE and a.labels.get("site") not in cuts:
                del self.active[fp]
                self._close(a, now_ns, None, now_ns)
                self._uplink(a.labels.get("site", ""), "up", now_ns)
        for sid, c in cuts.items():
            fp = fingerprint(UNREACHABLE, {"site": sid})
            if fp not in self.active:
                self._open_unreachable(fp, c, topo, now_ns)
        hidden = topo.suppressed_sites(cuts.values())
        for a in self.active.values():
            by: str | None = None
            if a.rule != UNREACHABLE:
                site = topo.site_of(a.labels)
                by = hidden.get(site) if site is not None else None
                if by is None:  # the uplink alert itself is the evidence the cut-off alert replaces
                    by = next((sid for sid in cuts if topo.uplink_evidence(sid, a.rule, a.labels)), None)
            if by != a.suppressed_by:
                a.suppressed_by = by
                self.store.set(a.id, suppressed_by=by)
                self.store.event(a.id, now_ns, "suppressed" if by else "unsuppressed", by or "")

    def _open_unreachable(self, fp: str, c: CutOff, topo: Topology, now_ns: int) -> None:
        labels = {
            "alertname": UNREACHABLE,
            "site": c.site,
            "site_path": topo.path(c.site),
            "severity": "critical",
            "reason": c.reason,
        }
        summary = (c.summary(topo, "en"), c.summary(topo, "zh"))
        value = {"sites": len(c.below), "devices": c.devices}
        aid = self.store.open_alert(fp, UNREACHABLE, labels, "critical", summary, value, now_ns)
        a = self.store.get(aid)
        assert a is not None
        self.active[fp] = a
        self._uplink(c.site, "down", now_ns, c.reason)

    # -- what may be sent ----------------------------------------------------------------------
    def _silenced(self, a: AlertRow, now_ns: int) -> str | None:
        for s in self._silences:
            if s["starts_ns"] <= now_ns < s["ends_ns"]:
                ms = [Matcher.parse(m) for m in s["matchers"]]
                if all(m(a.labels) for m in ms):
                    return f"silence #{s['id']}"
        if self.cfg.maintenance:
            site = a.labels.get("site", "")
            path = a.labels.get("site_path", site).split("/")
            now = datetime.fromtimestamp(now_ns / NS).astimezone()
            for m in self.cfg.maintenance:
                if (m.site == site or m.site in path) and m.active(now):
                    return f"maintenance of {m.site}"
        return None

    def _blocked(self, a: AlertRow, now_ns: int) -> str | None:
        if a.suppressed_by:
            return f"{a.suppressed_by} unreachable"
        return self._silenced(a, now_ns)

    def _routes(self, a: AlertRow) -> list[tuple[Any, str]]:
        labels = {**a.labels, "severity": a.severity}
        return [(r, ch) for r in self.cfg.routes if all(m(labels) for m in r.match) for ch in r.channels]

    def _notify(self, now_ns: int) -> None:
        acks = self.store.acks()
        settle = int(self.cfg.settle * NS)
        for a in sorted(self.active.values(), key=lambda x: (-SEVERITY_RANK.get(x.severity, 0), x.id)):
            why = self._blocked(a, now_ns)
            if why:
                self.eligible_since.pop(a.fp, None)
                continue
            since = self.eligible_since.setdefault(a.fp, now_ns)
            if a.notified_ns is None:
                # held for the settle window: a parent going unreachable right behind it hides it
                if now_ns - since < settle:
                    continue
                self._send(a, "firing", now_ns)
            elif a.id not in acks:
                for route, channel in self._routes(a):
                    if now_ns - a.notified_ns >= route.repeat_interval * NS:
                        self.store.enqueue(a.id, "repeat", channel, route.language, 0.0, now_ns)
                        a.notified_ns = now_ns
                        self.store.set(a.id, notified_ns=now_ns)

    def _send(self, a: AlertRow, kind: str, now_ns: int) -> None:
        for route, channel in self._routes(a):
            self.store.enqueue(a.id, kind, channel, route.language, route.group_wait, now_ns)
        a.notified_ns = now_ns
        self.store.set(a.id, notified_ns=now_ns)
        self.store.event(a.id, now_ns, "notified", ",".join(ch for _, ch in self._routes(a)) or "no route")

    def _housekeeping(self, now_ns: int) -> None:
        self._save_last_seen()
        mono = time.monotonic()
        if mono - self._last_prune > 3600:
            self._last_prune = mono
            self.store.prune(now_ns - int(self.cfg.history_retention * NS))

    def _save_last_seen(self, force: bool = False) -> None:
        mono = time.monotonic()
        if not self._seen_dirty or (not force and mono - self._last_seen_saved < _LAST_SEEN_EVERY_S):
            return
        self._last_seen_saved = mono
        rows = [(r, fp, lab, t) for (r, fp), (lab, t) in self._seen_dirty.items()]
        self._seen_dirty.clear()
        self.store.save_last_seen(rows)

    def stats(self) -> dict[str, int]:
        return {
            "alerting_active": len(self.active),
            "alerting_series": len(self.evaluator.series),
            # samples older than their series' newest: not evaluated as live (see Evaluator)
            "alerting_late_samples": self.evaluator.late_samples,
        }

    # -- for the CLI and tests ---------------------------------------------------------------
    def firing(self) -> list[AlertRow]:
        return sorted(self.active.values(), key=lambda a: a.id)
