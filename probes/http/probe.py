"""Fetch one URL with the probe's own HTTP/1.1 client (``client.py``): status, time, size, body regex, certificate days left and a
normalised content fingerprint compared with an operator-approved baseline (tamper detection)."""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import re
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from probes.base import Probe
from probes.http.client import ConnectError, HttpError, Response, basic_auth, request
from probes.http.config import REDACTED, SECRET_PARAM, HttpConfig, redact_url, url_secrets
from probes.model import Sample, Status, clean_fields, status_sample
from probes.tls import client_context, describe_tls_error, shared_client_context

MEASUREMENT = "http"
_WHITESPACE = re.compile(r"\s+")
# Pages that name their charset only in a <meta> tag (common for GBK/GB2312 portals).
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


# --- fingerprinting ------------------------------------------------------------------------------


def normalise(text: str, ignore: Iterable[re.Pattern[str]] = ()) -> str:
    """Remove every ``ignore`` match, then collapse whitespace runs to one space."""
    for pattern in ignore:
        text = pattern.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def fingerprint(text: str, ignore: Iterable[re.Pattern[str]] = ()) -> str:
    """sha256 hex of the normalised text (UTF-8), stable across re-indentation and ignored noise."""
    return hashlib.sha256(normalise(text, ignore).encode("utf-8")).hexdigest()


# --- fetching ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fetched:
    status_code: int
    body: bytes
    text: str
    response_ms: float
    cert_days_left: float | None


def _charset(response: Response, body: bytes) -> str:
    declared = response.charset
    if not declared and (m := _META_CHARSET.search(body[:4096])):
        declared = m.group(1).decode("ascii")
    try:
        return codecs.lookup(declared).name if declared else "utf-8"
    except LookupError:
        return "utf-8"


async def fetch(cfg: HttpConfig, ctx: ssl.SSLContext, headers: dict[str, str] | None = None) -> Fetched:
    """One request with a fresh connection (so connect and TLS are measured every time), the
    body read up to ``max_body_bytes``. Environment proxies are not used: the probe measures
    the path from this node. Credentials in the URL go as Basic auth. The time limit is the
    caller's (``asyncio.timeout``). Raises :class:`~probes.http.client.HttpError`."""
    if headers is None:
        headers = cfg.request_headers()
    start = time.perf_counter()
    resp = await request(
        cfg.method,
        cfg.url,
        ssl_context=ctx,
        headers=headers,
        body=cfg.body.encode("utf-8") if cfg.body is not None else None,
        follow_redirects=cfg.follow_redirects,
        max_body_bytes=cfg.max_body_bytes,
    )
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    raw = resp.body
    return Fetched(resp.status_code, raw, raw.decode(_charset(resp, raw), "replace"), elapsed_ms, resp.cert_days_left)


@dataclass(frozen=True, slots=True)
class PageFingerprint:
    """What ``netwatch-agent http URL --fingerprint`` shows before the operator approves it."""

    url: str
    status_code: int
    content_bytes: int
    sha256: str
    normalised_chars: int


async def fingerprint_url(target: HttpConfig | str, *, timeout_s: float = 10.0) -> PageFingerprint:
    """Fetch a URL now and fingerprint it with the config's ignore patterns (none for a bare URL).

    Raises :class:`~probes.http.client.HttpError` or ``TimeoutError`` when the page cannot be fetched: a CLI wants
    the reason, not a Sample.
    """
    cfg = target if isinstance(target, HttpConfig) else HttpConfig.model_validate({"url": target})
    ctx = client_context(verify=cfg.verify_tls, ca_file=cfg.ca_file)
    async with asyncio.timeout(timeout_s):
        got = await fetch(cfg, ctx)
    ignore = cfg.fingerprint.ignore
    return PageFingerprint(
        redact_url(cfg.url),
        got.status_code,
        len(got.body),
        fingerprint(got.text, ignore),
        len(normalise(got.text, ignore)),
    )


# --- the probe -----------------------------------------------------------------------------------


