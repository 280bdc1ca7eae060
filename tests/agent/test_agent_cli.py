"""``netwatch-agent`` for the technician: once, status and the one-shot probes, against real
loopback targets; JSON shape and exit codes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    # a C locale: the operator text comes in both languages (see test_messages for zh and en alone)
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60, env=env
    )


def lines(out: str) -> list[dict]:
    return [orjson.loads(x) for x in out.splitlines() if x.strip()]


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = "<h1>镇人民政府</h1>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_once_prints_every_probe_and_exit_code_reflects_a_down_target(tmp_path: Path, web: str) -> None:
    cfg = tmp_path / "a.yaml"
    cfg.write_text(f"""
agent: {{id: town-1, site: township-1}}
probes:
  - {{type: http, name: portal, url: '{web}', body_regex: '人民政府'}}
  - {{type: tcp, name: dead-port, host: 127.0.0.1, port: {_closed_port()}}}
  - {{type: icmp, name: lo, host: 127.0.0.1, count: 2, packet_interval: 50ms}}
""")
    r = cli("once", "--config", str(cfg), "--json")
    assert r.returncode == 1, r.stderr  # one target down
    rows = lines(r.stdout)
    assert all(set(x) == {"measurement", "tags", "fields", "time"} for x in rows)
    assert all(x["tags"]["site"] == "township-1" and x["tags"]["agent"] == "town-1" for x in rows)
    status = {x["tags"]["target"]: x["fields"]["status"] for x in rows if x["measurement"] == "probe_status"}
    assert status == {"portal": "ok", "dead-port": "down", "lo": "ok"}
    http = next(x for x in rows if x["measurement"] == "http")
    assert http["fields"]["status_code"] == 200 and http["fields"]["body_match"] is True
    # the table form for people, with the bilingual summary
    r = cli("once", "--config", str(cfg))
    assert "ok 2 · degraded 0 · down 1" in r.stdout and "正常 2" in r.stdout and "故障 1" in r.stdout


def test_once_all_ok_exits_0(tmp_path: Path) -> None:
    cfg = tmp_path / "a.yaml"
    cfg.write_text("agent: {id: a, site: s}\nprobes:\n  - {type: icmp, host: 127.0.0.1, count: 1}\n")
    assert cli("once", "--config", str(cfg), "--json").returncode == 0


def test_one_shot_tcp_ping_http(web: str) -> None:
    port = int(web.rsplit(":", 1)[1].strip("/"))
    r = cli("tcp", f"127.0.0.1:{port}", "--json")
    assert r.returncode == 0
    assert next(x for x in lines(r.stdout) if x["measurement"] == "tcp")["fields"]["result"] == "ok"
    r = cli("tcp", f"127.0.0.1:{_closed_port()}", "--json")
    assert r.returncode == 1
    assert next(x for x in lines(r.stdout) if x["measurement"] == "tcp")["fields"]["result"] == "refused"
    r = cli("ping", "127.0.0.1", "--count", "3", "--interval", "50ms", "--json")
    assert r.returncode == 0
    icmp = next(x for x in lines(r.stdout) if x["measurement"] == "icmp")
    assert icmp["fields"]["sent"] == 3 and icmp["fields"]["loss_pct"] == 0
    r = cli("http", web, "--json")
    assert r.returncode == 0
    http = next(x for x in lines(r.stdout) if x["measurement"] == "http")
    assert len(http["fields"]["content_sha256"]) == 64


def test_one_shot_usage_errors_exit_2() -> None:
    assert cli("tcp", "no-port-here").returncode == 2
    assert cli("ping", "127.0.0.1", "--count", "0").returncode == 2


def test_status_reads_the_spool(tmp_path: Path) -> None:
    from agent.spool import Spool

    cfg = tmp_path / "a.yaml"
    cfg.write_text("agent: {id: a, site: s}\nspool: {path: sp.db}\n")
    sp = Spool(tmp_path / "sp.db", max_bytes=10**6, max_age_s=3600)
    for _ in range(3):
        sp.put(lambda seq: b"x" * 100, 5)
    sp.ack([1])
    sp.close()
    row = lines(cli("status", "--config", str(cfg), "--json").stdout)[0]
    assert (row["depth"], row["bytes"], row["acked_samples"], row["last_seq"]) == (2, 200, 5, 3)


def test_help_everywhere() -> None:
    for args in ([], ["run"], ["check"], ["once"], ["status"], ["ping"], ["tcp"], ["http"]):
        r = cli(*args, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout, args


def test_device_reply_markup_is_printed_not_parsed() -> None:
    """A device's reply lands in the table (the mismatch error quotes it): rich must not parse it."""
    reply = b"[/x][link=https://evil.example]x[/link][bold red]"
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(20)
    port = srv.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    env = {**os.environ, "COLUMNS": "400", "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    try:
        args = ["tcp", f"127.0.0.1:{port}", "--expect", "NOPE", "--timeout", "2s"]
        r = subprocess.run(
            [sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert r.returncode == 1, (r.stdout, r.stderr)  # a wrong reply: degraded, and no crash
        assert "\x1b]8;" not in r.stdout
        text = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
        assert reply.decode() in text
    finally:
        srv.close()


def test_a_bad_duration_or_size_is_echoed_short_and_redacted() -> None:
    from probes.base import parse_duration, parse_size

    key = "sk-live-51Hx9fQ2kL8mN3pR7tV0wY4zB6cD1eF"
    for parse in (parse_duration, parse_size):
        with pytest.raises(ValueError) as e:
            parse(key)
        text = str(e.value)
        assert key not in text and key[4:] not in text and f"({len(key)} chars)" in text and "'sk-l'" in text
    with pytest.raises(ValueError, match=r"^'soon' is not a duration"):
        parse_duration("soon")  # short values are shown whole


def test_a_key_pasted_into_timeout_does_not_appear_in_the_config_error(tmp_path: Path) -> None:
    key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        f"agent: {{id: a, site: s}}\nprobes:\n  - {{type: tcp, host: 127.0.0.1, port: 22, timeout: '{key}'}}\n"
    )
    r = cli("check", "--config", str(cfg))
    assert r.returncode == 2 and "is not a duration" in r.stdout + r.stderr, r.stdout + r.stderr
    assert key not in r.stdout + r.stderr and key[4:20] not in r.stdout + r.stderr


def test_one_shot_http_uses_credentials_and_never_prints_them(tmp_path: Path) -> None:
    import base64

    password, token, bearer = "s3cret-pass-4711", "tok-9f8e7d6c", "Bearer header-secret-42"
    want = "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()
    seen: list[tuple[str, str, str]] = []

    class Private(_Page):
        def do_GET(self) -> None:  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization", ""), self.headers.get("X-Portal-Token", "")))
            if self.headers.get("Authorization") != want or self.headers.get("X-Portal-Token") != bearer:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Private)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    token_file = tmp_path / "token"
    token_file.write_text(bearer + "\n")
    try:
        port = httpd.server_address[1]
        url = f"http://ops:{password}@127.0.0.1:{port}/?token={token}"
        for extra in (["--json"], []):
            r = cli("http", url, "--header-file", f"X-Portal-Token={token_file}", *extra)
            assert r.returncode == 0, r.stdout + r.stderr
            assert seen[-1] == (f"/?token={token}", want, bearer)
            out = r.stdout + r.stderr
            assert password not in out and token not in out and "header-secret-42" not in out
            assert f"127.0.0.1:{port}/?token=***" in out
        # a wrong password is reported down, still without it
        r = cli("http", url.replace(password, "wrong-pass-1234"), "--header-file", f"X-Portal-Token={token_file}")
        assert r.returncode == 1 and "HTTP 401" in r.stdout and "wrong-pass-1234" not in r.stdout + r.stderr
        assert cli("http", url, "--header-env", "X-Portal-Token").returncode == 2  # NAME=VAR, not just NAME
    finally:
        httpd.shutdown()
        httpd.server_close()
