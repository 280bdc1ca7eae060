"""A hard per-example time limit for the fuzz tests: hypothesis's ``deadline`` reports a slow
example only after it finishes, so one that hangs (a pathological regex, a loop) is stopped by
SIGALRM here, in seconds rather than by the suite's 300 s timeout."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

HANG_S = 10


@contextlib.contextmanager
def hang_guard(seconds: int = HANG_S) -> Iterator[None]:
    """Raise TimeoutError in the test if the block runs longer than ``seconds`` (main thread only)."""

    def _hung(signum: int, frame: Any) -> None:
        raise TimeoutError(f"a fuzz example ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
