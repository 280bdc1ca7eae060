"""The collector's HTTP side: a status page for people and a JSON API (described in OpenAPI at
``/api/openapi.json``) for scripts, with users, roles and sessions (collector/users.py).

The routes, their permissions and the login flow are in collector/api_app.py; this module runs them
(FastAPI on uvicorn, in a thread of the collector) and keeps the hardening — the API faces browsers
on the operators' desks and whatever else reaches the port:

- **Host allow-list** (DNS rebinding): a request whose ``Host`` is not allowed gets 421 with a JSON
  reason. Default: the bound address, ``localhost``, ``127.0.0.1`` and ``[::1]``, each with the port;
  ``allowed_hosts`` replaces it (an entry without a port allows that name on any port — behind a
  reverse proxy). A request without ``Host`` gets 400.
- **Slow clients** (slowloris): uvicorn has no deadline for request headers, so each connection gets
  one here: the whole header block (at most ``MAX_HEADER_BYTES``, h11's limit) within
  ``HEADER_TIMEOUT_S`` of the connection opening or of the previous response, or it is closed. At
  most ``MAX_PENDING`` connections may be waiting for their headers; past that the oldest is closed.
  Idle keep-alive connections close after ``KEEP_ALIVE_S``. Connections cost no thread (asyncio).
- A request body (at most ``MAX_BODY_BYTES``, with a ``Content-Length``) must arrive within
  ``HEADER_TIMEOUT_S`` too.
- **Bounded work**: blocking handlers run on at most ``WORKERS`` threads; at most ``WORKERS +
  MAX_QUEUED`` requests are in hand at once and the next gets 503 (``Retry-After: 1``) at once.
- **Headers** on every answer, errors included: ``Server: netwatch`` (no version),
  ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``
  (``same-origin`` on HTML pages: with ``no-referrer`` a browser sends ``Origin: null`` with the
  page's own form posts, and the cross-origin check would refuse them; other sites still get none),
  ``Cache-Control: no-store``, a strict ``Content-Security-Policy`` (scripts, styles, images and
  fetches only from the collector itself — the page's one script and one stylesheet under
  ``/static/``, nothing inline; forms only to itself), and ``Strict-Transport-Security`` over HTTPS.
- **Errors** are JSON ``{"error": ...}``: 400 for bad or unknown parameters and for requests h11
  cannot parse, 401, 403, 404, 405, 421, 503; an internal failure is logged and answered 500
  without a traceback.
- **HTTPS** when ``tls_cert_file`` and ``tls_key_file`` are given (the session cookie is then
  ``Secure``).
- Every agent-supplied string on the status page is HTML-escaped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import h11
import orjson
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from collector.api_app import Backend, build_app
from collector.api_page import JSON_CSP, PAGE_CSP, CollectorView, QueryUnsupported

__all__ = ["ApiServer", "CollectorView", "QueryUnsupported"]

log = logging.getLogger("netwatch.collector.api")
#: a connection must deliver its request line and headers within this many seconds
HEADER_TIMEOUT_S = 10.0
#: an idle keep-alive connection is closed after this many seconds
KEEP_ALIVE_S = 5.0
MAX_HEADER_BYTES = 16 * 1024
#: request bodies (logins, acks, pushes) are small; a larger one is refused before it is read
MAX_BODY_BYTES = 64 * 1024
#: connections still sending their headers; past this the oldest is closed
MAX_PENDING = 256
#: threads answering requests, and how many more requests may wait for one
WORKERS = 8
MAX_QUEUED = 32
SERVER_NAME = "netwatch"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- Host allow-list ----------------------------------------------------------------------------


def _host_key(value: str) -> tuple[str, str | None] | None:
    """``"Example.org:8080"`` → ``("example.org", "8080")``; ``"[::1]"`` → ``("[::1]", None)``;
    None when it is not a plausible Host value."""
    v = value.strip().lower()
    if not v or any(c.isspace() or c in "/\\@?#" for c in v):
        return None
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[: end + 1], v[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] or None
    elif v.count(":") > 1:  # a bare IPv6 address in the allow-list
        name, port = f"[{v}]", None
    else:
        name, _, p = v.partition(":")
        port = p or None
    if port is not None and not port.isdigit():
        return None
    return name, port


def default_allowed_hosts(host: str, port: int) -> list[str]:
    names = ["localhost", "127.0.0.1", "[::1]"]
    bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if bound and bound not in names and bound not in ("0.0.0.0", "[::]"):
        names.insert(0, bound)
    return [f"{n}:{port}" for n in names]


def parse_allowed_hosts(entries: Sequence[str]) -> dict[str, set[str | None]]:
    allowed: dict[str, set[str | None]] = {}
    for entry in entries:
        key = _host_key(entry)
        if key is None:
            raise ValueError(f"api.allowed_hosts: {entry!r} is not a host name, host:port or [IPv6]:port")
        allowed.setdefault(key[0], set()).add(key[1])
    return allowed


def host_allowed(allowed: dict[str, set[str | None]], host: str) -> bool:
    key = _host_key(host)
    if key is None:
        return False
    ports = allowed.get(key[0])
    return ports is not None and (None in ports or key[1] in ports)


# --- ASGI middlewares: headers, Host, load ------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return bytes(v).decode("latin-1")
    return None


async def send_json(send: Send, status: int, obj: object, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = orjson.dumps(obj)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def security_headers(ctype: bytes, https: bool, page_csp: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """``page_csp``: an HTML page's own policy (the report's style hash), kept instead of the status page's."""
    page = ctype.startswith(b"text/html")
    csp = (page_csp or PAGE_CSP.encode()) if page else JSON_CSP.encode()
    out = [
        (b"server", SERVER_NAME.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin" if page else b"no-referrer"),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", csp),
    ]
    if https:
        out.append((b"strict-transport-security", b"max-age=31536000"))
    return out


