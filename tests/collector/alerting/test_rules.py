"""Rule parsing and pure evaluation with simulated time: no sleeps, no clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.alerting.rules import (
    NS,
    Condition,
    Evaluator,
    Matcher,
    Rule,
    RuleFileWatcher,
    RuleSet,
    Transition,
    render,
)
from probes.configfile import ConfigError
from probes.model import Sample

T0 = 1_700_000_000 * NS


def rule(**kw: object) -> Rule:
    base: dict[str, object] = {"name": "r", "summary": {"en": "{site} {value:.1f}", "zh": "{site} 值 {value:.1f}"}}
    return Rule.model_validate(base | kw)


def temp(v: float, t_s: float, site: str = "s1", **tags: str) -> Sample:
    return Sample("room_env", {"site": site, "agent": "a1", **tags}, {"temperature_c": v}, T0 + int(t_s * NS))


def run(ev: Evaluator, samples: list[Sample], tick_every_s: float = 1.0) -> list[Transition]:
    """Feed samples in time order with a tick before each, like the collector's writer thread."""
    out: list[Transition] = []
    for s in samples:
        out += ev.tick(s.time_ns)
        out += ev.observe(s)
    return out


def test_matchers() -> None:
    tags = {"ifalias": "Uplink to city", "site": "county-a"}
    assert Matcher.parse("ifalias=~(?i).*uplink.*")(tags)
    assert not Matcher.parse("ifalias!~(?i).*uplink.*")(tags)
    assert Matcher.parse("site=county-a")(tags) and Matcher.parse("site!=county-b")(tags)
    assert Matcher.parse("missing!~.+")(tags)  # an absent tag reads as ""
    with pytest.raises(ValueError, match="bad regular expression"):
        Matcher.parse("x=~(")
    with pytest.raises(ValueError, match="not a matcher"):
        Matcher.parse("just words")


def test_conditions() -> None:
    assert Condition.parse("> 27").test(27.5) and not Condition.parse("> 27").test(27)
    assert Condition.parse("in [3, 4]").test(4) and not Condition.parse("in [3, 4]").test(2)
    assert Condition.parse("== 'down'").test("down") and not Condition.parse("== 'down'").test(2)
    assert Condition.parse("== true").test(True)
    own = Condition.parse(">= threshold_warn_c or 50")
    assert own.test(55, {}) and not own.test(55, {"threshold_warn_c": 70}) and own.test(71, {"threshold_warn_c": 70})
    with pytest.raises(ValueError):
        Condition.parse("about 27")


