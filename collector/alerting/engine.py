"""The alert engine the collector calls (AlertHook): evaluates rules on stored samples, folds
unreachable subtrees into one alert, applies silences, maintenance and acks, and queues notices."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    SeriesState,
    Transition,
    fingerprint,
    render,
)
from collector.alerting.store import AlertRow, AlertStore
from collector.alerting.topology import CutOff, Topology
from probes.model import Sample

log = logging.getLogger("netwatch.alerting")

UNREACHABLE = "site_unreachable"
#: the rule name of the one notice that summarises a site's late episodes after it reconnects
LATE_SUMMARY = "while_unreachable"
_LAST_SEEN_EVERY_S = 10.0
#: cut-offs remembered (from alerts.db, across restarts) to tell whether a late episode fell in one
_OUTAGE_MEMORY_S = 7 * 86400
_SUMMARY_ITEMS = 10


@dataclass(slots=True)
class _Held:
    """A firing made by late data, not yet confirmed by live data nor ended."""

    rule: str
    labels: Mapping[str, str]
    at_ns: int
    value: Any


@dataclass(slots=True)
class _Outage:
    """A cut-off: ``root`` and every site below it unreachable from ``start_ns`` to ``end_ns``."""

    root: str
    sites: frozenset[str]
    start_ns: int
    end_ns: int | None = None


@dataclass(slots=True)
class _LateGroup:
    """Late data from one cut-off site (or one site, when no cut-off covers it), since the last summary."""

    last_ns: int  # the evaluator's clock when late data from it last arrived
    episodes: list[AlertRow] = field(default_factory=list)


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
        self.evaluator = Evaluator(self.watcher.rules, late_after_s=config.late_after)
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
        #: late firings awaiting live data or their end: (fingerprint, from a replay) -> what fired
        self.held: dict[tuple[str, bool], _Held] = {}
        self.outages: list[_Outage] = []
        self._outages_of: dict[str, list[_Outage]] = {}  # site -> the outages covering it, oldest first
        self.late_groups: dict[str, _LateGroup] = {}
        self.late_episodes = 0
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
        if self.topology is not None:
            for a in self.store.outages(UNREACHABLE, self.started_ns - _OUTAGE_MEMORY_S * NS):
                sid = a.labels.get("site", "")
                if sid in self.topology.sites:
                    below = frozenset((sid, *self.topology.below(sid)))
                    self._add_outage(_Outage(sid, below, a.starts_ns, a.ends_ns))
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
            if ev.is_late(s.time_ns):
                self._late_group(s.tags, None).last_ns = ev.clock_ns
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
            self._summarise_late(now_ns)
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
        key = (t.fp, t.replay)
        if t.handover:
            moved = self.held.pop((t.fp, False), None)
            if moved is not None:
                self.held[key] = moved
            return
        if t.late and t.state == "firing":
            live = self.active.get(t.fp)
            if t.replay and live is not None and live.starts_ns <= t.at_ns:
                return  # the backlog of an alert firing all along: no episode of its own
            self.held[key] = _Held(t.rule, t.labels, t.at_ns, t.value)
            return
        held = self.held.pop(key, None) if t.state == "resolved" or t.replay else None
        if held is not None:
            note = "" if t.late else " (ended as live data resumed)"
            self._episode(held, t.at_ns, note)
            return
        if t.replay:
            return
        self.held.pop(key, None)  # a late firing confirmed by live data: it fires now, from its start
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
                for o in self.outages:
                    if o.root == a.labels.get("site") and o.end_ns is None:
                        o.end_ns = now_ns
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
        horizon = now_ns - _OUTAGE_MEMORY_S * NS
        if any(o.end_ns is not None and o.end_ns < horizon for o in self.outages):  # forget the old ones
            kept, self.outages, self._outages_of = self.outages, [], {}
            for o in kept:
                if o.end_ns is None or o.end_ns >= horizon:
                    self._add_outage(o)
        self._add_outage(_Outage(c.site, frozenset((c.site, *c.below)), now_ns))

    # -- late data: episodes of the past, recorded and summarised, never paged ----------------------
    def _site(self, labels: Mapping[str, str]) -> str:
        site = self.topology.site_of(labels) if self.topology is not None else None
        return site or labels.get("site", "")

    def _add_outage(self, o: _Outage) -> None:
        self.outages.append(o)
        for sid in o.sites:
            self._outages_of.setdefault(sid, []).append(o)

    def _outage(self, site: str, span: tuple[int, int] | None) -> _Outage | None:
        """The newest cut-off covering ``site`` (overlapping ``span``, give or take ``late_after`` for
        the time it took to notice the cut-off)."""
        slack = int(self.cfg.late_after * NS)
        for o in reversed(self._outages_of.get(site, ())):
            if span is None or (o.start_ns - slack <= span[1] and (o.end_ns is None or span[0] <= o.end_ns + slack)):
                return o
        return None

    def _late_group(self, labels: Mapping[str, str], span: tuple[int, int] | None) -> _LateGroup:
        site = self._site(labels)
        o = self._outage(site, span) or (self._outage(site, None) if span is not None else None)
        key = o.root if o is not None else site
        g = self.late_groups.get(key)
        if g is None:
            g = self.late_groups[key] = _LateGroup(self.evaluator.clock_ns)
        return g

    def _episode(self, h: _Held, end_ns: int, note: str) -> None:
        """Record a condition that began and ended in the past: history only, summarised later.
        Its value is the one it fired with (what the summary shows)."""
        rule = self.evaluator.rules.by_name.get(h.rule)
        if rule is None:
            return
        end_ns = max(end_ns, h.at_ns)
        labels = {**h.labels, **rule.labels, "alertname": h.rule, "severity": rule.severity}
        site = self._site(labels)
        if self.topology is not None and site in self.topology.sites:
            labels["site_path"] = self.topology.path(site)
        o = self._outage(site, (h.at_ns, end_ns))
        if o is not None:
            labels["while_unreachable"] = o.root
            where = f"while {o.root} was unreachable"
        else:
            labels["late"] = "true"
            where = "reported late"
        values: dict[str, Any] = {**labels, "value": h.value if h.value is not None else ""}
        summary = (render(rule.summary.en, values), render(rule.summary.zh, values))
        details = (f"{where}: {summary[0]}", f"{where}{note}; recorded late, not paged")
        aid = self.store.record_episode(
            fingerprint(h.rule, h.labels), h.rule, labels, rule.severity, summary, h.value, (h.at_ns, end_ns), details
        )
        a = self.store.get(aid)
        assert a is not None
        self._late_group(labels, (h.at_ns, end_ns)).episodes.append(a)
        self.late_episodes += 1

    def _summarise_late(self, now_ns: int) -> None:
        """A site whose late data has stopped (and that is reachable): end its replays, then one
        notice for all its episodes."""
        wait = int(self.cfg.late_summary_wait * NS)
        cut = {a.labels.get("site") for a in self.active.values() if a.rule == UNREACHABLE}
        for key, g in list(self.late_groups.items()):
            if self.evaluator.clock_ns - g.last_ns < wait or key in cut:
                continue
            mine = [k for k, rp in self.evaluator.replays.items() if self._group_key(rp.labels) == key]
            for rule_name, fp, rp in self.evaluator.end_replays(mine):
                h = self.held.pop((fp, True), None)
                if h is not None and rp.phase == "firing":
                    self._end_replay(h, rule_name, fp, rp)
            del self.late_groups[key]
            if g.episodes:
                self._summary(key, g.episodes, now_ns)

    def _group_key(self, labels: Mapping[str, str]) -> str:
        site = self._site(labels)
        o = self._outage(site, None)
        return o.root if o is not None else site

    def _end_replay(self, h: _Held, rule_name: str, fp: str, rp: SeriesState) -> None:
        """The backlog ended with the condition still true: if live data fired the same alert since
        it resumed, that alert started when the backlog says; else the episode ended by the time
        live data resumed (its first sample after the hole)."""
        live = self.evaluator.series.get((rule_name, fp))
        resumed = live.resumed_ns if live is not None else 0
        a = self.active.get(fp)
        if a is not None and a.starts_ns >= resumed:
            if h.at_ns < a.starts_ns:
                self.store.event(
                    a.id, h.at_ns, "start_corrected", f"began at this time (from late data), not at {a.starts_ns}"
                )
                self.store.set(a.id, starts_ns=h.at_ns)
                a.starts_ns = h.at_ns
            return
        end = resumed if resumed > h.at_ns else rp.last_ns
        self._episode(h, end, " (ended by the time live data resumed)")

    def _summary(self, key: str, episodes: list[AlertRow], now_ns: int) -> None:
        topo = self.topology
        site = topo.sites.get(key) if topo is not None else None
        names = (site.label("en"), site.label("zh")) if site is not None else (key, key)
        unreachable = any("while_unreachable" in e.labels for e in episodes)
        eps = sorted(episodes, key=lambda e: e.starts_ns)

        shown = eps[:_SUMMARY_ITEMS]
        en_items = "; ".join(f"{e.summary_en} from {_clock(e.starts_ns)} to {_clock(e.ends_ns or 0)}" for e in shown)
        zh_items = "；".join(f"{e.summary_zh}，{_clock(e.starts_ns)} 至 {_clock(e.ends_ns or 0)}" for e in shown)
        more = len(eps) - len(shown)
        if more:
            en_items += f"; and {more} more"
            zh_items += f"；另有 {more} 条"
        n = f"{len(eps)} alert{'s' if len(eps) != 1 else ''}"
        if unreachable:
            en = f"while {names[0]} was unreachable: {n} began and ended before it reconnected — {en_items}"
            zh = f"{names[1]} 不可达期间：{len(eps)} 条告警在恢复连接前已开始并结束 — {zh_items}"
        else:
            en = f"reported late by {names[0]}: {n}, already over — {en_items}"
            zh = f"{names[1]} 迟到的数据：{len(eps)} 条告警，均已结束 — {zh_items}"
        severity = max((e.severity for e in eps), key=lambda x: SEVERITY_RANK.get(x, 0))
        labels = {"alertname": LATE_SUMMARY, "site": key, "severity": severity}
        if topo is not None and key in topo.sites:
            labels["site_path"] = topo.path(key)
        span_ns = (eps[0].starts_ns, max(e.ends_ns or e.starts_ns for e in eps))
        fp = fingerprint(LATE_SUMMARY, {"site": key})
        aid = self.store.record_episode(fp, LATE_SUMMARY, labels, severity, (en, zh), len(eps), span_ns, None)
        a = self.store.get(aid)
        assert a is not None
        why = self._silenced(a, now_ns)
        routes = self._routes(a)
        if not why:
            for route, channel in routes:
                self.store.enqueue(a.id, "summary", channel, route.language, route.group_wait, now_ns)
        sent = ",".join(ch for _, ch in routes) or "no route"
        ids = ", ".join(f"#{e.id}" for e in eps)
        self.store.event(a.id, now_ns, "summary", f"{en} [episodes {ids}; {'no notice: ' + why if why else sent}]")

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
            # ... of which older than the replay of their series had reached: not evaluated at all
            "alerting_late_unordered": self.evaluator.late_unordered,
            # conditions that began and ended in the past (late data): in the history, never paged
            "alerting_late_episodes": self.late_episodes,
        }

    # -- for the CLI and tests ---------------------------------------------------------------
    def firing(self) -> list[AlertRow]:
        return sorted(self.active.values(), key=lambda a: a.id)


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS).astimezone().strftime("%m-%d %H:%M:%S")
