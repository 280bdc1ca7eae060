"""Simulated machine-room Modbus devices for the demo, on one pymodbus TCP server in a thread: a Renke
RS-WS-N01 T/H sensor (unit 1) whose temperature drifts on a slow sine (past 27 °C and back with the
defaults), a DI module (unit 2) whose door contact (input 1) opens now and then, and — when given a
``HeatWave`` — a second Renke sensor (unit 3) in a room whose air conditioning fails for a while.
``start(port).stop()``; or run this file."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field

from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

#: GB 50174-2017 Appendix A: room inlet temperature upper limit (°C).
ROOM_MAX_C = 27.0
RENKE_UNIT, DI_UNIT, HEAT_UNIT = 1, 2, 3
UNITS = frozenset({RENKE_UNIT, DI_UNIT})  # and HEAT_UNIT when there is a heat wave
GATEWAY_NO_RESPONSE = 11


_MAGNUS_B, _MAGNUS_C = 17.62, 243.12  # the Magnus formula over water (Sonntag 1990)


def humidity_for_dew_point(temperature_c: float, dew_point_c: float) -> float:
    """The relative humidity (%) of air at ``temperature_c`` holding the moisture of ``dew_point_c``."""
    b, c = _MAGNUS_B, _MAGNUS_C
    return 100.0 * math.exp(b * dew_point_c / (c + dew_point_c) - b * temperature_c / (c + temperature_c))


@dataclass
class HeatWave:
    """A machine room whose air conditioning fails ``at_s`` seconds after the clock starts: it warms
    from ``base_c`` to ``peak_c`` over ``ramp_s``, stays there ``hold_s``, and once the unit is
    repaired cools back as fast. No moisture comes in or goes out, so the dew point stays at
    ``dew_point_c`` and the relative humidity falls as the room warms (as it does in a real room)."""

    at_s: float
    hold_s: float
    ramp_s: float = 10.0
    base_c: float = 24.0
    peak_c: float = 28.5
    dew_point_c: float = 12.5

    @property
    def ends_s(self) -> float:
        """When the room is back at ``base_c``."""
        return self.at_s + 2 * self.ramp_s + self.hold_s

    def temperature_c(self, t: float) -> float:
        up = (t - self.at_s) / self.ramp_s
        down = (self.ends_s - t) / self.ramp_s
        return self.base_c + (self.peak_c - self.base_c) * max(0.0, min(1.0, up, down))

    def above_s(self, limit_c: float) -> tuple[float, float]:
        """The span of seconds (start, end) in which the room is above ``limit_c``."""
        frac = (limit_c - self.base_c) / (self.peak_c - self.base_c)
        return self.at_s + frac * self.ramp_s, self.ends_s - frac * self.ramp_s

    def humidity_pct(self, t: float) -> float:
        return humidity_for_dew_point(self.temperature_c(t), self.dew_point_c)


@dataclass
class Room:
    """What the devices report, as functions of the seconds since start: a slow sine that starts at
    ``base_c``, peaks ``swing_c`` above it a quarter period later (past 27 °C with the defaults) and
    falls as far below; humidity moves the other way. The door is open for ``door_open_s`` at the
    end of every ``door_every_s``."""

    period_s: float = 180.0
    base_c: float = 23.5
    swing_c: float = 5.0
    door_every_s: float = 75.0
    door_open_s: float = 15.0
    #: when given, the room follows this instead of the sine
    wave: HeatWave | None = None
    t0: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def temperature_c(self, t: float) -> float:
        if self.wave is not None:
            return self.wave.temperature_c(t)
        return self.base_c + self.swing_c * math.sin(2 * math.pi * t / self.period_s)

    def humidity_pct(self, t: float) -> float:
        if self.wave is not None:
            return self.wave.humidity_pct(t)
        return 50.0 - 8.0 * math.sin(2 * math.pi * t / self.period_s)

    def door_open(self, t: float) -> bool:
        return t % self.door_every_s >= self.door_every_s - self.door_open_s


def _renke(room: Room, unit: int = RENKE_UNIT) -> SimDevice:
    async def update(fc: int, start: int, address: int, count: int, regs: list[int], values: object) -> None:
        # Registers are filled in at each read, so every poll sees the room as it is now.
        if fc == 3:
            t = room.elapsed()
            regs[0 - start] = round(room.humidity_pct(t) * 10)
            regs[1 - start] = round(room.temperature_c(t) * 10) & 0xFFFF
        return None

    return SimDevice(
        unit,
        simdata=(
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            # RH, temperature; then the settings registers: address 1, baud code 1 (4800).
            [
                SimData(0, values=[500, 235], datatype=DataType.REGISTERS),
                SimData(0x07D0, values=[1, 1], datatype=DataType.REGISTERS),
            ],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        ),
        action=update,
    )


def _di_module(room: Room) -> SimDevice:
    async def update(fc: int, start: int, address: int, count: int, regs: list[int], values: object) -> None:
        if fc == 2:  # discrete inputs, 16 to a register, input 1 = bit 0
            regs[0 - start] = (regs[0 - start] & ~1) | int(room.door_open(room.elapsed()))
        return None

    return SimDevice(
        DI_UNIT,
        simdata=(
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        ),
        action=update,
    )


class SimHandle:
    """The running simulator: ``port``, ``room`` (what it reports) and ``stop()``."""

    def __init__(self, port: int, room: Room, host: str, rtu_over_tcp: bool, hot_room: Room | None = None) -> None:
        self.port = port
        self.host = host
        self.room = room
        #: the room of unit 3 (a HeatWave), when there is one
        self.hot_room = hot_room
        self._framer = FramerType.RTU if rtu_over_tcp else FramerType.SOCKET
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"sim-modbus-{port}", daemon=True)

    @property
    def url(self) -> str:
        return f"{'rtu+tcp' if self._framer == FramerType.RTU else 'tcp'}://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # pymodbus answers an unknown unit id with "device failure" and logs a traceback; a real
        # serial server stays silent and a Modbus TCP gateway says "target failed to respond".
        log = logging.getLogger("pymodbus.logging")
        if log.level == logging.NOTSET:
            log.setLevel(logging.CRITICAL)
        rtu = self._framer == FramerType.RTU
        units = UNITS | ({HEAT_UNIT} if self.hot_room is not None else set())

        def absent_units(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
            if sending and pdu.dev_id not in units and isinstance(pdu, ExceptionResponse):
                pdu.exception_code = GATEWAY_NO_RESPONSE
            return pdu

        def silent_units(sending: bool, frame: bytes) -> bytes:
            return b"" if rtu and sending and frame and frame[0] not in units else frame

        try:
            server = ModbusTcpServer(
                [
                    _renke(self.room),
                    _di_module(self.room),
                    *([_renke(self.hot_room, HEAT_UNIT)] if self.hot_room is not None else []),
                ],
                address=(self.host, self.port),
                framer=self._framer,
                trace_pdu=absent_units,
                trace_packet=silent_units,
            )
            await server.serve_forever(background=True)
        except BaseException as e:  # reported to start() in the caller's thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await server.shutdown()

    def reset_clock(self) -> None:
        """Start the rooms' clocks (the sine, the door, the heat wave) now."""
        now = time.monotonic()
        for room in (self.room, self.hot_room):
            if room is not None:
                room.t0 = now

    def start(self, timeout_s: float = 10.0) -> SimHandle:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"Modbus simulator did not start on {self.host}:{self.port} in {timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"Modbus simulator could not listen on {self.host}:{self.port}: {self._error}")
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    port: int,
    *,
    period_s: float = 180.0,
    host: str = "127.0.0.1",
    rtu_over_tcp: bool = False,
    door_every_s: float = 75.0,
    door_open_s: float = 15.0,
    swing_c: float = 5.0,
    heat_wave: HeatWave | None = None,
) -> SimHandle:
    """Serve the devices on ``host:port`` (Modbus TCP, or RTU framing over TCP like a serial
    server) until ``.stop()``. ``period_s`` is one full temperature cycle of unit 1, ``swing_c`` its
    amplitude; ``heat_wave`` adds unit 3, a second sensor in a room that follows it."""
    room = Room(period_s=period_s, swing_c=swing_c, door_every_s=door_every_s, door_open_s=door_open_s)
    hot = Room(wave=heat_wave, door_every_s=door_every_s, door_open_s=door_open_s) if heat_wave is not None else None
    return SimHandle(port, room, host, rtu_over_tcp, hot).start()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=15020)
    ap.add_argument("--period", type=float, default=180.0, help="seconds for one temperature cycle")
    ap.add_argument("--rtu-over-tcp", action="store_true", help="RTU framing, like a serial server")
    args = ap.parse_args()
    sim = start(args.port, period_s=args.period, rtu_over_tcp=args.rtu_over_tcp)
    print(f"Modbus simulator on {sim.url}: unit {RENKE_UNIT} Renke T/H, unit {DI_UNIT} DI module (door = input 1)")
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.wait(1.0):
        t = sim.room.elapsed()
        print(f"  t={t:6.0f}s  {sim.room.temperature_c(t):5.1f} °C  door {'open' if sim.room.door_open(t) else 'shut'}")
    sim.stop()


if __name__ == "__main__":
    main()