def test_templates_are_lenient_and_bilingual() -> None:
    r = rule(measurement="room_env", field="temperature_c", when="> 27")
    assert render(r.summary.zh, {"site": "东区", "value": 28.26}) == "东区 值 28.3"
    assert render("{value:.1f} {nope}", {"value": "n/a"}) == "n/a {nope}"
    with pytest.raises(ValueError, match="bad template"):
        rule(measurement="m", field="f", when="> 1", summary="{unclosed")


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"measurement": "m", "field": "f"}, "needs 'when'"),
        ({"kind": "absent"}, "needs 'for'"),
        ({"kind": "rate", "measurement": "m", "field": "f", "when": "> 1"}, "needs 'window'"),
        ({"kind": "state", "measurement": "m", "field": "f"}, "either 'when'"),
    ],
)
def test_invalid_rules_say_what_to_do(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        rule(**kw)


def test_threshold_for_and_hysteresis() -> None:
    r = rule(measurement="room_env", field="temperature_c", when="> 27", clear="<= 26", **{"for": "2m"})
    ev = Evaluator(RuleSet([r]))
    # above for 1 min then dips: stays quiet
    assert run(ev, [temp(28, 0), temp(28, 60), temp(26.5, 90)]) == []
    ts = run(ev, [temp(28, 100), temp(28, 160), temp(28, 219)])
    assert ts == []
    ts = ev.tick(T0 + 220 * NS)  # the clock alone completes the 2 minutes
    assert [(t.state, t.at_ns) for t in ts] == [("firing", T0 + 220 * NS)]
    # 26.5 is below `when` but above `clear`: still firing (hysteresis)
    assert run(ev, [temp(26.5, 230), temp(27.5, 240)]) == []
    ts = run(ev, [temp(25.9, 250)])
    assert [t.state for t in ts] == ["resolved"] and ts[0].value == 25.9


def test_keep_firing_for() -> None:
    r = rule(measurement="room_env", field="temperature_c", when="> 27", keep_firing_for="1m")
    ev = Evaluator(RuleSet([r]))
    assert [t.state for t in run(ev, [temp(28, 0)])] == ["firing"]
    assert run(ev, [temp(20, 10), temp(28, 30), temp(20, 40)]) == []  # clear interrupted: restarts
    assert ev.tick(T0 + 99 * NS) == []
    assert [t.state for t in ev.tick(T0 + 100 * NS)] == ["resolved"]


def test_series_are_independent_and_by_limits_identity() -> None:
    r = rule(measurement="room_env", field="temperature_c", when="> 27", by=["site"])
    ev = Evaluator(RuleSet([r]))
    ts = run(ev, [temp(30, 0, site="a", sensor="x"), temp(30, 1, site="a", sensor="y"), temp(30, 2, site="b")])
    assert sorted(t.labels["site"] for t in ts) == ["a", "b"]
    assert all(set(t.labels) == {"site"} for t in ts)


def test_state_equals_and_changed() -> None:
    down = rule(
        kind="state", measurement="interface", field="oper_status", where=["ifalias=~(?i).*uplink.*"], when="== 2"
    )
    flap = rule(
        name="flap", kind="state", measurement="interface", field="oper_status", changed=True, keep_firing_for="5m"
    )
    ev = Evaluator(RuleSet([down, flap]))

    def itf(status: int, t: float, alias: str = "uplink") -> Sample:
        return Sample(
            "interface", {"site": "c", "ifname": "g1", "ifalias": alias}, {"oper_status": status}, T0 + int(t * NS)
        )

    assert run(ev, [itf(1, 0)]) == []
    assert sorted((t.rule, t.state) for t in run(ev, [itf(2, 10)])) == [("flap", "firing"), ("r", "firing")]
    assert [(t.rule, t.state) for t in run(ev, [itf(1, 20)])] == [("r", "resolved")]
    assert run(ev, [itf(2, 10, alias="access")]) == []  # not an uplink: only the change rule would see it
    assert [(t.rule, t.state) for t in ev.tick(T0 + 320 * NS)] == [("flap", "resolved")]


def test_absent_and_restore_after_restart() -> None:
    r = rule(kind="absent", **{"for": "5m"})
    ev = Evaluator(RuleSet([r]))
    s = Sample("host_cpu", {"site": "t1", "agent": "a9", "cpu": "0"}, {"x": 1}, T0)
    assert ev.observe(s) == []
    assert ev.tick(T0 + 299 * NS) == []
    ts = ev.tick(T0 + 300 * NS)
    assert [(t.state, dict(t.labels)) for t in ts] == [("firing", {"site": "t1", "agent": "a9"})]
    assert ev.tick(T0 + 400 * NS) == []  # fires once
    # a fresh evaluator (collector restarted) told when the agent was last seen fires too
    ev2 = Evaluator(RuleSet([r]))
    ev2.restore("r", {"site": "t1", "agent": "a9"}, firing=False, last_ns=T0)
    assert [t.state for t in ev2.tick(T0 + 301 * NS)] == ["firing"]
    assert [t.state for t in ev2.observe(Sample("host_cpu", s.tags, s.fields, T0 + 302 * NS))] == ["resolved"]


def test_rate_of_change() -> None:
    r = rule(kind="rate", measurement="room_env", field="temperature_c", window="10m", when="> 5", clear="< 3")
    ev = Evaluator(RuleSet([r]))
    slow = [temp(22 + 0.05 * i, 60 * i) for i in range(30)]  # 3 °C/h: never
    assert run(ev, slow) == []
    ev = Evaluator(RuleSet([r]))
    fast = [temp(22 + 0.7 * i, 60 * i) for i in range(10)]  # 6.3 °C in 9 minutes
    ts = run(ev, fast)
    assert [t.state for t in ts] == ["firing"] and ts[0].value > 5


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=25.0, max_value=29.0, allow_nan=False), min_size=10, max_size=600),
)
def test_flapping_signal_bounded_by_hysteresis(values: list[float]) -> None:
    """Any signal wandering around 27 °C for 10 minutes: every firing needs a trip from above 27
    to at or below 26 and back, so transitions never exceed the number of such round trips."""
    r = rule(measurement="room_env", field="temperature_c", when="> 27", clear="<= 26")
    ev = Evaluator(RuleSet([r]))
    step = 600 / len(values)
    ts = run(ev, [temp(v, i * step) for i, v in enumerate(values)])
    trips, high = 0, False
    for v in values:
        if not high and v > 27:
            high, trips = True, trips + 1
        elif high and v <= 26:
            high = False
    assert sum(t.state == "firing" for t in ts) == trips
    states = [t.state for t in ts]
    assert all(a != b for a, b in zip(states, states[1:], strict=False))  # strictly alternating


