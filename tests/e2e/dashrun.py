"""One short real run for the dashboard tests: a city -> county -> two townships of real agents
probing simulated devices (snmpsim serving recordings of real switches, a UPS and a rack PDU; a
Modbus room sensor, door and smoke contacts; an HTTPS portal; loopback pings and ports) ->
Mosquitto -> collectors -> VictoriaMetrics (and InfluxDB 1.x when given). Everything on 127.0.0.1,
free ports, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from e2e.procs import CollectorProc, Proc, agent_proc, read_tee
from services import Mosquitto, VictoriaMetrics, free_port, make_tls_files, start_mosquitto, start_victoria_metrics

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo"
PDU_RECORDING = "UPS/apc-8641"
#: a UPS on mains whose recording has a runtime estimate (18 h) and charge (100 %)
UPS_RECORDING = "UPS/eaton-93e-80"

#: the site tree of the run: county-a under the city, townships t1 and t2 under county-a
TOPOLOGY = """\
sites:
  - id: city
    kind: city
    name: {en: City centre, zh: 市中心}
    agents: [agent-city]
    children:
      - id: county-a
        kind: county
        name: {en: County A, zh: 东区县}
        agents: [agent-county]
        uplink: {rule: wan_loss_high, match: [link=county-a]}
        children:
          - {id: t1, kind: township, name: {en: Xinzhuang, zh: 新庄镇}, agents: [agent-t1]}
          - {id: t2, kind: township, name: {en: Hexi, zh: 河西乡}, agents: [agent-t2]}
"""

#: rules that fire within seconds on what the simulators report (the shipped ones wait minutes):
#: the moving switch's GE0/0/2 runs at 94 % (warning), the room sensor is above 18 °C (critical)
RULES = """\
rules:
  - name: iface_util_high
    measurement: interface
    field: util_in_pct
    when: "> 90"
    clear: "<= 85"
    severity: warning
    summary: {en: "{device} {ifname} at {value:.0f} %", zh: "{device} {ifname} 利用率 {value:.0f} %"}
  - name: room_warm
    measurement: room_env
    field: temperature_c
    when: "> 18"
    clear: "<= 17"
    severity: critical
    summary: {en: "{site}: room {value:.1f} °C", zh: "{site}：机房 {value:.1f} °C"}
