"""Late data: a township's backlog arriving after an outage, before or after its live data.

The evaluator with hand-made sample sequences (both arrival orders), and the engine with
simulated time: a condition that began and ended while the township was cut off is recorded with
its sample-time start and end and summarised in one notice, never paged; one still true when live
data resumes fires normally from its true start; the cut-off alert resolves once.

Expected times are worked by hand from the rule (``for: 2s``, clear at ``<= 26``) and the samples
the tests feed in. The end-to-end version with real processes is test_late_data_e2e.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from collector.alerting.config import AlertingConfig
from collector.alerting.engine import LATE_SUMMARY, UNREACHABLE, AlertEngine
from collector.alerting.notify import Message, Notifier
from collector.alerting.rules import NS, Evaluator, Rule, RuleSet, Transition
from collector.alerting.store import AlertStore
from probes.model import Sample

T0 = 1_700_000_000 * NS
HOT = {"name": "hot", "measurement": "room_env", "field": "temperature_c", "when": "> 27", "clear": "<= 26"}


def hot_rule(**kw: object) -> Rule:
    return Rule.model_validate({**HOT, "for": "2s", "summary": "{site} {sensor} hot {value:.1f}", **kw})


def room(v: float, t_s: float, sensor: str = "a", site: str = "t1") -> Sample:
    return Sample(
        "room_env", {"site": site, "agent": "ag-" + site, "sensor": sensor}, {"temperature_c": v}, T0 + int(t_s * NS)
    )


def outage_room(sensor: str, hot_from: float, hot_until: float, start: int = 5, end: int = 125) -> list[Sample]:
    """What the room's sensor measured, one sample a second, while the agent could not send."""
    return [room(31.0 if hot_from <= t < hot_until else 22.0, t, sensor) for t in range(start, end)]


