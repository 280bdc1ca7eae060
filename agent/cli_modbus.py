"""``netwatch-agent modbus``: the technician's Modbus tools — read a slave through its register map
or as raw registers, scan a bus for the unit ids that answer, and write one point of a configured
device (holding register or coil), confirmed by reading it back.

Exit codes: 0 ok; 1 target down or degraded, or no unit found; 2 usage error; 3 runtime failure.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from probes.base import parse_duration
from probes.configfile import problems_from
from probes.modbus.codec import WORDS, DataType, Order, Table, manual_reference, parse_manual_address
from probes.modbus.config import ModbusConfig
from probes.modbus.probe import ModbusProbe
from probes.modbus.registermap import Point, builtin_names
from probes.modbus.transport import Reply, Target, open_bus, parse_target, release_bus
from probes.modbus.write import WRITABLE_TABLES, Encoded, WriteRefused, encode_point
from probes.model import Sample, Status, status_sample
from probes.output import (
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_RUNTIME,
    EXIT_USAGE,
    console,
    lit,
    print_json_lines,
    print_samples_json,
    samples_table,
    status_counts,
    summary_line,
)

EXIT_DOWN = EXIT_PROBLEM

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Modbus for the technician: read a slave through its register map or as raw registers, and scan "
    "an RS-485 bus or gateway for the unit ids that answer.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

TargetArg = Annotated[
    str,
    typer.Argument(
        help="tcp://host:502, rtu+tcp://host:4196 (serial server) or 'rtu:///dev/ttyUSB0?baud=9600&parity=N&stop=1'"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON object per line, for scripts")]
TimeoutOpt = Annotated[str, typer.Option(help="wait for each reply, e.g. 500ms or 2s")]


def _usage(message: str) -> typer.Exit:
    console().print(f"[red]usage:[/red] {lit(message)}", soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def _target(url: str) -> Target:
    try:
        return parse_target(url)
    except ValueError as e:
        raise _usage(str(e)) from None


def _seconds(text: str, option: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as e:
        raise _usage(f"{option}: {e}") from None
    if value <= 0:
        raise _usage(f"{option} must be more than 0")
    return value


def _run(coro: Any) -> Any:
    """asyncio.run, with anything unexpected turned into exit code 3 and one readable line."""
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as e:
        console().print(f"[red]error:[/red] {type(e).__name__}: {lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_RUNTIME) from None


def _finish(samples: list[Sample], as_json: bool, title: str) -> None:
    if as_json:
        print_samples_json(samples)
    else:
        con = console()
        con.print(samples_table(samples, title=lit(title)))
        con.print(summary_line(status_counts(samples)))
    c = status_counts(samples)
    raise typer.Exit(EXIT_DOWN if c["down"] or c["degraded"] else EXIT_OK)


@app.command()
def read(
    target: TargetArg,
    unit: Annotated[int, typer.Option("--unit", "-u", help="slave address (unit id)")] = 1,
    map_name: Annotated[
        str | None, typer.Option("--map", help="register map: built-in name, name in --maps-dir, or a .yaml path")
    ] = None,
    maps_dir: Annotated[Path | None, typer.Option(help="folder of your own register maps")] = None,
    all_points: Annotated[bool, typer.Option("--all", help="with --map: also the points read only on request")] = False,
    table: Annotated[str | None, typer.Option(help="coil, discrete, holding or input (omit for 40001-style)")] = None,
    address: Annotated[str | None, typer.Option(help="0-based with --table (0x07D0 works), else 40001-style")] = None,
    count: Annotated[int, typer.Option(help="how many values of --type to read (for string: registers)")] = 1,
    type_: Annotated[
        str, typer.Option("--type", help="bit, int16, uint16, int32, uint32, float32, … string")
    ] = "uint16",
    order: Annotated[str, typer.Option(help="word/byte order: ABCD, CDAB, BADC, DCBA")] = "ABCD",
    timeout: TimeoutOpt = "1s",
    json: JsonOpt = False,
) -> None:
    """Read one slave: through a register map (--map) or raw registers (--address)."""
    t = _target(target)
    timeout_s = _seconds(timeout, "--timeout")
    if (map_name is None) == (address is None):
        raise _usage(f"give either --map (built in: {', '.join(builtin_names())}) or --address, not both or neither")
    if map_name is not None:
        _read_map(target, unit, map_name, maps_dir, all_points, timeout_s, json)
    else:
        assert address is not None
        _read_raw(t, unit, table, address, count, type_, order, timeout_s, json)


def _read_map(
    target: str, unit: int, map_name: str, maps_dir: Path | None, all_points: bool, timeout_s: float, as_json: bool
) -> None:
    raw: dict[str, Any] = {"target": target, "unit": unit, "map": map_name, "request_timeout": timeout_s}
    if maps_dir is not None:
        raw["maps_dir"] = maps_dir
    try:
        cfg = ModbusConfig.model_validate(raw, context={"base_dir": Path.cwd()})
        if all_points:
            cfg = ModbusConfig.model_validate(
                {**raw, "points": [p.name for p in cfg.register_map.points]}, context={"base_dir": Path.cwd()}
            )
    except ValidationError as e:
        for p in problems_from(e, ModbusConfig):
            console().print(
                f"[red]{lit(p.key)}:[/red] {lit(p.message)}" + (f" — {lit(p.fix)}" if p.fix else ""), soft_wrap=True
            )
        raise typer.Exit(EXIT_USAGE) from None
    name = f"unit-{unit}"
    # Room for one timeout per request plus a retry, so a slow unit is reported, not cut off.
    budget = timeout_s * 2 * (len(ModbusProbe(cfg, name=name).blocks) + 1) + 1
    probe = ModbusProbe(cfg, name=name, timeout_s=budget)

    async def main() -> list[Sample]:
        try:
            return await probe.collect()
        finally:
            await probe.aclose()

    samples: list[Sample] = _run(main())
    _finish(samples, as_json, f"{cfg.register_map.model} at {target} unit {unit}")


def _read_raw(
    t: Target,
    unit: int,
    table: str | None,
    address: str,
    count: int,
    type_: str,
    order: str,
    timeout_s: float,
    as_json: bool,
) -> None:
    if type_ not in get_args(DataType):
        raise _usage(f"--type {type_!r}: use one of {', '.join(get_args(DataType))}")
    if order.upper() not in get_args(Order):
        raise _usage(f"--order {order!r}: use one of {', '.join(get_args(Order))}")
    if not 1 <= count <= 125:
        raise _usage("--count must be 1-125")
    try:
        if table is None:
            tbl, start = parse_manual_address(address)
        elif table in get_args(Table):
            tbl, start = table, int(address, 0)  # type: ignore[assignment]
        else:
            raise _usage(f"--table {table!r}: use one of {', '.join(get_args(Table))}")
    except ValueError as e:
        raise _usage(f"--address: {e}") from None
    points = _raw_points(tbl, start, count, type_, order.upper())
    if isinstance(points, str):
        raise _usage(points)
    width = max(p.address + p.words for p in points) - start  # bits of one register share it
    if width > (2000 if tbl in ("coil", "discrete") else 125):
        raise _usage(f"{count} × {type_} is {width} registers; one request reads at most 125 (2000 bits)")

    async def main() -> Reply:
        bus = open_bus(t)
        try:
            return await bus.read(unit, tbl, start, width, timeout_s)
        finally:
            release_bus(bus)

    reply: Reply = _run(main())
    name = f"unit-{unit}"
    samples: list[Sample] = []
    if reply.ok:
        data = reply.values or []
        for p in points:
            off = p.address - start
            value, why = p.decode(data[off : off + p.words])
            raw = " ".join(f"0x{w:04X}" for w in data[off : off + p.words]) if tbl in ("holding", "input") else None
            fields: dict[str, Any] = {"value": value if value is not None else why}
            if raw is not None:
                fields["raw"] = raw
            tags = {"device": name, "table": tbl, "address": str(p.address), "ref": manual_reference(tbl, p.address)}
            if p.bit is not None:
                tags["bit"] = str(p.bit)
            samples.append(Sample("modbus_point", tags, fields))
        status: Status = "ok"
    else:
        status = "down" if reply.silent else "degraded"
    error = "" if reply.ok else f"{t} unit {unit}: read {tbl} {start} ×{width}: {reply.error} — {reply.detail}"
    samples.append(status_sample("modbus", name, status, error=error, duration_ms=reply.elapsed_s * 1000))
    _finish(samples, as_json, f"{t} unit {unit} {tbl} {start}")


def _raw_points(table: str, start: int, count: int, type_: str, order: str) -> list[Point] | str:
    """Ad-hoc points for a raw read, decoded by the same code as map points."""
    if table in ("coil", "discrete") and type_ != "bit":
        return f"a {table} holds bits: use --type bit"
    base: dict[str, Any] = {"table": table, "type": type_, "order": order}
    try:
        if type_ == "string":
            return [Point.model_validate({**base, "name": f"a{start}", "address": start, "length": count})]
        if type_ == "bit" and table in ("holding", "input"):
            # --count bits of the register at --address, bit 0 first.
            return [Point.model_validate({**base, "name": f"b{b}", "address": start, "bit": b}) for b in range(count)]
        step = WORDS[type_]
        return [
            Point.model_validate({**base, "name": f"a{start + k * step}", "address": start + k * step})
            for k in range(count)
        ]
    except ValidationError as e:
        return "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())


_UNITS = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_units(spec: str, low: int, high: int) -> list[int]:
    """'1-247', '1,2,10-12' -> the unit ids, in order, without repeats."""
    out: list[int] = []
    for part in spec.split(","):
        m = _UNITS.match(part)
        if not m:
            raise ValueError(f"{part.strip()!r} is not a unit id or a range like 1-247")
        a = int(m.group(1))
        b = int(m.group(2) or a)
        if a > b or a < low or b > high:
            raise ValueError(f"{part.strip()!r}: unit ids here are {low}-{high}, low to high")
        out += [u for u in range(a, b + 1) if u not in out]
    return out


async def scan_units(
    t: Target,
    ids: list[int],
    table: Table,
    address: int,
    timeout_s: float,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Ask each unit id in turn for one value (any reply counts, even a Modbus exception); stops
    at a target that cannot be reached at all. Returns (what answered, why unreachable or "")."""
    found: list[dict[str, Any]] = []
    bus = open_bus(t)
    try:
        for u in ids:
            reply = await bus.read(u, table, address, 1, timeout_s)
            if reply.answered:
                found.append(
                    {
                        "target": str(t),
                        "unit": u,
                        "reply": "values" if reply.ok else "exception",
                        "error": reply.error,
                        "response_ms": round(reply.elapsed_s * 1000, 2),
                    }
                )
            elif reply.error == "connect_failed":
                return found, reply.detail  # no point asking the other unit ids
            if progress is not None:
                progress(len(found))
    finally:
        release_bus(bus)
    return found, ""


