"""The monthly availability report on a scripted history of outages: every figure is worked out
by hand in the comments next to it. The history is written the way the collector writes it — the
uplinks into alerts.db through the alert store's log, the agents and devices into state.db through
the state's log — plus raw rows that the recorder would never write (repeats, overlaps) to show the
report folds them. Then the CLI in every format and the API route."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from argon2 import PasswordHasher
from typer.testing import CliRunner

from collector import config as collector_config
from collector import report as rep
from collector.alerting.store import AlertStore
from collector.api import ApiServer
from collector.api_app import Backend
from collector.cli import app
from collector.state import StateDB
from collector.users import LocalAdmin, UserDB

SH = ZoneInfo("Asia/Shanghai")
NS = 10**9
M_NOV = 30 * 86400  # 2,592,000 s in November
M_OCT = 31 * 86400  # 2,678,400 s in October


def at(month: int, day: int, hh: int = 0, mm: int = 0) -> int:
    """ns of a wall-clock time in Shanghai, 2026."""
    return int(datetime(2026, month, day, hh, mm, tzinfo=SH).timestamp()) * NS


OCT1 = at(10, 1)
#: the reports are made on 2 December (the month under way is December)
NOW = at(12, 2)

TOPOLOGY = """
sites:
  - id: city
    kind: city
    name: {en: City centre, zh: 市中心}
    agents: [ag-city]
    devices: [core]
    children:
      - id: county-a
        kind: county
        name: {en: "County A <b>", zh: 东区县}
        agents: [ag-a]
        devices: [sw-a]
        uplink: {rule: wan_loss_high, match: [link=county-a]}
        children:
          - {id: a-t1, kind: township, name: {en: Xinzhuang, zh: 新庄镇}, agents: [ag-a1], devices: [sw-a1, ups-a1]}
          - {id: a-t2, kind: township, name: {en: Hexi, zh: 河西乡}, agents: [ag-a2]}
          - {id: a-t3, kind: township, name: {en: Shanqian, zh: 山前镇}, agents: [ag-a3]}
      - id: county-b
        kind: county
        name: {en: County B, zh: 西区县}
        agents: [ag-b]
        children:
          - {id: b-t1, kind: township, name: {en: Beiguan, zh: 北关镇}, agents: [ag-b1]}
          - {id: b-t2, kind: township, name: {en: "=cmd|' /C calc'!A0", zh: 南关镇}, agents: [ag-b2]}