"""


#: the leak-locating cable's reading: a leak 12.5 m along the cable (float32 0x41480000, CDAB)
LEAK_DISTANCE_M = 12.5


class LeakCable:
    """An Aqualeak 10K controller (probes/modbus/maps/aqualeak_10k.yaml) on its own pymodbus
    server in a thread: status bits in input register 0 (leak on), the distance at 8000."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        device = SimDevice(
            1,
            simdata=(
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                [SimData(0, values=[0], datatype=DataType.REGISTERS)],
                [
                    SimData(0, values=[0b001], datatype=DataType.REGISTERS),
                    SimData(8000, values=[0x0000, 0x4148], datatype=DataType.REGISTERS),
                ],
            ),
        )
        server = ModbusTcpServer([device], address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)
        self._ready.set()
        await self._stop.wait()
        await server.shutdown()

    def start(self) -> LeakCable:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError(f"leak cable simulator not listening on 127.0.0.1:{self.port}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


class _Portal(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        page = "<!doctype html><html><body><h1>东区人民政府</h1></body></html>".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Run:
    tmp: Path
    vm: VictoriaMetrics
    broker: Mosquitto
    collectors: list[CollectorProc] = field(default_factory=list)
    agents: dict[str, Proc] = field(default_factory=dict)
    start_ns: int = 0
    end_ns: int = 0
    influx: Any = None
    influx_db: str = ""


def _agent_yaml(tmp: Path, aid: str, site: str, mqtt_port: int, probes: str) -> Path:
    p = tmp / f"{aid}.yaml"
    p.write_text(
        f"agent: {{id: {aid}, site: {site}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, keepalive: 5s}}\n"
        f"spool: {{path: {tmp / (aid + '-spool.db')}}}\n"
        "publish: {batch_interval: 500ms, self_metrics_interval: 1s}\n"
        f"probes:\n{probes}",
        encoding="utf-8",
    )
    return p


def _collector_yaml(tmp: Path, name: str, mqtt_port: int, api_port: int, sink: str) -> Path:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    (tmp / "topology.yaml").write_text(TOPOLOGY, encoding="utf-8")
    (tmp / "rules.yaml").write_text(RULES, encoding="utf-8")
    cfg = d / "collector.yaml"
    cfg.write_text(
        f"collector: {{id: {name}, data_dir: {d / 'data'}, self_metrics_interval: 1s}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, client_id: {name}}}\n"
        f"storage:\n{sink}"
        f"api: {{port: {api_port}}}\n"
        f"alerting: {{rules: {tmp / 'rules.yaml'}, topology: {tmp / 'topology.yaml'}, settle: 0s, startup_grace: 5s}}\n",
        encoding="utf-8",
    )
    return cfg


def _portal_baseline(url: str, ca: Path) -> str:
    from probes.http.config import HttpConfig
    from probes.http.probe import HttpProbe

    cfg = HttpConfig.model_validate({"url": url, "ca_file": str(ca), "fingerprint": {"enabled": True}})
    samples = asyncio.run(HttpProbe(cfg, name="portal", timeout_s=5).collect())
    return str(next(s.fields["content_sha256"] for s in samples if "content_sha256" in s.fields))


@contextlib.contextmanager
def real_run(
    tmp: Path,
    *,
    ready: Callable[[Run], bool] = lambda run: True,
    min_s: float = 10.0,
    max_s: float = 120.0,
    influx: Any = None,
    influx_config: dict[str, Any] | None = None,
) -> Iterator[Run]:
    """Start everything, run until ``ready(run)`` (at least ``min_s``, at most ``max_s``: on a
    loaded machine snmpsim answers slowly) and yield, agents still running, once the stores hold
    everything the agents recorded by ``run.end_ns``. ``influx``/``influx_config``: an InfluxDB 1.x
    server (tests/services.Influxd) and the collector's ``storage.influxdb`` section for it,
    written by a second collector on the same broker."""
    sys.path.insert(0, str(DEMO))
    import sim_modbus
    import sim_snmp

    stack = contextlib.ExitStack()
    with stack:
        broker = start_mosquitto(tmp / "broker")
        stack.callback(broker.close)
        vm = start_victoria_metrics(tmp / "vm")
        stack.callback(vm.close)
        run = Run(tmp, vm, broker, influx=influx, influx_db=(influx_config or {}).get("database", ""))

        # devices
        snmp_port = free_port()
        snmp_dir = tmp / "snmp"
        data_dir = snmp_dir / "snmpsim-data"
        for rec in (PDU_RECORDING, UPS_RECORDING):
            sim_snmp.trim_recording(sim_snmp.recording_path(rec), data_dir / f"{rec}.snmprec", sim_snmp.polled_oids())
        snmp = sim_snmp.start(snmp_dir, snmp_port)
        stack.callback(snmp.stop)
        modbus_port = free_port()
        room = sim_modbus.start(modbus_port, period_s=600, door_every_s=6, door_open_s=3)
        stack.callback(room.stop)
        leak_port = free_port()
        leak = LeakCable(leak_port).start()
        stack.callback(leak.stop)
        tls = make_tls_files(tmp / "portal-tls")
        portal = ThreadingHTTPServer(("127.0.0.1", 0), _Portal)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls.cert, tls.key)
        portal.socket = ctx.wrap_socket(portal.socket, server_side=True)
        threading.Thread(target=portal.serve_forever, daemon=True).start()
        stack.callback(portal.shutdown)
        portal_url = f"https://127.0.0.1:{portal.server_address[1]}/"
        (tmp / "portal.baseline").write_text(_portal_baseline(portal_url, tls.ca_cert) + "\n")

        # collectors: one per store, both fed by the same broker
        sinks = {
            "col-vm": f"  influxdb: {{url: '{vm.url}', bucket: netwatch, drop_string_fields: true, timeout: 5s}}\n"
        }
        if influx_config is not None:
            sinks["col-influx"] = f"  influxdb: {json.dumps(influx_config)}\n"
        for name, sink in sinks.items():
            api_port = free_port()
            col = CollectorProc(_collector_yaml(tmp, name, broker.port, api_port, sink), api_port, tmp / f"{name}.log")
            stack.callback(col.kill)
            col.wait_ready()
            run.collectors.append(col)

        snmp_probe = (
            "  - {{type: snmp, name: {name}, host: 127.0.0.1, port: " + str(snmp_port) + ", community: {community},"
            " interval: {interval}, timeout: {interval}{extra}}}\n"
        )
        icmp = "  - {{type: icmp, name: {name}, host: {host}, count: 3, interval: 2s, packet_interval: 100ms, packet_timeout: 1s, tags: {{link: {link}}}}}\n"
        agents = {
            "agent-city": (
                "city",
                "  - {type: host, interval: 3s, include: [cpu, memory, disk, system]}\n"
                f"  - {{type: http, name: portal, url: '{portal_url}', ca_file: {tls.ca_cert}, interval: 2s,"
                f" fingerprint: {{enabled: true, baseline_file: {tmp / 'portal.baseline'}}}}}\n"
                + icmp.format(name="county-a-wan", host="127.0.0.1", link="county-a")
                + snmp_probe.format(
                    name="ups-city", community="UPS/huawei-gse200m", interval="10s", extra=", profile: ups_mib_tenths"
                ),
            ),
            "agent-county": (
                "county-a",
                icmp.format(name="uplink-city", host="127.0.0.1", link="uplink")
                + snmp_probe.format(name="sw-county-a", community=sim_snmp.MOVING_SWITCH, interval="2s", extra="")
                + snmp_probe.format(
                    name="core-county-a",
                    community="network/router/huawei-s5720",
                    interval="15s",
                    extra=", interfaces: {exclude: '^(NULL|InLoopBack|Console)'}",
                ),
            ),
            "agent-t1": (
                "t1",
                icmp.format(name="uplink-county", host="127.0.0.2", link="uplink")
                + f"  - {{type: modbus, name: room-th, target: 'tcp://127.0.0.1:{modbus_port}', unit: 1, map: renke_rs_ws_n01,"
                " labels: {main: machine-room}, interval: 2s, timeout: 2s}\n"
                f"  - {{type: modbus, name: room-di, target: 'tcp://127.0.0.1:{modbus_port}', unit: 2, map: generic_di8,"
                " points: [di1, di2, di3], labels: {di1: door-main, di2: smoke-1, di3: water-1}, interval: 1s, timeout: 1s}\n"
                + f"  - {{type: modbus, name: leak-cable, target: 'tcp://127.0.0.1:{leak_port}', unit: 1,"
                " map: aqualeak_10k, interval: 2s, timeout: 2s}\n"
                + snmp_probe.format(name="sw-t1", community=sim_snmp.MOVING_SWITCH, interval="3s", extra="")
                + snmp_probe.format(name="ups-t1", community=UPS_RECORDING, interval="10s", extra="")
                + snmp_probe.format(name="pdu-t1", community=PDU_RECORDING, interval="10s", extra=""),
            ),
            "agent-t2": (
                "t2",
                icmp.format(name="uplink-county", host="127.0.0.3", link="uplink")
                + f"  - {{type: tcp, name: closed-port, host: 127.0.0.1, port: {free_port()}, interval: 2s}}\n",
            ),
        }
        from agent import config as agent_config

        configs = {aid: _agent_yaml(tmp, aid, site, broker.port, probes) for aid, (site, probes) in agents.items()}
        for cfg in configs.values():
            agent_config.load(cfg)  # a mistake here fails at once, not as a dead process later
        run.start_ns = time.time_ns()
        for aid, cfg in configs.items():
            p = agent_proc(cfg, tmp / f"{aid}.tee", tmp / f"{aid}.log")
            stack.callback(p.kill)
            run.agents[aid] = p
        # Agents keep running while the tests query: "agents online" is what it is now.
        t0 = time.monotonic()
        while True:
            time.sleep(1.0)
            elapsed = time.monotonic() - t0
            if elapsed >= max_s or (elapsed >= min_s and ready(run)):
                break
        time.sleep(2.0)  # the collectors' next site/alert series after what made it ready
        # The tests look at [start_ns, end_ns]: wait until each collector stored, per agent, at
        # least as many samples as the agent recorded by then (its spool sends them in order).
        run.end_ns = time.time_ns()
        recorded = {aid: sum(1 for s in read_tee(tmp / f"{aid}.tee") if s["time"] <= run.end_ns) for aid in run.agents}
        deadline = time.monotonic() + 60
        for col in run.collectors:
            while True:
                stored = {a["id"]: a.get("samples", 0) for a in col.get("/api/agents")}
                if all(stored.get(aid, 0) >= n for aid, n in recorded.items()):
                    break
                assert time.monotonic() < deadline, f"{col.log.stem} stored {stored}, agents recorded {recorded}"
                time.sleep(0.5)
        for name, p in [*run.agents.items(), *((c.name, c) for c in run.collectors)]:
            assert p.alive(), f"{name} died:\n{p.tail()}"
        vm.flush()
        time.sleep(1.5)  # VictoriaMetrics makes a new series searchable about a second after it flushed it
        yield run
