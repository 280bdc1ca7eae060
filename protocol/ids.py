"""Agent and site ids: they become MQTT topic levels and tag values, so they stay plain."""

from __future__ import annotations

import re

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID = re.compile(ID_PATTERN)


def valid_id(text: str) -> bool:
    return _ID.match(text) is not None
