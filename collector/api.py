"""The collector's HTTP side: a status page for people and JSON for scripts.

``/`` status page · ``/api/agents`` · ``/api/stats`` · ``/api/query?measurement=M&agent=A&since=10m``
"""

from __future__ import annotations

import html
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

import orjson

from probes.base import parse_duration
from probes.model import Sample

log = logging.getLogger("netwatch.collector.api")
MAX_QUERY_ROWS = 10_000


class QueryUnsupported(Exception):
    """The store behind the collector cannot answer queries (no SQLite store)."""


class CollectorView(Protocol):
    """All the API reads from the running collector."""

    def stats(self) -> dict[str, Any]: ...

    def agents(self) -> list[dict[str, Any]]: ...

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Sample]: ...


def _age(ns: int | None) -> str:
    if not ns:
        return "—"
    s = max(0.0, time.time() - ns / 1e9)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def status_page(agents: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr class='{html.escape(a['status'])}'><td>{html.escape(a['site'])}</td><td>{html.escape(a['id'])}</td>"
        f"<td>{html.escape(a['status'])}</td><td>{_age(a['last_seen_ns'])}</td><td>{a['batches']}</td>"
        f"<td>{a['samples']}</td><td>{html.escape(a['version'])}</td><td>{html.escape(a['config_version'])}</td></tr>"
        for a in agents
    )
    rejected = ", ".join(f"{html.escape(k)} {v}" for k, v in sorted(stats.get("rejected", {}).items())) or "none / 无"
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>netwatch collector</title><style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px}}
tr.offline td{{background:#fdd}} tr.online td{{background:#efe}}</style></head><body>
<h1>netwatch — collector 采集中心</h1>
<p>messages received 收到消息 {stats.get("received_messages", 0)} · samples stored 已存样本 {stats.get("stored_samples", 0)}
 · duplicates 重复 {stats.get("duplicates", 0)} · rejected 拒收 {stats.get("rejected_total", 0)} ({rejected})</p>
<h2>agents 采集节点 ({len(agents)})</h2>
<table><tr><th>site 站点</th><th>agent 节点</th><th>status 状态</th><th>last seen 最近</th><th>batches 批次</th>
<th>samples 样本</th><th>version 版本</th><th>config 配置</th></tr>{rows}</table>
<p>JSON: <a href="/api/agents">/api/agents</a> · <a href="/api/stats">/api/stats</a> · /api/query?measurement=…</p>
</body></html>"""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.client_address[0], *args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, code: int = 200) -> None:
        self._send(code, orjson.dumps(obj), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        c = self.server.collector
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/":
                page = status_page(c.agents(), c.stats())
                self._send(200, page.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/agents":
                self._json(c.agents())
            elif url.path == "/api/stats":
                self._json(c.stats())
            elif url.path == "/api/query":
                self._query(q)
            elif url.path == "/health":
                self._json({"ok": True, "broker_connected": bool(c.stats().get("connected"))})
            else:
                self._json({"error": "not found"}, 404)
        except ValueError as e:
            self._json({"error": str(e)}, 400)

    def _query(self, q: dict[str, str]) -> None:
        if "measurement" not in q:
            raise ValueError("measurement is required")
        since_ns = time.time_ns() - int(parse_duration(q.get("since", "10m")) * 1e9)
        try:
            rows = self.server.collector.query(
                q["measurement"], agent=q.get("agent"), since_ns=since_ns, limit=MAX_QUERY_ROWS
            )
        except QueryUnsupported as e:
            self._json({"error": str(e)}, 404)
            return
        self._json([s.to_dict() for s in rows])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    collector: CollectorView


class ApiServer:
    def __init__(self, collector: CollectorView, host: str, port: int) -> None:
        self.httpd = _Server((host, port), _Handler)
        self.httpd.collector = collector
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="collector-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
