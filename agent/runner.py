"""The running agent: scheduler -> batches -> spool -> publisher, plus the agent's own metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import orjson

from agent.config import AgentConfig
from agent.journal import Journal
from agent.publisher import Publisher
from agent.scheduler import Scheduler
from agent.spool import Spool
from probes.files import private_file
from probes.model import EVENT, Sample
from protocol import envelope
from protocol.status import HEALTH_MEASUREMENT

if TYPE_CHECKING:
    from agent.control import AgentControl

log = logging.getLogger("netwatch.agent")


def _encode(agent: str, site: str, batch: list[Sample], compress: bool, seq: int) -> bytes:
    return envelope.encode(agent, site, seq, batch, compress=compress)


def config_version(cfg: AgentConfig) -> str:
    return hashlib.sha256(cfg.path.read_bytes()).hexdigest()[:12]


class Agent:
    def __init__(self, cfg: AgentConfig, *, tee: Path | None = None) -> None:
        # the node's file, plus the last good config the centre pushed (when control is on)
        if cfg.control is not None:  # control verifies ed25519 signatures: cryptography only when it is on
            from agent.control import startup_config

            cfg = startup_config(cfg)
        self.cfg = cfg
        # --tee: every sample spooled, as JSON lines; what the agent vouches it handed on.
        self._tee: BinaryIO | None = open(private_file(tee, sqlite=False), "ab") if tee is not None else None  # noqa: SIM115
        if self._tee is not None:
            self._tee.write(b"\n" + orjson.dumps({"run_started": time.time_ns()}) + b"\n")
        self.spool = Spool(
            cfg.spool.path, max_bytes=cfg.spool.max_bytes, max_age_s=cfg.spool.max_age, journal_sync=cfg.spool.sync
        )
        self.identity = {"site": cfg.agent.site, "agent": cfg.agent.id}
        # Samples measured and not yet batched, with their journal ids: first what an earlier
        # process measured and never batched (cut into a batch at once, in run()).
        self._buffer: list[tuple[int, Sample]] = []
        self.journal = Journal(self.spool, {**cfg.agent.tags, **self.identity}, self._buffer.extend)
        self._buffer.extend(self.journal.recover())
        self.scheduler = Scheduler(
            cfg.probes,
            self._collected,
            concurrency=cfg.scheduler.concurrency,
            tags=cfg.agent.tags,
            identity_tags=self.identity,
            runlog=self.journal,
        )
        kinds = sorted({e.kind for e in cfg.probes})
        self.publisher = Publisher(cfg, self.spool, config_version=config_version(cfg), capabilities=kinds)
        self.samples_spooled = 0
        self.control: AgentControl | None = None
        if cfg.control is not None:
            from agent.control import AgentControl

            self.control = AgentControl(cfg, self._apply, self.publisher.publish_result, self._control_status)
            self.publisher.on_control = self._on_control
            self._control_status(publish=False)

    def _on_control(self, kind: str, payload: bytes) -> None:
        assert self.control is not None
        if kind == "config":
            asyncio.get_running_loop().create_task(self.control.on_config(payload))
        else:
            self.control.on_command(payload)

    def _control_status(self, publish: bool = True) -> None:
        c = self.control
        assert c is not None
        p = self.publisher
        p.config_version = f"v{c.applied_version}" if c.applied_version else config_version(self.cfg)
        p.config_error, p.control_key = c.error, c.key_id
        if publish:
            p.publish_status()

    async def _apply(self, new: AgentConfig) -> None:
        """Run ``new`` from now on; the scheduler keeps unchanged probes running."""
        started, stopped, kept = await self.scheduler.apply(new.probes)
        self.cfg = new
        log.info("config v%d: %d probes started, %d stopped, %d unchanged", new.pushed_version, started, stopped, kept)

    def _collected(self, samples: list[Sample]) -> None:
        events = [s for s in samples if s.measurement == EVENT]
        if events:
            # Events go out at once, on their own topic, not with the next metrics batch.
            self._spool(events, "events")
            self.publisher.notify()
            samples = [s for s in samples if s.measurement != EVENT]
        self._measured(samples)

    def _measured(self, samples: list[Sample]) -> None:
        """Journal ``samples`` (on disk with this loop turn's group commit) until they are batched."""
        self._buffer.extend(zip(self.journal.record(samples), samples, strict=True))
        if len(self._buffer) >= self.cfg.publish.batch_max_samples:
            self.flush()

    def _spool(self, samples: list[Sample], topic: str, ids: list[int] | None = None) -> None:
        """Batches of ``samples`` into the spool; ``ids``: their journal ids, released with them."""
        limit = self.cfg.publish.batch_max_samples
        a, compress = self.cfg.agent, self.cfg.publish.compress
        for i in range(0, len(samples), limit):
            batch = samples[i : i + limit]
            release = max(ids[i : i + limit]) if ids else 0
            if self._tee is not None:
                # Written before the spool commits, with the batch's number: if the agent dies in
                # between, the next batch reuses the number and supersedes these lines. A batch
                # the disk refused is counted dropped and its number used again by the next one,
                # so the record keeps everything measured (stored or counted as dropped).
                seq = self.spool.next_seq
                self._tee.write(b"".join(orjson.dumps({**x.to_dict(), "seq": seq}) + b"\n" for x in batch))
                self._tee.flush()
                os.fsync(self._tee.fileno())
            spooled = self.spool.put(
                partial(_encode, a.id, a.site, batch, compress), len(batch), topic=topic, release_upto=release
            )
            if spooled is not None:
                self.samples_spooled += len(batch)

    def flush(self) -> None:
        """Cut what is buffered into batches and put them in the spool."""
        if self._buffer:
            self.journal.commit()  # every buffered sample is in the journal before its batch is cut
            rows = self._buffer[:]
            self._buffer.clear()  # the same list: the journal's on_interrupted extends it
            self._spool([s for _, s in rows], "metrics", [i for i, _ in rows])
        dropped_b, dropped_s = self.spool.enforce_caps()
        if dropped_b:
            log.warning(
                "spool full: dropped the %d oldest batches (%d samples) — raise spool.max_bytes/max_age or fix the link",
                dropped_b,
                dropped_s,
            )
        self.publisher.notify()

    def self_sample(self) -> Sample:
        st = self.spool.stats()
        p = self.publisher
        fields: dict[str, int | float | bool | str] = {
            "spool_depth": st.depth,
            "spool_bytes": st.bytes,
            "spool_oldest_s": round(st.oldest_age_s(), 3),
            "dropped_batches": st.dropped_batches,
            "dropped_samples": st.dropped_samples,
            # batches the disk refused (full, I/O error) since start; they are in dropped_* too
            "spool_write_errors": self.spool.write_errors,
            "published_batches": p.published,
            "acked_batches": p.acked,
            "connected": p.connected,
            "draining": p.connected and p.draining,
            "reconnects": max(0, p.connects - 1),
            "probe_runs": self.scheduler.runs,
            "interrupted_runs": st.interrupted_runs,
            "journal_errors": self.journal.errors,
            "unclean_reboots": st.unclean_reboots,
            "probe_overruns": self.scheduler.overruns,
        }
        if p.last_latency_ms is not None:
            fields["publish_latency_ms"] = round(p.last_latency_ms, 3)
        return Sample(HEALTH_MEASUREMENT, dict(self.identity), fields, time.time_ns())

    async def _batcher(self, stop: asyncio.Event) -> None:
        last_self = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.publish.batch_interval)
            now = time.monotonic()
            if now - last_self >= self.cfg.publish.self_metrics_interval:
                self._measured([self.self_sample()])
                last_self = now
            self.flush()

    async def run(self, stop: asyncio.Event, *, drain_timeout_s: float = 5.0) -> None:
        self.flush()  # what an earlier process measured and never batched
        self.publisher.start()
        m = self.cfg.mqtt
        if m.plaintext_off_host:
            log.warning(
                "mqtt.tls is false: the password and all data go to %s in clear / 未加密：口令和数据明文传输",
                m.host,
            )
        log.info(
            "agent %s (site %s): %d probes, publishing to %s:%d as %s",
            self.cfg.agent.id,
            self.cfg.agent.site,
            len(self.cfg.probes),
            m.host,
            m.port,
            self.publisher.topics["metrics"],
        )
        tasks = [
            asyncio.create_task(self.scheduler.run(stop)),
            asyncio.create_task(self.publisher.pump(stop)),
            asyncio.create_task(self._batcher(stop)),
        ]
        try:
            await stop.wait()
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
            self.flush()
            if not await self.publisher.drain(drain_timeout_s):
                st = self.spool.stats()
                log.warning(
                    "stopping with %d batches not yet acknowledged; they stay in the spool %s for next start",
                    st.depth,
                    self.spool.path,
                )
            if self.control is not None:
                await self.control.close()
            self.publisher.stop()
            with contextlib.suppress(sqlite3.Error):
                self.spool.end_session()  # everything measured is batched (flush above)
            self.spool.close()
            if self._tee is not None:
                self._tee.close()
