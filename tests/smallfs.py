"""A small real filesystem for full-disk tests: a size-limited tmpfs the test mounts (root only)
and a filler file it controls — ``fill()`` takes the space, ``free()`` gives it back."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHUNK = 64 * 1024


class SmallFs:
    def __init__(self, path: Path, size: str = "2m") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        self.filler = path / ".filler"

    def available(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> int:
        """Grow the filler until fewer than ``leave`` + 4 KiB bytes are free (0: until ENOSPC);
        returns the bytes left free."""
        with open(self.filler, "ab", buffering=0) as f:
            for _ in range(1_000_000):  # bounded: a 2 MiB fs takes ~32 chunks
                room = self.available() - leave
                if room <= 4096 if leave else room <= 0:
                    break
                n = min(CHUNK, room - 2048) if leave else CHUNK
                try:
                    f.write(b"\0" * max(512, n))
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
        return self.available()

    def free(self) -> None:
        """Delete the filler: the space returns."""
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def close(self) -> None:
        r = subprocess.run(["umount", str(self.path)], capture_output=True)
        if r.returncode != 0:  # a process we started still holds a file open: detach it lazily
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@contextlib.contextmanager
def small_fs(path: Path, size: str = "2m") -> Iterator[SmallFs]:
    fs = SmallFs(path, size)
    try:
        yield fs
    finally:
        fs.close()


def integrity(path: Path) -> str:
    """SQLite's own verdict on a database file after a write the disk refused ("ok" when intact)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()
