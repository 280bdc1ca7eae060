"""Users, roles and sessions at the centre (等保 2.0 level 3: unique accounts, no default password,
lockout, session timeout, least privilege, administrator ≠ security officer ≠ auditor).

Every change and every login returns an :class:`Event` (actor, action, target, result, reason) for the
caller to put in the audit log; refusals raise :class:`Refused`, which carries one too. Nothing here
logs a password, a token or a hash, nor keeps a password or token in clear.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from probes.files import private_file

log = logging.getLogger("netwatch.collector.users")

# --- roles: one table ---------------------------------------------------------------------------

READ, ACK, SILENCE, CMD_READ = "read", "alerts.ack", "alerts.silence", "cmd.read"
CONFIG_PUSH, CMD_WRITE = "config.push", "cmd.write"
USERS_MANAGE, KEYS_MANAGE = "users.manage", "keys.manage"
AUDIT_READ = "audit.read"

_OPERATE = frozenset({READ, ACK, SILENCE, CMD_READ})
#: role -> what it may do. A user has exactly one role.
ROLES: Final[Mapping[str, frozenset[str]]] = {
    "viewer": frozenset({READ}),  # agents, values, alerts
    "operator": _OPERATE,  # + acknowledge, silence, read-only commands on agents
    "admin": _OPERATE | {CONFIG_PUSH, CMD_WRITE},  # + config push, write actions on devices
    "security": frozenset({USERS_MANAGE, KEYS_MANAGE}),  # the security officer: nothing operational
    "auditor": frozenset({AUDIT_READ}),  # reads the audit log, nothing else
}
PERMISSIONS: Final = frozenset().union(*ROLES.values())

#: The three duties 等保 keeps apart: no role may hold permissions of two of them.
DUTIES: Final[Mapping[str, frozenset[str]]] = {
    "administration": frozenset({CONFIG_PUSH, CMD_WRITE}),
    "security": frozenset({USERS_MANAGE, KEYS_MANAGE}),
    "audit": frozenset({AUDIT_READ}),
}


def _check_roles() -> None:
    for role, perms in ROLES.items():
        held = [d for d, ps in DUTIES.items() if perms & ps]
        if len(held) > 1:
            raise AssertionError(f"role {role} mixes the duties {held}")
        if AUDIT_READ in perms and perms != {AUDIT_READ}:
            raise AssertionError(f"role {role}: audit.read goes with nothing else")


_check_roles()  # the separation holds by construction: a bad edit of the table fails at import


def may(role: str, permission: str) -> bool:
    """Whether ``role`` may do ``permission``; unknown roles and permissions may nothing."""
    return permission in ROLES.get(role, frozenset())


# --- policy and hashing -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    max_failures: int = 5  # failed logins in a row before the account locks
    lockout_s: float = 15 * 60
    session_idle_s: float = 15 * 60
    session_absolute_s: float = 8 * 3600
    token_max_s: float = 366 * 86400  # API tokens always expire, at most a year (and a day) on
    min_length: int = 12
    max_length: int = 1024  # hashing megabytes on request is a denial of service, not a password
    #: Failed logins from one source address within ``address_window_s`` before the address may
    #: not try again for ``address_block_s``: one password tried across many accounts never locks
    #: any of them, and every try makes the server hash a password.
    address_max_failures: int = 20
    address_window_s: float = 10 * 60
    address_block_s: float = 15 * 60


def hasher() -> PasswordHasher:
    """Argon2id with RFC 9106's second recommended option (memory-constrained): t=3 passes, 64 MiB,
    4 lanes, 16-byte salt, 32-byte tag — about 0.1–0.3 s per login on a centre's server."""
    return PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4, hash_len=32, salt_len=16)


def password_problems(name: str, password: str, policy: Policy = Policy()) -> list[str]:
    """What is wrong with ``password`` for user ``name``, in English / Chinese; empty when fine."""
    out = []
    if len(password) < policy.min_length:
        out.append(f"at least {policy.min_length} characters / 至少 {policy.min_length} 个字符")
    if len(password) > policy.max_length:
        out.append(f"at most {policy.max_length} characters / 至多 {policy.max_length} 个字符")
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not (c.islower() or c.isupper() or c.isdigit()) for c in password),
        )
    )
    if classes < 3:
        out.append(
            "three of: lower-case, upper-case, digits, other characters / 需含小写、大写、数字、其他字符中的三类"
        )
    if name and name.casefold() in password.casefold():
        out.append("must not be or contain the user name / 不得等于或包含用户名")
    return out


