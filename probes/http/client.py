"""A small HTTP/1.1 client over asyncio streams: exactly what the http probe needs — one request per
fresh connection, redirects, chunked and gzip/deflate bodies read up to a cap, the TLS certificate of
the connection that answered — and limits on everything a hostile server controls.

It replaces httpx on the agent (issue 12: httpx and its anyio/h11/httpcore cost about 7 MB of a
50 MB budget). Time limits are the caller's (``asyncio.timeout``); this module sets none.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote, urljoin, urlsplit

from probes.http.config import redact_url
from probes.tls import peer_cert_days_left

#: a single status, header, chunk-size or trailer line; the longest real header lines (CSP,
#: Set-Cookie) stay far below
MAX_LINE_BYTES = 32 * 1024
#: the whole response head (status line + header lines), as httpcore allows
MAX_HEAD_BYTES = 100 * 1024
MAX_HEADERS = 100
MAX_REDIRECTS = 10
#: 1xx interim responses (100 Continue, 103 Early Hints) skipped before the real one
MAX_INTERIM = 10
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORT = {"http": 80, "https": 443}
_READ_SIZE = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_DIGITS = re.compile(r"[0-9]{1,18}")  # a Content-Length: ASCII digits, below 10**18
_CHUNK_SIZE = re.compile(rb"\s*([0-9A-Fa-f]{1,16})\s*(?:;[^\r\n]*)?\r?\n")
# Path and query go as written, existing %-escapes included; only what a browser would also
# percent-encode is (WHATWG URL's path and query sets: space, control characters, non-ASCII text,
# and " < > in both, ` { } in the path), as strict servers refuse those raw.
_PATH_SAFE = "!#$%&'()*+,-./:;=?@[\\]^_|~"
_QUERY_SAFE = _PATH_SAFE + "`{}"


class HttpError(Exception):
    """No complete, well-formed response. The message says what failed in words an operator can act
    on and never quotes the URL's credentials; ``where`` names the redirect hop when it was not the
    first request."""

    def __init__(self, message: str, *, where: str = "") -> None:
        super().__init__(message)
        self.where = where

    def __str__(self) -> str:
        return self.where + super().__str__()


class ConnectError(HttpError):
    """DNS, TCP connect or TLS handshake failed (the OS or ssl error is the ``__cause__``)."""


class ProtocolError(HttpError):
    """The server's bytes are not a usable HTTP/1.1 response (garbage, over a limit, cut short)."""


class TooManyRedirects(HttpError):
    pass


class Headers:
    """Response header fields in arrival order; names compare case-insensitively, and a field sent
    several times reads as its values joined with ``", "`` (RFC 9110 5.3)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items = items or []

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self._items if k.lower() == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:  # values may be cookies: names only
        return f"Headers({[k for k, _ in self._items]!r})"


@dataclass(frozen=True, slots=True)
class Response:
    status_code: int
    reason: str
    headers: Headers
    #: the body after chunked and gzip/deflate decoding, at most ``max_body_bytes``
    body: bytes
    #: the body was longer than ``max_body_bytes`` and reading stopped there
    capped: bool
    #: the URL that gave this response (after redirects), credentials included: show it redacted
    url: str
    #: days left on the certificate of the connection that gave this response (https), else None
    cert_days_left: float | None
    redirects: int

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter of ``Content-Type``, if any."""
        return content_type_charset(self.headers.get("content-type") or "")


def content_type_charset(value: str) -> str | None:
    for param in value.split(";")[1:]:
        key, _, raw = param.partition("=")
        if key.strip().lower() == "charset":
            return raw.strip().strip('"').strip("'").strip() or None
    return None


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str  # as DNS / the socket wants it: IDNA-encoded, IPv6 without brackets
    port: int
    host_header: str
    path: str  # request target: path and query as given
    auth: str | None  # "Basic ..." from the URL's user info

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host.lower(), self.port


def _target(url: str, where: str) -> _Target:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:  # a port out of range or not a number; the text quotes no URL
        raise HttpError(f"bad URL: {e}", where=where) from None
    if parts.scheme not in _DEFAULT_PORT or not host:
        raise HttpError(f"cannot follow a URL with scheme {parts.scheme!r}", where=where)
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise HttpError("the host name is not a valid international domain name", where=where) from None
    default = _DEFAULT_PORT[parts.scheme]
    shown_host = f"[{host}]" if ":" in host else host
    host_header = shown_host if port in (None, default) else f"{shown_host}:{port}"
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return _Target(parts.scheme, host, port or default, host_header, path, basic_auth(url))


