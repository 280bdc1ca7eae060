"""Late data end to end, through real processes: Mosquitto, the collector with alerting and a
topology, and a real agent polling a Modbus room sensor (a pymodbus server this test drives) over
a link to the broker that the test cuts. While the township is cut off its room gets hot and cools
again; on reconnect the agent sends its spooled backlog. What an operator must see:

* no "firing" notice for the room (a local robot webhook records every notice, in English and
  Chinese);
* the episode in ``netwatch-collector alerts history --json`` with its start and end in sample
  time — compared with the times this test heated and cooled the sensor — marked as having
  happened while the township was unreachable;
* exactly one summary notice ("while … was unreachable") per channel;
* the cut-off alert fired once and resolved once.

The simulated-time version of every arrival order is in test_late_data.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e.procs import CollectorProc, Proc, agent_proc
from e2e.rig import LinkProxy
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from services import free_port

sys.path.insert(0, str(Path(__file__).parent))
from e2e_helpers import Post, Recorder, agent_config, collector_config, wait_agents  # noqa: E402

pytestmark = pytest.mark.e2e

FOR_S = 1.0  # the rule's `for`
INTERVAL_S = 0.5  # the sensor's polling interval
LATE_AFTER_S = 3.0  # the collector's `late_after`
#: a sample's time is taken when its poll starts; the read itself may lag a loaded machine this much
SLACK_S = 2.0

RULES = f"""
rules:
  - name: room_hot
    measurement: room_env
    field: temperature_c
    when: "> 27"
    clear: "<= 26"
    for: {FOR_S:g}s
    severity: critical
    summary: {{en: "{{site}} room {{sensor}} hot {{value:.1f}} °C", zh: "{{site}} 机房 {{sensor}} 过热 {{value:.1f}} °C"}}
"""
TOPO = """
sites:
  - id: county-a
    kind: county
    name: {en: County A, zh: 东区县}
    children:
      - {id: t1, kind: township, name: {en: Township One, zh: 一号乡镇}, agents: [ag-t1], devices: [th-1]}
