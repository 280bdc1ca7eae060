"""Modbus test setup: the helpers module on sys.path, a virtual serial line, the demo simulator."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.append(str(_HERE))

from modbus_sims import SerialPair  # noqa: E402


@pytest.fixture
def serial_pair() -> Iterator[tuple[str, str]]:
    """Two linked ptys from socat: the server opens one end, the probes the other."""
    pair = SerialPair()
    try:
        yield pair.ends
    finally:
        pair.stop()


_ROOT = _HERE.parents[2]


def load_sim_modbus() -> ModuleType:
    """configs/demo/sim_modbus.py as a module (configs/ is not a package)."""
    name = "netwatch_demo_sim_modbus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _ROOT / "configs" / "demo" / "sim_modbus.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def sim_modbus() -> ModuleType:
    return load_sim_modbus()