def basic_auth(url: str) -> str | None:
    """The ``Authorization`` value made from the URL's user info (percent-decoded), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.username is None:
        return None
    userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(userinfo.encode("utf-8")).decode("ascii")


def _head_bytes(method: str, target: _Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
    if not _TOKEN.fullmatch(method.encode("latin-1", "replace")):
        raise HttpError(f"{method[:20]!r} is not an HTTP method")
    fields: dict[str, tuple[str, str]] = {}  # lower name -> (name as given, value)

    def put(name: str, value: str) -> None:
        fields[name.lower()] = (name, value)

    put("Host", target.host_header)
    put("User-Agent", "netwatch")
    put("Accept", "*/*")
    put("Accept-Encoding", "gzip, deflate")
    if target.auth is not None:
        put("Authorization", target.auth)
    for name, value in headers.items():  # the caller's headers win over the defaults above
        if not _TOKEN.fullmatch(name.encode("latin-1", "replace")):
            raise HttpError(f"request header name {name[:40]!r} is not a valid header name")
        if any(c in value for c in "\r\n\0"):
            raise HttpError(f"request header {name} has a line break in its value")
        put(name, value)
    for framing in ("content-length", "transfer-encoding", "connection"):
        fields.pop(framing, None)  # framing is this client's business
    if body is not None or method in ("POST", "PUT", "PATCH"):
        put("Content-Length", str(len(body or b"")))
    put("Connection", "close")
    lines = [f"{method} {target.path} HTTP/1.1", *(f"{n}: {v}" for n, v in fields.values())]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise HttpError("a request header value has characters outside Latin-1; percent-encode it") from None


class _Decoder:
    """gzip / deflate content decoding with an output limit (a small compressed body cannot
    expand past the cap: a decompression bomb costs nothing)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._started = False
        self._d = self._new()

    def _new(self, raw: bool = False) -> zlib._Decompress:
        if self.coding == "deflate":  # zlib-wrapped as the RFC says, or bare as some servers send it
            return zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes, room: int) -> bytes:
        """Up to ``room`` decoded bytes; input beyond that is dropped (the caller stops there)."""
        out = b""
        while data and len(out) < room:
            if self._d.eof:  # gzip allows several members one after another
                if self.coding != "gzip" or not data.lstrip(b"\0"):
                    break  # trailing bytes after a deflate stream, or gzip padding
                self._d = self._new()
            try:
                out += self._d.decompress(data, room - len(out))
            except zlib.error as e:
                if self.coding == "deflate" and not self._started:
                    self._d, self._started = self._new(raw=True), True
                    continue
                raise ProtocolError(f"the {self.coding} body cannot be decoded: {e}") from None
            self._started = True
            data = self._d.unused_data if self._d.eof else b""
        return out

    @property
    def finished(self) -> bool:
        return self._d.eof

    def check_complete(self) -> None:
        if self._started and not self._d.eof:
            raise ProtocolError(f"the {self.coding} body ends before its end marker (cut short)")


