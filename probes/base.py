"""The probe contract: a frozen, validated config in; ``async collect() -> list[Sample]`` out."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

from probes.model import Sample

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


#: How much of a bad value an error message repeats: enough to find the line, too little to leak a
#: key pasted into the wrong field (config errors are printed, logged and sent to the centre).
_ECHO_CHARS = 4


def redacted(value: Any) -> str:
    """A short, safe stand-in for a bad config value in an error message: its first few characters
    and its length (``'abcd'… (40 chars)``); values of four characters or fewer are shown whole."""
    text = str(value)
    if len(text) <= _ECHO_CHARS:
        return repr(text)
    return f"{text[:_ECHO_CHARS]!r}… ({len(text)} chars)"


def parse_duration(value: Any) -> float:
    """``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"`` (or a bare number of seconds) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"{redacted(value)} is not a duration: write it like 500ms, 30s, 5m, 2h or 7d")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNIT_B = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_size(value: Any) -> int:
    """``"512MiB"``, ``"1GB"``, ``"64KiB"`` (or a bare number of bytes) → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64KiB, 512MiB or 2GiB")
    if isinstance(value, int):
        n = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError(f"{redacted(value)} is not a size: write it like 64KiB, 512MiB or 2GiB")
        n = int(float(m.group(1)) * _UNIT_B[(m.group(2) or "b").lower()])
    if n < 0:
        raise ValueError("a size cannot be negative")
    return n


#: Seconds, written in config as "30s", "5m", "2h"...
Duration = Annotated[float, BeforeValidator(parse_duration)]
#: Bytes, written in config as "64KiB", "512MiB"...
ByteSize = Annotated[int, BeforeValidator(parse_size)]


def _local_path(value: Path, info: ValidationInfo) -> Path:
    # Relative paths count from the config file's folder, passed as ``base_dir`` in the
    # validation context, so a config means the same whatever the current directory.
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        value = (Path(base) / value).resolve()
    return value


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    value = _local_path(value, info)
    # Off only when schema-checking example configs written for another machine.
    if not (info.context or {}).get("skip_file_checks") and not value.is_file():
        raise ValueError(f"file {value} does not exist (relative paths count from the config file's folder)")
    return value


#: A path in a config file: relative to the file's folder.
LocalPath = Annotated[Path, AfterValidator(_local_path)]
#: A file that must exist when the config loads (certificates, password files, baselines).
ExistingFile = Annotated[Path, AfterValidator(_existing_file)]


def validation_context(config_file: str | Path | None, *, check_files: bool = True) -> dict[str, Any]:
    return {
        "base_dir": Path(config_file).parent if config_file is not None else None,
        "skip_file_checks": not check_files,
    }


class ProbeConfig(BaseModel):
    """Base of every probe's own settings: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Probe(ABC):
    """One configured target. The scheduler calls ``collect`` every interval.

    ``collect`` measures and returns Samples — among them one ``probe_status`` Sample saying
    ok / degraded / down — and never publishes, stores or prints. A probe must not raise for a
    target being unreachable: that is data. It may raise only for bugs, which the scheduler turns
    into a ``down`` status.
    """

    kind: ClassVar[str]
    config_model: ClassVar[type[ProbeConfig]]
    #: Without a ``timeout`` in its entry, a run may take this share of the interval when that is
    #: more than the scheduler's default timeout (a slow device's paced SNMP walk); None: the default.
    interval_share: ClassVar[float | None] = None

    def __init__(self, config: ProbeConfig, *, name: str, timeout_s: float = 10.0) -> None:
        self.config = config
        self.name = name
        self.timeout_s = timeout_s

    @property
    def budget_s(self) -> float:
        """The time ``collect`` gives itself: ``timeout_s`` less a small margin, so a slow target
        is reported by the probe as data before the scheduler's own ``wait_for`` cancels it."""
        return max(0.0, self.timeout_s - min(0.5, self.timeout_s * 0.1))

    @property
    def target(self) -> str:
        """What this probe instance looks at, for status tags and messages."""
        return self.name

    @abstractmethod
    async def collect(self) -> list[Sample]: ...

    def describe(self) -> str:
        """One line for ``netwatch-agent check``."""
        return f"{self.kind} {self.target}"

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release sockets or sessions held between polls."""


#: Where a Listener hands what it received.
Emit = Callable[[list[Sample]], None]


class Listener(ABC):
    """A receiver that runs for the agent's whole life (SNMP traps, syslog) instead of being
    polled. ``run`` binds its socket, then hands each arrival to ``emit`` as Samples (usually
    ``event`` Samples) until it is cancelled. Like a probe it never publishes, stores or prints;
    malformed input is counted and dropped, never raised. If ``run`` raises, the agent logs it
    and starts it again after a pause."""

    kind: ClassVar[str]
    config_model: ClassVar[type[ProbeConfig]]

    def __init__(self, config: ProbeConfig, *, name: str) -> None:
        self.config = config
        self.name = name

    @abstractmethod
    async def run(self, emit: Emit) -> None: ...

    def describe(self) -> str:
        return f"{self.kind} {self.name}"
