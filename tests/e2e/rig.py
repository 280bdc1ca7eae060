"""A test rig for end-to-end fault tests: loopback targets, a TCP proxy whose link can be cut, an
HTTP proxy in front of VictoriaMetrics that counts every point written, agent/collector
processes, and the exact comparison of what agents spooled with what is stored."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import math
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from e2e.procs import CollectorProc, Proc, agent_proc, read_tee
from lp_parser import parse
from services import free_port

from agent.spool import read_stats
from collector.storage.sqlite import SqliteSink


class Listener:
    """A TCP port on loopback that accepts and closes: a target for tcp probes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class LinkProxy:
    """Forwards 127.0.0.1:port to a backend; ``cut()`` drops every connection and refuses new
    ones until ``restore()``, like a township WAN link going down."""

    def __init__(self, backend_port: int) -> None:
        self.backend = backend_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except OSError:
                continue
            if not self.up.is_set():
                c.close()
                continue
            try:
                b = socket.create_connection(("127.0.0.1", self.backend), timeout=2)
            except OSError:
                c.close()
                continue
            b.settimeout(None)  # the 2 s were for connecting: an idle MQTT link is quiet for a keepalive
            with self._lock:
                self._conns += [c, b]
            for src, dst in ((c, b), (b, c)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.lsock.close()


PointKey = tuple[str, tuple[tuple[str, str], ...], int]


class StoreProxy:
    """An HTTP relay in front of VictoriaMetrics. Subclasses watch what passes: ``on_request`` sees
    every request, ``on_acked_write`` the body of every write the store acknowledged (in the
    request's own thread, before the answer goes back: it may hold the answer). ``cut()`` closes
    requests unanswered until ``restore()``, like the link to the store going down."""

    def __init__(self, backend_url: str) -> None:
        host, port = backend_url.removeprefix("http://").split(":")
        self.backend = (host, int(port))
        self.writes = 0  # write requests the store acknowledged
        self.refused = 0  # requests closed unanswered while cut
        self.up = threading.Event()
        self.up.set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not proxy.up.is_set():
                    with proxy._lock:
                        proxy.refused += 1
                    self.close_connection = True
                    return
                try:
                    c = http.client.HTTPConnection(*proxy.backend, timeout=30)
                    c.request(
                        self.command, self.path, body, {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    )
                    r = c.getresponse()
                    status, data, ctype = r.status, r.read(), r.getheader("Content-Type") or "text/plain"
                    c.close()
                except OSError as e:
                    status, data, ctype = 503, f"backend down: {e}".encode(), "text/plain"
                proxy.on_request(self.path)
                if "write" in self.path and 200 <= status < 300:
                    with proxy._lock:
                        proxy.writes += 1
                    proxy.on_acked_write(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the collector was killed or gave up waiting

            do_GET = do_POST = _relay

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on_request(self, path: str) -> None:
        """Every request relayed (after the store answered)."""

    def on_acked_write(self, body: bytes) -> None:
        """Every write the store acknowledged, before the collector hears so."""

    def cut(self) -> None:
        self.up.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class CountingSink(StoreProxy):
    """Counts, per (metric, labels, ms), how many times a write of that point was acknowledged by
    the store — independent of the collector's own account. ``hold()`` makes it keep the store's
    next write acknowledgement back (the store has the points; the collector does not know) until
    ``release()``: the window in which a crash or a timeout used to mean a second copy."""

    def __init__(self, backend_url: str) -> None:
        super().__init__(backend_url)
        self.acked: Counter[PointKey] = Counter()
        self.checks = 0  # export requests (the collector asking what the store holds)
        self.held_points: set[PointKey] = set()
        self.held = threading.Event()
        self._hold: str | None = None
        self._release = threading.Event()

    def on_request(self, path: str) -> None:
        if "/export" in path:
            with self._lock:
                self.checks += 1

    def on_acked_write(self, body: bytes) -> None:
        keys = [k for line in body.decode().splitlines() if line.strip() for k in _points(line)]
        with self._lock:
            self.acked.update(keys)
            hold = self._hold is not None and any(("agent", self._hold) in k[1] for k in keys)
            if hold:
                self._hold = None
                self.held_points.update(keys)
        if hold:
            self.held.set()
            self._release.wait(60)

    def hold(self, agent: str) -> None:
        """Hold back the answer to the next acknowledged write holding a point of ``agent``."""
        self._release.clear()
        self.held.clear()
        with self._lock:
            self._hold = agent
            self.held_points = set()

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._release.set()
        super().close()


def _points(line: str) -> list[PointKey]:
    """The VictoriaMetrics points one line becomes: {measurement}_{field} per non-string field."""
    p = parse(line)
    labels = tuple(sorted(p.tags.items()))
    ms = p.time_ns // 1_000_000
    return [(f"{p.measurement}_{f}", labels, ms) for f, v in p.fields.items() if not isinstance(v, str)]


class Rig:
    def __init__(self, tmp: Path, mqtt_port: int, vm: Any | None, *, counting: bool = False) -> None:
        self.tmp = tmp
        self.mqtt_port = mqtt_port
        self.vm = vm
        #: between the collector and VictoriaMetrics when ``counting``
        self.sink = CountingSink(vm.url) if vm is not None and counting else None
        self.target = Listener()
        self.api_port = free_port()
        self.col: CollectorProc | None = None
        self.agents: dict[str, Proc] = {}
        self.runs: dict[str, int] = {}

    # -- processes -------------------------------------------------------------------------
    def start_collector(self) -> CollectorProc:
        cfg = self.tmp / "collector.yaml"
        url = self.sink.url if self.sink is not None else self.vm.url if self.vm is not None else ""
        influx = (
            f"  influxdb: {{url: '{url}', bucket: netwatch, drop_string_fields: true, timeout: 2s}}\n"
            if self.vm
            else ""
        )
        cfg.write_text(
            f"collector: {{id: rig, data_dir: {self.tmp / 'collector'}}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {self.mqtt_port}}}\n"
            f"storage:\n  sqlite: {{retention: 30d}}\n{influx}"
            f"api: {{port: {self.api_port}}}\n"
        )
        n = self.runs["collector"] = self.runs.get("collector", 0) + 1
        self.col = CollectorProc(cfg, self.api_port, self.tmp / f"collector-{n}.log")
        self.col.wait_ready()
        return self.col

    def agent_config(
        self,
        aid: str,
        *,
        port: int | None = None,
        spool_max: str = "256MiB",
        drain_rate: str | None = "0",
        batch_interval: str | None = "300ms",
        probes: int = 3,
        interval: str = "200ms",
    ) -> Path:
        """``drain_rate``/``batch_interval`` None: the agent's defaults (32 KiB/s, 5 s)."""
        lines = "".join(
            f"  - {{type: tcp, name: t{i}, host: 127.0.0.1, port: {self.target.port}, interval: {interval}, jitter: 0s}}\n"
            for i in range(probes)
        )
        publish = "".join(
            f"{k}: {v}, " for k, v in (("batch_interval", batch_interval), ("drain_rate", drain_rate)) if v is not None
        )
        p = self.tmp / f"{aid}.yaml"
        p.write_text(
            f"agent: {{id: {aid}, site: site-{aid}}}\n"
            f"mqtt: {{host: 127.0.0.1, port: {port or self.mqtt_port}, keepalive: 2s}}\n"
            f"spool: {{path: {self.tmp / (aid + '-spool.db')}, max_bytes: {spool_max}}}\n"
            f"publish: {{{publish}self_metrics_interval: 1s}}\nprobes:\n{lines}"
        )
        return p

    def start_agent(self, aid: str, **cfg: Any) -> Proc:
        config = self.tmp / f"{aid}.yaml"
        if cfg or not config.exists():
            config = self.agent_config(aid, **cfg)
        n = self.runs[aid] = self.runs.get(aid, 0) + 1
        self.agents[aid] = agent_proc(config, self.tmp / f"{aid}.tee", self.tmp / f"{aid}-{n}.log")
        return self.agents[aid]

    def close(self) -> None:
        for p in self.agents.values():
            p.kill()
        if self.col is not None:
            self.col.kill()
        self.target.close()
        if self.sink is not None:
            self.sink.close()

    # -- the accounting --------------------------------------------------------------------
    def stop_agents_drained(self) -> None:
        """Stop every agent cleanly; each must leave its spool empty (all acknowledged)."""
        for aid, p in self.agents.items():
            assert p.stop() == 0, p.tail()
            st = read_stats(self.tmp / f"{aid}-spool.db")
            assert st.depth == 0, f"{aid}: {st.depth} batches never acknowledged"

    def expected(self, aid: str) -> list[dict[str, Any]]:
        return read_tee(self.tmp / f"{aid}.tee")

    def wait_stored(self, aid: str, n: int, timeout_s: float = 30) -> None:
        assert self.col is not None
        deadline = time.monotonic() + timeout_s
        while True:
            rows = {a["id"]: a for a in self.col.get("/api/agents")}
            have = rows.get(aid, {}).get("samples", 0)
            if have >= n:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{aid}: collector has {have} of {n} samples\n{self.col.tail()}")
            time.sleep(0.2)

    def assert_sqlite_exact(self, aid: str, expected: list[dict[str, Any]]) -> None:
        assert_sqlite_exact(self.tmp / "collector" / "metrics.db", aid, expected)

    def assert_vm_exact(self, aid: str, expected: list[dict[str, Any]], timeout_s: float = 30) -> None:
        assert self.vm is not None
        assert_vm_exact(self.vm, aid, expected, timeout_s)

    def assert_written_once(self, aid: str, expected: list[dict[str, Any]]) -> int:
        """At the sink: every point of ``expected`` was acknowledged by VictoriaMetrics exactly
        once, and nothing else of ``aid`` was written. Returns the number of points."""
        assert self.sink is not None
        want = vm_points(expected)
        with self.sink._lock:
            got = {k: n for k, n in self.sink.acked.items() if ("agent", aid) in k[1]}
        missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
        assert not missing and not extra, f"{aid}: {len(missing)} never written, {len(extra)} unexpected"
        twice = {k: n for k, n in got.items() if n != 1}
        assert not twice, f"{aid}: {len(twice)} points written more than once, e.g. {next(iter(twice.items()))}"
        return len(want)

    def assert_batches_once(self, aid: str) -> None:
        """The collector's own account: every batch number the agent used, stored once."""
        assert self.col is not None
        st = read_stats(self.tmp / f"{aid}-spool.db")
        row = {a["id"]: a for a in self.col.get("/api/agents")}[aid]
        assert row["batches"] == st.last_seq and row["last_seq"] == st.last_seq, (row, st)


def assert_sqlite_exact(db: Path, aid: str, expected: list[dict[str, Any]]) -> None:
    """SQLite holds exactly ``expected`` for ``aid``: same series, times, fields and field types."""
    want = {_key(s): s["fields"] for s in expected}
    assert len(want) == len(expected), "two expected samples share series and time"
    reader = SqliteSink.open_readonly(db)
    try:
        got: dict[tuple[Any, ...], dict[str, Any]] = {}
        for m in {s["measurement"] for s in expected}:
            for s in reader.query(m, tags={"agent": aid}):
                got[_key(s.to_dict())] = dict(s.fields)
    finally:
        reader.close()
    missing = want.keys() - got.keys()
    extra = got.keys() - want.keys()
    assert not missing and not extra, f"{aid}: {len(missing)} missing, {len(extra)} unexpected"
    assert got == want
    # == takes 1, 1.0 and True for one another: the types must match too
    assert {k: {f: type(v) for f, v in d.items()} for k, d in got.items()} == {
        k: {f: type(v) for f, v in d.items()} for k, d in want.items()
    }


def assert_vm_exact(vm: Any, aid: str, expected: list[dict[str, Any]], timeout_s: float = 30) -> None:
    """VictoriaMetrics holds every numeric field of ``expected`` once, as {measurement}_{field} at ms time."""
    want = vm_points(expected)
    series = vm.wait_for_points(f'{{agent="{aid}"}}', len(want), timeout_s=timeout_s)
    got: dict[tuple[Any, ...], float] = {}
    for ser in series:
        name = ser["metric"]["__name__"]
        labels = tuple(sorted((k, v) for k, v in ser["metric"].items() if k != "__name__"))
        for v, ts in zip(ser["values"], ser["timestamps"], strict=True):
            key = (name, labels, ts)
            assert key not in got, f"stored twice in VictoriaMetrics: {key}"
            got[key] = float(v)
    assert got.keys() == want.keys(), (
        f"{aid}: {len(want.keys() - got.keys())} missing, {len(got.keys() - want.keys())} extra"
    )
    # VictoriaMetrics keeps 12 significant decimal digits: a relative error up to ~1e-12
    # (measured: 9.998e-13 over 20,000 random durations), so 1e-12 itself fails now and then.
    wrong = {k: (got[k], v) for k, v in want.items() if not math.isclose(got[k], v, rel_tol=3e-12, abs_tol=1e-12)}
    assert not wrong, f"{aid}: {len(wrong)} values differ, e.g. {next(iter(wrong.items()))}"


def vm_points(expected: list[dict[str, Any]]) -> dict[PointKey, float]:
    """The VictoriaMetrics points ``expected`` samples become, with their values."""
    want: dict[PointKey, float] = {}
    for s in expected:
        labels = tuple(sorted((k, v) for k, v in s["tags"].items() if v))
        for f, v in s["fields"].items():
            if not isinstance(v, str):
                want[(f"{s['measurement']}_{f}", labels, s["time"] // 1_000_000)] = float(v)
    return want


def _key(s: dict[str, Any]) -> tuple[Any, ...]:
    return (s["measurement"], tuple(sorted((k, v) for k, v in s["tags"].items() if v)), s["time"])
