"""Probe tests' shared setup: the real ``probes`` package, helper imports, certificate fixture."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parents[1]
# tests/ is on sys.path (pyproject's pythonpath) and holds a folder named like the package under
# test; without the repo root on sys.path too (as under `.venv/bin/pytest`), `import probes` finds
# that folder as a namespace package. Put the root after it and drop any such namespace import.
if str(_ROOT) not in sys.path:
    sys.path.append(str(_ROOT))
if getattr(sys.modules.get("probes"), "__file__", "") is None:
    for _name in [m for m in sys.modules if m == "probes" or m.startswith("probes.")]:
        del sys.modules[_name]
# The probe tests' helpers (catalogue, probe_certs) import by name under any --import-mode.
if str(_HERE) not in sys.path:
    sys.path.append(str(_HERE))

from probe_certs import CertPair, make_cert  # noqa: E402


@pytest.fixture
def cert_factory(tmp_path: Path) -> Callable[[float], CertPair]:
    """``cert_factory(30)`` -> a localhost/127.0.0.1 certificate valid for 30 more days."""
    return lambda days: make_cert(tmp_path / "certs", days)
