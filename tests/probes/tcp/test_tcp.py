"""TCP probe against real asyncio servers on 127.0.0.1: a line service, a silent one, a
chatterbox, TLS with a self-signed certificate, and a closed port."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import catalogue
import pytest
import yaml
from probe_certs import CertPair
from pydantic import ValidationError

from probes import registry
from probes.entry import split_entry
from probes.model import Sample
from probes.tcp import probe as tcp
from probes.tcp.config import TcpConfig, decode_escapes
from probes.tcp.probe import RESULT_CODES, TcpProbe

KIND = "tcp"
SAMPLE_YAML = Path(tcp.__file__).with_name("sample.yaml")


class LineServer:
    """Answers ``PING`` with ``+PONG``, ``BLAB`` with 10 KiB of noise and no newline, ``QUIET``
    with nothing until the test ends; anything else with ``-ERR`` and a close."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.lines: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            self.lines.append(line)
            if line.startswith(b"PING"):
                writer.write(b"+PONG\r\n")
            elif line.startswith(b"BLAB"):
                writer.write(b"x" * 10240)
                await writer.drain()
                await self.stop.wait()
            elif line.startswith(b"QUIET"):
                await self.stop.wait()
            elif line:
                writer.write(b"-ERR unknown command\r\n")
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> LineServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.stop.set()
        assert self.server is not None
        self.server.close()
        await asyncio.sleep(0)  # let handlers see the stop and close their writers
        await self.server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[LineServer]:
    srv = await LineServer().start()
    yield srv
    await srv.close()


@pytest.fixture
async def tls_server(cert_factory: Callable[[float], CertPair]) -> AsyncIterator[tuple[LineServer, CertPair]]:
    pair = cert_factory(30)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pair.cert, pair.key)
    srv = await LineServer().start(ctx)
    yield srv, pair
    await srv.close()


