"""The README's first command: the demo comes up, every agent reports, data is stored, alerts fire
and resolve and reach its terminal in Chinese and English, and it stops everything it started.

One real run on the compressed timeline (``--fast``: the default rules' durations divided by 4, the
city machine room heats at 5 s, East County's uplink is cut at 10 s for 25 s) is shared by the
tests here. The demo's ports are fixed, so only one demo may run at a time on a machine: keep this
module on one xdist worker (it checks the ports are free first, and fails clearly if not)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var" / "demo"
# The demo binds fixed ports: its tests share one pytest-xdist worker (tests/run.sh: --dist loadfile).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("demo-ports")]

#: portal, broker, API, Modbus, notice sink, East County's uplink (TCP); snmpsim (UDP)
TCP_PORTS = (18088, 18830, 18080, 18502, 18089, 18831)
UDP_PORTS = (16100,)
DURATION_S = 95
# Late enough for the city's portal probe (every 10 s, first run jittered up to 10 s) to fetch the
# intact page a few times even on a loaded machine: 20 s once left none before the defacement.
DEFACE_AT = 35
# The --fast timeline, as its help says: heat at 5 s, cut at 10 s for 25 s; the rules' for ÷ 4.
HEAT_AT, CUT_AT, CUT_FOR = 5.0, 10.0, 25.0
ROOM_FOR_S = 120 / 4  # room_temperature_high holds for 2m in configs/rules/default.yaml
# East County (topology.yaml): townships Dongcheng and Hedong; devices 2 of the county's + 3 of Dongcheng's
CUT_EN = "East County unreachable — 2 townships, 5 devices cut off"
CUT_ZH = "东区县 不可达 — 2 个乡镇、5 台设备失联"
ROOM_EN = "city: room temperature 28.5 °C above 27 °C (machine-room)"  # the room peaks 1.5 °C over the limit
ROOM_ZH = "city：机房温度 28.5 °C，高于 27 °C（machine-room）"
TOWNSHIP_WORDS = ("Dongcheng", "Hedong", "东城镇", "河东乡", "township-east")


def _port_free(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports_free() -> bool:
    return all(_port_free(p) for p in TCP_PORTS) and all(_port_free(p, socket.SOCK_DGRAM) for p in UDP_PORTS)


@dataclass
class Run:
    returncode: int
    out: str
    err: str
    notices: list[dict[str, Any]]


@pytest.fixture(scope="module")
def demo() -> Run:
    assert _ports_free(), "demo ports busy: is a demo running?"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "configs/demo/demo.py"),
            "--fast",
            "--duration",
            str(DURATION_S),
            "--deface-after",
            str(DEFACE_AT),
        ],
        capture_output=True,
        text=True,
        timeout=DURATION_S + 150,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "220"},  # rich wraps at 80 columns when not on a terminal
    )
    path = VAR / "notices.jsonl"
    notices = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
    return Run(r.returncode, r.stdout, r.stderr, notices)


def test_demo_runs_and_stops_cleanly(demo: Run) -> None:
    out = demo.out
    assert demo.returncode == 0, out + demo.err
    assert "http://127.0.0.1:18080/" in out
    online = [int(m) for m in re.findall(r"agents online (\d)/4", out)]
    stored = [int(m) for m in re.findall(r"samples stored (\d+)", out)]
    assert online and online[-1] == 4, out
    assert 1 in online, out  # during the cut only the city's agent is connected
    assert stored and stored[-1] > 50 and stored == sorted(stored), out
    assert all("rejected 0 " in line for line in out.splitlines() if "samples stored" in line), out
    # everything it started is gone: its ports are free again
    assert _ports_free()

    from collector.storage.sqlite import SqliteSink

    reader = SqliteSink.open_readonly(VAR / "collector/metrics.db")
    try:
        # the tamper detection saw the defacement, and the closed port is reported down
        http = reader.query("http", tags={"agent": "city-centre"})
        status = reader.query("probe_status", tags={"agent": "township-east-2"})
        # the machine-room sensors on Modbus report temperature, humidity and dew point
        room = reader.query("room_env", tags={"agent": "township-east-1"})
        city_room = reader.query("room_env", tags={"agent": "city-centre"})
        # the simulated switches and UPS on SNMP: interfaces, CPU, temperatures, UPS state
        ifaces = reader.query("interface", tags={"agent": "county-east"})
        cpu = reader.query("device_cpu", tags={"agent": "township-east-1"})
        temps = reader.query("device_sensor", tags={"agent": "township-east-1"})
        ups = reader.query("ups", tags={"agent": "city-centre"})
        county_host = reader.query("host_cpu", tags={"agent": "county-east"})
        county_to_city = reader.query("tcp", tags={"agent": "county-east", "target": "city-broker"})
    finally:
        reader.close()
    changed = [s.fields.get("changed") for s in http if "changed" in s.fields]
    assert False in changed and True in changed, changed
    assert any(s.fields["status"] == "down" and s.tags.get("probe") == "tcp" for s in status)
    assert room and all({"temperature_c", "humidity_pct", "dew_point_c"} <= set(s.fields) for s in room)
    assert all(s.fields["temperature_c"] < 27 for s in room)  # the township's room stays calm
    hot = [s.fields["temperature_c"] for s in city_room]
    assert max(hot) == pytest.approx(28.5, abs=0.05) and hot[-1] < 26, hot
    # heating without moisture coming in: the dew point holds while the temperature climbs
    dews = [s.fields["dew_point_c"] for s in city_room]
    assert max(dews) - min(dews) < 0.5, dews
    assert {s.tags["device"] for s in ifaces} >= {"sw-county-east", "sw-county-east-access"}
    assert cpu and temps and any("temperature_c" in s.fields for s in temps)
    assert ups and ups[-1].fields["output_source_name"] == "normal"
    # Nothing lost across the cut: the county agent kept measuring and sent its spool afterwards.
    # Its host probe runs every 15 s; the samples measured during the cut are stored.
    times = sorted(s.time_ns for s in county_host)
    gaps = [(b - a) / 1e9 for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 4 and max(gaps) < 20, gaps
    # and what it measured across its uplink shows the cut from its side: refused while it lasted
    results = [s.fields["result"] for s in sorted(county_to_city, key=lambda s: s.time_ns)]
    assert results[0] == "ok" and results[-1] == "ok" and results.count("refused") >= 3, results


def _plain(markdown: str) -> str:
    """What the terminal shows of a notice: the text without markdown emphasis and escapes."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("**", ""))


