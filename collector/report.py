"""The monthly availability report (网络运行情况通报): per site, how long its uplink, its agents and
its devices were up in a calendar month of the city's time zone, how often they went down, for how
long and how fast they came back; counties and townships ranked. Computed from the recorded
up/down changes (collector/availability.py), never from raw samples.

How time is counted (also printed under the report):

- A subject (an uplink, an agent, a device) is *observed* from its first recorded change on; the
  month's window is [first day 00:00, next month's first day 00:00) in the configured zone, cut at
  *now* for the month under way. Uptime % = up time / observed time within the window.
- Repeated changes (down while down, up while up) are ignored: an outage begins at the first down
  and ends at the first up after it. Changes are ordered by their time, then as recorded.
- An outage is counted in every month it overlaps, with only its part inside that month in the
  downtime. Mean time to recover (MTTR) is over the outages that *recovered* in the month, each with
  its whole length (also the part in the month before); an outage still open at the window's end
  counts in the number and the downtime but not in MTTR, and is marked open.
- A county's figures are the sums over the county and every site below it (time-weighted); ranks
  order by uplink uptime, then agent uptime, then less downtime, then site id. Sites with nothing
  observed come last.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from collector.availability import KINDS

NS = 1_000_000_000
MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
COUNTY, TOWNSHIP = "county", "township"
WORST_DEVICES_PER_SITE = 3
WORST_DEVICES = 10


class ReportError(ValueError):
    """Bad input to the report (the month): the message says what and how to fix it."""


# --- the month ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Month:
    year: int
    month: int
    zone: str

    @classmethod
    def parse(cls, text: str, zone: str) -> Month:
        m = MONTH_RE.match(text.strip())
        if m is None or not 1 <= int(m[2]) <= 12 or not 2000 <= int(m[1]) <= 2199:
            raise ReportError(
                f"month {text[:20]!r}: write it as YYYY-MM, e.g. 2026-11 / 月份格式应为 YYYY-MM，如 2026-11"
            )
        return cls(int(m[1]), int(m[2]), zone)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=ZoneInfo(self.zone))

    @property
    def end(self) -> datetime:
        y, m = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
        return datetime(y, m, 1, tzinfo=ZoneInfo(self.zone))

    def bounds_ns(self) -> tuple[int, int]:
        return _ns(self.start), _ns(self.end)


def this_month(zone: str, now_ns: int | None = None) -> str:
    """``YYYY-MM`` of now in ``zone``."""
    now = now_ns if now_ns is not None else time.time_ns()
    return datetime.fromtimestamp(now // NS, ZoneInfo(zone)).strftime("%Y-%m")


def _ns(d: datetime) -> int:
    # exact: whole seconds (the month bounds) times 1e9, no float rounding
    return int(d.timestamp()) * NS


# --- the figures -------------------------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    """One subject's (or a sum of subjects') month."""

    observed_ns: int = 0
    down_ns: int = 0
    outages: int = 0
    open_outages: int = 0
    recovered: int = 0
    recovered_ns: int = 0  # the whole length of the outages that recovered in the window

    def add(self, o: Stats) -> None:
        self.observed_ns += o.observed_ns
        self.down_ns += o.down_ns
        self.outages += o.outages
        self.open_outages += o.open_outages
        self.recovered += o.recovered
        self.recovered_ns += o.recovered_ns

    @property
    def uptime(self) -> Fraction | None:
        return Fraction(self.observed_ns - self.down_ns, self.observed_ns) if self.observed_ns else None

    @property
    def mttr_ns(self) -> int | None:
        return self.recovered_ns // self.recovered if self.recovered else None

    def to_dict(self) -> dict[str, Any]:
        up = self.uptime
        mttr = self.mttr_ns
        return {
            "uptime_pct": round(float(up * 100), 4) if up is not None else None,
            "observed_s": self.observed_ns / NS,
            "downtime_s": self.down_ns / NS,
            "outages": self.outages,
            "open_outages": self.open_outages,
            "recovered": self.recovered,
            "mttr_s": mttr / NS if mttr is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    subject: str
    site: str
    county: str
    state: str
    at_ns: int


def fold(rows: Sequence[Row], start_ns: int, end_ns: int) -> Stats:
    """One subject's changes (sorted by time) to its Stats in [start_ns, end_ns)."""
    st = Stats()
    state: str | None = None
    since = 0
    for r in rows:
        if r.at_ns > end_ns:
            break  # (a recovery at the very end still closes its outage in this window)
        if r.state == state:
            continue  # a repeat: the outage (or the up time) goes on from the first one
        if state is not None:
            _segment(st, state, since, r.at_ns, start_ns, end_ns, closed=True)
        state, since = r.state, r.at_ns
    if state is not None:
        _segment(st, state, since, end_ns, start_ns, end_ns, closed=False)
    return st


