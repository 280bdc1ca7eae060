"""Scaling raw numbers: a scale of 1/N divides, so tenths and hundredths read as their decimals."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from probes.scaling import exact_divisor, scaled


def test_exact_divisors() -> None:
    assert (exact_divisor(0.1), exact_divisor(0.01), exact_divisor(0.001), exact_divisor(0.5)) == (10, 100, 1000, 2)
    # not 1/N for a whole N, or not a fraction: multiplied as given
    assert [exact_divisor(s) for s in (0.3, 0.15, 1.0, 8.0, 0.0, -0.1)] == [0.0] * 6


def test_the_case_that_shows() -> None:
    assert 152 * 0.1 == 15.200000000000001  # what multiplying gives
    assert scaled(152, 0.1) == 15.2


@given(st.integers(-(2**53), 2**53), st.sampled_from([1, 2, 3]))
def test_tenths_to_thousandths_are_the_nearest_double_to_the_decimal(n: int, places: int) -> None:
    # Decimal arithmetic is the oracle: the exact decimal, rounded once to a double.
    assert scaled(n, 10.0**-places) == float(Decimal(n).scaleb(-places))


@given(st.integers(-(2**31), 2**31), st.sampled_from([8.0, 0.3, 1.5, 1000.0]))
def test_other_scales_multiply(n: int, scale: float) -> None:
    assert scaled(n, scale) == n * scale
