"""The http probe's own HTTP/1.1 client against real loopback servers that send bytes written out
here by hand: framing (chunked, Content-Length, until close, no body), gzip/deflate, redirects and
what each hop received, TLS days of the final connection, and hostile replies turned into errors."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from probe_certs import CertPair

from probes.http import client
from probes.http.client import HttpError, TooManyRedirects, request
from probes.http.config import HttpConfig
from probes.http.probe import HttpProbe, fingerprint_url
from probes.tls import client_context

NO_VERIFY = client_context(verify=False)
PAGE = "<html><body>县政府 County Government 通知</body></html>".encode()


@dataclass
class Reply:
    """Bytes a connection gets, as they go on the wire."""

    data: bytes
    #: keep the connection open afterwards: a client that waits for more bytes than it should hangs
    hold_open: bool = False


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Scripted:
    """A loopback server answering each request path with its scripted reply; records every request."""

    routes: dict[str, Reply] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    base: str = ""
    _open: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ")
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(method, target, headers, body))
            reply = self.routes.get(
                target.partition("?")[0], Reply(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            )
            writer.write(reply.data)
            await writer.drain()
            if reply.hold_open:
                return
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # clients that refuse a certificate or hang up early are the point of some tests
        writer.close()


@dataclass
class Running:
    script: Scripted
    server: asyncio.Server


async def _start(script: Scripted, host: str = "127.0.0.1", tls: CertPair | None = None) -> Running:
    ctx = None
    if tls is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(tls.cert, tls.key)
    server = await asyncio.start_server(script.handle, host, 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    script.base = f"{'https' if tls else 'http'}://{host}:{port}"
    return Running(script, server)


async def _stop(run: Running) -> None:
    for w in run.script._open:
        w.transport.abort()
    run.server.close()
    await run.server.wait_closed()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[Scripted]]]:
    """``await servers(host=..., tls=...)`` -> a started server, stopped after the test."""
    started: list[Running] = []

    async def start(host: str = "127.0.0.1", tls: CertPair | None = None) -> Scripted:
        run = await _start(Scripted(), host, tls)
        started.append(run)
        return run.script

    yield start
    for run in started:
        await _stop(run)


@pytest.fixture
async def web(servers: Callable[..., Awaitable[Scripted]]) -> Scripted:
    return await servers()


def ok(body: bytes, *headers: str) -> Reply:
    head = "".join(f"{h}\r\n" for h in headers)
    return Reply(f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)


async def get(url: str, method: str = "GET", **kw: Any) -> client.Response:
    async with asyncio.timeout(3):
        return await request(method, url, ssl_context=NO_VERIFY, **kw)


async def failure(url: str, **kw: Any) -> str:
    with pytest.raises(HttpError) as e:
        await get(url, **kw)
    return str(e.value)


# --- framing ------------------------------------------------------------------------------------------


async def test_chunked_body_with_extensions_and_trailers(web: Scripted) -> None:
    web.routes["/c"] = Reply(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        b"5\r\nhello\r\n"
        b"7;name=value\r\n, chunk\r\n"
        b"1A\r\ned world, twenty-six bytes\r\n"
        b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
        hold_open=True,  # the zero chunk ends the body, not the connection
    )
    resp = await get(web.base + "/c")
    assert resp.body == b"hello, chunked world, twenty-six bytes"
    assert resp.status_code == 200 and not resp.capped


async def test_chunk_size_line_that_is_not_hex_is_an_error(web: Scripted) -> None:
    web.routes["/bad"] = Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    assert "bad chunk size line 'zz'" in await failure(web.base + "/bad")
    # a chunk with more data than its size line says
    web.routes["/long"] = Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n")
    assert "chunk data longer than its size line says" in await failure(web.base + "/long")
    # the connection closes inside a chunk
    web.routes["/cut"] = Reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhello")
    assert "in the middle of a chunk" in await failure(web.base + "/cut")


async def test_body_until_close_without_length(web: Scripted) -> None:
    web.routes["/old"] = Reply(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + PAGE)
    resp = await get(web.base + "/old")
    assert resp.body == PAGE and resp.charset is None


async def test_head_204_and_304_have_no_body_even_with_the_connection_left_open(web: Scripted) -> None:
    # Content-Length on a HEAD answer is the GET body's length; no body follows. The server keeps
    # the connection open: a client waiting for those 5000 bytes would hang to the timeout.
    # (its Content-Encoding names a coding the client cannot decode: no body, so no matter)
    web.routes["/page"] = Reply(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nContent-Encoding: br\r\n\r\n", hold_open=True
    )
    web.routes["/nothing"] = Reply(b"HTTP/1.1 204 No Content\r\n\r\n", hold_open=True)
    web.routes["/same"] = Reply(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n', hold_open=True)
    head = await get(web.base + "/page", method="HEAD")
    assert (head.status_code, head.body, head.headers.get("content-length")) == (200, b"", "5000")
    assert web.received[-1].method == "HEAD"
    for path, code in (("/nothing", 204), ("/same", 304)):
        resp = await get(web.base + path)
        assert (resp.status_code, resp.body) == (code, b"")


async def test_body_is_read_up_to_the_cap_and_no_further(web: Scripted) -> None:
    big = bytes(range(256)) * 400  # 102400 bytes
    web.routes["/big"] = ok(big)
    web.routes["/stream"] = Reply(b"HTTP/1.1 200 OK\r\n\r\n" + big)
    for path in ("/big", "/stream"):
        resp = await get(web.base + path, max_body_bytes=1000)
        assert resp.body == big[:1000] and resp.capped
    resp = await get(web.base + "/big", max_body_bytes=len(big))
    assert resp.body == big and not resp.capped


async def test_content_length_longer_than_what_arrives_is_a_truncated_body(web: Scripted) -> None:
    web.routes["/cut"] = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    text = await failure(web.base + "/cut")
    assert "the connection closed after 10 of 100 body bytes (Content-Length): body cut short" in text
    # ...unless the cap was reached first: what was asked for did arrive
    assert (await get(web.base + "/cut", max_body_bytes=10)).body == b"0123456789"


async def test_interim_responses_are_skipped(web: Scripted) -> None:
    web.routes["/hint"] = Reply(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done").data
    )
    resp = await get(web.base + "/hint")
    assert (resp.status_code, resp.body) == (200, b"done")


async def test_folded_and_repeated_headers(web: Scripted) -> None:
    web.routes["/h"] = ok(
        b"x",
        "X-Folded: first part",
        "   second part",
        "Set-Cookie: a=1",
        "set-cookie: b=2",
        'Content-Type: text/html;  Charset="GBK"',
    )
    resp = await get(web.base + "/h")
    assert resp.headers.get("x-folded") == "first part second part"
    assert resp.headers.get_all("SET-COOKIE") == ["a=1", "b=2"] and resp.headers.get("set-cookie") == "a=1, b=2"
    assert resp.charset == "GBK"
    # two different Content-Length values: which body is it? Refused.
    web.routes["/two"] = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
    assert "invalid Content-Length '3, 4'" in await failure(web.base + "/two")
    for bad in ("9" * 5000, "²", "-1", "0x10"):  # too long for int(), a Latin-1 "digit", a sign, hex
        web.routes["/odd"] = Reply(f"HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\nabcd".encode("latin-1"))
        assert "invalid Content-Length" in await failure(web.base + "/odd")


# --- content coding -----------------------------------------------------------------------------------


async def test_gzip_and_deflate_bodies_are_decoded(web: Scripted) -> None:
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    web.routes["/gz"] = ok(gzip.compress(PAGE), "Content-Encoding: gzip")
    web.routes["/gz2"] = ok(gzip.compress(PAGE[:10]) + gzip.compress(PAGE[10:]), "Content-Encoding: x-gzip")
    web.routes["/zlib"] = ok(zlib.compress(PAGE), "Content-Encoding: deflate")
    web.routes["/raw"] = ok(raw_deflate.compress(PAGE) + raw_deflate.flush(), "Content-Encoding: deflate")
    chunked = gzip.compress(PAGE)
    web.routes["/gzchunked"] = Reply(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (chunked[:7], chunked[7:20], chunked[20:]))
        + b"0\r\n\r\n"
    )
    for path in ("/gz", "/gz2", "/zlib", "/raw", "/gzchunked"):
        resp = await get(web.base + path)
        assert resp.body == PAGE, path
    assert web.received[0].headers["accept-encoding"] == "gzip, deflate"


async def test_gzip_bomb_stops_at_the_cap(web: Scripted) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)  # about 50 KB on the wire
    web.routes["/bomb"] = ok(bomb, "Content-Encoding: gzip")
    resp = await get(web.base + "/bomb", max_body_bytes=4096)
    assert resp.body == b"\0" * 4096 and resp.capped


async def test_broken_or_unasked_codings_are_errors(web: Scripted) -> None:
    web.routes["/corrupt"] = ok(b"\x1f\x8b\x08\x00garbage-not-gzip", "Content-Encoding: gzip")
    assert "the gzip body cannot be decoded" in await failure(web.base + "/corrupt")
    web.routes["/short"] = ok(gzip.compress(PAGE)[:-12], "Content-Encoding: gzip")
    assert "the gzip body ends before its end marker" in await failure(web.base + "/short")
    web.routes["/br"] = ok(b"\x0b\x02\x80hello\x03", "Content-Encoding: br")
    assert "Content-Encoding 'br', which the probe does not decode" in await failure(web.base + "/br")


# --- hostile and broken servers -----------------------------------------------------------------------


async def test_garbage_status_line(web: Scripted) -> None:
    web.routes["/"] = Reply(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", hold_open=True)
    assert "not an HTTP/1.x response: status line 'SSH-2.0-OpenSSH_9.2p1 Debian-2'" in await failure(web.base + "/")
    web.routes["/"] = Reply(b"HTTP/1.1 2OO OK\r\n\r\n")
    assert "status line 'HTTP/1.1 2OO OK'" in await failure(web.base + "/")
    web.routes["/"] = Reply(b"")
    assert "closed the connection without sending a response" in await failure(web.base + "/")


async def test_over_long_header_line_too_many_headers_and_too_big_a_head(web: Scripted) -> None:
    web.routes["/long"] = Reply(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 40_000 + b"\r\n\r\n", hold_open=True)
    assert f"header line longer than {client.MAX_LINE_BYTES} bytes" in await failure(web.base + "/long")
    many = "".join(f"X-{i}: {i}\r\n" for i in range(client.MAX_HEADERS + 1))
    web.routes["/many"] = Reply(f"HTTP/1.1 200 OK\r\n{many}\r\n".encode(), hold_open=True)
    assert f"more than {client.MAX_HEADERS} header fields" in await failure(web.base + "/many")
    lines = b"".join(b"X-%d: " % i + b"b" * 30_000 + b"\r\n" for i in range(4))  # each line allowed
    web.routes["/head"] = Reply(b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n", hold_open=True)
    assert f"response header longer than {client.MAX_HEAD_BYTES} bytes" in await failure(web.base + "/head")
    web.routes["/nocolon"] = Reply(b"HTTP/1.1 200 OK\r\nthis is no header\r\n\r\n")
    assert "malformed header line 'this is no header'" in await failure(web.base + "/nocolon")


async def test_probe_reports_a_broken_server_as_down_with_the_reason(web: Scripted) -> None:
    web.routes["/"] = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    host = web.base.removeprefix("http://")
    url = f"http://ops:pw-0815-secret@{host}/?token=tok-4711"
    samples = await HttpProbe(HttpConfig.model_validate({"url": url}), name="portal", timeout_s=3).collect()
    (status,) = samples  # no http Sample: no complete response
    assert status.fields["status"] == "down"
    assert status.fields["error"] == (
        "http portal: the connection closed after 10 of 100 body bytes (Content-Length): body cut short"
    )
    web.routes["/"] = Reply(b"\x16\x03\x01 not http at all\r\n", hold_open=True)
    (status,) = await HttpProbe(HttpConfig.model_validate({"url": url}), name=url, timeout_s=3).collect()
    assert status.fields["error"] == (
        f"http http://{host}/?token=***: not an HTTP/1.x response: status line '\\x16\\x03\\x01 not http at all'"
    )
    assert "pw-0815-secret" not in repr(status) and "tok-4711" not in repr(status)
    # a server that echoes the Basic credentials back in its garbage: they are scrubbed too
    echoed = base64.b64encode(b"ops:pw-0815-secret")
    web.routes["/"] = Reply(b"Basic " + echoed + b"\r\n", hold_open=True)
    (status,) = await HttpProbe(HttpConfig.model_validate({"url": url}), name="portal", timeout_s=3).collect()
    assert status.fields["error"] == "http portal: not an HTTP/1.x response: status line 'Basic ***'"


# --- requests: what the server received -----------------------------------------------------------------


async def test_request_line_headers_auth_and_body_as_sent(web: Scripted) -> None:
    web.routes["/p"] = ok(b"ok")
    host = web.base.removeprefix("http://")
    # user info is percent-decoded before it becomes Basic auth; the query goes exactly as written
    await get(
        f"http://op%40county:p%3Ass%20w@{host}/p?a=1&b=%2F&c=x y&d={{q}}#frag",
        method="post",
        headers={"User-Agent": "netwatch-test", "Content-Type": "application/x-www-form-urlencoded"},
        body="q=县".encode(),
    )
    got = web.received[-1]
    assert (got.method, got.target) == ("POST", "/p?a=1&b=%2F&c=x%20y&d={q}")
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"op@county:p:ss w").decode()
    assert got.headers["host"] == host and got.headers["connection"] == "close"
    assert got.headers["user-agent"] == "netwatch-test"
    assert got.headers["content-length"] == str(len("q=县".encode())) and got.body == "q=县".encode()


def test_url_to_target_ipv6_default_ports_and_idna() -> None:
    t = client._target("http://[::1]:8080/x?y=1", "")
    assert (t.host, t.port, t.host_header, t.path) == ("::1", 8080, "[::1]:8080", "/x?y=1")
    t = client._target("https://[2001:db8::5]/", "")
    assert (t.host, t.port, t.host_header) == ("2001:db8::5", 443, "[2001:db8::5]")
    t = client._target("http://Portal.Example:80", "")
    assert (t.port, t.host_header, t.path) == (80, "portal.example", "/")
    assert client._target("http://政府.cn/", "").host == "xn--mxtq1m.cn"
    # what a browser percent-encodes is encoded; the rest, escapes included, goes as written
    t = client._target('http://h/a b/{x}"/%41/通知?q="县"&r={1}|2', "")
    assert t.path == "/a%20b/%7Bx%7D%22/%41/%E9%80%9A%E7%9F%A5?q=%22%E5%8E%BF%22&r={1}|2"
    with pytest.raises(HttpError, match="bad URL"):
        client._target("http://h:99999/", "")
    unresolved = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert client._os_error_text(unresolved, client._target("http://portal.invalid:8080/", "")) == (
        "cannot resolve host portal.invalid: Name or service not known — check the name and this node's DNS"
    )


async def test_a_header_value_with_a_line_break_is_refused_before_sending(web: Scripted) -> None:
    text = await failure(web.base + "/", headers={"X-Token": "abc\r\nX-Injected: 1"})
    assert text == "request header X-Token has a line break in its value"
    assert await failure(web.base + "/", method="GET / HTTP/1.0\r\n") == "'GET / HTTP/1.0\\r\\n' is not an HTTP method"
    assert web.received == []


# --- redirects ----------------------------------------------------------------------------------------


async def test_redirect_chain_relative_then_to_another_host_drops_authorization(
    servers: Callable[..., Awaitable[Scripted]],
) -> None:
    a = await servers()
    b = await servers(host="127.0.0.2")  # another host on the loopback
    # a redirect's body is not read when it is followed: this one never comes
    a.routes["/start"] = Reply(
        b"HTTP/1.1 301 Moved\r\nLocation: /dir/step\r\nContent-Length: 100000\r\n\r\n", hold_open=True
    )
    a.routes["/dir/step"] = Reply(b"HTTP/1.1 302 Found\r\nLocation: next?x=1\r\nContent-Length: 3\r\n\r\nabc")
    a.routes["/dir/next"] = Reply(f"HTTP/1.1 307 Temporary\r\nLocation: {b.base}/final\r\n\r\n".encode())
    b.routes["/final"] = ok(PAGE)
    host = a.base.removeprefix("http://")
    resp = await get(f"http://ops:secret-pass@{host}/start", headers={"X-Trace": "t1"}, follow_redirects=True)
    assert (resp.status_code, resp.body, resp.url, resp.redirects) == (200, PAGE, f"{b.base}/final", 3)
    basic = "Basic " + base64.b64encode(b"ops:secret-pass").decode()
    assert [(r.target, r.headers.get("authorization")) for r in a.received] == [
        ("/start", basic),
        ("/dir/step", basic),
        ("/dir/next?x=1", basic),
    ]
    (final,) = b.received
    assert "authorization" not in final.headers  # the other host never saw the credentials
    assert final.headers["x-trace"] == "t1" and final.headers["host"] == b.base.removeprefix("http://")

    # An Authorization header given by the caller is dropped the same way.
    a.received.clear()
    b.received.clear()
    await get(a.base + "/start", headers={"Authorization": "Bearer tok-1"}, follow_redirects=True)
    assert [r.headers.get("authorization") for r in a.received] == ["Bearer tok-1"] * 3
    assert "authorization" not in b.received[0].headers


async def test_redirects_are_returned_as_they_are_without_follow(web: Scripted) -> None:
    web.routes["/old"] = Reply(b"HTTP/1.1 301 Moved\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n")
    resp = await get(web.base + "/old")
    assert (resp.status_code, resp.headers.get("location"), len(web.received)) == (301, "/new", 1)


async def test_303_after_post_turns_into_get_without_the_body_307_keeps_both(web: Scripted) -> None:
    web.routes["/form"] = Reply(b"HTTP/1.1 303 See Other\r\nLocation: /done\r\nContent-Length: 0\r\n\r\n")
    web.routes["/keep"] = Reply(b"HTTP/1.1 307 Temporary\r\nLocation: /done\r\nContent-Length: 0\r\n\r\n")
    web.routes["/done"] = ok(b"thanks")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    await get(web.base + "/form", method="POST", body=b"a=1", headers=form, follow_redirects=True)
    await get(web.base + "/keep", method="POST", body=b"a=2", headers=form, follow_redirects=True)
    assert [(r.method, r.target, r.body, r.headers.get("content-type")) for r in web.received] == [
        ("POST", "/form", b"a=1", form["Content-Type"]),
        ("GET", "/done", b"", None),
        ("POST", "/keep", b"a=2", form["Content-Type"]),
        ("POST", "/done", b"a=2", form["Content-Type"]),
    ]


async def test_redirect_loop_stops_after_ten_hops(web: Scripted) -> None:
    web.routes["/loop"] = Reply(b"HTTP/1.1 302 Found\r\nLocation: /loop?token=tok-77\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(TooManyRedirects) as e:
        await get(web.base + "/loop", follow_redirects=True)
    assert len(web.received) == 11  # the request and ten redirects
    assert str(e.value) == f"more than 10 redirects, the last to {web.base}/loop?token=***"


async def test_redirect_to_a_closed_port_names_the_hop(web: Scripted) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web.routes["/"] = Reply(f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/x\r\n\r\n".encode())
    (status,) = await HttpProbe(
        HttpConfig.model_validate({"url": web.base + "/", "follow_redirects": True}), name="portal", timeout_s=3
    ).collect()
    assert status.fields["error"] == (
        f"http portal: redirected to http://127.0.0.1:{port}/x: connection refused — is the web server running on that port?"
    )


# --- TLS ----------------------------------------------------------------------------------------------


async def test_https_redirect_reports_the_days_left_of_the_final_connection(
    servers: Callable[..., Awaitable[Scripted]], cert_factory: Callable[[float], CertPair]
) -> None:
    first = await servers(tls=cert_factory(30))
    final = await servers(tls=cert_factory(10))
    first.routes["/"] = Reply(f"HTTP/1.1 308 Permanent\r\nLocation: {final.base}/home\r\n\r\n".encode())
    final.routes["/home"] = ok(PAGE, "Content-Type: text/html; charset=utf-8")
    resp = await get(first.base + "/", follow_redirects=True)
    assert resp.body == PAGE and resp.cert_days_left == pytest.approx(10, abs=0.01)
    resp = await get(first.base + "/")
    assert resp.status_code == 308 and resp.cert_days_left == pytest.approx(30, abs=0.01)


async def test_plain_http_to_a_tls_port_is_an_error(
    servers: Callable[..., Awaitable[Scripted]], cert_factory: Callable[[float], CertPair]
) -> None:
    tls = await servers(tls=cert_factory(30))
    # the TLS server reads the plain request as a broken handshake and hangs up
    text = await failure(tls.base.replace("https://", "http://") + "/")
    assert text == "the server closed the connection without sending a response"


# --- charset ------------------------------------------------------------------------------------------


async def test_gbk_page_with_meta_charset_fingerprints_as_its_text(web: Scripted) -> None:
    text = '<html><head><meta charset="gbk"></head>\n<body>\n  县人民政府\t\t通知  \n</body></html>'
    web.routes["/gbk"] = ok(text.encode("gbk"), "Content-Type: text/html")  # no charset in the header
    got = await fingerprint_url(web.base + "/gbk")
    normalised_by_hand = '<html><head><meta charset="gbk"></head> <body> 县人民政府 通知 </body></html>'
    assert got.sha256 == hashlib.sha256(normalised_by_hand.encode("utf-8")).hexdigest()
    assert got.content_bytes == len(text.encode("gbk")) and got.normalised_chars == len(normalised_by_hand)


# --- anything a server may send ---------------------------------------------------------------------------

_HEADER_LINES = st.sampled_from(
    [
        b"Content-Length: 0",
        b"Content-Length: 5",
        b"Content-Length: 400",
        b"Content-Length: -3",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip",
        b"Content-Encoding: gzip",
        b"Content-Encoding: deflate",
        b"Content-Encoding: br",
        b"Content-Type: text/html; charset=gbk",
        b"Location: /again?x=1",
        b"Location: http://[::1",
        b"  folded",
        b"no colon",
        b"X-Empty:",
    ]
)
_RESPONSES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda status, lines, body: status + b"".join(x + b"\r\n" for x in lines) + b"\r\n" + body,
        st.sampled_from(
            [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 302 Found\r\n", b"HTTP/1.1 100 Continue\r\n", b"HTTP/1.1 204\n"]
        ),
        st.lists(_HEADER_LINES, max_size=5),
        st.one_of(
            st.binary(max_size=200),
            st.just(gzip.compress(PAGE)),
            st.just(b"5\r\nhello\r\n0\r\n\r\n"),
            st.just(b"\xff\r\nx\r\n"),
        ),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=_RESPONSES, method=st.sampled_from(["GET", "HEAD"]), follow=st.booleans())
@example(reply=b"HTTP/1.1 302 Found\r\nLocation: http://[::1\r\n\r\n", method="GET", follow=True)
@example(reply=b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", method="GET", follow=False)
def test_any_reply_gives_a_response_or_an_http_error(reply: bytes, method: str, follow: bool) -> None:
    """Whatever the bytes, the client returns a Response within the cap or raises HttpError: nothing
    else escapes to the probe, nothing hangs (the server closes after its reply)."""

    async def once() -> None:
        run = await _start(Scripted(routes={"/": Reply(reply), "/again": Reply(reply)}))
        try:
            resp = await get(run.script.base + "/", method=method, follow_redirects=follow, max_body_bytes=64)
        except HttpError:
            return
        finally:
            await _stop(run)
        assert len(resp.body) <= 64 and 100 <= resp.status_code <= 999

    asyncio.run(once())
