"""Files that hold what the operator must keep private — spools, databases, keys: 0600, in
folders created 0700. Shared by the agent and the collector."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("netwatch.files")
_warned: set[Path] = set()

#: the files SQLite keeps beside a database in WAL mode (created with the database's mode)
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Make ``path`` (and missing parents) with mode 0700. An existing folder is left as the
    operator set it, with a warning once when others can read it."""
    p = Path(path)
    missing = []
    cur = p
    while not cur.exists():
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
    mode = p.stat().st_mode
    if not missing and mode & (stat.S_IROTH | stat.S_IWOTH) and p not in _warned and p != Path("/tmp"):
        _warned.add(p)
        log.warning("folder %s is readable by other users (mode %o); 0700 is advised", p, stat.S_IMODE(mode))
    return p


def private_file(path: str | os.PathLike[str], *, sqlite: bool = True) -> Path:
    """Create ``path`` empty with mode 0600 if missing (in a private folder); make an existing one
    0600. For a SQLite database also its WAL, shared-memory and journal files, if present."""
    p = Path(path)
    private_dir(p.parent)
    if not p.exists():
        # Only ever opened here when missing: closing a descriptor of a database file this process
        # already has open would drop SQLite's POSIX locks on it (the file would then be shared
        # with other processes unlocked — "How To Corrupt An SQLite Database File", 2.2).
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
        os.close(fd)
    os.chmod(p, 0o600)
    if sqlite:
        for suffix in SQLITE_COMPANIONS:
            companion = p.with_name(p.name + suffix)
            if companion.exists():
                os.chmod(companion, 0o600)
    return p
