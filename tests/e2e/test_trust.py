"""Trust decided at the centre, tried as an attacker would, against real processes: what a
compromised agent, a host on the LAN or a careless default could do, refused or contained,
counted, and honest agents losing nothing meanwhile."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.procs import CollectorProc, Proc, agent_proc
from services import Mosquitto, free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """What a careless service manager hands a process: group and others may read new files."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_databases_spools_and_folders_are_private(tmp_path: Path, mosquitto: Mosquitto, loose_umask: None) -> None:
    """Finding 9: metrics.db, state.db, alerts.db and the agent spool were 0644 in 0755 folders.
    Every file the collector and the agent create is now 0600, in folders they create 0700 —
    whatever umask they were started with."""
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {name: hot, measurement: tcp, field: connect_ms, when: '> 100000', summary: {en: x, zh: x}}\n"
    )
    api = free_port()
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(
        f"collector: {{data_dir: {tmp_path / 'centre' / 'data'}}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
        f"api: {{port: {api}}}\n"
        "storage:\n  sqlite: {}\n"
        f"  influxdb: {{url: 'http://127.0.0.1:{free_port()}', org: o, bucket: b, token: t, timeout: 1s}}\n"
        "alerting: {rules: rules.yaml}\n"
    )
    col = CollectorProc(cfg, api, tmp_path / "collector.log")
    agent: Proc | None = None
    try:
        col.wait_ready()
        acfg = tmp_path / "agent.yaml"
        acfg.write_text(
            "agent: {id: town-1, site: town-1}\n"
            f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}}}\n"
            f"spool: {{path: {tmp_path / 'node' / 'lib' / 'spool.db'}}}\n"
            "publish: {batch_interval: 200ms}\n"
            f"probes:\n  - {{type: tcp, name: api, host: 127.0.0.1, port: {api}, interval: 300ms}}\n"
        )
        agent = agent_proc(acfg, tmp_path / "node" / "tee.jsonl", tmp_path / "agent.log")
        col.wait_stored(4)
    finally:
        if agent is not None:
            agent.stop()
        assert col.stop() == 0, col.tail()
    made = [p for top in (tmp_path / "centre", tmp_path / "node") for p in [top, *top.rglob("*")]]
    files = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in made if p.is_file()}
    dirs = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in made if p.is_dir()}
    for name in ("metrics.db", "state.db", "alerts.db", "spool-influxdb.db"):
        assert f"centre/data/{name}" in files
    assert "node/lib/spool.db" in files and "node/tee.jsonl" in files
    assert {k: v for k, v in files.items() if v != 0o600} == {}
    assert {k: v for k, v in dirs.items() if v != 0o700} == {}
