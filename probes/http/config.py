"""Settings of one HTTP(S) target, including content fingerprinting for tamper detection, and the
redaction of the URL's credentials before it becomes a tag or a message."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from probes.base import ByteSize, ExistingFile, ProbeConfig
from probes.configfile import read_secret

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: A query parameter whose *name* contains one of these (any case) holds a secret: its value is
#: replaced by ``***`` wherever the URL is shown (tags, messages, logs). Errs towards hiding.
SECRET_PARAM = re.compile(r"token|key|pass|pwd|secret|sign|auth|credential|session|ticket", re.IGNORECASE)
REDACTED = "***"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _secret_params(query: str) -> list[tuple[str, str, bool]]:
    return [(k, v, bool(SECRET_PARAM.search(k))) for k, v in parse_qsl(query, keep_blank_values=True)]


def redact_url(url: str) -> str:
    """The URL as it may be shown and stored: no ``user:password@``, and the value of every query
    parameter named like a secret (:data:`SECRET_PARAM`) replaced by ``***``. Anything that is not
    an http(s) URL is returned as it is."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return url
    if parts.scheme not in ("http", "https") or not host:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    params = _secret_params(query)
    if any(secret for _, _, secret in params):
        query = urlencode([(k, REDACTED if secret else v) for k, v, secret in params], safe="*/:")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """The secret parts of a URL (user info, its password, secret-named parameter values), for
    scrubbing them out of any text that might quote the URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found += [userinfo, *(x for x in userinfo.split(":", 1)[1:] if x)]
    found += [v for _, v, secret in _secret_params(parts.query) if secret and v]
    return found


def parse_status_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    """``200``, ``"200-399"``, ``[200, "301-302"]`` -> ``((200, 200), (200, 399)...)``."""
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("list at least one status code or range, e.g. 200-399")
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, list | tuple) and len(item) == 2:  # already parsed (model_copy, defaults)
            lo, hi = int(item[0]), int(item[1])
        elif isinstance(item, int) and not isinstance(item, bool):
            lo = hi = item
        elif isinstance(item, str) and (m := _RANGE.match(item)):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        else:
            raise ValueError(f"{item!r} is not a status code or range: write 200, or 200-399")
        if not (100 <= lo <= hi <= 599):
            raise ValueError(f"{item!r}: status codes run from 100 to 599, low end first")
        out.append((lo, hi))
    return tuple(out)


def read_baseline_file(path: Path) -> str:
    """The first word of the file: a sha256 hex digest, as ``sha256sum`` or the CLI write it."""
    try:
        words = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read baseline_file {path}: {e}") from None
    digest = words[0].lower() if words else ""
    if not _SHA256.match(digest):
        raise ValueError(f"baseline_file {path} must start with a sha256 hex digest (64 hex digits)")
    return digest


class FingerprintConfig(ProbeConfig):
    """Hash the page after removing ``ignore`` matches (dates, visitor counters, tokens) and
    collapsing whitespace; compare with the baseline the operator approved."""

    enabled: bool = False
    ignore: tuple[re.Pattern[str], ...] = ()
    baseline: str | None = Field(None, description="approved sha256 hex digest")
    baseline_file: ExistingFile | None = Field(None, description="file whose first word is the approved digest")

    @field_validator("baseline")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not _SHA256.match(v.strip().lower()):
            raise ValueError("baseline must be a sha256 hex digest (64 hex digits)")
        return v.strip().lower() if v is not None else None

    @model_validator(mode="after")
    def _one_baseline(self) -> FingerprintConfig:
        if self.baseline is not None and self.baseline_file is not None:
            raise ValueError("give baseline or baseline_file, not both")
        return self

    def approved(self) -> str | None:
        """The approved digest; a baseline_file is read at each call, so approving a new
        baseline needs no restart."""
        if self.baseline_file is not None:
            return read_baseline_file(self.baseline_file)
        return self.baseline


class HttpConfig(ProbeConfig):
    #: may carry credentials (``https://user:pass@host/``, ``?token=``): used for the request,
    #: shown only through :func:`redact_url`
    url: str = Field(min_length=1, max_length=2048)
    method: Method = "GET"
    headers: dict[str, str] = Field(default_factory=dict, description="request headers, inline")
    #: header name -> environment variable holding its value (e.g. Authorization: NW_PORTAL_AUTH)
    headers_env: dict[str, str] = Field(default_factory=dict)
    #: header name -> file holding its value (first line), read at every poll
    headers_file: dict[str, ExistingFile] = Field(default_factory=dict)
    body: str | None = Field(None, description="request body (for POST/PUT)")
    expect_status: tuple[tuple[int, int], ...] = Field(((200, 399),), description="codes or ranges counted as up")
    body_regex: re.Pattern[str] | None = None
    follow_redirects: bool = False
    verify_tls: bool = True
    ca_file: ExistingFile | None = None
    max_body_bytes: ByteSize = Field(2 * 1024 * 1024, ge=1, description="read at most this much of the body")
    fingerprint: FingerprintConfig = Field(default_factory=FingerprintConfig)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            host = parts.hostname
        except ValueError:
            host = None
        if parts.scheme not in ("http", "https") or not host:
            # the URL is not quoted: it may carry credentials
            raise ValueError("url must be an http:// or https:// URL with a host, e.g. https://portal.example.gov.cn/")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("expect_status", mode="before")
    @classmethod
    def _ranges(cls, v: Any) -> tuple[tuple[int, int], ...]:
        return parse_status_ranges(v)

    @model_validator(mode="after")
    def _header_sources(self, info: ValidationInfo) -> HttpConfig:
        seen: dict[str, str] = {}
        for source in ("headers", "headers_env", "headers_file"):
            for name in getattr(self, source):
                if not _HEADER_NAME.match(name):
                    raise ValueError(f"{source}: {name[:40]!r} is not a header name")
                if name.lower() in seen:
                    raise ValueError(f"header {name} is given in both {seen[name.lower()]} and {source}; keep one")
                seen[name.lower()] = source
        if not (info.context or {}).get("skip_file_checks"):
            for name, var in self.headers_env.items():
                if not os.environ.get(var):
                    raise ValueError(f"headers_env: environment variable {var} (header {name}) is not set")
        return self

    @model_validator(mode="after")
    def _baseline_readable(self, info: ValidationInfo) -> HttpConfig:
        # Check the baseline file when the config loads, so a typo stops start-up, not a poll
        # (unless file checks are off: an example config written for another machine).
        if self.fingerprint.baseline_file is not None and not (info.context or {}).get("skip_file_checks"):
            read_baseline_file(self.fingerprint.baseline_file)
        return self

    def request_headers(self) -> dict[str, str]:
        """Every header to send, the env/file ones read now (a rotated token is picked up at the
        next poll). Raises ``SecretMissing`` (a ValueError) naming the variable or file, never a value."""
        out = dict(self.headers)
        for name, var in self.headers_env.items():
            out[name] = read_secret(None, var, None, f"header {name}") or ""
        for name, path in self.headers_file.items():
            out[name] = read_secret(None, None, path, f"header {name}") or ""
        return out

    @property
    def shown_url(self) -> str:
        return redact_url(self.url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Header values, the body and the URL's credentials never appear in a repr (logs, tracebacks).
        for key, value in super().__repr_args__():
            if key == "url":
                yield key, redact_url(value)
            elif key == "headers":
                yield key, dict.fromkeys(value, REDACTED)
            elif key == "body" and value is not None:
                yield key, f"<{len(value)} chars>"
            else:
                yield key, value

    def status_expected(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.expect_status)
