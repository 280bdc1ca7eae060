"""The collector's HTTP API against a hostile web user: a real ``ApiServer`` on 127.0.0.1:0 with a
small fake collector and a real user database (a viewer's API token for the JSON routes), spoken to
over raw sockets."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest
from argon2 import PasswordHasher

from collector import api
from collector.api import ApiServer
from collector.api_app import Backend
from collector.users import LocalAdmin, UserDB
from probes.model import Sample

HOSTILE = "<script>alert(1)</script>\"'&"


class FakeCollector:
    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.queries: list[tuple[str, str | None, int, int]] = []

    def stats(self) -> dict[str, Any]:
        return {"received_messages": 3, "stored_samples": 5, "rejected": {HOSTILE: 1}, "connected": True}

    def agents(self) -> list[dict[str, Any]]:
        self.hold.wait(10.0)
        return [
            {
                "id": HOSTILE,
                "site": "<img src=x onerror=alert(2)>",
                "status": "online' onmouseover='x",
                "last_seen_ns": time.time_ns(),
                "batches": 1,
                "samples": 2,
                "version": "</td><a href='https://evil.example'>x</a>",
                "config_version": "abc",
            }
        ]

    def unknown_agents(self) -> list[dict[str, Any]]:
        return []

    def sites(self) -> list[dict[str, Any]]:
        return []

    def latest(self) -> dict[str, dict[str, dict[str, Any]]]:
        reading = {"value": 23.5, "time_ns": time.time_ns(), "series": HOSTILE}
        return {"<img src=x onerror=alert(2)>": {"temperature_c": reading, "uplink_loss_pct": reading}}

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Sample]:
        self.queries.append((measurement, agent, since_ns, limit))
        return [Sample("icmp", {"site": "s", "agent": "a"}, {"rtt_avg_ms": 1.5}, time.time_ns())]


#: a viewer's API token, set by the ``backend`` fixture and sent by ``get``
TOKEN = ""


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    global TOKEN
    db = UserDB(tmp_path / "users.db", password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    db.add_user(LocalAdmin("t"), "vera", "viewer", "Viewer-pass-123")
    TOKEN = db.create_token(LocalAdmin("t"), "vera", "t", 3600).secret
    yield Backend(users=db)
    db.close()


@pytest.fixture
def server(backend: Backend) -> Iterator[tuple[ApiServer, FakeCollector]]:
    fake = FakeCollector()
    srv = ApiServer(fake, "127.0.0.1", 0, backend=backend)
    srv.start()
    yield srv, fake
    fake.hold.set()
    srv.stop()


def port_of(srv: ApiServer) -> int:
    return srv.port


def raw(port: int, data: bytes, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``data``, read to the end; the status code, headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        got = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return code, headers, body


def get(
    port: int, path: str, host: str | None = None, method: str = "GET", auth: bool = True, timeout_s: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    h = f"Host: {host if host is not None else f'127.0.0.1:{port}'}\r\n" if host != "" else ""
    a = f"Authorization: Bearer {TOKEN}\r\n" if auth and TOKEN else ""
    return raw(port, f"{method} {path} HTTP/1.1\r\n{h}{a}Connection: close\r\n\r\n".encode(), timeout_s)


def still_open(s: socket.socket) -> bool:
    """The server has not closed this connection (nothing to read yet, no end of stream)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        s.setblocking(True)


