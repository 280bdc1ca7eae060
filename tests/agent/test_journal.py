"""The journal that closes the crash window: runs on disk before they start, samples when they are
measured, recovered by the next start into exactly one batch, unfinished runs counted."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import scheduler as sched_mod
from agent.config import ProbeEntry
from agent.journal import INTERRUPTED, Journal
from agent.scheduler import Scheduler
from agent.spool import Spool, read_stats
from probes.base import Probe, ProbeConfig
from probes.model import Sample, status_sample

ID = {"site": "s1", "agent": "a1"}


class SlowProbe(Probe):
    kind = "fake"
    config_model = ProbeConfig

    async def collect(self) -> list[Sample]:
        await asyncio.sleep(10)
        return [status_sample("fake", self.name, "ok")]


def _spool(path: Path) -> Spool:
    return Spool(path, max_bytes=1 << 20, max_age_s=3600)


def _kept(rows: list[tuple[int, Sample]]) -> list[Sample]:
    return [s for _, s in rows]


def test_recovery_gives_back_what_was_measured_and_counts_the_unfinished_run(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    sp = _spool(db)
    j = Journal(sp, ID, lambda rows: None)
    # one of each field type, and a float that is a whole number: they must come back as they were
    a = Sample("http", {"target": "t"}, {"status_code": 200, "response_ms": 12.0, "ok": True, "sha": "ab"}, 1_000)
    b = status_sample("http", "t", "ok", duration_ms=3.25, time_ns=1_001)
    r1 = j.begin("http", "portal", "t")
    j.record([a, b])
    j.end(r1)
    r2 = j.begin("tcp", "gw", "10.0.0.1:22")  # carries a, b and r1's end in its commit
    c = Sample("m", {}, {"v": 1}, 2_000)
    j.record([c])  # no event loop here: committed at once
    del r2
    sp.close()  # no clean stop: as after SIGKILL, only committed work is there

    sp = _spool(db)
    j = Journal(sp, ID, lambda rows: None)
    rows = j.recover()
    got = _kept(rows)
    assert got[:3] == [a, b, c]
    assert [type(v) for v in got[0].fields.values()] == [int, float, bool, str]
    (ev,) = got[3:]
    assert ev.measurement == "event" and ev.tags["type"] == INTERRUPTED
    assert (ev.tags["probe"], ev.tags["name"], ev.tags["source"]) == ("tcp", "gw", "10.0.0.1:22")
    assert ev.tags["agent"] == "a1" and ev.fields["severity"] == "warning"
    assert read_stats(db).interrupted_runs == 1
    # recovering again (another crash before the batch was cut) gives the same, counts nothing new
    sp.close()
    sp = _spool(db)
    again = Journal(sp, ID, lambda rows: None).recover()
    assert again == rows and read_stats(db).interrupted_runs == 1
    # cutting them into a batch takes them out of the journal in the same transaction: exactly once
    seq = sp.put(lambda s: b"batch", len(rows), release_upto=max(i for i, _ in rows))
    assert seq == 1 and sp.journaled() == []
    sp.close()
    sp = _spool(db)
    assert Journal(sp, ID, lambda rows: None).recover() == [] and sp.stats().last_seq == 1
    sp.close()


def test_a_release_leaves_later_samples_in_the_journal(tmp_path: Path) -> None:
    sp = _spool(tmp_path / "spool.db")
    j = Journal(sp, ID, lambda rows: None)
    ids = j.record([Sample("m", {}, {"v": i}, i) for i in range(5)])
    j.commit()
    sp.put(lambda s: b"x", 3, release_upto=ids[2])
    assert [i for i, _ in sp.journaled()] == ids[3:]
    sp.close()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from agent.journal import Journal
    from agent.spool import Spool
    from probes.model import Sample
    sp = Spool(sys.argv[1], max_bytes=1 << 20, max_age_s=3600, journal_sync=sys.argv[2])
    j = Journal(sp, {"site": "s1", "agent": "a1"}, lambda rows: None)
    for i in range(50):
        run = j.begin("tcp", f"p{i}", "t")
        j.record([Sample("m", {"n": str(i)}, {"v": i}, 10_000 + i)])
        j.end(run)
    j.commit()
    j.begin("tcp", "last", "t")  # under way when killed
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("sync", ["normal", "full"])
def test_the_journal_survives_sigkill(tmp_path: Path, sync: str) -> None:
    """With synchronous=NORMAL a commit is a write to the WAL without fsync: the kernel has it
    when the process dies, whatever kills it (FULL adds the fsync for power loss)."""
    db = tmp_path / "spool.db"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(db), sync], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    sp = _spool(db)
    got = _kept(Journal(sp, ID, lambda rows: None).recover())
    assert [s.fields["v"] for s in got[:50]] == list(range(50))
    assert got[50].tags["name"] == "last" and len(got) == 51
    assert sp.stats().interrupted_runs == 1
    sp.close()


def test_unclean_reboot_is_told_from_a_process_kill(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    sp = _spool(db)
    assert not sp.begin_session(boot=7)  # first start
    sp.close()
    sp = _spool(db)
    assert not sp.begin_session(boot=7)  # the process was killed; same boot
    sp.close()
    sp = _spool(db)
    assert sp.begin_session(boot=8)  # never stopped, and the node booted since: power loss
    sp.end_session()
    sp.close()
    sp = _spool(db)
    assert not sp.begin_session(boot=9)  # stopped cleanly before the reboot
    assert sp.stats().unclean_reboots == 1
    sp.close()


async def test_a_run_cancelled_by_a_config_change_is_counted_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sched_mod, "build_probe", lambda e: SlowProbe(e.config, name=e.name, timeout_s=e.timeout_s))
    sp = _spool(tmp_path / "spool.db")
    got: list[tuple[int, Sample]] = []
    j = Journal(sp, ID, got.extend)
    sink: list[Sample] = []
    entry = ProbeEntry("fake", "slow", 30.0, 0.0, 20.0, {}, ProbeConfig())
    sched = Scheduler([entry], sink.extend, runlog=j)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    await asyncio.sleep(0.3)  # the run is under way (it takes 10 s)
    await sched.apply([])  # removed from the config: cancelled mid-run
    stop.set()
    await task
    assert sink == []
    assert [s.tags["name"] for _, s in got] == ["slow"] and sp.stats().interrupted_runs == 1
    assert [i for i, _ in sp.journaled()] == [i for i, _ in got]
    sp.close()


async def test_results_of_one_loop_turn_share_one_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = _spool(tmp_path / "spool.db")
    j = Journal(sp, ID, lambda rows: None)
    commits: list[int] = []
    real = sp.journal
    monkeypatch.setattr(sp, "journal", lambda s=(), f=(), b=(): (commits.append(1), real(s, f, b))[1])
    runs = [j.begin("fake", f"p{i}", "t") for i in range(3)]  # each durable before its probe starts
    assert len(commits) == 3
    for i, run in enumerate(runs):  # three results measured in the same turn of the loop
        j.record([Sample("m", {}, {"v": i}, i)])
        j.end(run)
    assert len(commits) == 3 and sp.journaled() == []  # not yet: at the end of the turn
    await asyncio.sleep(0)
    assert len(commits) == 4 and len(sp.journaled()) == 3
    sp.close()
