"""Fixtures for the end-to-end tests: Mosquitto with the project's shipped configuration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import Mosquitto, start_mosquitto

ROOT = Path(__file__).resolve().parents[2]


# -- the shipped broker configuration, with the test's ports, certificates and accounts ------------
#: keys the test harness sets itself (paths, ports, accounts); every other shipped line is used as is
_HARNESS_KEYS = {
    "per_listener_settings", "listener", "persistence", "persistence_location", "autosave_interval",
    "max_queued_messages", "allow_anonymous", "password_file", "cafile", "certfile", "keyfile",
    "tls_version", "acl_file", "user",
}  # fmt: skip
USERS = ["collector", "netwatch-control", "agent-city", "agent-a", "agent-t1", "agent-t2", "stranger"]


def shipped_settings() -> str:
    lines = []
    for line in (ROOT / "configs/mosquitto/mosquitto.conf").read_text().splitlines():
        key = line.split("#", 1)[0].split()
        if key and key[0] not in _HARNESS_KEYS:
            lines.append(line)
    text = "\n".join(lines)
    assert "use_username_as_clientid true" in text and "max_packet_size" in text
    return text


@pytest.fixture
def shipped_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    pw = {u: f"{u}-{os.urandom(6).hex()}" for u in USERS}
    acl = (ROOT / "configs/mosquitto/netwatch.acl").read_text()
    b = start_mosquitto(tmp_path / "broker", users=pw, tls=True, acl=acl, extra_config=shipped_settings())
    for u, p in pw.items():
        path = tmp_path / f"{u}.pass"
        path.write_text(p + "\n")
        path.chmod(0o600)
    yield b
    b.close()
