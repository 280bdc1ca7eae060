"""Connect to host:port (optionally TLS), optionally send a line and wait for an expected reply;
the outcome is one ``tcp`` Sample with timings and a result of ok/timeout/refused/mismatch/error."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any, ClassVar, Literal

from probes.base import Probe
from probes.model import Sample, Status, clean_fields, status_sample
from probes.tcp.config import TcpConfig
from probes.tls import describe_tls_error, peer_cert_days_left, shared_client_context

MEASUREMENT = "tcp"
Result = Literal["ok", "timeout", "refused", "mismatch", "error"]
#: ``result_code`` for alert rules and graphs; the order is part of the metric contract.
RESULT_CODES: dict[Result, int] = {"ok": 0, "timeout": 1, "refused": 2, "mismatch": 3, "error": 4}
#: Reached, but the reply was wrong: degraded. Not reached at all: down.
RESULT_STATUS: dict[Result, Status] = {
    "ok": "ok",
    "mismatch": "degraded",
    "timeout": "down",
    "refused": "down",
    "error": "down",
}
_PREVIEW = 60


def _preview(data: bytes) -> str:
    text = data[:_PREVIEW].decode("utf-8", "replace")
    return repr(text) + ("…" if len(data) > _PREVIEW else "")


class TcpProbe(Probe):
    kind: ClassVar[str] = "tcp"
    config_model: ClassVar[type[TcpConfig]] = TcpConfig
    config: TcpConfig

    def __init__(self, config: TcpConfig, *, name: str, timeout_s: float = 10.0) -> None:
        super().__init__(config, name=name, timeout_s=timeout_s)
        self._ssl = shared_client_context(verify=config.verify_tls) if config.tls else None

    async def collect(self) -> list[Sample]:
        cfg = self.config
        t0 = time.perf_counter()
        fields: dict[str, Any] = {}
        result, error = await self._check(fields)
        fields["result"] = result
        fields["result_code"] = RESULT_CODES[result]
        tags = {"target": self.target, "host": cfg.host, "port": str(cfg.port)}
        where = f"tcp {self.target} ({cfg.host}:{cfg.port})"
        return [
            Sample(MEASUREMENT, tags, clean_fields(fields)),
            status_sample(
                self.kind,
                self.target,
                RESULT_STATUS[result],
                error=f"{where}: {error}" if error else "",
                duration_ms=(time.perf_counter() - t0) * 1000.0,
            ),
        ]

    async def _check(self, fields: dict[str, Any]) -> tuple[Result, str]:
        """Fill ``fields`` with what was measured; return the result and, unless ok, why."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget_s
        phase = "connect"
        received = bytearray()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout_at(deadline):
                start = time.perf_counter()
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
                fields["connect_ms"] = (time.perf_counter() - start) * 1000.0
                if self._ssl is not None:
                    phase = "tls"
                    start = time.perf_counter()
                    await writer.start_tls(self._ssl, server_hostname=cfg.host)
                    fields["tls_ms"] = (time.perf_counter() - start) * 1000.0
                    fields["cert_days_left"] = peer_cert_days_left(writer.get_extra_info("ssl_object"))
                if not cfg.reads:
                    return "ok", ""
                phase = "reply"
                start = time.perf_counter()
                if cfg.send is not None:
                    writer.write(cfg.send)
                    await writer.drain()
                while len(received) < cfg.read_bytes:
                    chunk = await reader.read(cfg.read_bytes - len(received))
                    if not chunk:
                        break
                    received += chunk
                    fields["bytes_recv"] = len(received)
                    if cfg.matches(received.decode("utf-8", "replace")):
                        fields["response_ms"] = (time.perf_counter() - start) * 1000.0
                        return "ok", ""
                why = "closed the connection" if len(received) < cfg.read_bytes else f"sent {cfg.read_bytes} bytes"
                return "mismatch", f"{why} without {self._wanted()}: got {_preview(bytes(received))}"
        except TimeoutError:
            if phase == "connect":
                return (
                    "timeout",
                    f"no answer to connect within {self.budget_s:g} s — check routing and firewalls",
                )
            if phase == "tls":
                return "timeout", f"TLS handshake unfinished after {self.budget_s:g} s"
            if received:
                return (
                    "mismatch",
                    f"no {self._wanted()} within {self.budget_s:g} s: got {_preview(bytes(received))}",
                )
            return "timeout", f"connected, but no reply within {self.budget_s:g} s"
        except ConnectionRefusedError:
            return "refused", "connection refused — is the service running and listening on that port?"
        except ssl.SSLError as e:
            return "error", describe_tls_error(e)
        except OSError as e:
            return "error", f"{phase} failed: {e.strerror or e}"
        finally:
            if writer is not None:
                await self._close(writer, deadline)

    def _wanted(self) -> str:
        cfg = self.config
        if cfg.expect is not None:
            return f"a match for /{cfg.expect.pattern}/"
        if cfg.expect_text is not None:
            return f"the text {cfg.expect_text!r}"
        return "any reply"

    @staticmethod
    async def _close(writer: asyncio.StreamWriter, deadline: float) -> None:
        writer.close()
        # A polite close, but never past the budget (a TLS peer may not answer close_notify).
        remaining = deadline - asyncio.get_running_loop().time()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), max(0.05, min(0.2, remaining)))
