"""Simulated SNMP devices for the demo: ONE snmpsim-command-responder on 127.0.0.1 serving recordings of
real devices from snmpsim-data (a Huawei switch, an H3C switch, a Huawei UPS), cut to the subtrees
netwatch reads, plus a small switch of our own whose counters move (snmpsim's ``numeric`` variation).
The community is the recording's path without extension. ``start(var_dir, port).stop()``; or run
this file. The tests reuse ``trim_recording`` and ``wait_for_agent``."""

from __future__ import annotations

import argparse
import bz2
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import snmpsim_data

RECORDINGS = Path(snmpsim_data.__file__).resolve().parent / "data"
#: demo device -> recording (community); the agents' snmp entries use these communities
DEMO_DEVICES = {
    "county-switch": "network/router/huawei-s5720",
    "township-switch": "network/switch/h3c-comware-7-1-075",
    "city-ups": "UPS/huawei-gse200m",
    "lab-switch": "netwatch/moving-switch",
}
MOVING_SWITCH = "netwatch/moving-switch"

_CHUNK = 1 << 20


def _oid_trie(prefixes: Iterable[str]) -> dict[str, object]:
    root: dict[str, object] = {}
    for prefix in sorted(set(prefixes), key=lambda p: p.count(".")):
        node = root
        arcs = prefix.strip(".").split(".")
        for i, arc in enumerate(arcs):
            child = node.get(arc)
            if child is True:
                break  # a shorter prefix already keeps this whole subtree
            if i == len(arcs) - 1:
                node[arc] = True
            else:
                if child is None:
                    child = node[arc] = {}
                assert isinstance(child, dict)
                node = child
    return root


def _trie_pattern(node: dict[str, object]) -> str:
    alts = []
    for arc, child in sorted(node.items()):
        if child is True:
            alts.append(re.escape(arc) + r"[.|]")
        else:
            assert isinstance(child, dict)
            alts.append(re.escape(arc) + r"\." + _trie_pattern(child))
    return "(?:" + "|".join(alts) + ")"


def line_filter(prefixes: Iterable[str]) -> re.Pattern[bytes]:
    """A regex finding whole .snmprec lines (after their newline) whose OID is one of ``prefixes``
    or under one. Built as a trie of OID arcs behind a literal newline, so the regex engine skips
    from line to line at C speed and a line that does not match fails after a few characters."""
    return re.compile(rb"\n(" + _trie_pattern(_oid_trie(prefixes)).encode() + rb"[^\n]*)")


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        if path.suffix == ".bz2":
            dec = bz2.BZ2Decompressor()
            while block := f.read(_CHUNK):
                while block:
                    if dec.eof:  # multi-stream file: the next stream starts here
                        dec = bz2.BZ2Decompressor()
                    yield dec.decompress(block)
                    block = dec.unused_data if dec.eof else b""
        else:
            while block := f.read(_CHUNK):
                yield block


def recording_path(name: str) -> Path:
    """``network/switch/h3c-e528-1`` -> its .snmprec or .snmprec.bz2 in snmpsim-data."""
    for ext in (".snmprec", ".snmprec.bz2"):
        p = RECORDINGS / f"{name}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"no recording {name} in {RECORDINGS}")


def trim_recording(src: Path, dst: Path, prefixes: Iterable[str]) -> int:
    """Copy the lines of recording ``src`` (.snmprec or .snmprec.bz2) under ``prefixes`` to ``dst``
    (plain .snmprec), verbatim and in the recording's order; returns the number of lines kept.
    snmpsim indexes every line before it answers (slowly), so it gets only what is polled."""
    pattern = line_filter(prefixes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    kept = 0
    tail = b"\n"  # every block starts with the newline before its first line
    with open(tmp, "wb") as out:
        for chunk in _chunks(src):
            data = tail + chunk
            cut = data.rfind(b"\n")
            tail, data = data[cut:], data[:cut]
            for m in pattern.finditer(data):
                out.write(m.group(1) + b"\n")
                kept += 1
        for m in pattern.finditer(tail):
            out.write(m.group(1) + b"\n")
            kept += 1
    os.replace(tmp, dst)
    return kept


# A small switch of our own: two interfaces whose octet counters climb at steady rates (snmpsim's
# numeric variation: value = initial + rate × seconds since start), one near saturation.
_MOVING = """\
1.3.6.1.2.1.1.1.0|4|netwatch demo switch (snmpsim numeric variation)
1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.8072.3.2.10
1.3.6.1.2.1.1.3.0|67:numeric|rate=100
1.3.6.1.2.1.1.5.0|4|lab-switch
1.3.6.1.2.1.1.6.0|4|demo lab
1.3.6.1.2.1.2.2.1.2.1|4|GigabitEthernet0/0/1
1.3.6.1.2.1.2.2.1.2.2|4|GigabitEthernet0/0/2
1.3.6.1.2.1.2.2.1.5.1|66|100000000
1.3.6.1.2.1.2.2.1.5.2|66|100000000
1.3.6.1.2.1.2.2.1.7.1|2|1
1.3.6.1.2.1.2.2.1.7.2|2|1
1.3.6.1.2.1.2.2.1.8.1|2|1
1.3.6.1.2.1.2.2.1.8.2|2|1
1.3.6.1.2.1.2.2.1.13.1|65|0
1.3.6.1.2.1.2.2.1.13.2|65|0
1.3.6.1.2.1.2.2.1.14.1|65:numeric|rate=0.5
1.3.6.1.2.1.2.2.1.14.2|65|0
1.3.6.1.2.1.2.2.1.19.1|65|0
1.3.6.1.2.1.2.2.1.19.2|65|0
1.3.6.1.2.1.2.2.1.20.1|65|0
1.3.6.1.2.1.2.2.1.20.2|65|0
1.3.6.1.2.1.31.1.1.1.1.1|4|GE0/0/1
1.3.6.1.2.1.31.1.1.1.1.2|4|GE0/0/2
1.3.6.1.2.1.31.1.1.1.6.1|70:numeric|rate=3750000,initial=1000000
1.3.6.1.2.1.31.1.1.1.6.2|70:numeric|rate=11750000,initial=5000000
1.3.6.1.2.1.31.1.1.1.10.1|70:numeric|rate=1250000,initial=2000000
1.3.6.1.2.1.31.1.1.1.10.2|70:numeric|rate=625000,initial=3000000
1.3.6.1.2.1.31.1.1.1.15.1|66|100
1.3.6.1.2.1.31.1.1.1.15.2|66|100
1.3.6.1.2.1.31.1.1.1.18.1|4|uplink to county
1.3.6.1.2.1.31.1.1.1.18.2|4|office LAN
"""


def write_moving_switch(data_dir: Path) -> Path:
    """GE0/0/1 carries 30 Mb/s in, 10 Mb/s out, with 0.5 input errors a second; GE0/0/2 runs
    at 94 % of its 100 Mb/s inbound — over the 90 % utilisation line."""
    path = data_dir / f"{MOVING_SWITCH}.snmprec"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_MOVING, encoding="ascii")
    return path


