"""The engine and the notifier with simulated time and recording senders: topology folding,
settle window, restart without duplicates, silences, acks, maintenance, digests under rate limits."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.alerting.config import AlertingConfig
from collector.alerting.engine import AlertEngine
from collector.alerting.notify import Message, Notifier
from collector.alerting.rules import NS
from collector.alerting.store import AlertStore
from probes.model import Sample

T0 = 1_700_000_000 * NS
RULES = """
rules:
  - name: link_down
    measurement: tcp
    field: result
    where: [link=~.+]
    when: "!= 'ok'"
    clear: "== 'ok'"
    for: 2s
    severity: critical
    summary: {en: "link to {link} down", zh: "到 {link} 的链路中断"}
  - name: agent_silent
    kind: absent
    for: 5s
    by: [agent]
    severity: critical
    summary: {en: "agent {agent} silent", zh: "代理 {agent} 无数据"}
  - name: hot
    measurement: room_env
    field: temperature_c
    when: "> 27"
    clear: "<= 26"
    severity: warning
    summary: {en: "{site} hot {value:.1f}", zh: "{site} 过热 {value:.1f}"}
"""
TOPO = """
sites:
  - id: city
    kind: city
    agents: [ag-city]
    children:
      - id: county-a
        kind: county
        name: {en: County A, zh: 东区县}
        agents: [ag-a]
        devices: [sw-a]
        uplink: {rule: link_down, match: [link=county-a]}
        children:
          - {id: t1, kind: township, agents: [ag-t1], devices: [d1, d2]}
          - {id: t2, kind: township, agents: [ag-t2], devices: [d3]}
          - {id: t3, kind: township, agents: [ag-t3], devices: [d4]}
