"""The ``alerting:`` section of the collector config: rule and topology files, channels, routes,
maintenance windows. Validated when the collector config loads; paths count from its folder."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, InstanceOf, field_validator, model_validator

from collector.alerting.rules import Matcher, parse_matchers
from probes.base import Duration, ExistingFile
from probes.configfile import StrictModel, read_secret

#: WeCom and DingTalk group robots refuse more than 20 messages a minute.
ROBOT_RATE_PER_MIN = 20
_ROBOT_SCHEMES = ("wecombot", "dingtalk")


class Channel(StrictModel):
    """Where messages go. Either an apprise ``url`` (``wecombot://KEY``, ``dingtalk://SECRET@TOKEN``,
    ``mailto://...``, ``json://gateway/sms``, ``form://...``), or a robot webhook called directly
    (``wecom_webhook`` / ``dingtalk_webhook`` + ``dingtalk_secret``) when its base URL must be set —
    a proxy, or a test server."""

    url: str | None = None
    wecom_webhook: str | None = None
    dingtalk_webhook: str | None = None
    #: the robot's signing secret (SEC...): requests carry timestamp + HMAC-SHA256 ``sign``
    dingtalk_secret: str | None = None
    dingtalk_secret_file: ExistingFile | None = None
    #: messages per minute; default 20 for WeCom/DingTalk robots, 60 otherwise
    rate_per_min: int | None = Field(None, ge=1)
    #: more alerts than this waiting for one channel go out as several digests
    max_per_message: int = Field(20, ge=1, le=200)
    timeout: Duration = 10.0
    retries: int = Field(6, ge=0, le=20)

    @model_validator(mode="after")
    def _one(self) -> Channel:
        n = sum(x is not None for x in (self.url, self.wecom_webhook, self.dingtalk_webhook))
        if n != 1:
            raise ValueError("give exactly one of url (apprise), wecom_webhook, dingtalk_webhook")
        if self.url is not None and "://" not in self.url:
            raise ValueError(f"{self.url!r} is not an apprise URL such as wecombot://KEY or json://host/path")
        for hook in (self.wecom_webhook, self.dingtalk_webhook):
            if hook is not None and urlsplit(hook).scheme not in ("http", "https"):
                raise ValueError(f"{hook!r}: a robot webhook is an http(s) URL")
        return self

    @property
    def kind(self) -> Literal["apprise", "wecom", "dingtalk"]:
        if self.wecom_webhook:
            return "wecom"
        if self.dingtalk_webhook:
            return "dingtalk"
        return "apprise"

    @property
    def per_minute(self) -> int:
        if self.rate_per_min is not None:
            return self.rate_per_min
        robot = self.kind != "apprise" or (self.url or "").split("://", 1)[0] in _ROBOT_SCHEMES
        return ROBOT_RATE_PER_MIN if robot else 60

    def secret(self) -> str | None:
        return read_secret(self.dingtalk_secret, None, self.dingtalk_secret_file, "dingtalk_secret")


class Route(StrictModel):
    """Which alerts go to which channels, in which language, how grouped and repeated. Every
    matching route delivers (a critical alert can go to the county team and the city on-call)."""

    match: tuple[InstanceOf[Matcher], ...] = ()
    channels: tuple[str, ...]
    language: Literal["zh", "en"] = "zh"
    #: wait this long after the first alert of a group so the ones right behind it share a message
    group_wait: Duration = 10.0
    repeat_interval: Duration = 4 * 3600.0
    send_resolved: bool = True

    @field_validator("match", mode="before")
    @classmethod
    def _m(cls, v: Any) -> Any:
        return parse_matchers(v)


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class Weekly(StrictModel):
    days: tuple[Day, ...] = _DAYS
    start: str  # "02:00", local time of the collector
    duration: Duration

    @field_validator("start")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"{v!r}: write the start time as HH:MM, e.g. 02:00")
        return v


class Maintenance(StrictModel):
    """A site (and everything below it) under maintenance: alerts recorded, not sent."""

    site: str
    start: datetime | None = None
    end: datetime | None = None
    weekly: Weekly | None = None
    comment: str = ""

    @model_validator(mode="after")
    def _when(self) -> Maintenance:
        if (self.weekly is None) == (self.start is None or self.end is None):
            raise ValueError("give either start and end, or weekly: {days, start, duration}")
        return self

    def active(self, now: datetime) -> bool:
        if self.weekly is None:
            assert self.start is not None and self.end is not None
            s, e = self.start, self.end
            if s.tzinfo is None:
                now = now.replace(tzinfo=None)
            return s <= now < e
        w = self.weekly
        hh, mm = (int(x) for x in w.start.split(":"))
        # a window that began on one of the listed days, today or up to 7 days ago
        for back in range(8):
            day = now.toordinal() - back
            d = datetime.fromordinal(day).replace(hour=hh, minute=mm, tzinfo=now.tzinfo)
            if _DAYS[d.weekday()] in w.days and d <= now < d.fromtimestamp(d.timestamp() + w.duration, tz=now.tzinfo):
                return True
        return False


class AlertingConfig(StrictModel):
    rules: ExistingFile
    topology: ExistingFile | None = None
    channels: dict[str, Channel] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    maintenance: tuple[Maintenance, ...] = ()
    #: a child alert waits this long before it is sent, so a parent going unreachable can hide it
    settle: Duration = 30.0
    #: after a restart, agents get this long to reconnect before "silent" alerts may fire
    startup_grace: Duration = 60.0
    #: the absent rule that says an agent is silent (the topology counts such agents as down)
    agent_rule: str = "agent_silent"
    #: history older than this is pruned from alerts.db
    history_retention: Duration = 180 * 86400.0

    @model_validator(mode="after")
    def _refs(self) -> AlertingConfig:
        for i, r in enumerate(self.routes):
            for c in r.channels:
                if c not in self.channels:
                    raise ValueError(f"routes[{i}] sends to channel {c!r}, which is not under channels")
        return self
