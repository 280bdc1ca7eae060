"""Backup and restore of the centre, through the real CLI: everything back byte for byte (the
databases compared by content), 0600 files, the audit log verified — and a tampered backup caught."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from collector.audit import AuditLog
from collector.state import StateDB
from protocol.signing import SigningKey
from protocol.status import Status


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def _centre(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    (tmp / name / "desired").mkdir()
    (tmp / name / "desired" / "town-1.yaml").write_text("probes:\n  - {type: icmp, host: 127.0.0.1}\n")
    cfg = tmp / name / "collector.yaml"
    cfg.write_text(f"collector: {{data_dir: {tmp / name / 'data'}}}\ncontrol: {{configs: desired}}\n")
    return cfg


def _dump(db: Path) -> list[str]:
    c = sqlite3.connect(db)
    try:
        return list(c.iterdump())
    finally:
        c.close()


def test_backup_restore_round_trip_and_tamper(tmp_path: Path) -> None:
    cfg = _centre(tmp_path, "a")
    data = tmp_path / "a" / "data"
    st = StateDB(data / "state.db")
    st.record_status("town-1", Status("online", "town-1", site="t1", version="0.1.0"))
    st.admit("town-9", "t1", "by hand")
    st.close()
    audit = AuditLog(data / "audit.db", SigningKey.load_or_create(data / "keys" / "centre.key"))
    for i in range(5):
        audit.record("ops", "command", f"town-{i}", "ok", "cli", {"argv": ["ping", "x"]})
    audit.close()
    archive = tmp_path / "centre.tar.gz"
    r = _cli(cfg, "backup", str(archive))
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as t:
        names = set(t.getnames())
    assert {
        "data/state.db",
        "data/audit.db",
        "data/keys/centre.key",
        "etc/collector.yaml",
        "etc/desired/town-1.yaml",
    } <= names

    # a second centre, empty: restored from the archive
    cfg_b = _centre(tmp_path, "b")
    r = _cli(cfg_b, "restore", str(archive), "--etc", str(tmp_path / "b" / "etc"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "audit log verified" in r.stdout
    data_b = tmp_path / "b" / "data"
    assert _dump(data_b / "state.db") == _dump(data / "state.db")

    # the audit log as it was at the copy: a's five records (a has logged the backup since, as 6)
    def records(db: Path) -> list[tuple[object, ...]]:
        c = sqlite3.connect(db)
        try:
            return c.execute("SELECT * FROM records ORDER BY seq").fetchall()
        finally:
            c.close()

    a_log, b_log = records(data / "audit.db"), records(data_b / "audit.db")
    assert b_log[:5] == a_log[:5] and len(a_log) == len(b_log) == 6
    assert "backup" in a_log[5] and "restore" in b_log[5]  # each centre logged what was done to it
    assert (data_b / "keys" / "centre.key").read_bytes() == (data / "keys" / "centre.key").read_bytes()
    assert (tmp_path / "b" / "etc" / "desired" / "town-1.yaml").read_text().startswith("probes:")
    assert {stat.S_IMODE(p.stat().st_mode) for p in data_b.rglob("*") if p.is_file()} == {0o600}
    # again without --force: refused, nothing replaced
    r = _cli(cfg_b, "restore", str(archive))
    assert r.returncode == 2 and "--force" in r.stdout

    # an archive whose audit log was edited (and its manifest updated to match) restores, and the
    # verification says the log is not intact
    bad = tmp_path / "bad.tar.gz"
    work = tmp_path / "work"
    with tarfile.open(archive) as t:
        t.extractall(work, filter="data")
    c = sqlite3.connect(work / "data" / "audit.db")
    c.execute("DROP TRIGGER IF EXISTS records_no_update")
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        c.execute(f"DROP TRIGGER {name}")
    c.execute("UPDATE records SET actor = 'nobody' WHERE seq = 2")
    c.commit()
    c.close()
    import hashlib

    import orjson

    man = orjson.loads((work / "manifest.json").read_bytes())
    man["files"]["data/audit.db"] = hashlib.sha256((work / "data" / "audit.db").read_bytes()).hexdigest()
    (work / "manifest.json").write_bytes(orjson.dumps(man))
    with tarfile.open(bad, "w:gz") as t:
        for name in [*man["files"], "manifest.json"]:
            t.add(work / name, arcname=name)
    cfg_c = _centre(tmp_path, "c")
    r = _cli(cfg_c, "restore", str(bad))
    assert r.returncode == 1 and "NOT intact" in r.stdout, r.stdout
    # and one whose member no longer matches the manifest is refused outright
    with tarfile.open(bad, "w:gz") as t:
        for name in man["files"]:
            t.add(work / name, arcname=name)
        (work / "manifest.json").write_bytes(
            orjson.dumps({**man, "files": {**man["files"], "data/state.db": "0" * 64}})
        )
        t.add(work / "manifest.json", arcname="manifest.json")
    cfg_d = _centre(tmp_path, "d")
    r = _cli(cfg_d, "restore", str(bad))
    assert r.returncode == 2 and "does not match its manifest" in r.stdout