def generate_password(name: str = "") -> str:
    """A random one-time password that passes the policy (about 144 bits)."""
    while True:
        pw = secrets.token_urlsafe(18)
        if not password_problems(name, pw):
            return pw


def _sha256(secret: str) -> str:
    # tokens are 256 random bits: a fast hash is enough, and lets a lookup be one index probe
    return hashlib.sha256(secret.encode()).hexdigest()


# --- what callers get back ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One line for the audit log: who did what to whom, and how it ended."""

    actor: str
    action: str  # login, logout, user.add, user.password, user.role, user.disable, ...
    target: str
    result: str  # ok | refused | failed
    reason: str = ""  # for refusals and failures: bad_password, unknown_user, locked, forbidden, ...
    source: str = ""  # where a login came from (address), when known
    time_ns: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "time": self.time_ns,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "result": self.result,
            "reason": self.reason,
            "source": self.source,
        }


class Refused(Exception):
    """A change the actor may not make or the policy forbids; ``event`` is for the audit log,
    ``str(self)`` for the person (English / Chinese)."""

    def __init__(self, message: str, event: Event) -> None:
        super().__init__(message)
        self.event = event


#: what a caller shows for every failed login, whatever the reason (the reason is for the audit log)
LOGIN_FAILED: Final = "login failed: wrong user name or password, or the account cannot log in now / 登录失败：用户名或密码错误，或账号当前不可用"


@dataclass(frozen=True, slots=True)
class Session:
    token: str = field(repr=False)  # the secret: the database keeps only its SHA-256
    user: str
    role: str
    created_ns: int
    expires_ns: int  # the earlier of the idle and the absolute limit
    must_change_password: bool  # true: the caller allows nothing but changing it
    event: Event | None = None  # set by authenticate()

    def may(self, permission: str) -> bool:
        return not self.must_change_password and may(self.role, permission)


@dataclass(frozen=True, slots=True)
class AuthFailure:
    reason: str  # bad_password | unknown_user | locked | disabled | throttled
    #: for the audit log; None for a throttled address' further tries (its block is logged once)
    event: Event | None
    message: str = LOGIN_FAILED
    retry_after_s: float = 0.0  # throttled: when the address may try again
    #: this failure started a block of its source address (audited besides ``event``)
    blocked: Event | None = None


class AddressThrottle:
    """Failed logins per source address (see :class:`Policy`). In memory, so a restart forgets
    (and a lockout per account still holds); at most ``MAX_ADDRESSES`` are remembered, the
    longest quiet forgotten first, so a flood from many addresses cannot grow it without bound."""

    MAX_ADDRESSES = 10_000

    def __init__(self, policy: Policy, clock: Callable[[], int]) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, deque[int]] = OrderedDict()
        self._blocked: OrderedDict[str, int] = OrderedDict()  # address -> blocked until (ns)
        #: tries refused without a password check, since start
        self.refused = 0

    def wait_s(self, source: str) -> float:
        """Seconds until ``source`` may try again; 0 when it may now (and the refusal is counted
        when it may not)."""
        now = self._clock()
        with self._lock:
            until = self._blocked.get(source)
            if until is None:
                return 0.0
            if until <= now:
                del self._blocked[source]
                return 0.0
            self.refused += 1
            return (until - now) / 1e9

    def failed(self, source: str) -> bool:
        """Count a failed login from ``source``; True when that blocks the address."""
        p = self.policy
        now = self._clock()
        window = int(p.address_window_s * 1e9)
        with self._lock:
            times = self._failures.pop(source, None)
            if times is None:
                times = deque(maxlen=p.address_max_failures)
            times.append(now)
            while times and times[0] <= now - window:
                times.popleft()
            if len(times) < p.address_max_failures:
                self._failures[source] = times  # to the end: the most recently active
                while len(self._failures) > self.MAX_ADDRESSES:
                    self._failures.popitem(last=False)
                return False
            self._blocked[source] = now + int(p.address_block_s * 1e9)
            while len(self._blocked) > self.MAX_ADDRESSES:
                self._blocked.popitem(last=False)
            return True


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    created_ns: int
    changed_ns: int
    failed_logins: int
    locked_until_ns: int | None
    disabled: bool
    must_change_password: bool
    last_login_ns: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "created": self.created_ns,
            "changed": self.changed_ns,
            "failed_logins": self.failed_logins,
            "locked_until": self.locked_until_ns,
            "disabled": self.disabled,
            "must_change_password": self.must_change_password,
            "last_login": self.last_login_ns,
        }