_OURS = {k for k, _ in security_headers(b"", True)}


class Hardening:
    """The outermost layer: security headers on every answer, the Host allow-list, and the bound on
    requests in hand (503 past it)."""

    def __init__(self, app: ASGIApp, allowed: dict[str, set[str | None]]) -> None:
        self.app = app
        self.allowed = allowed
        self.in_flight = 0
        self.refused_busy = 0
        self.slow_bodies = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
                ctype = next((v for k, v in headers if k == b"content-type"), b"")
                own_csp = next((v for k, v in headers if k == b"content-security-policy"), None)
                headers = [(k, v) for k, v in headers if k not in _OURS] + security_headers(ctype, https, own_csp)
                message = {**message, "headers": headers}
            await send(message)

        host = _header(scope, b"host")
        if host is None:
            await send_json(send_with_headers, 400, {"error": "a Host header is required"})
            return
        if not host_allowed(self.allowed, host):
            await send_json(
                send_with_headers,
                421,
                {"error": "this Host is not served here (add it to api.allowed_hosts in the collector config)"},
            )
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            # (no Connection: close here: closing with the body unread resets the connection before
            # the client has read this answer; uvicorn drops the connection when the body turns out
            # not to be a request)
            await send_json(send_with_headers, 413, {"error": f"body too large (at most {MAX_BODY_BYTES} bytes)"})
            return
        if length is None and _header(scope, b"transfer-encoding") is not None:
            await send_json(send_with_headers, 411, {"error": "send the body with a Content-Length"})
            return
        if self.in_flight >= WORKERS + MAX_QUEUED:
            self.refused_busy += 1
            await send_json(send_with_headers, 503, {"error": "busy: try again in a moment"}, [(b"retry-after", b"1")])
            return

        async def receive_in_time() -> Message:
            # a body trickled in byte by byte would hold a slot for ever: it has the header deadline too
            try:
                return await asyncio.wait_for(receive(), sys.modules[__name__].HEADER_TIMEOUT_S)
            except TimeoutError:
                self.slow_bodies += 1
                return {"type": "http.disconnect"}

        self.in_flight += 1
        try:
            await self.app(scope, receive_in_time, send_with_headers)
        finally:
            self.in_flight -= 1


