"""Control messages from the centre to an agent — the desired config (``agents/{id}/config``,
retained) and commands (``agents/{id}/cmd``) — signed with the centre's Ed25519 key, and the
command results an agent sends back (``agents/{id}/cmd/result``).

On the wire a signed message is JSON ``{"v": 1, "key": KEY_ID, "sig": B64, "body": B64}``; the
signature is over the body bytes exactly as sent, so nothing is re-serialised before checking.
The body is JSON with ``kind`` (config | cmd), ``agent``, ``issuer`` (who at the centre),
``issued`` (ns) and:

- config: ``version`` (an integer the agent only lets grow) and ``config`` (the agent's config
  document), optionally ``next_key`` — the public key that will sign after a rotation, announced
  by the current one;
- cmd: ``id`` (unique), ``expires`` (ns), ``action`` and ``args``.

An agent accepts a message only when the key is one it trusts, the signature holds, the body names
it and the topic's kind, and it is neither replayed (config version not above the applied one, a
command id already seen) nor expired. ``verify`` says why not with a short reason that is
counted and reported.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from protocol.signing import PublicKey, SigningKey

VERSION: Final = 1
MAX_CONTROL_BYTES: Final = 256 * 1024
#: how far in the future an issue time may be (clock skew between centre and node)
MAX_SKEW_NS: Final = 300 * 1_000_000_000
#: a command result's output is cut to this many bytes on the agent
MAX_RESULT_BYTES: Final = 512 * 1024

Kind = Literal["config", "cmd"]

#: the agent CLI's read-only commands the centre may run (by their first words): who may ask for
#: them at the centre (the API's cmd.read) and what the agent runs without an allow-list
READ_COMMANDS: Final[tuple[tuple[str, ...], ...]] = (
    ("ping",),
    ("tcp",),
    ("http",),
    ("snmp", "get"),
    ("snmp", "walk"),
    ("snmp", "poll"),
    ("modbus", "read"),
    ("status",),
    ("once",),
)
#: device changes: cmd.write at the centre, and the node's own control.allow_write
WRITE_COMMANDS: Final[tuple[tuple[str, ...], ...]] = (("snmp", "set"), ("modbus", "write"))


def is_read_command(argv: list[str] | tuple[str, ...]) -> bool:
    return tuple(argv[:1]) in READ_COMMANDS or tuple(argv[:2]) in READ_COMMANDS


class ControlRefused(ValueError):
    """A control message the agent will not act on; ``reason`` is what it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ConfigPush:
    agent: str
    version: int
    config: dict[str, Any]
    issuer: str
    issued_ns: int
    next_key: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    agent: str
    id: str
    action: str
    args: dict[str, Any]
    issuer: str
    issued_ns: int
    expires_ns: int


@dataclass(frozen=True, slots=True)
class Result:
    """What an agent sends back on ``cmd/result`` (not signed: the broker's ACL says who sent it)."""

    id: str
    status: Literal["ok", "failed", "refused", "timeout"]
    exit_code: int = 0
    output: str = ""
    reason: str = ""
    truncated: bool = False
    finished_ns: int = 0

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "status": self.status,
                "exit_code": self.exit_code,
                "output": self.output,
                "reason": self.reason,
                "truncated": self.truncated,
                "finished": self.finished_ns or time.time_ns(),
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> Result:
        if len(payload) > MAX_RESULT_BYTES + 64 * 1024:
            raise ControlRefused("too_large", "command result")
        try:
            d = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            raise ControlRefused("bad_json", str(e)[:200]) from None
        if not isinstance(d, dict) or not isinstance(d.get("id"), str):
            raise ControlRefused("bad_schema", "a result needs an id")
        status = d.get("status")
        if status not in ("ok", "failed", "refused", "timeout"):
            raise ControlRefused("bad_schema", "status must be ok|failed|refused|timeout")
        return cls(
            id=d["id"][:64],
            status=status,
            exit_code=int(d.get("exit_code") or 0),
            output=str(d.get("output") or ""),
            reason=str(d.get("reason") or "")[:1000],
            truncated=bool(d.get("truncated")),
            finished_ns=int(d.get("finished") or 0),
        )


def _sign(key: SigningKey, body: dict[str, Any]) -> bytes:
    raw = orjson.dumps(body)
    return orjson.dumps(
        {
            "v": VERSION,
            "key": key.id,
            "sig": base64.b64encode(key.sign(raw)).decode(),
            "body": base64.b64encode(raw).decode(),
        }
    )


def sign_config(key: SigningKey, push: ConfigPush) -> bytes:
    body: dict[str, Any] = {
        "kind": "config",
        "agent": push.agent,
        "version": push.version,
        "config": push.config,
        "issuer": push.issuer,
        "issued": push.issued_ns or time.time_ns(),
    }
    if push.next_key is not None:
        body["next_key"] = push.next_key
    return _sign(key, body)


