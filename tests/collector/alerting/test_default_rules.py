"""configs/rules/default.yaml: every rule fires on a sample that should fire it and not on one
that should not (DOMAIN.md §4 thresholds), and every rule is covered here."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from collector.alerting.rules import NS, Evaluator, RuleSet, load_rules, render
from probes.model import Sample

PACK = Path(__file__).parents[3] / "configs" / "rules" / "default.yaml"
RULES = {r.name: r for r in load_rules(PACK)}
T0 = 1_700_000_000 * NS
UPLINK = {"device": "sw-county-a", "ifname": "GE0/0/1", "ifalias": "Uplink to city"}
UPS_LINE = {"device": "ups1", "mib": "ups_mib", "line": "1"}
APC = {"device": "ups1", "mib": "apc_powernet"}

# rule -> (measurement, extra tags, fields that fire, fields that do not); rate rules get a
# baseline sample first: (measurement, tags, baseline, fire, no-fire)
CASES: dict[str, tuple[Any, ...]] = {
    "room_temperature_high": ("room_env", {"sensor": "th1"}, {"temperature_c": 28.0}, {"temperature_c": 26.5}),
    "room_temperature_low": ("room_env", {"sensor": "th1"}, {"temperature_c": 17.0}, {"temperature_c": 18.5}),
    "room_dew_point_high": ("room_env", {}, {"dew_point_c": 16.0}, {"dew_point_c": 14.0}),
    "room_dew_point_low": ("room_env", {}, {"dew_point_c": 4.0}, {"dew_point_c": 6.0}),
    "room_humidity_high": ("room_env", {}, {"humidity_pct": 65.0}, {"humidity_pct": 55.0}),
    "water_leak": ("leak", {"sensor": "floor"}, {"leak": True}, {"leak": False}),
    "smoke_detected": ("contact", {"contact": "smoke"}, {"active": True}, {"active": False}),
    "ups_on_battery": ("ups", {"device": "ups1"}, {"output_source": 5}, {"output_source": 3}),
    "ups_battery_low": ("ups", {"device": "ups1"}, {"battery_status": 3}, {"battery_status": 2}),
    "ups_runtime_low": ("ups", {"device": "ups1"}, {"runtime_min": 2}, {"runtime_min": 30}),
    "ups_charge_low": ("ups", {"device": "ups1"}, {"charge_pct": 4}, {"charge_pct": 80}),
    "ups_overload": ("ups", {"device": "ups1"}, {"load_pct": 85}, {"load_pct": 60}),
    "ups_input_voltage_low": ("ups_input", UPS_LINE, {"voltage_v": 190}, {"voltage_v": 220}),
    "ups_input_voltage_high": ("ups_input", UPS_LINE, {"voltage_v": 250}, {"voltage_v": 220}),
    "ups_single_input_voltage_low": ("ups", APC, {"input_voltage_v": 190}, {"input_voltage_v": 220}),
    "ups_single_input_voltage_high": ("ups", APC, {"input_voltage_v": 250}, {"input_voltage_v": 220}),
    "wan_loss_high": ("icmp", {"target": "county-a"}, {"loss_pct": 40.0}, {"loss_pct": 10.0}),
    "wan_rtt_high": ("icmp", {"target": "county-a"}, {"rtt_avg_ms": 200.0}, {"rtt_avg_ms": 100.0}),
    "uplink_down": ("interface", UPLINK, {"oper_status": 2}, {"oper_status": 1}),
    "interface_util_in_high": ("interface", UPLINK, {"util_in_pct": 95.0}, {"util_in_pct": 85.0}),
    "interface_util_out_high": ("interface", UPLINK, {"util_out_pct": 95.0}, {"util_out_pct": 85.0}),
    "interface_errors": ("interface", UPLINK, {"in_errors_per_s": 5.0}, {"in_errors_per_s": 1.0}),
    "device_cpu_high": ("device_cpu", {"device": "sw1"}, {"cpu_pct": 95.0}, {"cpu_pct": 85.0}),
    "device_memory_high": ("device_memory", {"device": "sw1"}, {"memory_pct": 95.0}, {"memory_pct": 85.0}),
    "device_temperature_warn": (
        "device_sensor",
        {"device": "sw1"},
        {"temperature_c": 52.0},
        {"temperature_c": 52.0, "threshold_warn_c": 70},
    ),
    "device_temperature_critical": (
        "device_sensor",
        {"device": "sw1"},
        {"temperature_c": 61.0},
        {"temperature_c": 59.0},
    ),
    "portal_down": ("probe_status", {"probe": "http", "target": "portal"}, {"status": "down"}, {"status": "degraded"}),
    "portal_cert_expiring": ("http", {"target": "portal"}, {"cert_days_left": 10.0}, {"cert_days_left": 30.0}),
    "portal_content_changed": ("http", {"target": "portal"}, {"changed": True}, {"changed": False}),
    # rate rules
    "room_temperature_rising": (
        "room_env",
        {},
        {"temperature_c": 22.0},
        {"temperature_c": 28.0},
        {"temperature_c": 24.0},
    ),
    "agent_spool_growing": ("netwatch_agent", {}, {"spool_depth": 0}, {"spool_depth": 500}, {"spool_depth": 10}),
    "agent_dropping_samples": (
        "netwatch_agent",
        {},
        {"dropped_samples": 0},
        {"dropped_samples": 30},
        {"dropped_samples": 0},
    ),
    "collector_session_lost": (
        "netwatch_collector",
        {"collector": "c"},
        {"mqtt_session_ok": False},
        {"mqtt_session_ok": True},
    ),
    "collector_disk_full": (
        "netwatch_collector",
        {"collector": "c"},
        {"disk_full": True},
        {"disk_full": False},
    ),
    "agent_over_quota": (
        "netwatch_collector",
        {"collector": "c"},
        {"rejected_over_quota": 0},
        {"rejected_over_quota": 12},
        {"rejected_over_quota": 0},
    ),
    "unknown_agent_refused": (
        "netwatch_collector",
        {"collector": "c"},
        {"rejected_unknown_agent": 3},
        {"rejected_unknown_agent": 4},
        {"rejected_unknown_agent": 3},
    ),
}


def fires(rule_name: str, samples: list[tuple[str, dict[str, str], dict[str, Any]]], *, hold_s: float) -> bool:
    rule = RULES[rule_name]
    ev = Evaluator(RuleSet([rule]))
    fired = False
    t = T0
    for m, tags, fields in samples:
        s = Sample(m, {"site": "county-a", "agent": "ag", **tags}, fields, t)
        fired |= any(x.rule == rule_name and x.state == "firing" for x in ev.observe(s))
        t += 60 * NS
    # the same reading held until `for` is over (polls repeat it), then the clock moves on
    end = t + int(hold_s * NS)
    while t <= end:
        s = Sample(m, {"site": "county-a", "agent": "ag", **tags}, fields, t)
        fired |= any(x.state == "firing" for x in ev.observe(s) + ev.tick(t))
        t += 30 * NS
    return fired


def test_every_rule_is_covered() -> None:
    assert set(CASES) | {"agent_silent", "uplink_flapped"} == set(RULES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_and_stays_quiet(name: str) -> None:
    case = CASES[name]
    hold = RULES[name].for_s + 60
    if RULES[name].kind == "rate":
        m, tags, base, hot, calm = case
        assert fires(name, [(m, tags, base), (m, tags, hot)], hold_s=0)
        assert not fires(name, [(m, tags, base), (m, tags, calm)], hold_s=0)
    else:
        m, tags, hot, calm = case
        assert fires(name, [(m, tags, hot)], hold_s=hold), f"{name} should fire on {hot}"
        assert not fires(name, [(m, tags, calm)], hold_s=hold), f"{name} should not fire on {calm}"


def test_agent_silent_and_uplink_flapped() -> None:
    ev = Evaluator(RuleSet([RULES["agent_silent"], RULES["uplink_flapped"]]))
    ev.observe(Sample("host_cpu", {"site": "t1", "agent": "ag"}, {"cpu_pct": 3.0}, T0))
    assert ev.tick(T0 + 299 * NS) == []
    assert [t.rule for t in ev.tick(T0 + 300 * NS)] == ["agent_silent"]
    # the collector's own samples carry no agent: they never make an agent_silent series
    ev = Evaluator(RuleSet([RULES["agent_silent"]]))
    ev.observe(Sample("netwatch_collector", {"collector": "c"}, {"queue_depth": 0}, T0))
    assert ev.series == {} and ev.tick(T0 + 3600 * NS) == []
    ev = Evaluator(RuleSet([RULES["uplink_flapped"]]))
    tags = {"site": "t1", "agent": "ag", **UPLINK}
    assert ev.observe(Sample("interface", tags, {"oper_status": 1}, T0)) == []
    assert [t.rule for t in ev.observe(Sample("interface", tags, {"oper_status": 2}, T0 + NS))] == ["uplink_flapped"]
    access = {**tags, "ifalias": "office printer"}
    ev.observe(Sample("interface", access, {"oper_status": 1}, T0))
    assert ev.observe(Sample("interface", access, {"oper_status": 2}, T0 + NS)) == []


# -- UPS input voltage, every line --------------------------------------------------------------

SNMP_CATALOGUE = Path(__file__).parents[3] / "probes" / "snmp" / "metrics.csv"


def _ups_poll(device: str, mib: str, first: float, lines: tuple[float, ...], t: int) -> list[Sample]:
    """One poll of a UPS as the SNMP probe reports it (probes/snmp/metrics.csv): the `ups` summary
    with the first line's input voltage and, for UPS-MIB, one `ups_input` per line tagged `line`."""
    tags = {"site": "county-a", "agent": "ag", "device": device, "mib": mib}
    summary = Sample("ups", tags, {"input_voltage_v": first, "output_source": 3, "battery_status": 2}, t)
    per_line = [
        Sample("ups_input", {**tags, "line": str(n)}, {"voltage_v": v, "frequency_hz": 50.0}, t)
        for n, v in enumerate(lines, start=1)
    ]
    return [summary, *per_line]