"""


class Thermometer:
    """A Renke RS-WS-N01 (humidity, temperature in holding registers 0 and 1, 0.1 units) on a
    pymodbus server in its own thread; ``set(c)`` changes the temperature it reports from now on."""

    def __init__(self, celsius: float) -> None:
        self.celsius = celsius
        self.port = free_port()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the Modbus sensor did not start")

    def set(self, celsius: float) -> float:
        self.celsius = celsius
        return time.time()

    async def _serve(self) -> None:
        async def fill(fc: int, start: int, address: int, count: int, regs: list[int], values: object) -> None:
            if fc == 3 and start <= 1 < start + count:
                regs[1 - start] = round(self.celsius * 10) & 0xFFFF

        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        device = SimDevice(
            1,
            simdata=(
                bits,
                bits,
                [SimData(0, values=[500, 220], datatype=DataType.REGISTERS)],
                [SimData(0, values=[0], datatype=DataType.REGISTERS)],
            ),
            action=fill,
        )
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = ModbusTcpServer([device], address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)
        self._ready.set()
        await self._stop.wait()
        await server.shutdown()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def items(posts: list[Post]) -> list[str]:
    """Every notice, one line each (a digest lists several)."""
    out = []
    for p in posts:
        lines = [x for x in p.text.splitlines() if x.startswith("- ")]
        out += lines or [p.text]
    return out


def wait_for(pred: Any, timeout_s: float, what: str, col: CollectorProc) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s\n{col.tail()}")


@pytest.mark.parametrize("drain_rate", [None, 2048], ids=["default-drain", "slow-drain"])
def test_room_hot_while_cut_off_is_history_and_one_summary(
    tmp_path: Path, mosquitto: Any, recorder: Recorder, drain_rate: int | None
) -> None:
    """The default drain (the backlog goes out at once on reconnect, before any live batch), and a
    slow one under which live data overtakes the backlog: its samples arrive older than the
    series' newest and are replayed as the past."""
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "topology.yaml").write_text(TOPO)
    api = free_port()
    cfg = collector_config(
        tmp_path,
        mqtt_port=mosquitto.port,
        api_port=api,
        alerting=(
            "  rules: rules.yaml\n  topology: topology.yaml\n  settle: 0s\n  startup_grace: 1s\n"
            f"  late_after: {LATE_AFTER_S:g}s\n  late_summary_wait: 2s\n"
            "  channels:\n"
            f"    en: {{wecom_webhook: '{recorder.wecom_url('en')}'}}\n"
            f"    zh: {{wecom_webhook: '{recorder.wecom_url('zh')}'}}\n"
            "  routes:\n"
            "    - {channels: [en], language: en, group_wait: 200ms}\n"
            "    - {channels: [zh], language: zh, group_wait: 200ms}\n"
        ),
    )
    sensor = Thermometer(22.0)
    proxy = LinkProxy(mosquitto.port)  # the township's WAN link
    probe = (
        f"{{type: modbus, name: room, target: 'tcp://127.0.0.1:{sensor.port}', unit: 1, map: renke_rs_ws_n01,"
        f" interval: {INTERVAL_S * 1000:g}ms, jitter: 0s, timeout: 450ms, request_timeout: 400ms}}"
    )
    ag = agent_config(tmp_path, "ag-t1", "t1", mqtt_port=proxy.port, probes=[probe])
    if drain_rate is not None:
        ag.write_text(ag.read_text().replace("publish: {", f"publish: {{drain_rate: {drain_rate}, "))
    col = CollectorProc(cfg, api, tmp_path / "collector.log")
    agent: Proc | None = None
    try:
        col.wait_ready()
        agent = agent_proc(ag, tmp_path / "ag-t1.tee", tmp_path / "ag-t1.log")
        wait_agents(col, {"ag-t1"})
        time.sleep(2.0)  # live data, fine
        assert recorder.posts == [], recorder.posts

        # the link goes down: the broker's will says the agent is offline, the township is cut off
        t_cut = time.time()
        proxy.cut()
        wait_for(lambda: len(recorder.by_key("en")) >= 1, 15, "the cut-off notice", col)
        time.sleep(1.0)  # past the slow drain's first burst
        # meanwhile the room gets hot (longer than `for`) and cools down again
        t_hot = sensor.set(31.0)
        time.sleep(FOR_S + 4 * INTERVAL_S)
        t_cool = sensor.set(22.0)
        # still cut off long enough that the hot samples are over `late_after` old when they arrive
        time.sleep(LATE_AFTER_S + 2.0)
        t_restore = time.time()
        proxy.restore()
        # the agent reconnects (its back-off may take a while), the cut-off resolves, its backlog drains
        wait_for(lambda: any("RESOLVED" in x for x in items(recorder.by_key("en"))), 45, "the cut-off's resolve", col)
        wait_for(lambda: any("RECORDED LATE" in x for x in items(recorder.by_key("en"))), 20, "the summary", col)
        wait_for(lambda: any("事后补记" in x for x in items(recorder.by_key("zh"))), 10, "the Chinese summary", col)
        time.sleep(3.0)  # anything racing behind would show now

        en, zh = items(recorder.by_key("en")), items(recorder.by_key("zh"))
        # no firing page for the room; the cut-off fired and resolved once; one summary
        assert not [x for x in en if "hot" in x and "RECORDED LATE" not in x], en
        assert not [x for x in zh if "过热" in x and "事后补记" not in x], zh
        assert sum("Township One unreachable" in x and "RESOLVED" not in x for x in en) == 1, en
        assert sum("Township One unreachable" in x and "RESOLVED" in x for x in en) == 1, en
        assert sum("一号乡镇 不可达 —" in x and "已恢复" not in x for x in zh) == 1, zh
        assert sum("一号乡镇 不可达 —" in x and "已恢复" in x for x in zh) == 1, zh
        summary = [x for x in en if "RECORDED LATE" in x]
        assert len(summary) == 1 and len(en) == 3, en
        assert "while Township One was unreachable: 1 alert began and ended before it reconnected" in summary[0]
        assert "t1 room main hot 31.0 °C" in summary[0]
        summary_zh = [x for x in zh if "事后补记" in x]
        assert len(summary_zh) == 1 and len(zh) == 3, zh
        assert "一号乡镇 不可达期间：1 条告警在恢复连接前已开始并结束" in summary_zh[0]
        assert "t1 机房 main 过热 31.0 °C" in summary_zh[0]

        # the history, as the operator reads it
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "collector.cli",
                "alerts",
                "history",
                "--since",
                "1h",
                "--json",
                "--config",
                str(cfg),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr.decode()
        hist = [orjson.loads(line) for line in r.stdout.splitlines()]  # one JSON object a line
        hot = [h for h in hist if h["rule"] == "room_hot"]
        assert [h["event"] for h in hot] == ["firing", "resolved"], hot
        assert {h["alert_id"] for h in hot} == {hot[0]["alert_id"]}
        assert all(h["labels"]["while_unreachable"] == "t1" and "while t1 was unreachable" in h["detail"] for h in hot)
        start, end = hot[0]["time"] / 1e9, hot[1]["time"] / 1e9
        # fired `for` after the first hot sample; resolved at the first cool one (sample times)
        assert t_hot + FOR_S - 0.2 <= start <= t_hot + FOR_S + INTERVAL_S + SLACK_S, (start - t_hot, hot)
        assert t_cool - 0.2 <= end <= t_cool + INTERVAL_S + SLACK_S, (end - t_cool, hot)
        assert t_cut < start < end < t_restore
        cut = [h for h in hist if h["rule"] == "site_unreachable"]
        assert [h["event"] for h in cut if h["event"] in ("firing", "resolved")] == ["firing", "resolved"], cut
        assert [h["event"] for h in hist if h["rule"] == "while_unreachable"] == ["summary"], hist
        # which arrival order this run saw: live data first (the backlog replayed: late samples
        # counted) or the backlog first (the agent had no live batch yet when it reconnected)
        stats = col.get("/api/stats")
        print(f"late samples replayed: {stats['alerting_late_samples']}")
        assert stats["alerting_late_episodes"] == 1, stats
        if drain_rate is not None:
            assert stats["alerting_late_samples"] > 0, "live data did not overtake the slow backlog"
        assert recorder.bad == []
    finally:
        if agent is not None:
            agent.kill()
        col.stop()
        proxy.close()
        sensor.close()
