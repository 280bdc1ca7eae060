"""``netwatch-agent diag`` against real peers: Mosquitto with TLS and a password file (and one
whose certificate expired), net-snmp snmpd, a pymodbus server, an HTTP server, a UDP socket that
never answers. Each fault must be named — check, code, first thing to check — with exit code 1."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from services import Mosquitto, free_port, make_tls_files
from snmp_services import Silent, Snmpd, free_udp_port

sys.path.append(str(Path(__file__).resolve().parents[1] / "probes" / "modbus"))
from modbus_sims import Server, Slave  # noqa: E402

from agent.spool import Spool  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("diag")]

PASSWORD = "diag-pass-4711"
EXPIRED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def diag(
    cfg: Path, *args: str, password: str = PASSWORD, path_first: Path | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    env = {**os.environ, "DIAG_MQTT_PASSWORD": password, "LANG": "C.UTF-8", "LC_ALL": ""}
    if path_first is not None:
        env["PATH"] = f"{path_first}:{env.get('PATH', '')}"
    r = subprocess.run(
        [sys.executable, "-m", "agent.cli", "diag", "-c", str(cfg), "--timeout", "2s", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    rows = [orjson.loads(x) for x in r.stdout.splitlines() if x.startswith("{")] if "--json" in args else []
    return r.returncode, rows, r.stdout + r.stderr


def by_check(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["check"] if r["check"] != "device" else f"device:{r['target']}": r for r in rows}


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


class Peers:
    """Everything the diag runs look at, started once for the module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker = Mosquitto(
            root / "mq", free_port(), users={"agent": PASSWORD}, tls=make_tls_files(root / "mq" / "tls")
        )
        now = dt.datetime.now(dt.UTC)
        self.expired_tls = make_tls_files(
            root / "mq-old" / "tls", server_validity=(EXPIRED_AT - dt.timedelta(days=365), EXPIRED_AT)
        )
        assert now > EXPIRED_AT
        self.expired = Mosquitto(root / "mq-old", free_port(), users={"agent": PASSWORD}, tls=self.expired_tls)
        # a certificate for the name "localhost" only, reached by its address
        self.named = Mosquitto(
            root / "mq-named",
            free_port(),
            users={"agent": PASSWORD},
            tls=make_tls_files(root / "mq-named" / "tls", dns_names=("localhost",), ips=()),
        )
        self.snmpd = Snmpd(root / "snmpd", free_udp_port(), [])
        self.silent = Silent()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        self.loop = asyncio.new_event_loop()
        self.modbus = Server([Slave(1, holding={0: 215, 1: 480})])

    def start(self) -> None:
        self.broker.start()
        self.expired.start()
        self.named.start()
        self.snmpd.start(timeout_s=20)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.modbus.start(), self.loop).result(10)

    def stop(self) -> None:
        for step in (
            self.broker.close,
            self.expired.close,
            self.named.close,
            self.snmpd.close,
            self.silent.close,
            self.httpd.shutdown,
            lambda: asyncio.run_coroutine_threadsafe(self.modbus.stop(), self.loop).result(10),
            lambda: self.loop.call_soon_threadsafe(self.loop.stop),
        ):
            with contextlib.suppress(Exception):  # stop the rest whatever one of them does
                step()

    def config(
        self,
        name: str,
        *,
        broker: Mosquitto | None = None,
        port: int | None = None,
        dead_snmp: bool = False,
        host: str = "localhost",
    ) -> Path:
        b = broker or self.broker
        assert b.tls is not None
        d = self.root / name
        d.mkdir(exist_ok=True)
        probes = [
            {"type": "http", "name": "portal", "url": f"http://127.0.0.1:{self.httpd.server_address[1]}/"},
            {
                "type": "snmp",
                "name": "core-switch",
                "host": "127.0.0.1",
                "port": self.snmpd.port,
                "community": "public",
                "profile": "system",
            },
            {
                "type": "modbus",
                "name": "room-th",
                "target": f"tcp://127.0.0.1:{self.modbus.port}",
                "unit": 1,
                "map": {
                    "model": "test-th",
                    "points": [
                        {
                            "name": "temperature",
                            "table": "holding",
                            "address": 0,
                            "type": "uint16",
                            "scale": 0.1,
                            "measurement": "room_env",
                            "field": "temperature_c",
                        }
                    ],
                },
            },
        ]
        if dead_snmp:
            probes.append(
                {
                    "type": "snmp",
                    "name": "dead-switch",
                    "host": "127.0.0.1",
                    "port": self.silent.port,
                    "community": "public",
                    "request_timeout": "500ms",
                    "retries": 0,
                }
            )
        doc = {
            "agent": {"id": "town-1", "site": "township-1"},
            "mqtt": {
                "host": host,
                "port": port or b.port,
                "username": "agent",
                "password_env": "DIAG_MQTT_PASSWORD",
                "tls": {"ca_file": str(b.tls.ca_cert)},
            },
            "spool": {"path": str(d / "spool.db")},
            "probes": probes,
        }
        path = d / "agent.yaml"
        path.write_bytes(orjson.dumps(doc))  # JSON is YAML
        return path


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    p = Peers(tmp_path_factory.mktemp("diag"))
    try:
        p.start()
        yield p
    finally:
        p.stop()


