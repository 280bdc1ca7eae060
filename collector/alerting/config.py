"""The ``alerting:`` section of the collector config: rule and topology files, channels, routes,
maintenance windows. Validated when the collector config loads; paths count from its folder."""

from __future__ import annotations

import os
import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, InstanceOf, ValidationInfo, field_validator, model_validator

from collector.alerting.rules import Matcher, parse_matchers
from probes.base import Duration, ExistingFile
from probes.configfile import SecretMissing, StrictModel, checks_files, read_secret

#: WeCom and DingTalk group robots refuse more than 20 messages a minute.
ROBOT_RATE_PER_MIN = 20
_ROBOT_SCHEMES = ("wecombot", "dingtalk")


def redact_url(url: str) -> str:
    """A webhook or apprise URL fit for logs and messages: ``https://host/path?key=***`` (query
    values, userinfo and path segments that look like tokens hidden); any other scheme keeps only
    the scheme (``wecombot://***`` — for apprise the "host" is often the key itself)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.scheme not in ("http", "https"):
        return f"{parts.scheme}://***" if parts.scheme and "://" in url else "***"
    host = parts.hostname or ""
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{parts.port}" if _port(parts) else "")
    path = "/".join("***" if _tokenish(seg) else seg for seg in parts.path.split("/"))
    query = "&".join(f"{k.split('=')[0]}=***" for k in parts.query.split("&") if k)
    return f"{parts.scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _port(parts: Any) -> int | None:
    try:
        port: int | None = parts.port
    except ValueError:
        return None
    return port


def _tokenish(segment: str) -> bool:
    """A path segment that may be a token: long, or mixing letters and digits."""
    return len(segment) > 24 or (any(c.isdigit() for c in segment) and any(c.isalpha() for c in segment))


#: the places a channel's destination and secrets may come from: inline, environment, file
_SOURCES = {
    "url": ("url", "url_env", "url_file"),
    "wecom_webhook": ("wecom_webhook", "wecom_webhook_env", "wecom_webhook_file"),
    "dingtalk_webhook": ("dingtalk_webhook", "dingtalk_webhook_env", "dingtalk_webhook_file"),
    "dingtalk_secret": ("dingtalk_secret", "dingtalk_secret_env", "dingtalk_secret_file"),
}
_SECRET_FIELDS = frozenset(_SOURCES)


class Channel(StrictModel):
    """Where messages go. Either an apprise ``url`` (``wecombot://KEY``, ``dingtalk://SECRET@TOKEN``,
    ``mailto://...``, ``json://gateway/sms``, ``form://...``), or a robot webhook called directly
    (``wecom_webhook`` / ``dingtalk_webhook`` + ``dingtalk_secret``) when its base URL must be set —
    a proxy, or a test server.

    Each of them carries a key, so each can come from one of three places: inline (``url``), an
    environment variable (``url_env: NETWATCH_WECOM_URL``) or a file (``url_file:
    /etc/netwatch/wecom.url``, first line); exactly one. Env and file are read at each send, so a
    rotated key needs no restart. ``repr``/``str`` and every validation message show redacted URLs
    (:func:`redact_url`) and never a secret."""

    url: str | None = None
    url_env: str | None = None
    url_file: ExistingFile | None = None
    wecom_webhook: str | None = None
    wecom_webhook_env: str | None = None
    wecom_webhook_file: ExistingFile | None = None
    dingtalk_webhook: str | None = None
    dingtalk_webhook_env: str | None = None
    dingtalk_webhook_file: ExistingFile | None = None
    #: the robot's signing secret (SEC...): requests carry timestamp + HMAC-SHA256 ``sign``
    dingtalk_secret: str | None = None
    dingtalk_secret_env: str | None = None
    dingtalk_secret_file: ExistingFile | None = None
    #: messages per minute; default 20 for WeCom/DingTalk robots, 60 otherwise
    rate_per_min: int | None = Field(None, ge=1)
    #: more alerts than this waiting for one channel go out as several digests
    max_per_message: int = Field(20, ge=1, le=200)
    timeout: Duration = 10.0
    retries: int = Field(6, ge=0, le=20)

    @model_validator(mode="after")
    def _one(self, info: ValidationInfo) -> Channel:
        given = {what: [f for f in fields if getattr(self, f) is not None] for what, fields in _SOURCES.items()}
        for what, fields in given.items():
            if len(fields) > 1:
                raise ValueError(f"give {what} one way only, not {' and '.join(fields)}")
        kinds = [w for w in ("url", "wecom_webhook", "dingtalk_webhook") if given[w]]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one of url (apprise), wecom_webhook, dingtalk_webhook (each also as ..._env or ..._file)"
            )
        if given["dingtalk_secret"] and kinds != ["dingtalk_webhook"]:
            raise ValueError("dingtalk_secret goes only with dingtalk_webhook")
        if self.url is not None and "://" not in self.url:
            raise ValueError("url is not an apprise URL such as wecombot://KEY or json://host/path")
        for name in ("wecom_webhook", "dingtalk_webhook"):
            hook = getattr(self, name)
            if hook is not None and urlsplit(hook).scheme not in ("http", "https"):
                raise ValueError(f"{name}: a robot webhook is an http(s) URL, not {redact_url(hook)}")
        if checks_files(info):
            for what in _SOURCES:
                env = getattr(self, f"{what}_env")
                if env is not None and not os.environ.get(env):
                    raise ValueError(f"{what}_env: environment variable {env} is not set or empty")
        return self

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if value is None:
                continue
            if name in ("url", "wecom_webhook", "dingtalk_webhook"):
                yield name, redact_url(str(value))
            elif name == "dingtalk_secret":
                yield name, "***"
            else:
                yield name, value

    @property
    def kind(self) -> Literal["apprise", "wecom", "dingtalk"]:
        if any(getattr(self, f) is not None for f in _SOURCES["wecom_webhook"]):
            return "wecom"
        if any(getattr(self, f) is not None for f in _SOURCES["dingtalk_webhook"]):
            return "dingtalk"
        return "apprise"

    @property
    def per_minute(self) -> int:
        if self.rate_per_min is not None:
            return self.rate_per_min
        if self.kind != "apprise":
            return ROBOT_RATE_PER_MIN
        try:
            url = self.target()
        except SecretMissing:
            return ROBOT_RATE_PER_MIN  # unknown now: the stricter limit
        return ROBOT_RATE_PER_MIN if url.split("://", 1)[0] in _ROBOT_SCHEMES else 60

    def _read(self, what: str) -> str | None:
        value, env, file = (getattr(self, f) for f in _SOURCES[what])
        text = read_secret(value, env, file, what)
        if text is not None and file is not None:
            text = text.splitlines()[0].strip()
        return text

    def target(self) -> str:
        """Where to send, read now: the apprise URL or the robot webhook. Raises ``SecretMissing``
        (whose message names the variable or file, never the value) when it cannot be read."""
        what = {"apprise": "url", "wecom": "wecom_webhook", "dingtalk": "dingtalk_webhook"}[self.kind]
        text = self._read(what)
        if text is None:  # the validator makes this impossible
            raise SecretMissing(f"{what}: not configured")
        if self.kind != "apprise" and urlsplit(text).scheme not in ("http", "https"):
            raise SecretMissing(f"{what}: a robot webhook is an http(s) URL, not {redact_url(text)}")
        if self.kind == "apprise" and "://" not in text:
            raise SecretMissing(f"{what}: not an apprise URL such as wecombot://KEY")
        return text

    def secret(self) -> str | None:
        return self._read("dingtalk_secret")


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
    #: a sample arriving more than this behind the collector's clock is late (a backlog): what it
    #: makes fire is not paged until live data confirms it (README, "Late data")
    late_after: Duration = 60.0
    #: a site's late episodes are summarised in one notice once no late data came from it this long
    late_summary_wait: Duration = 30.0
    #: history older than this is pruned from alerts.db
    history_retention: Duration = 180 * 86400.0

    @model_validator(mode="after")
    def _refs(self) -> AlertingConfig:
        for i, r in enumerate(self.routes):
            for c in r.channels:
                if c not in self.channels:
                    raise ValueError(f"routes[{i}] sends to channel {c!r}, which is not under channels")
        return self
