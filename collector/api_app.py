"""The API's routes: who may call what (collector/users.py's roles), the login flow, and the calls
into the same code the CLIs use (users.py, audit.py, control.py, the alert store). Served by
collector/api.py, which adds the hardening; described in OpenAPI at ``/api/openapi.json``.

Every login, failed login, logout, password change, user change, alert ack and silence, config
push, command and refused control request goes to the audit log with the user and the client's
address.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the route functions' annotations at
# runtime, and the dependencies they name are local to build_app().

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from collector import users as u
from collector.api_page import (
    MAX_QUERY_ROWS,
    MAX_SINCE_S,
    CollectorView,
    PageData,
    QueryUnsupported,
    csrf_ok,
    csrf_token,
    form_error_page,
    login_page,
    password_page,
    pick_lang,
    static_file,
    status_page,
)
from collector.api_report import register_report_routes
from probes.base import parse_duration
from protocol.control import READ_COMMANDS, is_read_command
from protocol.ids import ID_PATTERN

COOKIE = "netwatch_session"
#: an agent id in a path or body (protocol/ids.py): also a file name (``<agent>.yaml``), so no
#: separators and no dot first
AGENT_ID = ID_PATTERN
USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: the agent CLI's read-only commands (agent/control.py READ_COMMANDS); anything else needs cmd.write
MAX_FORM_BYTES = 4096
#: sent by the status page's script when it refreshes itself (static/page.js)
REFRESH_HEADER = "x-netwatch-refresh"
#: the status page's own query parameters (it is not in the OpenAPI description)
PAGE_PARAMS = {("/", "get"): frozenset({"lang"})}
#: what probes.base.parse_duration reads, for the OpenAPI description
DURATION = r"^[0-9]{1,12}(\.[0-9]{1,6})?(ms|s|m|h|d|w)?$"


def command_permission(argv: list[str]) -> str:
    """``cmd.read`` for the agent CLI's read-only commands, ``cmd.write`` for everything else
    (``snmp set``, ``modbus write``, and whatever the agent may learn later)."""
    if is_read_command(argv):
        return u.CMD_READ
    return u.CMD_WRITE


# --- what the API reaches besides the collector -------------------------------------------------


class ControllerLike(Protocol):
    def push(self, pushes: dict[str, tuple[dict[str, Any], int]], *, timeout_s: float = ...) -> list[Any]: ...

    def run(self, agent: str, argv: list[str], *, timeout_s: float = ...) -> Any: ...

    def close(self) -> None: ...


class AuditLike(Protocol):
    def record(
        self,
        actor: str,
        action: str,
        target: str = ...,
        result: str = ...,
        source: str = ...,
        detail: Any = ...,
    ) -> int: ...

    def query(self, since_ns: int | None = ..., actor: str | None = ..., action: str | None = ...) -> list[Any]: ...

    def export(self, since_ns: int | None = ...) -> Iterator[dict[str, Any]]: ...

    def verify(self, public_keys: Any, *, max_unsigned: int = ...) -> Any: ...


class ControlPlane:
    """Config diff and push, commands and keys, as ``netwatch-collector config|exec|keys`` do them
    (collector/control.py). ``controller`` makes the broker connection for an issuer: the seam a
    test fills with a fake."""

    def __init__(self, cfg: Any, controller: Callable[[str], ControllerLike] | None = None) -> None:
        from collector.control import Controller

        self.cfg = cfg
        self.controller: Callable[[str], ControllerLike] = controller or (lambda issuer: Controller(cfg, issuer=issuer))
        self._lock = threading.Lock()  # one push at a time: versions are read, then written

    def diff(self, agent: str) -> str:
        from collector.control import diff
        from collector.state import StateDB

        st = StateDB(self.cfg.state_path)
        try:
            _, last = st.last_pushed(agent)
        finally:
            st.close()
        return diff(self.cfg, agent, orjson.loads(last) if last else None)

    def push(self, agents: list[str], issuer: str, timeout_s: float) -> list[Any]:
        from collector.control import desired
        from collector.state import StateDB

        with self._lock:
            st = StateDB(self.cfg.state_path)
            try:
                pushes = {a: (desired(self.cfg, a), st.last_pushed(a)[0] + 1) for a in agents}
                ctl = self.controller(issuer)
                try:
                    for a, (doc, version) in pushes.items():
                        st.record_push(a, version, orjson.dumps(doc).decode(), issuer)
                    return ctl.push(pushes, timeout_s=timeout_s)
                finally:
                    ctl.close()
            finally:
                st.close()

    def run(self, agent: str, argv: list[str], issuer: str, timeout_s: float) -> Any:
        ctl = self.controller(issuer)
        try:
            return ctl.run(agent, argv, timeout_s=timeout_s)
        finally:
            ctl.close()

    def keys(self) -> dict[str, Any]:
        from collector.control import key_path, next_key_path
        from protocol.signing import SigningKey

        cur = SigningKey.load_or_create(key_path(self.cfg))
        nxt = next_key_path(self.cfg)
        nk = SigningKey.load(nxt) if nxt.exists() else None
        return {
            "current": {"id": cur.id, "public": cur.public.text},
            "next": {"id": nk.id, "public": nk.public.text} if nk is not None else None,
        }

    def audit_keys(self) -> list[Any]:
        from collector.control import key_path
        from protocol.signing import PublicKey, SigningKey

        k = key_path(self.cfg)
        pub = k.with_name(k.name + ".pub")
        keys: list[Any] = []
        if pub.exists():
            keys.append(PublicKey.load(pub))
        elif k.exists():
            keys.append(SigningKey.load(k).public)
        keys += [PublicKey.load(p) for p in sorted(k.parent.glob(k.name + ".retired-*.pub"))]
        return keys


@dataclass
class Backend:
    """What the API needs besides the collector's view; ``None`` parts answer 404/503."""

    users: u.UserDB | None = None
    audit: AuditLike | None = None
    alerts_path: Path | None = None
    control: ControlPlane | None = None
    audit_keys: Callable[[], list[Any]] = field(default=list)

    @classmethod
    def from_config(cls, cfg: Any, audit: "AuditLike | None") -> "Backend":
        control = ControlPlane(cfg)
        return cls(
            users=u.UserDB(cfg.data_dir / "users.db"),
            audit=audit,
            alerts_path=cfg.data_dir / "alerts.db" if cfg.alerting is not None else None,
            control=control,
            audit_keys=control.audit_keys,
        )

    def close(self) -> None:
        if self.users is not None:
            self.users.close()


