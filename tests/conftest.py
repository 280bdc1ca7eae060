"""Shared fixtures: real services on loopback (tests/services.py), stopped even when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from services import (
    Influxd,
    Mosquitto,
    Service,
    ServiceMissing,
    VictoriaMetrics,
    start_influxd,
    start_mosquitto,
    start_secure_mosquitto,
    start_victoria_metrics,
)

S = TypeVar("S", bound=Service)


def _run(start: Callable[[], S]) -> Iterator[S]:
    try:
        service = start()
    except ServiceMissing as e:
        # Integration tests must not pass by skipping: a missing binary is a broken setup.
        pytest.fail(str(e), pytrace=False)
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Anonymous broker on 127.0.0.1:<free port>, persistence on; ``stop()``/``start()`` restart it."""
    yield from _run(lambda: start_mosquitto(tmp_path / "mosquitto"))


@pytest.fixture
def mosquitto_secure(tmp_path: Path) -> Iterator[Mosquitto]:
    """TLS-only broker with a password file: ``host``, ``port``, ``ca_path``, ``username``, ``password``."""
    yield from _run(lambda: start_secure_mosquitto(tmp_path / "mosquitto-tls"))


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics with ``-dedup.minScrapeInterval=1ms``; ~60 ms to start, so per test."""
    yield from _run(lambda: start_victoria_metrics(tmp_path / "vm"))


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """Debian's InfluxDB 1.6.7, auth on, one per session (per xdist worker): ``url``,
    ``admin_user``/``admin_password``, ``query(influxql, db=...)`` (parsed JSON), ``points()``,
    ``new_database()`` — give each test its own database; do not stop this shared server."""
    yield from _run(lambda: start_influxd(tmp_path_factory.mktemp("influxd")))
