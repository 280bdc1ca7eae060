"""Users, roles, logins, sessions and API tokens (collector/users.py) against a real SQLite file,
with an injected clock instead of sleeping."""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from collector import users as u
from collector.users import AuthFailure, LocalAdmin, Policy, Refused, Session, UserDB

S = 1_000_000_000
LOCAL = LocalAdmin("root")
GOOD = "Correct-Horse-9"
OTHER = "Battery-Staple-7"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * S

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path, clock: Clock) -> UserDB:
    # cheap parameters keep the suite fast; test_default_hash_is_argon2id checks the real ones
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    d = UserDB(tmp_path / "data" / "users.db", clock=clock, password_hasher=cheap)
    yield d
    d.close()


def login(db: UserDB, name: str, pw: str) -> Session:
    s = db.authenticate(name, pw, "10.0.0.9")
    assert isinstance(s, Session), s
    return s


def ready(db: UserDB, name: str, role: str, pw: str = GOOD) -> None:
    """A user who has done the first-login password change."""
    added = db.add_user(LOCAL, name, role)
    assert added.password
    db.change_own_password(name, added.password, pw)


# --- roles --------------------------------------------------------------------------------------


def test_role_table() -> None:
    assert not u.may("viewer", "config.push")
    assert u.may("viewer", "read") and not u.may("viewer", "alerts.ack")
    assert u.may("operator", "alerts.ack") and u.may("operator", "cmd.read") and not u.may("operator", "cmd.write")
    assert u.may("admin", "config.push") and u.may("admin", "cmd.write") and not u.may("admin", "users.manage")
    assert u.may("security", "users.manage") and u.may("security", "keys.manage")
    assert not u.may("security", "read") and not u.may("security", "config.push")
    assert [p for p in u.PERMISSIONS if u.may("auditor", p)] == ["audit.read"]
    assert [r for r in u.ROLES if u.may(r, "audit.read")] == ["auditor"]
    assert not u.may("root", "read") and not u.may("admin", "everything")


def test_separation_of_duties_holds_for_every_pair() -> None:
    duty_roles = {"admin": "config.push", "security": "users.manage", "auditor": "audit.read"}
    for (a, pa), (_, pb) in itertools.permutations(duty_roles.items(), 2):
        assert u.may(a, pa) and not u.may(a, pb), (a, pb)
    for role, perms in u.ROLES.items():
        for d1, d2 in itertools.combinations(u.DUTIES.values(), 2):
            assert not (perms & d1 and perms & d2), role
        assert not ("config.push" in perms and "users.manage" in perms)
        assert "audit.read" not in perms or perms == {"audit.read"}


def test_a_table_mixing_duties_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(u, "ROLES", {**u.ROLES, "superuser": frozenset({"config.push", "users.manage"})})
    with pytest.raises(AssertionError, match="superuser"):
        u._check_roles()
    monkeypatch.setattr(u, "ROLES", {**u.ROLES, "superuser": frozenset({"audit.read", "read"})})
    with pytest.raises(AssertionError, match="audit.read"):
        u._check_roles()


# --- first start --------------------------------------------------------------------------------


def test_no_user_means_no_login(db: UserDB) -> None:
    for name, pw in (("admin", "admin"), ("admin", ""), ("admin", "Admin@123456"), ("root", "root")):
        r = db.authenticate(name, pw)
        assert isinstance(r, AuthFailure) and r.reason == "unknown_user"
        assert r.message == u.LOGIN_FAILED