# --- models ---------------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    error: str


class HealthOut(BaseModel):
    ok: bool
    broker_connected: bool


class LoginIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    user: str
    role: str
    must_change_password: bool
    expires: int


class PasswordIn(BaseModel):
    old: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=1, max_length=1024)


class MeOut(BaseModel):
    user: str
    role: str
    permissions: list[str]
    must_change_password: bool
    via: Literal["session", "token"]


class OkOut(BaseModel):
    ok: bool


class AgentOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    site: str
    status: str


class UnknownAgentOut(BaseModel):
    id: str
    first_seen_ns: int | None
    last_seen_ns: int | None
    messages: int


class SiteOut(BaseModel):
    id: str
    name: dict[str, str]
    kind: str
    parent: str | None
    agents: list[str]
    devices: list[str]


class SampleOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    measurement: str
    tags: dict[str, str]
    fields: dict[str, Any]


class AlertOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    rule: str
    state: str
    severity: str
    labels: dict[str, str]
    summary: dict[str, str]


class AckIn(BaseModel):
    comment: str = Field(min_length=1, max_length=500)


class AckOut(BaseModel):
    id: int
    acked: bool


class SilenceIn(BaseModel):
    matchers: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=20)
    duration: str = Field("2h", max_length=32, pattern=DURATION, description="how long: 30m, 2h, 7d (at most 366d)")
    comment: str = Field(min_length=1, max_length=500)


class SilenceOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    matchers: list[str]
    starts_ns: int
    ends_ns: int
    author: str
    comment: str


class DiffOut(BaseModel):
    agent: str
    changed: bool
    diff: str


class PushIn(BaseModel):
    agents: list[Annotated[str, Field(pattern=AGENT_ID)]] = Field(min_length=1, max_length=500)
    timeout_s: float = Field(30.0, ge=1, le=300)


class ProgressOut(BaseModel):
    agent: str
    version: int
    state: str
    detail: str


class CommandIn(BaseModel):
    agent: str = Field(pattern=AGENT_ID)
    argv: list[Annotated[str, Field(max_length=1024)]] = Field(min_length=1, max_length=64)
    timeout_s: float = Field(60.0, ge=1, le=600)


class CommandOut(BaseModel):
    agent: str
    id: str | None
    status: str  # ok | failed | refused | timeout | no_answer
    exit_code: int | None
    output: str
    reason: str
    truncated: bool


class AuditRecordOut(BaseModel):
    seq: int
    time_ns: int
    actor: str
    source: str
    action: str
    target: str
    result: str
    detail: Any
    hash: str


class ProblemOut(BaseModel):
    kind: str
    message: str
    message_zh: str
    seq: int | None
    checkpoint: int | None


class VerifyOut(BaseModel):
    ok: bool
    records: int
    first_seq: int | None
    last_seq: int | None
    checkpoints: int
    signed_up_to: int
    unsigned_tail: int
    problems: list[ProblemOut]
    more_problems: int


class UserOut(BaseModel):
    name: str
    role: str
    created: int
    changed: int
    failed_logins: int
    locked_until: int | None
    disabled: bool
    must_change_password: bool
    last_login: int | None


class UserIn(BaseModel):
    name: str = Field(pattern=USER_NAME)
    role: Literal["viewer", "operator", "admin", "security", "auditor"]
    password: str | None = Field(None, min_length=1, max_length=1024, description="omit: one is generated")


class AddedOut(BaseModel):
    name: str
    role: str
    password: str | None = Field(description="the generated one-time password, shown only here")