def closed_port() -> int:
    """A port nobody listens on: bound, then released (the kernel answers RST)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe(port: int, *, timeout_s: float = 2.0, **kw: Any) -> TcpProbe:
    cfg = TcpConfig.model_validate({"host": "127.0.0.1", "port": port, **kw})
    return TcpProbe(cfg, name=f"svc-{port}", timeout_s=timeout_s)


def _split(samples: list[Sample]) -> tuple[dict[str, Any], dict[str, Any]]:
    assert [s.measurement for s in samples] == ["tcp", "probe_status"]
    data, status = samples
    assert data.tags == {"target": data.tags["target"], "host": "127.0.0.1", "port": data.tags["port"]}
    assert status.tags["target"] == data.tags["target"]
    assert data.fields["result_code"] == RESULT_CODES[data.fields["result"]]
    return dict(data.fields), dict(status.fields)


# --- scenarios (each returns what it emitted, for the catalogue test too) -----------------------------


async def scenario_connect_only(srv: LineServer) -> list[Sample]:
    return await _probe(srv.port).collect()


async def scenario_send_expect(srv: LineServer) -> list[Sample]:
    return await _probe(srv.port, send=r"PING\r\n", expect=r"^\+PONG\r\n").collect()


async def scenario_mismatch(srv: LineServer) -> list[Sample]:
    return await _probe(srv.port, send=r"HELLO\r\n", expect_text="+PONG").collect()


async def scenario_silent(srv: LineServer) -> list[Sample]:
    return await _probe(srv.port, send=r"QUIET\r\n", expect="PONG", timeout_s=1.0).collect()


async def scenario_refused() -> list[Sample]:
    return await _probe(closed_port()).collect()


async def scenario_tls(srv: LineServer) -> list[Sample]:
    return await _probe(srv.port, tls=True, verify_tls=False, send=r"PING\r\n", expect_text="+PONG").collect()


async def test_connect_only_is_ok_with_connect_time(server: LineServer) -> None:
    data, status = _split(await scenario_connect_only(server))
    assert (data["result"], status["status"], status["error"]) == ("ok", "ok", "")
    assert 0 < data["connect_ms"] < 1000
    assert "response_ms" not in data and "bytes_recv" not in data


async def test_send_and_expect_regex_is_ok_with_response_time(server: LineServer) -> None:
    data, status = _split(await scenario_send_expect(server))
    assert (data["result"], status["status"]) == ("ok", "ok")
    assert server.lines == [b"PING\r\n"]  # the \r\n escape went out as CR LF
    assert data["bytes_recv"] == len(b"+PONG\r\n")
    assert 0 < data["response_ms"] < 1000


async def test_wrong_reply_then_close_is_mismatch(server: LineServer) -> None:
    data, status = _split(await scenario_mismatch(server))
    assert (data["result"], data["result_code"], status["status"]) == ("mismatch", 3, "degraded")
    assert "closed the connection without the text '+PONG'" in status["error"]
    assert "-ERR unknown command" in status["error"]
    assert "response_ms" not in data


async def test_reply_larger_than_read_bytes_without_match_is_mismatch(server: LineServer) -> None:
    data, status = _split(await _probe(server.port, send=r"BLAB\n", expect="PONG", read_bytes="1KiB").collect())
    assert (data["result"], data["bytes_recv"]) == ("mismatch", 1024)
    assert "sent 1024 bytes without a match for /PONG/" in status["error"]


async def test_silent_server_times_out_within_the_budget(server: LineServer) -> None:
    samples = await asyncio.wait_for(scenario_silent(server), 1.0)  # the scheduler's own limit
    data, status = _split(samples)
    assert (data["result"], data["result_code"], status["status"]) == ("timeout", 1, "down")
    assert "connected, but no reply within 0.9 s" in status["error"]
    assert data["connect_ms"] > 0 and "response_ms" not in data


async def test_closed_port_is_refused() -> None:
    data, status = _split(await scenario_refused())
    assert (data["result"], data["result_code"], status["status"]) == ("refused", 2, "down")
    assert "connection refused" in status["error"]
    assert "connect_ms" not in data


async def test_tls_reads_certificate_days_even_without_verification(
    tls_server: tuple[LineServer, CertPair],
) -> None:
    srv, _ = tls_server
    data, status = _split(await scenario_tls(srv))
    assert (data["result"], status["status"]) == ("ok", "ok")
    assert data["cert_days_left"] == pytest.approx(30, abs=0.01)
    assert data["tls_ms"] > 0 and data["response_ms"] > 0


async def test_tls_with_an_untrusted_certificate_is_an_error(tls_server: tuple[LineServer, CertPair]) -> None:
    srv, _ = tls_server
    data, status = _split(await _probe(srv.port, tls=True).collect())
    assert (data["result"], data["result_code"], status["status"]) == ("error", 4, "down")
    assert "TLS certificate not trusted: self-signed certificate" in status["error"]
    assert "verify_tls: false" in status["error"]


# --- config ---------------------------------------------------------------------------------------


def test_escapes_decode_to_bytes() -> None:
    assert decode_escapes(r"QUIT\r\n") == b"QUIT\r\n"
    assert decode_escapes(r"\x00\x7f\t\\n") == b"\x00\x7f\t\\n"
    assert decode_escapes("状态\n") == "状态\n".encode()


def test_sample_yaml_validates() -> None:
    common, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    assert common["type"] == "tcp" and registry.get("tcp") is TcpProbe
    cfg = TcpProbe.config_model.model_validate(own)
    assert cfg.send == b"EHLO netwatch\r\n"
    assert cfg.expect is not None and cfg.expect.search("220 mail ready")
    assert cfg.read_bytes == 4096


@pytest.mark.parametrize(
    ("key", "bad"), [("port", 70000), ("expect", "(unclosed"), ("read_bytes", "lots"), ("tls", "maybe")]
)
def test_bad_sample_value_names_the_key(key: str, bad: Any) -> None:
    _, own = split_entry(yaml.safe_load(SAMPLE_YAML.read_text()))
    with pytest.raises(ValidationError) as e:
        TcpConfig.model_validate({**own, key: bad})
    assert [err["loc"] for err in e.value.errors()] == [(key,)]


def test_expect_and_expect_text_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="not both"):
        TcpConfig.model_validate({"host": "h", "port": 1, "expect": "a", "expect_text": "a"})


# --- catalogue ------------------------------------------------------------------------------------


async def test_catalogue_both_ways(server: LineServer, tls_server: tuple[LineServer, CertPair]) -> None:
    samples = await scenario_connect_only(server)
    samples += await scenario_send_expect(server)
    samples += await scenario_mismatch(server)
    samples += await scenario_silent(server)
    samples += await scenario_refused()
    samples += await scenario_tls(tls_server[0])
    catalogue.assert_both_ways("tcp", samples)


def test_readme_has_the_sections_the_sample_and_every_field() -> None:
    catalogue.assert_readme_current(KIND)