class _Connection:
    """One exchange on one connection, reading with the limits above."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.head_bytes = 0

    async def line(self, what: str, *, counted: bool = True) -> bytes:
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError(f"{what} longer than {MAX_LINE_BYTES} bytes") from None
        except asyncio.IncompleteReadError as e:
            if not e.partial and what == "status line":
                raise ProtocolError("the server closed the connection without sending a response") from None
            raise ProtocolError(f"the connection closed in the middle of the {what}") from None
        if counted:
            self.head_bytes += len(line)
            if self.head_bytes > MAX_HEAD_BYTES:
                raise ProtocolError(f"response header longer than {MAX_HEAD_BYTES} bytes")
        return line

    async def fields(self, what: str) -> list[tuple[str, str]]:
        """Header (or trailer) lines up to the empty line; obsolete line folding joins the previous
        value with a space (RFC 9112 5.2)."""
        items: list[tuple[str, str]] = []
        while (line := await self.line(f"{what} line")) not in (b"\r\n", b"\n"):
            if line[:1] in (b" ", b"\t"):
                if not items:
                    raise ProtocolError(f"the first {what} line is a continuation line")
                prev_name, prev_value = items[-1]
                items[-1] = (prev_name, f"{prev_value} {line.strip().decode('latin-1')}".strip())
                continue
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise ProtocolError(f"malformed {what} line {_show(line)}")
            if len(items) >= MAX_HEADERS:
                raise ProtocolError(f"more than {MAX_HEADERS} {what} fields")
            items.append((name.decode("ascii"), value.strip(b" \t\r\n").decode("latin-1")))
        return items

    async def read(self, n: int) -> bytes:
        return await self.reader.read(n)


def _show(raw: bytes) -> str:
    """A few bytes of what the server sent, safe to put in a message."""
    text = raw[:40].decode("latin-1").rstrip("\r\n")
    return repr(text + ("…" if len(raw) > 40 else ""))


def _framing(status: int, method: str, headers: Headers) -> tuple[bool, int | None, str | None]:
    """(chunked, content length, content coding) of the body, per RFC 9112 6.3."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return False, 0, None
    coding = (headers.get("content-encoding") or "").lower()
    codings = [c.strip() for c in coding.split(",") if c.strip() and c.strip() != "identity"]
    if len(codings) > 1:
        raise ProtocolError(f"Content-Encoding {coding!r}: more than one coding is not supported")
    content_coding = codings[0] if codings else None
    if content_coding == "x-gzip":
        content_coding = "gzip"
    if content_coding not in (None, "gzip", "deflate"):
        raise ProtocolError(
            f"the server sent Content-Encoding {content_coding!r}, which the probe does not decode "
            "(it asks for gzip or deflate)"
        )
    transfer = [c.strip().lower() for c in (headers.get("transfer-encoding") or "").split(",") if c.strip()]
    if transfer:
        if transfer[-1] != "chunked":
            return False, None, content_coding  # the body runs until the server closes
        if [c for c in transfer[:-1] if c != "identity"]:
            raise ProtocolError(f"Transfer-Encoding {', '.join(transfer)!r} is not supported")
        return True, None, content_coding
    lengths = {v.strip() for v in ",".join(headers.get_all("content-length")).split(",") if v.strip()}
    if not lengths:
        return False, None, content_coding
    if len(lengths) > 1 or not _DIGITS.fullmatch(next(iter(lengths))):
        raise ProtocolError(f"invalid Content-Length {', '.join(sorted(lengths))[:40]!r}")
    return False, int(next(iter(lengths))), content_coding


async def _read_body(
    conn: _Connection, chunked: bool, length: int | None, coding: str | None, cap: int
) -> tuple[bytes, bool]:
    """The decoded body up to ``cap`` bytes, and whether it went on beyond that."""
    body = bytearray()
    decoder = _Decoder(coding) if coding else None

    def take(data: bytes) -> bool:  # True once the cap is reached
        room = cap - len(body)
        body.extend(decoder.feed(data, room) if decoder else data[:room])
        return len(body) >= cap

    if chunked:
        while True:
            size_line = await conn.line("chunk size line", counted=False)
            if not (m := _CHUNK_SIZE.fullmatch(size_line)):
                raise ProtocolError(f"bad chunk size line {_show(size_line)}")
            left = int(m.group(1), 16)
            if left == 0:
                await conn.fields("trailer")
                break
            while left:
                data = await conn.read(min(left, _READ_SIZE))
                if not data:
                    raise ProtocolError("the connection closed in the middle of a chunk (body cut short)")
                left -= len(data)
                if take(data):
                    return bytes(body), True
            if (end := await conn.line("chunk end", counted=False)) not in (b"\r\n", b"\n"):
                raise ProtocolError(f"chunk data longer than its size line says: {_show(end)}")
    elif length is not None:
        got = 0
        while got < length:
            data = await conn.read(min(length - got, _READ_SIZE))
            if not data:
                raise ProtocolError(
                    f"the connection closed after {got} of {length} body bytes (Content-Length): body cut short"
                )
            got += len(data)
            if take(data):
                return bytes(body), got < length or (decoder is not None and not decoder.finished)
    else:
        while data := await conn.read(_READ_SIZE):
            if take(data):
                return bytes(body), True
    if decoder is not None:
        decoder.check_complete()
    return bytes(body), False


