"""Backup and restore of the centre: its databases (agents and state, alerts, audit log, users),
its keys, and the files that define it (this config, the desired agent configs, the topology, the
rules). A backup is one ``.tar.gz`` (0600) with a manifest of SHA-256 sums; a restore checks the
sums, puts everything back (0600 in 0700 folders) and verifies the audit log's chain and
signatures — a backup whose audit log was tampered with is reported as such.

Databases are copied with SQLite's online backup, so a running collector can be backed up.
Metrics (metrics.db) are not included: they are the time-series store's business and can be large.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import orjson

from collector.config import CollectorConfig
from probes.files import private_dir, private_file

DATABASES = ("state.db", "alerts.db", "audit.db", "users.db")
MANIFEST = "manifest.json"


class BackupError(Exception):
    """A backup that cannot be made or restored; ``str()`` says why."""


@dataclass
class Manifest:
    created_ns: int
    collector: str
    files: dict[str, str] = field(default_factory=dict)  # archive name -> sha256

    def encode(self) -> bytes:
        return orjson.dumps(
            {"created_ns": self.created_ns, "collector": self.collector, "files": self.files},
            option=orjson.OPT_INDENT_2,
        )


def _sources(cfg: CollectorConfig) -> Iterator[tuple[str, Path]]:
    """(name in the archive, path on disk) of every file that defines the centre, besides the DBs."""
    keys = cfg.data_dir / "keys"
    if keys.is_dir():
        for p in sorted(keys.iterdir()):
            if p.is_file():
                yield f"data/keys/{p.name}", p
    if cfg.path is not None:
        yield "etc/collector.yaml", cfg.path
    if cfg.topology is not None:
        yield f"etc/{cfg.topology.name}", cfg.topology
    if cfg.alerting is not None:
        yield f"etc/{cfg.alerting.rules.name}", Path(cfg.alerting.rules)
    folder = cfg.control.configs
    if folder is not None and folder.is_dir():
        for p in sorted(folder.rglob("*.yaml")):
            yield f"etc/desired/{p.relative_to(folder).as_posix()}", p


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def backup(cfg: CollectorConfig, dest: Path) -> Manifest:
    """Write the centre's backup to ``dest`` (.tar.gz, 0600)."""
    manifest = Manifest(time.time_ns(), cfg.collector.id)
    with tempfile.TemporaryDirectory(prefix="netwatch-backup-") as tmp:
        staged: list[tuple[str, Path]] = []
        for name in DATABASES:
            src = cfg.data_dir / name
            if not src.exists():
                continue
            out = Path(tmp) / name
            s = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
            d = sqlite3.connect(out)
            try:
                s.backup(d)  # a consistent copy while the collector writes
            finally:
                d.close()
                s.close()
            staged.append((f"data/{name}", out))
        staged += list(_sources(cfg))
        private_file(dest, sqlite=False)
        with tarfile.open(dest, "w:gz") as tar:
            for name, path in staged:
                manifest.files[name] = _sha(path)
                tar.add(path, arcname=name, recursive=False)
            data = manifest.encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    os.chmod(dest, 0o600)
    return manifest


def _safe(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] not in ("data", "etc", MANIFEST):
        raise BackupError(f"unexpected member {name!r} in the backup: refusing it")
    return p


@dataclass
class Restored:
    manifest: Manifest
    data_dir: Path
    etc_dir: Path
    files: int


def restore(src: Path, data_dir: Path, etc_dir: Path, *, force: bool = False) -> Restored:
    """Put a backup back: databases and keys into ``data_dir``, the defining files into ``etc_dir``
    (to be reviewed and moved where they belong). Refuses a non-empty ``data_dir`` unless ``force``."""
    if data_dir.exists() and any(p.name in DATABASES for p in data_dir.iterdir()) and not force:
        raise BackupError(f"{data_dir} already holds a collector's databases: stop it and give --force to replace them")
    try:
        tar = tarfile.open(src, "r:gz")  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"{src}: not a netwatch backup: {e}") from None
    with tar, tempfile.TemporaryDirectory(prefix="netwatch-restore-") as tmp:
        members = tar.getmembers()
        for m in members:
            _safe(m.name)
            if not m.isfile():
                raise BackupError(f"unexpected member {m.name!r} (not a file) in the backup")
        try:
            raw = tar.extractfile(MANIFEST)
            assert raw is not None
            doc = orjson.loads(raw.read())
        except (KeyError, AssertionError, orjson.JSONDecodeError):
            raise BackupError(f"{src}: no readable manifest") from None
        manifest = Manifest(int(doc["created_ns"]), str(doc["collector"]), dict(doc["files"]))
        tar.extractall(tmp, members=[m for m in members if m.name != MANIFEST], filter="data")
        problems = []
        for name, sha in manifest.files.items():
            p = Path(tmp) / name
            if not p.is_file():
                problems.append(f"{name}: missing")
            elif _sha(p) != sha:
                problems.append(f"{name}: changed since the backup was made")
        extra = {m.name for m in members} - set(manifest.files) - {MANIFEST}
        problems += [f"{n}: not in the manifest" for n in sorted(extra)]
        if problems:
            raise BackupError("the backup does not match its manifest: " + "; ".join(problems))
        private_dir(data_dir)
        private_dir(etc_dir)
        count = 0
        for name in manifest.files:
            rel = PurePosixPath(name)
            base = data_dir if rel.parts[0] == "data" else etc_dir
            dest = base.joinpath(*rel.parts[1:])
            private_dir(dest.parent)
            for suffix in ("-wal", "-shm"):
                stale = dest.with_name(dest.name + suffix)
                if stale.exists():
                    stale.unlink()
            shutil.copyfile(Path(tmp) / name, dest)
            os.chmod(dest, 0o600)
            count += 1
    return Restored(manifest, data_dir, etc_dir, count)
