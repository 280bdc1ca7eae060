"""Settings of one HTTP(S) target, including content fingerprinting for tamper detection."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from probes.base import ByteSize, ExistingFile, ProbeConfig

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    url: str = Field(min_length=1, max_length=2048)
    method: Method = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
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
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http:// or https:// URL with a host")
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
    def _baseline_readable(self, info: ValidationInfo) -> HttpConfig:
        # Check the baseline file when the config loads, so a typo stops start-up, not a poll
        # (unless file checks are off: an example config written for another machine).
        if self.fingerprint.baseline_file is not None and not (info.context or {}).get("skip_file_checks"):
            read_baseline_file(self.fingerprint.baseline_file)
        return self

    def status_expected(self, code: int) -> bool:
        return any(lo <= code <= hi for lo, hi in self.expect_status)
