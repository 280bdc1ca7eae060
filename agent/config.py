"""The agent's YAML config: identity, MQTT connection, spool, scheduling and the probe list.

Validated completely at load; errors name the file, the key and the fix (ConfigError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from probes import registry
from probes.base import ByteSize, Duration, ExistingFile, Listener, LocalPath, ProbeConfig, validation_context
from probes.configfile import ConfigError, Problem, StrictModel, problems_from, read_yaml, validate
from probes.entry import split_entry
from protocol.ids import ID_PATTERN
from protocol.mqtt import Mqtt


class Identity(StrictModel):
    id: str = Field(pattern=ID_PATTERN, description="unique agent id; the MQTT topic level and the 'agent' tag")
    site: str = Field(pattern=ID_PATTERN, description="the site this node is in (a node of the topology tree)")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags on every sample, e.g. county")


class Spool(StrictModel):
    path: LocalPath = Path("var/agent-spool.db")
    #: default fits a week of a township's data (~200 series/min) with room to spare
    max_bytes: ByteSize = 256 * 1024 * 1024
    max_age: Duration = 7 * 86400.0
    #: how hard each probe result is pushed to disk when it is measured: "normal" survives the
    #: agent being killed (a write to the WAL, no fsync); "full" also survives power loss (an
    #: fsync per group commit). Batches are always synced. See the README, "Nothing lost".
    sync: Literal["normal", "full"] = "normal"


class Publish(StrictModel):
    #: how often collected samples are cut into a batch
    batch_interval: Duration = 5.0
    #: at most 10,000: a batch must stay under the broker's packet limit (1 MiB compressed)
    batch_max_samples: int = Field(2000, ge=1, le=10_000)
    compress: bool = True
    #: After an outage the backlog drains oldest-first at this many bytes per second, so a
    #: recovering WAN link is not flooded; fresh batches go out at once meanwhile. 0 = no limit,
    #: but then live data queues behind the whole backlog at the broker until it is through.
    drain_rate: ByteSize = 32 * 1024
    #: how often the agent reports its own health (spool depth, drops, publish latency...)
    self_metrics_interval: Duration = 30.0


class Scheduler(StrictModel):
    #: probes running at once across the whole agent
    concurrency: int = Field(16, ge=1, le=1024)
    default_interval: Duration = 60.0
    default_timeout: Duration = 10.0


class WriteAllow(StrictModel):
    """One device on which the centre may change something, and exactly what."""

    #: the name of an snmp or modbus entry in this file
    device: str = Field(min_length=1)
    #: snmp: ``ifAdminStatus`` (optionally ``ifAdminStatus.IFINDEX``); modbus: register map point names
    objects: tuple[str, ...] = Field(min_length=1)


class Control(StrictModel):
    """Control from the centre — written on the node, never pushed: which key the centre signs with,
    whether its commands run, and which device changes it may make (none unless listed here)."""

    #: the centre's public key (base64, 44 characters), inline or in a file (``centre.key.pub``)
    centre_key: str | None = None
    centre_key_file: ExistingFile | None = None
    #: run the centre's read-only commands (ping, tcp, http, snmp get/walk/poll, modbus read, status)
    commands: bool = True
    allow_write: tuple[WriteAllow, ...] = ()
    #: a command runs at most this long
    command_timeout: Duration = 60.0

    @model_validator(mode="after")
    def _one_key(self) -> Control:
        if (self.centre_key is None) == (self.centre_key_file is None):
            raise ValueError("give the centre's public key: centre_key or centre_key_file (one of them)")
        return self


#: the sections of an agent config the centre may push; the rest stays as written on the node
PUSHABLE = ("probes", "publish", "scheduler")


class AgentFile(StrictModel):
    """The file's shape; ``probes`` entries are checked separately against each probe's model."""

    agent: Identity
    mqtt: Mqtt = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    spool: Spool = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    publish: Publish = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    scheduler: Scheduler = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    control: Control | None = None
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


class _Common(StrictModel):
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
    control: Control | None = None
    #: the version of the centre's config in force (0: only what is written on the node)
    pushed_version: int = 0


def _default_name(kind: str, own: dict[str, Any], index: int) -> str:
    for key in ("url", "host", "target"):
        if isinstance(own.get(key), str):
            port = own.get("port")
            if key == "url":
                from probes.http.config import redact_url  # an unnamed probe must not be named by its password

                return redact_url(own[key])
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
    share = getattr(cls, "interval_share", None)
    if common.timeout is None and share:
        timeout = max(timeout, share * interval)
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
    return from_doc(read_yaml(p), p, check_files=check_files)


def with_pushed(local: AgentConfig, pushed: dict[str, Any], version: int) -> AgentConfig:
    """The node's own file with the sections the centre pushed in place of its own; ConfigError
    (naming ``<pushed vN>``) when the pushed document is not a valid config here."""
    where = Path(f"{local.path} + pushed v{version}")
    extra = sorted(set(pushed) - set(PUSHABLE))
    if extra:
        raise ConfigError(
            where,
            [Problem(k, "the centre may not set this section", f"push only {', '.join(PUSHABLE)}") for k in extra],
        )
    doc = read_yaml(local.path)
    doc.update(pushed)
    cfg = from_doc(doc, local.path)
    if cfg.mqtt != local.mqtt or cfg.agent != local.agent or cfg.control != local.control:
        raise ConfigError(where, [Problem("", "the local file changed under the agent", "restart the agent")])
    return AgentConfig(
        cfg.path, cfg.agent, cfg.mqtt, cfg.spool, cfg.publish, cfg.scheduler, cfg.probes, cfg.control, version
    )


def from_doc(doc: dict[str, Any], p: Path, *, check_files: bool = True) -> AgentConfig:
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
    return AgentConfig(p, base.agent, base.mqtt, base.spool, base.publish, base.scheduler, entries, base.control)
