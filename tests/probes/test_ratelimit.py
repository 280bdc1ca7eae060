"""probes/ratelimit.py: the token bucket, on a clock the test moves by hand."""

from __future__ import annotations

from probes.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_second_burst_then_the_rate() -> None:
    clock = Clock()  # steps of 1/8 s: exact in binary floating point
    b = TokenBucket(8, clock)  # 8/s, starts full with 8
    assert [b.take(3), b.take(3), b.take(3)] == [True, True, False]  # 8 -> 5 -> 2; 2 < 3
    assert b.tokens == 2
    clock.now += 0.125  # +1 token: 3
    assert not b.take(4)
    clock.now += 0.125  # +1: 4
    assert b.take(4) and b.tokens == 0
    clock.now += 60  # refills to the burst, not beyond
    assert b.take(8) and not b.take(1)


def test_more_than_the_burst_goes_once_the_bucket_is_full_and_leaves_a_debt() -> None:
    clock = Clock()
    b = TokenBucket(10, clock)
    assert b.take(25)  # full (10 >= min(25, 10)): goes, leaving -15
    assert b.tokens == -15
    clock.now += 2.0  # -15 + 20 = 5
    assert not b.take(10)
    clock.now += 0.5  # 5 + 5 = 10: full again
    assert b.take(10)


def test_burst_of_two_seconds_as_the_trap_receiver_uses_it() -> None:
    clock = Clock()
    b = TokenBucket(2, clock, burst=4)
    assert [b.take(1) for _ in range(5)] == [True, True, True, True, False]
    clock.now += 0.25  # half a token
    assert not b.take(1)
    clock.now += 0.25  # one token
    assert b.take(1) and not b.take(1)


def test_zero_rate_means_no_limit() -> None:
    b = TokenBucket(0, Clock())
    assert all(b.take(10**9) for _ in range(3))


def test_the_publishers_drain_rate_in_bytes() -> None:
    """As the agent uses it: bytes per second, payloads of mixed size."""
    clock = Clock()
    b = TokenBucket(1000, clock)
    assert b.take(600) and not b.take(600)  # 400 left
    clock.now += 0.2  # +200
    assert b.take(600)
    assert not b.take(5000)
    clock.now += 10.0  # full again: a payload larger than the burst may go
    assert b.take(5000)
    assert not b.take(1)
    assert TokenBucket(0, clock).take(10**9)  # 0 = no limit
