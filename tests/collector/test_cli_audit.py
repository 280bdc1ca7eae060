"""``netwatch-collector audit`` as a process (``python -m collector.cli_audit``) on a log written by
the real AuditLog and attacked through sqlite3."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collector.audit import AuditLog
from protocol.signing import SigningKey

HOSTILE = "agent\x1b[31m[link=http://x]evil[/link]"


def cli(cfg: Path, *args: str, color: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("NO_COLOR", None)
    if color:
        env["FORCE_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "collector.cli_audit", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A collector config whose data_dir holds an audit log of four records, one three days old."""
    cfg = tmp_path / "collector.yaml"
    cfg.write_text("collector: {data_dir: data}\napi: {enabled: false}\n")
    key = SigningKey.load_or_create(tmp_path / "data" / "keys" / "centre.key")
    now = time.time_ns()
    times = iter([now - 3 * 86_400 * 10**9, now - 2000, now - 1000, now, now + 1, now + 2])
    log = AuditLog(tmp_path / "data" / "audit.db", key, clock=lambda: next(times))
    log.record("alice", "login", source="10.1.0.5")  # three days ago
    log.record("bob", "login_failed", source="10.1.0.6", result="denied", detail={"reason": "bad password"})
    log.record(HOSTILE, "command", target="ping [bold]10.0.0.1", source="10.2.0.1", detail={"out": "\x1b]0;title\x07"})
    log.record("alice", "config_push", target="township-a1", detail={"version": "v2"})
    log.close()
    return cfg


def test_list_is_a_bilingual_table_of_the_last_day_with_outside_text_escaped(site: Path) -> None:
    r = cli(site, color=True)
    assert r.returncode == 0, r.stderr
    for header in ("actor / 操作人", "action / 操作", "target / 对象", "result / 结果", "time / 时间"):
        assert header in r.stdout
    assert "login_failed" in r.stdout and "config_push" in r.stdout
    assert "10.1.0.5" not in r.stdout  # alice's login three days ago is outside --since 1d
    # the hostile actor arrives as text: no ESC from it, markup printed as written
    assert "\\x1b[31m" in r.stdout and "[link=http://x]evil[/link]" in r.stdout
    assert "\x1b]0;" not in r.stdout and "\x1b]8;" not in r.stdout
    assert "ping [bold]10.0.0.1" in r.stdout


def test_list_filters_and_json(site: Path) -> None:
    r = cli(site, "--since", "7d", "--json")
    assert r.returncode == 0
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["seq"] for x in rows] == [1, 2, 3, 4]
    assert rows[2]["actor"] == HOSTILE
    r = cli(site, "--since", "7d", "--actor", "alice", "--json")
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == [1, 4]
    r = cli(site, "--action", "login_failed", "--json")
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == [2]
    r = cli(site, "--actor", "nobody")
    assert r.returncode == 1 and "无审计记录" in r.stdout


def test_verify_intact_then_tampered(site: Path) -> None:
    r = cli(site, "--verify")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "intact" in r.stdout and "审计日志完整" in r.stdout and "4 records" in r.stdout

    db = sqlite3.connect(site.parent / "data" / "audit.db")
    db.execute("DROP TRIGGER records_no_update")
    db.execute("UPDATE records SET result = 'ok' WHERE seq = 2")  # hide a failed login
    db.commit()
    db.close()
    r = cli(site, "--verify")
    assert r.returncode == 1
    assert "NOT intact" in r.stdout and "审计日志不完整" in r.stdout
    assert "record 2 was modified" in r.stdout and "记录 2 被篡改" in r.stdout
    r = cli(site, "--verify", "--json")
    assert r.returncode == 1
    (report,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert report["ok"] is False and [(p["kind"], p["seq"]) for p in report["problems"]] == [("tampered", 2)]


def test_verify_detects_truncation(site: Path) -> None:
    db = sqlite3.connect(site.parent / "data" / "audit.db")
    db.execute("DELETE FROM records WHERE seq >= 3")
    db.commit()
    db.close()
    r = cli(site, "--verify")
    assert r.returncode == 1 and "truncated" in r.stdout and "截断" in r.stdout


def test_verify_needs_the_right_public_key(site: Path, tmp_path: Path) -> None:
    keys = tmp_path / "data" / "keys"
    old = tmp_path / "old.pub"
    (keys / "centre.key.pub").rename(old)
    assert cli(site, "--verify").returncode == 0  # the private key still gives the public one
    (keys / "centre.key").rename(tmp_path / "old.key")
    r = cli(site, "--verify")
    assert r.returncode == 1 and "unknown_key" in r.stdout and "no public key" in r.stdout
    assert cli(site, "--verify", "--key", str(old)).returncode == 0


def test_export_to_a_private_file_and_to_stdout(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "audit.jsonl"
    r = cli(site, "--export", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["seq"] for x in rows] == [1, 2, 3, 4]  # everything unless --since
    # the export is verifiable on its own: each hash chains from the one before (genesis: 32 zero bytes)
    prev = bytes(32)
    for x in rows:
        body = {k: x[k] for k in ("seq", "time_ns", "actor", "source", "action", "target", "result", "detail")}
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert x["hash"] == hashlib.sha256(prev + canon).hexdigest()
        prev = bytes.fromhex(x["hash"])

    r = cli(site, "--export", "-", "--since", "1d")
    assert r.returncode == 0
    assert [json.loads(line)["seq"] for line in r.stdout.splitlines()] == [2, 3, 4]


def test_usage_and_missing_log(site: Path, tmp_path: Path) -> None:
    assert cli(site, "--since", "soon").returncode == 2
    assert cli(site, "--verify", "--export", "-").returncode == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("collector: {data_dri: x}\n")
    r = cli(bad)
    assert r.returncode == 2 and "配置错误" in r.stdout
    empty = tmp_path / "empty.yaml"
    empty.write_text("collector: {data_dir: nothing-here}\napi: {enabled: false}\n")
    r = cli(empty, "--verify")
    assert r.returncode == 1 and "no audit log" in r.stdout
    assert not (tmp_path / "nothing-here" / "audit.db").exists()