def _items(notice: dict[str, Any]) -> list[tuple[float, str]]:
    """(when received, alert line) for each alert a message carries: one, or a digest's ``- `` lines
    (alerts due together on a channel go out as one message)."""
    text = notice["text"]
    if text.startswith("### "):
        return [(notice["t"], _plain(x[2:])) for x in text.splitlines()[1:] if x.startswith("- ")]
    return [(notice["t"], _plain(text))]


def test_alerts_fire_resolve_and_reach_the_terminal_in_both_languages(demo: Run) -> None:
    assert demo.returncode == 0, demo.out + demo.err
    by_lang: dict[str, list[tuple[float, str]]] = {"zh": [], "en": []}
    for n in demo.notices:
        by_lang[n["lang"]] += _items(n)
        # what the sink received, it printed in the demo's terminal
        assert all(line in demo.out for _, line in _items(n)), (n, demo.out)
    words: dict[str, dict[str, Any]] = {
        "en": {"cut": CUT_EN, "room": ROOM_EN, "firing": ("[CRITICAL]", "[WARNING]"), "resolved": ("[RESOLVED]",)},
        "zh": {"cut": CUT_ZH, "room": ROOM_ZH, "firing": ("[严重]", "[警告]"), "resolved": ("[已恢复]",)},
    }
    ids: dict[str, set[int]] = {"cut": set(), "room": set()}
    for lang, got in by_lang.items():
        w = words[lang]
        # no township is paged: the cut-off is the county's, once
        assert not any(t in line for _, line in got for t in TOWNSHIP_WORDS), got
        for what in ("cut", "room"):
            mine = [(t, line) for t, line in got if w[what] in line]
            kinds = [
                "firing" if any(k in line for k in w["firing"]) else "resolved"
                for _, line in mine
                if any(k in line for k in (*w["firing"], *w["resolved"]))
            ]
            # exactly one notice that it fired and one that it resolved, in that order
            assert len(mine) == 2 and kinds == ["firing", "resolved"], (lang, what, got)
            ids[what] |= {int(re.findall(r"#(\d+)$", line)[0]) for _, line in mine}
        (cut_fired, _), (cut_resolved, _) = (x for x in got if w["cut"] in x[1])
        # paged while the link was down, resolved only once it was back
        assert CUT_AT < cut_fired < CUT_AT + CUT_FOR, (cut_fired, got)
        assert cut_resolved > CUT_AT + CUT_FOR, (cut_resolved, got)
        (room_fired, _), (room_resolved, _) = (x for x in got if w["room"] in x[1])
        # not before the room had been above 27 °C for the rule's `for` (it passes 27 at ~12 s)
        assert room_fired > HEAT_AT + ROOM_FOR_S, room_fired
        assert room_resolved > room_fired
        # the other alert: the defaced portal (--deface-after DEFACE_AT), firing, never resolved
        others = [line for _, line in got if w["cut"] not in line and w["room"] not in line]
        assert len(others) == 1 and "city-portal" in others[0] and any(k in others[0] for k in w["firing"]), others
    assert len(ids["cut"]) == 1 and len(ids["room"]) == 1, ids  # both languages speak of the same alerts

    # Cross-check against the collector's own record of what it did.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "collector.cli",
            "alerts",
            "history",
            "--json",
            "--since",
            "1h",
            "--config",
            str(VAR / "collector-fast.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [orjson.loads(line) for line in r.stdout.splitlines()]
    fired = [(x["rule"], x["labels"].get("site")) for x in rows if x["event"] == "firing"]
    notified = sorted((x["rule"], x["alert_id"]) for x in rows if x["event"] == "notified")
    resolved = {(x["rule"], x["alert_id"]): x["detail"] for x in rows if x["event"] == "resolved"}
    # one site cut off (the county), not its townships; nothing else fired
    assert sorted(fired) == [
        ("portal_content_changed", "city"),
        ("room_temperature_high", "city"),
        ("site_unreachable", "county-east"),
    ], rows
    (cut_id,), (room_id,) = ids["cut"], ids["room"]
    assert ("site_unreachable", cut_id) in notified and ("room_temperature_high", room_id) in notified, rows
    assert len(notified) == 3, rows
    assert resolved == {("site_unreachable", cut_id): "resolved", ("room_temperature_high", room_id): "resolved"}, rows
    cut = next(x for x in rows if x["event"] == "firing" and x["rule"] == "site_unreachable")
    assert cut["labels"]["reason"] == "agents" and cut["detail"] == CUT_EN


def test_the_notice_sink_takes_robot_messages_and_refuses_the_rest(tmp_path: Path) -> None:
    """The WeCom-robot stand-in on a free port: a message the collector would send is kept and
    answered errcode 0; a wrong path or key, a body that is not a markdown message, or one too
    large is refused with the robot's kind of error and counted."""
    import threading
    import urllib.error
    import urllib.request
    from http.server import ThreadingHTTPServer

    sys.path.insert(0, str(ROOT / "configs/demo"))
    from demo import NoticeSink  # type: ignore[import-not-found]

    NoticeSink.log_path = tmp_path / "notices.jsonl"
    NoticeSink.received = NoticeSink.refused = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoticeSink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(path: str, body: bytes) -> tuple[int, int]:
        req = urllib.request.Request(base + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, orjson.loads(r.read())["errcode"]
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())["errcode"]

    good = orjson.dumps({"msgtype": "markdown", "markdown": {"content": "🔴 **[严重]** 东区县 不可达 #1"}})
    try:
        assert post("/cgi-bin/webhook/send?key=demo-zh", good) == (200, 0)
        assert post("/cgi-bin/webhook/send?key=someone-else", good) == (404, 93000)
        assert post("/elsewhere?key=demo-zh", good) == (404, 93000)
        assert post("/cgi-bin/webhook/send?key=demo-en", b"{not json") == (400, 40008)
        assert post("/cgi-bin/webhook/send?key=demo-en", orjson.dumps({"msgtype": "text", "text": {}})) == (400, 40008)
        assert post("/cgi-bin/webhook/send?key=demo-en", b"x" * (NoticeSink.MAX_BODY + 1)) == (413, 40058)
    finally:
        server.shutdown()
        server.server_close()
    kept = [orjson.loads(line) for line in NoticeSink.log_path.read_bytes().splitlines()]
    assert [(k["lang"], k["text"]) for k in kept] == [("zh", "🔴 **[严重]** 东区县 不可达 #1")]
    assert (NoticeSink.received, NoticeSink.refused) == (1, 5)


def test_a_cut_too_short_to_page_is_refused_before_anything_starts() -> None:
    before = sorted(p.name for p in VAR.iterdir()) if VAR.exists() else []
    r = subprocess.run(
        [sys.executable, str(ROOT / "configs/demo/demo.py"), "--cut-for", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "220"},
    )
    assert r.returncode == 2, r.stdout + r.stderr
    # settle 10 s + group wait 2 s (configs/demo/collector.yaml) + 5 s to spare
    assert "--cut-for 5 is too short" in r.stdout and "at least 17 s" in r.stdout, r.stdout
    assert (sorted(p.name for p in VAR.iterdir()) if VAR.exists() else []) == before  # the last run's files are kept
