"""The collector's YAML config. Everything is optional: with no file at all the collector
starts an embedded broker on loopback and stores into SQLite under ``var/collector``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from probes.base import ByteSize, Duration, ExistingFile, LocalPath, validation_context
from probes.configfile import (
    ConfigError,
    Problem,
    StrictModel,
    checks_files,
    problems_from,
    read_secret,
    read_yaml,
    validate,
)
from protocol.envelope import Limits as WireLimits
from protocol.ids import ID_PATTERN
from protocol.mqtt import Mqtt

if TYPE_CHECKING:
    from collector.alerting.config import AlertingConfig


class Identity(StrictModel):
    id: str = Field("centre", pattern=ID_PATTERN)
    data_dir: LocalPath = Path("var/collector")
    #: how often the collector stores (and alerts on) its own health: netwatch_collector samples
    self_metrics_interval: Duration = 30.0
    #: the city's time zone (IANA name): where the availability report's months begin and end
    timezone: str = "Asia/Shanghai"
    #: free space kept in reserve on the data directory's (and the SQLite store's) filesystem:
    #: below it the collector stops taking messages (they wait at the broker, unacknowledged) and
    #: alerts (collector_disk_full); the reserve is what the alert and the counters are written with
    min_free: ByteSize = 64 * 1024 * 1024

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Asia/Shanghai") from None
        return v


class EmbeddedBroker(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)


class SqliteStore(StrictModel):
    path: LocalPath | None = None  # default: <data_dir>/metrics.db
    retention: Duration = 30 * 86400.0


class InfluxStore(StrictModel):
    url: str
    #: 2 (the default) and 3: the v2 write API (``/api/v2/write``: org, bucket, token) of InfluxDB
    #: 2.x/3.x and VictoriaMetrics; 1: InfluxDB 1.x (``/write``: database, username, password)
    version: Literal[1, 2, 3] = 2
    org: str = ""
    bucket: str = "netwatch"
    token: str | None = Field(None, repr=False)
    token_env: str | None = None
    token_file: ExistingFile | None = None
    #: version 1: the database (it must exist) and retention policy (default: the database's default)
    database: str | None = Field(None, min_length=1)
    retention_policy: str | None = Field(None, min_length=1)
    #: version 1: the user (needs WRITE on the database) and its password, from a file or the environment
    username: str | None = Field(None, min_length=1)
    password_env: str | None = None
    password_file: ExistingFile | None = None
    batch_size: int = Field(5000, ge=1, le=100_000)
    timeout: Duration = 10.0
    verify_tls: bool = True
    ca_file: ExistingFile | None = None
    #: VictoriaMetrics stores a non-numeric string field as 0: set true when writing to it.
    drop_string_fields: bool = False
    #: While the store is unreachable, samples wait in a local spool (0: hold them at the broker instead).
    spool_max_bytes: ByteSize = 1024**3

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> InfluxStore:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        v1_keys = ("database", "retention_policy", "username", "password_env", "password_file")
        v2_keys = ("org", "bucket", "token", "token_env", "token_file")
        if self.version == 1:
            wrong = [n for n in v2_keys if n in self.model_fields_set]
            if wrong:
                raise ValueError(
                    f"{', '.join(wrong)}: InfluxDB 1.x (version: 1) has no org, bucket or token; "
                    "remove them and give database, username and password_file or password_env"
                )
            if self.database is None:
                raise ValueError("version 1 writes into a database: add database: <name> (it must exist)")
            passwords = [n for n in ("password_env", "password_file") if getattr(self, n) is not None]
            if len(passwords) > 1:
                raise ValueError("give only one of password_env, password_file")
            if self.username is not None and not passwords:
                raise ValueError(f"username {self.username!r} needs a password: add password_file or password_env")
            if passwords and self.username is None:
                raise ValueError(f"{passwords[0]} needs a user: add username")
        else:
            wrong = [n for n in v1_keys if getattr(self, n) is not None]
            if wrong:
                raise ValueError(
                    f"{', '.join(wrong)} only apply to InfluxDB 1.x: add version: 1, "
                    "or use org, bucket and token for the v2 write API"
                )
            given = [n for n in ("token", "token_env", "token_file") if getattr(self, n) is not None]
            if len(given) > 1:
                raise ValueError(f"give only one of {', '.join(given)}")
        if not checks_files(info):
            return self
        for key in ("token_env", "password_env"):
            name = getattr(self, key)
            if name is not None and name not in os.environ:
                raise ValueError(f"environment variable {name} ({key}) is not set")
        return self

    def resolved_token(self) -> str:
        return read_secret(self.token, self.token_env, self.token_file, "storage.influxdb token") or ""

    def resolved_password(self) -> str:
        return read_secret(None, self.password_env, self.password_file, "storage.influxdb password") or ""


class Storage(StrictModel):
    sqlite: SqliteStore | None = None
    influxdb: InfluxStore | None = None


class Limits(StrictModel):
    max_payload_bytes: ByteSize = 1024 * 1024
    max_body_bytes: ByteSize = 8 * 1024 * 1024
    #: how many times its compressed size a body may expand to (a decompression bomb: 1000x)
    max_ratio: int = Field(32, ge=2)
    max_samples_per_batch: int = Field(50_000, ge=1)
    max_past: Duration = 400 * 86400.0
    max_future: Duration = 3600.0
    #: sequence numbers remembered per agent for dropping redelivered batches
    dedup_window: int = Field(100_000, ge=100)
    #: distinct series one agent may have; samples opening more are dropped and counted
    max_series_per_agent: int = Field(20_000, ge=1)
    #: what one agent may send, on average over ``quota_burst``: messages past it are refused and
    #: counted (over_quota) — and lost, so the quota must sit above an honest agent's worst burst.
    #: A township sends a few KiB/s; its backlog drains at 32 KiB/s by default, and a day's backlog
    #: sent with ``drain_rate: 0`` is ~1,500 messages / ~11 MiB at once (bench/backlog): both fit.
    agent_bytes_per_s: ByteSize = 4 * 1024 * 1024
    agent_messages_per_s: float = Field(500.0, gt=0)
    quota_burst: Duration = 10.0
    #: messages received but not yet processed, in bytes; past it the broker waits for us
    max_queue_bytes: ByteSize = 64 * 1024 * 1024

    def wire(self) -> WireLimits:
        return WireLimits(
            max_payload_bytes=self.max_payload_bytes,
            max_body_bytes=self.max_body_bytes,
            max_ratio=self.max_ratio,
            max_samples=self.max_samples_per_batch,
            max_past_s=self.max_past,
            max_future_s=self.max_future,
        )


class IdentitySection(StrictModel):
    #: the site tree whose sites list their agents: the centre stamps each agent's site and county
    #: from it and refuses agents it does not list (default: alerting.topology)
    topology: ExistingFile | None = None


class ControlSection(StrictModel):
    #: the folder of desired agent configs (``<agent>.yaml``, with ``include:`` for shared parts)
    configs: LocalPath | None = None
    #: the centre's Ed25519 signing key (created on first use); default ``<data_dir>/keys/centre.key``
    key_file: LocalPath | None = None
    #: the broker account the control commands use (with ``use_username_as_clientid`` it must not
    #: be the collector's own, or a push would knock the running collector off); default: ``mqtt``
    mqtt: Mqtt | None = None


class Api(StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Host names the API answers (a name without a port matches any port); default: the bound
    #: address, localhost, 127.0.0.1 and [::1] with the port. Others get 421 (DNS rebinding).
    allowed_hosts: tuple[str, ...] | None = None
    #: HTTPS for the API and status page (PEM certificate chain and its key); both or neither.
    #: Without them it speaks plain HTTP: keep it on loopback or behind a TLS reverse proxy.
    tls_cert_file: ExistingFile | None = None
    tls_key_file: ExistingFile | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> Api:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self


class CollectorFile(StrictModel):
    collector: Identity = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    #: an external broker (Mosquitto, EMQX); leave out to use the embedded one
    mqtt: Mqtt | None = None
    embedded_broker: EmbeddedBroker = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    storage: Storage = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    limits: Limits = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    api: Api = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    identity: IdentitySection = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    control: ControlSection = Field(default_factory=dict)  # type: ignore[assignment]  # validated, in context
    #: rules, topology and notification channels (collector/alerting); leave out for none
    alerting: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    path: Path | None
    collector: Identity
    mqtt: Mqtt  # the broker to subscribe to (the embedded one when ``embedded`` is true)
    embedded: bool
    sqlite: SqliteStore | None
    influxdb: InfluxStore | None
    limits: Limits
    api: Api
    #: validated at load; None: no alerting
    alerting: AlertingConfig | None = None
    #: the registry of agents and sites; None: open (sites from the agents)
    topology: Path | None = None
    control: ControlSection = ControlSection()

    @property
    def data_dir(self) -> Path:
        return self.collector.data_dir

    @property
    def state_path(self) -> Path:
        return self.data_dir / "state.db"

    @property
    def sqlite_path(self) -> Path | None:
        if self.sqlite is None:
            return None
        return self.sqlite.path or self.data_dir / "metrics.db"


def load(path: str | Path | None, *, check_files: bool = True) -> CollectorConfig:
    """Load and validate; ``None`` means all defaults (the embedded set-up)."""
    p = Path(path) if path is not None else None
    doc = read_yaml(p) if p is not None else {}
    # Relative paths count from the config file's folder (no file: from the current folder).
    ctx = validation_context(p, check_files=check_files) if p is not None else {"base_dir": Path.cwd()}
    f: CollectorFile = validate(CollectorFile, doc, p or "<defaults>", context=ctx)
    ident = f.collector
    sqlite = f.storage.sqlite
    if sqlite is None and f.storage.influxdb is None:
        sqlite = SqliteStore()  # the embedded default
    embedded = f.mqtt is None
    if embedded and f.embedded_broker.host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(
            p or "<defaults>",
            [
                Problem(
                    "embedded_broker.host",
                    "the embedded broker has no authentication and may only listen on loopback",
                    "use 127.0.0.1, or configure an external broker (Mosquitto) with TLS and passwords under 'mqtt'",
                )
            ],
        )
    mqtt = f.mqtt or Mqtt(host=f.embedded_broker.host, port=f.embedded_broker.port)
    alerting = None
    if f.alerting is not None:
        from collector.alerting.config import AlertingConfig

        try:
            alerting = AlertingConfig.model_validate(f.alerting, context=ctx)
        except ValidationError as e:
            raise ConfigError(p or "<defaults>", problems_from(e, AlertingConfig, prefix=("alerting",))) from None
    topology = f.identity.topology or (alerting.topology if alerting is not None else None)
    return CollectorConfig(
        p, ident, mqtt, embedded, sqlite, f.storage.influxdb, f.limits, f.api, alerting, topology, f.control
    )