def new_command(
    agent: str, action: str, args: Mapping[str, Any], *, issuer: str, ttl_s: float = 60.0, now_ns: int | None = None
) -> Command:
    now = now_ns if now_ns is not None else time.time_ns()
    return Command(agent, uuid.uuid4().hex, action, dict(args), issuer, now, now + int(ttl_s * 1e9))


def sign_command(key: SigningKey, cmd: Command) -> bytes:
    return _sign(
        key,
        {
            "kind": "cmd",
            "agent": cmd.agent,
            "id": cmd.id,
            "action": cmd.action,
            "args": cmd.args,
            "issuer": cmd.issuer,
            "issued": cmd.issued_ns,
            "expires": cmd.expires_ns,
        },
    )


@dataclass(slots=True)
class Verifier:
    """What an agent checks a control message against: the keys it trusts (by id), who it is."""

    agent: str
    keys: dict[str, PublicKey] = field(default_factory=dict)

    @classmethod
    def trusting(cls, agent: str, keys: Iterable[PublicKey]) -> Verifier:
        return cls(agent, {k.id: k for k in keys})

    def body(self, payload: bytes, kind: Kind, *, now_ns: int | None = None) -> dict[str, Any]:
        """The verified body of ``payload``, or ControlRefused with the reason."""
        if len(payload) > MAX_CONTROL_BYTES:
            raise ControlRefused("too_large", f"{len(payload)} bytes")
        try:
            outer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise ControlRefused("unsigned", "not a signed control message") from None
        if not isinstance(outer, dict) or not {"key", "sig", "body"} <= outer.keys():
            raise ControlRefused("unsigned", "no signature")
        if outer.get("v") != VERSION:
            raise ControlRefused("bad_version", f"control message version {outer.get('v')!r}")
        key = self.keys.get(str(outer["key"]))
        if key is None:
            raise ControlRefused("unknown_key", f"signed by key {str(outer['key'])[:32]!r}, not one this agent trusts")
        try:
            raw = base64.b64decode(str(outer["body"]), validate=True)
            sig = base64.b64decode(str(outer["sig"]), validate=True)
        except ValueError:
            raise ControlRefused("bad_signature", "signature or body is not base64") from None
        if not key.verify(sig, raw):
            raise ControlRefused("bad_signature", f"signature does not verify with key {key.id}")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ControlRefused("bad_schema", "body is not JSON") from None
        if not isinstance(body, dict) or body.get("kind") != kind:
            raise ControlRefused(
                "wrong_kind", f"a {body.get('kind') if isinstance(body, dict) else '?'} on the {kind} topic"
            )
        if body.get("agent") != self.agent:
            raise ControlRefused("wrong_agent", f"addressed to {str(body.get('agent'))[:64]!r}")
        issued = body.get("issued")
        now = now_ns if now_ns is not None else time.time_ns()
        if not isinstance(issued, int) or issued > now + MAX_SKEW_NS:
            raise ControlRefused("bad_time", "issued in the future (or not at all)")
        body["_key"] = key.id
        return body

    def config(self, payload: bytes, *, applied_version: int, now_ns: int | None = None) -> ConfigPush:
        b = self.body(payload, "config", now_ns=now_ns)
        version, cfg = b.get("version"), b.get("config")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ControlRefused("bad_schema", "config version must be a positive integer")
        if not isinstance(cfg, dict):
            raise ControlRefused("bad_schema", "config must be a mapping")
        if version == applied_version:
            raise ControlRefused("current", f"version {version} is the one applied")  # the retained copy, again
        if version < applied_version:
            raise ControlRefused("replayed", f"version {version} is older than the applied {applied_version}")
        nk = b.get("next_key")
        return ConfigPush(
            self.agent, version, cfg, str(b.get("issuer", ""))[:64], b["issued"], nk if isinstance(nk, str) else None
        )

    def command(self, payload: bytes, *, seen: Mapping[str, int] | set[str], now_ns: int | None = None) -> Command:
        now = now_ns if now_ns is not None else time.time_ns()
        b = self.body(payload, "cmd", now_ns=now)
        cid, action, args, expires = b.get("id"), b.get("action"), b.get("args"), b.get("expires")
        if (
            not isinstance(cid, str)
            or not 0 < len(cid) <= 64
            or not isinstance(action, str)
            or not isinstance(args, dict)
        ):
            raise ControlRefused("bad_schema", "a command needs id, action and args")
        if not isinstance(expires, int) or expires < now:
            raise ControlRefused("expired", "the command's expiry has passed")
        if cid in seen:
            raise ControlRefused("replayed", f"command {cid} was already run")
        return Command(self.agent, cid, action, args, str(b.get("issuer", ""))[:64], b["issued"], expires)
