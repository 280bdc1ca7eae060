"""Splitting a probe entry from the agent config into the keys every probe shares and the
keys its own ``config_model`` validates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Keys the agent handles itself for every probe; everything else belongs to the probe.
COMMON_KEYS: frozenset[str] = frozenset({"type", "name", "interval", "jitter", "timeout", "tags"})


def split_entry(entry: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"type": "icmp", "interval": "30s", "host": "10.0.0.1"}`` ->
    ``({"type": "icmp", "interval": "30s"}, {"host": "10.0.0.1"})``."""
    common = {k: v for k, v in entry.items() if k in COMMON_KEYS}
    own = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
    return common, own
