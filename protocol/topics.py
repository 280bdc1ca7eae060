"""MQTT topics: every topic an agent or the collector uses is built or parsed here.

Under a root (``netwatch/v1`` by default), each agent has its own subtree, which lets the broker's
ACL confine an agent to it (see ``configs/mosquitto/acl``):

=====================  ===============  ===========================================
``agents/{id}/...``    direction        payload
=====================  ===============  ===========================================
``metrics``            agent → centre   batch envelope (QoS 1)
``events``             agent → centre   batch envelope of events (QoS 1)
``status``             agent → centre   status document, retained; also the Last Will
``config``             centre → agent   signed desired config, retained
``cmd``                centre → agent   signed command
``cmd/result``         agent → centre   command result
=====================  ===============  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from protocol.ids import valid_id

DEFAULT_ROOT: Final = "netwatch/v1"

Kind = Literal["metrics", "events", "status", "config", "cmd", "cmd/result"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
#: what agents publish and the collector subscribes to
UPSTREAM: Final[tuple[Kind, ...]] = ("metrics", "events", "status", "cmd/result")
#: what the centre publishes and an agent subscribes to
DOWNSTREAM: Final[tuple[Kind, ...]] = ("config", "cmd")


_KIND_OF: Final[dict[str, Kind]] = {k: k for k in KINDS}


@dataclass(frozen=True, slots=True)
class Topic:
    agent: str
    kind: Kind


class Topics:
    """Topic names under one root."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = root.rstrip("/")
        self._prefix = f"{self.root}/agents/"

    def agent(self, agent_id: str, kind: Kind) -> str:
        return f"{self._prefix}{agent_id}/{kind}"

    def of_agent(self, agent_id: str) -> dict[Kind, str]:
        return {k: self.agent(agent_id, k) for k in KINDS}

    def subscriptions(self, kinds: tuple[Kind, ...] = UPSTREAM) -> list[str]:
        """The collector's subscription filters: every agent's upstream topics."""
        return [f"{self._prefix}+/{k}" for k in kinds]

    def parse(self, topic: str) -> Topic | None:
        """The agent and kind of a topic under this root, or None for anything else."""
        if not topic.startswith(self._prefix):
            return None
        agent, _, rest = topic[len(self._prefix) :].partition("/")
        kind = _KIND_OF.get(rest)
        if kind is None or not valid_id(agent):
            return None
        return Topic(agent, kind)
