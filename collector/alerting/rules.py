"""Alert rules: the YAML schema, its parsing (matchers, conditions, templates) and the pure,
clock-free evaluation of one rule over one series — every function takes ``now`` as an argument."""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import os
import re
import string
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError, field_validator, model_validator

from probes.base import Duration
from probes.configfile import ConfigError, StrictModel, problems_from, read_yaml
from probes.model import FieldValue, Sample

log = logging.getLogger("netwatch.alerting")

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
NS = 1_000_000_000

# --------------------------------------------------------------------------------- matchers

_MATCHER = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One tag filter: ``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``.

    A missing tag reads as "" so ``ifalias!~uplink`` holds for an interface without an alias."""

    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _MATCHER.match(text)
        if not m:
            raise ValueError(
                f"{text!r} is not a matcher: write it like site=county-a, ifalias=~(?i)uplink or role!=lab"
            )
        name, op, value = m.group(1), m.group(2), m.group(3)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        rx = None
        if op in ("=~", "!~"):
            try:
                rx = re.compile(value)
            except re.error as e:
                raise ValueError(f"{text!r}: bad regular expression: {e}") from None
        return cls(name, op, value, rx)

    def __call__(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self.regex is not None
        hit = self.regex.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matchers(raw: Any) -> tuple[Matcher, ...]:
    """A list of ``"k=v"`` strings, or a mapping ``{k: v}`` (equality, or ``{k: "=~rx"}``)."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, Mapping):
        out = []
        for k, v in raw.items():
            v = str(v)
            out.append(Matcher.parse(f"{k}{v}" if v[:2] in ("=~", "!~", "!=") or v[:1] == "=" else f"{k}={v}"))
        return tuple(out)
    return tuple(Matcher.parse(str(x)) for x in raw)


# -------------------------------------------------------------------------------- conditions

_COND = re.compile(r"^\s*(>=|<=|==|!=|>|<|not in|in)\s*(.+?)\s*$")
_REF = re.compile(r"^([A-Za-z_]\w*)(?:\s+or\s+(-?\d+(?:\.\d+)?))?$")
_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below", "==": "equal to", "!=": "not equal to"}


def _literal(text: str) -> FieldValue:
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t in ("true", "false"):
        return t == "true"
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"{t!r} is neither a number, a quoted string, nor a field name") from None


@dataclass(frozen=True, slots=True)
class Condition:
    """``"> 27"``, ``"<= 5"``, ``"== 'down'"``, ``"in [3, 4]"``, or against another field of the
    same sample with a fallback: ``">= threshold_warn_c or 50"`` (the device's own threshold)."""

    text: str
    op: str
    const: FieldValue | tuple[FieldValue, ...] | None
    ref: str | None = None

    @classmethod
    def parse(cls, text: Any) -> Condition:
        if isinstance(text, bool) or not isinstance(text, str | int | float):
            raise ValueError(f"{text!r} is not a condition: write it like '> 27', '== 2', 'in [3, 4]'")
        if isinstance(text, int | float):
            return cls(f"== {text}", "==", float(text))
        m = _COND.match(text)
        if not m:
            raise ValueError(
                f"{text!r} is not a condition: write it like '> 27', '== 2', 'in [3, 4]', '>= limit_c or 50'"
            )
        op, rhs = m.group(1), m.group(2)
        if op in ("in", "not in"):
            if not (rhs.startswith("[") and rhs.endswith("]")):
                raise ValueError(f"{text!r}: 'in' takes a list like [3, 4]")
            items = tuple(_literal(x) for x in rhs[1:-1].split(",") if x.strip())
            return cls(text, op, items)
        ref = _REF.match(rhs)
        if ref and rhs not in ("true", "false"):
            return cls(text, op, float(ref.group(2)) if ref.group(2) else None, ref.group(1))
        return cls(text, op, _literal(rhs))

    def bound(self, fields: Mapping[str, FieldValue]) -> FieldValue | tuple[FieldValue, ...] | None:
        if self.ref is not None:
            v = fields.get(self.ref)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v != 0:
                return float(v)
            return self.const
        return self.const

    def test(self, value: FieldValue, fields: Mapping[str, FieldValue] = {}) -> bool:  # noqa: B006 - read only
        rhs = self.bound(fields)
        if rhs is None:
            return False
        if self.op in ("in", "not in"):
            assert isinstance(rhs, tuple)
            hit = _norm(value) in {_norm(x) for x in rhs}
            return hit if self.op == "in" else not hit
        a, b = _norm(value), _norm(rhs)
        if type(a) is not type(b):
            return self.op == "!=" and not (isinstance(a, float) and isinstance(b, float))
        try:
            return bool(_OPS[self.op](a, b))
        except TypeError:
            return False

    def words(self) -> str:
        if self.op in ("in", "not in"):
            return f"{'one of' if self.op == 'in' else 'none of'} {', '.join(_fmt(x) for x in self.const)}"  # type: ignore[union-attr]
        if self.ref is not None:
            tail = f" (or {_fmt(self.const)} when the device does not report it)" if self.const is not None else ""
            return f"{_WORDS[self.op]} the sample's own {self.ref}{tail}"
        return f"{_WORDS[self.op]} {_fmt(self.const)}"


