"""Settings of one Modbus slave: where its bus is, its unit id, its register map and how to poll it.
The map is found and validated here, when the agent config loads."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from probes.base import Duration, LocalPath, ProbeConfig
from probes.modbus.plan import Limits
from probes.modbus.registermap import MapError, RegisterMap, check_names, load_map, parse_map
from probes.modbus.transport import Target, parse_target


class ModbusConfig(ProbeConfig):
    """One slave device. ``map`` is a map name (looked up in ``maps_dir``, then among the
    built-in maps), a path to a map file, or a map written inline."""

    target: str = Field(description="tcp://host:502, rtu+tcp://host:4196 or rtu:///dev/ttyUSB0?baud=9600&parity=N")
    unit: int = Field(1, ge=0, le=255, description="slave address (unit id)")
    map: str | dict[str, Any] = Field(description="register map: name, path to a .yaml file, or inline")
    maps_dir: LocalPath | None = Field(None, description="folder of your own map files, searched first")
    points: list[str] | None = Field(None, description="read only these points (default: the map's enabled ones)")
    labels: dict[str, str] = Field(default_factory=dict, description="rename tag values: {di1: door-main}")
    invert: list[str] = Field(default_factory=list, description="bit points whose meaning is reversed (NC contacts)")
    request_timeout: Duration = Field(1.0, gt=0, le=60, description="wait for each reply")
    retries: int = Field(1, ge=0, le=5, description="extra tries after a timeout, CRC error or busy reply")
    frame_gap: Duration | None = Field(None, ge=0, le=5, description="silence between frames on the bus")
    max_registers: int | None = Field(None, ge=1, le=125, description="override the map's per-request limit")
    max_bits: int | None = Field(None, ge=1, le=2000)
    gap_fill: int | None = Field(None, ge=0, le=124, description="unused registers read across to merge requests")

    _target: Target = PrivateAttr()
    _map: RegisterMap | None = PrivateAttr(None)
    _map_source: str = PrivateAttr("")

    @field_validator("target")
    @classmethod
    def _target_url(cls, v: str) -> str:
        parse_target(v)
        return v

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> ModbusConfig:
        self._target = parse_target(self.target)
        if self._target.rtu and not 1 <= self.unit <= 247:
            raise ValueError(f"unit {self.unit}: on an RTU line slave addresses are 1-247")
        ctx = info.context or {}
        try:
            if isinstance(self.map, dict):
                self._map, self._map_source = parse_map(self.map, "(inline)"), "inline map"
            else:
                path, self._map = load_map(self.map, self.maps_dir, ctx.get("base_dir"))
                self._map_source = str(path)
        except MapError as e:
            if ctx.get("skip_file_checks") and "does not exist" in str(e):
                return self  # an example config schema-checked on another machine
            raise ValueError(str(e)) from None
        if self.points is not None:
            if not self.points:
                raise ValueError("points: is empty; leave it out to read every enabled point of the map")
            check_names(self.points, self._map, "points")
        check_names(self.invert, self._map, "invert")
        not_bits = [n for n in self.invert if self._map.point(n).type != "bit"]
        if not_bits:
            raise ValueError(f"invert: {', '.join(not_bits)} are not bit points")
        return self

    @property
    def parsed_target(self) -> Target:
        return self._target

    @property
    def register_map(self) -> RegisterMap:
        if self._map is None:
            raise MapError(f"register map {self.map!r} was not loaded (its file was missing when the config loaded)")
        return self._map

    @property
    def map_source(self) -> str:
        """The map's file (or 'inline map'), for messages."""
        return self._map_source or str(self.map)

    def limits(self) -> Limits:
        m = self.register_map
        return Limits(
            max_registers=self.max_registers or m.max_registers,
            max_bits=self.max_bits or m.max_bits,
            gap_fill=m.gap_fill if self.gap_fill is None else self.gap_fill,
        )
