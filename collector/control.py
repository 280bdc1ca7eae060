"""Control from the centre: pushing each agent's desired config and running commands on agents,
signed with the centre's key, over the broker (the agents' own outbound connections are the way
in). The CLI (``netwatch-collector config|exec|keys``) and, later, the HTTP API call this code.

Desired configs are files in ``control.configs`` (``<agent>.yaml``), each holding the sections the
centre may set (``probes``, ``publish``, ``scheduler``) and optionally ``include: [FILE, ...]``
— shared pieces per site or role whose probes come first and whose other sections the agent's own
file overrides. Every push gets the agent's next version number (kept in state.db) and is
published retained, so an agent that is offline gets it when it connects.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import yaml

from collector.audit import AuditLog
from collector.config import CollectorConfig
from probes.configfile import ConfigError, Problem, read_yaml
from protocol.control import ConfigPush, Result, new_command, sign_command, sign_config
from protocol.mqtt import make_client
from protocol.signing import SigningKey
from protocol.status import Status, decode_status
from protocol.topics import Topics

PUSHABLE = ("probes", "publish", "scheduler")


def key_path(cfg: CollectorConfig) -> Path:
    return cfg.control.key_file if cfg.control.key_file is not None else cfg.data_dir / "keys" / "centre.key"


def open_audit(cfg: CollectorConfig) -> AuditLog:
    """The centre's audit log (``<data_dir>/audit.db``), signed with the centre's key."""
    return AuditLog(cfg.data_dir / "audit.db", SigningKey.load_or_create(key_path(cfg)))


def next_key_path(cfg: CollectorConfig) -> Path:
    p = key_path(cfg)
    return p.with_name(p.stem + ".next" + p.suffix)


def desired(cfg: CollectorConfig, agent: str) -> dict[str, Any]:
    """The config the centre wants ``agent`` to run, includes resolved; ConfigError when broken."""
    folder = cfg.control.configs
    if folder is None:
        raise ConfigError(
            cfg.path or "<defaults>",
            [Problem("control.configs", "not set", "name the folder of desired agent configs")],
        )
    path = folder / f"{agent}.yaml"
    if not path.is_file():
        raise ConfigError(path, [Problem("", f"no desired config for {agent}", f"write {path}")])
    doc = read_yaml(path)
    includes = doc.pop("include", []) or []
    if not isinstance(includes, list) or not all(isinstance(x, str) for x in includes):
        raise ConfigError(path, [Problem("include", "must be a list of file names", "include: [sites/county-a.yaml]")])
    merged: dict[str, Any] = {}
    probes: list[Any] = []
    for inc in includes:
        part = read_yaml(path.parent / inc)
        probes += part.pop("probes", []) or []
        merged.update(part)
    probes += doc.pop("probes", []) or []
    merged.update(doc)
    if probes:
        merged["probes"] = probes
    extra = sorted(set(merged) - set(PUSHABLE))
    if extra:
        raise ConfigError(
            path, [Problem(k, "the centre may not set this section", f"only {', '.join(PUSHABLE)}") for k in extra]
        )
    return merged


def dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=True, allow_unicode=True)


def diff(cfg: CollectorConfig, agent: str, last: dict[str, Any] | None) -> str:
    want = dump(desired(cfg, agent)).splitlines(keepends=True)
    have = dump(last).splitlines(keepends=True) if last is not None else []
    return "".join(difflib.unified_diff(have, want, f"{agent} (pushed)", f"{agent} (desired)"))


@dataclass
class Progress:
    agent: str
    version: int
    state: str = "waiting"  # waiting | applied | refused
    detail: str = ""


class Controller:
    """One connection to the broker as the control account; signs and publishes, watches answers."""

    def __init__(self, cfg: CollectorConfig, *, issuer: str) -> None:
        self.cfg = cfg
        self.issuer = issuer
        self.key = SigningKey.load_or_create(key_path(cfg))
        nxt = next_key_path(cfg)
        self.next_key = SigningKey.load(nxt) if nxt.exists() else None
        self.topics = Topics(cfg.mqtt.topic_root)
        settings = cfg.control.mqtt or cfg.mqtt
        self._lock = threading.Lock()
        self._statuses: dict[str, tuple[int, Status]] = {}  # agent -> (receipt number, status)
        self._received = 0
        self._results: dict[str, Result] = {}
        self._changed = threading.Condition(self._lock)
        self._connected = threading.Event()
        self.client = make_client(
            settings, settings.client_id or f"netwatch-control-{time.time_ns()}", clean_session=True
        )
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set() if not rc.is_failure else None
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port, keepalive=int(settings.keepalive))
        self.client.loop_start()
        if not self._connected.wait(15):
            self.close()
            raise ConnectionError(f"broker {settings.host}:{settings.port} did not accept the control connection")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        t = self.topics.parse(msg.topic)
        if t is None:
            return
        try:
            if t.kind == "status" and msg.payload:
                st = decode_status(bytes(msg.payload), topic_agent=t.agent)
                with self._changed:
                    self._received += 1
                    self._statuses[t.agent] = (self._received, st)
                    self._changed.notify_all()
            elif t.kind == "cmd/result":
                r = Result.decode(bytes(msg.payload))
                with self._changed:
                    self._results[r.id] = r
                    self._changed.notify_all()
        except ValueError:
            return  # not ours to judge here: the collector's ingest counts malformed messages

    def _subscribe(self, topics: Iterable[str]) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe([(t, 1) for t in topics])
        done.wait(10)

    # -- config push ---------------------------------------------------------------------------
    def push(
        self,
        pushes: dict[str, tuple[dict[str, Any], int]],
        *,
        timeout_s: float = 30.0,
        on_progress: Callable[[list[Progress]], None] | None = None,
    ) -> list[Progress]:
        """Publish each agent's (doc, version); wait until each has applied or refused it, or the
        timeout. ``on_progress`` sees every change (the live view)."""
        self._subscribe([self.topics.agent(a, "status") for a in pushes])
        time.sleep(0.3)  # the retained statuses (from before this push) arrive; they say nothing of it
        with self._lock:
            before = self._received
        progress = {a: Progress(a, v) for a, (_, v) in pushes.items()}
        signer = self.key
        announce = self.next_key.public.text if self.next_key is not None else None
        for agent, (doc, version) in pushes.items():
            payload = sign_config(signer, ConfigPush(agent, version, doc, self.issuer, time.time_ns(), announce))
            self.client.publish(self.topics.agent(agent, "config"), payload, qos=1, retain=True).wait_for_publish(10)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for p in progress.values():
                    got = self._statuses.get(p.agent)
                    if got is None or p.state != "waiting":
                        continue
                    n, st = got
                    if st.config_version == f"v{p.version}":
                        p.state, p.detail = "applied", ""
                    if n <= before or p.state != "waiting":
                        continue  # an answer to an earlier push
                    if st.config_error.startswith((f"v{p.version} ", "refused")) and st.time_ns:
                        p.state, p.detail = "refused", st.config_error
                if on_progress is not None:
                    on_progress(list(progress.values()))
                left = deadline - time.monotonic()
                if left <= 0 or all(p.state != "waiting" for p in progress.values()):
                    break
                self._changed.wait(min(left, 0.5))
        for p in progress.values():
            if p.state == "waiting":
                got = self._statuses.get(p.agent)
                p.detail = "no answer" if got is None else f"agent is {got[1].state}, at {got[1].config_version or '?'}"
        return list(progress.values())

    # -- commands ------------------------------------------------------------------------------
    def run(self, agent: str, argv: list[str], *, timeout_s: float = 60.0) -> Result | None:
        """Run the agent CLI's ``argv`` on ``agent``; its result, or None when none came in time."""
        self._subscribe([self.topics.agent(agent, "cmd/result")])
        cmd = new_command(agent, "run", {"argv": argv, "timeout": timeout_s}, issuer=self.issuer, ttl_s=timeout_s + 30)
        self.client.publish(self.topics.agent(agent, "cmd"), sign_command(self.key, cmd), qos=1).wait_for_publish(10)
        deadline = time.monotonic() + timeout_s + 10
        with self._changed:
            while cmd.id not in self._results:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.5))
            return self._results[cmd.id]


def pushed_doc(raw: str | None) -> dict[str, Any] | None:
    return None if raw is None else orjson.loads(raw)
