"""Settings of one polled SNMP device: address, version and credentials (secrets from the config,
the environment or a file, never shown in reprs), timing, and which device profiles to use."""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from probes.base import Duration, ExistingFile, ProbeConfig
from probes.configfile import SecretMissing, read_secret

Version = Literal["1", "2c", "3"]
#: Names as net-snmp's ``-a`` / ``-x`` spell them, so a working ``snmpget`` line carries over.
AuthProto = Literal["MD5", "SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
#: AES-192/256 extend the key as net-snmp does (Blumenthal draft); the ``-C`` forms use the
#: Reeder extension that Cisco and some others implement.
PrivProto = Literal["DES", "AES", "AES-128", "AES-192", "AES-256", "AES-192-C", "AES-256-C"]
SecurityLevel = Literal["noAuthNoPriv", "authNoPriv", "authPriv"]

#: USM turns pass phrases shorter than this into keys most agents refuse (RFC 3414 11.2).
MIN_PASSPHRASE = 8
_HOST = re.compile(r"^[A-Za-z0-9._:\-\[\]%]+$")


def _sources(cfg: SnmpConfig, name: str) -> list[str]:
    return [k for k in (name, f"{name}_env", f"{name}_file") if getattr(cfg, k) is not None]


class InterfaceFilter(ProbeConfig):
    """Which interfaces become ``interface`` Samples (matched against ifName, else ifDescr)."""

    include: re.Pattern[str] | None = Field(None, description="regex; only matching interfaces are kept")
    exclude: re.Pattern[str] | None = Field(None, description="regex; matching interfaces are dropped")

    def keeps(self, name: str) -> bool:
        if self.include is not None and not self.include.search(name):
            return False
        return not (self.exclude is not None and self.exclude.search(name))


class SnmpConfig(ProbeConfig):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(161, ge=1, le=65535)
    version: Version = "2c"

    community: SecretStr | None = Field(None, description="v1/v2c community (prefer community_env/_file)")
    community_env: str | None = Field(None, min_length=1, description="environment variable holding it")
    community_file: ExistingFile | None = Field(None, description="file holding it (first line)")

    user: str | None = Field(None, min_length=1, max_length=32, description="SNMPv3 user name")
    auth_proto: AuthProto | None = None
    auth_key: SecretStr | None = None
    auth_key_env: str | None = Field(None, min_length=1)
    auth_key_file: ExistingFile | None = None
    priv_proto: PrivProto | None = None
    priv_key: SecretStr | None = None
    priv_key_env: str | None = Field(None, min_length=1)
    priv_key_file: ExistingFile | None = None
    context: str = Field("", max_length=32, description="SNMPv3 context name")

    request_timeout: Duration = Field(2.0, gt=0, le=60, description="wait for each reply")
    retries: int = Field(1, ge=0, le=5, description="re-sends after a request timed out")
    max_repetitions: int = Field(25, ge=1, le=200, description="rows per GETBULK request")
    max_in_flight: int = Field(4, ge=1, le=32, description="requests outstanding to this device at once")
    max_oids_per_get: int = Field(40, ge=1, le=200, description="OIDs per GET before splitting")

    profile: str | list[str] = Field("auto", description="auto, a profile name, or a list of names")
    interfaces: InterfaceFilter = Field(default_factory=InterfaceFilter)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        # YAML reads `version: 1` and `version: 3` as numbers and `2c` as text.
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, str):
            return v.strip().lower().removeprefix("v")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        v = v.strip()
        if not _HOST.match(v):
            raise ValueError(f"{v!r} is not a host name or address")
        return v.strip("[]")

    @field_validator("profile")
    @classmethod
    def _profiles_exist(cls, v: str | list[str]) -> str | list[str]:
        from probes.snmp.profile import known_profiles

        names = [v] if isinstance(v, str) else list(v)
        if not names:
            raise ValueError("list at least one profile, or write auto")
        known = known_profiles()
        for n in names:
            if n == "auto" and isinstance(v, str):
                continue
            if n not in known:
                raise ValueError(f"unknown profile {n!r}; known: auto, {', '.join(sorted(known))}")
        return v

    @model_validator(mode="after")
    def _credentials(self, info: ValidationInfo) -> SnmpConfig:
        check_env = not (info.context or {}).get("skip_file_checks")
        community = _sources(self, "community")
        if len(community) > 1:
            raise ValueError(f"give only one of {', '.join(community)}")
        v3_keys = [k for k in ("user", "auth_proto", "priv_proto") if getattr(self, k) is not None]
        v3_keys += _sources(self, "auth_key") + _sources(self, "priv_key")
        if self.version in ("1", "2c"):
            if not community:
                raise ValueError(
                    f"SNMP v{self.version} needs community, community_env or community_file "
                    "(prefer _env or _file so the secret stays out of the config)"
                )
            if v3_keys:
                raise ValueError(f"{', '.join(v3_keys)} belong to version 3; this device is v{self.version}")
        else:
            if community:
                raise ValueError(f"{community[0]} belongs to versions 1 and 2c; v3 uses user and auth/priv keys")
            if self.user is None:
                raise ValueError("SNMP v3 needs user (the USM user name)")
            for kind, proto in (("auth", self.auth_proto), ("priv", self.priv_proto)):
                given = _sources(self, f"{kind}_key")
                if len(given) > 1:
                    raise ValueError(f"give only one of {', '.join(given)}")
                if proto is None and given:
                    raise ValueError(f"{given[0]} needs {kind}_proto (e.g. {'SHA' if kind == 'auth' else 'AES'})")
                if proto is not None and not given:
                    raise ValueError(f"{kind}_proto {proto} needs {kind}_key, {kind}_key_env or {kind}_key_file")
                literal = getattr(self, f"{kind}_key")
                if literal is not None and len(literal.get_secret_value()) < MIN_PASSPHRASE:
                    raise ValueError(f"{kind}_key must be at least {MIN_PASSPHRASE} characters (RFC 3414)")
            if self.priv_proto is not None and self.auth_proto is None:
                raise ValueError("privacy (priv_proto) needs authentication (auth_proto) too: authPriv")
        if check_env:
            for name in ("community_env", "auth_key_env", "priv_key_env"):
                var = getattr(self, name)
                if var is not None and not os.environ.get(var):
                    raise ValueError(f"environment variable {var} ({name}) is not set")
        return self

    @property
    def security_level(self) -> SecurityLevel:
        if self.priv_proto is not None:
            return "authPriv"
        return "authNoPriv" if self.auth_proto is not None else "noAuthNoPriv"

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def community_value(self) -> str:
        secret = read_secret(self.community, self.community_env, self.community_file, "community")
        if secret is None:
            raise SecretMissing("no community configured")
        return secret

    def auth_key_value(self) -> str | None:
        return self._key("auth")

    def priv_key_value(self) -> str | None:
        return self._key("priv")

    def _key(self, kind: str) -> str | None:
        key = read_secret(
            getattr(self, f"{kind}_key"), getattr(self, f"{kind}_key_env"), getattr(self, f"{kind}_key_file"), kind
        )
        if key is not None and len(key) < MIN_PASSPHRASE:
            raise SecretMissing(f"{kind}_key must be at least {MIN_PASSPHRASE} characters (RFC 3414)")
        return key

    def profile_names(self) -> list[str] | None:
        """The profiles asked for by name, or ``None`` for auto-selection."""
        if isinstance(self.profile, str):
            return None if self.profile == "auto" else [self.profile]
        return list(self.profile)
