"""The audit log: who did what, from where, to what, with what result and when — every control
action, login and configuration change, in an append-only, hash-chained SQLite file whose head is
signed with the centre's Ed25519 key (等保 2.0: audit records protected from tampering, kept ≥ 6 months).

The chain
    Record ``n`` (``seq`` 1, 2, 3 …) stores ``hash_n = SHA-256(raw(hash_{n-1}) || canonical_n)``,
    hex-encoded; ``hash_0`` (:data:`GENESIS`) is 32 zero bytes. ``canonical_n`` is

        orjson.dumps({"seq": …, "time_ns": …, "actor": …, "source": …, "action": …,
                      "target": …, "result": …, "detail": {…}}, option=orjson.OPT_SORT_KEYS)

    that is: one JSON object, keys sorted at every level, no whitespace, UTF-8 (non-ASCII written
    as is; ``"``, ``\\`` and control characters escaped as JSON requires), integers in decimal.
    ``detail`` is the record's JSON object (``{}`` when none); the ``detail`` column holds exactly
    ``orjson.dumps(detail, option=OPT_SORT_KEYS)``, so ``json.dumps(obj, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`` gives the same bytes for string and integer values.

Checkpoints (the signed head)
    Every ``checkpoint_every`` records, ``checkpoint_seconds`` after an unsigned record at the
    latest, on open (for a tail a crash left unsigned) and on close, a row ``(kind, seq, hash,
    time_ns, key_id, signature)`` is added, the signature being Ed25519 over the ASCII bytes

        netwatch-audit-checkpoint|<kind>|<seq>|<hash hex>|<time_ns>

    with ``kind`` ``head``, or ``pruned`` when retention deleted every record up to ``seq``
    (verification then starts after it, from its hash). Deleting the last records leaves a signed
    checkpoint beyond the end; rewriting the chain consistently leaves checkpoints whose hashes no
    longer match, and re-signing them needs the private key. Each checkpoint is also logged (INFO,
    ``netwatch.audit``), so a copy of the head lives outside the file: the one thing the file alone
    cannot show is a rollback of records *and* checkpoints to an earlier signed head.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from probes.files import private_file
from protocol.signing import PublicKey, SigningKey

log = logging.getLogger("netwatch.audit")

GENESIS = bytes(32)
#: 等保 2.0 asks for at least six months of audit records; :meth:`AuditLog.prune` refuses less unless forced
MIN_RETENTION_NS = 183 * 86_400 * 10**9
DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_CHECKPOINT_SECONDS = 60.0
#: longer text fields are cut (with a note of how much) so one hostile value cannot bloat the log
MAX_FIELD_CHARS = 4096
MAX_DETAIL_BYTES = 1 << 20
_MAX_PROBLEMS = 100

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  seq INTEGER PRIMARY KEY,
  time_ns INTEGER NOT NULL,
  actor TEXT NOT NULL,
  source TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  result TEXT NOT NULL,
  detail TEXT NOT NULL,             -- orjson.dumps(detail, OPT_SORT_KEYS)
  hash TEXT NOT NULL                -- hex SHA-256(raw previous hash || canonical record)
);
CREATE INDEX IF NOT EXISTS records_time ON records(time_ns);
CREATE TABLE IF NOT EXISTS checkpoints (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL,               -- head | pruned
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL,
  time_ns INTEGER NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL           -- hex Ed25519 over checkpoint_message(...)
);
-- append-only against mistakes (anyone with the file can drop these: the chain is the protection)
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

_WHY_ZH = {
    "its detail is not JSON": "详情不是 JSON",
    "its detail is not in canonical form": "详情不是规范格式",
    "its content does not match its hash": "内容与哈希不符",
}

_COLUMNS = "seq, time_ns, actor, source, action, target, result, detail, hash"


def canonical(
    seq: int, time_ns: int, actor: str, source: str, action: str, target: str, result: str, detail: Mapping[str, Any]
) -> bytes:
    """The bytes a record's hash covers (see the module docstring)."""
    return orjson.dumps(
        {
            "seq": seq,
            "time_ns": time_ns,
            "actor": actor,
            "source": source,
            "action": action,
            "target": target,
            "result": result,
            "detail": detail,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def chain_hash(prev: bytes, record_bytes: bytes) -> bytes:
    return hashlib.sha256(prev + record_bytes).digest()


def checkpoint_message(kind: str, seq: int, hash_hex: str, time_ns: int) -> bytes:
    return f"netwatch-audit-checkpoint|{kind}|{seq}|{hash_hex}|{time_ns}".encode("ascii")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    time_ns: int
    actor: str
    source: str
    action: str
    target: str
    result: str
    detail: dict[str, Any]
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    kind: str
    seq: int
    hash: str
    time_ns: int
    key_id: str
    signature: str

    @property
    def message(self) -> bytes:
        return checkpoint_message(self.kind, self.seq, self.hash, self.time_ns)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the log. ``kind``: tampered · deleted · truncated · bad_signature ·
    unknown_key · unsigned. ``seq`` names the record, ``checkpoint`` the checkpoint row (id)."""

    kind: str
    message: str
    message_zh: str
    seq: int | None = None
    checkpoint: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    first_seq: int | None
    last_seq: int | None
    checkpoints: int
    signed_up_to: int  # the highest seq a valid, matching checkpoint covers (0: none)
    unsigned_tail: int  # records after it
    problems: tuple[Problem, ...] = field(default=())
    more_problems: int = 0  # found beyond the first _MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _row_record(r: sqlite3.Row) -> AuditRecord:
    detail = orjson.loads(r["detail"])
    return AuditRecord(
        r["seq"],
        r["time_ns"],
        r["actor"],
        r["source"],
        r["action"],
        r["target"],
        r["result"],
        detail if isinstance(detail, dict) else {"value": detail},
        r["hash"],
    )


def _row_checkpoint(r: sqlite3.Row) -> Checkpoint:
    return Checkpoint(r["id"], r["kind"], r["seq"], r["hash"], r["time_ns"], r["key_id"], r["signature"])


def _clip(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"audit record: {name} must be a string, not {type(value).__name__}")
    if len(value) <= MAX_FIELD_CHARS:
        return value
    return value[:MAX_FIELD_CHARS] + f"…(+{len(value) - MAX_FIELD_CHARS} chars)"


def _encode_detail(detail: Mapping[str, Any] | None) -> bytes:
    """Canonical JSON of ``detail``; values JSON lacks are written as their ``str()``."""
    try:
        raw = orjson.dumps(dict(detail or {}), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    except orjson.JSONEncodeError as e:
        raise ValueError(f"audit record: detail cannot be written as JSON: {e}") from None
    # One more round so the stored text is exactly what a reader re-encodes (e.g. non-str keys).
    raw = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    if len(raw) > MAX_DETAIL_BYTES:
        raw = orjson.dumps(
            {"truncated": True, "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()},
            option=orjson.OPT_SORT_KEYS,
        )
    return raw


class AuditReader:
    """Reads and verifies an existing audit log without writing to it and without the private key
    (what the ``audit`` CLI and an auditor use). Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no audit log at {self.path}")
        self._lock = threading.RLock()
        self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA query_only=ON")
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ---------------------------------------------------------------------------------

    def query(
        self, since_ns: int | None = None, actor: str | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        """Records at or after ``since_ns`` (all when None), optionally of one actor and/or action, by seq."""
        where = ["time_ns >= ?"]
        args: list[object] = [since_ns if since_ns is not None else -(2**63)]
        if actor is not None:
            where.append("actor = ?")
            args.append(actor)
        if action is not None:
            where.append("action = ?")
            args.append(action)
        sql = f"SELECT {_COLUMNS} FROM records WHERE {' AND '.join(where)} ORDER BY seq"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_row_record(r) for r in rows]

    def export(self, since_ns: int | None = None) -> Iterator[dict[str, Any]]:
        """Every record at or after ``since_ns`` as a dict (for JSON lines), by seq, read in pages."""
        after = 0
        floor = since_ns if since_ns is not None else -(2**63)
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM records WHERE seq > ? AND time_ns >= ? ORDER BY seq LIMIT 1000",
                    (after, floor),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                yield _row_record(r).to_dict()
            after = rows[-1]["seq"]

    def checkpoints(self) -> list[Checkpoint]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM checkpoints ORDER BY id").fetchall()
        return [_row_checkpoint(r) for r in rows]

    def head(self) -> Checkpoint | None:
        """The newest checkpoint (to copy elsewhere as an anchor)."""
        with self._lock:
            r = self._db.execute("SELECT * FROM checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        return _row_checkpoint(r) if r else None

    # ---- verification ----------------------------------------------------------------------------

    def verify(self, public_keys: Iterable[PublicKey], *, max_unsigned: int = DEFAULT_CHECKPOINT_EVERY) -> VerifyReport:
        """Walk the whole log in one read transaction (a consistent snapshot beside a live writer).

        Each record's hash is recomputed from the previous record's stored hash, so a modified
        record is named itself rather than every record after it; seqs must be contiguous from 1,
        or from a signed ``pruned`` checkpoint's seq + 1; every checkpoint must be signed by one of
        ``public_keys`` and its (seq, hash) must be in the chain, not beyond its end; and at most
        ``max_unsigned`` records may follow the last matching checkpoint (a writer signs every
        ``checkpoint_every`` records and on open and close).
        """
        keys = {k.id: k for k in public_keys}
        with self._lock:
            self._db.execute("BEGIN")
            try:
                return self._verify(keys, max_unsigned)
            finally:
                self._db.execute("COMMIT")

    def _verify(self, keys: Mapping[str, PublicKey], max_unsigned: int) -> VerifyReport:
        problems: list[Problem] = []
        dropped = 0

        def problem(p: Problem) -> None:
            nonlocal dropped
            if len(problems) < _MAX_PROBLEMS:
                problems.append(p)
            else:
                dropped += 1

        cps = [_row_checkpoint(r) for r in self._db.execute("SELECT * FROM checkpoints ORDER BY id")]
        valid: list[Checkpoint] = []
        for cp in cps:
            key = keys.get(cp.key_id)
            if key is None:
                problem(
                    Problem(
                        "unknown_key",
                        f"checkpoint #{cp.id} (seq {cp.seq}) is signed by key {cp.key_id}, which is not a trusted key",
                        f"检查点 #{cp.id}（序号 {cp.seq}）由未知密钥 {cp.key_id} 签名",
                        cp.seq,
                        cp.id,
                    )
                )
                continue
            try:
                sig = bytes.fromhex(cp.signature)
            except ValueError:
                sig = b""
            if not key.verify(sig, cp.message):
                problem(
                    Problem(
                        "bad_signature",
                        f"checkpoint #{cp.id} (seq {cp.seq}): the signature does not match key {cp.key_id}"
                        " — the checkpoint was altered or forged",
                        f"检查点 #{cp.id}（序号 {cp.seq}）签名无效：检查点被篡改或伪造",
                        cp.seq,
                        cp.id,
                    )
                )
                continue
            valid.append(cp)

        n, first_seq, last_seq = self._db.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM records").fetchone()
        prune_floor = max((c.seq for c in valid if c.kind == "pruned"), default=0)
        prev: bytes | None
        if first_seq is None or first_seq == 1:
            prev = GENESIS
        else:
            start = [c for c in valid if c.kind == "pruned" and c.seq == first_seq - 1]
            if start:
                prev = bytes.fromhex(start[-1].hash)
            else:
                prev = None
                lost_from = prune_floor + 1
                problem(
                    Problem(
                        "deleted",
                        f"records {lost_from}–{first_seq - 1} are missing before the first record (seq {first_seq})"
                        " and no signed prune checkpoint accounts for them",
                        f"首条记录（序号 {first_seq}）之前的记录 {lost_from}–{first_seq - 1} 缺失，且没有签名的清理检查点",
                        lost_from,
                    )
                )
        floor = first_seq - 1 if first_seq is not None else prune_floor
        end = last_seq if last_seq is not None else floor

        wanted = {c.seq for c in valid}
        stored_at: dict[int, str] = {}
        expect = first_seq
        for r in self._db.execute(f"SELECT {_COLUMNS} FROM records ORDER BY seq"):
            seq = r["seq"]
            if seq != expect:
                problem(
                    Problem(
                        "deleted",
                        f"records {expect}–{seq - 1} are missing (between seq {expect - 1} and {seq})",
                        f"记录 {expect}–{seq - 1} 被删除（在序号 {expect - 1} 与 {seq} 之间）",
                        expect,
                    )
                )
                prev = None  # what came before is gone: this record's link cannot be checked
            expect = seq + 1
            why = ""
            try:
                detail = orjson.loads(r["detail"])
                if orjson.dumps(detail, option=orjson.OPT_SORT_KEYS) != r["detail"].encode():
                    why = "its detail is not in canonical form"
                computed = canonical(
                    seq, r["time_ns"], r["actor"], r["source"], r["action"], r["target"], r["result"], detail
                )
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                why, computed = "its detail is not JSON", b""
            stored = r["hash"]
            if not why and prev is not None and chain_hash(prev, computed).hex() != stored:
                why = "its content does not match its hash"
            if why:
                problem(
                    Problem(
                        "tampered",
                        f"record {seq} was modified: {why}",
                        f"记录 {seq} 被篡改：{_WHY_ZH[why]}",
                        seq,
                    )
                )
            try:
                prev = bytes.fromhex(stored) if isinstance(stored, str) and len(stored) == 64 else None
            except ValueError:
                prev = None
            if seq in wanted:
                stored_at[seq] = stored

        signed_up_to = 0
        for cp in valid:
            if cp.seq <= floor:
                if cp.seq == floor and cp.kind == "pruned":
                    signed_up_to = max(signed_up_to, cp.seq)
                continue  # records pruned away: nothing left to compare with
            if cp.seq > end:
                problem(
                    Problem(
                        "truncated",
                        f"checkpoint #{cp.id} signs seq {cp.seq}, but the log ends at seq {end}:"
                        f" records {end + 1}–{cp.seq} were deleted",
                        f"检查点 #{cp.id} 签署到序号 {cp.seq}，但日志止于 {end}：记录 {end + 1}–{cp.seq} 被删除（截断）",
                        end + 1,
                        cp.id,
                    )
                )
            elif cp.seq not in stored_at:
                problem(
                    Problem(
                        "deleted",
                        f"record {cp.seq}, signed by checkpoint #{cp.id}, is missing",
                        f"检查点 #{cp.id} 签署的记录 {cp.seq} 缺失",
                        cp.seq,
                        cp.id,
                    )
                )
            elif stored_at[cp.seq] != cp.hash:
                problem(
                    Problem(
                        "tampered",
                        f"record {cp.seq}'s hash differs from the one signed in checkpoint #{cp.id}:"
                        " the chain up to it was rewritten",
                        f"记录 {cp.seq} 的哈希与检查点 #{cp.id} 签署的不同：此前的链被重写",
                        cp.seq,
                        cp.id,
                    )
                )
            else:
                signed_up_to = max(signed_up_to, cp.seq)

        unsigned = end - max(signed_up_to, floor) if n else 0
        if unsigned > max_unsigned:
            problem(
                Problem(
                    "unsigned",
                    f"records {end - unsigned + 1}–{end} ({unsigned}) follow the last valid checkpoint;"
                    f" a writer signs every {max_unsigned} at most — checkpoints were removed",
                    f"记录 {end - unsigned + 1}–{end}（{unsigned} 条）之后没有有效检查点；检查点可能被删除",
                    end - unsigned + 1,
                )
            )
        return VerifyReport(n, first_seq, last_seq, len(cps), signed_up_to, unsigned, tuple(problems), dropped)


class AuditLog(AuditReader):
    """The writer: :meth:`record` appends, :meth:`prune` applies retention. Safe across threads
    (one lock) and processes (each append is one ``BEGIN IMMEDIATE`` transaction that reads the
    head from the file, not from memory)."""

    def __init__(
        self,
        path: str | Path,
        signing_key: SigningKey,
        *,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_seconds <= 0:
            raise ValueError("checkpoint_every must be ≥ 1 and checkpoint_seconds > 0")
        self.path = private_file(path)
        self._key = signing_key
        self._every = checkpoint_every
        self._seconds = checkpoint_seconds
        self._clock = clock
        self._timer: threading.Timer | None = None
        self._closed = False
        self._lock = threading.RLock()
        self._db = self._connect()
        self._sign_tail_on_open()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        private_file(self.path)  # the -wal and -shm files SQLite just made
        return db

    @property
    def key_id(self) -> str:
        return self._key.id

    # ---- writing ---------------------------------------------------------------------------------

    def record(
        self,
        actor: str,
        action: str,
        target: str = "",
        result: str = "ok",
        source: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one record (durable when this returns) and return its seq.

        ``actor``: the user or agent id; ``action``: e.g. ``login``, ``login_failed``, ``config_push``,
        ``command``, ``rules_changed``, ``user_created``; ``source``: an IP address, ``cli`` or ``local``."""
        if not actor or not action:
            raise ValueError("audit record: actor and action must not be empty")
        fields = [_clip(n, v) for n, v in (("actor", actor), ("source", source), ("action", action))]
        fields += [_clip("target", target), _clip("result", result)]
        a, s, act, tgt, res = fields
        detail_raw = _encode_detail(detail)
        detail_obj = orjson.loads(detail_raw)
        with self._lock:
            if self._closed:
                raise RuntimeError("audit log is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last_seq, last_hash = self._chain_head()
                seq = last_seq + 1
                now = self._clock()
                h = chain_hash(bytes.fromhex(last_hash), canonical(seq, now, a, s, act, tgt, res, detail_obj)).hex()
                self._db.execute(
                    f"INSERT INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, now, a, s, act, tgt, res, detail_raw.decode(), h),
                )
                if seq - self._signed_seq() >= self._every:
                    self._checkpoint("head", seq, h)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if seq > self._signed_seq() and self._timer is None:
                self._timer = threading.Timer(self._seconds, self._on_timer)
                self._timer.daemon = True
                self._timer.start()
        return seq

    def checkpoint(self) -> Checkpoint | None:
        """Sign the head now if records follow the last checkpoint; return the newest checkpoint."""
        with self._lock:
            if self._closed:
                raise RuntimeError("audit log is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq, h = self._chain_head()
                if seq > self._signed_seq():
                    self._checkpoint("head", seq, h)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.head()

    def prune(self, older_than_ns: int = MIN_RETENTION_NS, *, force: bool = False) -> int:
        """Delete the oldest records — the prefix before the first record younger than
        ``older_than_ns`` (an age, default six months) — and sign a ``pruned`` checkpoint at the
        last deleted seq so verification starts there. Refuses less than six months unless
        ``force``. Returns how many records were deleted."""
        if older_than_ns < MIN_RETENTION_NS and not force:
            raise ValueError(
                f"audit records must be kept at least 183 days (等保 2.0); {older_than_ns / 86_400e9:.1f} days"
                " asked — pass force=True to override"
            )
        cutoff = self._clock() - older_than_ns
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                first, last = self._db.execute("SELECT MIN(seq), MAX(seq) FROM records").fetchone()
                if first is None:
                    self._db.execute("COMMIT")
                    return 0
                (young,) = self._db.execute("SELECT MIN(seq) FROM records WHERE time_ns >= ?", (cutoff,)).fetchone()
                upto = last if young is None else young - 1
                if upto < first:
                    self._db.execute("COMMIT")
                    return 0
                (h,) = self._db.execute("SELECT hash FROM records WHERE seq = ?", (upto,)).fetchone()
                deleted = self._db.execute("DELETE FROM records WHERE seq <= ?", (upto,)).rowcount
                self._db.execute("DELETE FROM checkpoints WHERE kind = 'head' AND seq <= ?", (upto,))
                self._checkpoint("pruned", upto, h)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        log.info("audit log: pruned %d records up to seq %d", deleted, upto)
        return int(deleted)

    def verify(
        self, public_keys: Iterable[PublicKey] | None = None, *, max_unsigned: int | None = None
    ) -> VerifyReport:
        """As :meth:`AuditReader.verify`; by default against this log's own key."""
        return super().verify(
            [self._key.public] if public_keys is None else public_keys,
            max_unsigned=self._every if max_unsigned is None else max_unsigned,
        )

    def close(self) -> None:
        """Sign the head (if records follow the last checkpoint) and close."""
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                self.checkpoint()
            finally:
                self._closed = True
                self._db.close()

    # ---- inside the lock and a transaction -------------------------------------------------------

    def _chain_head(self) -> tuple[int, str]:
        r = self._db.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        if r is None:
            r = self._db.execute(
                "SELECT seq, hash FROM checkpoints WHERE kind = 'pruned' ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (int(r[0]), str(r[1])) if r else (0, GENESIS.hex())

    def _signed_seq(self) -> int:
        (s,) = self._db.execute("SELECT MAX(seq) FROM checkpoints").fetchone()
        return int(s or 0)

    def _checkpoint(self, kind: str, seq: int, hash_hex: str) -> None:
        now = self._clock()
        sig = self._key.sign(checkpoint_message(kind, seq, hash_hex, now)).hex()
        self._db.execute(
            "INSERT INTO checkpoints (kind, seq, hash, time_ns, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)",
            (kind, seq, hash_hex, now, self._key.id, sig),
        )
        log.info("audit %s checkpoint: seq=%d hash=%s key=%s", kind, seq, hash_hex, self._key.id)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            try:
                self.checkpoint()
            except sqlite3.Error as e:  # a busy file: the next record or close signs it
                log.warning("audit log %s: timed checkpoint failed: %s", self.path, e)

    def _sign_tail_on_open(self) -> None:
        """A crash can leave records after the last checkpoint. Sign them — but only when they
        chain from it: a tail that does not is left for ``verify`` to report, never blessed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                head_seq, _ = self._chain_head()
                r = self._db.execute("SELECT seq, hash FROM checkpoints ORDER BY seq DESC, id DESC LIMIT 1").fetchone()
                from_seq, from_hash = (int(r[0]), str(r[1])) if r else (0, GENESIS.hex())
                if head_seq > from_seq:
                    if self._tail_chains(from_seq, from_hash):
                        self._checkpoint("head", *self._chain_head())
                    else:
                        log.error(
                            "audit log %s: the records after seq %d do not chain from its checkpoint; not signing"
                            " them — run `netwatch-collector audit --verify`",
                            self.path,
                            from_seq,
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _tail_chains(self, from_seq: int, from_hash: str) -> bool:
        if from_seq > 0:
            r = self._db.execute("SELECT hash FROM records WHERE seq = ?", (from_seq,)).fetchone()
            if r is not None and r[0] != from_hash:
                return False
        prev, expect = bytes.fromhex(from_hash), from_seq + 1
        for r in self._db.execute(f"SELECT {_COLUMNS} FROM records WHERE seq > ? ORDER BY seq", (from_seq,)):
            try:
                detail = orjson.loads(r["detail"])
                c = canonical(
                    r["seq"], r["time_ns"], r["actor"], r["source"], r["action"], r["target"], r["result"], detail
                )
            except (orjson.JSONDecodeError, TypeError):
                return False
            if r["seq"] != expect or chain_hash(prev, c).hex() != r["hash"]:
                return False
            prev, expect = bytes.fromhex(r["hash"]), expect + 1
        return True
