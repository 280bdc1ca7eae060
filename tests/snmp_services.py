"""SNMP peers for tests, on loopback: ONE snmpsim serving the snmpsim-data recordings (cut to what
netwatch reads, cached across runs) and the tests' own recordings; net-snmp ``snmpd`` with SNMPv3
users; a UDP socket that never answers. Each is stopped by its PID, even when a test fails.

snmpsim facts, checked against 1.2.2: it indexes every line of every recording before it answers,
about 16k lines/s into dbm.dumb files (the only dbm this Python has), and serves ~6k varbinds/s;
hence the cut recordings and the index kept between runs (in ``$NETWATCH_TEST_CACHE``, default
``var/cache`` in the repo), built under a file lock so concurrent runs do not both write it.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from services import Service, find_binary

from configs.demo import sim_snmp

ROOT = Path(__file__).resolve().parents[1]
#: The snmpsim-data folders of switches, routers, firewalls, UPSes and their kin.
CATEGORIES = (
    "network/switch",
    "network/router",
    "network/firewall",
    "UPS",
    "network/appliance",
    "network/wifi",
    "cloud",
)
#: Bump when trim_recording's output changes, so cached cuts are rebuilt.
TRIM_VERSION = "1"


def free_udp_port() -> int:
    """A UDP port nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def recording_names(categories: Iterable[str] = CATEGORIES) -> list[str]:
    """Every recording in those folders, as its community (path without extension)."""
    out = []
    for cat in categories:
        for f in sorted((sim_snmp.RECORDINGS / cat).glob("*.snmprec*")):
            out.append(str(f.relative_to(sim_snmp.RECORDINGS)).split(".snmprec")[0])
    return out


def cache_root() -> Path:
    return Path(os.environ.get("NETWATCH_TEST_CACHE", ROOT / "var" / "cache")) / "snmp-recordings"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _trim_one(args: tuple[str, str, tuple[str, ...]]) -> tuple[str, int]:
    name, dst, prefixes = args
    return name, sim_snmp.trim_recording(sim_snmp.recording_path(name), Path(dst), prefixes)


@dataclass(frozen=True, slots=True)
class RecordingSet:
    """Cut recordings on disk: ``data_dir/<community>.snmprec`` and snmpsim's index beside it."""

    root: Path
    names: tuple[str, ...]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def lock(self) -> Path:
        return self.root.with_suffix(".lock")

    def path(self, name: str) -> Path:
        return self.data_dir / f"{name}.snmprec"


def prepare_recordings(names: Sequence[str], prefixes: Iterable[str], *, workers: int = 2) -> RecordingSet:
    """Cut each recording to the lines under ``prefixes`` (done once; later runs find them)."""
    keep = tuple(sorted(set(prefixes)))
    version = metadata.version("snmpsim-data")
    key = hashlib.sha256("\n".join([TRIM_VERSION, version, *keep, "", *names]).encode()).hexdigest()[:16]
    rec = RecordingSet(cache_root() / key, tuple(names))
    with locked(rec.lock):
        todo = [(n, str(rec.path(n)), keep) for n in names if not rec.path(n).exists()]
        # Largest first, so the two workers finish together.
        todo.sort(key=lambda t: -sim_snmp.recording_path(t[0]).stat().st_size)
        if len(todo) > 1 and workers > 1:
            with ProcessPoolExecutor(min(workers, len(todo))) as pool:
                list(pool.map(_trim_one, todo))
        else:
            for job in todo:
                _trim_one(job)
    return rec


