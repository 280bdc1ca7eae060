"""What the API shows and reads: the collector view it reads through, and the status page — a
plain bilingual page with no script, its agent-supplied strings HTML-escaped (a later issue
redesigns it)."""

from __future__ import annotations

import base64
import hashlib
import html
import time
from typing import Any, Protocol

from probes.model import Sample

MAX_QUERY_ROWS = 10_000
#: ``since`` further back than this is refused (400), not turned into an overflow
MAX_SINCE_S = 3660 * 86400.0


class QueryUnsupported(Exception):
    """The store behind the collector cannot answer queries (no SQLite store)."""


class CollectorView(Protocol):
    """All the API reads from the running collector."""

    def stats(self) -> dict[str, Any]: ...

    def agents(self) -> list[dict[str, Any]]: ...

    def unknown_agents(self) -> list[dict[str, Any]]: ...

    def sites(self) -> list[dict[str, Any]]: ...

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Sample]: ...


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
#: the page has no script and no images; its one inline style is allowed by hash, its forms post to itself
PAGE_CSP = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _page(body: str, refresh: bool = False) -> str:
    meta = '<meta http-equiv="refresh" content="10">' if refresh else ""
    return f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">{meta}
<title>netwatch collector</title><style>{_STYLE}</style></head><body>
<h1>netwatch — collector 采集中心</h1>
{body}
</body></html>"""


def login_page(message: str = "") -> str:
    """What a logged-out visitor sees: a plain form posting to ``/login`` (no script)."""
    note = f"<p><strong>{_e(message)}</strong></p>" if message else ""
    return _page(
        f"""{note}<h2>log in 登录</h2>
<form method="post" action="/login"><p><label>user 用户名 <input name="name" autocomplete="username" required></label></p>
<p><label>password 密码 <input name="password" type="password" autocomplete="current-password" required></label></p>
<p><button type="submit">log in 登录</button></p></form>"""
    )


def password_page(user: str, message: str = "") -> str:
    """A session that must change its password sees only this."""
    note = f"<p><strong>{_e(message)}</strong></p>" if message else ""
    return _page(
        f"""{note}<h2>change your password 修改密码 ({_e(user)})</h2>
<p>Your password must be changed before anything else. 请先修改密码。</p>
<form method="post" action="/password"><p><label>current 当前密码 <input name="old" type="password"
autocomplete="current-password" required></label></p>
<p><label>new 新密码 <input name="new" type="password" autocomplete="new-password" required></label></p>
<p><button type="submit">change 修改</button></p></form>
<form method="post" action="/logout"><p><button type="submit">log out 退出</button></p></form>"""
    )


def status_page(agents: list[dict[str, Any]], stats: dict[str, Any], user: str = "", role: str = "") -> str:
    rows = "".join(
        f"<tr class='{_e(a['status'])}'><td>{_e(a['site'])}</td><td>{_e(a['id'])}</td>"
        f"<td>{_e(a['status'])}</td><td>{_age(a['last_seen_ns'])}</td><td>{_e(a['batches'])}</td>"
        f"<td>{_e(a['samples'])}</td><td>{_e(a['version'])}</td><td>{_e(a['config_version'])}</td></tr>"
        for a in agents
    )
    rejected = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(stats.get("rejected", {}).items())) or "none / 无"
    who = (
        f"""<form method="post" action="/logout"><p>{_e(user)} ({_e(role)}) <button type="submit">log out 退出</button>
</p></form>"""
        if user
        else ""
    )
    return _page(
        f"""{who}<p>messages received 收到消息 {_e(stats.get("received_messages", 0))} · samples stored 已存样本 \
{_e(stats.get("stored_samples", 0))}
 · duplicates 重复 {_e(stats.get("duplicates", 0))} · rejected 拒收 {_e(stats.get("rejected_total", 0))} ({rejected})</p>
<h2>agents 采集节点 ({len(agents)})</h2>
<table><tr><th>site 站点</th><th>agent 节点</th><th>status 状态</th><th>last seen 最近</th><th>batches 批次</th>
<th>samples 样本</th><th>version 版本</th><th>config 配置</th></tr>{rows}</table>
<p>JSON: <a href="/api/agents">/api/agents</a> · <a href="/api/stats">/api/stats</a> · /api/query?measurement=… ·
OpenAPI <a href="/api/openapi.json">/api/openapi.json</a></p>""",
        refresh=True,
    )
