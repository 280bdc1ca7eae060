"""Who may do what through the HTTP API, and whether it keeps to its OpenAPI description: a real ``ApiServer`` on 127.0.0.1:0 with a real UserDB,
AuditLog, StateDB and alert store in a tmp folder, a fake collector view for the data, and a fake
Controller behind the real ControlPlane (the MQTT side is tested end to end in tests/e2e/test_control.py).
Every endpoint is called by every role, logged in with a session cookie; then schemathesis generates
requests for every operation in /api/openapi.json (a bounded number each), sends them with a token of a
role that may call it, and checks the answers: never a 500, only documented status codes and content
types, bodies matching the response schemas."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from collector import config as collector_config
from collector.alerting.store import AlertStore
from collector.api import ApiServer
from collector.api_app import Backend, ControlPlane
from collector.audit import AuditLog
from collector.control import Progress
from collector.state import StateDB
from collector.users import LOGIN_FAILED, ROLES, LocalAdmin, UserDB, may
from probes.model import Sample
from protocol.control import Result
from protocol.signing import SigningKey

PASSWORDS = {role: f"Zq{i}-Correct-horse-{i}" for i, role in enumerate(ROLES)}
USERS = {"viewer": "vera", "operator": "otto", "admin": "ada", "security": "sec", "auditor": "aud"}


class FakeCollector:
    cfg: Any = None

    def stats(self) -> dict[str, Any]:
        return {"received_messages": 3, "stored_samples": 5, "rejected": {}, "connected": True}

    def agents(self) -> list[dict[str, Any]]:
        return [
            {
                "id": "t1",
                "site": "town-1",
                "status": "online",
                "last_seen_ns": time.time_ns(),
                "batches": 1,
                "samples": 2,
                "version": "1",
                "config_version": "v1",
            }
        ]

    def unknown_agents(self) -> list[dict[str, Any]]:
        return [{"id": "stranger", "first_seen_ns": 1, "last_seen_ns": 2, "messages": 3}]

    def sites(self) -> list[dict[str, Any]]:
        return [
            {
                "id": "city",
                "name": {"en": "City", "zh": "市"},
                "kind": "city",
                "parent": None,
                "agents": [],
                "devices": [],
            }
        ]

    def latest(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {}

    def query(self, measurement: str, *, agent: str | None, since_ns: int, limit: int) -> list[Sample]:
        return [Sample("icmp", {"site": "s", "agent": "t1"}, {"rtt_avg_ms": 1.5}, time.time_ns())]


@dataclass
class FakeController:
    """Stands in for collector.control.Controller (no broker): remembers what it was asked."""

    issuer: str
    log: list[tuple[str, Any]] = field(default_factory=list)

    def push(self, pushes: dict[str, tuple[dict[str, Any], int]], *, timeout_s: float = 30.0) -> list[Progress]:
        self.log.append(("push", pushes))
        return [Progress(a, v, "applied") for a, (_, v) in pushes.items()]

    def run(self, agent: str, argv: list[str], *, timeout_s: float = 60.0) -> Result:
        self.log.append(("run", (agent, argv)))
        return Result("c1", "ok", 0, f"ran {' '.join(argv)}\n")

    def close(self) -> None:
        pass


@dataclass
class Rig:
    srv: ApiServer
    users: UserDB
    audit: AuditLog
    calls: list[FakeController]
    alert_id: int
    state_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.srv.port}"

    def client(self, role: str | None = None) -> httpx.Client:
        c = httpx.Client(base_url=self.base, timeout=10)
        if role is not None:
            r = c.post("/api/login", json={"name": USERS[role], "password": PASSWORDS[role]})
            assert r.status_code == 200, r.text
        return c

    def records(self, action: str | None = None) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.audit.query(action=action)]


def cheap_users(path: Path) -> UserDB:
    return UserDB(path, password_hasher=PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def make_rig(tmp: Path) -> Iterator[Rig]:
    (tmp / "configs").mkdir()
    (tmp / "configs" / "t1.yaml").write_text("probes:\n  - {kind: icmp, name: up, targets: [10.0.0.1]}\n")
    (tmp / "c.yaml").write_text(f"collector:\n  data_dir: {tmp / 'data'}\ncontrol:\n  configs: {tmp / 'configs'}\n")
    cfg = collector_config.load(tmp / "c.yaml")
    cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    StateDB(cfg.state_path).close()
    users = cheap_users(cfg.data_dir / "users.db")
    admin = LocalAdmin("test")
    for role, name in USERS.items():
        users.add_user(admin, name, role, PASSWORDS[role])
        users.set_password(admin, name, PASSWORDS[role], must_change=False)
    audit = AuditLog(cfg.data_dir / "audit.db", SigningKey.generate())
    store = AlertStore(cfg.data_dir / "alerts.db")
    alert_id = store.open_alert(
        "fp1", "ups_on_battery", {"site": "town-1"}, "critical", ("UPS on battery", "UPS 电池供电"), 1, time.time_ns()
    )
    store.close()
    calls: list[FakeController] = []

    def controller(issuer: str) -> FakeController:
        calls.append(FakeController(issuer))
        return calls[-1]

    control = ControlPlane(cfg, controller)
    backend = Backend(
        users=users,
        audit=audit,
        alerts_path=cfg.data_dir / "alerts.db",
        control=control,
        audit_keys=lambda: [audit_key],
    )
    audit_key = audit._key.public
    view = FakeCollector()
    view.cfg = cfg  # the report (GET /report) reads the collector's config
    srv = ApiServer(view, "127.0.0.1", 0, backend=backend)
    srv.start()
    try:
        yield Rig(srv, users, audit, calls, alert_id, cfg.state_path)
    finally:
        srv.stop()
        audit.close()
        users.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(tmp_path)


# (method, path, JSON body, permission); ``None``: any logged-in user
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
    ("GET", "/api/me", None, None),
    ("GET", "/api/agents", None, "read"),
    ("GET", "/api/agents/unknown", None, "read"),
    ("GET", "/api/sites", None, "read"),
    ("GET", "/api/stats", None, "read"),
    ("GET", "/api/query?measurement=icmp", None, "read"),
    ("GET", "/api/alerts", None, "read"),
    ("GET", "/api/silences", None, "read"),
    ("GET", "/report?month=2026-11", None, "read"),
    ("POST", "/api/alerts/{alert}/ack", {"comment": "on it"}, "alerts.ack"),
    ("POST", "/api/silences", {"matchers": ["site=town-1"], "duration": "1h", "comment": "works"}, "alerts.silence"),
    ("GET", "/api/config/t1/diff", None, "config.push"),
    ("POST", "/api/config/push", {"agents": ["t1"], "timeout_s": 5}, "config.push"),
    ("POST", "/api/commands", {"agent": "t1", "argv": ["ping", "10.0.0.1"]}, "cmd.read"),
    ("POST", "/api/commands", {"agent": "t1", "argv": ["snmp", "set", "--device", "sw1"]}, "cmd.write"),
    ("POST", "/api/commands", {"agent": "t1", "argv": ["modbus", "write", "--device", "ac"]}, "cmd.write"),
    ("GET", "/api/audit", None, "audit.read"),
    ("GET", "/api/audit/verify", None, "audit.read"),
    ("GET", "/api/audit/export", None, "audit.read"),
    ("GET", "/api/users", None, "users.manage"),
    ("POST", "/api/users", {"name": "newbie", "role": "viewer"}, "users.manage"),
    ("PUT", "/api/users/vera/role", {"role": "viewer"}, "users.manage"),
    ("POST", "/api/users/vera/unlock", None, "users.manage"),
    ("POST", "/api/users/vera/tokens", {"name": "script", "expires_days": 30}, "users.manage"),
    ("POST", "/api/users/vera/disable", None, "users.manage"),
    ("POST", "/api/users/vera/enable", None, "users.manage"),
    ("GET", "/api/keys", None, "keys.manage"),
]


def call(c: httpx.Client, rig: Rig, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
    return c.request(method, path.replace("{alert}", str(rig.alert_id)), json=body)


def test_every_endpoint_for_every_role(rig: Rig) -> None:
    anon = rig.client()
    for method, path, body, _ in ENDPOINTS:
        assert call(anon, rig, method, path, body).status_code == 401, (method, path)
    seen_ok: dict[str, set[str]] = {}
    for role in USERS:
        c = rig.client(role)
        for method, path, body, perm in ENDPOINTS:
            r = call(c, rig, method, path, body)
            allowed = perm is None or may(role, perm)
            if allowed:
                assert r.status_code in (200, 201), (role, method, path, r.status_code, r.text)
                seen_ok.setdefault(role, set()).add(f"{method} {path}")
            else:
                assert r.status_code == 403, (role, method, path, r.status_code, r.text)
                assert "forbidden" in r.json()["error"]
    # the separation of duties, endpoint by endpoint
    assert not any("/api/users" in e or "/api/audit" in e for e in seen_ok["admin"])
    assert not any("config" in e or "commands" in e for e in seen_ok["security"])
    assert seen_ok["auditor"] == {"GET /api/me", "GET /api/audit", "GET /api/audit/verify", "GET /api/audit/export"}


def test_viewer_may_not_push_or_run(rig: Rig) -> None:
    c = rig.client("viewer")
    assert c.post("/api/config/push", json={"agents": ["t1"]}).status_code == 403
    assert c.post("/api/commands", json={"agent": "t1", "argv": ["ping", "x"]}).status_code == 403
    assert c.post(f"/api/alerts/{rig.alert_id}/ack", json={"comment": "x"}).status_code == 403
    assert rig.calls == []  # never reached the broker side
    refused = rig.records("api.refused")
    assert {r["detail"]["needs"] for r in refused} == {"config.push", "cmd.read", "alerts.ack"}
    assert all(r["actor"] == "vera" and r["source"] == "127.0.0.1" for r in refused)


def test_operator_acks_and_reads_but_does_not_write(rig: Rig) -> None:
    c = rig.client("operator")
    r = c.post(f"/api/alerts/{rig.alert_id}/ack", json={"comment": "driving there"})
    assert r.status_code == 200 and r.json() == {"id": rig.alert_id, "acked": True}
    assert c.get("/api/alerts").json()[0]["acked_by"] == "otto"
    r = c.post("/api/commands", json={"agent": "t1", "argv": ["snmp", "walk", "--device", "sw1", "1.3.6.1.2.1.1"]})
    assert r.status_code == 200 and r.json()["output"].startswith("ran snmp walk")
    assert rig.calls[-1].issuer == "otto@api"
    r = c.post("/api/commands", json={"agent": "t1", "argv": ["snmp", "set", "--device", "sw1"]})
    assert r.status_code == 403 and "cmd.write" in r.json()["error"]
    # a command the API does not know as read-only needs cmd.write (the agent has its own allow-list)
    assert c.post("/api/commands", json={"agent": "t1", "argv": ["snmpset-anything"]}).status_code == 403
    assert len(rig.calls) == 1
    assert c.post("/api/config/push", json={"agents": ["t1"]}).status_code == 403
    acks = rig.records("alert.ack")
    assert acks[-1]["actor"] == "otto" and acks[-1]["source"] == "127.0.0.1" and acks[-1]["result"] == "ok"
    cmds = rig.records("command")
    assert [(x["actor"], x["detail"]["argv"][:2]) for x in cmds] == [("otto", ["snmp", "walk"])]


def test_admin_pushes_but_does_not_manage_users(rig: Rig) -> None:
    c = rig.client("admin")
    d = c.get("/api/config/t1/diff").json()
    assert d["changed"] and "+probes:" in d["diff"]
    r = c.post("/api/config/push", json={"agents": ["t1"], "timeout_s": 5})
    assert r.status_code == 200 and r.json() == [{"agent": "t1", "version": 1, "state": "applied", "detail": ""}]
    kind, pushes = rig.calls[-1].log[0]
    assert kind == "push" and pushes["t1"][1] == 1 and pushes["t1"][0]["probes"][0]["name"] == "up"
    st = StateDB(rig.state_path)
    try:
        assert st.last_pushed("t1")[0] == 1  # the next push is v2
    finally:
        st.close()
    assert c.post("/api/config/push", json={"agents": ["t1"]}).json()[0]["version"] == 2
    assert c.get("/api/config/t1/diff").json()["changed"] is False
    assert (
        c.post("/api/commands", json={"agent": "t1", "argv": ["modbus", "write", "--device", "ac"]}).status_code == 200
    )
    assert c.post("/api/users", json={"name": "mallory", "role": "security"}).status_code == 403
    assert c.get("/api/audit").status_code == 403
    assert rig.users.user("mallory") is None
    pushes_logged = rig.records("config_push")
    assert [(x["actor"], x["target"], x["result"], x["detail"]["version"]) for x in pushes_logged] == [
        ("ada", "t1", "applied", 1),
        ("ada", "t1", "applied", 2),
    ]
    # no path out of the desired-configs folder
    assert c.get("/api/config/..%2Fc/diff").status_code in (400, 404)
    assert c.post("/api/config/push", json={"agents": ["../c"]}).status_code == 400


def test_security_officer_manages_users_but_does_not_push(rig: Rig) -> None:
    c = rig.client("security")
    r = c.post("/api/users", json={"name": "newbie", "role": "operator"})
    assert r.status_code == 201 and r.json()["password"]  # generated, shown once
    assert rig.users.user("newbie") is not None and rig.users.user("newbie").must_change_password  # type: ignore[union-attr]
    assert c.post("/api/users", json={"name": "NEWBIE", "role": "viewer"}).status_code == 409
    assert c.put("/api/users/newbie/role", json={"role": "viewer"}).status_code == 200
    assert c.put("/api/users/sec/role", json={"role": "admin"}).status_code == 400  # not their own
    assert c.put("/api/users/nobody/role", json={"role": "admin"}).status_code == 404
    t = c.post("/api/users/vera/tokens", json={"name": "grafana", "expires_days": 7}).json()
    assert t["secret"].startswith("nwt_")
    assert httpx.get(rig.base + "/api/agents", headers={"Authorization": f"Bearer {t['secret']}"}).status_code == 200
    assert c.post("/api/users/vera/disable").status_code == 200
    assert httpx.get(rig.base + "/api/agents", headers={"Authorization": f"Bearer {t['secret']}"}).status_code == 401
    assert c.post("/api/config/push", json={"agents": ["t1"]}).status_code == 403
    assert c.post("/api/commands", json={"agent": "t1", "argv": ["ping", "x"]}).status_code == 403
    assert c.get("/api/agents").status_code == 403
    assert c.get("/api/audit").status_code == 403
    assert rig.calls == []
    k = c.get("/api/keys").json()
    assert k["current"]["id"] and k["next"] is None
    changes = [
        (x["action"], x["target"], x["result"]) for x in rig.records() if x["action"].startswith(("user.", "token."))
    ]
    assert ("user.add", "newbie", "ok") in changes and ("user.add", "NEWBIE", "refused") in changes
    assert ("token.create", "vera/grafana", "ok") in changes and ("user.disable", "vera", "ok") in changes
    assert all(x["source"] == "127.0.0.1" for x in rig.records() if x["action"].startswith("user."))


def test_auditor_reads_the_log_and_nothing_else(rig: Rig) -> None:
    rig.client("operator").post(f"/api/alerts/{rig.alert_id}/ack", json={"comment": "x"})
    c = rig.client("auditor")
    rows = c.get("/api/audit").json()
    assert any(r["action"] == "alert.ack" and r["actor"] == "otto" for r in rows)
    assert any(r["action"] == "login" and r["actor"] == "aud" for r in rows)
    assert (
        c.get("/api/audit", params={"actor": "otto", "action": "alert.ack"}).json()[0]["target"] == f"#{rig.alert_id}"
    )
    v = c.get("/api/audit/verify").json()
    assert v["ok"] is True and v["records"] == len(rig.records())
    export = c.get("/api/audit/export")
    assert export.headers["content-type"].startswith("application/x-ndjson")
    assert len(export.text.splitlines()) >= len(rows)
    for method, path, body, perm in ENDPOINTS:
        if perm not in (None, "audit.read"):
            assert call(c, rig, method, path, body).status_code == 403, path
    assert c.get("/").status_code == 200 and "t1" not in c.get("/").text  # the page shows no data either


def test_locked_out_user_stays_out(rig: Rig) -> None:
    c = rig.client()
    for _ in range(5):
        r = c.post("/api/login", json={"name": "otto", "password": "wrong-Password-1"})
        assert r.status_code == 401 and r.json()["error"] == LOGIN_FAILED
    r = c.post("/api/login", json={"name": "otto", "password": PASSWORDS["operator"]})
    assert r.status_code == 401 and r.json()["error"] == LOGIN_FAILED  # the right password does not help
    assert "set-cookie" not in r.headers
    r = c.post("/login", data={"name": "otto", "password": PASSWORDS["operator"]})  # nor the page's form
    assert r.status_code == 401 and "set-cookie" not in r.headers
    logins = [x for x in rig.records("login") if x["actor"] == "otto"]
    reasons = [x["detail"].get("reason") for x in logins]
    assert reasons == ["bad_password"] * 5 + ["locked", "locked"]
    assert all(x["result"] == "failed" and x["source"] == "127.0.0.1" for x in logins)
    # the security officer unlocks (audited); then the right password works
    assert rig.client("security").post("/api/users/otto/unlock").status_code == 200
    assert c.post("/api/login", json={"name": "otto", "password": PASSWORDS["operator"]}).status_code == 200
    assert rig.records("login")[-1]["result"] == "ok" and rig.records("user.unlock")[-1]["target"] == "otto"


def test_an_address_with_too_many_failed_logins_gets_429_until_its_block_ends(rig: Rig) -> None:
    """Password spraying: one password over many names never locks an account; the address is
    blocked after the policy's 20 failures in 10 minutes, logged once in the audit log, and its
    further tries — the right password, the page's form — get 429 with Retry-After, unaudited."""
    policy = rig.users.policy
    c = rig.client()
    for i in range(policy.address_max_failures):
        r = c.post("/api/login", json={"name": f"guess{i}", "password": "Spray-Password-1"})
        assert r.status_code == 401, (i, r.text)
    r = c.post("/api/login", json={"name": "otto", "password": PASSWORDS["operator"]})
    assert r.status_code == 429 and "set-cookie" not in r.headers
    assert 0 < int(r.headers["retry-after"]) <= policy.address_block_s
    assert "too many failed logins" in r.json()["error"] and "分钟后再试" in r.json()["error"]
    r = c.post("/login", data={"name": "otto", "password": PASSWORDS["operator"]})
    assert r.status_code == 429 and "set-cookie" not in r.headers and "retry-after" in r.headers
    blocks = rig.records("login.block")
    assert len(blocks) == 1 and blocks[0]["target"] == "127.0.0.1" and blocks[0]["result"] == "refused"
    assert len(rig.records("login")) == policy.address_max_failures  # the refused tries are counted, not audited
    assert rig.users.throttle.refused == 2
    rig.users.throttle._blocked.clear()  # as when the block runs out (the unit tests move a clock)
    assert rig.client("viewer").get("/api/stats").json()["logins_throttled"] == 2
    assert rig.users.user("otto").failed_logins == 0  # type: ignore[union-attr]