def _alerts(device: str, mib: str, first: float, lines: tuple[float, ...]) -> list[tuple[str, str, str]]:
    """Every rule of the default file over 2 minutes of polls every 30 s (past the rules' 1 min
    `for`): (rule, English summary, Chinese summary) of each alert that fired."""
    ev = Evaluator(RuleSet(list(RULES.values())))
    out = []
    for k in range(5):
        t = T0 + k * 30 * NS
        for s in _ups_poll(device, mib, first, lines, t):
            out += [x for x in ev.observe(s) if x.state == "firing"]
        out += [x for x in ev.tick(t) if x.state == "firing"]
    return [
        (
            x.rule,
            render(RULES[x.rule].summary.en, {**x.labels, "value": x.value}),
            render(RULES[x.rule].summary.zh, {**x.labels, "value": x.value}),
        )
        for x in out
    ]


def test_a_three_phase_ups_with_line_2_low_is_one_alert_naming_line_2() -> None:
    assert _alerts("ups-3p", "ups_mib", 221.0, (221.0, 190.0, 222.0)) == [
        (
            "ups_input_voltage_low",
            "county-a: UPS ups-3p input line 2 at 190 V, below 197 V",
            "county-a：UPS ups-3p 输入第 2 路电压 190 V，低于 197 V",
        )
    ]
    ((rule, en, _),) = _alerts("ups-3p", "ups_mib", 221.0, (221.0, 222.0, 250.0))
    assert (rule, en) == ("ups_input_voltage_high", "county-a: UPS ups-3p input line 3 at 250 V, above 243 V")


