"""The agent's status document on ``agents/{id}/status``: retained, and also its Last Will.

``{"state": "online"|"offline", "agent", "site", "version", "config_version", "capabilities",
"time"}`` as JSON. The collector trusts only ``state`` and the informational strings; the
agent's identity comes from the topic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final, Literal

import orjson

from protocol.envelope import WireError

MAX_STATUS_BYTES: Final = 4096
#: the measurement of an agent's account of itself (spool depth, oldest unsent, drops, draining),
#: sent with its metrics; the collector's inventory keeps the latest of it per agent
HEALTH_MEASUREMENT: Final = "netwatch_agent"
State = Literal["online", "offline"]
_STATES: Final[dict[object, State]] = {"online": "online", "offline": "offline"}
_MAX_TEXT = 256


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    agent: str
    site: str = ""
    version: str = ""
    config_version: str = ""
    capabilities: tuple[str, ...] = field(default_factory=tuple)
    time_ns: int = 0
    #: why the last config from the centre was refused ("" when the last one applied)
    config_error: str = ""
    #: the id of the centre key the agent trusts now ("" when control is off)
    control_key: str = ""

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "state": self.state,
                "agent": self.agent,
                "site": self.site,
                "version": self.version,
                "config_version": self.config_version,
                "capabilities": list(self.capabilities),
                "time": self.time_ns or time.time_ns(),
                "config_error": self.config_error,
                "control_key": self.control_key,
            }
        )


def _text(doc: dict[str, object], key: str, limit: int = _MAX_TEXT) -> str:
    v = doc.get(key, "")
    return v[:limit] if isinstance(v, str) else ""


def decode_status(payload: bytes, *, topic_agent: str) -> Status:
    """Parse a status message, or raise WireError naming why it is refused."""
    if len(payload) > MAX_STATUS_BYTES:
        raise WireError("too_large", f"status message of {len(payload)} bytes > {MAX_STATUS_BYTES}")
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise WireError("bad_json", f"status: {e}") from None
    if not isinstance(doc, dict):
        raise WireError("bad_schema", "status is not a JSON object")
    state = _STATES.get(doc.get("state"))
    if state is None:
        raise WireError("bad_schema", "status needs state online|offline")
    if doc.get("agent", topic_agent) != topic_agent:
        raise WireError("agent_mismatch", "status names another agent")
    caps = doc.get("capabilities")
    capabilities = tuple(c[:_MAX_TEXT] for c in caps[:64] if isinstance(c, str)) if isinstance(caps, list) else ()
    t = doc.get("time")
    return Status(
        state=state,
        agent=topic_agent,
        site=_text(doc, "site"),
        version=_text(doc, "version"),
        config_version=_text(doc, "config_version"),
        capabilities=capabilities,
        time_ns=t if isinstance(t, int) and not isinstance(t, bool) else 0,
        config_error=_text(doc, "config_error", 1000),
        control_key=_text(doc, "control_key"),
    )
