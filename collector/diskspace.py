"""Free space on the collector's own disks. Below ``collector.min_free`` the collector stops
taking messages: they stay unacknowledged at the broker (QoS 1, persistent session) until
there is room again, and the reserve left is what the alert and the counters are written with."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

#: SQLite's words for "the disk is full" (SQLITE_FULL), as they reach us in a store's error
DISK_FULL_WORDS = ("database or disk is full", "no space left on device")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says the disk is full."""
    e: BaseException | None = err
    while e is not None:
        text = str(e).lower()
        if any(w in text for w in DISK_FULL_WORDS):
            return True
        e = e.__cause__
    return False


class DiskGuard:
    """The free bytes on the filesystems holding ``paths`` (directories; the nearest existing
    parent is measured), against the reserve ``min_free``."""

    def __init__(self, paths: Iterable[Path], min_free: int) -> None:
        self.paths = sorted({Path(p) for p in paths})
        self.min_free = min_free
        #: a store said the disk is full (set by the pipeline, cleared when a write succeeds)
        self.store_full = False

    def free_bytes(self) -> int:
        """The least free space (for an unprivileged process) over the paths; -1 if none can be measured."""
        least = -1
        for p in self.paths:
            while not p.exists() and p != p.parent:
                p = p.parent
            try:
                st = os.statvfs(p)
            except OSError:
                continue
            free = st.f_bavail * st.f_frsize
            least = free if least < 0 else min(least, free)
        return least

    def low(self) -> int | None:
        """The free bytes when below the reserve, else None."""
        free = self.free_bytes()
        return free if 0 <= free < self.min_free else None

    @property
    def full(self) -> bool:
        return self.store_full or self.low() is not None
