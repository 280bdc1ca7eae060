"""Control from the centre, on the node: the signed desired config and signed commands arriving
on the agent's own ``config`` and ``cmd`` topics (its outbound MQTT connection is the way in).

A config is applied only when its signature, addressee and version check out and it validates
together with the node's own file; probes whose entry did not change keep running. The last good
config is kept on disk (0600) and used at the next start; a config that fails is refused and the
one in force stays. A command runs only when signed, fresh and never seen, and only from an
allow-list: the agent's own CLI for read-only checks; device changes only where the node's own
file (``control.allow_write``) lists the device and the object. Whatever is refused is counted
and said, in the status document (config) or the result (command).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agent import config as agent_config
from agent.config import AgentConfig
from probes.configfile import ConfigError
from probes.files import private_file
from protocol.control import MAX_RESULT_BYTES, READ_COMMANDS, WRITE_COMMANDS, Command, ControlRefused, Result, Verifier
from protocol.signing import PublicKey

log = logging.getLogger("netwatch.agent.control")

#: these take the node's own config (for credentials of a --device, the spool, the probes)
_WITH_CONFIG = {
    ("snmp", "get"),
    ("snmp", "walk"),
    ("snmp", "poll"),
    ("status",),
    ("once",),
    ("snmp", "set"),
    ("modbus", "write"),
}
#: options a remote command may not give: the node's files and environment are not the centre's
_FORBIDDEN_OPTION_SUFFIXES = ("-file", "-env")
_FORBIDDEN_OPTIONS = {"--config", "-c", "--tee", "--log-level"}
#: command ids remembered (with their expiry) so a replay is refused
MAX_SEEN = 10_000


@dataclass
class ControlState:
    """What survives a restart: the applied version, the keys trusted, commands already run."""

    applied_version: int = 0
    keys: list[str] = field(default_factory=list)  # base64 public keys; the first is the current one
    seen: dict[str, int] = field(default_factory=dict)  # command id -> its expiry (ns)
    config: dict[str, Any] | None = None  # the last good pushed sections

    @classmethod
    def load(cls, path: Path) -> ControlState:
        try:
            d = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, orjson.JSONDecodeError) as e:
            log.error("control state %s unreadable (%s): starting from the local config only", path, e)
            return cls()
        return cls(int(d.get("applied_version", 0)), list(d.get("keys", [])), dict(d.get("seen", {})), d.get("config"))

    def save(self, path: Path) -> None:
        tmp = private_file(path.with_name(path.name + ".tmp"), sqlite=False)
        tmp.write_bytes(
            orjson.dumps(
                {"applied_version": self.applied_version, "keys": self.keys, "seen": self.seen, "config": self.config}
            )
        )
        os.replace(tmp, path)


def state_path(cfg: AgentConfig) -> Path:
    return cfg.spool.path.with_name(cfg.spool.path.stem + "-control.json")


def centre_key(cfg: AgentConfig) -> PublicKey:
    c = cfg.control
    assert c is not None
    return PublicKey.from_text(c.centre_key) if c.centre_key is not None else PublicKey.load(c.centre_key_file or "")


def startup_config(cfg: AgentConfig) -> AgentConfig:
    """The config to start with: the node's file plus the last good config the centre pushed."""
    if cfg.control is None:
        return cfg
    st = ControlState.load(state_path(cfg))
    if st.config is None:
        return cfg
    try:
        return agent_config.with_pushed(cfg, st.config, st.applied_version)
    except ConfigError as e:
        log.error("the last config from the centre (v%d) no longer loads here: %s", st.applied_version, e)
        return cfg