def test_host_allow_list_refuses_rebinding(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, _ = server
    port = port_of(srv)
    for ok in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert get(port, "/api/stats", ok)[0] == 200, ok
    for bad in (f"evil.example:{port}", "evil.example", f"localhost:{port + 1}", f"127.0.0.1.evil.example:{port}"):
        code, headers, body = get(port, "/api/stats", bad)
        assert code == 421, bad
        assert headers["content-type"] == "application/json"
        assert "Host" in orjson.loads(body)["error"]
    code, _, body = get(port, "/api/stats", "")
    assert code == 400 and "Host" in orjson.loads(body)["error"]


def test_configured_allowed_hosts(backend: Backend) -> None:
    fake = FakeCollector()
    srv = ApiServer(fake, "127.0.0.1", 0, allowed_hosts=["netwatch.city.example", "ops.example:9000"], backend=backend)
    srv.start()
    try:
        port = port_of(srv)
        assert get(port, "/health", "netwatch.city.example")[0] == 200
        assert get(port, "/health", "netwatch.city.example:443")[0] == 200  # no port given: any
        assert get(port, "/health", "ops.example:9000")[0] == 200
        assert get(port, "/health", "ops.example:9001")[0] == 421
        assert get(port, "/health", f"127.0.0.1:{port}")[0] == 421  # the list replaces the default
    finally:
        srv.stop()
    with pytest.raises(ValueError, match="allowed_hosts"):
        ApiServer(fake, "127.0.0.1", 0, allowed_hosts=["http://x/"])


def test_half_sent_requests_do_not_starve_the_server(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, _ = server
    port = port_of(srv)
    before = threading.active_count()
    hogs: list[socket.socket] = []
    try:
        for _ in range(150):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(f"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode())
            hogs.append(s)
        time.sleep(0.5)
        # counted, not timed: the answer came while every half-sent one was still held open (the
        # header deadline, 10 s, had cut none), so it did not wait for them; the client waits up to 30 s
        code, _, body = get(port, "/api/stats", timeout_s=30)
        assert code == 200 and orjson.loads(body)["stored_samples"] == 5
        assert srv.timed_out == 0, "the normal request was answered only after half-sent ones were cut off"
        assert sum(still_open(s) for s in hogs) == len(hogs)
        # the server's threads do not grow with connections (stdlib ThreadingHTTPServer: +150)
        assert threading.active_count() <= before + 2
    finally:
        for s in hogs:
            s.close()


def test_half_sent_request_is_cut_off(server: tuple[ApiServer, FakeCollector], monkeypatch: pytest.MonkeyPatch) -> None:
    srv, _ = server
    monkeypatch.setattr(api, "HEADER_TIMEOUT_S", 0.5)
    with socket.create_connection(("127.0.0.1", port_of(srv)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert s.recv(100) == b""  # closed by the server (within the socket's 5 s)
    assert srv.timed_out == 1  # by the header deadline, counted once


def test_busy_server_answers_503_at_once(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, fake = server
    port = port_of(srv)
    fake.hold.clear()  # the page's agents() call blocks every worker
    socks = []
    try:
        for n in (api.WORKERS, api.MAX_QUEUED):
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
                socks.append(s)
            deadline = time.monotonic() + 5
            while srv.in_flight != len(socks) and time.monotonic() < deadline:
                time.sleep(0.05)
        assert srv.refused_busy == 0
        code, headers, body = get(port, "/")
        assert code == 503 and headers["retry-after"] == "1" and "busy" in orjson.loads(body)["error"]
        # at once, not queued: answered while every worker is still held (a queued one could not be)
        assert srv.refused_busy == 1 and srv.in_flight == len(socks)
    finally:
        fake.hold.set()
        for s in socks:
            s.close()
    deadline = time.monotonic() + 5  # the held requests finish; the server takes new ones again
    while srv.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get(port, "/api/stats")[0] == 200


@pytest.mark.parametrize(
    "query",
    [
        "measurement=icmp&since=99999999999d",
        "measurement=icmp&since=soon",
        "measurement=icmp&since=-5m",
        "measurement=icmp&limit=abc",
        "measurement=icmp&limit=0",
        "measurement=icmp&limit=99999999999999999999",
        "measurement=icmp&colour=red",
        "measurement=icmp&measurement=http",
        "measurement=",
        "agent=a",
        "&".join(f"p{i}=1" for i in range(50)),
    ],
)
def test_bad_query_parameters_are_400_json(server: tuple[ApiServer, FakeCollector], query: str) -> None:
    srv, fake = server
    code, headers, body = get(port_of(srv), f"/api/query?{query}")
    assert code == 400, body
    assert headers["content-type"] == "application/json"
    assert isinstance(orjson.loads(body)["error"], str)
    assert b"Traceback" not in body
    assert fake.queries == []


def test_good_query_and_unknown_params_elsewhere(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, fake = server
    port = port_of(srv)
    code, _, body = get(port, "/api/query?measurement=icmp&agent=a&since=2h&limit=50")
    assert code == 200 and orjson.loads(body)[0]["measurement"] == "icmp"
    assert fake.queries[0][0:2] == ("icmp", "a") and fake.queries[0][3] == 50
    assert get(port, "/api/stats?x=1")[0] == 400
    assert get(port, "/nope")[0] == 404


def test_headers_and_no_version_banner(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, _ = server
    port = port_of(srv)
    answers = [
        get(port, "/"),
        get(port, "/api/agents"),
        get(port, "/api/stats"),
        get(port, "/health"),
        get(port, "/nope"),
        get(port, "/api/query?since=1d"),
        get(port, "/", "evil.example"),
        get(port, "/", method="POST"),
        get(port, "/", method="DELETE"),
        get(port, "/", method="BREW"),
        raw(port, b"garbage\r\n\r\n"),
    ]
    for code, headers, body in answers:
        assert headers["server"] == "netwatch", (code, headers)
        blob = (str(headers) + body.decode()).lower()
        assert "python" not in blob and "basehttp" not in blob, (code, headers)
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        # the page's own forms need their Origin sent (the cross-origin check); nothing goes elsewhere
        page = headers["content-type"].startswith("text/html")
        assert headers["referrer-policy"] == ("same-origin" if page else "no-referrer"), (code, headers)
        assert headers["cache-control"] == "no-store"
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        if code != 200 or headers["content-type"] == "application/json":
            assert headers["content-type"] == "application/json", (code, headers)
            orjson.loads(body)
    assert [a[0] for a in answers] == [200, 200, 200, 200, 404, 400, 421, 405, 405, 405, 400]
    assert answers[7][1]["allow"] == "GET"
    page_csp = answers[0][1]["content-security-policy"]
    directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in page_csp.split(";"))  # type: ignore[misc]
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'", page_csp
    assert "'unsafe-inline'" not in page_csp and "'unsafe-eval'" not in page_csp and "*" not in page_csp
    # and the page keeps to it: its one script and one stylesheet are files, nothing inline
    page = answers[0][2].decode()
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/page.js" defer>']
    assert not [a for a in _attributes(page) if a == "style" or a.startswith("on")] and "<style" not in page


def _attributes(page: str) -> list[str]:
    """Every attribute name on every tag, as a browser's parser sees them."""
    names: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            names.extend(k for k, _ in attrs)

    P().feed(page)
    assert "id" in names and "class" in names  # it did parse
    return names


def test_static_files_are_only_the_page_assets(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, _ = server
    port = port_of(srv)
    code, headers, body = get(port, "/static/page.js", auth=False)
    assert code == 200 and headers["content-type"].startswith("text/javascript") and b"data-live" in body
    code, headers, body = get(port, "/static/page.css", auth=False)
    assert code == 200 and headers["content-type"].startswith("text/css") and b".st-critical" in body
    for bad in ("/static/api_page.py", "/static/..%2fapi_page.py", "/static/%2e%2e/users.py", "/static/"):
        assert get(port, bad, auth=False)[0] == 404, bad


def test_status_page_escapes_agent_strings(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, _ = server
    code, _, body = get(port_of(srv), "/")
    page = body.decode()
    assert code == 200
    for bad in ("<script>", "<img", "<a href='https", "onmouseover='", "</td><a"):
        assert bad not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in page


def test_slow_body_is_cut_off(server: tuple[ApiServer, FakeCollector], monkeypatch: pytest.MonkeyPatch) -> None:
    srv, _ = server
    monkeypatch.setattr(api, "HEADER_TIMEOUT_S", 0.5)
    port = port_of(srv)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            'Content-Length: 100\r\n\r\n{"name"'.encode()
        )
        got = b""
        while chunk := s.recv(4096):  # to the server's close (within the socket's 5 s)
            got += chunk
    assert srv.hardening.slow_bodies == 1 and srv.in_flight == 0
    assert b"Traceback" not in got


def test_oversized_and_unsized_bodies(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, _ = server
    port = port_of(srv)
    code, headers, body = raw(
        # Connection: close, or the server keeps the connection open for its keep-alive after the 413
        port,
        f"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n".encode(),
    )
    assert code == 413 and "too large" in orjson.loads(body)["error"] and headers["server"] == "netwatch"
    code, _, body = raw(
        port,
        f"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        "0\r\n\r\n".encode(),
    )
    assert code == 411 and "Content-Length" in orjson.loads(body)["error"]


def test_logged_out_page_is_the_login_form(server: tuple[ApiServer, FakeCollector]) -> None:
    srv, _ = server
    port = port_of(srv)
    code, _, body = get(port, "/", auth=False)
    assert code == 200 and b'action="/login"' in body and b"town" not in body and b"&lt;script" not in body
    for path in ("/api/agents", "/api/stats", "/api/query?measurement=icmp"):
        code, headers, body = get(port, path, auth=False)
        assert code == 401 and "log in" in orjson.loads(body)["error"] and headers["server"] == "netwatch"
    code, _, body = get(port, "/health", auth=False)
    assert code == 200 and orjson.loads(body) == {"ok": True, "broker_connected": True}
    code, _, body = get(port, "/api/openapi.json", auth=False)
    assert code == 200 and orjson.loads(body)["openapi"].startswith("3.")
    for docs in ("/docs", "/redoc", "/api/docs"):
        assert get(port, docs, auth=False)[0] == 404  # no CDN-loaded Swagger page