@dataclass(frozen=True, slots=True)
class Added:
    event: Event
    password: str | None = field(default=None, repr=False)  # generated: show it once, then forget it


@dataclass(frozen=True, slots=True)
class NewToken:
    event: Event
    secret: str = field(repr=False)  # shown once; stored only as its SHA-256
    expires_ns: int = 0


@dataclass(frozen=True, slots=True)
class TokenUser:
    user: str
    role: str
    token_name: str
    expires_ns: int

    def may(self, permission: str) -> bool:
        return may(self.role, permission)


@dataclass(frozen=True, slots=True)
class ApiToken:
    user: str
    name: str
    created_ns: int
    expires_ns: int
    last_used_ns: int | None

    def to_dict(self) -> dict[str, object]:
        return {
            "user": self.user,
            "name": self.name,
            "created": self.created_ns,
            "expires": self.expires_ns,
            "last_used": self.last_used_ns,
        }


@dataclass(frozen=True, slots=True)
class LocalAdmin:
    """The operating-system user on the centre's host who can open the database file: may do
    everything the security officer may (they could edit the file anyway), and is recorded as
    ``local:<login>``. Policy still applies: weak passwords and removing the last officer are refused."""

    os_user: str

    @property
    def label(self) -> str:
        return f"local:{self.os_user}"


Actor = str | LocalAdmin

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def valid_name(name: str) -> bool:
    """User names: 1–64 of letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit;
    unique regardless of case."""
    return 0 < len(name) <= 64 and name[0].isalnum() and name.isascii() and set(name) <= _NAME_CHARS