class RoleIn(BaseModel):
    role: Literal["viewer", "operator", "admin", "security", "auditor"]


class TokenIn(BaseModel):
    name: str = Field(pattern=USER_NAME)
    expires_days: int = Field(90, ge=1, le=366)


class TokenOut(BaseModel):
    user: str
    name: str
    secret: str = Field(description="send as 'Authorization: Bearer <secret>'; shown only here")
    expires: int


class KeyOut(BaseModel):
    id: str
    public: str


class KeysOut(BaseModel):
    current: KeyOut
    next: KeyOut | None


# --- who is asking ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    role: str
    via: Literal["session", "token"]
    must_change_password: bool
    session_token: str | None = None

    def may(self, permission: str) -> bool:
        return not self.must_change_password and u.may(self.role, permission)


_bearer = HTTPBearer(auto_error=False, description="an API token: netwatch-collector users token")
_cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="the session cookie from POST /api/login")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what}
    for code, what in (
        (400, "bad or unknown parameters, or a request refused by policy"),
        (401, "not logged in, or the session or token is no longer valid"),
        (403, "the role may not do this (or the password must be changed first)"),
        (404, "no such thing"),
        (411, "a body without Content-Length"),
        (413, "body too large"),
        (421, "this Host is not served here"),
        (503, "busy: try again"),
    )
}


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else ""