def _describe(e: HttpError) -> str:
    """The client's message; a failed handshake or a refused connection in the operator's words
    (``where`` names the redirect hop when it was not the first request)."""
    cause = e.__cause__
    if isinstance(e, ConnectError) and isinstance(cause, ssl.SSLError):
        return e.where + describe_tls_error(cause, ca_hint=True)
    if isinstance(e, ConnectError) and isinstance(cause, ConnectionRefusedError):
        return e.where + "connection refused — is the web server running on that port?"
    return str(e)


#: inline headers whose values are scrubbed from messages too (env/file ones always are)
_SECRET_HEADER = re.compile(f"{SECRET_PARAM.pattern}|cookie", re.IGNORECASE)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (longest first, so a password inside user info goes too) replaced."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class HttpProbe(Probe):
    kind: ClassVar[str] = "http"
    config_model: ClassVar[type[HttpConfig]] = HttpConfig
    config: HttpConfig

    def __init__(self, config: HttpConfig, *, name: str, timeout_s: float = 10.0) -> None:
        super().__init__(config, name=name, timeout_s=timeout_s)
        # Built once and shared: loading the CA bundle costs milliseconds per poll and ~0.8 MB per context.
        self._ssl = shared_client_context(verify=config.verify_tls, ca_file=config.ca_file)

    @property
    def target(self) -> str:
        # The agent names an unnamed probe after its URL: shown, like the URL, without credentials.
        return redact_url(self.name)

    async def collect(self) -> list[Sample]:
        cfg = self.config
        t0 = time.perf_counter()
        where = f"http {self.target}"
        tags = {"target": self.target, "url": cfg.shown_url}
        secrets = url_secrets(cfg.url) + url_secrets(self.name)
        if auth := basic_auth(cfg.url):  # its base64 form too, should a server echo it back
            secrets.append(auth.removeprefix("Basic "))
        try:
            headers = cfg.request_headers()
        except ValueError as e:  # a header's variable or file is gone: says which, never a value
            return [self._status("down", f"{where}: {e}", t0)]
        secrets += [v for k, v in headers.items() if k not in cfg.headers or _SECRET_HEADER.search(k)]
        try:
            async with asyncio.timeout(self.budget_s):
                got = await fetch(cfg, self._ssl, headers)
        except TimeoutError:
            return [self._status("down", f"{where}: no complete response within {self.budget_s:g} s", t0)]
        except HttpError as e:
            # an error may quote the URL or a header: never the secret parts of either
            return [self._status("down", scrub(f"{where}: {_describe(e)}", secrets), t0)]

        fields: dict[str, Any] = {
            "status_code": got.status_code,
            "response_ms": got.response_ms,
            "content_bytes": len(got.body),
            "cert_days_left": got.cert_days_left,
        }
        status: Status = "ok"
        problems: list[str] = []
        status_ok = cfg.status_expected(got.status_code)
        if not status_ok:
            status = "down"
            ranges = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in cfg.expect_status)
            problems.append(f"HTTP {got.status_code}, expected {ranges}")
        if cfg.body_regex is not None:
            fields["body_match"] = cfg.body_regex.search(got.text) is not None
            if not fields["body_match"]:
                status = "degraded" if status == "ok" else status
                problems.append(f"body does not match /{cfg.body_regex.pattern}/")
        # An error page is not a tampered page: fingerprint only what the server calls success.
        if cfg.fingerprint.enabled and status_ok:
            digest = fingerprint(got.text, cfg.fingerprint.ignore)
            fields["content_sha256"] = digest
            try:
                approved = cfg.fingerprint.approved()
            except ValueError as e:
                status = "degraded" if status == "ok" else status
                problems.append(str(e))
            else:
                if approved is not None:
                    fields["changed"] = digest != approved
        error = f"{where}: " + "; ".join(problems) if problems else ""
        return [Sample(MEASUREMENT, tags, clean_fields(fields)), self._status(status, error, t0)]

    def _status(self, status: Status, error: str, t0: float) -> Sample:
        return status_sample(
            self.kind, self.target, status, error=error, duration_ms=(time.perf_counter() - t0) * 1000.0
        )