def polled_oids() -> set[str]:
    """Every OID netwatch's built-in profiles can read: what a trimmed recording keeps."""
    from probes.snmp.profile import builtin_profiles

    return {oid for p in builtin_profiles().values() for oid in p.oids()}


def snmpsim_argv(data_dir: Path, cache_dir: Path, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("snmpsim-command-responder")
    argv = [
        str(exe) if exe.exists() else "snmpsim-command-responder",
        f"--data-dir={data_dir}",
        f"--cache-dir={cache_dir}",
        f"--agent-udpv4-endpoint=127.0.0.1:{port}",
        "--logging-method=stderr",
        "--log-level=error",
    ]
    return argv


def snmpsim_env() -> dict[str, str]:
    # snmpsim refuses to run as root unless told (it would rather drop to a user we may not have).
    return {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}


def _get_request(community: str, request_id: int) -> bytes:
    """A hand-encoded SNMPv2c GET of sysUpTime.0 (enough to see whether an agent answers)."""
    c = community.encode()
    varbinds = bytes.fromhex("300e300c06082b060102010103000500")
    pdu = b"\x02\x01" + bytes([request_id & 0x7F]) + bytes.fromhex("020100020100") + varbinds
    pdu = b"\xa0" + bytes([len(pdu)]) + pdu
    body = b"\x02\x01\x01\x04" + bytes([len(c)]) + c + pdu
    return b"\x30" + bytes([len(body)]) + body


def wait_for_agent(port: int, community: str, *, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until the agent on 127.0.0.1:port answers a GET (snmpsim indexes its recordings first)."""
    if len(community) > 100:
        raise ValueError("community too long for the readiness probe")
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        n = 0
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"snmpsim (pid {proc.pid}) exited with {proc.returncode} before answering")
            n += 1
            s.sendto(_get_request(community, n), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                if s.recv(4096):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no SNMP answer on 127.0.0.1:{port} after {timeout_s:g} s")


@dataclass
class SimHandle:
    """The running snmpsim; ``stop()`` ends it by its PID."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(var_dir: Path, port: int, *, timeout_s: float = 60.0) -> SimHandle:
    """Trim the demo's recordings into ``var_dir``, start snmpsim on 127.0.0.1:``port`` and wait
    until it answers. The first start indexes the recordings (a few seconds); later starts reuse
    the index in ``var_dir``."""
    data_dir, cache_dir = var_dir / "snmpsim-data", var_dir / "snmpsim-index"
    cache_dir.mkdir(parents=True, exist_ok=True)
    keep = polled_oids()
    for community in DEMO_DEVICES.values():
        if community == MOVING_SWITCH:
            continue
        dst = data_dir / f"{community}.snmprec"
        src = recording_path(community)
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            trim_recording(src, dst, keep)
    if not (data_dir / f"{MOVING_SWITCH}.snmprec").exists():
        write_moving_switch(data_dir)
    log_path = var_dir / "snmpsim.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            snmpsim_argv(data_dir, cache_dir, port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=snmpsim_env(),
            start_new_session=True,
        )
    handle = SimHandle(proc, port, data_dir, log_path)
    try:
        wait_for_agent(port, MOVING_SWITCH, timeout_s=timeout_s, proc=proc)
    except BaseException:
        handle.stop()
        raise
    return handle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=16100)
    ap.add_argument("--var-dir", type=Path, default=Path(__file__).resolve().parents[2] / "var" / "demo" / "snmp")
    args = ap.parse_args()
    handle = start(args.var_dir, args.port)
    print(f"snmpsim pid {handle.pid} on 127.0.0.1:{args.port}; communities:")
    for device, community in DEMO_DEVICES.items():
        print(f"  {device:16} {community}")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and handle.proc.poll() is None:
            time.sleep(0.5)
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