def test_unknown_user_and_bad_tokens(rig: Rig) -> None:
    c = rig.client()
    r = c.post("/api/login", json={"name": "ghost", "password": "Whatever-123"})
    assert r.status_code == 401 and r.json()["error"] == LOGIN_FAILED
    assert rig.records("login")[-1]["detail"] == {"reason": "unknown_user"}
    for auth in ("Bearer nwt_nope", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 500):
        assert httpx.get(rig.base + "/api/agents", headers={"Authorization": auth}).status_code == 401
    c.cookies.set("netwatch_session", "forged")
    assert c.get("/api/agents").status_code == 401


def test_session_cookie_logout_and_forced_password_change(rig: Rig) -> None:
    rig.users.set_password(LocalAdmin("t"), "vera", "Temporary-pass-1", must_change=True)
    c = rig.client()
    r = c.post("/api/login", json={"name": "vera", "password": "Temporary-pass-1"})
    assert r.status_code == 200 and r.json()["must_change_password"] is True
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback here; see the HTTPS test
    assert c.get("/api/me").json()["must_change_password"] is True
    r = c.get("/api/agents")
    assert r.status_code == 403 and "password" in r.json()["error"]
    assert "change your password" in c.get("/").text
    assert c.post("/api/password", json={"old": "Temporary-pass-1", "new": "short"}).status_code == 400
    assert c.post("/api/password", json={"old": "Wrong-pass-12345", "new": "Brand-new-pass-9"}).status_code == 403
    assert c.post("/api/password", json={"old": "Temporary-pass-1", "new": "Brand-new-pass-9"}).status_code == 200
    assert c.get("/api/agents").status_code == 401  # every session ended
    c2 = rig.client()
    assert (
        c2.post("/api/login", json={"name": "vera", "password": "Brand-new-pass-9"}).json()["must_change_password"]
        is False
    )
    assert c2.get("/api/agents").status_code == 200
    assert c2.post("/api/logout").status_code == 200
    assert c2.get("/api/agents").status_code == 401
    actions = [(x["action"], x["result"]) for x in rig.records() if x["actor"] == "vera"]
    assert ("user.password.own", "refused") in actions and ("user.password.own", "ok") in actions
    assert ("logout", "ok") in actions