def build_app(collector: CollectorView, backend: Backend, *, secure_cookies: bool = False) -> FastAPI:
    """The FastAPI application with every route (hardening is added around it by collector/api.py)."""
    app = FastAPI(
        title="netwatch collector",
        version="1",
        description="Monitoring and control of the agents from the centre. Log in with POST /api/login "
        "(session cookie) or send an API token as 'Authorization: Bearer <token>'.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # the Swagger page loads from a CDN: the centre has no internet
        redoc_url=None,
        responses=_ERRORS,
    )
    allowed_params: dict[tuple[str, str], frozenset[str]] = {}

    def record(actor: str, action: str, target: str, result: str, source: str, detail: Any = None) -> None:
        if backend.audit is not None:
            backend.audit.record(actor, action, target, result, source, detail)

    def record_event(ev: u.Event, source: str) -> None:
        record(
            ev.actor, ev.action, ev.target, ev.result, ev.source or source, {"reason": ev.reason} if ev.reason else None
        )

    def users_db() -> u.UserDB:
        if backend.users is None:
            raise HTTPException(503, "no user database: logins are off")
        return backend.users

    # -- errors as JSON
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{loc[:60]}: {str(e.get('msg', 'invalid'))[:200]}")
        return JSONResponse({"error": "; ".join(parts) or "invalid request"}, 400)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        import logging

        logging.getLogger("netwatch.collector.api").error(
            "API request %s %s failed", request.method, request.url.path[:200], exc_info=exc
        )
        return JSONResponse({"error": "internal error (see the collector's log)"}, 500)

    # -- strict query strings: unknown, repeated or too many parameters are 400
    def strict_query(request: Request) -> None:
        route = request.scope.get("route")
        path = getattr(route, "path_format", request.url.path)
        key = (path, request.method.lower())
        if not allowed_params:
            for p, ops in app.openapi().get("paths", {}).items():
                for method, op in ops.items():
                    names = frozenset(x["name"] for x in op.get("parameters", []) if x.get("in") == "query")
                    allowed_params[(p, method)] = names
        allowed = allowed_params.get(key) or PAGE_PARAMS.get(key, frozenset())
        raw = request.scope.get("query_string", b"").decode("latin-1")
        try:
            pairs = parse_qs(raw, keep_blank_values=True, max_num_fields=10)
        except ValueError:
            raise HTTPException(400, "too many query parameters") from None
        unknown = sorted(set(pairs) - allowed)
        if unknown:
            raise HTTPException(
                400,
                f"unknown parameter {unknown[0][:40]!r}"
                + (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "; this path takes none"),
            )
        for k, v in pairs.items():
            if len(v) > 1:
                raise HTTPException(400, f"parameter {k[:40]!r} given more than once")

    app.router.dependencies.append(Depends(strict_query))

    # -- authentication
    def optional_principal(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        cookie: Annotated[str | None, Depends(_cookie)],
    ) -> Principal | None:
        if request.headers.get("authorization") is not None:
            if bearer is None or len(bearer.credentials) > 200:
                raise HTTPException(401, "Authorization: Bearer <token> expected", {"WWW-Authenticate": "Bearer"})
            tu = users_db().token_user(bearer.credentials)
            if tu is None:
                raise HTTPException(401, "unknown or expired token", {"WWW-Authenticate": "Bearer"})
            return Principal(tu.user, tu.role, "token", False)
        if cookie:
            # the page's own refresh (page.js) does not count as activity: an unattended page is
            # logged out after the idle time like any other
            touch = request.headers.get(REFRESH_HEADER) is None
            s = users_db().session(cookie[:200], touch=touch) if len(cookie) <= 200 else None
            if s is None:
                return None
            if request.method not in ("GET", "HEAD"):
                # SameSite=Strict already keeps other sites' forms out; a foreign Origin is refused too
                origin = request.headers.get("origin")
                if origin is not None and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
                    raise HTTPException(403, "cross-origin request refused")
            return Principal(s.user, s.role, "session", s.must_change_password, s.token)
        return None

    def principal(p: Annotated[Principal | None, Depends(optional_principal)]) -> Principal:
        if p is None:
            raise HTTPException(401, "log in first (POST /api/login) or send a token", {"WWW-Authenticate": "Bearer"})
        return p

    def refuse(p: Principal, permission: str, request: Request) -> HTTPException:
        if permission != u.READ:  # refused control and management attempts are security events
            record(
                p.user, "api.refused", request.url.path[:200], "refused", client_address(request), {"needs": permission}
            )
        if p.must_change_password:
            return HTTPException(403, "change your password first (POST /api/password)")
        return HTTPException(403, f"forbidden: your role ({p.role}) may not do this (needs {permission})")

    def need(permission: str) -> Any:
        def check(request: Request, p: Annotated[Principal, Depends(principal)]) -> Principal:
            if not p.may(permission):
                raise refuse(p, permission, request)
            return p

        return Depends(check)

    Reader = Annotated[Principal, need(u.READ)]
    register_report_routes(app, need(u.READ), collector)  # GET /report (collector/api_report.py)

    # -- health (no login: says nothing sensitive)
    @app.get("/health", response_model=HealthOut, tags=["status"])
    def health() -> HealthOut:
        return HealthOut(ok=True, broker_connected=bool(collector.stats().get("connected")))

    # -- logging in and out
    def _login(name: str, password: str, source: str) -> u.Session | u.AuthFailure:
        result = users_db().authenticate(name, password, source)
        if result.event is not None:  # None: a throttled address again, its block already logged
            record_event(result.event, source)
        if isinstance(result, u.AuthFailure) and result.blocked is not None:
            record_event(result.blocked, source)
        return result

    def _set_cookie(response: Response, s: u.Session) -> None:
        response.set_cookie(
            COOKIE,
            s.token,
            max_age=int(users_db().policy.session_absolute_s),  # the server ends it earlier when idle
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            path="/",
        )

    @app.post(
        "/api/login",
        response_model=LoginOut,
        tags=["session"],
        responses={401: {"model": ErrorOut}, 429: {"model": ErrorOut}},
    )
    def login(body: LoginIn, request: Request, response: Response) -> LoginOut:
        """Log in: sets the session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS). Failed
        and locked-out logins answer the same 401; all are in the audit log. An address with too
        many failed logins in a short time gets 429 with Retry-After until its block ends."""
        r = _login(body.name, body.password, client_address(request))
        if isinstance(r, u.AuthFailure):
            if r.reason == "throttled":
                raise HTTPException(429, r.message, {"Retry-After": str(math.ceil(r.retry_after_s))})
            raise HTTPException(401, r.message)
        _set_cookie(response, r)
        return LoginOut(user=r.user, role=r.role, must_change_password=r.must_change_password, expires=r.expires_ns)

    @app.post("/api/logout", response_model=OkOut, tags=["session"])
    def logout(request: Request, response: Response, p: Annotated[Principal, Depends(principal)]) -> OkOut:
        if p.session_token is not None:
            ev = users_db().logout(p.session_token)
            if ev is not None:
                record_event(ev, client_address(request))
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return OkOut(ok=True)

    @app.post("/api/password", response_model=OkOut, tags=["session"])
    def change_password(
        body: PasswordIn, request: Request, response: Response, p: Annotated[Principal, Depends(principal)]
    ) -> OkOut:
        """Change your own password (the only thing a session that must change it may do); ends all
        your sessions: log in again."""
        source = client_address(request)
        try:
            ev = users_db().change_own_password(p.user, body.old, body.new, source)
        except u.Refused as e:
            record_event(e.event, source)
            raise HTTPException(400 if e.event.reason == "weak_password" else 403, str(e)) from None
        record_event(ev, source)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return OkOut(ok=True)

    @app.get("/api/me", response_model=MeOut, tags=["session"])
    def me(p: Annotated[Principal, Depends(principal)]) -> MeOut:
        perms = sorted(x for x in u.PERMISSIONS if p.may(x))
        return MeOut(
            user=p.user, role=p.role, permissions=perms, must_change_password=p.must_change_password, via=p.via
        )

    # -- reading (read)
    @app.get("/api/agents", response_model=list[AgentOut], tags=["inventory"])
    def agents(p: Reader) -> list[dict[str, Any]]:
        return collector.agents()

    @app.get("/api/agents/unknown", response_model=list[UnknownAgentOut], tags=["inventory"])
    def unknown_agents(p: Reader) -> list[dict[str, Any]]:
        return collector.unknown_agents()

    @app.get("/api/sites", response_model=list[SiteOut], tags=["inventory"])
    def sites(p: Reader) -> list[dict[str, Any]]:
        return collector.sites()

    @app.get("/api/stats", response_model=dict[str, Any], tags=["status"])
    def stats(p: Reader) -> dict[str, Any]:
        out = dict(collector.stats())
        if backend.users is not None:  # logins refused because their address was blocked, since start
            out["logins_throttled"] = backend.users.throttle.refused
        return out

    @app.get("/api/query", response_model=list[SampleOut], tags=["data"])
    def query(
        p: Reader,
        measurement: Annotated[str, Query(min_length=1, max_length=200)],
        agent: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[
            str, Query(max_length=32, pattern=DURATION, description="how far back: 30s, 10m, 2h, 7d")
        ] = "10m",
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_ROWS)] = MAX_QUERY_ROWS,
    ) -> list[dict[str, Any]]:
        try:
            since_s = parse_duration(since)
        except ValueError as e:
            raise HTTPException(400, f"since: {e}") from None
        if since_s > MAX_SINCE_S:
            raise HTTPException(400, f"since: at most {MAX_SINCE_S / 86400:.0f}d")
        since_ns = time.time_ns() - int(since_s * 1e9)
        try:
            rows = collector.query(measurement, agent=agent or None, since_ns=since_ns, limit=limit)
        except QueryUnsupported as e:
            raise HTTPException(404, str(e)) from None
        return [s.to_dict() for s in rows]

    # -- alerts (read; alerts.ack; alerts.silence)
    def alert_store() -> Any:
        from collector.alerting.store import AlertStore

        if backend.alerts_path is None:
            raise HTTPException(404, "alerting is not configured")
        return AlertStore(backend.alerts_path)

    @app.get("/api/alerts", response_model=list[AlertOut], tags=["alerts"])
    def alerts(p: Reader) -> list[dict[str, Any]]:
        if backend.alerts_path is None or not backend.alerts_path.exists():
            return []
        store = alert_store()
        try:
            return [a.to_dict() for a in store.firing()]
        finally:
            store.close()

    def do_ack(alert_id: int, comment: str, p: Principal, source: str) -> None:
        """Ack a firing alert (the API's and the page's form): audited; 404 when it is not firing."""
        store = alert_store()
        try:
            ok = store.ack(alert_id, p.user, comment)
        finally:
            store.close()
        record(p.user, "alert.ack", f"#{alert_id}", "ok" if ok else "failed", source, {"comment": comment})
        if not ok:
            raise HTTPException(404, f"no firing alert #{alert_id}")

    def do_silence(matchers: list[str], duration: str, comment: str, p: Principal, source: str) -> dict[str, Any]:
        """Add a silence (the API's and the page's form): audited; 400 for a bad matcher or duration."""
        from collector.alerting.rules import Matcher

        try:
            for m in matchers:
                Matcher.parse(m)
            seconds = parse_duration(duration)
        except ValueError as e:
            raise HTTPException(400, f"bad silence: {str(e)[:300]}") from None
        if not 0 < seconds <= 366 * 86400:
            raise HTTPException(400, "duration: more than 0 and at most 366d")
        store = alert_store()
        now = time.time_ns()
        ends = now + int(seconds * 1e9)
        try:
            sid = store.add_silence(list(matchers), now, ends, p.user, comment)
        finally:
            store.close()
        record(p.user, "alert.silence", f"#{sid}", "ok", source, {"matchers": matchers, "until": ends})
        return {
            "id": sid,
            "matchers": matchers,
            "starts_ns": now,
            "ends_ns": ends,
            "author": p.user,
            "comment": comment,
        }

    @app.post("/api/alerts/{alert_id}/ack", response_model=AckOut, tags=["alerts"])
    def ack(
        alert_id: Annotated[int, PathParam(ge=1, le=2**62)],
        body: AckIn,
        request: Request,
        p: Annotated[Principal, need(u.ACK)],
    ) -> AckOut:
        do_ack(alert_id, body.comment, p, client_address(request))
        return AckOut(id=alert_id, acked=True)

    @app.get("/api/silences", response_model=list[SilenceOut], tags=["alerts"])
    def silences(p: Reader) -> list[dict[str, Any]]:
        if backend.alerts_path is None or not backend.alerts_path.exists():
            return []
        store = alert_store()
        try:
            return [dict(s) for s in store.silences(time.time_ns())]
        finally:
            store.close()

    @app.post("/api/silences", response_model=SilenceOut, tags=["alerts"])
    def silence(body: SilenceIn, request: Request, p: Annotated[Principal, need(u.SILENCE)]) -> dict[str, Any]:
        return do_silence(list(body.matchers), body.duration, body.comment, p, client_address(request))

    # -- control (config.push; cmd.read / cmd.write)
    def control() -> ControlPlane:
        if backend.control is None:
            raise HTTPException(404, "control is not available here")
        return backend.control

    @app.get("/api/config/{agent}/diff", response_model=DiffOut, tags=["control"])
    def config_diff(
        agent: Annotated[str, PathParam(pattern=AGENT_ID)], p: Annotated[Principal, need(u.CONFIG_PUSH)]
    ) -> DiffOut:
        from probes.configfile import ConfigError

        try:
            text = control().diff(agent)
        except ConfigError as e:
            raise HTTPException(404, str(e)[:2000]) from None
        return DiffOut(agent=agent, changed=bool(text), diff=text)

    @app.post("/api/config/push", response_model=list[ProgressOut], tags=["control"])
    def config_push(body: PushIn, request: Request, p: Annotated[Principal, need(u.CONFIG_PUSH)]) -> list[ProgressOut]:
        """Sign and publish each agent's desired config; answers when every agent applied or refused
        it, or at the timeout (state ``waiting``)."""
        from probes.configfile import ConfigError

        source = client_address(request)
        agents = sorted(set(body.agents))
        try:
            result = control().push(agents, f"{p.user}@api", body.timeout_s)
        except ConfigError as e:
            record(p.user, "config_push", ",".join(agents)[:200], "refused", source, {"reason": str(e)[:500]})
            raise HTTPException(400, str(e)[:2000]) from None
        except (OSError, ConnectionError) as e:
            record(p.user, "config_push", ",".join(agents)[:200], "failed", source, {"reason": str(e)[:500]})
            raise HTTPException(503, f"cannot reach the broker: {str(e)[:300]}") from None
        for r in result:
            record(p.user, "config_push", r.agent, r.state, source, {"version": r.version, "detail": r.detail})
        return [ProgressOut(agent=r.agent, version=r.version, state=r.state, detail=r.detail) for r in result]

    @app.post(
        "/api/commands",
        response_model=CommandOut,
        tags=["control"],
        description="Run an agent CLI command on an agent. Needs cmd.read for the read-only commands "
        f"({', '.join(sorted(' '.join(c) for c in READ_COMMANDS))}), cmd.write for anything else "
        "(snmp set, modbus write).",
    )
    def command(body: CommandIn, request: Request, p: Annotated[Principal, Depends(principal)]) -> CommandOut:
        permission = command_permission(body.argv)
        if not p.may(permission):
            raise refuse(p, permission, request)
        source = client_address(request)
        try:
            r = control().run(body.agent, list(body.argv), f"{p.user}@api", body.timeout_s)
        except (OSError, ConnectionError) as e:
            record(p.user, "command", body.agent, "failed", source, {"argv": body.argv, "reason": str(e)[:500]})
            raise HTTPException(503, f"cannot reach the broker: {str(e)[:300]}") from None
        record(
            p.user,
            "command",
            body.agent,
            r.status if r is not None else "no_answer",
            source,
            {"argv": body.argv, "exit_code": r.exit_code if r else None, "reason": r.reason if r else ""},
        )
        if r is None:
            return CommandOut(
                agent=body.agent,
                id=None,
                status="no_answer",
                exit_code=None,
                output="",
                reason="no answer",
                truncated=False,
            )
        return CommandOut(
            agent=body.agent,
            id=r.id,
            status=r.status,
            exit_code=r.exit_code,
            output=r.output,
            reason=r.reason,
            truncated=r.truncated,
        )

    # -- the audit log (audit.read)
    def audit_log() -> AuditLike:
        if backend.audit is None:
            raise HTTPException(404, "no audit log")
        return backend.audit

    def since_ns(since: str | None) -> int | None:
        if since is None:
            return None
        try:
            s = parse_duration(since)
        except ValueError as e:
            raise HTTPException(400, f"since: {e}") from None
        if s > MAX_SINCE_S:
            raise HTTPException(400, f"since: at most {MAX_SINCE_S / 86400:.0f}d")
        return time.time_ns() - int(s * 1e9)

    Since = Annotated[
        str | None, Query(max_length=32, pattern=DURATION, description="how far back: 24h, 30d; all when left out")
    ]

    @app.get("/api/audit", response_model=list[AuditRecordOut], tags=["audit"])
    def audit_list(
        p: Annotated[Principal, need(u.AUDIT_READ)],
        since: Since = "24h",
        actor: Annotated[str | None, Query(max_length=200)] = None,
        action: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000, description="the newest this many")] = 1000,
    ) -> list[dict[str, Any]]:
        rows = audit_log().query(since_ns(since), actor, action)
        return [r.to_dict() for r in rows[-limit:]]

    @app.get("/api/audit/verify", response_model=VerifyOut, tags=["audit"])
    def audit_verify(p: Annotated[Principal, need(u.AUDIT_READ)]) -> dict[str, Any]:
        """Check the hash chain and the signed checkpoints (the centre's public keys)."""
        report = audit_log().verify(backend.audit_keys())
        return dict(report.to_dict())

    @app.get(
        "/api/audit/export",
        tags=["audit"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
    )
    def audit_export(
        request: Request, p: Annotated[Principal, need(u.AUDIT_READ)], since: Since = None
    ) -> StreamingResponse:
        """Every record as JSON lines (one object per line)."""
        log = audit_log()
        floor = since_ns(since)
        record(p.user, "audit.export", "", "ok", client_address(request), {"since": floor})
        return StreamingResponse(
            (orjson.dumps(r) + b"\n" for r in log.export(floor)), media_type="application/x-ndjson"
        )

    # -- users (users.manage) and keys (keys.manage)
    def managed(request: Request, call: Callable[[], Any]) -> Any:
        source = client_address(request)
        try:
            out = call()
        except u.Refused as e:
            record_event(e.event, source)
            code = {"forbidden": 403, "no_such_user": 404, "no_such_token": 404, "exists": 409}.get(e.event.reason, 400)
            raise HTTPException(code, str(e)) from None
        ev = out if isinstance(out, u.Event) else out.event
        record_event(ev, source)
        return out

    Manager = Annotated[Principal, need(u.USERS_MANAGE)]
    UserName = Annotated[str, PathParam(pattern=USER_NAME)]

    @app.get("/api/users", response_model=list[UserOut], tags=["users"])
    def users_list(p: Manager) -> list[dict[str, object]]:
        return [x.to_dict() for x in users_db().users()]

    @app.post(
        "/api/users", response_model=AddedOut, status_code=201, tags=["users"], responses={409: {"model": ErrorOut}}
    )
    def users_add(body: UserIn, request: Request, p: Manager) -> AddedOut:
        added = managed(request, lambda: users_db().add_user(p.user, body.name, body.role, body.password))
        return AddedOut(name=body.name, role=body.role, password=added.password)

    @app.put("/api/users/{name}/role", response_model=OkOut, tags=["users"])
    def users_role(name: UserName, body: RoleIn, request: Request, p: Manager) -> OkOut:
        managed(request, lambda: users_db().set_role(p.user, name, body.role))
        return OkOut(ok=True)

    @app.post("/api/users/{name}/disable", response_model=OkOut, tags=["users"])
    def users_disable(name: UserName, request: Request, p: Manager) -> OkOut:
        managed(request, lambda: users_db().set_disabled(p.user, name, True))
        return OkOut(ok=True)

    @app.post("/api/users/{name}/enable", response_model=OkOut, tags=["users"])
    def users_enable(name: UserName, request: Request, p: Manager) -> OkOut:
        managed(request, lambda: users_db().set_disabled(p.user, name, False))
        return OkOut(ok=True)

    @app.post("/api/users/{name}/unlock", response_model=OkOut, tags=["users"])
    def users_unlock(name: UserName, request: Request, p: Manager) -> OkOut:
        managed(request, lambda: users_db().unlock(p.user, name))
        return OkOut(ok=True)

    @app.post(
        "/api/users/{name}/tokens",
        response_model=TokenOut,
        status_code=201,
        tags=["users"],
        responses={409: {"model": ErrorOut}},
    )
    def users_token(name: UserName, body: TokenIn, request: Request, p: Manager) -> TokenOut:
        t = managed(request, lambda: users_db().create_token(p.user, name, body.name, body.expires_days * 86400.0))
        return TokenOut(user=name, name=body.name, secret=t.secret, expires=t.expires_ns)

    @app.get("/api/keys", response_model=KeysOut, tags=["keys"])
    def keys(p: Annotated[Principal, need(u.KEYS_MANAGE)]) -> dict[str, Any]:
        return control().keys()

    # -- the status page and its forms (not part of the JSON API)
    def html(page: str, code: int = 200) -> HTMLResponse:
        return HTMLResponse(page, code)

    def page_data(p: Principal, lang: str) -> PageData:
        """Everything the status page shows, read for one request."""
        d = PageData(lang=lang, user=p.user, role=p.role, can_read=p.may(u.READ))
        if not d.can_read:
            return d
        d.can_ack, d.can_silence = p.may(u.ACK), p.may(u.SILENCE)
        if (d.can_ack or d.can_silence) and p.session_token is not None:
            d.csrf = csrf_token(p.session_token)
        else:  # a token in a browser has no session to bind forms to: the JSON API is the way
            d.can_ack = d.can_silence = False
        d.agents, d.stats, d.sites, d.latest = (
            collector.agents(),
            collector.stats(),
            collector.sites(),
            collector.latest(),
        )
        if backend.alerts_path is not None:
            d.alerts, d.silences = [], []
            if backend.alerts_path.exists():
                store = alert_store()
                try:
                    d.alerts = [a.to_dict() for a in store.firing()]
                    d.silences = [dict(x) for x in store.silences(time.time_ns())]
                finally:
                    store.close()
        d.now_ns = time.time_ns()
        return d

    @app.get("/", include_in_schema=False)
    def index(
        request: Request,
        p: Annotated[Principal | None, Depends(optional_principal)],
        lang: Annotated[str | None, Query(max_length=8)] = None,
    ) -> HTMLResponse:
        if p is None:
            return html(login_page(lang=lang or ""))
        if p.must_change_password:
            return html(password_page(p.user))
        return html(status_page(page_data(p, pick_lang(lang, request.headers.get("accept-language")))))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: Annotated[str, PathParam(max_length=32)]) -> Response:
        """The page's stylesheet and script (no login: they hold nothing but code)."""
        found = static_file(name)
        if found is None:
            raise HTTPException(404, "no such file")
        return Response(found[0], media_type=found[1])

    async def form(request: Request, max_fields: int = 5) -> dict[str, str]:
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
        try:
            pairs = parse_qs(raw.decode("utf-8"), max_num_fields=max_fields)
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, "bad form") from None
        return {k: v[0] for k, v in pairs.items()}

    async def page_form(request: Request, p: Principal | None, permission: str) -> tuple[dict[str, str], str]:
        """A status-page form from a logged-in session that may do ``permission`` and carries the
        session's CSRF token; HTTPException (403) otherwise — refused attempts are audited."""
        if p is None:
            raise HTTPException(401, "log in first")
        if not p.may(permission):
            raise refuse(p, permission, request)
        f = await form(request, 8)
        lang = f.get("lang", "") if f.get("lang", "") in ("zh", "en") else ""
        if not csrf_ok(p.session_token, f.get("csrf", "")[:100]):
            record(p.user, "api.refused", request.url.path[:200], "refused", client_address(request), {"needs": "csrf"})
            raise HTTPException(403, "the form has expired or did not come from this page: reload and try again")
        return f, lang

    def back(lang: str, anchor: str) -> RedirectResponse:
        return RedirectResponse(f"/?lang={lang}#{anchor}" if lang else f"/#{anchor}", 303)

    def form_refused(e: HTTPException, lang: str) -> HTMLResponse:
        return html(form_error_page(f"{e.status_code}: {e.detail}", lang), e.status_code)

    @app.post("/alerts/{alert_id}/ack", include_in_schema=False)
    async def ack_form(
        request: Request,
        alert_id: Annotated[int, PathParam(ge=1, le=2**62)],
        p: Annotated[Principal | None, Depends(optional_principal)],
    ) -> Response:
        lang = ""
        try:
            f, lang = await page_form(request, p, u.ACK)
            comment = f.get("comment", "").strip()[:500]
            if not comment:
                raise HTTPException(400, "a comment is needed / 请填写备注")
            assert p is not None
            await run_in_threadpool(do_ack, alert_id, comment, p, client_address(request))
        except HTTPException as e:
            return form_refused(e, lang)
        return back(lang, f"alert-{alert_id}")

    @app.post("/silences", include_in_schema=False)
    async def silence_form(request: Request, p: Annotated[Principal | None, Depends(optional_principal)]) -> Response:
        lang = ""
        try:
            f, lang = await page_form(request, p, u.SILENCE)
            matchers = [m.strip() for m in f.get("matchers", "").splitlines() if m.strip()]
            comment = f.get("comment", "").strip()[:500]
            if not matchers or len(matchers) > 20 or any(len(m) > 200 for m in matchers):
                raise HTTPException(400, "matchers: 1 to 20 lines of at most 200 characters / 匹配条件：1 至 20 行")
            if not comment:
                raise HTTPException(400, "a comment is needed / 请填写备注")
            duration = f.get("duration", "2h")[:32]
            assert p is not None
            await run_in_threadpool(do_silence, matchers, duration, comment, p, client_address(request))
        except HTTPException as e:
            return form_refused(e, lang)
        return back(lang, "silences")

    @app.post("/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        f = await form(request)
        name, password = f.get("name", "")[:64], f.get("password", "")[:1024]
        if not name or not password:
            return html(login_page("user name and password / 请输入用户名和密码"), 400)
        r = await run_in_threadpool(_login, name, password, client_address(request))
        if isinstance(r, u.AuthFailure):
            if r.reason == "throttled":
                return HTMLResponse(login_page(r.message), 429, {"Retry-After": str(math.ceil(r.retry_after_s))})
            return html(login_page(r.message), 401)
        lang = f.get("lang", "")
        out = RedirectResponse(f"/?lang={lang}" if lang in ("zh", "en") else "/", 303)
        _set_cookie(out, r)
        return out

    @app.post("/logout", include_in_schema=False)
    async def logout_form(request: Request, p: Annotated[Principal | None, Depends(optional_principal)]) -> Response:
        if p is not None and p.session_token is not None:
            ev = await run_in_threadpool(users_db().logout, p.session_token)
            if ev is not None:
                record_event(ev, client_address(request))
        out = RedirectResponse("/", 303)
        out.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return out

    @app.post("/password", include_in_schema=False)
    async def password_form(request: Request, p: Annotated[Principal | None, Depends(optional_principal)]) -> Response:
        if p is None:
            return RedirectResponse("/", 303)
        f = await form(request)
        source = client_address(request)
        try:
            ev = await run_in_threadpool(
                users_db().change_own_password, p.user, f.get("old", "")[:1024], f.get("new", "")[:1024], source
            )
        except u.Refused as e:
            record_event(e.event, source)
            return html(password_page(p.user, str(e)), 400)
        record_event(ev, source)
        out = html(login_page("password changed: log in again / 密码已修改，请重新登录"))
        out.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure_cookies)
        return out

    return app
