"""Poll one Modbus slave through its register map: planned block reads on a shared bus, decoded
into ``room_env`` / ``leak`` / ``contact`` / ``precision_ac`` / ``modbus_point`` Samples, with
exceptions, silence and bad frames reported as ``probe_status`` and as ``modbus_exception`` events."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from probes.base import Probe
from probes.modbus.codec import BIT_TABLES, Packed, dew_point_c, manual_reference
from probes.modbus.config import ModbusConfig
from probes.modbus.plan import Block, plan, split
from probes.modbus.registermap import Point
from probes.modbus.transport import Bus, BusConflict, Reply, open_bus, release_bus
from probes.model import Sample, Status, event_sample, now_ns, status_sample

log = logging.getLogger("netwatch.probes.modbus")

#: Event kind for exceptions, timeouts and bad frames (and, with cleared=true, their end).
EVENT_KIND = "modbus_exception"
#: Worth another try in the same poll: the unit may answer the next time.
_RETRYABLE = frozenset({"timeout", "crc_error", "truncated_reply", "garbled_reply", "io_error"})
_RETRY_CODES = frozenset({5, 6})  # acknowledge, busy: "come back later"
#: Exceptions that mean "this request was too big or reached a register the device lacks":
#: the block is split and the halves tried (some devices say 3 where 2 is meant).
_SPLIT_CODES = frozenset({2, 3})
_HINTS: dict[str, str] = {
    "illegal_function": "the device does not offer this table; check the map's table: for these points",
    "illegal_data_address": "the device has no such register: check the map fits this model and the address "
    "style (with table: 0-based, without it manual 40001 = holding 0)",
    "illegal_data_value": "the device refused the request size: lower max_registers for this entry",
    "server_device_failure": "the device reports an internal fault",
    "server_device_busy": "the device was busy; it is asked again next poll",
    "gateway_path_unavailable": "the gateway has no route to this unit: check its serial port settings",
    "gateway_target_no_response": "the gateway got no answer from the unit: check wiring, unit id and line settings",
    "crc_error": "a frame arrived damaged: check termination (120 Ω at both ends), cable screen and for a "
    "second master on the line",
    "truncated_reply": "the reply was cut off: check the gateway and line, or lower max_registers",
    "garbled_reply": "another device answered in its place: check for duplicate unit ids on the line",
    "io_error": "the connection failed during the request",
}
_MAX_LISTED = 3
_NOTHING = Reply()
_BUDGET = Reply(error="budget")


@dataclass(frozen=True, slots=True)
class Problem:
    error: str
    message: str
    code: int = 0
    block: Block | None = None
    event: bool = True  # sentinels are data about the sensor, not a Modbus fault: no event


@dataclass(frozen=True, slots=True)
class _Group:
    """The points that make up one Sample (same measurement and tags), worked out once."""

    measurement: str
    tags: dict[str, str]
    fields: tuple[tuple[int, str], ...]  # point index, field
    enums: tuple[tuple[int, str, Point], ...]  # point index, field for its name, the point
    dew: tuple[tuple[int, int, str], ...]  # temperature index, humidity index, field


class ModbusProbe(Probe):
    kind: ClassVar[str] = "modbus"
    config_model: ClassVar[type[ModbusConfig]] = ModbusConfig
    config: ModbusConfig

    def __init__(self, config: ModbusConfig, *, name: str, timeout_s: float = 10.0) -> None:
        super().__init__(config, name=name, timeout_s=timeout_s)
        m = config.register_map
        wanted = set(config.points) if config.points is not None else {p.name for p in m.points if p.enabled}
        flip = set(config.invert)
        self.points: list[Point] = [
            p.model_copy(update={"invert": p.invert != (p.name in flip)}) for p in m.points if p.name in wanted
        ]
        #: the read plan; blocks the device refused are replaced by their halves and stay so
        self.blocks: list[Block] = plan(self.points, config.limits())
        self._readers = [p.reader() for p in self.points]
        self._values = [r.value_of() for r in self._readers]
        self._addresses = [p.address for p in self.points]
        self._groups = self._group(config.labels)
        self._where = f"{config.parsed_target} unit {config.unit}"
        self._bus: Bus | None = None
        self._problems: dict[str, Problem] = {}
        #: the last request tried (block, reply, try number), to say what a poll cut short was doing
        self._attempt: tuple[Block | None, Reply, int] = (None, _NOTHING, 0)
        self._budget_s = self.budget_s

    def _group(self, labels: dict[str, str]) -> list[_Group]:
        index = {p.name: i for i, p in enumerate(self.points)}
        members: dict[tuple[str, tuple[tuple[str, str], ...]], list[int]] = {}
        for i, p in enumerate(self.points):
            tags = {"device": self.name, **{k: labels.get(v, v) for k, v in p.sample_tags.items()}}
            key = (p.measurement, tuple(sorted(tags.items())))
            members.setdefault(key, []).append(i)
        groups = []
        for (measurement, tag_items), mine in members.items():
            points = [(i, self.points[i]) for i in mine]
            dew = tuple(
                (index[d.temperature], index[d.humidity], d.field)
                for d in self.config.register_map.dew_point
                if index.get(d.temperature) in mine and d.humidity in index
            )
            fields = tuple((i, p.field_name) for i, p in points)
            enums = tuple((i, f"{p.field_name}_name", p) for i, p in points if p.enum)
            groups.append(_Group(measurement, dict(tag_items), fields, enums, dew))
        return groups

    @property
    def target(self) -> str:
        return self.name

    def describe(self) -> str:
        return f"modbus {self.name}: {self._where}, map {self.config.register_map.model} ({len(self.blocks)} requests)"

    def _open(self) -> Bus:
        loop = asyncio.get_running_loop()
        if self._bus is not None and self._bus.loop is not loop:
            self._bus = None  # a new event loop (tests, `agent once` twice): the old one is gone
        if self._bus is None:
            self._bus = open_bus(self.config.parsed_target, self.config.frame_gap)
        return self._bus

    async def aclose(self) -> None:
        if self._bus is not None:
            release_bus(self._bus)
            self._bus = None

    async def collect(self) -> list[Sample]:
        t0 = time.perf_counter()
        values: dict[int, Any] = {}
        problems: dict[str, Problem] = {}
        answered = False
        self._attempt = (None, _NOTHING, 0)
        bus = self._bus
        if bus is None or bus.loop is not asyncio.get_running_loop():
            try:
                bus = self._open()
            except BusConflict as e:
                problems["bus"] = Problem("bus_conflict", str(e), event=False)
                bus = None
        if bus is not None:
            # Every block in turn. The loop is here rather than in a coroutine of its own: each
            # coroutine level costs its call, and its share of every suspension, on every poll
            # (bench/modbus). The budget is a deadline handed to each request rather than a timer
            # around the poll: a free bus costs no extra timer per request.
            deadline = bus.loop.time() + self._budget_s
            blocks = self.blocks  # changed in place, so a split is kept for later polls
            cfg = self.config
            unit, timeout_s = cfg.unit, cfg.request_timeout
            i = 0
            while i < len(blocks):
                block = blocks[i]
                reply = await bus.read(unit, block.table, block.start, block.count, timeout_s, deadline)
                if reply.error:
                    reply = await self._retry(bus, block, deadline, reply)
                else:
                    self._attempt = (block, reply, 1)
                if reply.ok:
                    answered = True
                    self._decode(block, reply.values or [], values, problems)
                    i += 1
                    continue
                answered = answered or reply.answered
                nxt = self._failed(i, reply, problems)
                if nxt is None:
                    break
                i = nxt
        stamp = now_ns()
        samples = self._samples(values, stamp)
        if problems or self._problems:
            samples += self._events(problems, stamp)
        status: Status = "ok" if not problems else ("degraded" if answered or values else "down")
        error = ""
        if problems:
            texts = [p.message for p in problems.values()]
            more = f" (+{len(texts) - _MAX_LISTED} more)" if len(texts) > _MAX_LISTED else ""
            error = f"modbus {self.name} ({self._where}): " + "; ".join(texts[:_MAX_LISTED]) + more
        samples.append(
            status_sample(
                self.kind,
                self.name,
                status,
                error=error,
                duration_ms=(time.perf_counter() - t0) * 1000.0,
                time_ns=stamp,
            )
        )
        return samples

    def _failed(self, i: int, reply: Reply, problems: dict[str, Problem]) -> int | None:
        """Block ``i`` got no values: split it if the device refused its size, else record why.
        The index of the block to read next, or None when the rest of the poll is pointless."""
        blocks = self.blocks
        block = blocks[i]
        if reply.error == "budget":
            self._cut_short(problems)
            return None
        if reply.code in _SPLIT_CODES:
            halves = split(block, self.points)
            if halves is not None:
                blocks[i : i + 1] = halves
                log.info(
                    "modbus %s (%s): %s refused (%s); reading it as %s and %s from now on",
                    self.name,
                    self._where,
                    block.describe(),
                    reply.error,
                    halves[0].describe(),
                    halves[1].describe(),
                )
                return i
        problems[self._key(reply, block)] = self._problem(reply, block, self._attempt[2])
        i += 1
        if reply.silent:
            if i < len(blocks):
                problems["skipped"] = Problem(
                    "skipped", f"{len(blocks) - i} more request(s) skipped this poll", event=False
                )
            return None
        return i

    async def _retry(self, bus: Bus, block: Block, deadline: float, reply: Reply) -> Reply:
        """After a first attempt that failed: again while the error is worth another try, the
        retries last and the budget allows. The last real attempt stays in ``self._attempt``."""
        if reply.error == "budget":
            return reply
        cfg = self.config
        attempt = 1
        while True:
            self._attempt = (block, reply, attempt)
            if reply.ok or not (reply.error in _RETRYABLE or reply.code in _RETRY_CODES):
                return reply
            if deadline - bus.loop.time() <= 0:
                return _BUDGET
            if attempt > cfg.retries:
                return reply
            attempt += 1
            nxt = await bus.read(cfg.unit, block.table, block.start, block.count, cfg.request_timeout, deadline)
            if nxt.error == "budget":
                return nxt  # keep the last real attempt in self._attempt for the message
            reply = nxt

    def _cut_short(self, problems: dict[str, Problem]) -> None:
        block, reply, tries = self._attempt
        if block is not None and not reply.ok:
            # Cut off while retrying a silent or busy unit: that is the news, the budget the detail.
            problems[self._key(reply, block)] = self._problem(reply, block, tries)
            problems["budget"] = Problem("budget", f"poll cut short at its {self.budget_s:g} s budget", event=False)
        else:
            problems["budget"] = Problem(
                "budget",
                f"poll unfinished after {self.budget_s:g} s — the bus is busy with other slaves or the unit is "
                "slow: lengthen this entry's timeout or lower request_timeout",
                event=False,
            )

    def _decode(
        self, block: Block, data: list[int] | list[bool], values: dict[int, Any], problems: dict[str, Problem]
    ) -> None:
        packed: Any = data if block.table in BIT_TABLES else Packed(data)
        start = block.start
        value_of, addresses = self._values, self._addresses
        for i in block.points:
            off = addresses[i] - start
            value = value_of[i](packed, off)
            if value is None:
                name = self.points[i].name
                why = self._readers[i].read(packed, off)[1]
                problems[f"invalid:{name}"] = Problem("invalid_value", f"{name}: no value — {why}", event=False)
            else:
                values[i] = value

    @staticmethod
    def _key(reply: Reply, block: Block) -> str:
        # One key per unit-level fault (whichever block met it), one per refused block.
        return reply.error if reply.silent else f"{reply.error}:{block.describe()}"

    def _problem(self, reply: Reply, block: Block, tries: int) -> Problem:
        names = [self.points[i].name for i in block.points]
        shown = ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
        where = f"read {block.describe()} ({manual_reference(block.table, block.start)}; {shown})"
        hint = self._silence_hint() if reply.error == "timeout" else _HINTS.get(reply.error, "")
        after = f" after {tries} tries" if tries > 1 else ""
        text = f"{where}: {reply.detail}{after}" + (f" — {hint}" if hint else "")
        return Problem(reply.error, text, reply.code, block)

    def _silence_hint(self) -> str:
        t = self.config.parsed_target
        m = self.config.register_map
        if t.scheme == "tcp":
            return f"check the device is up and that unit id {self.config.unit} is right"
        hint = f"check wiring (A/B swapped?), unit id {self.config.unit} and line settings"
        if t.scheme == "rtu":
            hint += f" ({t.settings()} here)"
        if m.serial is not None:
            s = m.serial
            hint += f"; a factory-new {m.model} answers as unit {s.address} at {s.baud} 8{s.parity}{s.stop}"
        return hint

    def _samples(self, values: dict[int, Any], stamp: int) -> list[Sample]:
        # Values are already clean (sentinels, NaN and infinities came back as None and are not in
        # ``values``), so the fields go into the Sample as they are.
        out: list[Sample] = []
        for g in self._groups:
            fields: dict[str, Any] = {}
            for i, name in g.fields:
                if i in values:
                    fields[name] = values[i]
            for i, name, point in g.enums:
                if i in values:
                    fields[name] = point.state_name(values[i])
            for t, h, name in g.dew:
                if t in values and h in values:
                    dew = dew_point_c(values[t], values[h])
                    if dew is not None:
                        # to 0.01 °C; round(dew, 2) would get there through a decimal conversion
                        fields[name] = round(dew * 100.0) / 100.0
            if fields:
                out.append(Sample(g.measurement, g.tags.copy(), fields, stamp))
        return out

    def _events(self, problems: dict[str, Problem], stamp: int) -> list[Sample]:
        """An event when a fault appears and when it clears; the first is logged, not every poll."""
        before, self._problems = self._problems, problems
        out: list[Sample] = []
        for key, p in problems.items():
            if key in before or not p.event:
                continue
            log.warning("modbus %s (%s): %s", self.name, self._where, p.message)
            out.append(self._event(p, cleared=False, stamp=stamp))
        for key, p in before.items():
            if key in problems or not p.event:
                continue
            log.info("modbus %s (%s): %s cleared", self.name, self._where, p.error)
            out.append(self._event(p, cleared=True, stamp=stamp))
        return out

    def _event(self, p: Problem, *, cleared: bool, stamp: int) -> Sample:
        tags = {"device": self.name}
        fields: dict[str, Any] = {"error": p.error, "code": p.code, "unit": self.config.unit, "cleared": cleared}
        if p.block is not None:
            tags["table"] = p.block.table
            fields["address"] = p.block.start
            fields["count"] = p.block.count
        message = f"{self.name}: {p.error} cleared" if cleared else p.message
        return event_sample(
            EVENT_KIND,
            self._where,
            message,
            severity="info" if cleared else "warning",
            tags=tags,
            fields=fields,
            time_ns=stamp,
        )
