"""Per-device pacing (probes/snmp/adapt.py) in arithmetic worked by hand from RFC 6298, and the
session's use of it: tooBig remembered across walks, the request gate never exceeding the
device's current in-flight limit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from probes.snmp.adapt import GROW_AFTER_POLLS, MAX_RTO_S, Adaptive, Gate
from probes.snmp.session import TOO_BIG, PduKind, Response, Session, TypedValue, VarBind


def fresh(timeout_s: float = 2.0, in_flight: int = 4, reps: int = 25) -> Adaptive:
    return Adaptive(timeout_s=timeout_s, max_in_flight=in_flight, max_repetitions=reps, wall=lambda: 0.0)


def test_rto_follows_rfc_6298_with_the_configured_timeout_as_floor() -> None:
    a = fresh()
    a.answered(1.0)
    # first sample: SRTT = 1, RTTVAR = 0.5, RTO = 1 + 4·0.5 = 3.0 (above the 2 s floor)
    assert (a.srtt, a.rttvar, a.rto_s) == (1.0, 0.5, 3.0)
    a.answered(2.0)
    # RTTVAR = 0.75·0.5 + 0.25·|1 − 2| = 0.625; SRTT = 0.875·1 + 0.125·2 = 1.125; RTO = 1.125 + 2.5
    assert a.rttvar == pytest.approx(0.625) and a.srtt == pytest.approx(1.125)
    assert a.rto_s == pytest.approx(3.625)
    fast = fresh()
    for _ in range(30):
        fast.answered(0.01)  # a quick device never gets a timeout below the configured one
    assert fast.rto_s == 2.0 and not fast.adapted and fast.describe() == ""


def test_an_answer_to_a_retransmission_is_not_measured() -> None:
    a = fresh()
    a.answered(5.0, retransmitted=True)
    assert a.srtt is None and a.rto_s == 2.0


def test_a_device_that_never_answered_is_not_paced() -> None:
    a = fresh()
    a.timed_out(a.epoch)
    assert (a.in_flight, a.rto_s, a.timeouts) == (4, 2.0, 0)


def test_timeouts_halve_in_flight_and_double_rto_once_per_burst() -> None:
    a = fresh()
    a.answered(1.0)  # RTO 3
    burst = a.epoch
    for _ in range(3):  # three requests of the same burst time out together
        a.timed_out(burst)
    assert (a.in_flight, a.rto_s, a.timeouts) == (2, 6.0, 3)
    a.timed_out(a.epoch)  # a later one reacts again
    assert (a.in_flight, a.rto_s) == (1, 12.0)
    a.timed_out(a.epoch, bulk_reps=25)  # one at a time and still lost: smaller answers
    assert (a.in_flight, a.rto_s, a.max_repetitions) == (1, 24.0, 12)
    a.timed_out(a.epoch, bulk_reps=12)
    assert a.rto_s == MAX_RTO_S and a.max_repetitions == 6
    text = a.describe()
    for part in ("1 request in flight (configured 4)", "(configured 2 s)", "6 rows per GETBULK (configured 25)",
                 "6 timeouts", "since 1970-01-01 00:00:00 UTC"):  # fmt: skip
        assert part in text, text


def test_clean_polls_step_back_towards_the_configuration_but_not_past_a_toobig() -> None:
    a = fresh(reps=40)
    a.answered(0.1)
    a.timed_out(a.epoch)
    a.timed_out(a.epoch)
    a.too_big(40)  # 20 fitted no longer... asks 20 from now on
    assert (a.in_flight, a.max_repetitions) == (1, 20)
    a.poll_done()  # the poll with the trouble
    for _ in range(GROW_AFTER_POLLS - 1):
        a.poll_done()
    assert a.in_flight == 1
    a.poll_done()
    assert a.in_flight == 2
    for _ in range(2 * GROW_AFTER_POLLS):
        a.poll_done()
    assert a.in_flight == 4
    for _ in range(3 * GROW_AFTER_POLLS):
        a.poll_done()
    assert a.max_repetitions == 20  # tooBig is exact: never grown back above what fitted


class _Table:
    """A transport over one column of ``rows`` rows that answers tooBig above ``fits`` rows and
    counts what is outstanding at once."""

    version = "2c"
    where = "fake:161"

    def __init__(self, rows: int, fits: int, delay_s: float = 0.0) -> None:
        self.rows = [(f"1.3.6.1.2.1.2.2.1.2.{i}", "OctetString", b"x") for i in range(1, rows + 1)]
        self.fits = fits
        self.delay_s = delay_s
        self.asked: list[int] = []
        self.outstanding = 0
        self.most = 0

    async def request(
        self, kind: PduKind, oids: Sequence[str], max_repetitions: int = 0, values: Sequence[TypedValue] = ()
    ) -> Response:
        self.outstanding += 1
        self.most = max(self.most, self.outstanding)
        try:
            await asyncio.sleep(self.delay_s)
            self.asked.append(max_repetitions)
            if max_repetitions > self.fits:
                return Response(TOO_BIG, 0, [])
            after = [vb for vb in self.rows if tuple(map(int, vb[0].split("."))) > tuple(map(int, oids[0].split(".")))]
            out: list[VarBind] = after[:max_repetitions]
            if len(out) < max_repetitions:
                out.append(("1.3.6.1.2.1.2.2.1.3.1", "Integer", 6))
            return Response(0, 0, out)
        finally:
            self.outstanding -= 1

    async def close(self) -> None:
        pass


def test_toobig_is_remembered_for_the_next_walk() -> None:
    t = _Table(rows=30, fits=10)
    a = fresh(reps=40)
    s = Session(t, max_repetitions=40, adaptive=a)
    assert len(asyncio.run(s.walk("1.3.6.1.2.1.2.2.1.2"))) == 30
    assert t.asked[:3] == [40, 20, 10] and a.max_repetitions == 10 and a.too_bigs == 2
    t.asked.clear()
    assert len(asyncio.run(s.walk("1.3.6.1.2.1.2.2.1.2"))) == 30
    assert set(t.asked) == {10}  # no tooBig the second time


def test_the_gate_holds_requests_to_the_current_limit() -> None:
    t = _Table(rows=5, fits=50, delay_s=0.01)
    a = fresh(in_flight=3)
    s = Session(t, adaptive=a)

    async def run() -> None:
        await asyncio.gather(*(s.walk("1.3.6.1.2.1.2.2.1.2") for _ in range(8)))
        assert t.most == 3
        a.in_flight = 1
        t.most = 0
        await asyncio.gather(*(s.walk("1.3.6.1.2.1.2.2.1.2") for _ in range(4)))
        assert t.most == 1

    asyncio.run(run())


def test_the_gate_lets_a_cancelled_waiter_go() -> None:
    async def run() -> None:
        gate = Gate(lambda: 1)
        async with gate:
            waiter = asyncio.ensure_future(gate.__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with gate:  # the slot is free again
            pass

    asyncio.run(asyncio.wait_for(run(), 2))


def test_a_long_round_trip_alone_shows_and_clears() -> None:
    a = fresh()
    a.answered(1.5)  # SRTT 1.5, RTTVAR 0.75: RTO 4.5 s, above the configured 2 s
    a.poll_done()
    assert a.describe().startswith(
        "slow device: timeout 4.5 s from round trip 1.50 s ± 0.75 (configured 2 s) since 1970-01-01 00:00:00 UTC"
    )
    assert "in flight" not in a.describe()
    for _ in range(60):  # the device recovers: RTO back to the configured floor
        a.answered(0.01)
    a.poll_done()
    assert a.rto_s == 2.0 and a.since is None and a.describe() == ""