def _segment(st: Stats, state: str, a: int, b: int, start: int, end: int, *, closed: bool) -> None:
    """[a, b) spent in ``state``; ``closed``: it ended with a recorded change at ``b``."""
    part = min(b, end) - max(a, start)
    if part <= 0:
        return  # wholly outside the window (an outage that ended at the instant the month began)
    st.observed_ns += part
    if state != "down":
        return
    st.down_ns += part
    st.outages += 1
    if closed and b <= end:
        st.recovered += 1
        st.recovered_ns += b - a
    else:
        st.open_outages += 1


@dataclass(slots=True)
class SiteFigures:
    id: str
    name_en: str
    name_zh: str
    kind: str
    county: str
    parent: str | None
    uplink: Stats = field(default_factory=Stats)
    agents: Stats = field(default_factory=Stats)
    devices: Stats = field(default_factory=Stats)
    device_list: list[tuple[str, Stats]] = field(default_factory=list)

    def worst(self, n: int = WORST_DEVICES_PER_SITE) -> list[tuple[str, Stats]]:
        return worst_devices(self.device_list, n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.id,
            "name": {"en": self.name_en, "zh": self.name_zh},
            "kind": self.kind,
            "county": self.county,
            "uplink": self.uplink.to_dict(),
            "agents": self.agents.to_dict(),
            "devices": self.devices.to_dict(),
            "worst_devices": [{"device": d, **s.to_dict()} for d, s in self.worst()],
        }


def worst_devices(devs: Iterable[tuple[str, Stats]], n: int) -> list[tuple[str, Stats]]:
    bad = [(d, s) for d, s in devs if s.down_ns > 0 or s.outages > 0]
    return sorted(bad, key=lambda x: (-x[1].down_ns, -x[1].outages, x[0]))[:n]


def rank_key(s: SiteFigures) -> tuple[Any, ...]:
    up, ag = s.uplink.uptime, s.agents.uptime
    return (
        up is None and ag is None,
        up is None,
        -(up or 0),
        ag is None,
        -(ag or 0),
        s.uplink.down_ns + s.agents.down_ns,
        s.id,
    )


