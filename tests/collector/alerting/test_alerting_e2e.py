"""End to end: real agents, Mosquitto and the collector as processes; a local HTTP server records
what the WeCom robot, the DingTalk robot (signature checked) and a json:// webhook receive."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e.procs import CollectorProc, Proc, agent_proc
from services import free_port

pytestmark = pytest.mark.e2e
SECRET = "SECtest0123456789"


class Recorder:
    """Plays the WeCom and DingTalk robot APIs and a generic webhook; keeps what it is sent."""

    def __init__(self) -> None:
        self.got: dict[str, list[str]] = {"wecom": [], "dingtalk": [], "json": []}
        self.bad: list[str] = []
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query)
                if url.path == "/cgi-bin/webhook/send":
                    if body.get("msgtype") != "markdown" or not isinstance(body["markdown"].get("content"), str):
                        rec.bad.append(f"wecom shape: {body}")
                    rec.got["wecom"].append(body["markdown"]["content"])
                elif url.path == "/robot/send":
                    ts = q["timestamp"][0]
                    want = base64.b64encode(
                        hmac.new(SECRET.encode(), f"{ts}\n{SECRET}".encode(), hashlib.sha256).digest()
                    )
                    if q["sign"][0].encode() != want or abs(int(ts) / 1000 - time.time()) > 3600:
                        rec.bad.append(f"dingtalk signature: {q}")
                    rec.got["dingtalk"].append(body["markdown"]["text"])
                else:
                    rec.got["json"].append(body.get("message", ""))
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.got.items()}

    def wait(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while min(self.count().values()) < n and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Link:
    """A loopback port the city agent probes as the county's uplink: close() is the cut."""

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


RULES = """
rules:
  - name: link_down
    measurement: tcp
    field: result
    where: [link=~.+]
    when: "!= 'ok'"
    clear: "== 'ok'"
    for: 1s
    severity: critical
    summary: {en: "link to {link} down", zh: "到 {link} 的链路中断"}
  - name: agent_silent
    kind: absent
    for: 3s
    by: [agent]
    severity: critical
    summary: {en: "agent {agent} silent", zh: "代理 {agent} 无数据"}
"""
TOPO = """
sites:
  - id: city
    kind: city
    agents: [ag-city]
    children:
      - id: county-a
        kind: county
        name: {en: County A, zh: 东区县}
        agents: [ag-a]
        devices: [sw-a]
        uplink: {rule: link_down, match: [link=county-a]}
        children:
          - {id: t1, kind: township, agents: [ag-t1], devices: [d1, d2]}
          - {id: t2, kind: township, agents: [ag-t2], devices: [d3]}
          - {id: t3, kind: township, agents: [ag-t3], devices: [d4]}
"""
SITES = {"ag-city": "city", "ag-a": "county-a", "ag-t1": "t1", "ag-t2": "t2", "ag-t3": "t3"}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def test_county_cut_off_restart_and_back(tmp_path: Path, mosquitto: Any, recorder: Recorder) -> None:
    link = Link()
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "topology.yaml").write_text(TOPO)
    api = free_port()
    base = f"http://127.0.0.1:{recorder.port}"
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{id: c, data_dir: {tmp_path / 'data'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        f"api: {{port: {api}}}\n"
        "alerting:\n  rules: rules.yaml\n  topology: topology.yaml\n  settle: 2s\n  startup_grace: 3s\n"
        "  channels:\n"
        f"    wecom: {{wecom_webhook: '{base}/cgi-bin/webhook/send?key=k1'}}\n"
        f"    dingtalk: {{dingtalk_webhook: '{base}/robot/send?access_token=t1', dingtalk_secret: {SECRET}}}\n"
        f"    json: {{url: 'json://127.0.0.1:{recorder.port}/hook'}}\n"
        "  routes:\n"
        "    - {channels: [wecom, dingtalk], language: zh, group_wait: 500ms}\n"
        "    - {channels: [json], language: en, group_wait: 500ms}\n"
    )
    procs: dict[str, Proc] = {}

    def start_agent(aid: str) -> None:
        probe = (
            f"  - {{type: tcp, name: uplink-a, host: 127.0.0.1, port: {link.port}, interval: 300ms, jitter: 0s, timeout: 250ms, tags: {{link: county-a}}}}\n"
            if aid == "ag-city"
            else f"  - {{type: tcp, name: self, host: 127.0.0.1, port: {link.port}, interval: 500ms, jitter: 0s, timeout: 400ms}}\n"
        )
        p = tmp_path / f"{aid}.yaml"
        p.write_text(
            f"agent: {{id: {aid}, site: {SITES[aid]}}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, keepalive: 2s}}\n"
            f"spool: {{path: {tmp_path / (aid + '-spool.db')}}}\n"
            f"publish: {{batch_interval: 300ms, self_metrics_interval: 1s}}\nprobes:\n{probe}"
        )
        procs[aid] = agent_proc(p, tmp_path / f"{aid}.tee", tmp_path / f"{aid}.log")

    col = CollectorProc(cfg, api, tmp_path / "collector-1.log")
    try:
        col.wait_ready()
        for aid in SITES:
            start_agent(aid)
        deadline = time.monotonic() + 20
        while {a["id"] for a in col.get("/api/agents")} < set(SITES) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {a["id"] for a in col.get("/api/agents")} == set(SITES), [p.tail() for p in procs.values()]
        time.sleep(1.0)
        assert recorder.count() == {"wecom": 0, "dingtalk": 0, "json": 0}, recorder.got

        # the county's uplink fails: the county and its 3 townships go dark (townships a little first)
        for aid in ("ag-t1", "ag-t2", "ag-t3"):
            procs[aid].kill()
        link.close()
        procs["ag-a"].kill()
        recorder.wait(1, timeout_s=15)
        time.sleep(4)  # anything racing behind it would show up now
        assert recorder.count() == {"wecom": 1, "dingtalk": 1, "json": 1}, recorder.got
        assert "东区县 不可达 — 3 个乡镇、5 台设备失联" in recorder.got["wecom"][0]
        assert "东区县 不可达" in recorder.got["dingtalk"][0]
        assert "County A unreachable — 3 townships, 5 devices cut off" in recorder.got["json"][0]

        # the collector restarts while it is firing: no second notice
        assert col.stop() == 0
        col = CollectorProc(cfg, api, tmp_path / "collector-2.log")
        col.wait_ready()
        time.sleep(5)  # past startup_grace + settle
        assert recorder.count() == {"wecom": 1, "dingtalk": 1, "json": 1}, recorder.got

        # the link comes back and the agents behind it reconnect: one resolved notice each
        link.open()
        for aid in ("ag-a", "ag-t1", "ag-t2", "ag-t3"):
            start_agent(aid)
        recorder.wait(2, timeout_s=20)
        time.sleep(4)
        assert recorder.count() == {"wecom": 2, "dingtalk": 2, "json": 2}, recorder.got
        assert "已恢复" in recorder.got["wecom"][1] and "东区县" in recorder.got["wecom"][1]
        assert "RESOLVED" in recorder.got["json"][1] and "County A" in recorder.got["json"][1]
        assert recorder.bad == []
    finally:
        for p in procs.values():
            p.kill()
        col.stop()
        link.close()
