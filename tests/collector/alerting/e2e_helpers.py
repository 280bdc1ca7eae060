"""Shared by the alerting end-to-end tests: a local HTTP server that plays the WeCom and DingTalk
robot APIs and a json:// webhook and records what they are sent (and when), a loopback port that
can be closed and reopened, and writers for collector and agent configs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
from services import free_port

SECRET = "SECtest0123456789"


@dataclass(frozen=True, slots=True)
class Post:
    """One message a robot or webhook received."""

    kind: str  # wecom | dingtalk | json
    key: str  # the WeCom key / DingTalk access_token / webhook path: which channel sent it
    at: float  # time.time() when it arrived
    text: str


class Recorder:
    """Plays the WeCom and DingTalk robot APIs and a generic webhook; keeps what it is sent."""

    def __init__(self) -> None:
        self.got: dict[str, list[str]] = {"wecom": [], "dingtalk": [], "json": []}
        self.posts: list[Post] = []
        self.bad: list[str] = []
        self._lock = threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query)
                if url.path == "/cgi-bin/webhook/send":
                    if body.get("msgtype") != "markdown" or not isinstance(body["markdown"].get("content"), str):
                        rec.bad.append(f"wecom shape: {body}")
                    rec._add("wecom", q.get("key", [""])[0], body["markdown"]["content"])
                elif url.path == "/robot/send":
                    ts = q["timestamp"][0]
                    want = base64.b64encode(
                        hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
                    )
                    if q["sign"][0].encode() != want or abs(int(ts) / 1000 - time.time()) > 3600:
                        rec.bad.append(f"dingtalk signature: {q}")
                    rec._add("dingtalk", q.get("access_token", [""])[0], body["markdown"]["text"])
                else:
                    rec._add("json", url.path, body.get("message", ""))
                out = b'{"errcode":0,"errmsg":"ok"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _add(self, kind: str, key: str, text: str) -> None:
        with self._lock:
            self.got[kind].append(text)
            self.posts.append(Post(kind, key, time.time(), text))

    def count(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.got.items()}

    def by_key(self, key: str) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if p.key == key]

    def wait(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while min(self.count().values()) < n and time.monotonic() < deadline:
            time.sleep(0.1)

    def wait_key(self, key: str, n: int, timeout_s: float) -> list[Post]:
        """Until ``key`` has received ``n`` posts or the time is up; returns what it has."""
        deadline = time.monotonic() + timeout_s
        while len(self.by_key(key)) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.by_key(key)

    def wecom_url(self, key: str) -> str:
        return f"{self.base}/cgi-bin/webhook/send?key={key}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Link:
    """A loopback port a tcp probe can reach (the listen backlog completes the handshake):
    close() refuses connections, open() takes the same port again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock: socket.socket | None = None
        self.open()

    def open(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port))  # backlog accepts: tcp probe ok

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def collector_config(tmp: Path, *, mqtt_port: int, api_port: int, alerting: str) -> Path:
    """A collector config with ``alerting`` (YAML, indented two spaces) as its alerting section."""
    cfg = tmp / "collector.yaml"
    cfg.write_text(
        f"collector: {{id: c, data_dir: {tmp / 'data'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}}}\n"
        f"api: {{port: {api_port}}}\n"
        f"alerting:\n{alerting}"
    )
    return cfg


def agent_config(tmp: Path, aid: str, site: str, *, mqtt_port: int, probes: list[str]) -> Path:
    """An agent config; ``probes`` are flow-style YAML mappings, one per probe."""
    p = tmp / f"{aid}.yaml"
    lines = "".join(f"  - {x}\n" for x in probes)
    p.write_text(
        f"agent: {{id: {aid}, site: {site}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, keepalive: 2s}}\n"
        f"spool: {{path: {tmp / (aid + '-spool.db')}}}\n"
        f"publish: {{batch_interval: 300ms, self_metrics_interval: 1s}}\nprobes:\n{lines}"
    )
    return p


def wait_agents(col: Any, agents: set[str], timeout_s: float = 20.0) -> None:
    """Until the collector lists every agent in ``agents``."""
    deadline = time.monotonic() + timeout_s
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = {a["id"] for a in col.get("/api/agents")}
        if agents <= seen:
            return
        time.sleep(0.2)
    raise AssertionError(f"collector saw {sorted(seen)}, not all of {sorted(agents)}:\n{col.tail()}")
