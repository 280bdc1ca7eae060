"""The collector's HTTP side: a status page for people and JSON for scripts.

``/`` status page · ``/api/agents`` · ``/api/stats`` · ``/api/query?measurement=M&agent=A&since=10m&limit=N``
· ``/health``. Read-only, ``GET`` only (other methods: 405). No authentication yet: bind it to
loopback or a management network.

Hardening (the API faces browsers on the operators' desks and whatever else reaches the port):

- **Host allow-list** (DNS rebinding): a request whose ``Host`` is not allowed gets 421 with a JSON
  reason. Default: the bound address, ``localhost``, ``127.0.0.1`` and ``[::1]``, each with the port;
  ``allowed_hosts`` replaces it (an entry without a port allows that name on any port — behind a
  reverse proxy). A request without ``Host`` gets 400.
- **No thread per idle connection** (slowloris): one gate thread accepts connections and reads
  their request headers without blocking; a connection must send its whole header block
  (at most ``MAX_HEADER_BYTES``) within ``HEADER_TIMEOUT_S`` or it is closed. At most
  ``MAX_PENDING`` connections may be waiting for their headers; past that the oldest is dropped.
  Only complete requests reach a fixed pool of ``WORKERS`` threads (socket timeout
  ``SOCKET_TIMEOUT_S``), through a queue of ``MAX_QUEUED``; when that is full the request gets 503
  at once. The thread count never grows with the number of connections. One request per
  connection (``Connection: close``).
- **Headers**: ``Server: netwatch`` (no Python version), ``X-Content-Type-Options: nosniff``,
  ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, ``Cache-Control: no-store``, and a
  strict ``Content-Security-Policy`` (no scripts; the page's one inline style by hash).
- **Errors** are JSON ``{"error": ...}`` with 400 for bad or unknown parameters (a duration past
  ``MAX_SINCE_S``, a limit that is not a whole number in range), 404, 405, 421, 503; an internal
  failure is logged and answered 500 without a traceback.
- Every agent-supplied string on the status page is HTML-escaped.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import html
import io
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson

from probes.base import parse_duration
from probes.model import Sample

log = logging.getLogger("netwatch.collector.api")
MAX_QUERY_ROWS = 10_000
#: ``since`` further back than this is refused (400), not turned into an overflow
MAX_SINCE_S = 3660 * 86400.0
#: a connection must deliver its request line and headers within this many seconds
HEADER_TIMEOUT_S = 10.0
#: socket timeout while a worker answers (writing to a client that does not read)
SOCKET_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 16 * 1024
#: connections still sending their headers; past this the oldest is closed
MAX_PENDING = 256
#: threads answering complete requests, and how many complete requests may wait for one
WORKERS = 8
MAX_QUEUED = 32
SERVER_NAME = "netwatch"

_PARAMS = {
    "/": frozenset(),
    "/api/agents": frozenset(),
    "/api/stats": frozenset(),
    "/health": frozenset(),
    "/api/query": frozenset({"measurement", "agent", "since", "limit"}),
}


class QueryUnsupported(Exception):
    """The store behind the collector cannot answer queries (no SQLite store)."""


class CollectorView(Protocol):
    """All the API reads from the running collector."""

    def stats(self) -> dict[str, Any]: ...

    def agents(self) -> list[dict[str, Any]]: ...

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Sample]: ...


class BadRequest(ValueError):
    """A request the API refuses with 400 and this message."""


def _age(ns: int | None) -> str:
    if not ns:
        return "—"
    s = max(0.0, time.time() - ns / 1e9)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


_STYLE = (
    "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
    "padding:4px 8px}\ntr.offline td{background:#fdd} tr.online td{background:#efe}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
#: the page has no script, no images, no forms; its one inline style is allowed by hash
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def status_page(agents: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr class='{_e(a['status'])}'><td>{_e(a['site'])}</td><td>{_e(a['id'])}</td>"
        f"<td>{_e(a['status'])}</td><td>{_age(a['last_seen_ns'])}</td><td>{_e(a['batches'])}</td>"
        f"<td>{_e(a['samples'])}</td><td>{_e(a['version'])}</td><td>{_e(a['config_version'])}</td></tr>"
        for a in agents
    )
    rejected = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(stats.get("rejected", {}).items())) or "none / 无"
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>netwatch collector</title><style>{_STYLE}</style></head><body>
<h1>netwatch — collector 采集中心</h1>
<p>messages received 收到消息 {_e(stats.get("received_messages", 0))} · samples stored 已存样本 \
{_e(stats.get("stored_samples", 0))}
 · duplicates 重复 {_e(stats.get("duplicates", 0))} · rejected 拒收 {_e(stats.get("rejected_total", 0))} ({rejected})</p>
<h2>agents 采集节点 ({len(agents)})</h2>
<table><tr><th>site 站点</th><th>agent 节点</th><th>status 状态</th><th>last seen 最近</th><th>batches 批次</th>
<th>samples 样本</th><th>version 版本</th><th>config 配置</th></tr>{rows}</table>
<p>JSON: <a href="/api/agents">/api/agents</a> · <a href="/api/stats">/api/stats</a> · /api/query?measurement=…</p>
</body></html>"""


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


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_S
    server_version = SERVER_NAME
    sys_version = ""
    protocol_version = "HTTP/1.0"
    default_request_version = "HTTP/1.0"  # even a garbled request line gets a status line and headers

    def setup(self) -> None:
        super().setup()
        # the gate has already read the request line and headers; GET carries no body
        self.rfile = io.BytesIO(_pre.data)

    def version_string(self) -> str:
        return SERVER_NAME

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.client_address[0], *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, too many headers...) as JSON too
        self.close_connection = True
        self._json({"error": message or self.responses.get(code, ("error",))[0]}, code)

    def _send(self, code: int, body: bytes, ctype: str, extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", PAGE_CSP if ctype.startswith("text/html") else JSON_CSP)
        self.send_header("Connection", "close")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200, extra: Sequence[tuple[str, str]] = ()) -> None:
        self._send(code, orjson.dumps(obj), "application/json", extra)

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self.close_connection = True
        host = self.headers.get("Host")
        if host is None:
            self._json({"error": "a Host header is required"}, 400)
            return False
        if not self.server.host_allowed(host):
            self._json(
                {"error": "this Host is not served here (add it to api.allowed_hosts in the collector config)"},
                421,
            )
            return False
        if self.command != "GET":
            self._json({"error": "method not allowed: this API is read-only (GET)"}, 405, [("Allow", "GET")])
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        try:
            self._route()
        except BadRequest as e:
            self._json({"error": str(e)}, 400)
        except OSError as e:  # the client went away, or stopped reading: nothing to answer
            log.debug("API client %s: %s", self.client_address[0], e)
            self.close_connection = True
        except Exception:  # never a traceback to the client
            log.exception("API request %s failed", self.path[:200])
            self._json({"error": "internal error (see the collector's log)"}, 500)

    def _params(self, path: str, query: str) -> dict[str, str]:
        allowed = _PARAMS[path]
        try:
            pairs = parse_qs(query, keep_blank_values=True, strict_parsing=False, max_num_fields=10)
        except ValueError:
            raise BadRequest("too many query parameters") from None
        unknown = sorted(set(pairs) - allowed)
        if unknown:
            raise BadRequest(
                f"unknown parameter {unknown[0][:40]!r}"
                + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "; this path takes none")
            )
        for k, v in pairs.items():
            if len(v) > 1:
                raise BadRequest(f"parameter {k!r} given more than once")
        return {k: v[0] for k, v in pairs.items()}

    def _route(self) -> None:
        c = self.server.collector
        url = urlsplit(self.path)
        if url.path not in _PARAMS:
            self._json({"error": "not found"}, 404)
            return
        q = self._params(url.path, url.query)
        if url.path == "/":
            page = status_page(c.agents(), c.stats())
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif url.path == "/api/agents":
            self._json(c.agents())
        elif url.path == "/api/stats":
            self._json(c.stats())
        elif url.path == "/api/query":
            self._query(q)
        else:
            self._json({"ok": True, "broker_connected": bool(c.stats().get("connected"))})

    def _query(self, q: dict[str, str]) -> None:
        measurement = q.get("measurement", "")
        if not measurement:
            raise BadRequest("measurement is required")
        if len(measurement) > 200 or len(q.get("agent", "")) > 200:
            raise BadRequest("measurement and agent are at most 200 characters")
        try:
            since_s = parse_duration(q.get("since", "10m"))
        except ValueError as e:
            raise BadRequest(f"since: {e}") from None
        if since_s > MAX_SINCE_S:
            raise BadRequest(f"since: at most {MAX_SINCE_S / 86400:.0f}d")
        raw_limit = q.get("limit", str(MAX_QUERY_ROWS))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_QUERY_ROWS:
            raise BadRequest(f"limit: a whole number from 1 to {MAX_QUERY_ROWS}")
        since_ns = time.time_ns() - int(since_s * 1e9)
        try:
            rows = self.server.collector.query(
                measurement, agent=q.get("agent") or None, since_ns=since_ns, limit=int(raw_limit)
            )
        except QueryUnsupported as e:
            self._json({"error": str(e)}, 404)
            return
        self._json([s.to_dict() for s in rows])


