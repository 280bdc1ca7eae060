"""Closing the crash window: every probe run is on disk before the probe sends anything, and its
result is on disk when it is measured — not only when the next batch is cut, up to
``publish.batch_interval`` later. A run that began and never finished (the agent was killed, the
probe cancelled) is counted as interrupted and recorded as an event at its start time.

Group commit: results measured in one turn of the event loop share one commit, and a run that
begins carries every result still pending into its own commit. The journal lives in the spool's
SQLite file, so cutting journal samples into a batch is one transaction (``Spool.put``)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from agent.spool import Spool
from probes.model import Sample, event_sample

log = logging.getLogger("netwatch.agent.journal")

#: the event recorded for a run that began and never finished
INTERRUPTED = "probe_interrupted"


def boot_id() -> int:
    """This boot of the node (Linux's boot_id, as a number); 0 where there is none."""
    try:
        return int(Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:15], 16)
    except (OSError, ValueError):
        return 0


def encode_sample(s: Sample) -> bytes:
    return orjson.dumps(s.to_dict())


def decode_sample(b: bytes) -> Sample:
    return Sample.from_dict(orjson.loads(b))


class Journal:
    def __init__(
        self, spool: Spool, identity: dict[str, str], on_interrupted: Callable[[list[tuple[int, Sample]]], None]
    ) -> None:
        self.spool = spool
        self.identity = dict(identity)
        #: gets the event journaled for a run cancelled while the agent runs, to be batched
        self.on_interrupted = on_interrupted
        self._next_sample, self._next_run = (i + 1 for i in spool.journal_ids())
        self._samples: list[tuple[int, bytes]] = []
        self._finished: list[int] = []
        self._scheduled = False
        self.runs_begun = 0
        #: journal commits that failed (a full or failing disk): the agent probes on, and what was
        #: measured meanwhile is protected only once it is batched
        self.errors = 0

    # -- start-up ----------------------------------------------------------------------------
    def recover(self) -> list[tuple[int, Sample]]:
        """What an earlier process measured and never batched, oldest first: its samples, and
        an interrupted-run event for each run it began and never finished (counted)."""
        try:
            unclean = self.spool.begin_session(boot_id())
        except sqlite3.Error as e:
            self._failed(e)
            unclean = False
        if unclean and self.spool.journal_sync == "normal":
            log.warning(
                "the node went down under the running agent (power loss or a crash of the node): with "
                "spool.sync: normal, samples measured in the last seconds before it (at most "
                "publish.batch_interval) may be lost uncounted; spool.sync: full keeps them "
                "/ 节点在代理运行时断电或崩溃：spool.sync 为 normal 时，断电前最后几秒（至多 "
                "publish.batch_interval）测得的样本可能丢失且未计数；设为 full 可保留"
            )
        added = self._settle(None)
        if added:
            log.warning(
                "%d probe runs were cut short when the agent last stopped: counted as interrupted_runs "
                "/ 上次停止时有 %d 次探测未完成，已计入 interrupted_runs",
                len(added),
                len(added),
            )
        rows = [(i, decode_sample(b)) for i, b in self.spool.journaled()]
        if rows:
            log.info(
                "recovered %d samples measured before the agent last stopped / 恢复了上次停止前已测得的 %d 个样本",
                len(rows),
                len(rows),
            )
        return rows

    def _describe(self, kind: str, name: str, target: str, started_ns: int) -> bytes:
        return encode_sample(
            event_sample(
                INTERRUPTED,
                target,
                f"{kind} {name}: the run that began here never finished (agent stopped or probe cancelled)"
                " / 此次探测未完成（代理停止或探测被取消）",
                severity="warning",
                tags={**self.identity, "probe": kind, "name": name},
                time_ns=started_ns,
            )
        )

    # -- the scheduler's RunLog ----------------------------------------------------------------
    def begin(self, kind: str, name: str, target: str) -> int:
        """On disk before the probe runs (one commit, with every result still pending)."""
        run = self._next_run
        self._next_run += 1
        samples, finished = self._take()
        self._write(samples, finished, [(run, kind, name, target, time.time_ns())])
        self.runs_begun += 1
        return run

    def end(self, run: int) -> None:
        """The run's samples were recorded: it is finished (committed with the next group)."""
        self._finished.append(run)
        self._schedule()

    def interrupted(self, run: int) -> None:
        """The run was cancelled (its probe stopped or changed): count it now."""
        self.commit()
        self.on_interrupted([(i, decode_sample(b)) for i, b in self._settle([run])])

    def _settle(self, runs: list[int] | None) -> list[tuple[int, bytes]]:
        try:
            added = self.spool.settle_runs(self._describe, runs, first_id=self._next_sample)
        except sqlite3.Error as e:  # left in the journal: the next start counts them
            self._failed(e)
            return []
        self._next_sample += len(added)
        return added

    # -- samples ------------------------------------------------------------------------------
    def record(self, samples: list[Sample]) -> list[int]:
        """Journal ``samples`` (committed with the group); returns their ids, in order."""
        ids = list(range(self._next_sample, self._next_sample + len(samples)))
        self._next_sample += len(samples)
        self._samples.extend(zip(ids, (encode_sample(s) for s in samples), strict=True))
        self._schedule()
        return ids

    def commit(self) -> None:
        """Commit whatever is pending now (before a batch is cut, and at the end of a loop turn)."""
        samples, finished = self._take()
        if samples or finished:
            self._write(samples, finished)

    def _write(
        self,
        samples: list[tuple[int, bytes]],
        finished: list[int],
        begun: list[tuple[int, str, str, str, int]] | None = None,
    ) -> None:
        try:
            self.spool.journal(samples, finished, begun or [])
        except sqlite3.Error as e:
            # The samples are still in the agent's buffer and go into the next batch as usual;
            # only their protection against a crash before then is lost. Never stop probing.
            self._failed(e)

    def _failed(self, e: sqlite3.Error) -> None:
        self.errors += 1
        if self.errors == 1:
            log.error(
                "cannot write the journal in %s (%s): probing goes on, but samples are safe only once "
                "batched / 无法写入日志（%s）：探测继续，样本在成批后才安全",
                self.spool.path,
                e,
                e,
            )

    def _take(self) -> tuple[list[tuple[int, bytes]], list[int]]:
        samples, self._samples = self._samples, []
        finished, self._finished = self._finished, []
        return samples, finished

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.commit()  # no loop (start-up, shutdown): at once
            return
        self._scheduled = True
        loop.call_soon(self._group_commit)

    def _group_commit(self) -> None:
        self._scheduled = False
        self.commit()
