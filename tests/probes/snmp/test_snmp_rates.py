"""Rate maths as pure functions: counter deltas across Counter32/Counter64 wrap, resets, reboots,
rates and percentages — property-based where the inputs are wide."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probes.snmp.rates import (
    COUNTER32_MOD,
    COUNTER64_MOD,
    counter_delta,
    counter_rate,
    percent,
    rate,
    rebooted,
)

c32 = st.integers(0, COUNTER32_MOD - 1)
c64 = st.integers(0, COUNTER64_MOD - 1)
seconds = st.floats(0.001, 86400 * 7, allow_nan=False)


@given(c32, st.integers(0, COUNTER32_MOD - 1))
def test_counter32_delta_is_the_distance_travelled_including_one_wrap(prev: int, travelled: int) -> None:
    cur = (prev + travelled) % COUNTER32_MOD
    assert counter_delta(prev, cur, 32) == travelled


@given(st.integers(COUNTER64_MOD // 2, COUNTER64_MOD - 1), st.integers(0, COUNTER64_MOD // 2 - 1))
def test_counter64_near_its_top_wraps(prev: int, travelled: int) -> None:
    cur = (prev + travelled) % COUNTER64_MOD
    assert counter_delta(prev, cur, 64) == travelled


@given(st.integers(1, COUNTER64_MOD // 2 - 1), st.data())
def test_counter64_going_down_from_its_lower_half_is_a_reset_not_a_wrap(prev: int, data: st.DataObject) -> None:
    cur = data.draw(st.integers(0, prev - 1))
    assert counter_delta(prev, cur, 64) is None


@given(c64, c64)
def test_a_counter_that_did_not_go_down_moved_by_the_difference(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert counter_delta(lo, hi, 64) == hi - lo
    if hi < COUNTER32_MOD:
        assert counter_delta(lo, hi, 32) == hi - lo


@given(c64, c64)
def test_a_delta_is_never_negative(a: int, b: int) -> None:
    for bits in (32, 64):
        d = counter_delta(a, b, bits)
        assert d is None or d >= 0


def test_out_of_range_readings_give_no_delta() -> None:
    assert counter_delta(-1, 5, 32) is None
    assert counter_delta(COUNTER32_MOD + 5, 3, 32) is None  # not a Counter32 after all


@given(st.integers(0, 10**15), seconds, st.sampled_from([1.0, 8.0]))
def test_rate_is_delta_per_second_scaled(delta: int, secs: float, scale: float) -> None:
    value = rate(delta, secs, scale)
    assert value is not None and math.isclose(value, delta * scale / secs)


@pytest.mark.parametrize("secs", [0.0, -1.0, math.nan, math.inf])
def test_no_rate_without_a_positive_finite_interval(secs: float) -> None:
    assert rate(100, secs) is None
    assert rate(None, 10.0) is None


@given(c32, st.integers(0, COUNTER32_MOD - 1), seconds)
def test_counter_rate_of_octets_in_bits(prev: int, travelled: int, secs: float) -> None:
    cur = (prev + travelled) % COUNTER32_MOD
    value = counter_rate(prev, 100.0, cur, 100.0 + secs, bits=32, scale=8)
    assert value is not None and math.isclose(value, travelled * 8 / secs)


def test_counter_rate_above_the_limit_is_a_reset_dressed_as_a_wrap() -> None:
    # A 100 Mb/s port whose Counter32 was cleared from 4000 to 3000: "wrapped" it would mean ~572 Mb/s.
    assert counter_rate(4000, 0.0, 3000, 60.0, bits=32, scale=8, limit=2 * 100e6) is None
    # The same arithmetic under the limit is a wrap.
    assert counter_rate(COUNTER32_MOD - 1000, 0.0, 4000, 60.0, bits=32, scale=8, limit=2 * 100e6) == pytest.approx(
        5000 * 8 / 60
    )
    # No limit known (speed 0): no check.
    assert counter_rate(4000, 0.0, 3000, 60.0, bits=32, scale=8, limit=None) is not None


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_reboot_is_uptime_going_back(prev: int, cur: int) -> None:
    assert rebooted(prev, cur) is (cur < prev)
    assert rebooted(None, cur) is False
    assert rebooted(prev, None) is False


@given(st.floats(0, 1e12, allow_nan=False), st.floats(1e-3, 1e12, allow_nan=False), st.floats(1e-6, 1e6))
def test_percent_of_a_scaled_whole(part: float, whole: float, scale: float) -> None:
    value = percent(part, whole, scale)
    assert value is not None and math.isclose(value, part * 100 / (whole * scale), rel_tol=1e-9)


@pytest.mark.parametrize(("part", "whole"), [(5.0, 0.0), (5.0, -1.0), (None, 10.0), (5.0, None)])
def test_no_percent_of_an_unknown_or_zero_whole(part: float | None, whole: float | None) -> None:
    assert percent(part, whole) is None
