"""The wire side: target URLs, one connection and one request queue per bus shared by every
slave on it, and each reply classified as data (values, a Modbus exception, silence, bad CRC)."""

from __future__ import annotations

import asyncio
import logging
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.framer.rtu import FramerRTU

from probes.modbus.codec import BIT_TABLES, Table

Scheme = Literal["tcp", "rtu+tcp", "rtu"]

# pymodbus logs every timeout at ERROR with a dump of recent frames. The probe reports each
# failure as data and logs the first one and the recovery itself, so keep the library quiet
# unless someone has configured its logger on purpose.
_pymodbus_log = logging.getLogger("pymodbus.logging")
if _pymodbus_log.level == logging.NOTSET:
    _pymodbus_log.setLevel(logging.CRITICAL)

#: Modbus exception codes -> the names reports use (Modbus Application Protocol v1.1b3, §7).
EXCEPTIONS: dict[int, str] = {
    1: "illegal_function",
    2: "illegal_data_address",
    3: "illegal_data_value",
    4: "server_device_failure",
    5: "acknowledge",
    6: "server_device_busy",
    7: "negative_acknowledge",
    8: "memory_parity_error",
    10: "gateway_path_unavailable",
    11: "gateway_target_no_response",
}
#: Gateway exceptions mean the slave behind it did not answer: the unit is silent, like a timeout.
GATEWAY_SILENT = frozenset({10, 11})
#: Errors that say nothing came back from the unit (as opposed to a refused request).
SILENT_ERRORS = frozenset({"timeout", "crc_error", "truncated_reply", "garbled_reply", "connect_failed", "io_error"})
_PARITY = {"n": "N", "none": "N", "e": "E", "even": "E", "o": "O", "odd": "O"}
# pymodbus' connect/response timeout until the first request sets its caller's own (see Bus.read).
_LIBRARY_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where a bus is: ``tcp://host:502``, ``rtu+tcp://host:4196`` or
    ``rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1``."""

    scheme: Scheme
    host: str = ""
    port: int = 0
    device: str = ""
    baud: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stop: int = 1
    bytesize: int = 8

    @property
    def key(self) -> str:
        """The bus identity: slaves with the same key share one connection and one queue."""
        return f"rtu://{self.device}" if self.scheme == "rtu" else f"{self.scheme}://{self.host}:{self.port}"

    @property
    def rtu(self) -> bool:
        return self.scheme != "tcp"

    def char_time_s(self) -> float:
        bits = 1 + self.bytesize + (self.parity != "N") + self.stop
        return bits / self.baud

    def default_gap_s(self) -> float:
        """The silent interval between frames: 3.5 characters on a serial line (1.75 ms above
        19200 baud, as the RTU spec fixes it); gateways keep their own serial timing."""
        if self.scheme != "rtu":
            return 0.0
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_time_s()

    def settings(self) -> str:
        return f"{self.baud} {self.bytesize}{self.parity}{self.stop}"

    def __str__(self) -> str:
        if self.scheme == "rtu":
            bits = "" if self.bytesize == 8 else f"&bits={self.bytesize}"
            return f"rtu://{self.device}?baud={self.baud}&parity={self.parity}&stop={self.stop}{bits}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(url: str) -> Target:
    """Parse a target URL; ValueError says what is wrong and shows the accepted forms."""
    forms = "tcp://host:502, rtu+tcp://host:4196 or rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1"
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in ("tcp", "rtu+tcp"):
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number 1-65535") from None
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host; write it as {forms}")
        if port is None:
            if scheme == "rtu+tcp":
                raise ValueError(
                    f"{url!r}: give the serial server's port (often 4001, 4196, 502 or 8899), e.g. rtu+tcp://host:4196"
                )
            port = 502
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{url!r}: a {scheme} target is only host and port")
        return Target(scheme, host=parts.hostname, port=port)  # type: ignore[arg-type]
    if scheme == "rtu":
        device = parts.netloc + parts.path
        if not device:
            raise ValueError(f"{url!r}: no serial device; write it as rtu:///dev/ttyUSB0?baud=9600")
        target = Target("rtu", device=device)
        for key, values in urllib.parse.parse_qs(parts.query, keep_blank_values=True).items():
            target = _serial_option(target, key.lower(), values[-1], url)
        return target
    raise ValueError(f"{url!r}: unknown scheme {parts.scheme!r}; write the target as {forms}")


def _serial_option(target: Target, key: str, value: str, url: str) -> Target:
    try:
        if key in ("baud", "baudrate"):
            baud = int(value)
            if not 300 <= baud <= 921600:
                raise ValueError
            return replace(target, baud=baud)
        if key == "parity":
            return replace(target, parity=_PARITY[value.lower()])  # type: ignore[arg-type]
        if key in ("stop", "stopbits"):
            if value not in ("1", "2"):
                raise ValueError
            return replace(target, stop=int(value))
        if key in ("bits", "bytesize"):
            if value not in ("7", "8"):
                raise ValueError
            return replace(target, bytesize=int(value))
    except (ValueError, KeyError):
        raise ValueError(
            f"{url!r}: {key}={value!r} is not valid (baud 300-921600, parity N/E/O, stop 1/2, bits 7/8)"
        ) from None
    raise ValueError(f"{url!r}: unknown option {key!r}; use baud, parity, stop, bits")


@dataclass(slots=True)
class Reply:
    """What came back for one request: ``values``, or an ``error`` (an exception name from
    EXCEPTIONS with its ``code``, or timeout / crc_error / truncated_reply / garbled_reply /
    connect_failed / io_error) with ``detail`` for people. Not frozen: one is made per request,
    and a frozen dataclass' ``__init__`` costs a microsecond more (bench/modbus); treat it as
    read-only."""

    values: list[int] | list[bool] | None = None
    error: str = ""
    code: int = 0
    detail: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def silent(self) -> bool:
        """The unit did not (intelligibly) answer: the rest of its poll would fare no better."""
        return self.error in SILENT_ERRORS or self.code in GATEWAY_SILENT

    @property
    def answered(self) -> bool:
        """A unit at this address replied, even if only with an exception (for bus scans)."""
        return self.ok or (self.code != 0 and self.code not in GATEWAY_SILENT)


def exception_reply(code: int, elapsed_s: float = 0.0) -> Reply:
    name = EXCEPTIONS.get(code, f"exception_{code}")
    return Reply(error=name, code=code, detail=f"exception {code} ({name.replace('_', ' ')})", elapsed_s=elapsed_s)


class Bus:
    """One RS-485 line, serial server or Modbus TCP device, shared by every probe whose target
    has the same key. Requests go out one at a time in arrival order (asyncio.Lock is FIFO),
    each bounded by its caller's timeout, with ``gap_s`` of silence between frames; the lock is
    released between a caller's requests, so a silent slave delays the others by at most one
    timeout per request."""

    def __init__(self, target: Target, gap_s: float) -> None:
        self.target = target
        self.gap_s = gap_s
        self.loop = asyncio.get_running_loop()
        self.users = 0
        self.requests = 0
        self._lock = asyncio.Lock()
        self._free_at = 0.0
        self._rx = b""
        self._client = self._make_client()

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        t = self.target
        common: dict[str, Any] = {
            "timeout": _LIBRARY_TIMEOUT_S,
            "retries": 0,  # retries are ours, so the queue is released between attempts
            "reconnect_delay": 0,  # no background reconnects: the next request reconnects
            "trace_packet": self._trace,
            "name": str(t),
        }
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if t.scheme == "rtu":
            client = AsyncModbusSerialClient(
                t.device,
                framer=FramerType.RTU,
                baudrate=t.baud,
                bytesize=t.bytesize,
                parity=t.parity,
                stopbits=t.stop,
                **common,
            )
        else:
            framer = FramerType.RTU if t.scheme == "rtu+tcp" else FramerType.SOCKET
            client = AsyncModbusTcpClient(t.host, port=t.port, framer=framer, **common)
        # pymodbus drops a TCP connection after a few requests in a row go unanswered; on a
        # gateway that would cut off every slave because one is dead. Reconnecting is ours.
        client.set_max_no_responses(2**30)
        return client

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # Keep what arrived for the current request, to tell a bad CRC or a cut-off frame from
        # plain silence when the request times out (pymodbus drops such frames quietly).
        if not sending:
            self._rx = data
        return data

    async def read(
        self, unit: int, table: Table, address: int, count: int, timeout_s: float, deadline: float | None = None
    ) -> Reply:
        """One request, in turn. ``deadline`` (loop time) bounds the wait for the bus and the
        request together: the caller's poll budget, without a timer of its own when the bus is free.

        This is the hot path of every Modbus poll (bench/modbus), so the request itself is done
        here rather than a coroutine further down."""
        lock = self._lock
        if lock.locked():
            if deadline is None:
                await lock.acquire()
            else:
                try:
                    async with asyncio.timeout_at(deadline):
                        await lock.acquire()
                except TimeoutError:
                    return Reply(error="budget", detail="no turn on the bus before the poll's budget ran out")
        else:
            await lock.acquire()
        time = self.loop.time
        try:
            t0 = time()
            wait = self._free_at - t0
            if wait > 0:
                await asyncio.sleep(wait)
                t0 = time()
            if deadline is not None and deadline - t0 < timeout_s:
                timeout_s = deadline - t0
                if timeout_s <= 0:
                    return Reply(error="budget", detail="the poll's budget ran out waiting for the bus")
            client = self._client
            if not client.connected:
                refused = await self._connect(timeout_s)
                if refused is not None:
                    return refused
            self._begin(timeout_s)
            try:
                if table == "holding":
                    resp = await client.read_holding_registers(address, count=count, device_id=unit)
                elif table == "input":
                    resp = await client.read_input_registers(address, count=count, device_id=unit)
                elif table == "coil":
                    resp = await client.read_coils(address, count=count, device_id=unit)
                else:
                    resp = await client.read_discrete_inputs(address, count=count, device_id=unit)
            except ModbusIOException:
                # With retries=0 pymodbus raises this when no acceptable frame came in time (a reply
                # for another unit or transaction is skipped, a bad CRC dropped): find out which.
                return self._silence(timeout_s)
            except (ModbusException, OSError) as e:
                client.close()
                return Reply(error="io_error", detail=f"{type(e).__name__}: {e}", elapsed_s=time() - t0)
            elapsed = time() - t0
            if resp.isError():
                return exception_reply(int(getattr(resp, "exception_code", 0) or 0), elapsed)
            # pymodbus types both as Sequence[int]; they are a list of bool and a list of int
            values: list[int] | list[bool] = resp.bits[:count] if table in BIT_TABLES else resp.registers  # type: ignore[assignment]
            if len(values) < count:
                return Reply(
                    error="truncated_reply", detail=f"asked for {count} values, got {len(values)}", elapsed_s=elapsed
                )
            return Reply(values, "", 0, "", elapsed)
        finally:
            gap = self.gap_s
            if gap:  # a serial line's silence between frames; none on TCP, and no clock read for it
                self._free_at = time() + gap
            lock.release()

    async def write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool], timeout_s: float
    ) -> Reply:
        """One write, in turn: a coil (function 5), one holding register (6) or several (16).
        The Reply's ``values`` are what was written, as the device echoed the request."""
        if table not in ("holding", "coil") or not values:
            raise ValueError(f"a write goes to holding registers or a coil, with values (not {table})")
        async with self._lock:
            wait = self._free_at - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await self._write(unit, table, address, values, timeout_s)
            finally:
                self._free_at = self.loop.time() + self.gap_s

    async def _write(
        self, unit: int, table: Table, address: int, values: Sequence[int] | Sequence[bool], timeout_s: float
    ) -> Reply:
        client = self._client
        t0 = self.loop.time()
        if not client.connected:
            refused = await self._connect(timeout_s)
            if refused is not None:
                return refused
        self._begin(timeout_s)
        try:
            if table == "coil":
                resp = await client.write_coil(address, bool(values[0]), device_id=unit)
            elif len(values) == 1:  # many small devices know only function 6 for one register
                resp = await client.write_register(address, int(values[0]), device_id=unit)
            else:
                resp = await client.write_registers(address, [int(v) for v in values], device_id=unit)
        except ModbusIOException:
            return self._silence(timeout_s)
        except (ModbusException, OSError) as e:
            client.close()
            return Reply(error="io_error", detail=f"{type(e).__name__}: {e}", elapsed_s=self.loop.time() - t0)
        elapsed = self.loop.time() - t0
        if resp.isError():
            return exception_reply(int(getattr(resp, "exception_code", 0) or 0), elapsed)
        return Reply(values=list(values), elapsed_s=elapsed)

    def _begin(self, timeout_s: float) -> None:
        """A request is about to go out (the caller holds the bus lock)."""
        self._rx = b""
        self.requests += 1
        # The request's timeout is pymodbus' own response timer, set per request (slaves on one bus
        # may differ): a second timer of ours would cost as much again on every request. We hold the
        # bus lock, so no other request can see the value.
        params = self._client.ctx.comm_params
        if params.timeout_connect != timeout_s:
            params.timeout_connect = timeout_s

    async def _connect(self, timeout_s: float) -> Reply | None:
        """Connect (the client is not connected); a Reply saying why when that fails, else None."""
        client = self._client
        connected = False
        try:
            async with asyncio.timeout(timeout_s):
                connected = await client.connect()
        except TimeoutError:
            pass
        except OSError as e:  # pragma: no cover - pymodbus catches these itself
            return Reply(error="connect_failed", detail=f"cannot connect: {e.strerror or e}")
        if not connected:
            client.close()
            return Reply(error="connect_failed", detail=self._connect_hint(timeout_s), elapsed_s=timeout_s)
        return None

    def _silence(self, timeout_s: float) -> Reply:
        """A timed-out request: nothing at all, a frame that failed its CRC, or one cut short."""
        rx = self._rx
        if not rx:
            return Reply(error="timeout", detail=f"no reply within {timeout_s:.3g} s", elapsed_s=timeout_s)
        if self.target.rtu:
            need = _rtu_frame_size(rx)
            if need is not None and len(rx) >= need:
                crc = FramerRTU.compute_CRC(rx[: need - 2]).to_bytes(2, "big")
                if crc != rx[need - 2 : need]:
                    return Reply(
                        error="crc_error",
                        detail=f"reply failed its CRC check ({need} bytes) — noise, a missing terminator or "
                        "two masters on the line",
                        elapsed_s=timeout_s,
                    )
                return Reply(
                    error="garbled_reply",
                    detail=f"a reply for unit {rx[0]} / function {rx[1]} did not match the request",
                    elapsed_s=timeout_s,
                )
        else:
            need = 6 + int.from_bytes(rx[4:6], "big") if len(rx) >= 6 else None
            # The TCP stream is out of step now: start the next request on a fresh connection.
            self._client.close()
            if need is not None and len(rx) >= need:
                return Reply(
                    error="garbled_reply",
                    detail="a reply with another transaction or unit id arrived",
                    elapsed_s=timeout_s,
                )
        got = f"{len(rx)} of {need}" if need else str(len(rx))
        return Reply(
            error="truncated_reply",
            detail=f"reply cut short: got {got} bytes in {timeout_s:.3g} s",
            elapsed_s=timeout_s,
        )

    def _connect_hint(self, timeout_s: float) -> str:
        t = self.target
        if t.scheme == "rtu":
            if not os.path.exists(t.device):
                return f"serial port {t.device} does not exist — check the adapter is plugged in and the path"
            return (
                f"cannot open serial port {t.device} — check permissions (dialout group) and that nothing else uses it"
            )
        return (
            f"cannot connect to {t.host}:{t.port} within {timeout_s:g} s — check the address and port, and that the "
            "gateway accepts another connection"
        )

    def close(self) -> None:
        self._client.close()


