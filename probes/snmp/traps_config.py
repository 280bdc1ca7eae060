"""Settings of the SNMP trap receiver (``type: snmp_traps``): where it listens, which communities and
v3 users it accepts, and which sources it knows by name. Secrets never appear in reprs or logs."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from probes.base import Duration, ExistingFile, ProbeConfig

# The same protocol names, pass-phrase rule and secret sources as the polling side's config.
from probes.configfile import read_secret
from probes.snmp.config import MIN_PASSPHRASE, AuthProto, PrivProto

_HEX = re.compile(r"^(0x)?([0-9a-fA-F]{10,64})$")


def _checks_env(info: ValidationInfo) -> bool:
    # Off only when schema-checking example configs meant for another machine.
    return not (info.context or {}).get("skip_file_checks", False)


def engine_id_bytes(text: str) -> bytes:
    """``"0x8000000001020304"`` or ``"8000000001020304"`` → bytes (5 to 32 of them, RFC 3411)."""
    m = _HEX.match(text.strip().replace(":", ""))
    if not m or len(m.group(2)) % 2:
        raise ValueError(f"engine id {text!r} must be 5 to 32 bytes written as hex, e.g. 0x80001f8880e9630001")
    return bytes.fromhex(m.group(2))


class TrapUser(ProbeConfig):
    """One SNMPv3 user whose traps and informs are accepted."""

    user: str = Field(min_length=1, max_length=32)
    auth_proto: AuthProto | None = None
    auth_key: SecretStr | None = Field(None, repr=False)
    auth_key_env: str | None = None
    auth_key_file: ExistingFile | None = None
    priv_proto: PrivProto | None = None
    priv_key: SecretStr | None = Field(None, repr=False)
    priv_key_env: str | None = None
    priv_key_file: ExistingFile | None = None
    #: The snmpEngineID of each device that sends *traps* as this user (net-snmp ``snmptrap -e``):
    #: a v3 trap is authenticated with keys localised to the sender's engine, so the receiver must
    #: know it beforehand. Informs need none (the sender discovers the receiver's engine).
    engine_ids: list[str] = Field(default_factory=list)

    @field_validator("engine_ids")
    @classmethod
    def _hex(cls, v: list[str]) -> list[str]:
        return [engine_id_bytes(x).hex() for x in v]

    @model_validator(mode="after")
    def _keys(self, info: ValidationInfo) -> TrapUser:
        for kind, proto in (("auth", self.auth_proto), ("priv", self.priv_proto)):
            given = [n for n in (f"{kind}_key", f"{kind}_key_env", f"{kind}_key_file") if getattr(self, n) is not None]
            if len(given) > 1:
                raise ValueError(f"give only one of {', '.join(given)}")
            if proto is None and given:
                raise ValueError(f"{given[0]} needs {kind}_proto")
            if proto is not None and not given:
                raise ValueError(f"{kind}_proto {proto} needs {kind}_key, {kind}_key_env or {kind}_key_file")
            env = getattr(self, f"{kind}_key_env")
            if env is not None and _checks_env(info) and env not in os.environ:
                raise ValueError(f"environment variable {env} ({kind}_key_env) is not set")
            if proto is not None and _checks_env(info):
                key = self.key(kind)  # type: ignore[arg-type]
                if key is not None and len(key) < MIN_PASSPHRASE:
                    raise ValueError(
                        f"{kind} key of user {self.user} is shorter than {MIN_PASSPHRASE} characters (RFC 3414)"
                    )
        if self.priv_proto is not None and self.auth_proto is None:
            raise ValueError("priv_proto needs auth_proto too (SNMPv3 has no privacy without authentication)")
        return self

    def key(self, kind: Literal["auth", "priv"]) -> str | None:
        return read_secret(
            getattr(self, f"{kind}_key"),
            getattr(self, f"{kind}_key_env"),
            getattr(self, f"{kind}_key_file"),
            f"user {self.user} {kind}_key",
        )


class TrapConfig(ProbeConfig):
    """``type: snmp_traps`` — receives SNMP v1/v2c/v3 traps (and informs) and turns them into events."""

    #: 127.0.0.1 unless you mean it: set 0.0.0.0 (or one address) to hear devices on the LAN.
    host: str = "127.0.0.1"
    #: 162 is the standard port; binding it needs root or CAP_NET_BIND_SERVICE.
    port: int = Field(162, ge=0, le=65535)
    #: accepted v1/v2c communities; prefer communities_env / communities_file
    communities: list[SecretStr] = Field(default_factory=list, repr=False)
    #: environment variable holding accepted communities, comma-separated
    communities_env: str | None = None
    #: file with one accepted community per line (# starts a comment)
    communities_file: ExistingFile | None = None
    users: list[TrapUser] = Field(default_factory=list)
    #: source IP -> device name. When given, traps from any other source are counted and dropped.
    devices: dict[str, str] = Field(default_factory=dict)
    #: how often the receiver's counters go out as a ``snmp_trap_stats`` sample
    stats_interval: Duration = 60.0
    #: traps per second passed on *from each source address* (a burst of twice that is allowed); the
    #: rest of one sender's storm is counted as ``rate_limited`` and dropped before it is decoded, so
    #: one flapping switch can neither flood the link nor drown another device's traps
    max_events_per_s: float = Field(50.0, gt=0)
    #: how many source addresses get a bucket of their own; sources beyond it (a spoofed flood)
    #: share one bucket of ``max_events_per_s``, counted as ``sources_overflow``
    max_sources: int = Field(1024, ge=1, le=65536)
    #: accept SNMPv3 noAuthNoPriv traps (no authentication: anyone can forge them). Off: they are
    #: counted as ``noauth_refused`` and dropped
    allow_noauth: bool = False

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v.strip()))
        except ValueError:
            raise ValueError(f"host {v!r} must be an IP address to listen on, e.g. 127.0.0.1 or 0.0.0.0") from None

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for ip, name in v.items():
            try:
                key = str(ipaddress.ip_address(str(ip).strip()))
            except ValueError:
                raise ValueError(f"devices: {ip!r} is not an IP address (map each source IP to a name)") from None
            if not str(name).strip():
                raise ValueError(f"devices: {ip} has an empty name")
            out[key] = str(name).strip()
        return out

    @field_validator("stats_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("stats_interval must be more than 0, e.g. 60s")
        return v

    @model_validator(mode="after")
    def _some_credential(self, info: ValidationInfo) -> TrapConfig:
        if not (self.communities or self.communities_env or self.communities_file or self.users):
            raise ValueError(
                "no credentials: give communities (or communities_env / communities_file) for v1/v2c "
                "and/or users for v3 — a receiver that accepts nothing would drop every trap"
            )
        if self.communities_env is not None and _checks_env(info) and self.communities_env not in os.environ:
            raise ValueError(f"environment variable {self.communities_env} (communities_env) is not set")
        if not self.allow_noauth:
            bare = [u.user for u in self.users if u.auth_proto is None]
            if bare:
                raise ValueError(
                    f"users: {', '.join(bare)} have no auth_proto, so their traps would be noAuthNoPriv (unauthenticated)"
                    " and are refused — give auth_proto and a key, or set allow_noauth: true to accept them anyway"
                )
        names = [u.user for u in self.users]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"users: {', '.join(sorted(dup))} listed twice; list every engine id under one entry")
        return self

    def community_list(self) -> list[str]:
        """Every accepted community, from the config, the environment and the file, without duplicates."""
        found = [c.get_secret_value() for c in self.communities]
        if self.communities_env is not None:
            found += [c.strip() for c in os.environ.get(self.communities_env, "").split(",")]
        if self.communities_file is not None:
            for line in Path(self.communities_file).read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    found.append(line)
        return list(dict.fromkeys(c for c in found if c))