class _Pre(threading.local):
    data: bytes = b""


_pre = _Pre()


class _Server(HTTPServer):
    """Binds and holds the listening socket and the handler machinery; ``ApiServer`` runs the loops."""

    collector: CollectorView
    allowed: dict[str, set[str | None]]
    request_queue_size = 128

    def host_allowed(self, host: str) -> bool:
        key = _host_key(host)
        if key is None:
            return False
        ports = self.allowed.get(key[0])
        return ports is not None and (None in ports or key[1] in ports)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _raw_reply(status: str, error: str, extra: str = "") -> bytes:
    """A whole response written by the gate itself, before any handler runs."""
    body = orjson.dumps({"error": error})
    head = (
        f"HTTP/1.0 {status}\r\nServer: {SERVER_NAME}\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_BUSY = _raw_reply("503 Service Unavailable", "busy: try again in a moment", "Retry-After: 1\r\n")
_TOO_BIG = _raw_reply("431 Request Header Fields Too Large", "request headers too long")


class _Conn:
    __slots__ = ("addr", "buf", "deadline", "sock")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float) -> None:
        self.sock, self.addr, self.deadline, self.buf = sock, addr, deadline, bytearray()


class ApiServer:
    """The HTTP API on ``host:port`` (port 0: any free one). See the module docstring for the limits."""

    def __init__(
        self, collector: CollectorView, host: str, port: int, allowed_hosts: Sequence[str] | None = None
    ) -> None:
        cls = _Server6 if ":" in host else _Server
        self.httpd = cls((host.strip("[]"), port), _Handler)
        self.httpd.collector = collector
        bound_port = self.httpd.server_address[1]
        entries = list(allowed_hosts) if allowed_hosts is not None else default_allowed_hosts(host, bound_port)
        allowed: dict[str, set[str | None]] = {}
        for entry in entries:
            key = _host_key(entry)
            if key is None:
                raise ValueError(f"api.allowed_hosts: {entry!r} is not a host name, host:port or [IPv6]:port")
            allowed.setdefault(key[0], set()).add(key[1])
        self.httpd.allowed = allowed
        self.allowed_hosts = entries
        self.httpd.socket.setblocking(False)
        self._work: queue.Queue[_Conn | None] = queue.Queue(MAX_QUEUED)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads = [threading.Thread(target=self._gate, name="collector-api", daemon=True)] + [
            threading.Thread(target=self._worker, name=f"collector-api-{i}", daemon=True) for i in range(WORKERS)
        ]
        self.refused_busy = 0
        self.timed_out = 0

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://[{name}]:{port}/" if ":" in name else f"http://{name}:{port}/"

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        for _ in range(WORKERS):
            try:
                self._work.put(None, timeout=1.0)
            except queue.Full:
                break
        for t in self._threads:
            if t.is_alive():
                t.join(5.0)
        self.httpd.server_close()
        self._wake_r.close()
        self._wake_w.close()

    # ---------------------------------------------------------------- the gate: accept, read headers

    def _gate(self) -> None:
        sel = selectors.DefaultSelector()
        listen = self.httpd.socket
        sel.register(listen, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        pending: collections.OrderedDict[int, _Conn] = collections.OrderedDict()

        def drop(conn: _Conn, reply: bytes = b"") -> None:
            pending.pop(conn.sock.fileno(), None)
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(conn.sock)
            if reply:
                with contextlib.suppress(OSError):
                    conn.sock.send(reply)
            conn.sock.close()

        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.5):
                    if key.fileobj is self._wake_r:
                        continue
                    if key.fileobj is listen:
                        for _ in range(64):  # accept what is waiting, a bounded number per pass
                            try:
                                sock, addr = listen.accept()
                            except (BlockingIOError, InterruptedError):
                                break
                            except OSError as e:
                                log.warning("API accept failed: %s", e)
                                break
                            if len(pending) >= MAX_PENDING:
                                _, oldest = next(iter(pending.items()))
                                drop(oldest)
                            sock.setblocking(False)
                            conn = _Conn(sock, addr, time.monotonic() + HEADER_TIMEOUT_S)
                            pending[sock.fileno()] = conn
                            sel.register(sock, selectors.EVENT_READ, conn)
                        continue
                    conn = key.data
                    try:
                        chunk = conn.sock.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        drop(conn)
                        continue
                    if not chunk:
                        drop(conn)
                        continue
                    conn.buf += chunk
                    if b"\r\n\r\n" in conn.buf or b"\n\n" in conn.buf:
                        pending.pop(conn.sock.fileno(), None)
                        sel.unregister(conn.sock)
                        try:
                            self._work.put_nowait(conn)
                        except queue.Full:
                            self.refused_busy += 1
                            drop(conn, _BUSY)
                    elif len(conn.buf) > MAX_HEADER_BYTES:
                        drop(conn, _TOO_BIG)
                now = time.monotonic()
                while pending:
                    _, oldest = next(iter(pending.items()))
                    if oldest.deadline > now:
                        break
                    self.timed_out += 1
                    drop(oldest)
        except Exception:
            log.exception("API gate failed; the HTTP API is down")
        finally:
            for conn in list(pending.values()):
                drop(conn)
            sel.close()

    # ------------------------------------------------------------------ workers: answer one request

    def _worker(self) -> None:
        while True:
            conn = self._work.get()
            if conn is None:
                return
            if self._stop.is_set():
                conn.sock.close()
                continue
            try:
                conn.sock.setblocking(True)
                _pre.data = bytes(conn.buf)
                self.httpd.finish_request(conn.sock, conn.addr)
            except Exception as e:  # a client gone mid-answer, a timeout: its problem, not ours
                log.debug("API connection from %s: %s", conn.addr, e)
            finally:
                _pre.data = b""
                self.httpd.shutdown_request(conn.sock)