# --- the database -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY COLLATE NOCASE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    changed_ns INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until_ns INTEGER,
    disabled INTEGER NOT NULL DEFAULT 0,
    must_change_password INTEGER NOT NULL DEFAULT 1,
    last_login_ns INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL COLLATE NOCASE REFERENCES users(name) ON DELETE CASCADE,
    source TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    user TEXT NOT NULL COLLATE NOCASE REFERENCES users(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL,
    last_used_ns INTEGER,
    UNIQUE (user, name)
);
"""

_USER_COLS = (
    "name, role, created_ns, changed_ns, failed_logins, locked_until_ns, disabled, must_change_password, last_login_ns"
)


class UserDB:
    """The centre's accounts, sessions and API tokens in one SQLite file (0600, folder 0700), safe to
    open from the collector and the CLI at once (WAL; read-modify-write in immediate transactions)."""

    def __init__(
        self,
        path: str | Path,
        *,
        policy: Policy = Policy(),
        clock: Callable[[], int] = time.time_ns,
        password_hasher: PasswordHasher | None = None,
    ) -> None:
        self.path = private_file(path)
        self.policy = policy
        self._clock = clock
        self._ph = password_hasher or hasher()
        self.throttle = AddressThrottle(policy, clock)
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()
        self._touch_failed = False
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA secure_delete=ON")  # dropped hashes are overwritten, not left in free pages
        self._db.executescript(_SCHEMA)
        private_file(self.path)  # the WAL and shared-memory files just made

    @property
    def _dummy(self) -> str:
        # unknown users are checked against this, so they cost as much time as known ones (made on
        # first need: a CLI listing users should not pay for a hash)
        if self._dummy_hash is None:
            self._dummy_hash = self._ph.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk): a bare ROLLBACK would then
                # hide the real error, and a failed COMMIT must not leave the transaction open.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise

    def _touch(self, sql: str, args: tuple[object, ...]) -> None:
        """Bookkeeping on a read (last used, last seen): best effort, so that a full disk does
        not lock the operators out of the API just when they need it."""
        try:
            with self._tx() as db:
                db.execute(sql, args)
        except sqlite3.Error as e:
            if not self._touch_failed:  # once, not per request
                self._touch_failed = True
                log.warning("users.db: cannot record when tokens and sessions were last used (%s)", e)
            return
        self._touch_failed = False

    def _now(self) -> int:
        return self._clock()

    # --- reading

    def users(self) -> list[User]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name").fetchall()
        return [self._user(r) for r in rows]

    def user(self, name: str) -> User | None:
        with self._lock:
            r = self._db.execute(f"SELECT {_USER_COLS} FROM users WHERE name = ?", (name,)).fetchone()
        return self._user(r) if r else None

    @staticmethod
    def _user(r: tuple[object, ...]) -> User:
        name, role, created, changed, failed, locked, disabled, must, last = r
        return User(
            str(name),
            str(role),
            int(str(created)),
            int(str(changed)),
            int(str(failed)),
            None if locked is None else int(str(locked)),
            bool(disabled),
            bool(must),
            None if last is None else int(str(last)),
        )

    # --- first start

    def ensure_first_admin(self) -> str | None:
        """When there is no user at all, create ``admin`` (role admin) with a random one-time password
        that must be changed at first login, and return it for the caller to show once. ``None``
        when users exist. There is no default password."""
        password = generate_password("admin")
        digest = self._ph.hash(password)
        now = self._now()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
                return None
            db.execute(
                "INSERT INTO users (name, role, password_hash, created_ns, changed_ns, must_change_password)"
                " VALUES ('admin', 'admin', ?, ?, ?, 1)",
                (digest, now, now),
            )
        return password

    # --- logging in

    def authenticate(self, name: str, password: str, source: str = "") -> Session | AuthFailure:
        """Check a password. Locked (after ``max_failures`` bad ones, for ``lockout_s``), disabled and
        unknown accounts fail the same way to the caller and take about the same time."""
        now = self._now()
        if source:
            wait = self.throttle.wait_s(source)
            if wait > 0:  # refused before any password is hashed
                minutes = max(1, math.ceil(wait / 60))
                return AuthFailure(
                    "throttled",
                    None,
                    f"too many failed logins from {source}; try again in {minutes} min / "
                    f"此地址登录失败次数过多，请 {minutes} 分钟后再试",
                    retry_after_s=wait,
                )

        def fail(reason: str, target: str = name) -> AuthFailure:
            blocked = None
            if source and self.throttle.failed(source):
                p = self.policy
                log.warning(
                    "%d failed logins from %s within %g min: it may not try again for %g min",
                    p.address_max_failures,
                    source,
                    p.address_window_s / 60,
                    p.address_block_s / 60,
                )
                blocked = Event("-", "login.block", source, "refused", "too_many_failures", source, now)
            return AuthFailure(reason, Event(name, "login", target, "failed", reason, source, now), blocked=blocked)

        with self._lock:
            r = self._db.execute(
                "SELECT name, role, password_hash, locked_until_ns, disabled, must_change_password"
                " FROM users WHERE name = ?",
                (name,),
            ).fetchone()
        if r is None or len(password) > self.policy.max_length:
            self._verify(self._dummy, password[: self.policy.max_length])
            return fail("unknown_user" if r is None else "bad_password")
        uname, role, digest, locked_until, disabled, must = r
        ok = self._verify(digest, password)
        if disabled:
            return fail("disabled", uname)
        if locked_until is not None and locked_until > now:
            return fail("locked", uname)  # a right password does not end a lockout early
        if not ok:
            self._count_failure(uname, now)
            return fail("bad_password", uname)
        token = secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute(
                "UPDATE users SET failed_logins = 0, locked_until_ns = NULL, last_login_ns = ? WHERE name = ?",
                (now, uname),
            )
            db.execute(
                "INSERT INTO sessions (token_sha256, user, source, created_ns, last_seen_ns) VALUES (?, ?, ?, ?, ?)",
                (_sha256(token), uname, source, now, now),
            )
            if self._ph.check_needs_rehash(digest):  # parameters raised since: upgrade while we have it
                db.execute("UPDATE users SET password_hash = ? WHERE name = ?", (self._ph.hash(password), uname))
        return Session(
            token,
            uname,
            role,
            now,
            self._expiry(now, now),
            bool(must),
            Event(uname, "login", uname, "ok", "must_change_password" if must else "", source, now),
        )

    def _count_failure(self, name: str, now: int) -> None:
        with self._tx() as db:
            (failed,) = db.execute(
                "UPDATE users SET failed_logins = failed_logins + 1 WHERE name = ? RETURNING failed_logins", (name,)
            ).fetchone()
            if failed >= self.policy.max_failures:
                # the count starts again after the lockout: five more tries, then locked again
                db.execute(
                    "UPDATE users SET failed_logins = 0, locked_until_ns = ? WHERE name = ?",
                    (now + int(self.policy.lockout_s * 1e9), name),
                )

    def _verify(self, digest: str, password: str) -> bool:
        try:
            return self._ph.verify(digest, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _expiry(self, created_ns: int, last_seen_ns: int) -> int:
        return min(
            last_seen_ns + int(self.policy.session_idle_s * 1e9),
            created_ns + int(self.policy.session_absolute_s * 1e9),
        )

    def session(self, token: str, *, touch: bool = True) -> Session | None:
        """The live session of ``token``, its idle time restarted (unless ``touch`` is false: the
        status page refreshing itself is not the user doing something); ``None`` when unknown, idle
        for longer than ``session_idle_s``, older than ``session_absolute_s``, or its user is disabled."""
        now = self._now()
        h = _sha256(token)
        with self._tx() as db:
            r = db.execute(
                "SELECT s.user, u.role, s.created_ns, s.last_seen_ns, u.disabled, u.must_change_password"
                " FROM sessions s JOIN users u ON u.name = s.user WHERE s.token_sha256 = ?",
                (h,),
            ).fetchone()
            if r is None:
                return None
            user, role, created, last_seen, disabled, must = r
            if disabled or now >= self._expiry(created, last_seen):
                db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (h,))
                return None
            if not touch:
                now = last_seen
        if touch:
            self._touch("UPDATE sessions SET last_seen_ns = ? WHERE token_sha256 = ?", (now, h))
        return Session(token, user, role, created, self._expiry(created, now), bool(must))

    def logout(self, token: str) -> Event | None:
        """End a session; ``None`` when there was none."""
        now = self._now()
        with self._tx() as db:
            r = db.execute("DELETE FROM sessions WHERE token_sha256 = ? RETURNING user", (_sha256(token),)).fetchone()
        return Event(r[0], "logout", r[0], "ok", time_ns=now) if r else None

    def expire_sessions(self) -> int:
        """Delete expired sessions (housekeeping; :meth:`session` refuses them anyway)."""
        now = self._now()
        idle, absolute = int(self.policy.session_idle_s * 1e9), int(self.policy.session_absolute_s * 1e9)
        with self._tx() as db:
            return db.execute(
                "DELETE FROM sessions WHERE last_seen_ns + ? <= ? OR created_ns + ? <= ?", (idle, now, absolute, now)
            ).rowcount

    def change_own_password(self, name: str, old: str, new: str, source: str = "") -> Event:
        """A user changing their own password (also the forced change at first login): needs the
        old one; ends all their sessions, so they log in again with the new one."""
        now = self._now()
        action = "user.password.own"
        with self._lock:
            r = self._db.execute(
                "SELECT name, password_hash, disabled, locked_until_ns FROM users WHERE name = ?", (name,)
            ).fetchone()
        ok = self._verify(self._dummy if r is None else r[1], old[: self.policy.max_length])
        reason = (
            "unknown_user"
            if r is None
            else "disabled"
            if r[2]
            else "locked"
            if r[3] is not None and r[3] > now
            else ""
            if ok
            else "bad_password"
        )
        if reason:
            if reason == "bad_password":  # counted like a failed login, or this would be an unlimited oracle
                self._count_failure(r[0], now)
            raise Refused(LOGIN_FAILED, Event(name, action, name, "refused", reason, source, now))
        problems = password_problems(r[0], new, self.policy)
        if self._verify(r[1], new):
            problems.append("must differ from the current one / 不得与当前密码相同")
        if problems:
            raise Refused(_policy_message(problems), Event(r[0], action, r[0], "refused", "weak_password", source, now))
        digest = self._ph.hash(new)
        with self._tx() as db:
            db.execute(
                "UPDATE users SET password_hash = ?, must_change_password = 0, changed_ns = ?, failed_logins = 0"
                " WHERE name = ?",
                (digest, now, r[0]),
            )
            db.execute("DELETE FROM sessions WHERE user = ?", (r[0],))
        return Event(r[0], action, r[0], "ok", source=source, time_ns=now)

    # --- managing users (users.manage: the security officer, or the local administrator)

    def _authorize(self, actor: Actor, action: str, target: str, permission: str = USERS_MANAGE) -> str:
        """The actor's label for the audit log, or :class:`Refused` when they may not."""
        now = self._now()
        if isinstance(actor, LocalAdmin):
            return actor.label
        with self._lock:
            r = self._db.execute(
                "SELECT role, disabled, must_change_password FROM users WHERE name = ?", (actor,)
            ).fetchone()
        if r is None or r[1] or r[2] or not may(r[0], permission):
            raise Refused(
                f"{actor} may not {action} (needs {permission}) / 无权执行此操作",
                Event(actor, action, target, "refused", "forbidden", time_ns=now),
            )
        return actor

    def _target(self, db: sqlite3.Connection, who: str, action: str, name: str) -> tuple[str, str, bool]:
        r = db.execute("SELECT name, role, disabled FROM users WHERE name = ?", (name,)).fetchone()
        if r is None:
            raise Refused(
                f"no user {name} / 无此用户", Event(who, action, name, "refused", "no_such_user", time_ns=self._now())
            )
        return str(r[0]), str(r[1]), bool(r[2])

    def _keep_last(self, db: sqlite3.Connection, who: str, action: str, name: str, role: str, disabled: bool) -> None:
        """Refuse a change that would leave no active security officer or no active administrator."""
        if disabled or role not in ("security", "admin"):
            return
        (others,) = db.execute(
            "SELECT count(*) FROM users WHERE role = ? AND disabled = 0 AND name != ?", (role, name)
        ).fetchone()
        if others == 0:
            what = "security officer / 安全管理员" if role == "security" else "administrator / 系统管理员"
            raise Refused(
                f"{name} is the last active {what}: add another first / 请先添加另一位",
                Event(who, action, name, "refused", f"last_{role}", time_ns=self._now()),
            )

    def add_user(self, actor: Actor, name: str, role: str, password: str | None = None) -> Added:
        """Create a user who must change the password at first login. ``password=None``: one is
        generated and returned once in :attr:`Added.password`."""
        action = "user.add"
        who = self._authorize(actor, action, name)
        now = self._now()
        if not valid_name(name):
            raise Refused(
                "a user name is 1-64 letters, digits, '.', '_', '-', starting with a letter or digit"
                " / 用户名为 1-64 个字母、数字、'.'、'_'、'-'",
                Event(who, action, name, "refused", "bad_name", time_ns=now),
            )
        if role not in ROLES:
            raise Refused(
                f"no role {role}; roles: {', '.join(ROLES)} / 无此角色",
                Event(who, action, name, "refused", "bad_role", time_ns=now),
            )
        generated = password is None
        pw = generate_password(name) if password is None else password
        problems = password_problems(name, pw, self.policy)
        if problems:
            raise Refused(_policy_message(problems), Event(who, action, name, "refused", "weak_password", time_ns=now))
        digest = self._ph.hash(pw)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise Refused(
                    f"user {name} exists already (names ignore case) / 用户已存在",
                    Event(who, action, name, "refused", "exists", time_ns=now),
                )
            db.execute(
                "INSERT INTO users (name, role, password_hash, created_ns, changed_ns, must_change_password)"
                " VALUES (?, ?, ?, ?, ?, 1)",
                (name, role, digest, now, now),
            )
        return Added(Event(who, action, name, "ok", f"role={role}", time_ns=now), pw if generated else None)

    def set_password(self, actor: Actor, name: str, password: str, *, must_change: bool = True) -> Event:
        """Reset someone's password (by default they must change it at next login); ends their sessions."""
        action = "user.password"
        who = self._authorize(actor, action, name)
        now = self._now()
        with self._lock:
            r = self._db.execute("SELECT name FROM users WHERE name = ?", (name,)).fetchone()
        target = r[0] if r else name
        problems = password_problems(target, password, self.policy)
        if problems:
            raise Refused(
                _policy_message(problems), Event(who, action, target, "refused", "weak_password", time_ns=now)
            )
        digest = self._ph.hash(password)
        with self._tx() as db:
            target, _, _ = self._target(db, who, action, name)
            db.execute(
                "UPDATE users SET password_hash = ?, must_change_password = ?, changed_ns = ?, failed_logins = 0,"
                " locked_until_ns = NULL WHERE name = ?",
                (digest, int(must_change), now, target),
            )
            db.execute("DELETE FROM sessions WHERE user = ?", (target,))
        return Event(who, action, target, "ok", "must_change" if must_change else "", time_ns=now)

    def set_role(self, actor: Actor, name: str, role: str) -> Event:
        action = "user.role"
        who = self._authorize(actor, action, name)
        now = self._now()
        if role not in ROLES:
            raise Refused(
                f"no role {role}; roles: {', '.join(ROLES)} / 无此角色",
                Event(who, action, name, "refused", "bad_role", time_ns=now),
            )
        with self._tx() as db:
            target, old, disabled = self._target(db, who, action, name)
            if isinstance(actor, str) and target.casefold() == actor.casefold():
                raise Refused(
                    "nobody changes their own role / 不能修改自己的角色",
                    Event(who, action, target, "refused", "self", time_ns=now),
                )
            if old != role:
                self._keep_last(db, who, action, target, old, disabled)
            db.execute("UPDATE users SET role = ?, changed_ns = ? WHERE name = ?", (role, now, target))
        return Event(who, action, target, "ok", f"{old}->{role}", time_ns=now)

    def set_disabled(self, actor: Actor, name: str, disabled: bool = True) -> Event:
        """Disable (ends their sessions; their API tokens stop working) or enable again."""
        action = "user.disable" if disabled else "user.enable"
        who = self._authorize(actor, action, name)
        now = self._now()
        with self._tx() as db:
            target, role, was = self._target(db, who, action, name)
            if disabled:
                self._keep_last(db, who, action, target, role, was)
            db.execute("UPDATE users SET disabled = ?, changed_ns = ? WHERE name = ?", (int(disabled), now, target))
            if disabled:
                db.execute("DELETE FROM sessions WHERE user = ?", (target,))
        return Event(who, action, target, "ok", time_ns=now)

    def unlock(self, actor: Actor, name: str) -> Event:
        """End a lockout after failed logins before its time."""
        action = "user.unlock"
        who = self._authorize(actor, action, name)
        now = self._now()
        with self._tx() as db:
            target, _, _ = self._target(db, who, action, name)
            db.execute(
                "UPDATE users SET failed_logins = 0, locked_until_ns = NULL, changed_ns = ? WHERE name = ?",
                (now, target),
            )
        return Event(who, action, target, "ok", time_ns=now)

    def delete_user(self, actor: Actor, name: str) -> Event:
        """Remove a user with their sessions and API tokens (the audit log keeps the name)."""
        action = "user.delete"
        who = self._authorize(actor, action, name)
        now = self._now()
        with self._tx() as db:
            target, role, disabled = self._target(db, who, action, name)
            if isinstance(actor, str) and target.casefold() == actor.casefold():
                raise Refused(
                    "nobody deletes their own account / 不能删除自己的账号",
                    Event(who, action, target, "refused", "self", time_ns=now),
                )
            self._keep_last(db, who, action, target, role, disabled)
            db.execute("DELETE FROM users WHERE name = ?", (target,))
        return Event(who, action, target, "ok", f"role={role}", time_ns=now)

    # --- API tokens for scripts

    def create_token(self, actor: Actor, user: str, name: str, expires_s: float) -> NewToken:
        """A bearer token for ``user`` called ``name``, valid ``expires_s`` seconds (at most
        ``token_max_s``). Users make their own; the security officer makes anyone's. The secret is
        in the result once; the database keeps its SHA-256."""
        action = "token.create"
        now = self._now()
        target = f"{user}/{name}"
        if isinstance(actor, str) and actor.casefold() == user.casefold():
            who = actor
            with self._lock:
                r = self._db.execute(
                    "SELECT 1 FROM users WHERE name = ? AND disabled = 0 AND must_change_password = 0", (actor,)
                ).fetchone()
            if r is None:
                raise Refused(
                    "this account may not make tokens now / 该账号当前不能创建令牌",
                    Event(who, action, target, "refused", "forbidden", time_ns=now),
                )
        else:
            who = self._authorize(actor, action, target)
        if not valid_name(name):
            raise Refused(
                "a token name is 1-64 letters, digits, '.', '_', '-' / 令牌名格式错误",
                Event(who, action, target, "refused", "bad_name", time_ns=now),
            )
        if not 0 < expires_s <= self.policy.token_max_s:
            raise Refused(
                f"a token expires after more than 0 and at most {self.policy.token_max_s / 86400:.0f} days"
                " / 令牌有效期须大于 0 且不超过上限",
                Event(who, action, target, "refused", "bad_expiry", time_ns=now),
            )
        secret = "nwt_" + secrets.token_urlsafe(32)  # a prefix secret scanners and people recognise
        expires = now + int(expires_s * 1e9)
        with self._tx() as db:
            u, _, _ = self._target(db, who, action, user)
            try:
                db.execute(
                    "INSERT INTO api_tokens (token_sha256, user, name, created_ns, expires_ns) VALUES (?, ?, ?, ?, ?)",
                    (_sha256(secret), u, name, now, expires),
                )
            except sqlite3.IntegrityError:
                raise Refused(
                    f"{user} has a token called {name} already / 令牌名已存在",
                    Event(who, action, target, "refused", "exists", time_ns=now),
                ) from None
        return NewToken(Event(who, action, f"{u}/{name}", "ok", time_ns=now), secret, expires)

    def token_user(self, secret: str) -> TokenUser | None:
        """Who a bearer token belongs to; ``None`` when unknown, expired or the user is disabled."""
        now = self._now()
        h = _sha256(secret)
        with self._lock:
            r = self._db.execute(
                "SELECT t.user, u.role, t.name, t.expires_ns, u.disabled FROM api_tokens t"
                " JOIN users u ON u.name = t.user WHERE t.token_sha256 = ?",
                (h,),
            ).fetchone()
        if r is None or r[4] or r[3] <= now:
            return None
        self._touch("UPDATE api_tokens SET last_used_ns = ? WHERE token_sha256 = ?", (now, h))
        return TokenUser(r[0], r[1], r[2], r[3])

    def tokens(self, user: str | None = None) -> list[ApiToken]:
        with self._lock:
            rows = self._db.execute(
                "SELECT user, name, created_ns, expires_ns, last_used_ns FROM api_tokens"
                " WHERE ? IS NULL OR user = ? ORDER BY user, name",
                (user, user),
            ).fetchall()
        return [ApiToken(*r) for r in rows]

    def revoke_token(self, actor: Actor, user: str, name: str) -> Event:
        action = "token.revoke"
        target = f"{user}/{name}"
        own = isinstance(actor, str) and actor.casefold() == user.casefold()
        who = actor if own and isinstance(actor, str) else self._authorize(actor, action, target)
        now = self._now()
        with self._tx() as db:
            n = db.execute("DELETE FROM api_tokens WHERE user = ? AND name = ?", (user, name)).rowcount
        if not n:
            raise Refused(
                f"no token {name} of {user} / 无此令牌",
                Event(who, action, target, "refused", "no_such_token", time_ns=now),
            )
        return Event(who, action, target, "ok", time_ns=now)


def _policy_message(problems: list[str]) -> str:
    return "password refused / 密码不符合要求: " + "; ".join(problems)
