"""The crash window, proven without trusting the agent: an agent SIGKILLed at random moments while
its http probes hit a target that logs every request itself and answers each with a body of its
own. Every request the target logged must be in the store (found by the fingerprint of the very
body the target sent, which the http probe records as ``content_sha256``) or counted by the agent
as an interrupted run — exactly, one to one. Real processes: Mosquitto, the collector, SQLite."""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from e2e.procs import agent_proc
from e2e.rig import Rig

from agent.spool import read_stats
from collector.storage.sqlite import SqliteSink

pytestmark = pytest.mark.e2e

KILLS = 8
PROBES = ("h0", "h1", "h2")
#: each probe's interval and timeout (a timeout may not exceed the interval)
INTERVAL_S = 0.5


class LoggingTarget:
    """An HTTP server on loopback that logs every request it gets — (path, time received, sha256
    of the body it answered with) — and answers each with a body never sent before."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, str]] = []
        self.arrived = threading.Condition()
        lock, log, arrived = threading.Lock(), self.log, self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                received = time.time_ns()
                body = f"run-{secrets.token_hex(12)}".encode()
                with lock:
                    log.append((self.path.strip("/"), received, hashlib.sha256(body).hexdigest()))
                with arrived:
                    arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def wait_request(self, after: int, timeout_s: float) -> bool:
        """Until the target has logged more than ``after`` requests; False on timeout."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.log) > after, timeout_s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _agent_config(tmp: Path, mqtt_port: int, target_port: int) -> Path:
    probes = "".join(
        f"  - {{type: http, name: {n}, url: 'http://127.0.0.1:{target_port}/{n}', interval: {INTERVAL_S}s, "
        f"timeout: {INTERVAL_S}s, jitter: 0s, fingerprint: {{enabled: true}}}}\n"
        for n in PROBES
    )
    p = tmp / "c1.yaml"
    # publish: the defaults (batch_interval 5 s, drain_rate 32 KiB/s): the window as users have it
    p.write_text(
        "agent: {id: c1, site: site-c1}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mqtt_port}, keepalive: 2s}}\n"
        f"spool: {{path: {tmp / 'c1-spool.db'}}}\n"
        f"probes:\n{probes}"
    )
    return p


def _stored(db: Path, measurement: str) -> list[dict[str, Any]]:
    reader = SqliteSink.open_readonly(db)
    try:
        return [s.to_dict() for s in reader.query(measurement, tags={"agent": "c1"})]
    finally:
        reader.close()