def test_first_admin_once_with_one_time_password(db: UserDB, tmp_path: Path) -> None:
    pw = db.ensure_first_admin()
    assert pw and not u.password_problems("admin", pw)
    assert db.ensure_first_admin() is None  # once only
    (admin,) = db.users()
    assert (admin.name, admin.role, admin.must_change_password) == ("admin", "admin", True)
    s = login(db, "admin", pw)
    assert s.must_change_password and not s.may("read")  # nothing but the change until it is done
    assert s.event is not None and s.event.reason == "must_change_password"
    db.change_own_password("admin", pw, GOOD)
    assert db.session(s.token) is None  # a password change ends the sessions
    s2 = login(db, "admin", GOOD)
    assert not s2.must_change_password and s2.may("config.push")
    assert isinstance(db.authenticate("admin", pw), AuthFailure)  # the one-time password is gone
    raw = (tmp_path / "data" / "users.db").read_bytes()
    assert pw.encode() not in raw and GOOD.encode() not in raw


def test_database_file_is_private(db: UserDB, tmp_path: Path) -> None:
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "users.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700


def test_default_hash_is_argon2id(tmp_path: Path) -> None:
    import sqlite3

    d = UserDB(tmp_path / "users.db")
    pw = d.ensure_first_admin()
    assert pw
    d.close()
    (h,) = sqlite3.connect(tmp_path / "users.db").execute("SELECT password_hash FROM users").fetchone()
    assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


# --- logins -------------------------------------------------------------------------------------


def test_lockout_after_five_failures_and_release(db: UserDB, clock: Clock) -> None:
    ready(db, "op1", "operator")
    for _ in range(4):
        r = db.authenticate("op1", "wrong-Password-1")
        assert isinstance(r, AuthFailure) and r.reason == "bad_password"
    login(db, "op1", GOOD)  # a success resets the count
    for _ in range(5):
        r = db.authenticate("op1", "wrong-Password-1")
        assert isinstance(r, AuthFailure) and r.reason == "bad_password"
    r = db.authenticate("op1", GOOD)  # the right password, but locked
    assert isinstance(r, AuthFailure) and r.reason == "locked" and r.message == u.LOGIN_FAILED
    assert r.event.result == "failed" and r.event.target == "op1"
    clock.advance(15 * 60 - 1)
    assert isinstance(db.authenticate("op1", GOOD), AuthFailure)
    clock.advance(1)
    login(db, "op1", GOOD)


def test_lockout_is_configurable_and_unlock_ends_it(tmp_path: Path, clock: Clock) -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    d = UserDB(tmp_path / "u.db", clock=clock, password_hasher=cheap, policy=Policy(max_failures=2, lockout_s=60))
    ready(d, "op1", "operator")
    d.authenticate("op1", "x")
    d.authenticate("op1", "x")
    assert d.user("op1").locked_until_ns == clock.now + 60 * S  # type: ignore[union-attr]
    ev = d.unlock(LOCAL, "op1")
    assert (ev.actor, ev.action, ev.target, ev.result) == ("local:root", "user.unlock", "op1", "ok")
    login(d, "op1", GOOD)
    d.close()


def test_failure_reasons_differ_but_message_does_not(db: UserDB) -> None:
    ready(db, "op1", "operator")
    ready(db, "op2", "operator")
    ready(db, "sec", "security")
    db.set_disabled("sec", "op2")
    reasons = {}
    for name, pw in (("op1", "nope"), ("ghost", GOOD), ("op2", GOOD)):
        r = db.authenticate(name, pw, "192.0.2.1")
        assert isinstance(r, AuthFailure) and r.message == u.LOGIN_FAILED
        assert r.event.source == "192.0.2.1" and r.event.action == "login"
        reasons[name] = r.reason
    assert reasons == {"op1": "bad_password", "ghost": "unknown_user", "op2": "disabled"}


def test_names_are_unique_regardless_of_case(db: UserDB) -> None:
    ready(db, "Zhang.San", "viewer")
    with pytest.raises(Refused) as e:
        db.add_user(LOCAL, "zhang.san", "admin")
    assert e.value.event.reason == "exists"
    assert login(db, "zhang.san", GOOD).user == "Zhang.San"


# --- sessions -----------------------------------------------------------------------------------