def test_status_page_login_form_and_cross_origin(rig: Rig) -> None:
    c = rig.client()
    page = c.get("/")
    assert page.status_code == 200 and '<form method="post" action="/login">' in page.text and "登录" in page.text
    assert "<script" not in page.text and "form-action 'self'" in page.headers["content-security-policy"]
    r = c.post("/login", data={"name": "vera", "password": PASSWORDS["viewer"]})
    assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"]
    page = c.get("/")
    assert "town-1" in page.text and "vera" in page.text and 'action="/logout"' in page.text
    bad = c.post("/login", data={"name": "vera", "password": "nope"})
    assert bad.status_code == 401 and "登录失败" in bad.text
    # a cookie-carrying request from another origin is refused (SameSite=Strict keeps browsers from sending it anyway)
    o = rig.client("operator")
    r = o.post(f"/api/alerts/{rig.alert_id}/ack", json={"comment": "x"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert o.post("/logout").status_code == 303
    assert o.get("/api/me").status_code == 401


def test_bodies_are_bounded(rig: Rig) -> None:
    c = rig.client("viewer")
    r = c.post("/api/login", content=b"{" + b" " * 100_000 + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "error" in r.json()
    r = c.post("/api/login", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


# --- the OpenAPI description, exercised by schemathesis --------------------------------------------

EXAMPLES = 12


def role_for(path: str) -> str:
    if path.startswith(("/api/users", "/api/keys")):
        return "security"
    if path.startswith("/api/audit"):
        return "auditor"
    return "admin"


def fuzz(op: Any, base: str, headers: dict[str, str]) -> None:
    @given(case=op.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        # schema-valid requests may still be refused on purpose (a weak password, an unknown user, a
        # matcher that does not parse, a duration past the limit): a 4xx there is right
        case.call_and_validate(base_url=base, headers=headers, excluded_checks=[positive_data_acceptance])

    run()


def test_openapi_description_holds(rig: Rig) -> None:
    tokens = {
        role: rig.users.create_token(LocalAdmin("t"), USERS[role], "fuzz", 3600).secret
        for role in ("admin", "security", "auditor")
    }
    schema = schemathesis.openapi.from_url(rig.base + "/api/openapi.json")
    doc = schema.raw_schema
    assert doc["info"]["title"] == "netwatch collector"
    paths = set(doc["paths"])
    for p in ("/api/login", "/api/agents", "/api/config/push", "/api/commands", "/api/audit/verify", "/api/users"):
        assert p in paths
    assert "/" not in paths and "/login" not in paths  # the page and its forms are not the API
    assert {"HTTPBearer", "APIKeyCookie"} <= set(doc["components"]["securitySchemes"])
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 25
    failures: list[str] = []
    for op in ops:
        try:
            fuzz(op, rig.base, {"Authorization": f"Bearer {tokens[role_for(op.path)]}"})
        except Exception as e:  # collect them all, then fail once with the list
            failures.append(f"{op.method.upper()} {op.path}: {str(e)[:1500]}")
    assert not failures, "\n\n".join(failures)
    sent = rig.srv.server.server_state.total_requests
    assert sent >= 5 * len(ops), f"only {sent} requests for {len(ops)} operations"


# --- HTTPS ---------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "api.crt", tmp / "api.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_https_secure_cookie_and_hsts(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    users = cheap_users(tmp_path / "users.db")
    users.add_user(LocalAdmin("t"), "vera", "viewer", PASSWORDS["viewer"])
    users.set_password(LocalAdmin("t"), "vera", PASSWORDS["viewer"], must_change=False)
    srv = ApiServer(FakeCollector(), "127.0.0.1", 0, backend=Backend(users=users), tls_cert_file=cert, tls_key_file=key)
    srv.start()
    try:
        assert srv.url.startswith("https://")
        with httpx.Client(
            base_url=f"https://127.0.0.1:{srv.port}", verify=ssl.create_default_context(cafile=str(cert)), timeout=10
        ) as c:
            r = c.post("/api/login", json={"name": "vera", "password": PASSWORDS["viewer"]})
            assert r.status_code == 200
            assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
            assert r.headers["strict-transport-security"].startswith("max-age=")
            assert c.get("/api/agents").status_code == 200
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the HTTPS port
            httpx.get(f"http://127.0.0.1:{srv.port}/health", timeout=3)
    finally:
        srv.stop()
        users.close()
    with pytest.raises(ValueError, match="tls_key_file"):
        ApiServer(FakeCollector(), "127.0.0.1", 0, tls_cert_file=cert)


# --- the status page's own forms: ack and silence, bound to the session by a CSRF token -------------


def page_login(rig: Rig, role: str) -> httpx.Client:
    """Logged in through the page's form, as a browser would be (session cookie)."""
    c = httpx.Client(base_url=rig.base, timeout=10)
    r = c.post("/login", data={"name": USERS[role], "password": PASSWORDS[role], "lang": "en"})
    assert r.status_code == 303 and r.headers["location"] == "/?lang=en", r.text
    return c


def csrf_of(page: str) -> str:
    import re

    tokens = set(re.findall(r'name="csrf" value="([0-9a-f]+)"', page))
    assert len(tokens) == 1, tokens
    return tokens.pop()


def test_operator_acks_and_silences_through_the_page_forms(rig: Rig) -> None:
    c = page_login(rig, "operator")
    page = c.get("/?lang=en").text
    assert f'action="/alerts/{rig.alert_id}/ack"' in page and 'action="/silences"' in page
    token = csrf_of(page)
    other = csrf_of(page_login(rig, "operator").get("/").text)  # the same user's other session
    assert other != token
    ack = f"/alerts/{rig.alert_id}/ack"
    for bad in ({"comment": "x"}, {"comment": "x", "csrf": "0" * 40}, {"comment": "x", "csrf": other}):
        r = c.post(ack, data=bad)
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html"), (bad, r.text)
    assert (
        c.post(ack, data={"comment": "x", "csrf": token}, headers={"Origin": "https://evil.example"}).status_code == 403
    )
    assert c.get("/api/alerts").json()[0]["acked_by"] is None
    assert c.post(ack, data={"comment": "  ", "csrf": token}).status_code == 400
    r = c.post(ack, data={"comment": "on my way", "csrf": token, "lang": "en"})
    assert r.status_code == 303 and r.headers["location"] == f"/?lang=en#alert-{rig.alert_id}"
    a = c.get("/api/alerts").json()[0]
    assert (a["acked_by"], a["ack_comment"]) == ("otto", "on my way")
    assert ("otto", "alert.ack", f"#{rig.alert_id}", "ok") in {
        (x["actor"], x["action"], x["target"], x["result"]) for x in rig.records()
    }
    assert "acked by otto" in c.get("/?lang=en").text
    # a silence: one matcher a line, a duration from the list
    r = c.post(
        "/silences",
        data={"matchers": "severity!=info\r\nsite=town-1\r\n", "duration": "1h", "comment": "UPS swap", "csrf": token},
    )
    assert r.status_code == 303, r.text
    (s,) = c.get("/api/silences").json()
    assert s["matchers"] == ["severity!=info", "site=town-1"] and s["author"] == "otto"
    assert s["ends_ns"] - s["starts_ns"] == 3600 * 10**9
    assert "silenced by otto" in c.get("/?lang=en").text
    bad = c.post("/silences", data={"matchers": "site=~(", "duration": "1h", "comment": "x", "csrf": token})
    assert bad.status_code == 400 and "bad silence" in bad.text and bad.headers["content-type"].startswith("text/html")
    assert (
        c.post("/silences", data={"matchers": "site=a", "duration": "400d", "comment": "x", "csrf": token}).status_code
        == 400
    )
    assert len(c.get("/api/silences").json()) == 1


def test_viewer_page_has_no_forms_and_its_posts_are_refused(rig: Rig) -> None:
    c = page_login(rig, "viewer")
    page = c.get("/").text
    assert "UPS 电池供电" in page  # the alert is shown (Chinese by default)...
    assert 'action="/alerts/' not in page and 'action="/silences"' not in page and 'name="csrf"' not in page
    r = c.post(f"/alerts/{rig.alert_id}/ack", data={"comment": "x", "csrf": "0" * 40})
    assert r.status_code == 403 and "alerts.ack" in r.text
    assert c.post("/silences", data={"matchers": "site=town-1", "comment": "x", "csrf": "0" * 40}).status_code == 403
    assert c.get("/api/alerts").json()[0]["acked_by"] is None and c.get("/api/silences").json() == []
    refused = [(x["actor"], x["target"]) for x in rig.records("api.refused")]
    assert ("vera", f"/alerts/{rig.alert_id}/ack") in refused and ("vera", "/silences") in refused
    # logged out: no form works either
    anon = httpx.Client(base_url=rig.base, timeout=10)
    assert anon.post(f"/alerts/{rig.alert_id}/ack", data={"comment": "x"}).status_code == 401


def test_page_language(rig: Rig) -> None:
    c = rig.client("viewer")
    assert "当前告警" in c.get("/").text  # no preference: Chinese
    assert "Active alerts" in c.get("/", headers={"Accept-Language": "en-GB,en;q=0.9"}).text
    assert "当前告警" in c.get("/", headers={"Accept-Language": "zh-TW,en;q=0.5"}).text
    assert "Active alerts" in c.get("/?lang=en", headers={"Accept-Language": "zh-CN"}).text
    assert 'href="/?lang=en"' in c.get("/?lang=zh").text  # the switch
    assert c.get("/?lang=en&x=1").status_code == 400  # the page keeps the strict query rules
    assert c.get("/?lang=klingon-9").status_code == 400


def test_the_pages_own_refresh_does_not_keep_the_session_alive(rig: Rig) -> None:
    """page.js marks its refreshes; they read the page but leave the idle clock alone, so an
    unattended page is logged out after the idle time like any other."""
    import sqlite3

    def last_seen() -> int:
        db = sqlite3.connect(rig.users.path)
        try:
            (v,) = db.execute("SELECT last_seen_ns FROM sessions s WHERE s.user = 'vera'").fetchone()
        finally:
            db.close()
        return int(v)

    c = page_login(rig, "viewer")
    c.get("/")
    before = last_seen()
    r = c.get("/", headers={"X-Netwatch-Refresh": "1"})
    assert r.status_code == 200 and 'id="sites"' in r.text
    assert last_seen() == before
    c.get("/")
    assert last_seen() > before