def test_all_well_exits_0_and_reports_every_step(peers: Peers) -> None:
    cfg = peers.config("good")
    # a spool the agent left: three batches made, the first two acknowledged by the broker
    spool = Spool(peers.root / "good" / "spool.db", max_bytes=1 << 20, max_age_s=3600)
    for _ in range(3):
        spool.put(lambda seq: b"x" * 10, 1)
    spool.ack([1, 2])
    spool.close()

    code, rows, out = diag(cfg, "--json")
    assert code == 0, out
    c = by_check(rows)
    assert {k: c[k]["status"] for k in ("config", "disk", "dns", "tcp", "tls", "cert", "auth")} == dict.fromkeys(
        ("config", "disk", "dns", "tcp", "tls", "cert", "auth"), "ok"
    )
    assert c["dns"]["data"]["addresses"][0] in ("127.0.0.1", "::1")
    assert c["auth"]["data"]["connack"] == 0 and c["auth"]["data"]["username"] == "agent"
    # the certificate make_tls_files wrote: 30 days from now (29 whole days left)
    assert c["cert"]["data"]["days_left"] in (29, 30) and "localhost" in c["cert"]["data"]["names"]
    assert c["acked"]["data"]["last_acked_seq"] == 2 and c["acked"]["data"]["last_seq"] == 3
    assert c["spool"]["data"]["depth"] == 1
    assert {k: c[k]["status"] for k in c if k.startswith("device:")} == {
        "device:portal": "ok",
        "device:core-switch": "ok",
        "device:room-th": "ok",
    }
    assert rows[-1] == {**rows[-1], "check": "summary", "status": "ok", "fail": 0, "exit": 0}
    # and for people: both languages when the locale says neither
    code, _, out = diag(cfg)
    assert code == 0
    assert "all well" in out and "一切正常" in out and "#2" in out


def test_one_dead_device_among_live_ones(peers: Peers) -> None:
    code, rows, out = diag(peers.config("dead-dev", dead_snmp=True), "--json")
    assert code == 1, out
    c = by_check(rows)
    failed = [r for r in rows[:-1] if r["status"] == "fail"]
    assert [(r["check"], r["target"]) for r in failed] == [("device", "dead-switch")]
    dead = c["device:dead-switch"]
    assert dead["code"] == "device_down"
    assert dead["fix"].startswith("SNMP timeout: check community/ACL") and "UDP 161" in dead["fix"]
    assert "团体名" in dead["fix_zh"]
    assert all(c[f"device:{n}"]["status"] == "ok" for n in ("portal", "core-switch", "room-th"))
    assert rows[-1]["first_problem"]["target"] == "dead-switch"
    # the Chinese text for people
    code, _, out = diag(peers.config("dead-dev", dead_snmp=True), "--lang", "zh")
    assert code == 1 and "dead-switch" in out and "SNMP 超时" in out and "community/ACL" not in out


def test_broker_down(peers: Peers) -> None:
    closed = free_port()
    code, rows, out = diag(peers.config("down", port=closed), "--json", "--no-devices")
    assert code == 1, out
    c = by_check(rows)
    assert c["dns"]["status"] == "ok"
    assert c["tcp"]["status"] == "fail" and c["tcp"]["code"] == "tcp_refused"
    assert str(closed) in c["tcp"]["message"] and "mosquitto" in c["tcp"]["fix"]
    assert [c[k]["status"] for k in ("tls", "cert", "auth")] == ["skip"] * 3
    assert rows[-1]["first_problem"]["check"] == "tcp"