def _norm(v: Any) -> Any:
    # bool and int compare as numbers with the thresholds written as floats in YAML
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int):
        return float(v)
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, str) else str(v)


# --------------------------------------------------------------------------------- templates


class _Defaulting(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class _Lenient(string.Formatter):
    """``{value:.1f}`` on a string value, or a placeholder with no value, must not lose the alert."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)

    def get_value(self, key: Any, args: Any, kwargs: Any) -> Any:
        if isinstance(key, int):
            return "{" + str(key) + "}"
        return kwargs[key]


_FORMATTER = _Lenient()


def render(template: str, values: Mapping[str, Any]) -> str:
    try:
        return _FORMATTER.vformat(template, (), _Defaulting(values))
    except (ValueError, IndexError, KeyError, AttributeError):
        return template


class Text(BaseModel):
    """A message in both languages: ``{en: ..., zh: ...}``; a bare string serves both."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    en: str
    zh: str

    @model_validator(mode="before")
    @classmethod
    def _bare(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"en": v, "zh": v}
        if isinstance(v, Mapping) and len(v) == 1 and ("en" in v or "zh" in v):
            only = next(iter(v.values()))
            return {"en": only, "zh": only}
        return v

    @field_validator("en", "zh")
    @classmethod
    def _syntax(cls, v: str) -> str:
        try:
            list(string.Formatter().parse(v))
        except ValueError as e:
            raise ValueError(f"bad template {v!r}: {e} (write placeholders like {{site}} or {{value:.1f}})") from None
        return v

    def get(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


# -------------------------------------------------------------------------------------- rules

Kind = Literal["threshold", "state", "absent", "rate"]


class Rule(BaseModel):
    """One rule; see configs/rules/default.yaml for every kind in use."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z_][\w.-]*$")
    kind: Kind = "threshold"
    #: measurement to watch; absent rules may leave it out (any sample from the series counts)
    measurement: str | None = None
    field: str | None = None
    where: tuple[InstanceOf[Matcher], ...] = ()
    when: InstanceOf[Condition] | None = None
    #: the condition that resolves a firing alert (hysteresis); default: ``when`` no longer holds
    clear: InstanceOf[Condition] | None = None
    #: state rules: fire whenever the value changes
    changed: bool = False
    #: rate rules: the change of the value over this window is what ``when`` tests
    window: Duration = 0.0
    for_s: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    #: tags that identify one series (and one alert); default: every tag of the sample
    by: tuple[str, ...] | None = None
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    summary: Text
    description: Text | None = None

    @field_validator("where", mode="before")
    @classmethod
    def _where(cls, v: Any) -> Any:
        return parse_matchers(v)

    @field_validator("when", "clear", mode="before")
    @classmethod
    def _cond(cls, v: Any) -> Any:
        return None if v is None else Condition.parse(v)

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        k = self.kind
        if k != "absent" and (self.measurement is None or self.field is None):
            raise ValueError(f"a {k} rule needs 'measurement' and 'field'")
        if k in ("threshold", "rate") and self.when is None:
            raise ValueError(f"a {k} rule needs 'when', e.g. when: '> 27'")
        if k == "state" and (self.when is None) == (not self.changed):
            raise ValueError("a state rule needs either 'when' (e.g. when: '== 2') or 'changed: true', not both")
        if k == "rate" and self.window <= 0:
            raise ValueError("a rate rule needs 'window', e.g. window: 10m")
        if k == "absent" and self.for_s <= 0:
            raise ValueError("an absent rule needs 'for', e.g. for: 5m")
        if k == "absent" and self.when is not None:
            raise ValueError("an absent rule takes no 'when': it fires on silence")
        return self

    @property
    def series_tags(self) -> tuple[str, ...] | None:
        if self.by is not None:
            return self.by
        return ("site", "agent") if self.kind == "absent" else None

    def selects(self, s: Sample) -> bool:
        if self.measurement is not None and s.measurement != self.measurement:
            return False
        if self.field is not None and self.field not in s.fields:
            return False
        # Silence is about a series that has its identity: a sample without the tags an absent
        # rule groups by (the collector's own, say) opens no "agent '' silent" series.
        if self.kind == "absent" and any(not s.tags.get(k) for k in self.series_tags or ()):
            return False
        return all(m(s.tags) for m in self.where)

    def series_labels(self, tags: Mapping[str, str]) -> dict[str, str]:
        keep = self.series_tags
        if keep is None:
            return dict(tags)
        return {k: tags.get(k, "") for k in keep}

    def explain(self) -> str:
        """The rule in plain words, for ``rules check``."""
        what = (
            f"{self.measurement}.{self.field}"
            if self.field
            else (f"{self.measurement} sample" if self.measurement else "sample")
        )
        where = f" where {' and '.join(str(m) for m in self.where)}" if self.where else ""
        hold = f" for {_dur(self.for_s)}" if self.for_s else ""
        if self.kind == "absent":
            scope = ", ".join(self.series_tags or ())
            text = f"{self.severity}: fires when no {what}{where} arrives from a ({scope}) for {_dur(self.for_s)}; resolves on the next one"
            return text
        if self.kind == "state" and self.changed:
            text = f"{self.severity}: fires when {what}{where} changes value"
            return text + f"; resolves after {_dur(self.keep_firing_for or 300)} without a change"
        assert self.when is not None
        if self.kind == "rate":
            text = f"{self.severity}: fires when {what}{where} changes by an amount {self.when.words()} within {_dur(self.window)}{hold}"
        else:
            text = f"{self.severity}: fires when {what}{where} is {self.when.words()}{hold}"
        clear = f"is {self.clear.words()}" if self.clear else "no longer meets the condition"
        keep = f" for {_dur(self.keep_firing_for)}" if self.keep_firing_for else ""
        return text + f"; resolves when it {clear}{keep}"


def _dur(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


class RuleFile(StrictModel):
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleFile:
        seen: set[str] = set()
        for r in self.rules:
            if r.name in seen:
                raise ValueError(f"rule name {r.name!r} is used twice: names identify alerts, make them unique")
            seen.add(r.name)
        return self


def load_rules(path: str | Path) -> list[Rule]:
    """Read and validate a rule file; raises ConfigError naming the file, the key and the fix."""
    doc = read_yaml(path)
    try:
        return list(RuleFile.model_validate(doc).rules)
    except ValidationError as e:
        raise ConfigError(path, problems_from(e, RuleFile)) from None


class RuleSet:
    """Rules indexed by measurement, so a sample meets only the rules that can match it."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        self.by_name = {r.name: r for r in self.rules}
        self.by_measurement: dict[str | None, list[Rule]] = {}
        for r in self.rules:
            self.by_measurement.setdefault(r.measurement, []).append(r)

    def candidates(self, measurement: str) -> list[Rule]:
        return self.by_measurement.get(measurement, [])

    @property
    def any_measurement(self) -> list[Rule]:
        return self.by_measurement.get(None, [])


class RuleFileWatcher:
    """Reloads a rule file when its mtime changes; a broken edit keeps the old rules and logs why."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mtime: float | None = None
        self.rules = RuleSet(load_rules(path))
        self.mtime = _mtime(path)
        self.last_error: str | None = None

    def poll(self) -> bool:
        """True when new rules were loaded."""
        m = _mtime(self.path)
        if m is None or m == self.mtime:
            return False
        self.mtime = m
        try:
            self.rules = RuleSet(load_rules(self.path))
        except ConfigError as e:
            self.last_error = str(e)
            log.error("rule file changed but is invalid; keeping the previous %d rules:\n%s", len(self.rules.rules), e)
            return False
        self.last_error = None
        log.info("reloaded %d rules from %s", len(self.rules.rules), self.path)
        return True


def _mtime(p: Path) -> float | None:
    try:
        return os.stat(p).st_mtime_ns / NS
    except OSError:
        return None


# -------------------------------------------------------------------------------- evaluation


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """The identity of one alert: rule name + series labels, stable across restarts."""
    text = rule + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Transition:
    """A series' alert started firing or resolved at ``at_ns``."""

    rule: str
    fp: str
    labels: Mapping[str, str]
    state: Literal["firing", "resolved"]
    at_ns: int
    value: FieldValue | None
    #: made by a sample that arrived more than ``late_after`` behind the evaluator's clock (a backlog)
    late: bool = False
    #: made by the replay of samples older than the series' newest (the past, for history only)
    replay: bool = False
    #: not a change: the live state's late firing now continues in the replay (a hole in the series)
    handover: bool = False


@dataclass(slots=True)
class SeriesState:
    """What one rule remembers about one series."""

    labels: dict[str, str]
    phase: Literal["inactive", "pending", "firing"] = "inactive"
    since_ns: int = 0  # entered pending
    clear_since_ns: int | None = None  # clear condition holding since (while firing)
    last_ns: int = 0  # the newest sample's time
    #: how far the newest sample was behind the evaluator's clock when it arrived (a backlog's age)
    lag_ns: int = 0
    value: FieldValue | None = None
    prev: FieldValue | None = None  # state rules: the previous value
    changed_ns: int = 0  # state rules: when it last changed
    window: deque[tuple[int, float]] = field(default_factory=deque)  # rate rules
    fired_ns: int = 0  # when the current firing began (sample time)
    fired_late: bool = False  # ... and it was made by late data: not yet confirmed by live data
    #: the time of the first sample after a hole longer than ``late_after`` in the series (data resuming)
    resumed_ns: int = 0


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def step(
    rule: Rule, st: SeriesState, fp: str, sample_fields: Mapping[str, FieldValue] | None, now_ns: int
) -> Transition | None:
    """Advance one series by a sample (``sample_fields``, ``now_ns`` its time) or by the clock
    alone (None, ``now_ns`` the series' own clock; for absent rules, the evaluator's).

    Pure apart from mutating ``st``: no clock, no I/O, so tests drive it with simulated time."""
    if rule.kind == "absent":
        return _step_absent(rule, st, fp, sample_fields is not None, now_ns)
    if sample_fields is None:
        return _step_time(rule, st, fp, now_ns)
    assert rule.field is not None
    raw = sample_fields.get(rule.field)
    if raw is None:
        return None
    st.last_ns = now_ns
    if rule.kind == "state" and rule.changed:
        changed = st.prev is not None and _norm(raw) != _norm(st.prev)
        st.prev, st.value = raw, raw
        if changed:
            st.changed_ns = now_ns
            if st.phase != "firing":
                st.phase = "firing"
                return Transition(rule.name, fp, st.labels, "firing", now_ns, raw)
        return _step_time(rule, st, fp, now_ns)
    value: FieldValue = raw
    if rule.kind == "rate":
        x = _num(raw)
        if x is None:
            return None
        horizon = now_ns - int(rule.window * NS)
        while st.window and st.window[0][0] < horizon:
            st.window.popleft()
        st.window.append((now_ns, x))
        value = x - st.window[0][1]
    st.value = value
    assert rule.when is not None
    firing_cond = rule.when.test(value, sample_fields)
    if st.phase == "firing":
        clearing = rule.clear.test(value, sample_fields) if rule.clear is not None else not firing_cond
        if clearing:
            if st.clear_since_ns is None:
                st.clear_since_ns = now_ns
        else:
            st.clear_since_ns = None
        return _step_time(rule, st, fp, now_ns)
    if firing_cond:
        if st.phase == "inactive":
            st.phase, st.since_ns = "pending", now_ns
        return _step_time(rule, st, fp, now_ns)
    st.phase = "inactive"
    return None


def _step_time(rule: Rule, st: SeriesState, fp: str, now_ns: int) -> Transition | None:
    if st.phase == "pending" and now_ns - st.since_ns >= rule.for_s * NS:
        st.phase, st.clear_since_ns = "firing", None
        return Transition(rule.name, fp, st.labels, "firing", now_ns, st.value)
    if st.phase == "firing":
        if rule.kind == "state" and rule.changed:
            if now_ns - st.changed_ns >= (rule.keep_firing_for or 300.0) * NS:
                st.phase = "inactive"
                return Transition(rule.name, fp, st.labels, "resolved", now_ns, st.value)
        elif st.clear_since_ns is not None and now_ns - st.clear_since_ns >= rule.keep_firing_for * NS:
            st.phase, st.clear_since_ns = "inactive", None
            return Transition(rule.name, fp, st.labels, "resolved", now_ns, st.value)
    return None


def _step_absent(rule: Rule, st: SeriesState, fp: str, seen: bool, now_ns: int) -> Transition | None:
    if seen:
        st.last_ns = max(st.last_ns, now_ns)
        if st.phase == "firing":
            st.phase = "inactive"
            return Transition(rule.name, fp, st.labels, "resolved", now_ns, None)
        return None
    if st.phase != "firing" and st.last_ns and now_ns - st.last_ns >= rule.for_s * NS:
        st.phase = "firing"
        return Transition(rule.name, fp, st.labels, "firing", now_ns, (now_ns - st.last_ns) / NS)
    return None


class Evaluator:
    """Every rule over every series it has seen; ``observe`` and ``tick`` return transitions.

    One clock, per series: a condition and its ``for`` are measured in the time of the series' own
    samples. Between samples a series' clock runs on from its newest sample at the pace of the
    evaluator's clock (``tick``), behind it by the lag that sample arrived with — so live data
    follows real time, and a backlog an hour old is judged an hour ago: pending states it creates
    are not promoted "now".

    Late data, both arrival orders (README, "Late data"):

    * A transition made by a sample that arrived more than ``late_after`` behind the evaluator's
      clock is marked ``late``. A series whose firing was late and that is still firing when its
      first sample within ``late_after`` arrives gets a second, live ``firing`` transition carrying
      the original start: the condition was still true when live data resumed.
    * A sample older than the series' newest (a backlog arriving after live data) does not move
      the live state: it is counted in ``late_samples`` and fed, in arrival order, to a separate
      *replay* state for that series, whose transitions are marked ``replay`` (and ``late``): the
      past, for history only. A replay sample older than the replay's newest is counted in
      ``late_unordered`` and ignored. ``end_replays`` hands the replays over and forgets them.

    Absent rules compare the newest sample with the evaluator's clock: silence is about now.
    """

    def __init__(self, rules: RuleSet, *, late_after_s: float = 60.0) -> None:
        self.rules = rules
        self.series: dict[tuple[str, str], SeriesState] = {}  # (rule, fingerprint) -> state
        #: (rule, fingerprint) -> the replay of samples older than the live state's newest
        self.replays: dict[tuple[str, str], SeriesState] = {}
        #: the evaluator's clock: the newest time ``tick`` was given
        self.clock_ns = 0
        self.late_after_ns = int(late_after_s * NS)
        self.late_samples = 0
        self.late_unordered = 0

    def replace_rules(self, rules: RuleSet) -> None:
        """New rules: series of rules that still exist keep their state (a firing alert stays firing)."""
        self.rules = rules
        self.series = {k: v for k, v in self.series.items() if k[0] in rules.by_name}
        self.replays = {k: v for k, v in self.replays.items() if k[0] in rules.by_name}

    def _state(self, rule: Rule, tags: Mapping[str, str]) -> tuple[str, SeriesState]:
        labels = rule.series_labels(tags)
        fp = fingerprint(rule.name, labels)
        st = self.series.get((rule.name, fp))
        if st is None:
            st = self.series[(rule.name, fp)] = SeriesState(labels)
        return fp, st

    def is_late(self, time_ns: int) -> bool:
        """A sample of this time arriving now is late (part of a backlog)."""
        return self.clock_ns - time_ns > self.late_after_ns

    def observe(self, s: Sample) -> list[Transition]:
        out: list[Transition] = []
        for group in (self.rules.candidates(s.measurement), self.rules.any_measurement):
            for rule in group:
                if not rule.selects(s):
                    continue
                fp, st = self._state(rule, s.tags)
                if rule.kind == "absent":
                    t = step(rule, st, fp, s.fields, s.time_ns)
                    if t is not None:
                        out.append(t)
                    continue
                if s.time_ns < st.last_ns:
                    self.late_samples += 1
                    t = self._replay(rule, fp, st, s)
                    if t is not None:
                        out.append(t)
                    continue
                if st.last_ns and s.time_ns - st.last_ns > self.late_after_ns:
                    st = self._hole(rule, fp, st, s.time_ns, out)
                st.lag_ns = max(0, self.clock_ns - s.time_ns)
                late = st.lag_ns > self.late_after_ns
                t = step(rule, st, fp, s.fields, s.time_ns)
                if t is not None:
                    out.append(self._mark(st, t, late))
                if not late and st.phase == "firing" and st.fired_late:
                    # a late firing confirmed by live data: it fires now, from its true start
                    st.fired_late = False
                    out.append(Transition(rule.name, fp, st.labels, "firing", st.fired_ns, st.value))
        return out

    def _hole(self, rule: Rule, fp: str, st: SeriesState, resumed_ns: int, out: list[Transition]) -> SeriesState:
        """A sample after a hole in the series: the samples that belong in the hole may still come
        (a backlog behind live data). If the state before the hole was made by late data (part
        of a backlog came first), it is the past: it moves to the replay, which the rest of the
        backlog continues — a late firing with it (``handover``) — and the live state starts
        afresh from this sample."""
        key = (rule.name, fp)
        if key in self.replays or st.lag_ns <= self.late_after_ns:
            # live data before the hole: a backlog filling it is replayed from scratch (and a
            # series sampled less often than ``late_after`` keeps no copies)
            st.resumed_ns = resumed_ns
            return st
        self.replays[key] = copy.deepcopy(st)
        if st.phase == "firing" and st.fired_late:
            out.append(Transition(rule.name, fp, st.labels, "firing", st.fired_ns, st.value, True, True, True))
        fresh = self.series[key] = SeriesState(st.labels, last_ns=st.last_ns, resumed_ns=resumed_ns)
        return fresh

    @staticmethod
    def _mark(st: SeriesState, t: Transition, late: bool) -> Transition:
        if t.state == "firing":
            st.fired_ns, st.fired_late = t.at_ns, late
        if not late:
            return t
        return Transition(t.rule, t.fp, t.labels, t.state, t.at_ns, t.value, late=True)

    def _replay(self, rule: Rule, fp: str, live: SeriesState, s: Sample) -> Transition | None:
        rp = self.replays.get((rule.name, fp))
        if rp is None:
            rp = self.replays[(rule.name, fp)] = SeriesState(dict(live.labels))
        if s.time_ns < rp.last_ns:
            self.late_unordered += 1
            return None
        t = step(rule, rp, fp, s.fields, s.time_ns)
        if t is None:
            return None
        if t.state == "firing":
            rp.fired_ns = t.at_ns
        return Transition(t.rule, t.fp, t.labels, t.state, t.at_ns, t.value, late=True, replay=True)

    def end_replays(self, keys: Iterable[tuple[str, str]]) -> list[tuple[str, str, SeriesState]]:
        """Forget these replays; returns (rule, fingerprint, replay state) of each that existed."""
        out = []
        for k in keys:
            rp = self.replays.pop(k, None)
            if rp is not None:
                out.append((k[0], k[1], rp))
        return out

    def tick(self, now_ns: int) -> list[Transition]:
        self.clock_ns = max(self.clock_ns, now_ns)
        out: list[Transition] = []
        for (name, fp), st in self.series.items():
            rule = self.rules.by_name.get(name)
            if rule is None:
                continue
            clock = now_ns if rule.kind == "absent" else max(st.last_ns, now_ns - st.lag_ns)
            t = step(rule, st, fp, None, clock)
            if t is not None:
                out.append(t if rule.kind == "absent" else self._mark(st, t, st.lag_ns > self.late_after_ns))
        return out

    def restore(
        self, rule_name: str, labels: Mapping[str, str], *, firing: bool, last_ns: int, value: Any = None
    ) -> None:
        """Put back what a previous run knew: a firing alert, or when an absent series was last seen."""
        rule = self.rules.by_name.get(rule_name)
        if rule is None:
            return
        fp = fingerprint(rule_name, labels)
        st = self.series.setdefault((rule_name, fp), SeriesState(dict(labels)))
        st.last_ns = max(st.last_ns, last_ns)
        if firing:
            st.phase = "firing"
            st.value = value
            st.changed_ns = last_ns
            st.prev = value