def test_session_idle_timeout(db: UserDB, clock: Clock) -> None:
    ready(db, "op1", "operator")
    s = login(db, "op1", GOOD)
    for _ in range(3):
        clock.advance(14 * 60)
        got = db.session(s.token)  # each use restarts the idle time
        assert got is not None and got.user == "op1" and got.role == "operator"
    clock.advance(15 * 60)
    assert db.session(s.token) is None
    assert db.session(s.token) is None  # gone, not revived


def test_session_absolute_lifetime(db: UserDB, clock: Clock) -> None:
    ready(db, "op1", "operator")
    s = login(db, "op1", GOOD)
    for _ in range(8 * 6 - 1):  # active every 10 min for just under 8 h
        clock.advance(10 * 60)
        assert db.session(s.token) is not None
    clock.advance(10 * 60)
    assert db.session(s.token) is None


def test_logout_and_unknown_token(db: UserDB) -> None:
    ready(db, "op1", "operator")
    s = login(db, "op1", GOOD)
    assert db.session("not-a-token") is None
    ev = db.logout(s.token)
    assert ev is not None and (ev.actor, ev.action) == ("op1", "logout")
    assert db.session(s.token) is None and db.logout(s.token) is None


def test_role_change_and_disable_take_effect_in_live_sessions(db: UserDB) -> None:
    ready(db, "sec", "security")
    ready(db, "op1", "operator")
    s = login(db, "op1", GOOD)
    db.set_role("sec", "op1", "viewer")
    got = db.session(s.token)
    assert got is not None and got.role == "viewer" and not got.may("alerts.ack")
    db.set_disabled("sec", "op1")
    assert db.session(s.token) is None


# --- tokens and what is at rest -----------------------------------------------------------------


def test_tokens_hashed_at_rest(db: UserDB, tmp_path: Path, clock: Clock) -> None:
    ready(db, "op1", "operator")
    s = login(db, "op1", GOOD)
    t = db.create_token("op1", "op1", "grafana", 90 * 86400)
    assert t.secret.startswith("nwt_") and t.secret not in repr(t)
    assert t.event.target == "op1/grafana" and t.event.result == "ok"
    who = db.token_user(t.secret)
    assert who is not None and (who.user, who.role, who.token_name) == ("op1", "operator", "grafana")
    assert db.token_user(t.secret + "x") is None
    db.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").iterdir())
    for secret in (t.secret, s.token, GOOD):
        assert secret.encode() not in raw, "a secret is stored in clear"
    assert u._sha256(t.secret).encode() in raw  # the table really is the one read


def test_token_expiry_and_revocation(db: UserDB, clock: Clock) -> None:
    ready(db, "op1", "operator")
    t = db.create_token(LOCAL, "op1", "script", 3600)
    clock.advance(3599)
    assert db.token_user(t.secret) is not None
    clock.advance(1)
    assert db.token_user(t.secret) is None
    t2 = db.create_token("op1", "op1", "again", 3600)
    db.revoke_token("op1", "op1", "again")
    assert db.token_user(t2.secret) is None
    for bad in (0, -1, 367 * 86400):
        with pytest.raises(Refused):
            db.create_token(LOCAL, "op1", "x", bad)


def test_tokens_of_others_need_users_manage(db: UserDB) -> None:
    ready(db, "op1", "operator")
    ready(db, "op2", "operator")
    with pytest.raises(Refused) as e:
        db.create_token("op1", "op2", "sneaky", 3600)
    assert e.value.event.reason == "forbidden"
    ready(db, "sec", "security")
    assert db.create_token("sec", "op2", "cron", 3600).event.actor == "sec"


# --- policy and management ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pw",
    ["Short-1a", "alllowercaseletters", "ALLUPPERCASE1234", "lowercase12345678", "Xop1-and-more-1", "op1op1OP1op1!"],
)
def test_password_policy_refusals(db: UserDB, pw: str) -> None:
    ready(db, "op1", "operator")
    with pytest.raises(Refused) as e:
        db.set_password(LOCAL, "op1", pw)
    assert e.value.event.reason == "weak_password" and "密码" in str(e.value)
    assert pw not in str(e.value) and pw not in repr(e.value.event)