# --- the connection: header deadline, pending cap, JSON 400 --------------------------------------


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers and a cap on connections waiting
    for theirs; h11's refusals answered in JSON with our headers."""

    pending: collections.OrderedDict[int, _Protocol]  # per server, set by ApiServer
    timed_out: list[int]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._waiting_for = self.cycle
        self.pending[id(self)] = self
        while len(self.pending) > MAX_PENDING:
            _, oldest = self.pending.popitem(last=False)
            oldest._disarm()
            oldest.transport.close()
        # read at each connection, so a test may shorten it
        timeout = sys.modules[__name__].HEADER_TIMEOUT_S
        self._deadline = self.loop.call_later(timeout, self._late)

    def _disarm(self) -> None:
        self.pending.pop(id(self), None)
        if getattr(self, "_deadline", None) is not None:
            assert self._deadline is not None
            self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        self._deadline = None
        self.pending.pop(id(self), None)
        self.timed_out[0] += 1
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._waiting_for:
            self._disarm()  # a whole request line and headers came in

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers have the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        body = orjson.dumps({"error": "bad request: not HTTP/1.x as this server reads it (a Host header is required)"})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *security_headers(b"application/json", self.scheme == "https"),
        ]
        try:
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body)):
                self.transport.write(self.conn.send(event) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # h11 could not even read a version: write it ourselves
            head = b"HTTP/1.1 400 Bad Request\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            self.transport.write(head + b"\r\n" + body)
        self.transport.close()


class ApiServer:
    """The HTTP API on ``host:port`` (port 0: any free one), in a thread. See the module docstring
    for the limits; ``backend`` holds users, audit, alerts and control (collector/api_app.py)."""

    def __init__(
        self,
        collector: CollectorView,
        host: str,
        port: int,
        allowed_hosts: Sequence[str] | None = None,
        *,
        backend: Any = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("api: give both tls_cert_file and tls_key_file, or neither")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host.strip("[]"), port))
        self.sock.listen(128)
        self.sock.setblocking(False)
        bound_port = int(self.sock.getsockname()[1])
        entries = list(allowed_hosts) if allowed_hosts is not None else default_allowed_hosts(host, bound_port)
        try:
            allowed = parse_allowed_hosts(entries)
        except ValueError:
            self.sock.close()
            raise
        self.allowed_hosts = entries
        self.https = tls_cert_file is not None
        self.backend: Backend = backend if backend is not None else Backend()
        self.app = build_app(collector, self.backend, secure_cookies=self.https)
        self.hardening = Hardening(self.app, allowed)
        self._timed_out = [0]
        protocol = type(
            "_ServerProtocol", (_Protocol,), {"pending": collections.OrderedDict(), "timed_out": self._timed_out}
        )
        config = uvicorn.Config(
            self.hardening,
            http=protocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=True,
            timeout_keep_alive=int(KEEP_ALIVE_S),
            timeout_graceful_shutdown=5,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            ssl_certfile=str(tls_cert_file) if tls_cert_file is not None else None,
            ssl_keyfile=str(tls_key_file) if tls_key_file is not None else None,
            proxy_headers=False,  # the client address is the peer's: an X-Forwarded-For is not trusted
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="collector-api", daemon=True)

    @property
    def refused_busy(self) -> int:
        return self.hardening.refused_busy

    @property
    def in_flight(self) -> int:
        return self.hardening.in_flight

    @property
    def timed_out(self) -> int:
        return self._timed_out[0]

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        name = str(self.sock.getsockname()[0])
        scheme = "https" if self.https else "http"
        return f"{scheme}://[{name}]:{self.port}/" if ":" in name else f"{scheme}://{name}:{self.port}/"

    def _run(self) -> None:
        async def serve() -> None:
            import anyio.to_thread

            # blocking handlers (SQLite, argon2, the broker) share this many threads
            anyio.to_thread.current_default_thread_limiter().total_tokens = WORKERS
            await self.server.serve(sockets=[self.sock])

        try:
            asyncio.run(serve())
        except Exception:
            log.exception("the HTTP API stopped")

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            raise RuntimeError("the HTTP API did not start (see the log)")

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10.0)
        with contextlib.suppress(OSError):
            self.sock.close()
