"""Starting netwatch's own processes (collector, agents) for end-to-end tests; stopped by PID."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL if it will not stop. Returns the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._log.close()
        return self.p.returncode

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def api_token(config: Path) -> str:
    """A viewer account and an API token for the tests to read the collector's API with (the API
    wants a login since users and roles exist); made in the collector's users.db before it starts."""
    from collector import config as collector_config
    from collector.users import LocalAdmin, UserDB

    cfg = collector_config.load(config)
    db = UserDB(cfg.data_dir / "users.db")
    try:
        existing = {u.name for u in db.users()}
        if "e2e-reader" not in existing:
            db.add_user(LocalAdmin("tests"), "e2e-reader", "viewer", "Tests-Only-Pass-42x")
        return db.create_token(LocalAdmin("tests"), "e2e-reader", f"t{time.time_ns()}", 86400).secret
    finally:
        db.close()


class CollectorProc(Proc):
    def __init__(self, config: Path, api_port: int, log: Path) -> None:
        self.token = api_token(config)
        super().__init__("collector", [sys.executable, "-m", "collector.cli", "run", "--config", str(config)], log)
        self.api = f"http://127.0.0.1:{api_port}"

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.api + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return orjson.loads(r.read())

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"collector exited {self.p.returncode}:\n{self.tail()}")
            try:
                if self.get("/health")["broker_connected"]:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"collector not ready in {timeout_s}s:\n{self.tail()}")

    def wait_stored(self, at_least: int, timeout_s: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.get("/api/stats")
            if st.get("stored_samples", 0) >= at_least:
                return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"stored {st.get('stored_samples', 0)} of {at_least}:\n{self.tail()}")
            time.sleep(0.1)


def agent_proc(config: Path, tee: Path, log: Path) -> Proc:
    return Proc(
        config.stem, [sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--tee", str(tee)], log
    )


def read_tee(path: Path) -> list[dict[str, Any]]:
    """The samples an agent spooled, by its --tee record. A batch number written twice means the
    agent died before the first copy committed: the later copy is the real one."""
    by_seq: dict[int, list[dict[str, Any]]] = {}
    last_seq = None
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # torn by a SIGKILL mid-write: that batch never committed either
        if "run_started" in row:
            last_seq = None
            continue
        seq = row.pop("seq")
        if seq != last_seq:
            by_seq[seq] = []  # a new batch, or a later copy of a number that never committed
            last_seq = seq
        by_seq[seq].append(row)
    return [row for seq in sorted(by_seq) for row in by_seq[seq]]
