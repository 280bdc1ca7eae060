"""Scaling raw device numbers (tenths of a volt, hundredths of a degree) into readings."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=256)
def exact_divisor(scale: float) -> float:
    """N when ``scale`` is 1/N for a whole N (0.1, 0.01, 0.5), else 0. Dividing by 10 gives the
    double nearest to the decimal reading (152 -> 15.2), where multiplying by 0.1 gives
    15.200000000000001 — which is what an operator would then see in a table or a graph."""
    if not 0 < scale < 1:
        return 0.0
    n = 1.0 / scale
    return float(round(n)) if abs(n - round(n)) < 1e-9 else 0.0


def scaled(n: int | float, scale: float) -> float:
    """``n`` × ``scale``, by division where the scale is 1/N (see :func:`exact_divisor`)."""
    divisor = exact_divisor(scale)
    return n / divisor if divisor else n * scale
