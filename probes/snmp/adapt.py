"""How hard to push one device: ``Adaptive`` measures each request's round trip and backs off —
fewer requests in flight (down to one), a retransmission timeout from the measured round trip,
smaller GETBULKs after tooBig or timeouts — and remembers what worked, for that device, from one
poll to the next (it lives as long as the probe; nothing is written to disk: a restarted agent
learns it again within one poll).

The timeout is TCP's (RFC 6298): after the first answer SRTT = R, RTTVAR = R/2; then
RTTVAR = ¾·RTTVAR + ¼·|SRTT − R|, SRTT = ⅞·SRTT + ⅛·R; RTO = SRTT + 4·RTTVAR, never below the
configured ``request_timeout`` (the operator's known-good value is the floor: a shorter wait only
adds retransmissions, which a slow agent must also answer) nor above ``MAX_RTO_S``. A timed-out
attempt doubles RTO (Karn: answers to retransmitted requests are not measured). Requests sent
before the last back-off do not back off again when they time out too — one reaction per burst,
as TCP reacts once per window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

#: RTO never exceeds this (seconds), nor the configured timeout if that is longer.
MAX_RTO_S = 30.0
#: Clean polls (no timeout, no tooBig) before one step back towards the configured settings.
GROW_AFTER_POLLS = 10
#: GETBULK rows are not cut below this after timeouts (tooBig may cut further: it is exact).
MIN_REPS_AFTER_TIMEOUT = 5


@dataclass(frozen=True, slots=True)
class Settings:
    """What the adaptive state currently asks of one device."""

    in_flight: int
    rto_s: float
    max_repetitions: int


class Adaptive:
    """Per-device request pacing. Sessions report every answer (``answered``), timed-out attempt
    (``timed_out``) and tooBig (``too_big``); the poller reads ``in_flight`` and
    ``max_repetitions`` and calls ``poll_done`` after each poll."""

    def __init__(
        self,
        *,
        timeout_s: float,
        max_in_flight: int,
        max_repetitions: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg_timeout_s = timeout_s
        self.cfg_in_flight = max(1, max_in_flight)
        self.cfg_repetitions = max(1, max_repetitions)
        self.max_rto_s = max(MAX_RTO_S, timeout_s)
        self.clock = clock
        self.wall = wall
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto_s = timeout_s
        self.in_flight = self.cfg_in_flight
        self.max_repetitions = self.cfg_repetitions
        #: tooBig is exact: the answer did not fit; never grow back above what last fitted
        self.reps_fit = self.cfg_repetitions
        #: bumped at every back-off; attempts sent before it do not back off again
        self.epoch = 0
        self.timeouts = 0
        self.too_bigs = 0
        self._poll_trouble = False
        self._clean_polls = 0
        #: wall-clock time of the first back-off (``None`` while on the configured settings)
        self.since: float | None = None

    # -- what the sessions report ---------------------------------------------------------------

    def answered(self, rtt_s: float, *, retransmitted: bool = False) -> None:
        """An answer ``rtt_s`` after its (first) send. Answers to retransmitted requests are not
        measured (Karn's rule: which send did it answer?)."""
        if retransmitted or rtt_s < 0:
            return
        if self.srtt is None:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt_s)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt_s
        self.rto_s = min(self.max_rto_s, max(self.cfg_timeout_s, self.srtt + 4 * self.rttvar))

    def timed_out(self, epoch: int, *, bulk_reps: int = 0) -> None:
        """An attempt sent at ``epoch`` got no answer within its RTO. A device that never answered
        is not paced (it may be dead: its cost stays ``request_timeout × (retries + 1)``)."""
        if self.srtt is None:
            return  # never answered: maybe dead, maybe the wrong community — nothing to pace yet
        self.timeouts += 1
        self._poll_trouble = True
        if epoch != self.epoch:
            return  # this burst was reacted to already
        self.epoch += 1
        self.rto_s = min(self.max_rto_s, self.rto_s * 2)
        if self.in_flight > 1:
            self.in_flight = max(1, self.in_flight // 2)
        elif bulk_reps > MIN_REPS_AFTER_TIMEOUT:
            # One request at a time and still no answer: maybe the answer is too large to arrive.
            self.max_repetitions = max(MIN_REPS_AFTER_TIMEOUT, min(self.max_repetitions, bulk_reps) // 2)
        self._mark()

    def too_big(self, reps: int) -> None:
        """The device answered tooBig to a GETBULK of ``reps`` rows: ask for half from now on."""
        self.too_bigs += 1
        self._poll_trouble = True
        half = max(1, reps // 2)
        if half < self.reps_fit:
            self.reps_fit = half
        if half < self.max_repetitions:
            self.max_repetitions = half
            self._mark()

    def poll_done(self) -> None:
        """After each poll: after ``GROW_AFTER_POLLS`` clean polls in a row, one step back towards
        the configured settings (one more request in flight, or twice the rows per GETBULK)."""
        trouble, self._poll_trouble = self._poll_trouble, False
        if trouble:
            self._clean_polls = 0
        else:
            self._clean_polls += 1
            if self._clean_polls >= GROW_AFTER_POLLS and self.adapted:
                self._clean_polls = 0
                if self.in_flight < self.cfg_in_flight:
                    self.in_flight += 1
                elif self.max_repetitions < min(self.cfg_repetitions, self.reps_fit):
                    self.max_repetitions = min(self.cfg_repetitions, self.reps_fit, self.max_repetitions * 2)
        if not self.adapted:
            self.since = None
        else:
            self._mark()  # e.g. the round trip alone grew the timeout past the configured one

    def _mark(self) -> None:
        if self.since is None:
            self.since = self.wall()

    # -- what the poller reads ------------------------------------------------------------------

    def in_flight_now(self) -> int:
        return self.in_flight

    @property
    def settings(self) -> Settings:
        return Settings(self.in_flight, self.rto_s, self.max_repetitions)

    @property
    def adapted(self) -> bool:
        """Running on settings other than the configured ones (RTO above the configured timeout
        counts: the device is slower than the configuration assumed)."""
        return (
            self.in_flight < self.cfg_in_flight
            or self.max_repetitions < self.cfg_repetitions
            or self.rto_s > self.cfg_timeout_s * 1.05
        )

    def describe(self) -> str:
        """One line for ``probe_status``'s ``adapted`` field; empty on the configured settings."""
        if not self.adapted:
            return ""
        parts = []
        if self.in_flight < self.cfg_in_flight:
            parts.append(
                f"{self.in_flight} request{'s' if self.in_flight > 1 else ''} in flight (configured {self.cfg_in_flight})"
            )
        if self.rto_s > self.cfg_timeout_s * 1.05:
            rtt = f"round trip {self.srtt:.2f} s ± {self.rttvar:.2f}" if self.srtt is not None else "no round trip yet"
            parts.append(f"timeout {self.rto_s:.1f} s from {rtt} (configured {self.cfg_timeout_s:g} s)")
        if self.max_repetitions < self.cfg_repetitions:
            parts.append(f"{self.max_repetitions} rows per GETBULK (configured {self.cfg_repetitions})")
        why = []
        if self.timeouts:
            why.append(f"{self.timeouts} timeout{'s' if self.timeouts > 1 else ''}")
        if self.too_bigs:
            why.append(f"{self.too_bigs} tooBig")
        since = ""
        if self.since is not None:
            since = " since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return (
            "slow device: "
            + ", ".join(parts)
            + (f"{since} after {' and '.join(why)}" if why else since)
            + " — it steps back towards the configured settings after "
            + f"{GROW_AFTER_POLLS} clean polls"
        )


class Gate:
    """At most ``limit()`` holders at once; the limit is read again whenever a holder leaves, so a
    device that backs off takes effect at the next request. Bound to the event loop it is used on."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._active = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def __aenter__(self) -> None:
        while self._active >= max(1, self._limit()):
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        self._active += 1

    async def __aexit__(self, *exc: object) -> None:
        self._active -= 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:  # all of them check the (maybe lower) limit again
            if not fut.done():
                fut.set_result(None)
