"""Real pymodbus servers for the Modbus tests: slaves built from plain {address: value} tables
(missing addresses are holes that answer "illegal data address"), units that never answer or
send damaged frames, a request log, a raw TCP server that cuts its replies short, and a socat
virtual serial pair."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from services import free_port

from probes.modbus.codec import encode

# pymodbus logs a traceback for every request to an unknown unit; the tests look at replies.
logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)

_FAR = 65000  # where an otherwise empty table keeps its one placeholder register


def registers(*pairs: tuple[int, list[int]]) -> dict[int, int]:
    """registers((0, [1, 2]), (10, encode(1.5, "float32"))) -> {0: 1, 1: 2, 10: ..., 11: ...}."""
    out: dict[int, int] = {}
    for start, words in pairs:
        out.update({start + i: w for i, w in enumerate(words)})
    return out


def _runs(table: Mapping[int, int]) -> list[SimData]:
    """Contiguous runs of defined registers; the gaps between them stay invalid (holes)."""
    if not table:
        return [SimData(_FAR, values=[0], datatype=DataType.REGISTERS)]
    out: list[SimData] = []
    addrs = sorted(table)
    start = prev = addrs[0]
    for a in addrs[1:] + [None]:  # type: ignore[list-item]
        if a is not None and a == prev + 1:
            prev = a
            continue
        out.append(SimData(start, values=[table[x] for x in range(start, prev + 1)], datatype=DataType.REGISTERS))
        if a is not None:
            start = prev = a
    return out


def _bits(table: Mapping[int, bool]) -> list[SimData]:
    if not table:
        return [SimData(_FAR - _FAR % 16, values=[False] * 16, datatype=DataType.BITS)]
    top = max(table) + 1
    return [SimData(0, values=[bool(table.get(i, False)) for i in range(top + (-top % 16))], datatype=DataType.BITS)]


@dataclass
class Slave:
    """One simulated unit. ``busy`` lists (table, address) starts answered with "device busy"."""

    unit: int
    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    coils: dict[int, bool] = field(default_factory=dict)
    discrete: dict[int, bool] = field(default_factory=dict)
    busy: set[tuple[str, int]] = field(default_factory=set)

    def device(self) -> SimDevice:
        busy = self.busy
        fc_table = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}

        async def action(fc: int, start: int, address: int, count: int, regs: list[int], values: Any) -> Any:
            if (fc_table.get(fc), address) in busy:
                return ExcCodes.DEVICE_BUSY
            return None

        return SimDevice(
            self.unit,
            simdata=(_bits(self.coils), _bits(self.discrete), _runs(self.holding), _runs(self.input)),
            action=action,
        )


@dataclass(frozen=True, slots=True)
class Request:
    unit: int
    function: int
    address: int
    count: int


class Server:
    """A pymodbus server on loopback (Modbus TCP or RTU over TCP) or on a serial port, started
    and stopped in the test's own event loop. ``silent`` units never answer; ``corrupt`` units
    answer with a broken CRC (RTU framing only). ``requests`` logs what arrived."""

    def __init__(
        self,
        slaves: list[Slave],
        *,
        framer: FramerType = FramerType.SOCKET,
        port: int = 0,
        serial: str | None = None,
        silent: set[int] | None = None,
        corrupt: set[int] | None = None,
    ) -> None:
        self.slaves = slaves
        self.framer = framer
        self.port = port
        self.serial = serial
        self.silent = silent or set()
        self.corrupt = corrupt or set()
        self.requests: list[Request] = []
        self.connections = 0
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    def _connect(self, connected: bool) -> None:
        self.connections += connected

    def _unit_of(self, frame: bytes) -> int:
        return frame[0] if self.framer == FramerType.RTU else frame[6]

    def _packet(self, sending: bool, frame: bytes) -> bytes:
        if not sending or not frame:
            return frame
        unit = self._unit_of(frame)
        if unit in self.silent:
            return b""
        if unit in self.corrupt and self.framer == FramerType.RTU:
            return frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return frame

    def _pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append(
                Request(pdu.dev_id, pdu.function_code, getattr(pdu, "address", 0), getattr(pdu, "count", 0))
            )
        return pdu

    async def start(self) -> Server:
        devices = [s.device() for s in self.slaves]
        common: dict[str, Any] = {
            "framer": self.framer,
            "trace_packet": self._packet,
            "trace_pdu": self._pdu,
            "trace_connect": self._connect,
        }
        if self.serial is not None:
            self._server = ModbusSerialServer(devices, port=self.serial, baudrate=19200, **common)
        else:
            self.port = self.port or free_port()
            self._server = ModbusTcpServer(devices, address=("127.0.0.1", self.port), **common)
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def url(self) -> str:
        if self.serial is not None:
            raise ValueError("a serial server has no URL; the client uses the other end of the pair")
        return f"{'rtu+tcp' if self.framer == FramerType.RTU else 'tcp'}://127.0.0.1:{self.port}"

    def count(self, unit: int | None = None) -> int:
        return sum(1 for r in self.requests if unit is None or r.unit == unit)


class CutOffServer:
    """A Modbus TCP server that answers every read with a frame cut short: the header announces
    the full reply, then only ``send`` bytes of it arrive and the line goes quiet."""

    def __init__(self, send: int = 9) -> None:
        self.send = send
        self.port = 0
        self.requests = 0
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                req = await reader.readexactly(12)
                self.requests += 1
                count = int.from_bytes(req[10:12], "big")
                body = bytes([req[6], req[7], 2 * count]) + b"\x01\x02" * count
                frame = req[0:4] + len(body).to_bytes(2, "big") + body
                writer.write(frame[: self.send])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> CutOffServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)


class SerialPair:
    """``socat -d -d pty,raw,echo=0 pty,raw,echo=0``: two linked pseudo-terminals, a virtual
    RS-485 line. Started as a child process, stopped by its PID."""

    def __init__(self) -> None:
        binary = shutil.which("socat") or "/usr/bin/socat"
        if not os.access(binary, os.X_OK):
            raise RuntimeError("socat is not installed: apt-get install socat")
        self.proc = subprocess.Popen(
            [binary, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.ends = self._read_ptys(timeout_s=5.0)
        # socat keeps logging a little; drain it so a full pipe can never block it.
        threading.Thread(target=self._drain, daemon=True).start()

    def _read_ptys(self, timeout_s: float) -> tuple[str, str]:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout_s
        found: list[str] = []
        buf = b""
        while len(found) < 2:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"socat did not announce two ptys in {timeout_s} s: {buf.decode(errors='replace')}")
            ready, _, _ = select.select([self.proc.stderr], [], [], left)
            if not ready:
                continue
            chunk = self.proc.stderr.read1(4096)  # type: ignore[attr-defined]
            buf += chunk
            *lines, rest = buf.split(b"\n")
            buf = rest
            for line in lines:
                text = line.decode(errors="replace")
                if "PTY is " in text:
                    found.append(text.split("PTY is ", 1)[1].strip())
        return found[0], found[1]

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(Exception):
            while self.proc.stderr.read1(4096):  # type: ignore[attr-defined]
                pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


__all__ = ["CutOffServer", "Request", "SerialPair", "Server", "Slave", "encode", "registers"]
