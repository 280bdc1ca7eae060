"""The status page in a real browser against a real run: Mosquitto, the collector with alerting and
a topology, two agents (one polling the demo's simulated Modbus room sensor, one pinging its uplink
and probing a closed port), and Debian's headless Chromium driven by selenium.

One run and one browser for the module. What it must show: the site tree with the affected sites
coloured, the firing alerts, the latest key values (checked against the simulator's inputs and the
SQLite store), agent versions; an operator logs in through the page and acks (the alert store
confirms), a half-typed comment survives the auto-refresh, a form without the session's CSRF token is
refused; a viewer sees no buttons and a forged POST is refused (403). Screenshots at desktop and
phone width go to ``$NETWATCH_TEST_ARTIFACTS`` (default ``var/test-artifacts/``)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e.procs import CollectorProc, Proc, agent_proc
from services import Mosquitto, free_port, start_mosquitto

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"otto": "Operator-pass-4242", "vera": "Viewer-pass-4242"}
#: the simulated room (configs/demo/sim_modbus.py Room): base temperature and humidity; with a
#: period of years the sine does not move during the test
ROOM_C, ROOM_RH = 23.5, 50.0

TOPOLOGY = """
sites:
  - id: city
    kind: city
    name: {en: City centre, zh: 市中心}
    children:
      - id: county-a
        kind: county
        name: {en: County A, zh: 东区县}
        agents: [agent-a]
        devices: [th-county-a]
        children:
          - {id: t1, kind: township, name: {en: Xinzhuang, zh: 新庄镇}, agents: [agent-t1]}
          - {id: t2, kind: township, name: {en: Hexi, zh: 河西乡}, agents: [agent-t2]}
"""
RULES = """
rules:
  - name: service_down
    measurement: tcp
    field: result
    where: [target=svc]
    when: "!= 'ok'"
    clear: "== 'ok'"
    severity: critical
    summary: {en: "{site}: service down", zh: "{site}：服务中断"}
  - name: room_warm
    measurement: room_env
    field: temperature_c
    when: "> 20"
    clear: "< 19"
    severity: warning
    summary: {en: "{site}: machine room at {value} °C", zh: "{site}：机房温度 {value} °C"}