@app.command()
def scan(
    target: TargetArg,
    units: Annotated[str, typer.Option(help="unit ids to try: 1-247, or 1,2,10-20")] = "1-247",
    table: Annotated[str, typer.Option(help="table of the probe read: coil, discrete, holding or input")] = "holding",
    address: Annotated[int, typer.Option(help="0-based register to ask each unit for")] = 0,
    timeout: TimeoutOpt = "300ms",
    json: JsonOpt = False,
) -> None:
    """Find which unit ids answer on a bus: any reply counts, even a Modbus exception."""
    t = _target(target)
    timeout_s = _seconds(timeout, "--timeout")
    if table not in get_args(Table):
        raise _usage(f"--table {table!r}: use one of {', '.join(get_args(Table))}")
    if not 0 <= address <= 65535:
        raise _usage("--address must be 0-65535")
    try:
        ids = parse_units(units, 1 if t.rtu else 0, 247 if t.rtu else 255)
    except ValueError as e:
        raise _usage(f"--units: {e}") from None

    async def main() -> tuple[list[dict[str, Any]], str]:
        progress = Progress(
            TextColumn("scanning {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("found {task.fields[found]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=json,
        )
        with progress:
            task = progress.add_task(str(t), total=len(ids), found=0)
            return await scan_units(
                t,
                ids,
                table,  # type: ignore[arg-type]  # checked against Table above
                address,
                timeout_s,
                lambda n: progress.update(task, advance=1, found=n),
            )

    found, unreachable = _run(main())
    if unreachable:
        if json:
            print_json_lines([{"target": str(t), "error": "connect_failed", "detail": unreachable}])
        else:
            console().print(f"[red]{lit(t)}:[/red] {lit(unreachable)}", soft_wrap=True)
        raise typer.Exit(EXIT_DOWN)
    if json:
        print_json_lines(found)
    else:
        con = console()
        tbl = RichTable(title=f"{lit(t)}: {len(found)} of {len(ids)} unit ids answered / 应答的从站")
        for col in ("unit", "reply", "response ms"):
            tbl.add_column(col)
        for f in found:
            tbl.add_row(
                lit(f["unit"]), lit(f["reply"] + (f" ({f['error']})" if f["error"] else "")), f"{f['response_ms']:g}"
            )
        con.print(tbl)
    raise typer.Exit(EXIT_OK if found else EXIT_DOWN)


def _modbus_entry(config: Path, device: str) -> ModbusConfig:
    from agent import config as agent_config
    from probes.configfile import ConfigError

    try:
        cfg = agent_config.load(config)
    except ConfigError as e:
        console().print(f"[red]config error[/red] / 配置错误:\n{lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    entries = [e for e in cfg.probes if e.kind == "modbus"]
    chosen = next((e for e in entries if e.name == device), None)
    if chosen is None:
        names = ", ".join(e.name for e in entries) or "none"
        raise _usage(f"no modbus entry named {device!r} in {config}; there are: {names}")
    assert isinstance(chosen.config, ModbusConfig)
    return chosen.config


def _show(point: Point, value: object) -> str:
    if isinstance(value, bool):
        return point.enum.get(int(value), "on" if value else "off")
    if isinstance(value, int) and point.enum:
        return f"{point.state_name(value)}({value})"
    if isinstance(value, float):
        return f"{value:g}{(' ' + point.unit) if point.unit else ''}"
    return str(value)


@app.command()
def write(
    value: Annotated[
        str, typer.Argument(metavar="VALUE", help="the new value in the point's units (22.5), a state name, or on/off")
    ],
    device: Annotated[str, typer.Option("--device", help="name of the modbus entry in --config")],
    point_name: Annotated[str, typer.Option("--point", help="a holding-register or coil point of its register map")],
    config: Annotated[Path | None, typer.Option("--config", help="agent config whose modbus entry to use")] = None,
    timeout: TimeoutOpt = "1s",
    json: JsonOpt = False,
) -> None:
    """Write one point of a configured device, then read it back: exit 0 only when the device holds
    the new value."""
    if config is None:
        raise _usage("give --config FILE: the device's bus, unit and register map come from its modbus entry")
    timeout_s = _seconds(timeout, "--timeout")
    cfg = _modbus_entry(config, device)
    try:
        point = cfg.register_map.point(point_name)
    except KeyError:
        names = ", ".join(p.name for p in cfg.register_map.points if p.table in WRITABLE_TABLES) or "none"
        raise _usage(f"{device}'s map {cfg.map_source} has no point {point_name!r}; writable points: {names}") from None
    try:
        enc = encode_point(point, value, invert=point.name in cfg.invert)
    except WriteRefused as e:
        console().print(f"[red]refused / 拒绝:[/red] {lit(e)}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    # what the device will hold, decoded as a read would: the value to confirm
    planned = point.decode([enc.coil] if enc.coil is not None else list(enc.registers))[0]
    from rich.console import Console

    Console(stderr=True, highlight=False).print(
        f"[yellow]warning / 警告:[/yellow] changing a device / 正在更改设备: {lit(device)} "
        f"({lit(cfg.target)} unit {cfg.unit}) {lit(point.name)} → {lit(_show(point, planned))}",
        soft_wrap=True,
    )
    before, written, after = _run(_write_and_confirm(cfg, point, enc, timeout_s))
    fail = next((r for r in (before, written, after) if not r.ok), None)
    where = f"{device} ({cfg.target} unit {cfg.unit}) {point.name} [{manual_reference(point.table, point.address)}]"
    expected = [enc.coil] if enc.coil is not None else list(enc.registers)
    confirmed = fail is None and after.values == expected
    was = point.decode(before.values)[0] if before.ok and before.values is not None else None
    now = point.decode(after.values)[0] if after.ok and after.values is not None else None
    if json:
        print_json_lines(
            [
                {
                    "device": device,
                    "target": cfg.target,
                    "unit": cfg.unit,
                    "point": point.name,
                    "table": point.table,
                    "address": point.address,
                    "requested": planned,
                    "raw": expected,
                    "before": was,
                    "after": now,
                    "confirmed": confirmed,
                    "error": "" if fail is None else f"{fail.error}: {fail.detail}",
                }
            ]
        )
    elif fail is not None:
        step = "read" if fail is before else "write" if fail is written else "read back"
        console().print(f"[red]{lit(where)}: {step} failed / 失败: {lit(fail.error)} — {lit(fail.detail)}[/red]")
    else:
        line = f"{lit(where)}: {lit(_show(point, was))} → {lit(_show(point, now))}"
        if confirmed:
            console().print(f"[green]{line}[/green] — confirmed by reading back / 已回读确认", soft_wrap=True)
        else:
            console().print(
                f"[red]{line}[/red] — the device acknowledged the write but holds {lit(_show(point, now))}, not "
                f"{lit(_show(point, planned))} / 设备未应用新值",
                soft_wrap=True,
            )
    raise typer.Exit(EXIT_OK if confirmed else EXIT_DOWN)


async def _write_and_confirm(
    cfg: ModbusConfig, point: Point, enc: Encoded, timeout_s: float
) -> tuple[Reply, Reply, Reply]:
    """Read, write, read back — stopping at the first step that fails (the rest are that Reply too)."""
    bus = open_bus(cfg.parsed_target)
    try:
        before = await bus.read(cfg.unit, point.table, point.address, point.words, timeout_s)
        if not before.ok:
            return before, before, before
        values = [enc.coil] if enc.coil is not None else list(enc.registers)
        written = await bus.write(cfg.unit, point.table, point.address, values, timeout_s)
        if not written.ok:
            return before, written, written
        after = await bus.read(cfg.unit, point.table, point.address, point.words, timeout_s)
        return before, written, after
    finally:
        release_bus(bus)


if __name__ == "__main__":
    app()