def test_password_policy_accepts_three_classes() -> None:
    for pw in ("lowercaseUPPER1", "lowercase-12345", "UPPER-CASE-1234", "中文密码abcdefgh12"):
        assert u.password_problems("someone", pw) == [], pw
    assert u.password_problems("admin", "Admin-Admin-2024")  # contains the name
    assert u.password_problems("x" * 3, "a" * 2000 + "B1")  # too long


def test_own_password_change_needs_the_old_one_and_counts_failures(db: UserDB) -> None:
    ready(db, "op1", "operator")
    for _ in range(5):
        with pytest.raises(Refused) as e:
            db.change_own_password("op1", "wrong-Password-1", OTHER)
        assert e.value.event.reason == "bad_password"
    with pytest.raises(Refused) as e:
        db.change_own_password("op1", GOOD, OTHER)
    assert e.value.event.reason == "locked"
    with pytest.raises(Refused):
        db.change_own_password("op1", GOOD, GOOD)


def test_only_users_manage_may_manage(db: UserDB) -> None:
    ready(db, "adm", "admin")
    ready(db, "aud", "auditor")
    ready(db, "op1", "operator")
    for actor in ("adm", "aud", "op1", "ghost"):
        for method, args in (
            (db.add_user, ("newbie", "viewer")),
            (db.set_password, ("op1", OTHER)),
            (db.set_role, ("op1", "admin")),
            (db.set_disabled, ("op1",)),
            (db.unlock, ("op1",)),
            (db.delete_user, ("op1",)),
        ):
            with pytest.raises(Refused) as e:
                method(actor, *args)  # type: ignore[operator]
            assert (e.value.event.actor, e.value.event.result, e.value.event.reason) == (actor, "refused", "forbidden")
    assert db.user("newbie") is None and db.user("op1").role == "operator"  # type: ignore[union-attr]


def test_security_officer_manages_users(db: UserDB) -> None:
    ready(db, "sec", "security")
    added = db.add_user("sec", "li.si", "operator")
    assert added.password and added.password not in repr(added)
    assert (added.event.actor, added.event.action, added.event.target) == ("sec", "user.add", "li.si")
    s = login(db, "li.si", added.password)
    assert s.must_change_password
    ev = db.set_password("sec", "li.si", OTHER)
    assert ev.result == "ok" and db.session(s.token) is None
    assert login(db, "li.si", OTHER).must_change_password
    assert db.set_role("sec", "li.si", "auditor").reason == "operator->auditor"
    assert db.delete_user("sec", "li.si").result == "ok"
    assert db.user("li.si") is None


def test_security_officer_cannot_remove_the_last_officer_or_admin(db: UserDB) -> None:
    ready(db, "sec", "security")
    ready(db, "adm", "admin")
    for call, reason in (
        (lambda: db.delete_user("sec", "adm"), "last_admin"),
        (lambda: db.set_disabled("sec", "adm"), "last_admin"),
        (lambda: db.set_role("sec", "adm", "viewer"), "last_admin"),
        (lambda: db.set_disabled("sec", "sec"), "last_security"),
        (lambda: db.delete_user(LOCAL, "sec"), "last_security"),
        (lambda: db.set_role(LOCAL, "sec", "viewer"), "last_security"),
    ):
        with pytest.raises(Refused) as e:
            call()
        assert e.value.event.reason == reason
    with pytest.raises(Refused) as e:
        db.delete_user("sec", "sec")
    assert e.value.event.reason == "self"
    ready(db, "sec2", "security")
    ready(db, "adm2", "admin")
    db.delete_user("sec2", "sec")
    db.set_disabled("sec2", "adm")
    with pytest.raises(Refused):
        db.delete_user("sec2", "adm2")  # adm is disabled: adm2 is the last active administrator
    assert {x.name for x in db.users()} == {"sec2", "adm", "adm2"}