"""


def artifacts_dir() -> Path:
    d = Path(os.environ.get("NETWATCH_TEST_ARTIFACTS") or ROOT / "var" / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _load_sim_modbus() -> Any:
    import importlib.util
    import sys

    name = "netwatch_demo_sim_modbus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / "demo" / "sim_modbus.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def wait_for(what: str, cond: Callable[[], Any], timeout_s: float = 20.0, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


@dataclass
class Run:
    col: CollectorProc
    url: str
    tmp: Path

    def alerts(self) -> dict[str, dict[str, Any]]:
        return {a["rule"]: a for a in self.col.get("/api/alerts")}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    from collector.users import LocalAdmin, UserDB

    tmp = tmp_path_factory.mktemp("page")
    broker: Mosquitto = start_mosquitto(tmp / "broker")
    sim = _load_sim_modbus().start(free_port(), period_s=1e9)
    procs: list[Proc] = []
    col: CollectorProc | None = None
    try:
        (tmp / "topology.yaml").write_text(TOPOLOGY)
        (tmp / "rules.yaml").write_text(RULES)
        api = free_port()
        cfg = tmp / "collector.yaml"
        cfg.write_text(
            f"collector: {{id: page, data_dir: {tmp / 'data'}}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {broker.port}}}\n"
            "storage:\n  sqlite: {}\n"
            f"api: {{port: {api}}}\n"
            "alerting: {rules: rules.yaml, topology: topology.yaml, settle: 0s, startup_grace: 0s}\n"
        )
        (tmp / "data").mkdir(mode=0o700)
        db = UserDB(tmp / "data" / "users.db")
        try:
            db.add_user(LocalAdmin("tests"), "otto", "operator", PASSWORDS["otto"])
            db.add_user(LocalAdmin("tests"), "vera", "viewer", PASSWORDS["vera"])
            for name, pw in PASSWORDS.items():
                db.set_password(LocalAdmin("tests"), name, pw, must_change=False)
        finally:
            db.close()
        agents = {
            "agent-a": (
                "county-a",
                [
                    f"{{type: modbus, name: th-county-a, target: 'tcp://127.0.0.1:{sim.port}', unit: 1,"
                    " map: renke_rs_ws_n01, labels: {main: machine-room}, interval: 1s, timeout: 900ms}",
                ],
            ),
            "agent-t1": (
                "t1",
                [
                    "{type: icmp, name: uplink-county, host: 127.0.0.1, count: 2, interval: 1s,"
                    " packet_interval: 100ms, packet_timeout: 1s, tags: {link: uplink}}",
                    f"{{type: tcp, name: svc, host: 127.0.0.1, port: {free_port()}, interval: 500ms}}",
                ],
            ),
        }
        for aid, (site, probes) in agents.items():
            p = tmp / f"{aid}.yaml"
            p.write_text(
                f"agent: {{id: {aid}, site: {site}}}\n"
                f"mqtt: {{host: 127.0.0.1, port: {broker.port}, keepalive: 2s}}\n"
                f"spool: {{path: {tmp / (aid + '-spool.db')}}}\n"
                "publish: {batch_interval: 300ms}\nprobes:\n" + "".join(f"  - {x}\n" for x in probes)
            )
            procs.append(agent_proc(p, tmp / f"{aid}.tee", tmp / f"{aid}.log"))
        # the agents start meanwhile (they spool until the collector is there): a few seconds saved
        col = CollectorProc(cfg, api, tmp / "collector.log")
        col.wait_ready()
        r = Run(col, col.api, tmp)

        def fired() -> bool:
            assert col is not None
            if not all(p.alive() for p in [col, *procs]):
                raise AssertionError("a process died:\n" + "\n".join(p.tail() for p in [col, *procs]))
            return {"service_down", "room_warm"} <= set(r.alerts())

        try:
            wait_for("service_down and room_warm firing", fired, 30)
        except AssertionError as e:
            raise AssertionError(f"{e}\n" + "\n".join(p.tail() for p in [col, *procs])) from None
        yield r
    finally:
        for p in procs:
            p.stop()
        if col is not None:
            col.stop()
        sim.stop()
        broker.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.fail(
            "Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver fonts-noto-cjk)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we run as root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        "--window-size=1366,900",
    ):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"intl.accept_languages": "zh-CN,zh,en"})  # what a desk in the city sends
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(driver_bin))
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()


# --- helpers --------------------------------------------------------------------------------------


def viewport(drv: Any, width: int, height: int, mobile: bool) -> None:
    drv.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def screenshot(drv: Any, name: str) -> Path:
    """The whole page at the current width, as a PNG artefact."""
    import base64

    h = int(drv.execute_script("return Math.ceil(document.documentElement.scrollHeight)"))
    w = int(drv.execute_script("return window.innerWidth"))
    shot = drv.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": w, "height": min(h, 6000), "scale": 1},
        },
    )
    out = artifacts_dir() / f"status-page-{name}.png"
    out.write_bytes(base64.b64decode(shot["data"]))
    assert out.stat().st_size > 10_000, out
    return out


def login(drv: Any, url: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    drv.get(url + "/")
    drv.find_element(By.NAME, "name").send_keys(user)
    drv.find_element(By.NAME, "password").send_keys(PASSWORDS[user])
    drv.find_element(By.CSS_SELECTOR, 'form[action="/login"] button').click()
    wait_for(f"{user}'s status page", lambda: drv.find_elements(By.ID, "sites"), 10, 0.1)


def logout(drv: Any) -> None:
    from selenium.webdriver.common.by import By

    drv.find_element(By.CSS_SELECTOR, 'form[action="/logout"] button').click()
    wait_for("the login form", lambda: drv.find_elements(By.CSS_SELECTOR, 'form[action="/login"]'), 10, 0.1)


def refresh_now(drv: Any) -> None:
    """Have page.js refresh the live sections now (it would anyway every few seconds)."""
    before = drv.execute_script("return document.body.getAttribute('data-refreshed')")
    drv.execute_script("document.dispatchEvent(new Event('netwatch:refresh'))")
    wait_for(
        "the page's own refresh",
        lambda: drv.execute_script("return document.body.getAttribute('data-refreshed')") != before,
        10,
        0.05,
    )


def post_from_page(drv: Any, path: str, body: str, ctype: str) -> int:
    """A POST made by script in the page, with the browser's session cookie: what a forged
    request from a tampered page (or the browser's console) would be."""
    return int(
        drv.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {method: 'POST', credentials: 'same-origin', headers: {'Content-Type': arguments[2]},"
            " body: arguments[1], redirect: 'manual'}).then(r => done(r.status), e => done(-1));",
            path,
            body,
            ctype,
        )
    )


def rendering_fonts(drv: Any, selector: str) -> list[str]:
    """The platform fonts Chromium really drew ``selector``'s text with (DevTools CSS domain)."""
    drv.execute_cdp_cmd("DOM.enable", {})
    drv.execute_cdp_cmd("CSS.enable", {})
    root = drv.execute_cdp_cmd("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    node = drv.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    got = drv.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return [f["familyName"] for f in got if f.get("glyphCount", 0) > 0]


SNAPSHOT_JS = """
const out = {sites: {}, alerts: {}, sections: {}};
for (const s of document.querySelectorAll('.site')) {
  const vals = {};
  for (const k of s.querySelectorAll('[data-key]')) vals[k.dataset.key] = k.innerText;
  out.sites[s.dataset.site] = {state: s.dataset.state, text: s.innerText, vals: vals,
                               border: getComputedStyle(s).borderLeftColor};
}
for (const a of document.querySelectorAll('.alert')) {
  out.alerts[a.dataset.alert] = {text: a.innerText, cls: a.className,
                                 ack: !!a.querySelector('form[action$="/ack"] button'),
                                 silence: !!a.querySelector('details.silence')};
}
for (const id of ['summary', 'alerts', 'silences', 'agents']) {
  const e = document.getElementById(id);
  out.sections[id] = e ? e.innerText : null;
}
out.updated = (document.getElementById('updated') || {}).textContent;
return out;
"""


def snapshot(drv: Any) -> dict[str, Any]:
    """What the page shows, read in one go: the page swaps its sections in as it refreshes itself,
    so element handles held across steps may go stale; one script sees one state of the page."""
    return dict(drv.execute_script(SNAPSHOT_JS))


def retry(step: Callable[[], Any], tries: int = 5) -> Any:
    """``step`` again when the page swapped the element in hand for a fresh copy meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    for i in range(tries):
        try:
            return step()
        except StaleElementReferenceException:
            if i == tries - 1:
                raise
    return None


def _open_silence(drv: Any, alert_id: int) -> Any:
    from selenium.webdriver.common.by import By

    card = drv.find_element(By.ID, f"alert-{alert_id}")
    card.find_element(By.CSS_SELECTOR, "details.silence summary").click()
    return card


def number(text: str, unit: str) -> float:
    m = re.search(r"([0-9]+(?:\.[0-9]+)?) ?" + re.escape(unit), text)
    assert m, (text, unit)
    return float(m.group(1))


def shown_close(shown: float, values: list[float]) -> bool:
    """``shown`` is one of ``values`` as the page rounds it (3 significant-ish digits)."""
    return any(abs(shown - v) <= (0.5 if v >= 100 else 0.05 if v >= 10 else 0.005) + 1e-9 for v in values)


# --- the test ---------------------------------------------------------------------------------------


def test_status_page_in_a_browser(run: Run, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    drv = browser
    firing = run.alerts()
    down, warm = firing["service_down"], firing["room_warm"]
    assert down["acked_by"] is None and warm["acked_by"] is None

    # -- an operator logs in through the page (Accept-Language zh-CN: Chinese)
    viewport(drv, 1366, 900, mobile=False)
    login(drv, run.url, "otto")
    assert drv.execute_script("return document.documentElement.lang") == "zh-CN"
    shown = snapshot(drv)
    assert "当前告警" in shown["sections"]["alerts"]

    # the tree, coloured: the township with the service down critical, the county with the warm room
    # warning (and critical below it), the township with no agent yet unknown
    sites = shown["sites"]
    assert {k: v["state"] for k, v in sites.items()} == {
        "city": "unknown",  # no agent of its own
        "county-a": "warning",
        "t1": "critical",
        "t2": "unknown",
    }
    assert "下级" in sites["county-a"]["text"] and "下级" in sites["city"]["text"]  # "below: critical"
    # the stylesheet is applied (the CSP let it in): the critical site's border is the critical red
    assert sites["t1"]["border"] in ("rgb(198, 40, 40)", "rgba(198, 40, 40, 1)")
    # nesting: t1 sits inside county-a inside city
    assert drv.find_elements(By.CSS_SELECTOR, "#site-city + ul #site-county-a + ul #site-t1")

    # the firing alerts, each with its ack form
    for a in (down, warm):
        card = shown["alerts"][str(a["id"])]
        assert a["summary"]["zh"] in card["text"] and card["ack"] and card["silence"]
    assert "sev-critical" in shown["alerts"][str(down["id"])]["cls"]

    # key values: the room as the simulator set it; the uplink as the store has it
    room = sites["county-a"]["vals"]["room"]
    assert number(room, "°C") == ROOM_C and number(room, "%") == ROOM_RH, room
    rows = run.col.get("/api/query?measurement=icmp&agent=agent-t1&since=10m")
    assert rows, "no icmp samples stored"
    uplink = sites["t1"]["vals"]["uplink"]
    assert number(uplink, "%") in {r["fields"]["loss_pct"] for r in rows}, uplink
    assert shown_close(
        number(uplink, "ms"), [r["fields"]["rtt_avg_ms"] for r in rows if "rtt_avg_ms" in r["fields"]]
    ), (uplink, rows)
    # agent versions and last seen, as the inventory has them
    versions = {a["id"]: a["version"] for a in run.col.get("/api/agents")}
    assert f"agent-a · v{versions['agent-a']}" in sites["county-a"]["text"]
    assert "agent-t2" in sites["t2"]["text"] and "尚未上报" in sites["t2"]["text"]
    # the monthly report is linked, and the link opens it (the same session, the report's own CSP)
    href = drv.find_element(By.CSS_SELECTOR, "a.report").get_attribute("href")
    assert re.fullmatch(r"/report\?month=\d{4}-\d{2}", href.removeprefix(run.url))
    drv.get(href)
    wait_for("the report", lambda: "网络运行情况通报" in drv.title, 10, 0.1)
    assert "Network availability report" in drv.title
    screenshot(drv, "report-desktop-1366")
    drv.get(run.url + "/")
    wait_for("the page again", lambda: drv.find_elements(By.ID, "sites"), 10, 0.1)

    # -- the Chinese renders: the CJK font is there and nothing overflows at phone width
    fonts = rendering_fonts(drv, "#site-city .name")
    assert any("CJK" in f for f in fonts), f"市中心 is drawn with {fonts}: no CJK font (apt-get install fonts-noto-cjk)"
    screenshot(drv, "operator-desktop-1366-zh")
    viewport(drv, 390, 844, mobile=True)
    drv.refresh()
    wait_for("the page at phone width", lambda: drv.find_elements(By.ID, "sites"), 10, 0.1)
    assert drv.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"), drv.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    screenshot(drv, "operator-phone-390-zh")
    viewport(drv, 1366, 900, mobile=False)

    # -- a form without the session's CSRF token is refused, and nothing happens
    assert (
        post_from_page(drv, f"/alerts/{down['id']}/ack", "comment=forged", "application/x-www-form-urlencoded") == 403
    )
    assert run.alerts()["service_down"]["acked_by"] is None

    # -- a half-typed comment survives the refresh; the rest of the page is refreshed meanwhile
    drv.get(run.url + "/?lang=en")
    assert "Active alerts" in snapshot(drv)["sections"]["alerts"]
    comment = f'form[action="/alerts/{down["id"]}/ack"] input[name="comment"]'
    retry(lambda: drv.find_element(By.CSS_SELECTOR, comment).send_keys("on it — 正在处理"))
    drv.find_element(By.TAG_NAME, "h1").click()  # the field loses focus: only its content keeps it
    updated = snapshot(drv)["updated"]
    time.sleep(1.1)  # the clock shown has one-second steps
    refresh_now(drv)
    assert snapshot(drv)["updated"] != updated  # the summary was swapped in
    box = drv.find_element(By.CSS_SELECTOR, comment)
    assert box.get_attribute("value") == "on it — 正在处理"
    box.send_keys(", ETA 30 min")
    drv.find_element(By.CSS_SELECTOR, f'form[action="/alerts/{down["id"]}/ack"] button').click()
    wait_for(
        "the page to show the ack",
        lambda: "acked by otto" in snapshot(drv)["alerts"].get(str(down["id"]), {}).get("text", ""),
        10,
        0.1,
    )
    assert not snapshot(drv)["alerts"][str(down["id"])]["ack"]
    acked = run.alerts()["service_down"]
    assert acked["acked_by"] == "otto" and acked["ack_comment"] == "on it — 正在处理, ETA 30 min"

    # -- a silence from the page, on the warm room
    # once open, the silence form's section is left alone by the refresh
    card = retry(lambda: _open_silence(drv, warm["id"]))
    matchers = card.find_element(By.NAME, "matchers").get_attribute("value").splitlines()
    assert "alertname=room_warm" in matchers and "site=county-a" in matchers
    card.find_element(By.CSS_SELECTOR, 'details.silence input[name="comment"]').send_keys("aircon being serviced")
    card.find_element(By.CSS_SELECTOR, "details.silence button").click()
    wait_for(
        "the silence on the page",
        lambda: "aircon being serviced" in (snapshot(drv)["sections"]["silences"] or ""),
        10,
        0.1,
    )
    assert "silenced by otto" in snapshot(drv)["alerts"][str(warm["id"])]["text"]
    silences = run.col.get("/api/silences")
    assert [(s["author"], s["comment"]) for s in silences] == [("otto", "aircon being serviced")]
    assert set(silences[0]["matchers"]) == set(matchers)
    screenshot(drv, "operator-desktop-1366-en-after-ack")
    logout(drv)

    # -- a viewer sees it all and may do none of it
    login(drv, run.url, "vera")
    assert "已确认，确认人 otto" in snapshot(drv)["alerts"][str(down["id"])]["text"]
    assert not drv.find_elements(By.CSS_SELECTOR, "main form, main button, details.silence")
    assert [b.text for b in drv.find_elements(By.TAG_NAME, "button")] == ["退出"]  # log out, nothing else
    assert (
        post_from_page(drv, f"/alerts/{warm['id']}/ack", "comment=x&csrf=x", "application/x-www-form-urlencoded") == 403
    )
    assert post_from_page(drv, f"/api/alerts/{warm['id']}/ack", '{"comment": "x"}', "application/json") == 403
    assert (
        post_from_page(drv, "/silences", "matchers=site%3Dcity&comment=x&csrf=x", "application/x-www-form-urlencoded")
        == 403
    )
    assert run.alerts()["room_warm"]["acked_by"] is None and len(run.col.get("/api/silences")) == 1
    viewport(drv, 390, 844, mobile=True)
    drv.refresh()
    wait_for("the viewer's page at phone width", lambda: drv.find_elements(By.ID, "sites"), 10, 0.1)
    assert drv.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(drv, "viewer-phone-390-zh")

    # -- and the browser saw no CSP violation or script error on the way
    problems = [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE" and "403" not in e["message"]]
    assert problems == []