"""

COUNTY = {"city": "", "county-a": "county-a", "a-t1": "county-a", "a-t2": "county-a", "a-t3": "county-a"}
COUNTY |= {"county-b": "county-b", "b-t1": "county-b", "b-t2": "county-b"}
AGENT_SITE = {"ag-city": "city", "ag-a": "county-a", "ag-a1": "a-t1", "ag-a2": "a-t2", "ag-a3": "a-t3"}
AGENT_SITE |= {"ag-b": "county-b", "ag-b1": "b-t1", "ag-b2": "b-t2"}
DEVICE_SITE = {"core": "city", "sw-a": "county-a", "sw-a1": "a-t1", "ups-a1": "a-t1"}

# (kind, subject, state, at): what the recorder writes
HISTORY: list[tuple[str, str, str, int]] = [
    # every site's uplink, agent and device is watched from 1 October, up — but county-b and its
    # agent only from 16 November (a site that joined mid-month)
    *[("uplink", s, "up", OCT1) for s in COUNTY if s != "county-b"],
    ("uplink", "county-b", "up", at(11, 16)),
    *[("agent", a, "up", OCT1) for a in AGENT_SITE if a not in ("ag-b", "ag-a3")],
    ("agent", "ag-b", "up", at(11, 16)),
    *[("device", d, "up", OCT1) for d in DEVICE_SITE],
    # county-a's uplink: cut 31 Oct 22:00 → back 1 Nov 02:00 (spans the month boundary), and
    # 10 Nov 10:00 → 10:30; its agent and switch go down with it the second time
    ("uplink", "county-a", "down", at(10, 31, 22)),
    ("uplink", "county-a", "up", at(11, 1, 2)),
    ("uplink", "county-a", "down", at(11, 10, 10)),
    ("uplink", "county-a", "up", at(11, 10, 10, 30)),
    ("agent", "ag-a", "down", at(11, 10, 10)),
    ("agent", "ag-a", "up", at(11, 10, 10, 30)),
    ("device", "sw-a", "down", at(11, 10, 10)),
    ("device", "sw-a", "up", at(11, 10, 10, 30)),
    # sw-a also went down 31 Oct 23:00 and came back at the very instant November began
    ("device", "sw-a", "down", at(10, 31, 23)),
    ("device", "sw-a", "up", at(11, 1)),
    # a-t1: cut 30 Nov 20:00 and still cut on 2 December (open); its agent and switch with it
    ("uplink", "a-t1", "down", at(11, 30, 20)),
    ("agent", "ag-a1", "down", at(11, 30, 20)),
    ("device", "sw-a1", "down", at(11, 30, 20)),
    # sw-a1 also down 3 Nov 00:00 → 06:00; ups-a1 20 Nov 12:00 → 12:05
    ("device", "sw-a1", "down", at(11, 3)),
    ("device", "sw-a1", "up", at(11, 3, 6)),
    ("device", "ups-a1", "down", at(11, 20, 12)),
    ("device", "ups-a1", "up", at(11, 20, 12, 5)),
    # a-t3's agent first reported offline (its first record) 5 Nov 12:00, online 12:10
    ("agent", "ag-a3", "down", at(11, 5, 12)),
    ("agent", "ag-a3", "up", at(11, 5, 12, 10)),
    # b-t1's uplink: 15 Nov 08:00 → 09:00 and 20 Nov 00:00 → 00:30; its agent 15 Nov 08:00 → 09:00
    ("uplink", "b-t1", "down", at(11, 15, 8)),
    ("uplink", "b-t1", "up", at(11, 15, 9)),
    ("uplink", "b-t1", "down", at(11, 20)),
    ("uplink", "b-t1", "up", at(11, 20, 0, 30)),
    ("agent", "ag-b1", "down", at(11, 15, 8)),
    ("agent", "ag-b1", "up", at(11, 15, 9)),
]

# rows the recorder refuses to write but a report must survive (an older collector, a restore, two
# writers): repeats inside an outage and after it, and the same change from both databases
RAW: list[tuple[str, str, str, int, str]] = [
    ("uplink", "county-a", "down", at(11, 10, 10, 10), "alerts"),  # down while down: the outage began at 10:00
    ("uplink", "county-a", "up", at(11, 10, 10, 40), "alerts"),  # up while up: nothing
    ("agent", "ag-a", "down", at(11, 10, 10, 5), "state"),
    ("agent", "ag-b1", "down", at(11, 15, 8, 20), "state"),
    ("agent", "ag-b1", "up", at(11, 15, 9), "alerts"),  # the same recovery, recorded twice
    ("uplink", "a-t1", "down", at(11, 30, 21), "alerts"),
]


def _site_of(kind: str, subject: str) -> str:
    return {"uplink": subject, "agent": AGENT_SITE.get(subject, ""), "device": DEVICE_SITE.get(subject, "")}[kind]


def write_history(data: Path) -> None:
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = StateDB(data / "state.db")
    alerts = AlertStore(data / "alerts.db")
    try:
        for kind, subject, st, t in sorted(HISTORY, key=lambda h: h[3]):
            log = alerts.transitions if kind == "uplink" else state.transitions
            site = _site_of(kind, subject)
            assert log.note(kind, subject, st, t, site=site, county=COUNTY[site]), (kind, subject, st, t)  # type: ignore[arg-type]
        for kind, subject, st, t, where in RAW:
            db = alerts.db if where == "alerts" else state._db
            site = _site_of(kind, subject)
            db.execute(
                "INSERT INTO transitions(kind, subject, site, county, state, at_ns, recorded_ns) VALUES (?,?,?,?,?,?,?)",
                (kind, subject, site, COUNTY[site], st, t, t),
            )
    finally:
        state.close()
        alerts.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "topology.yaml").write_text(TOPOLOGY)
    data = tmp / "data"
    write_history(data)
    cfg = tmp / "collector.yaml"
    cfg.write_text(
        f"collector: {{data_dir: {data}}}\nidentity: {{topology: {tmp / 'topology.yaml'}}}\napi: {{port: 0}}\n"
    )
    utc = tmp / "collector-utc.yaml"
    utc.write_text(f"collector: {{data_dir: {data}, timezone: UTC}}\nidentity: {{topology: {tmp / 'topology.yaml'}}}\n")
    return cfg, utc


def report(cfg: Path, month: str, now_ns: int = NOW) -> dict[str, Any]:
    return rep.build(collector_config.load(cfg), month, now_ns=now_ns).to_dict()


def site(r: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in r["sites"] if s["site"] == sid)


def fig(
    uptime: float | None,
    observed: int,
    down: int,
    outages: int,
    open_: int = 0,
    recovered: int = 0,
    mttr: float | None = None,
) -> dict[str, Any]:
    return {
        "uptime_pct": uptime,
        "observed_s": observed,
        "downtime_s": down,
        "outages": outages,
        "open_outages": open_,
        "recovered": recovered,
        "mttr_s": mttr,
    }


def test_november_by_hand(setup: tuple[Path, Path]) -> None:
    r = report(setup[0], "2026-11")
    assert r["start"] == "2026-11-01T00:00:00+08:00" and r["end"] == "2026-12-01T00:00:00+08:00"
    assert r["partial"] is False
    assert [s["site"] for s in r["sites"]] == list(COUNTY)  # the tree's order, top down

    # county-a uplink: 31 Oct 22:00 → 1 Nov 02:00 has 2 h = 7,200 s in November; 10 Nov 10:00 → 10:30
    # = 1,800 s (the repeated down at 10:10 and up at 10:40 change nothing). Downtime 9,000 s, two
    # outages, both recovered in November: MTTR = (whole 4 h = 14,400 + 1,800) / 2 = 8,100 s.
    # Uptime = (2,592,000 − 9,000) / 2,592,000 = 99.652777…% → 99.6528
    assert site(r, "county-a")["uplink"] == fig(99.6528, M_NOV, 9000, 2, 0, 2, 8100)
    # its agent: 10 Nov 10:00 → 10:30 (the down at 10:05 is a repeat): 1,800 s; (2,592,000 − 1,800)
    # / 2,592,000 = 99.930555…% → 99.9306
    assert site(r, "county-a")["agents"] == fig(99.9306, M_NOV, 1800, 1, 0, 1, 1800)
    # sw-a: down 31 Oct 23:00, back at 1 Nov 00:00 exactly — nothing of it in November; 10 Nov 1,800 s
    assert site(r, "county-a")["devices"] == fig(99.9306, M_NOV, 1800, 1, 0, 1, 1800)

    # a-t1: cut 30 Nov 20:00, still cut: 4 h = 14,400 s in November, open, so no MTTR (the repeated
    # down at 21:00 changes nothing). (2,592,000 − 14,400) / 2,592,000 = 99.444…% → 99.4444
    assert site(r, "a-t1")["uplink"] == fig(99.4444, M_NOV, 14400, 1, 1, 0, None)
    assert site(r, "a-t1")["agents"] == fig(99.4444, M_NOV, 14400, 1, 1, 0, None)
    # its devices: sw-a1 3 Nov 6 h = 21,600 s (recovered) + 30 Nov 14,400 s (open) = 36,000 s;
    # ups-a1 300 s. Two devices observed: 5,184,000 s; down 36,300 s; three outages, one open; MTTR
    # over the two recovered = (21,600 + 300) / 2 = 10,950 s. 1 − 36,300 / 5,184,000 = 99.299768…%
    assert site(r, "a-t1")["devices"] == fig(99.2998, 2 * M_NOV, 36300, 3, 1, 2, 10950)
    assert [(d["device"], d["downtime_s"], d["outages"]) for d in site(r, "a-t1")["worst_devices"]] == [
        ("sw-a1", 36000, 2),
        ("ups-a1", 300, 1),
    ]

    # a-t3's agent is watched from its first record, 5 Nov 12:00 (down) → 12:10: observed from then
    # to 1 Dec = 25 d 12 h = 2,203,200 s, down 600 s: 1 − 600 / 2,203,200 = 99.972767…% → 99.9728
    assert site(r, "a-t3")["agents"] == fig(99.9728, 2203200, 600, 1, 0, 1, 600)
    assert site(r, "a-t3")["uplink"] == fig(100.0, M_NOV, 0, 0)

    # b-t1 uplink: 1 h + 30 min = 5,400 s, two outages, MTTR 2,700 s; (2,592,000 − 5,400) / 2,592,000
    # = 99.791666…% → 99.7917. Its agent: 15 Nov 08:00 → 09:00 (the down at 08:20 and the second
    # record of the 09:00 recovery are repeats): 3,600 s → 99.861111…% → 99.8611
    assert site(r, "b-t1")["uplink"] == fig(99.7917, M_NOV, 5400, 2, 0, 2, 2700)
    assert site(r, "b-t1")["agents"] == fig(99.8611, M_NOV, 3600, 1, 0, 1, 3600)

    # county-b joined 16 Nov 00:00: observed 15 days = 1,296,000 s, never down
    assert site(r, "county-b")["uplink"] == fig(100.0, 1296000, 0, 0)

    # counties = the county and everything below it.
    # county-a uplinks: 4 sites × 2,592,000 = 10,368,000 s observed; down 9,000 + 14,400 = 23,400;
    # outages 2 + 1 = 3, one open; recovered 2 with 14,400 + 1,800 → MTTR 8,100.
    # 1 − 23,400 / 10,368,000 = 99.774305…% → 99.7743
    ca = next(c for c in r["counties"] if c["site"] == "county-a")
    assert ca["uplink"] == fig(99.7743, 4 * M_NOV, 23400, 3, 1, 2, 8100)
    # county-a agents: observed 3 × 2,592,000 + 2,203,200 (ag-a3) = 9,979,200; down 1,800 + 14,400
    # + 600 = 16,800; recovered 1,800 and 600 → MTTR 1,200. 1 − 16,800 / 9,979,200 = 99.831649…%
    assert ca["agents"] == fig(99.8316, 3 * M_NOV + 2203200, 16800, 3, 1, 2, 1200)
    # county-b uplinks: 1,296,000 + 2 × 2,592,000 = 6,480,000; down 5,400 → 99.916666…% → 99.9167
    cb = next(c for c in r["counties"] if c["site"] == "county-b")
    assert cb["uplink"] == fig(99.9167, 1296000 + 2 * M_NOV, 5400, 2, 0, 2, 2700)
    # county-b agents: same observation, down 3,600 → 1 − 3,600 / 6,480,000 = 99.944444…% → 99.9444
    assert cb["agents"] == fig(99.9444, 1296000 + 2 * M_NOV, 3600, 1, 0, 1, 3600)

    # ranks: county-b (99.9167) above county-a (99.7743)
    assert [(c["rank"], c["site"]) for c in r["counties"]] == [(1, "county-b"), (2, "county-a")]
    # townships: a-t2 and b-t2 tie at 100 % / 100 % → by id; a-t3 100 % uplink but 99.9728 % agent;
    # then b-t1 (99.7917) and a-t1 (99.4444)
    assert [t["site"] for t in r["townships"]] == ["a-t2", "b-t2", "a-t3", "b-t1", "a-t1"]
    # the worst devices city-wide: sw-a1 36,000 s, sw-a 1,800 s, ups-a1 300 s; core never down
    assert [(d["device"], d["site"], d["downtime_s"]) for d in r["worst_devices"]] == [
        ("sw-a1", "a-t1", 36000),
        ("sw-a", "county-a", 1800),
        ("ups-a1", "a-t1", 300),
    ]


def test_october_holds_the_other_part_of_the_boundary_outage(setup: tuple[Path, Path]) -> None:
    r = report(setup[0], "2026-10")
    # county-a uplink in October: 31 Oct 22:00 → 1 Nov 00:00 = 7,200 s, still down when October
    # ended: counted (open), no MTTR. 1 − 7,200 / 2,678,400 = 99.731182…% → 99.7312
    assert site(r, "county-a")["uplink"] == fig(99.7312, M_OCT, 7200, 1, 1, 0, None)
    # sw-a: 31 Oct 23:00 → recovered at the very end of October: 3,600 s, recovered in October
    assert site(r, "county-a")["devices"] == fig(99.8656, M_OCT, 3600, 1, 0, 1, 3600)
    # county-b's agent joined in November: nothing observed in October
    assert site(r, "county-b")["agents"] == fig(None, 0, 0, 0)


def test_month_under_way_stops_at_now(setup: tuple[Path, Path]) -> None:
    r = report(setup[0], "2026-12")
    assert r["partial"] is True and r["end"] == "2026-12-02T00:00:00+08:00"
    # a-t1, cut since 30 Nov 20:00: all of 1 December (86,400 s) down, open → 0 %
    assert site(r, "a-t1")["uplink"] == fig(0.0, 86400, 86400, 1, 1, 0, None)
    assert r["townships"][-1]["site"] == "a-t1"


def test_month_bounds_follow_the_configured_zone(setup: tuple[Path, Path]) -> None:
    r = report(setup[1], "2026-11")
    assert r["timezone"] == "UTC" and r["start"] == "2026-11-01T00:00:00+00:00"
    # in UTC the county-a cut of 31 Oct 22:00 → 1 Nov 02:00 (+08) is 14:00 → 18:00 on 31 October:
    # wholly October. Only 10 Nov 02:00 → 02:30 UTC is left: 1,800 s
    assert site(r, "county-a")["uplink"] == fig(99.9306, M_NOV, 1800, 1, 0, 1, 1800)
    # a-t1 cut 30 Nov 12:00 UTC, and the UTC month ends 1 Dec 00:00: 12 h = 43,200 s
    # (2,592,000 − 43,200) / 2,592,000 = 98.333…%
    assert site(r, "a-t1")["uplink"] == fig(98.3333, M_NOV, 43200, 1, 1, 0, None)


def test_bad_months() -> None:
    for bad in ("2026-13", "2026-1", "26-11", "2026/11", "", "2026-00", "1999-12", "2999-01"):
        with pytest.raises(rep.ReportError, match="YYYY-MM"):
            rep.Month.parse(bad, "Asia/Shanghai")
    with pytest.raises(rep.ReportError, match="not begun"):
        rep.compute(rep.Month.parse("2027-01", "Asia/Shanghai"), [], now_ns=NOW)


def test_the_recorder_writes_a_change_once(tmp_path: Path) -> None:
    """Repeated statuses, a redelivered retained status after a restart and a late backlog add no
    transition: the log keeps only changes, in time order, across reopenings."""
    st = StateDB(tmp_path / "state.db")
    log = st.transitions
    assert log.note("agent", "ag", "up", 100)
    assert not log.note("agent", "ag", "up", 200)  # repeated online
    assert log.note("agent", "ag", "down", 300)
    assert not log.note("agent", "ag", "up", 250)  # dated before the last change: late
    assert log.late == 1
    st.close()
    st = StateDB(tmp_path / "state.db")  # a restart: the last state comes from the file
    assert not st.transitions.note("agent", "ag", "down", 400)  # the retained offline, redelivered
    assert st.transitions.note("agent", "ag", "up", 500)
    rows = st._db.execute("SELECT state, at_ns FROM transitions ORDER BY id").fetchall()
    assert rows == [("up", 100), ("down", 300), ("up", 500)]
    st.close()


def test_agent_change_time_for_a_last_will() -> None:
    from collector.availability import agent_change_time

    # the Last Will carries the agent's start time (before the last online): received time wins
    assert agent_change_time(doc_ns=1_000, received_ns=9_000, last_ns=5_000) == 9_000
    # a clean stop's offline carries its own time
    assert agent_change_time(doc_ns=7_000, received_ns=9_000, last_ns=5_000) == 7_000
    # a document from the future is not believed; nor is anything for an agent never seen before
    assert agent_change_time(doc_ns=10**15, received_ns=9_000, last_ns=5_000) == 9_000
    assert agent_change_time(doc_ns=7_000, received_ns=9_000, last_ns=None) == 9_000


# --- the CLI ----------------------------------------------------------------------------------


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_json_html_csv(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = str(setup[0])
    r = cli("report", "--month", "2026-11", "--config", cfg, "--json")
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert doc["month"] == "2026-11" and [c["site"] for c in doc["counties"]] == ["county-b", "county-a"]

    out = tmp_path / "r.html"
    r = cli("report", "--month", "2026-11", "--config", cfg, "--format", "html", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.stat().st_mode & 0o777 == 0o600
    page = out.read_text("utf-8")
    assert "网络运行情况通报" in page and "Network availability report" in page
    # everything escaped: the county's English name has markup in it
    assert "County A &lt;b&gt;" in page and "<b>" not in page
    # no external assets, no script
    assert not re.search(r"<script|<link|<img|src=|https?://", page, re.I)
    # the figures as printed: county-a uplink 99.653 %, 2 outages, 02:30:00 down, MTTR 02:15:00
    row = re.search(r"东区县 County A &lt;b&gt; <small>\(county-a\)</small></td>(.*?)</tr>", page.split("全部站点")[1])
    assert row is not None
    cells = re.findall(r"<td>(.*?)</td>", row[1])
    assert cells[:4] == ["99.653%", "2", "02:30:00", "02:15:00"]
    assert "a-t1" in page and "(1 open / 未恢复)" in page

    r = cli("report", "--month", "2026-11", "--config", cfg, "--format", "csv")
    assert r.exit_code == 0, r.output
    raw = r.stdout_bytes
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw[3:].decode("utf-8"))))
    head = rows[0]
    assert head[0] == "表 table" and "上联可用率% uplink_uptime_pct" in head
    by = {(x[0], x[2]): dict(zip(head, x, strict=True)) for x in rows[1:]}
    ca = by[("county 县", "county-a")]
    assert ca["排名 rank"] == "2" and ca["名称 name_zh"] == "东区县"
    # county-a summed: 99.7743 %, 3 outages (1 open), 23,400 s, MTTR 8,100 s
    assert (ca["上联可用率% uplink_uptime_pct"], ca["上联中断次数 uplink_outages"], ca["上联未恢复 uplink_open"]) == (
        "99.7743",
        "3",
        "1",
    )
    assert (ca["上联中断时长(秒) uplink_downtime_s"], ca["上联平均恢复时间(秒) uplink_mttr_s"]) == ("23400", "8100")
    assert [x[2] for x in rows[1:] if x[0] == "township 乡镇"] == ["a-t2", "b-t2", "a-t3", "b-t1", "a-t1"]
    # a name that Excel would run as a formula is quoted
    assert by[("township 乡镇", "b-t2")]["name name_en"].startswith("'=")
    assert by[("site 站点", "a-t1")]["故障最多设备 worst_devices"] == "sw-a1 (2×, 10:00:00); ups-a1 (1×, 00:05:00)"


def test_cli_errors(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = str(setup[0])
    r = cli("report", "--month", "2026-13", "--config", cfg)
    assert r.exit_code == 2 and "YYYY-MM" in r.stderr and r.stdout == ""
    r = cli("report", "--month", "2199-12", "--config", cfg)
    assert r.exit_code == 2 and "not begun" in r.stderr
    assert cli("report", "--config", cfg).exit_code == 2  # --month is required
    assert cli("report", "--month", "2026-11", "--config", cfg, "--format", "pdf").exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("collector: {timezone: Mars/Olympus}\n")
    r = cli("report", "--month", "2026-11", "--config", str(bad))
    assert r.exit_code == 2 and "collector.timezone" in r.output and "IANA" in r.output
    # nothing recorded at all: the report is still written, exit 1 says it is empty
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"collector: {{data_dir: {tmp_path / 'none'}}}\n")
    r = cli("report", "--month", "2026-11", "--config", str(empty), "--json")
    assert r.exit_code == 1 and orjson.loads(r.stdout)["sites"] == [] and "nothing was observed" in r.stderr
    # a folder that is a file: cannot write there
    (tmp_path / "a-file").write_text("")
    r = cli("report", "--month", "2026-11", "--config", cfg, "--out", str(tmp_path / "a-file" / "r.html"))
    assert r.exit_code == 3 and "cannot write" in r.stderr


# --- the API ----------------------------------------------------------------------------------


class _View:
    def __init__(self, cfg: collector_config.CollectorConfig) -> None:
        self.cfg = cfg

    def stats(self) -> dict[str, Any]:
        return {"connected": True}

    def agents(self) -> list[dict[str, Any]]:
        return []

    def unknown_agents(self) -> list[dict[str, Any]]:
        return []

    def sites(self) -> list[dict[str, Any]]:
        return []

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Any]:
        return []


@pytest.fixture
def api(setup: tuple[Path, Path], tmp_path: Path) -> Iterator[str]:
    cfg = collector_config.load(setup[0])
    users = UserDB(tmp_path / "users.db", password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    for name, role in (("vera", "viewer"), ("aud", "auditor")):
        users.add_user(LocalAdmin("t"), name, role, "Zq1-Correct-horse-1")
        users.set_password(LocalAdmin("t"), name, "Zq1-Correct-horse-1", must_change=False)
    srv = ApiServer(_View(cfg), "127.0.0.1", 0, backend=Backend(users=users))
    srv.start()
    try:
        yield f"http://127.0.0.1:{srv.port}"
    finally:
        srv.stop()
        users.close()


def _login(base: str, name: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=10)
    assert c.post("/api/login", json={"name": name, "password": "Zq1-Correct-horse-1"}).status_code == 200
    return c


def test_api_report_viewer_yes_anonymous_no(api: str) -> None:
    assert httpx.get(api + "/report?month=2026-11").status_code == 401
    assert _login(api, "aud").get("/report?month=2026-11").status_code == 403  # the auditor reads no monitoring data
    c = _login(api, "vera")
    r = c.get("/report", params={"month": "2026-11"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    # the page's own policy: its one style by hash, nothing else
    csp = r.headers["content-security-policy"]
    assert csp == rep.CSP and "script-src" not in csp and "default-src 'none'" in csp
    assert "东区县 County A &lt;b&gt;" in r.text
    r = c.get("/report", params={"month": "2026-11", "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf") and "county-a" in r.content.decode("utf-8-sig")
    assert "attachment" in r.headers["content-disposition"]
    assert c.get("/report", params={"month": "2026-13"}).status_code == 400
    assert c.get("/report", params={"month": "soon"}).status_code == 400
    assert c.get("/report", params={"month": "2026-11", "format": "pdf"}).status_code == 400
    # no month: this month so far (in the collector's zone)
    r = c.get("/report")
    assert r.status_code == 200 and f"Network availability report, {rep.this_month('Asia/Shanghai')}" in r.text
    # the other HTML pages keep the status page's policy
    assert c.get("/").headers["content-security-policy"] != rep.CSP


def test_report_reads_without_waiting_for_a_time(setup: tuple[Path, Path]) -> None:
    """The report of a past month is the same whenever it is made."""
    a = report(setup[0], "2026-11", NOW)
    b = report(setup[0], "2026-11", NOW + 40 * 86400 * NS)
    a.pop("generated"), b.pop("generated")
    assert a == b


def test_a_device_is_down_while_all_its_probes_say_down(tmp_path: Path) -> None:
    from collector.availability import DeviceTracker
    from probes.model import status_sample

    st = StateDB(tmp_path / "state.db")
    tracker = DeviceTracker(st.transitions)
    tags = {"device": "sw1", "site": "a-t1", "county": "county-a"}

    def ps(probe: str, status: str, t: int) -> Any:
        return status_sample(probe, "10.0.0.1", status, tags=tags, time_ns=t)  # type: ignore[arg-type]

    assert tracker.observe([ps("icmp", "ok", 1), ps("snmp", "ok", 1)]) == 1  # first sight: up
    assert tracker.observe([ps("snmp", "down", 2)]) == 0  # icmp still answers: up
    assert tracker.observe([ps("icmp", "down", 3)]) == 1  # both down: down at 3
    assert tracker.observe([ps("icmp", "down", 4), ps("snmp", "down", 4)]) == 0
    assert tracker.observe([ps("snmp", "degraded", 5)]) == 1  # a part answers: up at 5
    assert tracker.observe([status_sample("icmp", "x", "down", time_ns=6)]) == 0  # no device tag: not a device
    rows = st._db.execute("SELECT subject, site, county, state, at_ns FROM transitions ORDER BY id").fetchall()
    assert rows == [
        ("sw1", "a-t1", "county-a", "up", 1),
        ("sw1", "a-t1", "county-a", "down", 3),
        ("sw1", "a-t1", "county-a", "up", 5),
    ]
    st.close()