def test_wrong_password(peers: Peers) -> None:
    code, rows, out = diag(peers.config("badpw"), "--json", "--no-devices", password="not-the-password")
    assert code == 1, out
    c = by_check(rows)
    assert [c[k]["status"] for k in ("dns", "tcp", "tls", "cert")] == ["ok"] * 4
    auth = c["auth"]
    assert auth["status"] == "fail" and auth["code"] == "auth_refused"
    # MQTT 3.1.1 CONNACK 4 "bad user name or password" or 5 "not authorised" (Mosquitto sends 5)
    assert auth["data"]["connack"] in (4, 5, 134, 135), auth
    assert "agent" in auth["message"] and "mqtt.username" in auth["fix"]
    assert [r["check"] for r in rows[:-1] if r["status"] == "fail"] == ["auth"]
    assert "not-the-password" not in out


def test_expired_broker_certificate(peers: Peers) -> None:
    code, rows, out = diag(peers.config("expired", broker=peers.expired), "--json", "--no-devices")
    assert code == 1, out
    c = by_check(rows)
    cert = c["cert"]
    assert cert["status"] == "fail" and cert["code"] == "cert_expired"
    assert dt.datetime.fromisoformat(cert["data"]["not_after"]) == EXPIRED_AT
    assert "2026-01-02" in cert["message"] and "renew" in cert["fix"]
    days = (dt.datetime.now(dt.UTC) - EXPIRED_AT).days
    assert f"{days} days ago" in cert["message"]
    # the handshake failed, and says so with the same first thing to check; login not tried
    assert c["tls"]["status"] == "fail" and c["tls"]["fix"] == cert["fix"]
    assert "expired" in c["tls"]["message"]
    assert c["auth"]["status"] == "skip"


def test_an_untrusted_broker_certificate(peers: Peers) -> None:
    cfg = peers.config("other-ca")
    doc = orjson.loads(cfg.read_bytes())
    doc["mqtt"]["tls"]["ca_file"] = str(peers.expired_tls.ca_cert)  # another CA than the one that signed it
    cfg.write_bytes(orjson.dumps(doc))
    code, rows, out = diag(cfg, "--json", "--no-devices")
    assert code == 1, out
    c = by_check(rows)
    assert c["cert"]["code"] == "cert_untrusted" and "ca_file" in c["cert"]["fix"]
    assert c["tls"]["status"] == "fail" and c["auth"]["status"] == "skip"


CHRONY_12S_FAST = """Reference ID    : C0A80001 (192.168.0.1)
Stratum         : 3
System time     : 12.000000000 seconds fast of NTP time
Leap status     : Normal
"""


def test_a_clock_twelve_seconds_fast(peers: Peers, tmp_path: Path) -> None:
    # a stand-in chronyc on PATH says what chrony would on a node whose clock ran ahead
    (tmp_path / "tracking.txt").write_text(CHRONY_12S_FAST)
    chronyc = tmp_path / "chronyc"
    chronyc.write_text(f"#!/bin/sh\nexec cat '{tmp_path / 'tracking.txt'}'\n")
    chronyc.chmod(0o755)
    code, rows, out = diag(peers.config("clock"), "--json", "--no-devices", path_first=tmp_path)
    assert code == 1, out
    clock = by_check(rows)["clock"]
    assert clock["status"] == "fail" and clock["code"] == "clock_off"
    assert clock["data"] == {"source": "chrony", "synced": True, "offset_ms": 12000.0}
    assert "+12000.0 ms" in clock["message"] and "chrony" in clock["fix"]
    assert [r["check"] for r in rows[:-1] if r["status"] == "fail"] == ["clock"]


def test_a_certificate_for_another_name(peers: Peers) -> None:
    code, rows, out = diag(peers.config("by-ip", broker=peers.named, host="127.0.0.1"), "--json", "--no-devices")
    assert code == 1, out
    cert = by_check(rows)["cert"]
    assert cert["code"] == "cert_hostname" and cert["data"]["names"] == ["localhost"]
    assert "localhost" in cert["message"] and "127.0.0.1" in cert["message"] and "mqtt.host" in cert["fix"]
    # the same broker by the name its certificate carries: all well
    code, rows, out = diag(peers.config("by-name", broker=peers.named, host="localhost"), "--json", "--no-devices")
    assert by_check(rows)["cert"]["status"] == "ok" and by_check(rows)["auth"]["status"] == "ok", out