def test_agent_sigkilled_at_random_every_run_the_target_saw_is_stored_or_counted(
    tmp_path: Path, mosquitto: Any
) -> None:
    seed = int(os.environ.get("NETWATCH_CRASH_SEED") or random.randrange(2**32))
    print(f"crash-window seed: {seed} (rerun with NETWATCH_CRASH_SEED={seed})")
    rnd = random.Random(seed)
    rig = Rig(tmp_path, mosquitto.port, None)
    target = LoggingTarget()
    config = _agent_config(tmp_path, mosquitto.port, target.port)
    windows: list[tuple[int, int]] = []  # each agent process: (started, killed or stopped), ns
    try:
        col = rig.start_collector()
        for i in range(KILLS):
            started = time.time_ns()
            p = agent_proc(config, tmp_path / "c1.tee", tmp_path / f"c1-{i}.log")
            # once it probes (start-up takes 1-3 s here), let it run a while, mostly less than one
            # batch_interval; every other kill lands just as a request reaches the target — in the
            # middle of a probe run, its result not yet measured
            assert target.wait_request(len(target.log), 60), p.tail()
            time.sleep(rnd.uniform(0.0, 4.0))
            if i % 2:
                target.wait_request(len(target.log), 5)
                time.sleep(rnd.uniform(0.0, 0.005))
            p.kill()
            windows.append((started, time.time_ns()))
        started = time.time_ns()
        p = agent_proc(config, tmp_path / "c1.tee", tmp_path / "c1-last.log")
        seen = len(target.log)
        deadline = time.monotonic() + 60
        while len(target.log) < seen + 10 and time.monotonic() < deadline and p.alive():  # probing again
            time.sleep(0.2)
        assert p.stop() == 0, p.tail()
        windows.append((started, time.time_ns()))
        target.close()

        st = read_stats(tmp_path / "c1-spool.db")
        assert st.depth == 0, f"{st.depth} batches never acknowledged\n{p.tail()}"
        deadline = time.monotonic() + 60
        while True:  # every batch the agent made has reached the store
            row = {a["id"]: a for a in col.get("/api/agents")}.get("c1", {})
            if row.get("batches") == st.last_seq and row.get("last_seq") == st.last_seq:
                break
            assert time.monotonic() < deadline, (row, st, col.tail())
            time.sleep(0.2)

        db = tmp_path / "collector" / "metrics.db"
        http = _stored(db, "http")
        statuses = [s for s in _stored(db, "probe_status") if s["tags"].get("probe") == "http"]
        interrupted = [s for s in _stored(db, "event") if s["tags"].get("type") == "probe_interrupted"]
        logged = list(target.log)
        assert len(logged) > 5 * KILLS, f"the target saw only {len(logged)} requests: the drill did not run"

        # 1. Stored results: each is one request the target logged, of the same probe, stored once,
        #    at a time between the request's arrival and the probe's timeout.
        by_sha = {sha: (path, recv) for path, recv, sha in logged}
        assert len(by_sha) == len(logged)
        twice = [sha for sha, n in Counter(s["fields"].get("content_sha256") for s in http).items() if n > 1]
        assert not twice, f"seed {seed}: stored twice: {twice[:3]}"
        for s in http:
            sha = s["fields"].get("content_sha256")
            assert sha in by_sha, f"seed {seed}: a stored result no request of the target's produced: {s}"
            path, recv = by_sha[sha]
            assert s["tags"]["target"] == path
            assert recv <= s["time"] <= recv + int(INTERVAL_S * 1e9), (s, recv)
        # every result is whole: its probe_status sample is stored too, ok
        assert sum(1 for s in statuses if s["fields"]["status"] == "ok") == len(http)
        # 2. Requests without a stored result. A probe's runs are sequential, and each sends at most
        #    one request, after it began: such a request belongs to a run of its probe that began
        #    before it arrived, in the same agent process, and has no stored body — a run stored as
        #    down (slower than its timeout on a loaded machine: no body to match) or one the agent
        #    counted as interrupted. The latest such run is its run; each run takes one request.
        stored_sha = {s["fields"]["content_sha256"] for s in http}
        unstored = sorted(((path, recv) for path, recv, sha in logged if sha not in stored_sha), key=lambda x: x[1])
        bodiless = [
            (s["tags"]["target"], s["time"] - int(s["fields"]["duration_ms"] * 1e6), "down")
            for s in statuses
            if s["fields"]["status"] != "ok"
        ] + [(e["tags"]["name"], e["time"], "interrupted") for e in interrupted]
        taken = Counter[str]()
        for path, recv in unstored:
            window = next((w for w in windows if w[0] <= recv <= w[1]), None)
            assert window is not None, (path, recv, windows)
            runs = [r for r in bodiless if r[0] == path and window[0] <= r[1] <= recv]
            assert runs, (
                f"seed {seed}: {len(unstored)} of {len(logged)} requests the target logged have no stored result; this "
                f"one ({path} at {recv}) is in no run stored as down nor counted as interrupted "
                f"({len(interrupted)} interrupted runs recorded)"
            )
            run = max(runs, key=lambda r: r[1])
            bodiless.remove(run)
            taken[run[2]] += 1
        # the runs left over were cut short or timed out before their request reached the target
        for name, t, kind in bodiless:
            assert kind == "down" or any(w[0] <= t <= w[1] for w in windows[:-1]), (name, t, kind)
        # 3. The agent's own count is the events recorded: at most one per probe per kill.
        assert getattr(st, "interrupted_runs", 0) == len(interrupted) <= KILLS * len(PROBES)
        print(
            f"target logged {len(logged)} requests; stored {len(http)} results; "
            f"{len(unstored)} without one: {taken['interrupted']} in runs counted as interrupted, "
            f"{taken['down']} in runs stored as down; {len(interrupted)} runs counted as interrupted in all"
        )
    finally:
        rig.close()
        target.close()