async def _exchange(
    method: str,
    target: _Target,
    head: bytes,
    body: bytes | None,
    ssl_context: ssl.SSLContext,
    max_body_bytes: int,
    where: str,
    follow_redirects: bool,
) -> tuple[int, str, Headers, bytes, bool, float | None]:
    tls = target.scheme == "https"
    try:
        reader, writer = await asyncio.open_connection(
            target.host,
            target.port,
            ssl=ssl_context if tls else None,
            server_hostname=target.host if tls else None,
            limit=MAX_LINE_BYTES,
        )
    except ssl.SSLError as e:
        raise ConnectError(f"TLS handshake with {target.host_header} failed: {e}", where=where) from e
    except OSError as e:
        raise ConnectError(_os_error_text(e, target), where=where) from e
    clean = False
    try:
        days = peer_cert_days_left(writer.get_extra_info("ssl_object")) if tls else None
        conn = _Connection(reader, writer)
        try:
            writer.write(head + (body or b""))
            await writer.drain()
            for _ in range(MAX_INTERIM + 1):
                status_line = await conn.line("status line")
                if not (m := _STATUS_LINE.fullmatch(status_line)):
                    raise ProtocolError(f"not an HTTP/1.x response: status line {_show(status_line)}")
                status = int(m.group(1))
                headers = Headers(await conn.fields("header"))
                if not 100 <= status < 200 or status == 101:
                    break
            else:
                raise ProtocolError(f"more than {MAX_INTERIM} interim (1xx) responses")
            if status == 101:
                raise ProtocolError("the server switched protocols (101) on a plain request")
            if follow_redirects and status in REDIRECT_CODES and "location" in headers:
                data, capped = b"", False  # the body of a redirect that is followed is of no interest
            else:
                chunked, length, coding = _framing(status, method, headers)
                data, capped = await _read_body(conn, chunked, length, coding, max_body_bytes)
                clean = not capped
        except ssl.SSLError as e:
            raise ProtocolError(f"TLS error while talking to {target.host_header}: {e}") from e
        except OSError as e:
            raise ProtocolError(f"connection to {target.host_header} lost: {e.strerror or e}") from e
    except HttpError as e:
        e.where = where
        raise
    finally:
        await _close(writer, clean)
    reason = (m.group(2) or b"").decode("latin-1")
    return status, reason, headers, data, capped, days


def _os_error_text(e: OSError, target: _Target) -> str:
    import socket  # already loaded by asyncio

    if isinstance(e, socket.gaierror):
        return f"cannot resolve host {target.host}: {e.strerror} — check the name and this node's DNS"
    if isinstance(e, ConnectionRefusedError):
        return f"connection refused by {target.host_header}"
    return f"cannot connect to {target.host_header}: {e.strerror or e}"


async def _close(writer: asyncio.StreamWriter, clean: bool) -> None:
    """Close gracefully after a complete response; drop the connection otherwise (a capped body or
    a broken server is not worth reading to the end)."""
    if not clean:
        writer.transport.abort()
        return
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        writer.transport.abort()


def _location(headers: Headers) -> str | None:
    value = headers.get_all("location")
    if not value:
        return None
    raw = value[0].strip()
    try:  # servers send UTF-8 in Location although headers are Latin-1
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


async def request(
    method: str,
    url: str,
    *,
    ssl_context: ssl.SSLContext,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    follow_redirects: bool = False,
    max_body_bytes: int = 2 * 1024 * 1024,
    max_redirects: int = MAX_REDIRECTS,
) -> Response:
    """``method url`` on a fresh connection (every hop of a redirect chain too), the body read up to
    ``max_body_bytes``. User info in the URL goes as Basic auth unless ``headers`` has an
    Authorization. On a redirect, 303 (and 301/302 after POST) turn into GET without the body, and
    Authorization is dropped when the redirect leaves the origin (scheme, host, port; http→https
    on the same host counts as the same). Raises :class:`HttpError`."""
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    method = method.upper()
    sent = dict(headers or {})
    target = _target(url, "")
    where = ""
    for hop in range(max_redirects + 1):
        head = _head_bytes(method, target, sent, body)
        status, reason, got, data, capped, days = await _exchange(
            method, target, head, body, ssl_context, max_body_bytes, where, follow_redirects
        )
        location = _location(got) if follow_redirects and status in REDIRECT_CODES else None
        if location is None:
            return Response(status, reason, got, data, capped, url, days, hop)
        try:
            next_url = urljoin(url, location)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise ProtocolError(
                f"HTTP {status} with a Location that is not a URL: {_show(location.encode('latin-1', 'replace'))}"
            ) from None
        where = f"redirected to {redact_url(next_url)}: "
        next_target = _target(next_url, where)
        if not _same_origin(target, next_target):
            # credentials meant for one server never go to another (the new URL's own user info does)
            sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
        elif next_target.auth is None and target.auth is not None:
            next_target = replace(next_target, auth=target.auth)
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else method
            body = None
            sent = {k: v for k, v in sent.items() if k.lower() not in ("content-type", "content-encoding")}
        url, target = next_url, next_target
    raise TooManyRedirects(f"more than {max_redirects} redirects, the last to {redact_url(url)}")


def _same_origin(a: _Target, b: _Target) -> bool:
    if a.origin == b.origin:
        return True
    upgrade = (a.scheme, a.port, b.scheme, b.port) == ("http", 80, "https", 443)
    return upgrade and a.host.lower() == b.host.lower()