def test_flapping_without_hysteresis_would_be_noisy() -> None:
    """The peer: the same square wave without a clear condition notifies on every crossing."""
    wave = [temp(27.5 if i % 2 else 26.5, 10 * i) for i in range(60)]
    noisy = Evaluator(RuleSet([rule(measurement="room_env", field="temperature_c", when="> 27")]))
    quiet = Evaluator(RuleSet([rule(measurement="room_env", field="temperature_c", when="> 27", clear="<= 26")]))
    assert len(run(noisy, wave)) == 59  # 30 firings, 29 resolves
    assert len(run(quiet, wave)) == 1


def test_watcher_reloads_and_keeps_old_rules_on_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import os

    p = tmp_path / "rules.yaml"
    p.write_text("rules:\n- {name: a, measurement: m, field: f, when: '> 1', summary: x}\n")
    w = RuleFileWatcher(p)
    assert w.poll() is False
    p.write_text(
        "rules:\n- {name: a, measurement: m, field: f, when: '> 1', summary: x}\n- {name: b, kind: absent, for: 1m, summary: y}\n"
    )
    os.utime(p, ns=(1, 10**18))
    assert w.poll() is True and [r.name for r in w.rules.rules] == ["a", "b"]
    p.write_text("rules:\n- {name: c, measurement: m, field: f, when: 'about 1', summary: x}\n")
    os.utime(p, ns=(1, 2 * 10**18))
    assert w.poll() is False and [r.name for r in w.rules.rules] == ["a", "b"]
    assert "rules[0].when" in (w.last_error or "") and "keeping the previous 2 rules" in caplog.text
    with pytest.raises(ConfigError):
        RuleFileWatcher(p)


# -- one clock: sample time, per series ---------------------------------------------------------
def _room(v: float, t_ns: int) -> Sample:
    return Sample("room_env", {"site": "t1", "sensor": "s1"}, {"temperature_c": v}, t_ns)


def test_backlog_arriving_after_live_data_does_not_fire_now() -> None:
    """The township reconnects: its live samples (fine) arrive first, then an hour-old backlog of
    hot samples spanning twice the rule's `for`. Nothing may fire now: the backlog is replayed
    on its own, and its firing (at the series' time, 5 minutes into the backlog) is marked as the
    past, for the history."""
    r = rule(measurement="room_env", field="temperature_c", when="> 27", **{"for": "5m"})
    ev = Evaluator(RuleSet([r]))
    now = T0 + 3600 * NS
    ev.tick(now)
    assert ev.observe(_room(22.0, now)) == []
    backlog = [_room(30.0, T0 + i * 30 * NS) for i in range(21)]  # 10 minutes hot, an hour ago
    out = [t for s in backlog for t in ev.observe(s)]
    for i in range(1, 11):
        out += ev.tick(now + i * NS)
    assert [(t.state, t.at_ns, t.late, t.replay) for t in out] == [("firing", T0 + 300 * NS, True, True)]
    assert ev.late_samples == len(backlog)
    # and the live series still works: hot from now on fires after 5 minutes of its own time
    fired = [t for i in range(1, 12) for t in ev.observe(_room(30.0, now + i * 30 * NS)) + ev.tick(now + i * 30 * NS)]
    assert [(t.state, t.at_ns) for t in fired] == [("firing", now + 11 * 30 * NS)]


def test_backlog_alone_is_judged_in_its_own_time() -> None:
    """A backlog arriving on its own (nothing newer yet): hot from an hour ago for two minutes,
    `for: 5m`. The old engine promoted it at the next tick (wall time minus the first hot
    sample's time is an hour). In the series' own time only 2 minutes have passed; its clock runs
    on from its newest sample at the wall clock's pace, so it reaches 5 minutes 3 minutes later —
    and the alert starts at the series' time, an hour ago, not now."""
    r = rule(measurement="room_env", field="temperature_c", when="> 27", **{"for": "5m"})
    ev = Evaluator(RuleSet([r]))
    now = T0 + 3600 * NS
    ev.tick(now)
    out = [t for i in range(5) for t in ev.observe(_room(30.0, T0 + i * 30 * NS))]  # hot at 0..120 s
    out += [t for i in range(1, 180) for t in ev.tick(now + i * NS)]
    assert out == []
    fired = ev.tick(now + 180 * NS)
    assert [(t.state, t.at_ns) for t in fired] == [("firing", T0 + 300 * NS)]
