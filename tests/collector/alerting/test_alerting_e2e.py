"""End to end: real agents, Mosquitto and the collector as processes; a local HTTP server records
what the WeCom robot, the DingTalk robot (signature checked) and a json:// webhook receive."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.procs import CollectorProc, Proc, agent_proc
from services import free_port

sys.path.insert(0, str(Path(__file__).parent))
from e2e_helpers import SECRET, Link, Recorder  # noqa: E402

pytestmark = pytest.mark.e2e


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
