"""The soak harness (bench/soak) in small: 12 townships in 3 counties through real Mosquitto, a
collector process and VictoriaMetrics without deduplication, with a collector SIGKILL, a county
cut off, the agents' process SIGKILLed, the store stopped and the broker restarted: two minutes
in all. The oracle is the simulated devices' own run log; every run must be stored whole, once,
with its values, or be missing only where a SIGKILL struck and counted by the agent as
interrupted."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_run", ROOT / "bench" / "soak" / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["soak_run"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_soak_in_small_accounts_for_every_run_exactly(tmp_path: Path) -> None:
    soak = _load()
    o = soak.Options(
        agents=12,
        counties=3,
        series=10,
        interval_s=5.0,
        minutes=2.0,
        fault_every_s=20.0,
        warmup_s=20.0,
        workdir=tmp_path,
        settle_s=5.0,
    )
    r = soak.run(o, lambda text: print(text, file=sys.stderr))
    print(soak.render(r))
    assert [e["fault"] for e in r["events"]] == [
        "collector-kill",
        "county-cut",
        "fleet-kill",
        "store-stopped",
        "broker-restart",
    ]
    a = r["account"]
    # 12 agents × 120 s / 5 s = 288 runs if every one ran on time; the kills and restarts cost a few
    assert 240 <= a["runs_logged"] <= 12 * (120 // 5 + 2), a
    assert a["runs_stored"] + a["runs_missing"] == a["runs_logged"], a
    assert a["runs_missing"] <= a["interrupted_counted"] and a["missing_not_near_kill"] == 0, a
    assert a["runs_partial"] == 0 and not a["agents_over"], a
    assert a["points_stored"] == a["runs_stored"] * 10 * 2, a
    assert a["points_twice_in_store"] == 0 and a["lines_written_twice"] == 0 and a["points_extra"] == 0, a
    assert a["value_mismatches"] == 0, a
    assert a["spool_left_batches"] == 0 and a["spool_dropped_samples"] == 0, a
    assert r["collector_rejected"] == 0 and r["collector_dropped"] == 0
    assert r["collector_runs"] == 2 and r["fleet_runs"] == 2 and r["fleet_exit"] == 0
    assert r["exact"]