def prepare_full_recordings(names: Sequence[str]) -> RecordingSet:
    """Each recording whole, as plain .snmprec (snmpsim-data ships most as .bz2), under the cache:
    every subtree the device answered, not only what the profiles read. Done once; snmpsim's index of
    them is kept beside them like the cut ones'."""
    version = metadata.version("snmpsim-data")
    key = hashlib.sha256("\n".join(["full", version, *names]).encode()).hexdigest()[:16]
    rec = RecordingSet(cache_root() / f"full-{key}", tuple(names))
    with locked(rec.lock):
        for name in names:
            dst = rec.path(name)
            if dst.exists():
                continue
            src = sim_snmp.recording_path(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            opener = bz2.open if src.suffix == ".bz2" else open
            with opener(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            os.replace(tmp, dst)
    return rec


def write_if_changed(path: Path, text: str) -> None:
    """Keep the file's mtime when its content is the same: snmpsim re-indexes changed files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


class Snmpsim(Service):
    """ONE snmpsim-command-responder serving every file under ``data_dir`` (community = path)."""

    name = "snmpsim"

    def __init__(self, workdir: Path, port: int, data_dir: Path, index_dir: Path, ready_community: str) -> None:
        super().__init__(workdir, "127.0.0.1", port)
        self.data_dir = data_dir
        self.index_dir = index_dir
        self.ready_community = ready_community
        index_dir.mkdir(parents=True, exist_ok=True)
        self.env_binary = find_binary("env", "NETWATCH_ENV", "/usr/bin/env")

    def argv(self) -> list[str]:
        # `env` execs snmpsim in place (same PID), passing SNMPSIM_ALLOW_ROOT for root runs.
        return [
            self.env_binary,
            "SNMPSIM_ALLOW_ROOT=true",
            *sim_snmp.snmpsim_argv(self.data_dir, self.index_dir, self.port),
        ]

    def wait_ready(self, timeout_s: float) -> None:
        sim_snmp.wait_for_agent(self.port, self.ready_community, timeout_s=timeout_s, proc=self.proc)


@dataclass(frozen=True, slots=True)
class V3User:
    name: str
    auth_proto: str | None = None  # net-snmp spelling: SHA, SHA-512, MD5...
    auth_key: str | None = None
    priv_proto: str | None = None  # DES, AES, AES-256...
    priv_key: str | None = None

    @property
    def level(self) -> str:
        if self.priv_proto:
            return "authPriv"
        return "authNoPriv" if self.auth_proto else "noauth"

    def create_line(self) -> str:
        parts = ["createUser", self.name]
        if self.auth_proto:
            parts += [self.auth_proto, f'"{self.auth_key}"']
        if self.priv_proto:
            parts += [self.priv_proto, f'"{self.priv_key}"']
        return " ".join(parts)


class Snmpd(Service):
    """net-snmp snmpd on 127.0.0.1 with the given v3 users (and community ``public`` for the
    readiness check), its own persistent directory, no SMUX."""

    name = "snmpd"

    def __init__(self, workdir: Path, port: int, users: Sequence[V3User]) -> None:
        super().__init__(workdir, "127.0.0.1", port)
        self.binary = find_binary("snmpd", "NETWATCH_SNMPD", "/usr/sbin/snmpd")
        self.env_binary = find_binary("env", "NETWATCH_ENV", "/usr/bin/env")
        self.users = {u.name: u for u in users}
        self.config_path = workdir / "snmpd.conf"
        persist = workdir / "persist"
        shutil.rmtree(persist, ignore_errors=True)  # createUser lines apply on a fresh store only
        lines = [
            "# netwatch test agent (generated by tests/snmp_services.py)",
            f"[snmp] persistentDir {persist}",
            f"agentaddress udp:127.0.0.1:{port}",
            "rocommunity public 127.0.0.1",
            "sysName netwatch-snmpd",
            "sysLocation test bench",
        ]
        for u in users:
            lines += [u.create_line(), f"rouser {u.name} {u.level}"]
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n")

    def argv(self) -> list[str]:
        # -C: only our config; -f: stay in the foreground; -Lo: log to stdout; -I -smux: no SMUX
        # listener on tcp/199 (which another snmpd may hold); MIBS= keeps it from loading MIB files.
        return [self.env_binary, "MIBS=", self.binary, "-C", "-c", str(self.config_path), "-f", "-Lo", "-I", "-smux"]

    def wait_ready(self, timeout_s: float) -> None:
        sim_snmp.wait_for_agent(self.port, "public", timeout_s=timeout_s, proc=self.proc)


class Silent:
    """A bound UDP socket that answers nothing: a device that is dead. What reaches it waits in the
    kernel's receive buffer until ``datagrams()`` counts it, so a test can tell how many requests
    (first tries + retries) a prober sent without timing them."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagrams(self) -> int:
        """How many datagrams have arrived so far (drains the buffer into ``received``)."""
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                return len(self.received)
            self.received.append((data, addr))

    def close(self) -> None:
        self.sock.close()


def snmprec_lines(records: Mapping[str, tuple[str, object]]) -> str:
    """``{oid: (tag, value)}`` -> .snmprec text, in OID order (snmpsim walks the file's order)."""

    def key(oid: str) -> tuple[int, ...]:
        return tuple(int(x) for x in oid.split("."))

    return "".join(f"{oid}|{tag}|{value}\n" for oid, (tag, value) in sorted(records.items(), key=lambda kv: key(kv[0])))