class AgentControl:
    def __init__(
        self,
        cfg: AgentConfig,
        apply: Callable[[AgentConfig], Awaitable[None]],
        publish_result: Callable[[bytes], None],
        status_changed: Callable[[], None],
    ) -> None:
        assert cfg.control is not None
        self.cfg = cfg
        self.control = cfg.control
        self._apply = apply
        self._publish_result = publish_result
        self._status_changed = status_changed
        self.path = state_path(cfg)
        self.state = ControlState.load(self.path)
        local = centre_key(cfg)
        if local.text not in self.state.keys:
            # the key written on the node is trusted whatever happened before (an operator re-keyed it)
            self.state.keys = [local.text, *[k for k in self.state.keys if k != local.text]]
        self.error = ""
        self.refused: Counter[str] = Counter()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def applied_version(self) -> int:
        return self.state.applied_version

    @property
    def key_id(self) -> str:
        return PublicKey.from_text(self.state.keys[0]).id

    def _verifier(self) -> Verifier:
        return Verifier.trusting(self.cfg.agent.id, (PublicKey.from_text(k) for k in self.state.keys))

    def _refuse(self, what: str, e: ControlRefused) -> None:
        self.refused[e.reason] += 1
        log.warning("refused a %s from the centre: %s (counted)", what, e)

    def _adopt_key(self, signed_by: str, next_key: str | None) -> None:
        """Rotation: a key announced by a trusted one is trusted too; once a message signed by the
        announced key arrives, it becomes the only key."""
        keys = [PublicKey.from_text(k) for k in self.state.keys]
        if signed_by != keys[0].id:
            self.state.keys = [k.text for k in keys if k.id == signed_by]
            log.info("the centre signs with key %s now; the previous key is retired", signed_by)
        if next_key is not None and next_key not in self.state.keys:
            try:
                PublicKey.from_text(next_key)
            except ValueError:
                return
            self.state.keys.append(next_key)
            log.info("the centre announced its next key %s", PublicKey.from_text(next_key).id)

    # -- config ---------------------------------------------------------------------------------
    async def on_config(self, payload: bytes) -> None:
        if not payload:
            return  # the retained message cleared
        try:
            push = self._verifier().config(payload, applied_version=self.state.applied_version)
        except ControlRefused as e:
            if e.reason != "current":  # the retained copy of what is applied comes back on every connect
                self.error = f"refused: {e}"
                self._refuse("config", e)
                self._status_changed()
            return
        signed_by = orjson.loads(payload)["key"]
        try:
            new = agent_config.with_pushed(self.cfg, push.config, push.version)
        except ConfigError as e:
            self.error = f"v{push.version} invalid: {str(e)[:500]}"
            self.refused["bad_config"] += 1
            log.error(
                "config v%d from the centre is not valid here; keeping v%d: %s",
                push.version,
                self.state.applied_version,
                e,
            )
            self._status_changed()
            return
        try:
            await self._apply(new)
        except Exception as e:
            self.error = f"v{push.version} failed to apply: {type(e).__name__}: {e}"[:600]
            self.refused["apply_failed"] += 1
            log.error(
                "config v%d from the centre failed to apply (%s); keeping v%d",
                push.version,
                e,
                self.state.applied_version,
            )
            self._status_changed()
            return
        self._adopt_key(signed_by, push.next_key)
        self.state.applied_version = push.version
        self.state.config = push.config
        self.state.save(self.path)
        self.error = ""
        log.info("applied config v%d from the centre (issued by %s)", push.version, push.issuer)
        self._status_changed()

    # -- commands -------------------------------------------------------------------------------
    def on_command(self, payload: bytes) -> None:
        now = time.time_ns()
        self.state.seen = {k: v for k, v in self.state.seen.items() if v > now}
        try:
            cmd = self._verifier().command(payload, seen=self.state.seen, now_ns=now)
        except ControlRefused as e:
            self._refuse("command", e)
            cid = _command_id(payload)
            if cid:
                self._publish_result(Result(cid, "refused", 2, reason=str(e)).encode())
            return
        if len(self.state.seen) < MAX_SEEN:
            self.state.seen[cmd.id] = cmd.expires_ns
            self.state.save(self.path)
        task = asyncio.get_running_loop().create_task(self._run(cmd))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def check(self, cmd: Command) -> list[str]:
        """The agent CLI's argv for ``cmd``, or ControlRefused saying why it may not run."""
        if cmd.action != "run":
            raise ControlRefused("unknown_action", f"action {cmd.action!r}; this agent runs 'run'")
        argv = cmd.args.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv) or len(argv) > 64:
            raise ControlRefused("bad_schema", "argv must be a list of strings")
        for a in argv:
            opt = a.split("=", 1)[0]
            if opt in _FORBIDDEN_OPTIONS or (opt.startswith("--") and opt.endswith(_FORBIDDEN_OPTION_SUFFIXES)):
                raise ControlRefused("forbidden_option", f"{opt}: the node's files and environment are its own")
        head2, head1 = tuple(argv[:2]), tuple(argv[:1])
        if head2 in WRITE_COMMANDS:
            self._check_write(argv)
        elif not self.control.commands:
            raise ControlRefused("commands_off", "control.commands is false in this node's config")
        elif head2 not in READ_COMMANDS and head1 not in READ_COMMANDS:
            allowed = ", ".join(" ".join(c) for c in READ_COMMANDS)
            raise ControlRefused(
                "not_allowed", f"{' '.join(argv[:2])!r} is not a command the centre may run ({allowed})"
            )
        out = list(argv)
        if head2 in _WITH_CONFIG or head1 in _WITH_CONFIG:
            out += ["--config", str(self.cfg.path)]
        return out

    def _check_write(self, argv: Sequence[str]) -> None:
        """A device change: only a device and object this node's own file allows."""
        device = _option(argv, "--device")
        what = _option(argv, "--object") or _option(argv, "--point")
        allowed = {a.device: a.objects for a in self.control.allow_write}
        if device is None:
            raise ControlRefused("write_refused", "a device change names its --device (an entry of the node's config)")
        if device not in allowed:
            raise ControlRefused(
                "write_refused",
                f"writes to {device!r} are not enabled on this node (control.allow_write in {self.cfg.path})",
            )
        if what is None or not any(what == o or what.split(".")[0] == o for o in allowed[device]):
            raise ControlRefused(
                "write_refused",
                f"{what!r} on {device!r} is not allowed on this node; allowed: {', '.join(allowed[device])}",
            )

    async def _run(self, cmd: Command) -> None:
        try:
            argv = self.check(cmd)
        except ControlRefused as e:
            self._refuse("command", e)
            self._publish_result(Result(cmd.id, "refused", 2, reason=str(e)).encode())
            return
        timeout = min(float(cmd.args.get("timeout", self.control.command_timeout)), self.control.command_timeout)
        log.info("running for %s: netwatch-agent %s", cmd.issuer, " ".join(argv))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent.cli",
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            self._publish_result(
                Result(cmd.id, "timeout", 3, _cut(out)[0], reason=f"no result in {timeout:g}s").encode()
            )
            return
        text, truncated = _cut(out)
        ok = proc.returncode == 0
        self._publish_result(
            Result(cmd.id, "ok" if ok else "failed", proc.returncode or 0, text, truncated=truncated).encode()
        )

    async def close(self) -> None:
        for t in list(self._running):
            t.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def _cut(out: bytes) -> tuple[str, bool]:
    if len(out) > MAX_RESULT_BYTES:
        return out[:MAX_RESULT_BYTES].decode("utf-8", "replace"), True
    return out.decode("utf-8", "replace"), False


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _command_id(payload: bytes) -> str:
    """The id of a command we refuse, read without trusting it, so the centre hears why."""
    try:
        import base64

        body = orjson.loads(base64.b64decode(orjson.loads(payload)["body"]))
        cid = body.get("id")
        return cid[:64] if isinstance(cid, str) else ""
    except Exception:
        return ""
