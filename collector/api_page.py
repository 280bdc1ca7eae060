"""What the API shows and reads: the collector view it reads through, and the status page —
server-rendered HTML with one stylesheet and one small script, both served from /static/ (no
inline code: the CSP allows only 'self'), in Chinese or English, every agent-supplied string
HTML-escaped.

The page answers "what is wrong, where": the site tree coloured by state (collector/site_state.py),
the active alerts with ack and silence forms for those who may, each site's latest key values
(collector/latest.py), the agents with version and last seen, and a link to the monthly report."""

from __future__ import annotations

import hashlib
import hmac
import html
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
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

    def latest(self) -> dict[str, dict[str, dict[str, Any]]]:
        """site → key (``uplink_loss_pct``, ``temperature_c``, ...) → ``{value, time_ns, series}``"""
        ...

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Sample]: ...


#: the stylesheet and the script, served at /static/<name> (api_app.py) with these types
STATIC_DIR = Path(__file__).with_name("static")
STATIC_TYPES = {
    "page.css": "text/css; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: no inline script or style anywhere: both come from the collector itself; forms post to itself;
#: the script's refresh fetches the page from itself
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
LANGS = ("zh", "en")
#: how often the page refreshes itself (page.js reads it from the page)
REFRESH_S = 10

# every word the page says, in both languages: key → (en, zh)
_T: dict[str, tuple[str, str]] = {
    "title": ("netwatch — status", "netwatch — 运行状态"),
    "collector": ("collector", "采集中心"),
    "sites": ("Sites", "站点"),
    "alerts": ("Active alerts", "当前告警"),
    "silences": ("Silences", "静默"),
    "agents": ("Agents", "采集节点"),
    "no_alerts": ("No active alerts.", "当前无告警。"),
    "no_alerting": ("Alerting is not configured on this collector.", "本采集中心未启用告警。"),
    "no_sites": (
        "No sites yet: no agent has reported and there is no topology file.",
        "暂无站点：没有节点上报，也没有拓扑文件。",
    ),
    "no_silences": ("No active silences.", "当前无静默。"),
    "ok": ("ok", "正常"),
    "warning": ("warning", "警告"),
    "critical": ("critical", "严重"),
    "unreachable": ("unreachable", "不可达"),
    "cut_off": ("cut off", "失联"),
    "unknown": ("unknown", "未知"),
    "info": ("info", "提示"),
    "below": ("below", "下级"),
    "uplink": ("uplink", "上联"),
    "loss": ("loss", "丢包"),
    "room": ("room", "机房"),
    "ups": ("UPS", "UPS"),
    "on_mains": ("on mains", "市电"),
    "on_battery": ("ON BATTERY", "电池供电"),
    "runtime": ("runtime", "续航"),
    "charge": ("charge", "电量"),
    "min": ("min", "分钟"),
    "since": ("since", "开始于"),
    "acked_by": ("acked by", "已确认，确认人"),
    "silenced_by": ("silenced by", "已静默，操作人"),
    "until": ("until", "至"),
    "behind": ("hidden: behind", "已抑制：上级"),
    "ack": ("Acknowledge", "确认"),
    "comment": ("comment", "备注"),
    "silence": ("Silence…", "静默…"),
    "silence_do": ("Silence", "静默"),
    "matchers": ("matchers, one a line", "匹配条件，每行一条"),
    "duration": ("for", "时长"),
    "author": ("by", "创建人"),
    "site": ("site", "站点"),
    "agent": ("agent", "节点"),
    "status": ("status", "状态"),
    "last_seen": ("last seen", "最近上报"),
    "version": ("version", "版本"),
    "config": ("config", "配置"),
    "samples": ("samples", "样本"),
    "online": ("online", "在线"),
    "offline": ("offline", "离线"),
    "report": ("Monthly report", "月度通报"),
    "report_so_far": ("this month so far", "本月至今"),
    "logout": ("log out", "退出"),
    "updated": ("updated", "更新于"),
    "no_read": ("This role sees no monitoring data.", "此角色无监控数据权限。"),
    "legend": ("Colours", "颜色"),
    "stats": ("messages received", "收到消息"),
    "stored": ("samples stored", "已存样本"),
    "rejected": ("rejected", "拒收"),
    "noscript": ("Reload the page to refresh it.", "请手动刷新页面。"),
    "back": ("back to the status page", "返回状态页"),
    "agents_online": ("agents online", "节点在线"),
    "sites_count": ("sites", "个站点"),
    "site_count_one": ("site", "个站点"),
    "nobody": ("not yet reported", "尚未上报"),
    "city": ("city", "市"),
    "county": ("county", "县"),
    "township": ("township", "乡镇"),
    "value": ("value", "值"),
    "other_site": ("not in the site tree", "不在站点树中"),
}


def t(lang: str, key: str) -> str:
    en, zh = _T[key]
    return zh if lang == "zh" else en


def pick_lang(asked: str | None, accept_language: str | None) -> str:
    """``?lang=`` wins; else the first of zh/en in Accept-Language; else Chinese."""
    if asked in LANGS:
        return asked
    for part in (accept_language or "").split(",")[:20]:
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "zh"


def csrf_token(session_token: str) -> str:
    """The hidden field the page's forms carry: bound to the session, which only the browser holding
    the HttpOnly cookie knows — another site can neither read the page nor compute it."""
    return hmac.new(session_token.encode(), b"netwatch status page form", hashlib.sha256).hexdigest()[:40]


def csrf_ok(session_token: str | None, sent: str) -> bool:
    return session_token is not None and hmac.compare_digest(csrf_token(session_token), sent)


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _age(ns: int | None, now_ns: int | None = None) -> str:
    if not ns:
        return "—"
    s = max(0.0, ((now_ns or time.time_ns()) - ns) / 1e9)
    return (
        f"{s:.0f}s"
        if s < 120
        else f"{s / 60:.0f}m"
        if s < 7200
        else f"{s / 3600:.1f}h"
        if s < 172800
        else f"{s / 86400:.0f}d"
    )


def _clock(ns: int | None) -> str:
    if not ns:
        return "—"
    return datetime.fromtimestamp(ns / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _num(v: float) -> str:
    return (
        f"{v:.0f}"
        if abs(v) >= 100 or v == int(v)
        else f"{v:.1f}"
        if abs(v) >= 10
        else f"{v:.2f}".rstrip("0").rstrip(".")
    )


def _head(title: str, lang: str, script: bool) -> str:
    js = '<script src="/static/page.js" defer></script>' if script else ""
    return f"""<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/page.css">{js}</head>"""


def _page(body: str) -> str:
    """The bilingual pages of the login flow (no script)."""
    return f"""{_head("netwatch collector 采集中心", "zh", False)}<body class="narrow">
<header class="top"><h1>netwatch <small>collector 采集中心</small></h1></header><main>
{body}
</main></body></html>"""


def login_page(message: str = "", lang: str = "") -> str:
    """What a logged-out visitor sees: a plain form posting to ``/login`` (no script)."""
    note = f'<p class="note">{_e(message)}</p>' if message else ""
    keep = f'<input type="hidden" name="lang" value="{_e(lang)}">' if lang in LANGS else ""
    return _page(
        f"""{note}<section class="card"><h2>log in 登录</h2>
<form method="post" action="/login">{keep}<label>user 用户名 <input name="name" autocomplete="username" required></label>
<label>password 密码 <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">log in 登录</button></form></section>"""
    )


def password_page(user: str, message: str = "") -> str:
    """A session that must change its password sees only this."""
    note = f'<p class="note">{_e(message)}</p>' if message else ""
    return _page(
        f"""{note}<section class="card"><h2>change your password 修改密码 ({_e(user)})</h2>
<p>Your password must be changed before anything else. 请先修改密码。</p>
<form method="post" action="/password"><label>current 当前密码 <input name="old" type="password"
autocomplete="current-password" required></label>
<label>new 新密码 <input name="new" type="password" autocomplete="new-password" required></label>
<button type="submit">change 修改</button></form>
<form method="post" action="/logout"><button type="submit" class="link">log out 退出</button></form></section>"""
    )


def form_error_page(message: str, lang: str) -> str:
    """A refused or failed ack / silence form: what went wrong and the way back."""
    q = f"?lang={lang}" if lang in LANGS else ""
    return _page(f'<p class="note">{_e(message)}</p><p><a href="/{q}#alerts">{t(lang, "back")}</a></p>')


# --- the status page --------------------------------------------------------------------------


@dataclass(slots=True)
class PageData:
    """What the status page shows, gathered by api_app.py for one request."""

    lang: str
    user: str
    role: str
    can_read: bool = True
    can_ack: bool = False
    can_silence: bool = False
    csrf: str = ""
    agents: list[dict[str, Any]] | None = None
    stats: dict[str, Any] | None = None
    sites: list[dict[str, Any]] | None = None
    latest: dict[str, dict[str, dict[str, Any]]] | None = None
    alerts: list[dict[str, Any]] | None = None  # None: alerting is not configured
    silences: list[dict[str, Any]] | None = None
    now_ns: int = 0


def _month_links(lang: str, now_ns: int) -> str:
    now = datetime.fromtimestamp(now_ns / 1e9).astimezone()
    y, m = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    last, this = f"{y:04d}-{m:02d}", f"{now.year:04d}-{now.month:02d}"
    return (
        f'<a class="report" href="/report?month={last}">{t(lang, "report")} {last}</a> '
        f'<a class="report minor" href="/report?month={this}">{this} ({t(lang, "report_so_far")})</a>'
    )


def _values(vals: dict[str, dict[str, Any]], lang: str, now_ns: int) -> str:
    def tip(*keys: str) -> str:
        rs = [vals[k] for k in keys if k in vals]
        return _e(" · ".join(f"{r.get('series', '')} {_age(r.get('time_ns'), now_ns)}" for r in rs))

    def v(key: str) -> float | None:
        r = vals.get(key)
        return float(r["value"]) if r is not None else None

    out: list[str] = []
    loss, rtt = v("uplink_loss_pct"), v("uplink_rtt_ms")
    if loss is not None:
        bad = " bad" if loss >= 5 else " warn" if loss > 0 else ""
        rtt_s = f" · {_num(rtt)} ms" if rtt is not None else ""
        out.append(
            f'<span class="kv{bad}" data-key="uplink" title="{tip("uplink_loss_pct", "uplink_rtt_ms")}">'
            f"{t(lang, 'uplink')} {t(lang, 'loss')} <b>{_num(loss)} %</b>{rtt_s}</span>"
        )
    temp, hum = v("temperature_c"), v("humidity_pct")
    if temp is not None or hum is not None:
        parts = []
        if temp is not None:
            parts.append(f"<b>{_num(temp)} °C</b>")
        if hum is not None:
            parts.append(f"<b>{_num(hum)} %</b>")
        # GB 50174-2017 Appendix A: inlet 18–27 °C, RH at most 60 %
        bad = " warn" if (temp is not None and not 18 <= temp <= 27) or (hum is not None and hum > 60) else ""
        out.append(
            f'<span class="kv{bad}" data-key="room" title="{tip("temperature_c", "humidity_pct")}">'
            f"{t(lang, 'room')} {' · '.join(parts)}</span>"
        )
    onb, run, charge = v("on_battery_s"), v("runtime_min"), v("charge_pct")
    if onb is not None or run is not None or charge is not None:
        parts = []
        if onb is not None:
            parts.append(
                f"<b>{t(lang, 'on_battery')} {_num(onb / 60)} {t(lang, 'min')}</b>" if onb > 0 else t(lang, "on_mains")
            )
        if run is not None:
            parts.append(f"{t(lang, 'runtime')} <b>{_num(run)} {t(lang, 'min')}</b>")
        if charge is not None:
            parts.append(f"{t(lang, 'charge')} {_num(charge)} %")
        bad = " bad" if (onb or 0) > 0 or (run is not None and run <= 3) else ""
        out.append(
            f'<span class="kv{bad}" data-key="ups" title="{tip("on_battery_s", "runtime_min", "charge_pct")}">'
            f"{t(lang, 'ups')} {' · '.join(parts)}</span>"
        )
    return f'<div class="vals">{"".join(out)}</div>' if out else ""


def _site_html(n: Any, d: PageData, agents: dict[str, dict[str, Any]], names: dict[str, str]) -> str:
    lang, now = d.lang, d.now_ns
    state_word = t(lang, "cut_off") if n.cut_off_by else t(lang, n.state)
    kind = t(lang, n.kind) if n.kind in ("city", "county", "township") else _e(n.kind)
    below = (
        f'<span class="below st-{n.worst_below}">▼ {t(lang, "below")}: {t(lang, n.worst_below)}</span>'
        if n.worst_below not in ("ok", "unknown")
        else ""
    )
    why = ""
    if n.cut_off_by and n.cut_off_by != n.id:
        why = f'<div class="why">{t(lang, "behind")} {_e(names.get(n.cut_off_by, n.cut_off_by))}</div>'
    if n.alerts:
        links = " ".join(f'<a href="#alert-{a}">#{a}</a>' for a in n.alerts)
        why += f'<div class="why">{t(lang, "alerts")}: {links}</div>'
    ags = []
    for aid in n.agents:
        a = agents.get(aid)
        if a is None:
            ags.append(f'<span class="ag unknown">{_e(aid)} · {t(lang, "nobody")}</span>')
            continue
        st = str(a.get("status", "unknown"))
        st_word = t(lang, st) if st in ("online", "offline", "unknown") else _e(st)
        ags.append(
            f'<span class="ag {_e(st)}" title="{_e(st_word)} · {_e(_clock(a.get("last_seen_ns")))}">{_e(aid)}'
            f" · v{_e(a.get('version') or '?')} · {_age(a.get('last_seen_ns'), now)}</span>"
        )
    vals = _values((d.latest or {}).get(n.id, {}), lang, now)
    kids = "".join(_site_html(c, d, agents, names) for c in n.children)
    return (
        f'<li><div class="site st-{n.state}" id="site-{_e(n.id)}" data-site="{_e(n.id)}" data-state="{n.state}">'
        f'<div class="site-head"><span class="dot"></span><b class="name">{_e(n.label(lang))}</b>'
        f' <span class="kind">{kind}</span> <span class="badge">{state_word}</span> {below}</div>'
        f'{vals}<div class="agents">{"".join(ags)}</div>{why}</div>'
        + (f'<ul class="tree">{kids}</ul>' if kids else "")
        + "</li>"
    )


def _silencers(labels: dict[str, str], silences: list[dict[str, Any]], now_ns: int) -> dict[str, Any] | None:
    from collector.alerting.rules import Matcher

    for s in silences:
        if not s["starts_ns"] <= now_ns < s["ends_ns"]:
            continue
        try:
            if all(Matcher.parse(m)(labels) for m in s["matchers"]):
                return s
        except ValueError:
            continue
    return None


def _alert_html(a: dict[str, Any], d: PageData, site_name: str | None) -> str:
    lang, now = d.lang, d.now_ns
    aid = int(a["id"])
    sev = str(a.get("severity", ""))
    sev_cls = sev if sev in ("critical", "warning", "info") else "info"
    labels: dict[str, str] = a.get("labels") or {}
    summary = (a.get("summary") or {}).get(lang) or (a.get("summary") or {}).get("en", "")
    where = _e(site_name) if site_name else f"<i>{t(lang, 'other_site')}</i>"
    status = []
    if a.get("acked_by"):
        status.append(
            f'<span class="acked">✔ {t(lang, "acked_by")} {_e(a["acked_by"])}: {_e(a.get("ack_comment") or "")}</span>'
        )
    sil = _silencers(labels, d.silences or [], now)
    if sil is not None:
        status.append(
            f'<span class="silenced">{t(lang, "silenced_by")} {_e(sil["author"])} (#{_e(sil["id"])}) '
            f"{t(lang, 'until')} {_e(_clock(sil['ends_ns']))}</span>"
        )
    if a.get("suppressed_by"):
        status.append(f'<span class="suppressed">{t(lang, "behind")} {_e(a["suppressed_by"])}</span>')
    value = a.get("value")
    vtext = f" · {t(lang, 'value')} {_e(value)}" if value is not None and not isinstance(value, dict) else ""
    lbl = " ".join(f"<code>{_e(k)}={_e(v)}</code>" for k, v in sorted(labels.items())[:12])
    forms = ""
    keep = f'<input type="hidden" name="csrf" value="{_e(d.csrf)}"><input type="hidden" name="lang" value="{lang}">'
    if d.can_ack and not a.get("acked_by"):
        forms += (
            f'<form method="post" action="/alerts/{aid}/ack" class="inline ack">{keep}'
            f'<input name="comment" required maxlength="500" placeholder="{t(lang, "comment")}" aria-label="{t(lang, "comment")}">'
            f'<button type="submit">{t(lang, "ack")}</button></form>'
        )
    if d.can_silence and sil is None:
        default = "\n".join(f"{k}={labels[k]}" for k in ("alertname", "site", "agent", "device") if labels.get(k))
        # the engine matches silences on the alert's labels: offer exactly those that name it
        default = default or "\n".join(f"{k}={v}" for k, v in sorted(labels.items())[:6])
        durations = "".join(
            f'<option value="{v}"{" selected" if v == "2h" else ""}>{v}</option>'
            for v in ("30m", "1h", "2h", "8h", "1d", "7d")
        )
        forms += (
            f'<details class="silence"><summary>{t(lang, "silence")}</summary>'
            f'<form method="post" action="/silences" class="stack">{keep}'
            f'<label>{t(lang, "matchers")}<textarea name="matchers" rows="3" required maxlength="2000">{_e(default)}</textarea></label>'
            f'<label>{t(lang, "duration")} <select name="duration">{durations}</select></label>'
            f'<label>{t(lang, "comment")} <input name="comment" required maxlength="500"></label>'
            f'<button type="submit">{t(lang, "silence_do")}</button></form></details>'
        )
    acked = " is-acked" if a.get("acked_by") else ""
    return (
        f'<article class="alert sev-{sev_cls}{acked}" id="alert-{aid}" data-alert="{aid}">'
        f'<div class="alert-head"><span class="sev">{t(lang, sev_cls)}</span> <b>{where}</b>'
        f' <span class="muted">#{aid} · {_e(a.get("rule", ""))} · {t(lang, "since")} {_e(_clock(a.get("starts")))}'
        f" ({_age(a.get('starts'), now)}){vtext}</span></div>"
        f'<p class="summary">{_e(summary)}</p><div class="labels">{lbl}</div>'
        + (f'<div class="status">{"".join(status)}</div>' if status else "")
        + (f'<div class="actions">{forms}</div>' if forms else "")
        + "</article>"
    )


def status_page(d: PageData) -> str:
    from collector.site_state import STATES, assess, build_tree, walk

    lang, now = d.lang, d.now_ns or time.time_ns()
    d.now_ns = now
    other = "en" if lang == "zh" else "zh"
    switch = f'<a class="lang" href="/?lang={other}" hreflang="{other}">{"English" if other == "en" else "中文"}</a>'
    who = (
        f'<form method="post" action="/logout" class="who"><span>{_e(d.user)} ({_e(d.role)})</span>'
        f'<button type="submit" class="link">{t(lang, "logout")}</button></form>'
    )
    top = f"""<header class="top"><h1>netwatch <small>{t(lang, "collector")}</small></h1>
<nav>{_month_links(lang, now)} {switch} {who}</nav></header>"""
    if not d.can_read:
        body = f'<main><p class="note">{t(lang, "no_read")}</p></main>'
        return f'{_head(t(lang, "title"), lang, False)}<body data-lang="{lang}">{top}{body}</body></html>'
    agents_list = d.agents or []
    alerts = d.alerts or []
    roots = build_tree(d.sites or [], agents_list)
    placed = assess(roots, agents_list, alerts)
    nodes = list(walk(roots))
    names = {n.id: n.label(lang) for n in nodes}
    by_agent = {str(a["id"]): a for a in agents_list}
    counts = {s: 0 for s in STATES}
    for n in nodes:
        counts[n.state] += 1
    online = sum(1 for a in agents_list if a.get("status") == "online")
    chips = "".join(
        f'<span class="chip st-{s}"><span class="dot"></span>{t(lang, s)} <b>{counts[s]}</b></span>' for s in STATES
    )
    summary = (
        f'<section id="summary" data-live><div class="chips">{chips}</div>'
        f'<p class="muted">{len(nodes)} {t(lang, "site_count_one" if len(nodes) == 1 else "sites_count")} · {t(lang, "agents_online")} {online}/{len(agents_list)}'
        f' · {t(lang, "alerts")} <b id="alert-count">{len(alerts)}</b> · {t(lang, "updated")} '
        f'<time id="updated">{_e(_clock(now))}</time> <span id="refresh-note" class="muted"></span></p></section>'
    )
    tree = "".join(_site_html(n, d, by_agent, names) for n in roots)
    sites_html = (
        f'<section id="sites" data-live><h2>{t(lang, "sites")}</h2>'
        + (f'<ul class="tree root">{tree}</ul>' if tree else f'<p class="muted">{t(lang, "no_sites")}</p>')
        + "</section>"
    )
    if d.alerts is None:
        alerts_body = f'<p class="muted">{t(lang, "no_alerting")}</p>'
    elif not alerts:
        alerts_body = f'<p class="muted">{t(lang, "no_alerts")}</p>'
    else:
        rank = {"critical": 0, "warning": 1}
        ordered = sorted(
            alerts, key=lambda a: (bool(a.get("acked_by")), rank.get(a.get("severity", ""), 2), -int(a["id"]))
        )
        alerts_body = "".join(_alert_html(a, d, names.get(placed.get(int(a["id"]), ""))) for a in ordered)
    alerts_html = f'<section id="alerts" data-live><h2>{t(lang, "alerts")} ({len(alerts)})</h2>{alerts_body}</section>'
    sil_rows = "".join(
        f"<li>#{_e(s['id'])} <code>{_e(', '.join(s['matchers']))}</code> {t(lang, 'until')} {_e(_clock(s['ends_ns']))}"
        f" · {t(lang, 'author')} {_e(s['author'])}: {_e(s['comment'])}</li>"
        for s in (d.silences or [])
    )
    silences_html = (
        f'<section id="silences" data-live><h2>{t(lang, "silences")}</h2>'
        + (f'<ul class="plain">{sil_rows}</ul>' if sil_rows else f'<p class="muted">{t(lang, "no_silences")}</p>')
        + "</section>"
        if d.alerts is not None
        else ""
    )
    rows = "".join(
        f'<tr class="{_e(a["status"])}"><td>{_e(names.get(str(a["site"]), a["site"]))}</td><td>{_e(a["id"])}</td>'
        f"<td>{t(lang, a['status']) if a['status'] in ('online', 'offline', 'unknown') else _e(a['status'])}</td>"
        f'<td title="{_e(_clock(a.get("last_seen_ns")))}">{_age(a.get("last_seen_ns"), now)}</td>'
        f'<td>{_e(a.get("version") or "")}</td><td class="opt">{_e(a.get("config_version") or "")}</td>'
        f'<td class="opt num">{_e(a.get("samples", ""))}</td></tr>'
        for a in agents_list
    )
    agents_html = (
        f'<section id="agents" data-live><h2>{t(lang, "agents")} ({len(agents_list)})</h2><div class="scroll"><table>'
        f"<tr><th>{t(lang, 'site')}</th><th>{t(lang, 'agent')}</th><th>{t(lang, 'status')}</th>"
        f'<th>{t(lang, "last_seen")}</th><th>{t(lang, "version")}</th><th class="opt">{t(lang, "config")}</th>'
        f'<th class="opt">{t(lang, "samples")}</th></tr>{rows}</table></div></section>'
    )
    st = d.stats or {}
    rejected = ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted((st.get("rejected") or {}).items())) or "—"
    foot = (
        f'<footer id="foot" data-live class="muted">{t(lang, "stats")} {_e(st.get("received_messages", 0))} · '
        f"{t(lang, 'stored')} {_e(st.get('stored_samples', 0))} · {t(lang, 'rejected')} {_e(st.get('rejected_total', 0))}"
        f' ({rejected})<br>JSON: <a href="/api/agents">/api/agents</a> · <a href="/api/alerts">/api/alerts</a> · '
        f'<a href="/api/sites">/api/sites</a> · <a href="/api/stats">/api/stats</a> · OpenAPI '
        f'<a href="/api/openapi.json">/api/openapi.json</a></footer>'
    )
    return (
        f'{_head(t(lang, "title"), lang, True)}<body data-lang="{lang}" data-refresh="{REFRESH_S}">{top}'
        f'<noscript><p class="note">{t(lang, "noscript")}</p></noscript>'
        f'<main>{summary}<div class="cols"><div class="col-main">{alerts_html}{sites_html}</div>'
        f'<div class="col-side">{silences_html}{agents_html}</div></div>{foot}</main></body></html>'
    )


def static_file(name: str) -> tuple[bytes, str] | None:
    """The page's stylesheet or script; None for any other name."""
    ctype = STATIC_TYPES.get(name)
    if ctype is None:
        return None
    return (STATIC_DIR / name).read_bytes(), ctype
