"""The audit log: chain, signed checkpoints, tamper/deletion/truncation detection, retention,
concurrency. Expected hashes and signatures are computed here from the documented encoding
(hashlib, json, cryptography), not with the module's own helpers; attacks go through sqlite3."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from collector.audit import AuditLog, AuditReader
from protocol.signing import SigningKey

DAY = 86_400 * 10**9


# ---- the oracle: the encoding as the docstring defines it -----------------------------------------


def canon(r: dict[str, Any]) -> bytes:
    keys = ("seq", "time_ns", "actor", "source", "action", "target", "result", "detail")
    return json.dumps({k: r[k] for k in keys}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hex: str, r: dict[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hex) + canon(r)).hexdigest()


GENESIS_HEX = "00" * 32


def raw_rows(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM records ORDER BY seq")]
    db.close()
    for r in rows:
        r["detail"] = json.loads(r["detail"])
    return rows


def sql(path: Path, *statements: str, args: tuple[Any, ...] = ()) -> None:
    """What someone with write access to the file does: no triggers in the way."""
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER IF EXISTS records_no_update")
    db.execute("DROP TRIGGER IF EXISTS checkpoints_no_update")
    for s in statements:
        db.execute(s, args if "?" in s else ())
    db.commit()
    db.close()


def rewrite_from(path: Path, seq: int, **changes: Any) -> None:
    """Change record ``seq`` and recompute every hash after it, consistently — without the key."""
    rows = raw_rows(path)
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER IF EXISTS records_no_update")
    prev = GENESIS_HEX
    for r in rows:
        if r["seq"] == seq:
            r.update(changes)
        if r["seq"] >= seq:
            r["hash"] = link(prev, r)
            db.execute(
                "UPDATE records SET actor=?, target=?, result=?, hash=? WHERE seq=?",
                (r["actor"], r["target"], r["result"], r["hash"], r["seq"]),
            )
        prev = r["hash"]
    db.commit()
    db.close()


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.db"


def fill(path: Path, key: SigningKey, n: int, every: int = 100) -> None:
    log = AuditLog(path, key, checkpoint_every=every, checkpoint_seconds=3600)
    for i in range(1, n + 1):
        log.record(f"user{i}", "command", target=f"agent-{i}", source="10.0.0.9", detail={"n": i})
    log.close()


def check(path: Path, key: SigningKey, **kw: Any) -> Any:
    with AuditReader(path) as r:
        return r.verify([key.public], **kw)


def kinds(report: Any) -> list[tuple[str, int | None]]:
    return [(p.kind, p.seq) for p in report.problems]


# ---- appending and reading back --------------------------------------------------------------------


def test_records_chain_from_zero_genesis_with_documented_encoding(path: Path, key: SigningKey) -> None:
    log = AuditLog(path, key)
    s1 = log.record("alice", "login", source="10.1.2.3")
    s2 = log.record("alice", "config_push", target="township-a1", detail={"version": "v7", "键": "值", "b": [1, 2]})
    s3 = log.record("bob", "login_failed", result="denied", source="cli", detail={"reason": "bad password\n"})
    assert (s1, s2, s3) == (1, 2, 3)
    got = log.query()
    log.close()

    rows = raw_rows(path)
    prev = GENESIS_HEX
    for r in rows:
        assert r["hash"] == link(prev, r)
        prev = r["hash"]
    # the detail column holds exactly the canonical JSON of the detail
    db = sqlite3.connect(path)
    (text,) = db.execute("SELECT detail FROM records WHERE seq = 2").fetchone()
    db.close()
    assert text == json.dumps(
        {"version": "v7", "键": "值", "b": [1, 2]}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )

    assert [(r.seq, r.actor, r.action, r.target, r.result, r.source) for r in got] == [
        (1, "alice", "login", "", "ok", "10.1.2.3"),
        (2, "alice", "config_push", "township-a1", "ok", ""),
        (3, "bob", "login_failed", "", "denied", "cli"),
    ]
    assert got[1].detail == {"version": "v7", "键": "值", "b": [1, 2]}
    assert [r.hash for r in got] == [r["hash"] for r in rows]
    assert all(abs(r.time_ns - time.time_ns()) < 60 * 10**9 for r in got)


def test_file_is_private_and_records_cannot_be_updated_through_sql(path: Path, key: SigningKey) -> None:
    fill(path, key, 2)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE records SET actor = 'x' WHERE seq = 1")
    db.close()


def test_query_filters_and_export(path: Path, key: SigningKey) -> None:
    clock = iter(range(1_000, 100_000, 1_000))
    log = AuditLog(path, key, clock=lambda: next(clock))
    log.record("alice", "login")  # t=1000 (the open-time check used no clock: nothing to sign)
    log.record("bob", "login")
    log.record("alice", "command", target="ping 10.0.0.1")
    assert [r.seq for r in log.query(actor="alice")] == [1, 3]
    assert [r.seq for r in log.query(action="login")] == [1, 2]
    assert [r.seq for r in log.query(actor="alice", action="login")] == [1]
    since = log.query()[1].time_ns
    assert [r.seq for r in log.query(since)] == [2, 3]
    exported = list(log.export())
    assert [e["seq"] for e in exported] == [1, 2, 3]
    assert set(exported[0]) == {"seq", "time_ns", "actor", "source", "action", "target", "result", "detail", "hash"}
    assert [e["seq"] for e in log.export(since)] == [2, 3]
    log.close()


def test_export_pages_through_large_logs(path: Path, key: SigningKey) -> None:
    fill(path, key, 1200, every=500)
    with AuditReader(path) as r:
        assert [e["seq"] for e in r.export()] == list(range(1, 1201))


def test_hostile_and_oversized_values_are_kept_bounded(path: Path, key: SigningKey) -> None:
    log = AuditLog(path, key)

    class Odd:
        def __str__(self) -> str:
            return "odd"

    log.record("x" * 10_000, "command", detail={"when": Odd(), 1: "k"})
    (r,) = log.query()
    assert len(r.actor) < 4200 and r.actor.endswith("(+5904 chars)")
    assert r.detail == {"when": "odd", "1": "k"}
    with pytest.raises(ValueError):
        log.record("", "login")
    assert log.verify().ok
    log.close()


# ---- checkpoints -------------------------------------------------------------------------------------


def test_checkpoints_every_n_and_on_close_signed_over_documented_message(path: Path, key: SigningKey) -> None:
    fill(path, key, 7, every=3)
    db = sqlite3.connect(path)
    cps = db.execute("SELECT kind, seq, hash, time_ns, key_id, signature FROM checkpoints ORDER BY id").fetchall()
    db.close()
    hashes = {r["seq"]: r["hash"] for r in raw_rows(path)}
    assert [(c[0], c[1]) for c in cps] == [("head", 3), ("head", 6), ("head", 7)]
    pub = Ed25519PublicKey.from_public_bytes(key.public.raw)
    for kind, seq, h, t, kid, sig in cps:
        assert h == hashes[seq]
        assert kid == hashlib.sha256(key.public.raw).hexdigest()[:16]
        pub.verify(bytes.fromhex(sig), f"netwatch-audit-checkpoint|{kind}|{seq}|{h}|{t}".encode())  # raises if bad
    assert check(path, key).ok


def test_a_checkpoint_follows_within_checkpoint_seconds(path: Path, key: SigningKey) -> None:
    log = AuditLog(path, key, checkpoint_seconds=0.2)
    log.record("alice", "login")
    deadline = time.monotonic() + 5
    while log.head() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    head = log.head()
    assert head is not None and head.seq == 1
    log.close()


def test_reopening_signs_a_tail_left_by_a_crash_only_when_it_chains(path: Path, key: SigningKey) -> None:
    crashed = AuditLog(path, key, checkpoint_seconds=3600)
    for _ in range(5):
        crashed.record("alice", "command")
    # a crash: never closed, nothing signed
    assert crashed.head() is None
    with AuditReader(path) as r:
        rep = r.verify([key.public])
        assert rep.ok and rep.unsigned_tail == 5
    again = AuditLog(path, key)
    head = again.head()
    assert head is not None and head.seq == 5
    again.close()

    # records appended after that and then altered are not blessed by the next open
    crashed.record("alice", "command")
    crashed.record("alice", "command")
    sql(path, "UPDATE records SET actor = 'mallory' WHERE seq = 6")
    third = AuditLog(path, key)
    head = third.head()
    assert head is not None and head.seq == 5
    assert kinds(third.verify()) == [("tampered", 6)]
    third.close()


# ---- tampering ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "actor = 'mallory'",
        "result = 'failed'",
        "target = 'other'",
        "source = '127.0.0.1'",
        "action = 'login'",
        "time_ns = time_ns + 1",
        """detail = '{"n":999}'""",
        """detail = '{"n": 4}'""",  # same value, not canonical
        "detail = 'not json'",
        "hash = '" + "ab" * 32 + "'",
    ],
)
def test_a_modified_record_is_named(path: Path, key: SigningKey, change: str) -> None:
    fill(path, key, 10, every=3)
    sql(path, f"UPDATE records SET {change} WHERE seq = 4")
    report = check(path, key)
    assert not report.ok
    if change.startswith("hash"):
        # the stored hash is both record 4's and the link record 5 checks against
        assert kinds(report) == [("tampered", 4), ("tampered", 5)]
    else:
        assert kinds(report) == [("tampered", 4)]
    assert "record 4" in report.problems[0].message and "记录 4" in report.problems[0].message_zh


def test_a_record_deleted_from_the_middle_is_named(path: Path, key: SigningKey) -> None:
    fill(path, key, 10, every=100)
    sql(path, "DELETE FROM records WHERE seq = 5")
    report = check(path, key)
    assert kinds(report) == [("deleted", 5)]
    assert "records 5–5 are missing" in report.problems[0].message


def test_a_deleted_checkpointed_record_is_named_by_the_chain_and_the_checkpoint(path: Path, key: SigningKey) -> None:
    fill(path, key, 10, every=3)
    sql(path, "DELETE FROM records WHERE seq IN (6, 7)")
    report = check(path, key)
    assert [(p.kind, p.seq, p.checkpoint is not None) for p in report.problems] == [
        ("deleted", 6, False),
        ("deleted", 6, True),  # checkpoint at seq 6 names its missing record
    ]


def test_truncation_is_detected_by_the_checkpoint(path: Path, key: SigningKey) -> None:
    fill(path, key, 10, every=4)  # checkpoints at 4, 8, 10 (close)
    sql(path, "DELETE FROM records WHERE seq >= 7")
    report = check(path, key)
    assert [(p.kind, p.seq) for p in report.problems] == [("truncated", 7), ("truncated", 7)]
    assert "ends at seq 6" in report.problems[0].message and "records 7–8" in report.problems[0].message
    assert "records 7–10" in report.problems[1].message
    assert "截断" in report.problems[0].message_zh


def test_truncation_to_nothing_is_detected(path: Path, key: SigningKey) -> None:
    fill(path, key, 3)
    sql(path, "DELETE FROM records")
    assert kinds(check(path, key)) == [("truncated", 1)]


def test_a_consistent_rewrite_leaves_checkpoints_that_no_longer_match(path: Path, key: SigningKey) -> None:
    fill(path, key, 9, every=3)
    rewrite_from(path, 2, actor="someone-else")
    report = check(path, key)
    assert all(p.kind == "tampered" for p in report.problems)
    assert [p.seq for p in report.problems] == [3, 6, 9]  # the chain links, but the signed hashes differ


def test_a_rewrite_that_also_updates_checkpoint_hashes_fails_their_signatures(path: Path, key: SigningKey) -> None:
    fill(path, key, 9, every=3)
    rewrite_from(path, 2, actor="someone-else")
    hashes = {r["seq"]: r["hash"] for r in raw_rows(path)}
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER checkpoints_no_update")
    for seq, h in hashes.items():
        db.execute("UPDATE checkpoints SET hash = ? WHERE seq = ?", (h, seq))
    db.commit()
    db.close()
    report = check(path, key)
    assert [(p.kind, p.seq) for p in report.problems] == [
        ("bad_signature", 3),
        ("bad_signature", 6),
        ("bad_signature", 9),
    ]


def test_a_rewrite_that_deletes_the_checkpoints_leaves_the_chain_unsigned(path: Path, key: SigningKey) -> None:
    fill(path, key, 9, every=3)
    rewrite_from(path, 2, actor="someone-else")
    sql(path, "DELETE FROM checkpoints")
    assert kinds(check(path, key, max_unsigned=3)) == [("unsigned", 1)]


def test_checkpoints_signed_by_another_key(path: Path, key: SigningKey) -> None:
    fill(path, key, 6, every=3)
    stranger = SigningKey.generate()
    # verified against a key that did not sign them
    assert [(p.kind, p.seq) for p in check(path, stranger).problems] == [("unknown_key", 3), ("unknown_key", 6)]

    # an attacker rewrites the chain and re-signs the checkpoints with their own key
    rewrite_from(path, 1, actor="mallory")
    hashes = {r["seq"]: r["hash"] for r in raw_rows(path)}
    db = sqlite3.connect(path)
    db.execute("DROP TRIGGER checkpoints_no_update")
    for cid, seq, t in db.execute("SELECT id, seq, time_ns FROM checkpoints").fetchall():
        msg = f"netwatch-audit-checkpoint|head|{seq}|{hashes[seq]}|{t}".encode()
        db.execute(
            "UPDATE checkpoints SET hash = ?, key_id = ?, signature = ? WHERE id = ?",
            (hashes[seq], stranger.id, stranger.sign(msg).hex(), cid),
        )
    db.commit()
    assert [(p.kind, p.seq) for p in check(path, key).problems] == [("unknown_key", 3), ("unknown_key", 6)]
    # ... and claims the centre's key id: the signature gives it away
    db.execute("UPDATE checkpoints SET key_id = ?", (key.id,))
    db.commit()
    db.close()
    assert [p.kind for p in check(path, key).problems] == ["bad_signature", "bad_signature"]


# ---- retention -------------------------------------------------------------------------------------


class Clock:
    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


def test_prune_keeps_six_months_and_verification_starts_at_the_signed_prune_point(path: Path, key: SigningKey) -> None:
    clock = Clock(1_700_000_000 * 10**9)
    log = AuditLog(path, key, checkpoint_every=4, clock=clock)
    for i in range(10):  # seq 1–10, a year old
        log.record("old", "login", detail={"i": i})
    clock.now += 200 * DAY
    for _ in range(3):  # seq 11–13, 165 days old after the jump below
        log.record("newer", "login")
    clock.now += 165 * DAY

    with pytest.raises(ValueError, match="183 days"):
        log.prune(30 * DAY)
    assert log.prune() == 10
    assert [r.seq for r in log.query()] == [11, 12, 13]
    cps = log.checkpoints()
    assert [(c.kind, c.seq) for c in cps if c.kind == "pruned"] == [("pruned", 10)]
    assert all(c.seq > 10 for c in cps if c.kind == "head")
    report = log.verify()
    assert report.ok and report.first_seq == 11 and report.signed_up_to >= 10
    # the chain goes on from the kept records
    assert log.record("after", "login") == 14
    assert log.verify().ok
    assert log.prune() == 0
    # forced: everything goes, the chain still continues from the signed prune point
    assert log.prune(0, force=True) == 4
    assert log.query() == []
    assert log.verify().ok
    assert log.record("later", "login") == 15
    log.close()
    assert check(path, key).ok
    hashes = raw_rows(path)
    with AuditReader(path) as r:
        pruned_at_14 = [c for c in r.checkpoints() if c.kind == "pruned" and c.seq == 14]
    assert hashes[0]["hash"] == link(pruned_at_14[0].hash, hashes[0])


def test_deleting_a_prefix_without_a_signed_prune_point_is_detected(path: Path, key: SigningKey) -> None:
    fill(path, key, 10, every=4)
    sql(path, "DELETE FROM records WHERE seq <= 3")
    assert kinds(check(path, key)) == [("deleted", 1)]

    # a forged prune point (signed by someone else) does not help
    stranger = SigningKey.generate()
    msg = f"netwatch-audit-checkpoint|pruned|3|{'00' * 32}|1".encode()
    sql(
        path,
        "INSERT INTO checkpoints (kind, seq, hash, time_ns, key_id, signature) VALUES ('pruned', 3, ?, 1, ?, ?)",
        args=("00" * 32, key.id, stranger.sign(msg).hex()),
    )
    assert [p.kind for p in check(path, key).problems] == ["bad_signature", "deleted"]


def test_relabelling_a_head_checkpoint_as_a_prune_point_breaks_its_signature(path: Path, key: SigningKey) -> None:
    fill(path, key, 10, every=4)
    sql(path, "DELETE FROM records WHERE seq <= 4", "UPDATE checkpoints SET kind = 'pruned' WHERE seq = 4")
    assert [p.kind for p in check(path, key).problems] == ["bad_signature", "deleted"]


def test_deleting_after_a_prune_is_still_detected(path: Path, key: SigningKey) -> None:
    clock = Clock(1_700_000_000 * 10**9)
    log = AuditLog(path, key, clock=clock)
    for _ in range(5):
        log.record("a", "login")
    clock.now += 200 * DAY
    for _ in range(5):
        log.record("b", "login")
    assert log.prune() == 5
    log.close()
    sql(path, "DELETE FROM records WHERE seq = 6")
    assert kinds(check(path, key)) == [("deleted", 6)]


# ---- concurrency -------------------------------------------------------------------------------------


def _append(log: AuditLog, who: str, n: int, out: list[int]) -> None:
    for i in range(n):
        out.append(log.record(who, "command", target=f"t{i}"))


def test_two_threads_appending_500_each(path: Path, key: SigningKey) -> None:
    log = AuditLog(path, key)
    got: list[list[int]] = [[], []]
    threads = [threading.Thread(target=_append, args=(log, f"w{i}", 500, got[i])) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got[0] + got[1]) == list(range(1, 1001))
    log.close()
    rows = raw_rows(path)
    assert [r["seq"] for r in rows] == list(range(1, 1001))
    assert sum(r["actor"] == "w0" for r in rows) == 500
    prev = GENESIS_HEX
    for r in rows:
        assert r["hash"] == link(prev, r)
        prev = r["hash"]
    report = check(path, key)
    assert report.ok and report.signed_up_to == 1000 and report.unsigned_tail == 0


def test_two_writers_on_one_file_share_the_chain(path: Path, key: SigningKey) -> None:
    """As two processes would: separate connections, the head read inside each transaction."""
    a, b = AuditLog(path, key), AuditLog(path, key)
    got: list[list[int]] = [[], []]
    threads = [threading.Thread(target=_append, args=(w, f"w{i}", 150, got[i])) for i, w in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a.close()
    b.close()
    assert sorted(got[0] + got[1]) == list(range(1, 301))
    assert check(path, key).ok


@pytest.fixture
def reader_on_live_log(path: Path, key: SigningKey) -> Iterator[tuple[AuditLog, AuditReader]]:
    log = AuditLog(path, key, checkpoint_every=10)
    log.record("a", "login")
    reader = AuditReader(path)
    yield log, reader
    reader.close()
    log.close()


def test_verify_beside_a_live_writer(reader_on_live_log: tuple[AuditLog, AuditReader], key: SigningKey) -> None:
    log, reader = reader_on_live_log
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            log.record("w", "command")

    t = threading.Thread(target=write)
    t.start()
    try:
        for _ in range(20):
            assert reader.verify([key.public], max_unsigned=10).ok
    finally:
        stop.set()
        t.join()
    with pytest.raises(sqlite3.OperationalError):  # the reader cannot write
        reader._db.execute("DELETE FROM records")