def test_line_1_low_is_one_alert_not_two() -> None:
    """The `ups` summary repeats line 1: a UPS-MIB UPS is watched per line only."""
    ((rule, en, _),) = _alerts("ups-1p", "ups_mib", 190.0, (190.0,))
    assert (rule, en) == ("ups_input_voltage_low", "county-a: UPS ups-1p input line 1 at 190 V, below 197 V")


def test_a_ups_without_a_line_table_is_watched_by_its_one_voltage() -> None:
    assert _alerts("ups-apc", "apc_powernet", 190.0, ()) == [
        (
            "ups_single_input_voltage_low",
            "county-a: UPS ups-apc input 190 V below 197 V",
            "county-a：UPS ups-apc 输入电压 190 V，低于 197 V",
        )
    ]
    assert _alerts("ups-apc", "apc_powernet", 220.0, ()) == []


def test_the_ups_rules_watch_what_the_snmp_probe_emits() -> None:
    with SNMP_CATALOGUE.open(encoding="utf-8") as f:
        catalogued = {(row["measurement"], row["field"]) for row in csv.DictReader(f)}
    for name in ("ups_input_voltage_low", "ups_input_voltage_high", "ups_single_input_voltage_low"):
        assert (RULES[name].measurement, RULES[name].field) in catalogued, name
