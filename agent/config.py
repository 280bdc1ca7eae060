"""The agent's YAML config: identity, MQTT connection, spool, scheduling and the probe list.

Validated completely at load; errors name the file, the key and the fix (ConfigError).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from probes import registry
from probes.base import ByteSize, Duration, ExistingFile, Listener, LocalPath, ProbeConfig, validation_context
from probes.configfile import ConfigError, Problem, problems_from, read_yaml, validate
from probes.entry import split_entry


def checks_files(info: ValidationInfo) -> bool:
    """Whether to check that referenced environment variables exist (off only when
    schema-checking example configs meant for another machine)."""
    return not (info.context or {}).get("skip_file_checks", False)


# Agent ids and site ids become MQTT topic levels and tag values: keep them plain.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    # validate_default: defaults go through the same validators (a default relative path
    # is resolved against the config file's folder like a written one).
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class Identity(_Strict):
    id: str = Field(pattern=ID_PATTERN, description="unique agent id; the MQTT topic level and the 'agent' tag")
    site: str = Field(pattern=ID_PATTERN, description="the site this node is in (a node of the topology tree)")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags on every sample, e.g. county")


class Tls(_Strict):
    ca_file: ExistingFile | None = None
    cert_file: ExistingFile | None = None
    key_file: ExistingFile | None = None
    #: skip hostname verification (never the chain): only for brokers addressed by IP
    insecure_hostname: bool = False

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate and its key)")
        return self


class Mqtt(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    #: Prefer password_file or password_env: a password inline in a config file gets copied around.
    password: str | None = Field(None, repr=False)
    password_file: ExistingFile | None = None
    password_env: str | None = None
    tls: Tls | None = None
    topic_root: str = "netwatch/v1"
    keepalive: Duration = 30.0
    client_id: str | None = None
    #: batches published but not yet acknowledged by the broker
    max_inflight: int = Field(20, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_password(self, info: ValidationInfo) -> Mqtt:
        given = [n for n in ("password", "password_file", "password_env") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of {', '.join(given)}")
        if given and not self.username:
            raise ValueError("a password needs a username")
        if not checks_files(info):
            return self
        if self.password_env is not None and self.password_env not in os.environ:
            raise ValueError(f"environment variable {self.password_env} (password_env) is not set")
        return self

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        if self.password_env is not None:
            return os.environ[self.password_env]
        return None


class Spool(_Strict):
    path: LocalPath = Path("var/agent-spool.db")
    #: default fits a week of a township's data (~200 series/min) with room to spare
    max_bytes: ByteSize = 256 * 1024 * 1024
    max_age: Duration = 7 * 86400.0


class Publish(_Strict):
    #: how often collected samples are cut into a batch
    batch_interval: Duration = 5.0
    batch_max_samples: int = Field(2000, ge=1, le=50_000)
    compress: bool = True
    #: After an outage the backlog drains oldest-first at this many bytes per second, so a
    #: recovering WAN link is not flooded; fresh batches go out at once meanwhile. 0 = no limit,
    #: but then live data queues behind the whole backlog at the broker until it is through.
    drain_rate: ByteSize = 32 * 1024
    #: how often the agent reports its own health (spool depth, drops, publish latency...)
    self_metrics_interval: Duration = 30.0


class Scheduler(_Strict):
    #: probes running at once across the whole agent
    concurrency: int = Field(16, ge=1, le=1024)
    default_interval: Duration = 60.0
    default_timeout: Duration = 10.0


class AgentFile(_Strict):
    """The file's shape; ``probes`` entries are checked separately against each probe's model."""

    agent: Identity
    mqtt: Mqtt = Field(default_factory=dict)  # type: ignore[arg-type]
    spool: Spool = Field(default_factory=dict)  # type: ignore[arg-type]
    publish: Publish = Field(default_factory=dict)  # type: ignore[arg-type]
    scheduler: Scheduler = Field(default_factory=dict)  # type: ignore[arg-type]
    probes: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("probes", mode="before")
    @classmethod
    def _probes_list(cls, v: Any) -> Any:
        return [] if v is None else v


@dataclass(frozen=True, slots=True)
class ProbeEntry:
    """One scheduled probe instance."""

    kind: str
    name: str
    interval_s: float
    jitter_s: float
    timeout_s: float
    tags: dict[str, str]
    config: ProbeConfig
    #: a Listener (runs all the time, e.g. a trap receiver) rather than a polled Probe
    listener: bool = False


class _Common(_Strict):
    type: str
    name: str | None = Field(None, min_length=1, max_length=128)
    interval: Duration | None = None
    jitter: Duration | None = None
    timeout: Duration | None = None
    tags: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    path: Path
    agent: Identity
    mqtt: Mqtt
    spool: Spool
    publish: Publish
    scheduler: Scheduler
    probes: list[ProbeEntry] = field(default_factory=list)


def _default_name(kind: str, own: dict[str, Any], index: int) -> str:
    for key in ("url", "host", "target"):
        if isinstance(own.get(key), str):
            port = own.get("port")
            return f"{own[key]}:{port}" if key == "host" and port is not None else own[key]
    return kind if index == 0 else f"{kind}-{index}"


def parse_entry(
    raw: Any, index: int, sched: Scheduler, context: dict[str, Any] | None = None
) -> tuple[ProbeEntry | None, list[Problem]]:
    where = f"probes[{index}]"
    if not isinstance(raw, dict):
        return None, [
            Problem(
                where,
                "each probe must be a mapping with at least 'type'",
                "write it as '- type: icmp' followed by its keys",
            )
        ]
    common_raw, own = split_entry(raw)
    try:
        common = _Common.model_validate(common_raw)
    except ValidationError as e:
        return None, problems_from(e, _Common, prefix=("probes", index))
    try:
        cls = registry.get(common.type)
    except KeyError as e:
        return None, [Problem(f"{where}.type", str(e.args[0]), f"use one of: {', '.join(registry.kinds())}")]
    try:
        cfg = cls.config_model.model_validate(own, context=context)
    except ValidationError as e:
        # Re-check with the common keys allowed so did-you-mean also suggests them.
        return None, problems_from(e, cls.config_model, prefix=("probes", index))
    name = common.name or _default_name(common.type, own, index)
    if issubclass(cls, Listener):
        if common.interval is not None or common.timeout is not None:
            return None, [
                Problem(
                    f"{where}.interval",
                    f"{common.type} listens all the time; it has no interval or timeout",
                    "remove interval/timeout from this entry",
                )
            ]
        return ProbeEntry(common.type, name, 0.0, 0.0, 0.0, dict(common.tags), cfg, listener=True), []
    interval = common.interval if common.interval is not None else sched.default_interval
    timeout = common.timeout if common.timeout is not None else min(sched.default_timeout, interval)
    if interval <= 0:
        return None, [Problem(f"{where}.interval", "interval must be more than 0", "e.g. interval: 60s")]
    if timeout <= 0 or timeout > interval:
        return None, [
            Problem(
                f"{where}.timeout",
                f"timeout {timeout:g}s must be > 0 and not longer than the interval {interval:g}s",
                "shorten the timeout or lengthen the interval",
            )
        ]
    jitter = common.jitter if common.jitter is not None else min(interval, 10.0)
    return ProbeEntry(common.type, name, interval, jitter, timeout, dict(common.tags), cfg), []


def load(path: str | Path, *, check_files: bool = True) -> AgentConfig:
    """Read and validate an agent config file; raise ConfigError listing every problem."""
    p = Path(path)
    doc = read_yaml(p)
    ctx = validation_context(p, check_files=check_files)
    base: AgentFile = validate(AgentFile, doc, p, context=ctx)
    problems: list[Problem] = []
    entries: list[ProbeEntry] = []
    seen: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(base.probes):
        entry, errs = parse_entry(raw, i, base.scheduler, ctx)
        problems += errs
        if entry is None:
            continue
        key = (entry.kind, entry.name)
        if key in seen:
            problems.append(
                Problem(
                    f"probes[{i}].name",
                    f"{entry.kind} probe named {entry.name!r} is already probes[{seen[key]}]",
                    "give each probe a distinct name",
                )
            )
            continue
        seen[key] = i
        entries.append(entry)
    if problems:
        raise ConfigError(p, problems)
    return AgentConfig(p, base.agent, base.mqtt, base.spool, base.publish, base.scheduler, entries)