"""


class Rig:
    def __init__(self, tmp: Path, extra: dict[str, Any] | None = None) -> None:
        (tmp / "rules.yaml").write_text(RULES)
        (tmp / "topology.yaml").write_text(TOPO)
        doc = {
            "rules": "rules.yaml",
            "topology": "topology.yaml",
            "settle": "3s",
            "startup_grace": "2s",
            "channels": {"wecom": {"wecom_webhook": "http://127.0.0.1:9/x"}, "mail": {"url": "json://127.0.0.1:9/"}},
            "routes": [
                {"channels": ["wecom"], "language": "zh", "group_wait": "1s", "repeat_interval": "1h"},
                {"match": ["severity=critical"], "channels": ["mail"], "language": "en", "group_wait": "0s"},
            ],
        } | (extra or {})
        self.tmp = tmp
        self.cfg = AlertingConfig.model_validate(doc, context={"base_dir": tmp})
        self.sent: list[tuple[str, Message]] = []
        self.sent_at: dict[str, list[int]] = {}
        self.now = T0
        self.start()

    def start(self) -> None:
        def record(name: str, m: Message) -> None:
            self.sent.append((name, m))
            self.sent_at.setdefault(name, []).append(self.now)

        senders = {n: (lambda m, n=n: record(n, m)) for n in self.cfg.channels}
        self.notifier = Notifier(self.tmp / "alerts.db", self.cfg.channels, senders=senders)
        self.engine = AlertEngine(
            self.cfg, data_dir=self.tmp, now_ns=self.now, notifier=self.notifier, start_notifier=False
        )

    def restart(self) -> None:
        self.engine.close()
        self.start()

    def advance(self, seconds: float, *, agents: tuple[str, ...] = (), link_ok: bool | None = None) -> None:
        """Move simulated time second by second: live agents report, the engine ticks, the notifier runs."""
        for _ in range(int(seconds)):
            self.now += NS
            samples = [Sample("host_cpu", {"site": SITE_OF[a], "agent": a}, {"cpu_pct": 1.0}, self.now) for a in agents]
            if link_ok is not None:
                samples.append(
                    Sample(
                        "tcp",
                        {"site": "city", "agent": "ag-city", "link": "county-a"},
                        {"result": "ok" if link_ok else "refused"},
                        self.now,
                    )
                )
            self.engine.observe(samples)
            self.engine.tick(self.now)
            self.notifier.run_once(self.now)

    def texts(self, channel: str) -> list[str]:
        return [m.body for c, m in self.sent if c == channel]


ALL = ("ag-city", "ag-a", "ag-t1", "ag-t2", "ag-t3")
SITE_OF = {"ag-city": "city", "ag-a": "county-a", "ag-t1": "t1", "ag-t2": "t2", "ag-t3": "t3"}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.engine.close()


@pytest.mark.parametrize("townships_first_s", [0, 4])
def test_county_cut_off_is_one_alert_and_one_resolve(rig: Rig, townships_first_s: int) -> None:
    rig.advance(5, agents=ALL, link_ok=True)
    # townships go silent first and their alerts fire before the county's link alert is confirmed:
    # the settle window holds them until the county's cut-off hides them
    rig.advance(townships_first_s, agents=("ag-city", "ag-a"), link_ok=True)
    rig.advance(30, agents=("ag-city",), link_ok=False)
    mail = rig.texts("mail")
    assert len(mail) == 1, mail
    assert "County A unreachable — 3 townships, 5 devices cut off" in mail[0]
    assert len(rig.texts("wecom")) == 1 and "东区县 不可达 — 3 个乡镇、5 台设备失联" in rig.texts("wecom")[0]
    # the children fired and were recorded, never sent
    rows = {a.rule: a for a in rig.engine.firing()}
    assert {"agent_silent", "link_down", "site_unreachable"} <= set(rows)
    assert all(a.notified_ns is None for a in rig.engine.firing() if a.rule != "site_unreachable")
    # back: one resolved notice per channel, no township alert in between
    rig.advance(30, agents=ALL, link_ok=True)
    assert len(rig.texts("mail")) == 2 and "RESOLVED" in rig.texts("mail")[1] and "County A" in rig.texts("mail")[1]
    assert len(rig.texts("wecom")) == 2 and "已恢复" in rig.texts("wecom")[1]
    assert rig.engine.firing() == []


def test_restart_while_firing_no_duplicate_and_resolve_arrives(rig: Rig) -> None:
    hot = lambda v: Sample("room_env", {"site": "t1", "agent": "ag-t1"}, {"temperature_c": v}, rig.now)  # noqa: E731
    rig.advance(2, agents=ALL)
    rig.engine.observe([hot(29.0)])
    rig.advance(6, agents=ALL)
    assert len(rig.texts("wecom")) == 1
    rig.restart()
    rig.engine.observe([hot(29.5)])  # still hot after the restart: no second notice
    rig.advance(10, agents=ALL)
    assert len(rig.texts("wecom")) == 1
    rig.engine.observe([hot(25.0)])
    rig.advance(3, agents=ALL)
    assert len(rig.texts("wecom")) == 2 and "已恢复" in rig.texts("wecom")[1]


def test_agent_silent_across_restart(rig: Rig) -> None:
    rig.advance(3, agents=ALL)
    rig.engine.close()  # collector stops; ag-t2 never comes back
    rig.now += 60 * NS
    rig.start()
    rig.advance(1, agents=tuple(a for a in ALL if a != "ag-t2"))
    assert rig.engine.firing() == []  # grace: the rest reconnect first
    rig.advance(8, agents=tuple(a for a in ALL if a != "ag-t2"))
    firing = {(a.rule, a.labels.get("agent")) for a in rig.engine.firing()}
    assert ("agent_silent", "ag-t2") in firing
    # a township with its only agent silent is itself the alert (one, not two)
    assert [m for m in rig.texts("mail")] and all("t2" in m for m in rig.texts("mail"))
    assert len(rig.texts("mail")) == 1


def test_silence_ack_and_history(rig: Rig) -> None:
    store = AlertStore(rig.tmp / "alerts.db")  # what the CLI does, on its own connection
    store.add_silence(["site=t1"], T0, T0 + 7200 * NS, "li", "replacing the AC")
    hot = lambda site, v: Sample("room_env", {"site": site, "agent": "ag-" + site}, {"temperature_c": v}, rig.now)  # noqa: E731
    rig.engine.observe([hot("t1", 30.0), hot("t2", 30.0)])
    rig.advance(6, agents=ALL)
    assert len(rig.texts("wecom")) == 1 and "t2" in rig.texts("wecom")[0]
    t2 = next(a for a in rig.engine.firing() if a.labels["site"] == "t2")
    assert store.ack(t2.id, "wang", "on my way")
    rig.advance(3700, agents=ALL)  # past the repeat interval: acked, so no repeat
    assert len(rig.texts("wecom")) == 1
    rig.engine.observe([hot("t1", 20.0)])
    rig.advance(2, agents=ALL)
    events = [(h["event"], h["labels"].get("site")) for h in store.history()]
    assert ("resolved", "t1") in events  # a silenced alert's resolve is still recorded
    assert ("acked", "t2") in events
    store.close()


def test_repeat_interval_when_not_acked(rig: Rig) -> None:
    rig.engine.observe([Sample("room_env", {"site": "t1", "agent": "ag-t1"}, {"temperature_c": 30.0}, rig.now)])
    rig.advance(3605, agents=ALL)
    assert len(rig.texts("wecom")) == 2 and "持续告警" in rig.texts("wecom")[1]


def test_thirty_alerts_in_a_minute_become_digests_within_the_rate_limit(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"settle": "0s", "routes": [{"channels": ["wecom"], "language": "en", "group_wait": "1s"}]})
    try:
        for i in range(30):
            s = Sample(
                "room_env", {"site": f"s{i}", "agent": "ag-city", "sensor": str(i)}, {"temperature_c": 30.0}, rig.now
            )
            rig.engine.observe([s])
            rig.advance(2, agents=ALL)
        rig.advance(10, agents=ALL)  # the last ones wait for the robot's minute to roll over
        msgs = rig.texts("wecom")
        times = rig.sent_at["wecom"]
        assert all(sum(t <= u < t + 60 * NS for u in times) <= 20 for t in times), "over 20 a minute"
        assert sum(len(re.findall(r" #\d+$", m, re.M)) for m in msgs) == 30 and any("alerts (" in m for m in msgs)
        got = {f"s{i} hot" for i in range(30) if any(f"s{i} hot" in m for m in msgs)}
        assert len(got) == 30
    finally:
        rig.engine.close()


def test_rate_limit_defers_instead_of_dropping(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        {
            "settle": "0s",
            "channels": {
                "wecom": {"wecom_webhook": "http://127.0.0.1:9/x", "max_per_message": 1},
                "mail": {"url": "json://127.0.0.1:9/"},
            },
        },
    )
    try:
        rig.engine.observe(
            [
                Sample("room_env", {"site": f"s{i}", "agent": "ag-t1"}, {"temperature_c": 30.0}, rig.now)
                for i in range(25)
            ]
        )
        rig.advance(3, agents=ALL)
        assert len(rig.texts("wecom")) == 20  # the robot's limit
        rig.advance(60, agents=ALL)
        assert len(rig.texts("wecom")) == 25
    finally:
        rig.engine.close()


def test_send_failures_are_retried(tmp_path: Path) -> None:
    rig = Rig(tmp_path, {"settle": "0s"})
    fails = {"n": 3}

    def flaky(m: Message) -> None:
        if fails["n"]:
            fails["n"] -= 1
            raise OSError("connection refused")
        rig.sent.append(("wecom", m))

    rig.notifier.senders["wecom"] = flaky
    try:
        rig.engine.observe([Sample("room_env", {"site": "t1", "agent": "ag-t1"}, {"temperature_c": 30.0}, rig.now)])
        rig.advance(30, agents=ALL)
        assert len(rig.texts("wecom")) == 1 and fails["n"] == 0
    finally:
        rig.engine.close()


def test_weekly_maintenance_window_holds_notices(tmp_path: Path) -> None:
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    rig = Rig(
        tmp_path,
        {
            "settle": "0s",
            "maintenance": [{"site": "county-a", "weekly": {"days": days, "start": "00:00", "duration": "24h"}}],
        },
    )
    try:
        rig.engine.observe([Sample("room_env", {"site": "t1", "agent": "ag-t1"}, {"temperature_c": 30.0}, rig.now)])
        rig.advance(5, agents=ALL)
        assert rig.sent == [] and len(rig.engine.firing()) == 1
    finally:
        rig.engine.close()


def test_late_backlog_is_not_paged_and_is_counted(rig: Rig) -> None:
    """Live data from a room (fine) reaches the engine before that room's backlog from an hour
    ago (hot): no alert opens, nothing is sent, and the late samples show in the engine's stats."""
    rig.advance(1, agents=ALL)
    live = Sample("room_env", {"site": "t1", "agent": "ag-t1"}, {"temperature_c": 22.0}, rig.now)
    rig.engine.observe([live])
    backlog = [
        Sample("room_env", {"site": "t1", "agent": "ag-t1"}, {"temperature_c": 31.0}, rig.now - (3600 - i) * NS)
        for i in range(0, 600, 30)
    ]
    rig.engine.observe(backlog)
    rig.advance(30, agents=ALL)
    assert rig.engine.firing() == [] and rig.sent == []
    assert rig.engine.stats()["alerting_late_samples"] == len(backlog)


def test_rule_file_changes_are_reported_for_the_audit_log(rig: Rig) -> None:
    seen: list[tuple[str, str, str]] = []
    rig.engine.on_rules_changed = lambda path, result, detail: seen.append((path, result, detail))
    rules = rig.tmp / "rules.yaml"
    rules.write_text(RULES.replace("for: 2s", "for: 3s"))
    os.utime(rules, ns=(time.time_ns(), time.time_ns() + 10**9))
    rig.advance(1, agents=ALL)
    rules.write_text("rules: [{name: broken}]\n")
    os.utime(rules, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    rig.advance(1, agents=ALL)
    assert [(p, r) for p, r, _ in seen] == [(str(rules), "ok"), (str(rules), "refused")]
    assert seen[0][2] == "3 rules" and "rules[0].summary" in seen[1][2]