def test_a_user_cannot_change_their_own_role(db: UserDB) -> None:
    ready(db, "sec", "security")
    ready(db, "sec2", "security")
    with pytest.raises(Refused) as e:
        db.set_role("sec", "sec", "admin")
    assert e.value.event.reason == "self"


def test_bad_names_and_roles_refused(db: UserDB) -> None:
    for name in ("", "-x", "a b", "x" * 65, "名字", "a/b", "a\x1b[31m"):
        with pytest.raises(Refused) as e:
            db.add_user(LOCAL, name, "viewer")
        assert e.value.event.reason == "bad_name"
    with pytest.raises(Refused) as e:
        db.add_user(LOCAL, "ok", "root")
    assert e.value.event.reason == "bad_role"


# --- failed logins per source address ------------------------------------------------------------


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - argon2's name
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture
def small(tmp_path: Path, clock: Clock) -> tuple[UserDB, CountingHasher]:
    h = CountingHasher()
    policy = Policy(address_max_failures=3, address_window_s=60, address_block_s=120)
    d = UserDB(tmp_path / "users.db", clock=clock, password_hasher=h, policy=policy)
    yield d, h
    d.close()


def test_an_address_spraying_one_password_over_accounts_is_blocked(
    small: tuple[UserDB, CountingHasher], clock: Clock
) -> None:
    """One password tried across accounts never locks an account (one failure each); the source
    address is blocked after ``address_max_failures`` within the window — the block logged once —
    and its further tries are refused without hashing anything, even with a right password."""
    db, h = small
    for name in ("ann", "bob", "cat"):
        ready(db, name, "viewer")
    results = [db.authenticate(name, "Spray-Password-1", "192.0.2.7") for name in ("ann", "bob", "ghost")]
    assert [r.reason for r in results if isinstance(r, AuthFailure)] == ["bad_password", "bad_password", "unknown_user"]
    assert [r.blocked is not None for r in results if isinstance(r, AuthFailure)] == [False, False, True]
    blocked = results[-1].blocked  # type: ignore[union-attr]
    assert blocked is not None and (blocked.action, blocked.target, blocked.result) == (
        "login.block",
        "192.0.2.7",
        "refused",
    )
    assert all(db.user(n).failed_logins <= 1 for n in ("ann", "bob", "cat"))  # type: ignore[union-attr]

    before = h.verified
    r = db.authenticate("cat", GOOD, "192.0.2.7")  # the right password, from the blocked address
    assert isinstance(r, AuthFailure) and r.reason == "throttled" and r.event is None and r.blocked is None
    assert r.retry_after_s == pytest.approx(120) and "2 min" in r.message and "分钟" in r.message
    assert h.verified == before  # refused before any hashing
    assert db.throttle.refused == 1

    assert isinstance(db.authenticate("cat", GOOD, "192.0.2.8"), Session)  # another address is not affected
    clock.advance(121)
    assert isinstance(db.authenticate("cat", GOOD, "192.0.2.7"), Session)  # the block ends


def test_failures_spread_wider_than_the_window_do_not_block(small: tuple[UserDB, CountingHasher], clock: Clock) -> None:
    db, _ = small
    ready(db, "ann", "viewer")
    for _ in range(5):
        r = db.authenticate("ghost", "Whatever-12345", "192.0.2.7")
        assert isinstance(r, AuthFailure) and r.reason == "unknown_user" and r.blocked is None
        clock.advance(31)  # two failures per 60 s window at most
    assert isinstance(db.authenticate("ann", GOOD, "192.0.2.7"), Session)


def test_the_addresses_remembered_are_bounded(
    small: tuple[UserDB, CountingHasher], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _ = small
    monkeypatch.setattr(u.AddressThrottle, "MAX_ADDRESSES", 50)
    for i in range(200):
        db.throttle.failed(f"198.51.100.{i}")
    assert len(db.throttle._failures) == 50
    assert "198.51.100.199" in db.throttle._failures and "198.51.100.0" not in db.throttle._failures