def brief(ts: list[Transition]) -> list[tuple[str, str, int, bool, bool]]:
    return [(t.labels.get("sensor", ""), t.state, (t.at_ns - T0) // NS, t.late, t.replay) for t in ts]


# ----------------------------------------------------------------------------------- evaluator


def _evaluator() -> Evaluator:
    ev = Evaluator(RuleSet([hot_rule()]), late_after_s=10)
    for t in range(5):  # live before the outage
        ev.tick(T0 + t * NS)
        assert ev.observe(room(22.0, t)) == []
    return ev


def test_backlog_before_live_episode_inside_the_outage() -> None:
    """Reconnect at 125 s, the backlog (5..124 s, hot 30..59 s) first, then live data: the episode
    comes out as late transitions at its own times (fires 2 s in, at 32; resolves at the first
    sample at or below 26, at 60), and nothing fires live."""
    ev = _evaluator()
    now = T0 + 126 * NS
    ev.tick(now)
    out = [t for s in outage_room("a", 30, 60) for t in ev.observe(s)]
    out += ev.observe(room(22.0, 125.5))
    out += ev.tick(now + NS)
    assert brief(out) == [("a", "firing", 32, True, False), ("a", "resolved", 60, True, False)]
    assert ev.late_samples == 0


def test_live_before_backlog_is_replayed_as_the_past() -> None:
    """Live data (fine) at 125 s first, then the backlog: every backlog sample is older than the
    series' newest, so it goes to the series' replay, whose transitions are marked as such."""
    ev = _evaluator()
    ev.tick(T0 + 126 * NS)
    assert ev.observe(room(22.0, 125.5)) == []
    backlog = outage_room("a", 30, 60)
    out = [t for s in backlog for t in ev.observe(s)]
    assert brief(out) == [("a", "firing", 32, True, True), ("a", "resolved", 60, True, True)]
    assert ev.late_samples == len(backlog)
    # the live state was not touched: still judged on live data from now on
    assert ev.series[next(iter(ev.series))].value == 22.0
    # a replay sample older than what the replay has reached is counted, not evaluated
    assert ev.observe(room(31.0, 70)) == [] and ev.late_unordered == 1
    ended = ev.end_replays(list(ev.replays))
    assert len(ended) == 1 and ev.replays == {}


def test_backlog_before_live_still_true_at_reconnect_fires_from_its_true_start() -> None:
    """Hot from 100 s through the reconnect: the backlog makes a late firing at 102; the first live
    sample (still hot, 145 s) confirms it — a live firing carrying the start, 102 s."""
    ev = _evaluator()
    ev.tick(T0 + 150 * NS)  # the whole backlog (to 139 s) is over 10 s behind
    out = [t for s in outage_room("a", 100, 999, end=140) for t in ev.observe(s)]
    assert brief(out) == [("a", "firing", 102, True, False)]
    out = ev.observe(room(31.0, 145))
    assert brief(out) == [("a", "firing", 102, False, False)]
    assert ev.observe(room(31.0, 146)) == []  # confirmed once


def test_live_data_in_the_middle_of_the_backlog() -> None:
    """The first part of the backlog (5..39 s; hot from 30 s: a late firing at 32) arrives, then
    live data (fine, 125.5 s), then the rest (40..124 s; hot until 60 s). The hole between 39 and
    125.5 s may still fill: the late firing is handed to the series' replay, which the rest of the
    backlog continues — the episode ends at 60 s, not when live data resumed."""
    ev = _evaluator()
    ev.tick(T0 + 126 * NS)
    backlog = outage_room("a", 30, 60)
    out = [t for s in backlog[:35] for t in ev.observe(s)]
    assert brief(out) == [("a", "firing", 32, True, False)]
    out = ev.observe(room(22.0, 125.5))
    assert [(t.handover, t.at_ns) for t in out] == [(True, T0 + 32 * NS)]
    out = [t for s in backlog[35:] for t in ev.observe(s)]
    assert brief(out) == [("a", "resolved", 60, True, True)]
    assert ev.observe(room(22.0, 126.5)) == []


def test_a_backlog_catching_up_is_live_data() -> None:
    """The same backlog drained at 126 s: its last samples (116 s on) are within 10 s of the
    clock — live data — and confirm the firing the older ones made."""
    ev = _evaluator()
    ev.tick(T0 + 126 * NS)
    out = [t for s in outage_room("a", 100, 999) for t in ev.observe(s)]
    assert brief(out) == [("a", "firing", 102, True, False), ("a", "firing", 102, False, False)]


def test_several_series_interleaved() -> None:
    """Two rooms' backlogs interleaved with each other and with a third room's live data: each
    series is judged on its own samples."""
    ev = Evaluator(RuleSet([hot_rule()]), late_after_s=10)
    ev.tick(T0 + 200 * NS)
    a, b = outage_room("a", 30, 60), outage_room("b", 40, 50)
    out: list[Transition] = []
    for i in range(len(a)):
        out += ev.observe(a[i]) + ev.observe(b[i]) + ev.observe(room(22.0, 200 + i * 0.01, "c"))
    assert sorted(brief(out), key=lambda x: (x[0], x[2])) == [
        ("a", "firing", 32, True, False),
        ("a", "resolved", 60, True, False),
        ("b", "firing", 42, True, False),
        ("b", "resolved", 50, True, False),
    ]


# -------------------------------------------------------------------------------------- engine

TOPO = """
sites:
  - id: county-a
    kind: county
    agents: [ag-county-a]
    children:
      - {id: t1, kind: township, name: {en: Township One, zh: 一号乡镇}, agents: [ag-t1], devices: [d1]}
"""


class Rig:
    """The engine and notifier with simulated time; the agent's outage is its status going
    offline (what the broker's will message does) and its samples piling up in a spool."""

    def __init__(self, tmp: Path, lang: str = "en") -> None:
        rules = {
            "rules": [
                {
                    **HOT,
                    "for": "2s",
                    "by": ["site", "sensor"],
                    "summary": {"en": "{site}/{sensor} hot {value:.1f}", "zh": "{site}/{sensor} 过热 {value:.1f}"},
                }
            ]
        }
        (tmp / "rules.yaml").write_bytes(orjson.dumps(rules))
        (tmp / "topology.yaml").write_text(TOPO)
        doc = {
            "rules": "rules.yaml",
            "topology": "topology.yaml",
            "settle": "3s",
            "late_after": "10s",
            "late_summary_wait": "5s",
            "channels": {"hook": {"url": "json://127.0.0.1:9/"}},
            "routes": [{"channels": ["hook"], "language": lang, "group_wait": "0s"}],
        }
        self.cfg = AlertingConfig.model_validate(doc, context={"base_dir": tmp})
        self.tmp = tmp
        self.now = T0
        self.sent: list[Message] = []
        self.start()

    def start(self) -> None:
        self.notifier = Notifier(self.tmp / "alerts.db", self.cfg.channels, senders={"hook": self.sent.append})
        self.engine = AlertEngine(
            self.cfg, data_dir=self.tmp, now_ns=self.now, notifier=self.notifier, start_notifier=False
        )

    def restart(self) -> None:
        self.engine.close()
        self.start()

    def second(self, samples: list[Sample]) -> None:
        self.now += NS
        self.engine.observe(
            [Sample("host_cpu", {"site": "county-a", "agent": "ag-county-a"}, {"cpu_pct": 1.0}, self.now)]
        )
        self.engine.observe(samples)
        self.engine.tick(self.now)
        self.notifier.run_once(self.now)

    def rows(self, rule: str) -> list[sqlite3.Row]:
        db = sqlite3.connect(self.tmp / "alerts.db")
        db.row_factory = sqlite3.Row
        try:
            return db.execute("SELECT * FROM alerts WHERE rule=? ORDER BY id", (rule,)).fetchall()
        finally:
            db.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.engine.close()


def s_(t_ns: int) -> float:
    return (t_ns - T0) / NS


@pytest.mark.parametrize("order", ["backlog_first", "live_first", "interleaved"])
def test_outage_episodes_are_history_and_one_summary(rig: Rig, order: str) -> None:
    """t1 is cut off from 5 s to 125 s. Meanwhile room a is hot 30..59 s and room b 40..49 s (both
    over before the reconnect), room c hot from 100 s on (still hot at the reconnect). The backlog
    arrives before live data, after it, or with live data in its middle.

    Whatever the order of arrival: the two episodes are in the history with their sample-time
    spans (a: 32–60 s, b: 42–50 s), marked as having happened while t1 was unreachable, in one
    summary notice, never paged; room c fires once, from 102 s; the cut-off resolves once."""
    sensors = ("a", "b", "c")
    for t in range(1, 5):
        rig.second([room(22.0, t, s) for s in sensors])
    rig.engine.agent_status("ag-t1", "t1", "offline")
    while rig.now < T0 + 125 * NS:
        rig.second([])
    cut = rig.rows(UNREACHABLE)
    assert [r["state"] for r in cut] == ["firing"]
    rig.engine.agent_status("ag-t1", "t1", "online")
    backlog = [
        x for s, (lo, hi) in zip(sensors, [(30, 60), (40, 50), (100, 999)], strict=True) for x in outage_room(s, lo, hi)
    ]
    backlog.sort(key=lambda x: x.time_ns)  # the spool holds them in the order they were measured
    live_t = 125.5
    if order == "backlog_first":
        for i in range(0, len(backlog), 120):  # drains over three seconds
            rig.second(backlog[i : i + 120])
        rig.second([room(22.0 if s != "c" else 31.0, live_t, s) for s in sensors])
    elif order == "live_first":
        rig.second([room(22.0 if s != "c" else 31.0, live_t, s) for s in sensors])
        for i in range(0, len(backlog), 120):
            rig.second(backlog[i : i + 120])
    else:  # 5..44 s (a and b fire), then live data, then the rest (a and b end, c begins)
        rig.second(backlog[:120])
        rig.second([room(22.0 if s != "c" else 31.0, live_t, s) for s in sensors])
        for i in range(120, len(backlog), 120):
            rig.second(backlog[i : i + 120])
    for k in range(15):  # live data goes on
        rig.second([room(22.0 if s != "c" else 31.0, live_t + 1 + k, s) for s in sensors])

    # the cut-off: one alert, resolved once
    cut = rig.rows(UNREACHABLE)
    assert len(cut) == 1 and cut[0]["state"] == "resolved"
    texts = [m.body for m in rig.sent]
    assert sum("Township One unreachable" in x and "RESOLVED" not in x for x in texts) == 1, texts
    assert sum("Township One unreachable" in x and "RESOLVED" in x for x in texts) == 1, texts

    hot = {orjson.loads(r["labels"])["sensor"]: r for r in rig.rows("hot")}
    assert set(hot) == {"a", "b", "c"}
    for sensor, (start, end) in {"a": (32, 60), "b": (42, 50)}.items():
        r = hot[sensor]
        assert (r["state"], s_(r["starts_ns"]), s_(r["ends_ns"]), r["notified_ns"]) == ("resolved", start, end, None)
        assert orjson.loads(r["labels"])["while_unreachable"] == "t1"
    # room c: still hot when live data resumed, fires normally with its true start
    assert hot["c"]["state"] == "firing" and s_(hot["c"]["starts_ns"]) == 102 and hot["c"]["notified_ns"]

    # notices: the cut-off (firing, resolved), room c firing, one summary; no firing for a or b
    firing = [x for x in texts if "hot" in x and "RECORDED LATE" not in x]
    assert len(firing) == 1 and "t1/c hot 31.0" in firing[0], texts
    summaries = [x for x in texts if "RECORDED LATE" in x]
    assert len(summaries) == 1, texts
    assert "while Township One was unreachable: 2 alerts began and ended before it reconnected" in summaries[0]
    assert "t1/a hot 31.0" in summaries[0] and "t1/b hot 31.0" in summaries[0]
    assert len(texts) == 4, texts

    store = AlertStore(rig.tmp / "alerts.db")
    try:
        hist = store.history()
    finally:
        store.close()
    a_events = [(h["event"], s_(h["time"])) for h in hist if h["labels"].get("sensor") == "a"]
    assert a_events == [("firing", 32), ("resolved", 60)]
    assert all("while t1 was unreachable" in h["detail"] for h in hist if h["labels"].get("sensor") in ("a", "b"))
    assert [h["event"] for h in hist if h["rule"] == LATE_SUMMARY] == ["summary"]
    assert rig.engine.stats()["alerting_late_episodes"] == 2


def test_summary_in_chinese(tmp_path: Path) -> None:
    """The same summary for a Chinese route."""
    rig = Rig(tmp_path, "zh")
    try:
        rig.second([room(22.0, 1)])
        rig.engine.agent_status("ag-t1", "t1", "offline")
        while rig.now < T0 + 125 * NS:
            rig.second([])
        rig.engine.agent_status("ag-t1", "t1", "online")
        rig.second([room(22.0, 125.5)])
        rig.second(outage_room("a", 30, 60))
        for k in range(10):
            rig.second([room(22.0, 126.5 + k)])
        late = [m.body for m in rig.sent if "事后补记" in m.body]
        assert (
            len(late) == 1
            and "一号乡镇 不可达期间：1 条告警在恢复连接前已开始并结束" in late[0]
            and "t1/a 过热 31.0" in late[0]
        ), late
    finally:
        rig.engine.close()


def test_late_data_without_a_cut_off_is_reported_late(rig: Rig) -> None:
    """No cut-off was seen (the agent stayed "online", say the collector was the one away): an
    episode that arrives late is still history only, summarised as reported late."""
    rig.now = T0 + 300 * NS
    rig.second([room(22.0, 299.5)])
    rig.second(outage_room("a", 30, 60))  # older than live: replayed
    for _ in range(10):
        rig.second([])
    hot = rig.rows("hot")
    assert [(r["state"], s_(r["starts_ns"]), s_(r["ends_ns"])) for r in hot] == [("resolved", 32, 60)]
    assert orjson.loads(hot[0]["labels"]).get("late") == "true"
    late = [m.body for m in rig.sent]
    assert len(late) == 1 and "reported late by Township One: 1 alert, already over" in late[0], late


def test_cut_off_remembered_across_a_collector_restart(rig: Rig) -> None:
    """The collector restarts during the outage: the cut-off is read back from alerts.db, so the
    episode the backlog brings after the reconnect is still known to have happened while t1 was
    unreachable, and the cut-off still resolves once."""
    rig.second([room(22.0, 1)])
    rig.engine.agent_status("ag-t1", "t1", "offline")
    while rig.now < T0 + 80 * NS:
        rig.second([])
    rig.restart()
    while rig.now < T0 + 125 * NS:
        rig.second([])
    rig.engine.agent_status("ag-t1", "t1", "online")
    rig.second([room(22.0, 125.5)])
    rig.second(outage_room("a", 30, 60))
    for k in range(10):
        rig.second([room(22.0, 126.5 + k)])
    cut = rig.rows(UNREACHABLE)
    assert [r["state"] for r in cut] == ["resolved"]
    hot = rig.rows("hot")
    assert [(s_(r["starts_ns"]), s_(r["ends_ns"])) for r in hot] == [(32, 60)]
    assert orjson.loads(hot[0]["labels"])["while_unreachable"] == "t1"
    late = [m.body for m in rig.sent if "RECORDED LATE" in m.body]
    assert len(late) == 1 and "while Township One was unreachable" in late[0], rig.sent


def test_backlog_ending_hot_behind_cool_live_data_ends_when_live_data_resumed(rig: Rig) -> None:
    """Live data (fine) at 125.5 s first; then the backlog, hot from 100 s to its last sample at
    124 s. The replay is still firing when the late data stops; live data says the room was fine
    at 125.5 s — the first sample after the hole — so the episode is 102 s to 125.5 s."""
    for t in range(1, 5):
        rig.second([room(22.0, t)])
    rig.engine.agent_status("ag-t1", "t1", "offline")
    while rig.now < T0 + 125 * NS:
        rig.second([])
    rig.engine.agent_status("ag-t1", "t1", "online")
    rig.second([room(22.0, 125.5)])
    rig.second(outage_room("a", 100, 999))
    for k in range(10):
        rig.second([room(22.0, 126.5 + k)])
    hot = rig.rows("hot")
    assert [(r["state"], s_(r["starts_ns"]), s_(r["ends_ns"]), r["notified_ns"]) for r in hot] == [
        ("resolved", 102, 125.5, None)
    ]
    assert [m.body for m in rig.sent if "hot" in m.body and "RECORDED LATE" not in m.body] == []
    assert len([m for m in rig.sent if "RECORDED LATE" in m.body]) == 1


def test_backlog_of_an_alert_firing_all_along_is_no_episode(rig: Rig) -> None:
    """Room a is hot before the outage (fires live at 3 s and is paged), stays hot through it and
    after: live data first, then the hot backlog. The replay fires too, but that is the live
    alert's own past — no episode, no summary, still one alert and one firing notice."""
    for t in range(1, 10):
        rig.second([room(31.0, t)])
    rig.engine.agent_status("ag-t1", "t1", "offline")
    while rig.now < T0 + 125 * NS:
        rig.second([])
    rig.engine.agent_status("ag-t1", "t1", "online")
    rig.second([room(31.0, 125.5)])
    rig.second([room(31.0, t) for t in range(10, 125)])
    for k in range(10):
        rig.second([room(31.0, 126.5 + k)])
    hot = rig.rows("hot")
    assert [(r["state"], s_(r["starts_ns"])) for r in hot] == [("firing", 3)]
    assert rig.engine.stats()["alerting_late_episodes"] == 0
    assert [m.body for m in rig.sent if "hot" in m.body] == [m.body for m in rig.sent if "t1/a hot" in m.body]
    assert len([m for m in rig.sent if "t1/a hot" in m.body]) == 1 and not any(
        "RECORDED LATE" in m.body for m in rig.sent
    )