_BUSES: dict[str, Bus] = {}


class BusConflict(ValueError):
    """Two entries describe one serial port with different line settings."""


def open_bus(target: Target, gap_s: float | None = None) -> Bus:
    """The shared bus for ``target`` in the running event loop (made on first use); the caller
    must ``release_bus`` it. ``gap_s`` None means the target's default inter-frame silence."""
    gap = target.default_gap_s() if gap_s is None else gap_s
    loop = asyncio.get_running_loop()
    bus = _BUSES.get(target.key)
    if bus is None or bus.loop is not loop or bus.users <= 0:
        if bus is not None and bus.loop is loop:
            bus.close()
        bus = _BUSES[target.key] = Bus(target, gap)
    elif bus.target != target:
        raise BusConflict(
            f"{target.device} is already in use at {bus.target.settings()} by another entry, this one asks for "
            f"{target.settings()}: every slave on one RS-485 line must use the same settings"
        )
    bus.gap_s = max(bus.gap_s, gap)  # the slowest slave on the line sets the pause
    bus.users += 1
    return bus


def release_bus(bus: Bus) -> None:
    bus.users -= 1
    if bus.users <= 0:
        bus.close()
        if _BUSES.get(bus.target.key) is bus:
            del _BUSES[bus.target.key]


def _rtu_frame_size(rx: bytes) -> int | None:
    """Length of the RTU reply starting ``rx``, from its function code and byte count."""
    if len(rx) < 3:
        return None
    fc = rx[1]
    if fc & 0x80:
        return 5
    if fc in (1, 2, 3, 4):
        return 5 + rx[2]
    if fc in (5, 6, 15, 16):  # writes echo address and value/count
        return 8
    return None