@dataclass(slots=True)
class Report:
    month: Month
    start_ns: int
    end_ns: int  # the window's end: the month's end, or now for the month under way
    generated_ns: int
    partial: bool
    sites: list[SiteFigures]
    counties: list[SiteFigures]
    townships: list[SiteFigures]
    devices: list[tuple[str, str, Stats]]  # (device, site, stats), worst first

    def to_dict(self) -> dict[str, Any]:
        tz = ZoneInfo(self.month.zone)
        return {
            "month": str(self.month),
            "timezone": self.month.zone,
            "start": datetime.fromtimestamp(self.start_ns // NS, tz).isoformat(),
            "end": datetime.fromtimestamp(self.end_ns // NS, tz).isoformat(),
            "partial": self.partial,
            "generated": datetime.fromtimestamp(self.generated_ns // NS, tz).isoformat(),
            "counties": [{"rank": i + 1, **c.to_dict()} for i, c in enumerate(self.counties)],
            "townships": [{"rank": i + 1, **t.to_dict()} for i, t in enumerate(self.townships)],
            "sites": [s.to_dict() for s in self.sites],
            "worst_devices": [{"device": d, "site": site, **s.to_dict()} for d, site, s in self.devices],
        }


# --- reading the record ------------------------------------------------------------------------


def read_transitions(paths: Iterable[Path], before_ns: int) -> list[Row]:
    """Every recorded change up to ``before_ns`` from state.db and alerts.db (read-only; a file
    or table not there yet reads as none)."""
    out: list[tuple[int, int, Row]] = []
    for order, p in enumerate(paths):
        if not p.exists():
            continue
        db = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute(
                "SELECT kind, subject, site, county, state, at_ns, id FROM transitions WHERE at_ns <= ?",
                (before_ns,),
            ).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                raise
            rows = []
        finally:
            db.close()
        for kind, subject, site, county, state, at_ns, rid in rows:
            if kind in KINDS and state in ("up", "down"):
                out.append((order, int(rid), Row(kind, subject, site, county, state, int(at_ns))))
    out.sort(key=lambda x: (x[2].kind, x[2].subject, x[2].at_ns, x[0], x[1]))
    return [r for _, _, r in out]


@dataclass(frozen=True, slots=True)
class SiteInfo:
    id: str
    name_en: str
    name_zh: str
    kind: str
    parent: str | None
    county: str
    agents: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()


def sites_of_topology(path: Path | None) -> list[SiteInfo]:
    if path is None:
        return []
    from collector.alerting.topology import Topology

    topo = Topology.load(path)
    return [
        SiteInfo(
            s.id,
            s.label("en"),
            s.label("zh"),
            s.kind,
            topo.parent[s.id],
            topo.ancestor_of_kind(s.id, COUNTY) or "",
            s.agents,
            s.devices,
        )
        for s in topo.sites.values()
    ]


def compute(
    month: Month,
    rows: Sequence[Row],
    sites: Sequence[SiteInfo] = (),
    *,
    now_ns: int | None = None,
) -> Report:
    now = now_ns if now_ns is not None else time.time_ns()
    start, end = month.bounds_ns()
    if start >= now:
        raise ReportError(f"month {month} has not begun yet / {month} 尚未开始")
    window_end = min(end, now)
    info = {s.id: s for s in sites}
    agent_site = {a: s.id for s in sites for a in s.agents}
    device_site = {d: s.id for s in sites for d in s.devices}
    figures: dict[str, SiteFigures] = {
        s.id: SiteFigures(s.id, s.name_en, s.name_zh, s.kind, s.county, s.parent) for s in sites
    }

    by_subject: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        by_subject.setdefault((r.kind, r.subject), []).append(r)
    for (kind, subject), rs in sorted(by_subject.items()):
        st = fold(rs, start, window_end)
        if kind == "uplink":
            site = subject
        elif kind == "agent":
            site = agent_site.get(subject) or rs[-1].site
        else:
            site = device_site.get(subject) or rs[-1].site
        f = figures.get(site)
        if f is None:
            county = rs[-1].county
            f = figures[site] = SiteFigures(site, site, site, COUNTY if county == site else "", county, None)
        if kind == "uplink":
            f.uplink.add(st)
        elif kind == "agent":
            f.agents.add(st)
        else:
            f.devices.add(st)
            f.device_list.append((subject, st))

    # counties: the county and everything below it, summed
    counties: dict[str, SiteFigures] = {}
    for f in figures.values():
        if not f.county:
            continue
        c = counties.get(f.county)
        if c is None:
            base = info.get(f.county)
            c = counties[f.county] = SiteFigures(
                f.county,
                base.name_en if base else f.county,
                base.name_zh if base else f.county,
                COUNTY,
                f.county,
                base.parent if base else None,
            )
        c.uplink.add(f.uplink)
        c.agents.add(f.agents)
        c.devices.add(f.devices)
        c.device_list += f.device_list
    # in the topology's order (the tree, top down), then any site it does not list
    order = {s.id: i for i, s in enumerate(sites)}
    all_sites = sorted(figures.values(), key=lambda f: (order.get(f.id, len(order)), f.id))
    devices = sorted(
        ((d, f.id, s) for f in all_sites for d, s in f.device_list if s.down_ns > 0 or s.outages > 0),
        key=lambda x: (-x[2].down_ns, -x[2].outages, x[0]),
    )[:WORST_DEVICES]
    return Report(
        month=month,
        start_ns=start,
        end_ns=window_end,
        generated_ns=now,
        partial=window_end < end,
        sites=all_sites,
        counties=sorted(counties.values(), key=rank_key),
        townships=sorted((f for f in figures.values() if f.kind == TOWNSHIP), key=rank_key),
        devices=devices,
    )


def build(cfg: Any, month_text: str, *, now_ns: int | None = None) -> Report:
    """The report of ``month_text`` (YYYY-MM) for a collector config (collector/config.py)."""
    month = Month.parse(month_text, cfg.collector.timezone)
    now = now_ns if now_ns is not None else time.time_ns()
    start, end = month.bounds_ns()
    if start >= now:
        raise ReportError(f"month {month} has not begun yet / {month} 尚未开始")
    rows = read_transitions((cfg.state_path, cfg.data_dir / "alerts.db"), end)
    return compute(month, rows, sites_of_topology(cfg.topology), now_ns=now)


# --- how it looks ------------------------------------------------------------------------------


def duration(ns: int | None) -> str:
    """``3d 04:05:06`` / ``04:05:06``; ``—`` for none."""
    if ns is None:
        return "—"
    s = ns // NS
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h:02d}:{m:02d}:{s:02d}" if d else f"{h:02d}:{m:02d}:{s:02d}"


def pct(f: Fraction | None) -> str:
    return "—" if f is None else f"{float(f * 100):.3f}%"


def _worst_text(devs: Sequence[tuple[str, Stats]]) -> str:
    return "; ".join(f"{d} ({s.outages}×, {duration(s.down_ns)})" for d, s in devs)


CSV_COLUMNS = (
    ("table", "表"),
    ("rank", "排名"),
    ("site", "站点"),
    ("name_zh", "名称"),
    ("name_en", "name"),
    ("kind", "类型"),
    ("county", "所属县"),
    ("uplink_uptime_pct", "上联可用率%"),
    ("uplink_outages", "上联中断次数"),
    ("uplink_open", "上联未恢复"),
    ("uplink_downtime_s", "上联中断时长(秒)"),
    ("uplink_mttr_s", "上联平均恢复时间(秒)"),
    ("agent_uptime_pct", "代理在线率%"),
    ("agent_outages", "代理离线次数"),
    ("agent_open", "代理未恢复"),
    ("agent_downtime_s", "代理离线时长(秒)"),
    ("agent_mttr_s", "代理平均恢复时间(秒)"),
    ("device_uptime_pct", "设备可用率%"),
    ("device_outages", "设备故障次数"),
    ("device_downtime_s", "设备故障时长(秒)"),
    ("worst_devices", "故障最多设备"),
)


def _num(v: float | None) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else f"{v:.4f}".rstrip("0")


def _cells(table: str, rank: int | None, f: SiteFigures) -> list[str]:
    out = [table, str(rank) if rank else "", f.id, f.name_zh, f.name_en, f.kind, f.county]
    for st, with_mttr in ((f.uplink, True), (f.agents, True), (f.devices, False)):
        d = st.to_dict()
        out += [_num(d["uptime_pct"]), str(st.outages)]
        if with_mttr:
            out.append(str(st.open_outages))
        out.append(_num(d["downtime_s"]))
        if with_mttr:
            out.append(_num(d["mttr_s"]))
    out.append(_worst_text(f.worst()))
    return [_csv_safe(c) for c in out]


def _csv_safe(cell: str) -> str:
    # a cell starting with = + - @ is a formula to Excel: names come from config and agents
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


def to_csv(r: Report) -> bytes:
    """UTF-8 with a byte-order mark, so that Excel opens the Chinese as Chinese."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([f"{zh} {en}" for en, zh in CSV_COLUMNS])
    for i, c in enumerate(r.counties):
        w.writerow(_cells("county 县", i + 1, c))
    for i, t in enumerate(r.townships):
        w.writerow(_cells("township 乡镇", i + 1, t))
    for s in r.sites:
        w.writerow(_cells("site 站点", None, s))
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


STYLE = (
    "body{font-family:'Noto Sans CJK SC','Noto Sans',sans-serif;margin:1.5em;color:#111}"
    "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}"
    "table{border-collapse:collapse;width:100%;font-size:.9em;page-break-inside:auto}"
    "th,td{border:1px solid #999;padding:3px 6px;text-align:right}th{background:#eee}"
    "td.t,th.t{text-align:left}tr{page-break-inside:avoid}.open{color:#a00;font-weight:bold}"
    ".note{font-size:.85em;color:#333}"
    "@media print{body{margin:0}a{color:#000;text-decoration:none}}"
)
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
#: no script, no images, nothing from elsewhere: the one inline style by its hash
CSP = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _e(v: object) -> str:
    return html.escape(str(v), quote=True)


def _stat_cells(st: Stats, mttr: bool = True) -> str:
    if not st.observed_ns:
        return "<td>—</td>" * (4 if mttr else 3)
    out = f"<td>{pct(st.uptime)}</td><td>{st.outages}"
    if st.open_outages:
        out += f' <span class="open">({st.open_outages} open / 未恢复)</span>'
    out += f"</td><td>{duration(st.down_ns)}</td>"
    if mttr:
        out += f"<td>{duration(st.mttr_ns)}</td>"
    return out


_HEAD = (
    '<tr><th class="t" rowspan="2">#</th><th class="t" rowspan="2">站点 site</th>'
    '<th colspan="4">上联 uplink</th><th colspan="4">采集代理 agents</th><th colspan="3">设备 devices</th>'
    '<th class="t" rowspan="2">故障最多设备 worst devices</th></tr><tr>'
    + "<th>可用率 uptime</th><th>中断 outages</th><th>时长 downtime</th><th>平均恢复 MTTR</th>" * 2
    + "<th>可用率 uptime</th><th>故障 outages</th><th>时长 downtime</th></tr>"
)


def _table(rows: Sequence[SiteFigures], ranked: bool) -> str:
    body = []
    for i, f in enumerate(rows):
        name = f"{_e(f.name_zh)} {_e(f.name_en)}" if f.name_zh != f.name_en else _e(f.name_zh)
        body.append(
            f'<tr><td class="t">{i + 1 if ranked else ""}</td><td class="t">{name} <small>({_e(f.id)})</small></td>'
            f"{_stat_cells(f.uplink)}{_stat_cells(f.agents)}{_stat_cells(f.devices, mttr=False)}"
            f'<td class="t">{_e(_worst_text(f.worst()))}</td></tr>'
        )
    if not body:
        body.append('<tr><td class="t" colspan="14">无数据 no data</td></tr>')
    return f"<table><thead>{_HEAD}</thead><tbody>{''.join(body)}</tbody></table>"


NOTES = (
    (
        "可用率 = 当月（按 {zone} 时区）观测时间内的正常时间占比；对象自首次记录状态变化起计入观测。",
        "Uptime = time up / time observed in the month ({zone}); a subject is observed from its first recorded change.",
    ),
    (
        "跨月的中断在每个月各计一次，时长只计该月内的部分；平均恢复时间按当月内恢复的中断计算，取其完整时长；至统计截止时仍未恢复的中断计入次数和时长，不计入平均恢复时间。",
        "An outage spanning months counts once in each, with only its part in that month as downtime; MTTR is over "
        "outages that recovered in the month, each with its whole length; one still open at the end counts in "
        "number and downtime, not in MTTR.",
    ),
    (
        "上联中断即站点不可达（上级看到链路中断，或其全部代理离线）；上级站点不可达期间，下级站点上联的时间只计入上级。",
        "An uplink outage is the site being unreachable (its parent sees the link down, or all its agents are "
        "offline); while an ancestor is cut off, the uplink's time counts against the ancestor's only.",
    ),
    (
        "排名依次按上联可用率、代理在线率、中断总时长、站点编号；县的数据为本县及下辖站点之和。",
        "Ranked by uplink uptime, then agent uptime, then total downtime, then site id; a county's figures "
        "sum the county and every site below it.",
    ),
)


def to_html(r: Report) -> str:
    tz = ZoneInfo(r.month.zone)

    def when(ns: int) -> str:
        return datetime.fromtimestamp(ns // NS, tz).strftime("%Y-%m-%d %H:%M")

    until = f"{when(r.end_ns)}（截至 so far）" if r.partial else when(r.end_ns)
    worst = (
        "".join(
            f'<tr><td class="t">{i + 1}</td><td class="t">{_e(d)}</td><td class="t">{_e(site)}</td>'
            f"{_stat_cells(s)}</tr>"
            for i, (d, site, s) in enumerate(r.devices)
        )
        or '<tr><td class="t" colspan="7">无 none</td></tr>'
    )
    notes = "".join(
        f"<li>{_e(zh.format(zone=r.month.zone))}<br>{_e(en.format(zone=r.month.zone))}</li>" for zh, en in NOTES
    )
    start_text = when(r.start_ns)
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(r.month)} 网络运行情况通报 / Network availability report</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>{_e(r.month.year)} 年 {_e(r.month.month)} 月网络运行情况通报<br>"
        f"Network availability report, {_e(r.month)}</h1>"
        f"<p>统计时段 period: {_e(start_text)} — {_e(until)} ({_e(r.month.zone)})；"
        f"生成 generated: {_e(when(r.generated_ns))}</p>"
        f"<h2>县排名 Counties ranked</h2>{_table(r.counties, True)}"
        f"<h2>乡镇排名 Townships ranked</h2>{_table(r.townships, True)}"
        f"<h2>全部站点 All sites</h2>{_table(r.sites, False)}"
        "<h2>故障最多设备 Worst devices</h2><table><thead><tr>"
        '<th class="t">#</th><th class="t">设备 device</th><th class="t">站点 site</th>'
        "<th>可用率 uptime</th><th>故障 outages</th><th>时长 downtime</th><th>平均恢复 MTTR</th>"
        f"</tr></thead><tbody>{worst}</tbody></table>"
        f'<h2>说明 Method</h2><ul class="note">{notes}</ul></body></html>'
    )


def to_json(r: Report) -> dict[str, Any]:
    return r.to_dict()
