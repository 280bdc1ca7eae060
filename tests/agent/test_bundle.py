"""The offline bundle (agent/packaging/): built once per session, installed with install.sh inside a
network namespace with no network (``unshare -n``) into an empty prefix, by Debian's own
/usr/bin/python3; the installed agent runs ``once`` there against targets in that namespace; the unit
written from the config passes ``systemd-analyze verify``; a second install keeps the spool and its
batch sequence; a release that fails its checks is rolled back.

Not exercised here: ``systemctl`` (daemon-reload, enable, restart: ``--no-systemd``) and the unit
running under systemd (this container has no systemd as PID 1); ``useradd`` runs for real but into a
copy of /etc (``--users-prefix``), never the machine's own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from snmp_services import cache_root, locked

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PY = Path("/usr/bin/python3")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("bundle"),
    pytest.mark.skipif(os.geteuid() != 0, reason="unshare -n and useradd need root"),
    pytest.mark.skipif(not DEBIAN_PY.exists(), reason="the bundle targets Debian's /usr/bin/python3"),
]


def _clean_env() -> dict[str, str]:
    """What a fresh root shell on a node has: no pip config, no venv, no proxies."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


@dataclass
class Installed:
    work: Path
    bundle_dir: Path
    prefix: Path
    config: Path
    state: Path
    units: Path
    users: Path
    first: subprocess.CompletedProcess[str]


def _write_config(path: Path, state: Path, http_port: int, *, icmp_mode: str = "auto") -> None:
    path.write_text(
        f"""agent: {{id: bundle-test, site: bundle-site}}
mqtt: {{host: 127.0.0.1, port: 1883}}
spool: {{path: {state}/spool.db}}
probes:
  - {{type: icmp, name: lo, host: 127.0.0.1, count: 2, packet_interval: 50ms, mode: {icmp_mode}}}
  - {{type: tcp, name: web-port, host: 127.0.0.1, port: {http_port}}}
  - {{type: http, name: web, url: 'http://127.0.0.1:{http_port}/'}}
"""
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle built by the repo's script; the dependencies' wheels are cached between sessions."""
    out = tmp_path_factory.mktemp("bundle")
    wheels = cache_root().parent / "bundle-wheels"
    with locked(wheels.with_suffix(".lock")):
        r = subprocess.run(
            [
                "bash",
                str(ROOT / "agent/packaging/build-bundle.sh"),
                "--python",
                str(DEBIAN_PY),
                "--out",
                str(out),
                "--wheels",
                str(wheels),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert r.returncode == 0, r.stderr[-3000:]
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.name.startswith("netwatch-agent-") and path.name.endswith(f"-py311-{os.uname().machine}.tar.gz")
    return path


def _unshare(script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``script`` in a new network namespace (only a loopback, brought up), as a clean root shell."""
    return subprocess.run(
        ["unshare", "-n", "--", "bash", "-euo", "pipefail", "-c", "ip link set lo up\n" + script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
    )


@pytest.fixture(scope="module")
def installed(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("node")
    with tarfile.open(bundle) as tf:
        tf.extractall(work, filter="data")
    bundle_dir = work / bundle.name.removesuffix(".tar.gz")
    names = {p.name for p in (bundle_dir / "wheels").iterdir()}
    # the agent's dependencies, not the collector's
    assert any(n.startswith("paho_mqtt-") for n in names) and any(n.startswith("pymodbus-") for n in names)
    assert not any(n.startswith(("fastapi-", "amqtt-", "influxdb_client-", "uvicorn-", "apprise-")) for n in names)
    # the http probe has its own client (issue 12): no httpx and what it brings
    assert not any(n.startswith(("httpx-", "httpcore-", "anyio-", "h11-", "certifi-")) for n in names)
    prefix, state, units, users = work / "opt/netwatch", work / "var/lib/netwatch-agent", work / "units", work / "users"
    state.mkdir(parents=True)
    (users / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        shutil.copy2(f"/etc/{f}", users / "etc" / f)
    config = work / "etc/netwatch/agent.yaml"
    config.parent.mkdir(parents=True)
    _write_config(config, state, 8080)  # the port is rewritten in the namespace below
    # In the namespace: prove there is no network, install, serve a page, and run `once` against it.
    script = f"""
if /usr/bin/python3 -c 'import socket; socket.create_connection(("1.1.1.1", 443), timeout=2)' 2>/dev/null; then
  echo "the namespace has network" >&2; exit 90
fi
bash {bundle_dir}/install.sh --prefix {prefix} --config {config} --no-systemd --unit-dir {units} \\
  --users-prefix {users}
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/8080/$port/" {config}
mkdir -p {work}/www && echo '<h1>node</h1>' > {work}/www/index.html
/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory {work}/www "$port" >/dev/null 2>&1 &
srv=$!
trap 'kill $srv' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
set +e
{prefix}/venv/bin/netwatch-agent once --config {config} --json > {work}/once.jsonl
echo "once-exit=$?"
"""
    r = _unshare(script)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return Installed(work, bundle_dir, prefix, config, state, units, users, r)


def test_installed_offline_and_once_runs(installed: Installed) -> None:
    assert "once-exit=0" in installed.first.stdout, installed.first.stderr[-3000:]
    rows = [json.loads(line) for line in (installed.work / "once.jsonl").read_text().splitlines() if line.strip()]
    statuses = {r["tags"]["probe"]: r["fields"]["status"] for r in rows if r["measurement"] == "probe_status"}
    assert statuses == {"icmp": "ok", "tcp": "ok", "http": "ok"}
    http = next(r for r in rows if r["measurement"] == "http")
    assert http["fields"]["status_code"] == 200  # python -m http.server answered, inside the namespace
    # the venv link, the release it points at, and the interpreter: Debian's, not this test's venv
    venv = installed.prefix / "venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("releases/0.1.0-")
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg


def test_user_created_in_the_given_etc_only(installed: Installed) -> None:
    line = next(x for x in (installed.users / "etc/passwd").read_text().splitlines() if x.startswith("netwatch:"))
    name, _, uid, gid, comment, home, shell = line.split(":")
    assert int(uid) < 1000  # a system user
    assert (home, shell) == ("/var/lib/netwatch-agent", "/usr/sbin/nologin")
    group = next(x for x in (installed.users / "etc/group").read_text().splitlines() if x.startswith("netwatch:"))
    assert group.split(":")[2] == gid
    assert "netwatch:" not in Path("/etc/passwd").read_text()  # the machine's own users untouched


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: tests/run.sh installs the systemd package"
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def _unit_lines(unit: Path) -> dict[str, str]:
    return dict(x.split("=", 1) for x in unit.read_text().splitlines() if "=" in x and not x.startswith("#"))


def test_unit_is_hardened_and_verifies(installed: Installed) -> None:
    unit = installed.units / "netwatch-agent.service"
    r = _verify(unit)
    assert r.returncode == 0, r.stderr
    u = _unit_lines(unit)
    for key, want in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "StateDirectory": "netwatch-agent",
        "ConfigurationDirectory": "netwatch",
        "User": "netwatch",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",  # mode auto: no raw ICMP
    }.items():
        assert u.get(key) == want, (key, u.get(key))
    assert u["ExecStart"] == f"{installed.prefix}/venv/bin/netwatch-agent run --config {installed.config}"
    # the spool is outside /var/lib/netwatch-agent here (a tmp dir), so it is the one writable path
    assert u["ReadWritePaths"] == str(installed.state)


def test_raw_icmp_gets_cap_net_raw_only(installed: Installed, tmp_path: Path) -> None:
    raw = tmp_path / "agent.yaml"
    _write_config(raw, Path("/var/lib/netwatch-agent"), 80, icmp_mode="raw")
    unit = tmp_path / "netwatch-agent.service"
    r = subprocess.run(
        [
            str(installed.prefix / "venv/bin/python"),
            "-m",
            "agent.service_unit",
            "--config",
            str(raw),
            "--prefix",
            str(installed.prefix),
            "--output",
            str(unit),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stderr
    u = _unit_lines(unit)
    assert u["CapabilityBoundingSet"] == u["AmbientCapabilities"] == "CAP_NET_RAW"
    assert "ReadWritePaths" not in u  # the spool is in the StateDirectory
    assert _verify(unit).returncode == 0


def _spool_state(db: Path) -> tuple[str, int]:
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(FULL)")
        seq = c.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]
    return hashlib.sha256(db.read_bytes()).hexdigest(), int(seq)


def test_upgrade_keeps_spool_and_seq_and_rolls_back_a_bad_release(installed: Installed) -> None:
    py = installed.prefix / "venv/bin/python"
    spool = installed.state / "spool.db"
    made = subprocess.run(
        [
            str(py),
            "-c",
            "import sys\nfrom agent.spool import Spool\ns = Spool(sys.argv[1], max_bytes=1 << 20, max_age_s=86400)\n"
            "for _ in range(3): s.put(lambda seq: b'batch %d' % seq, 1)\n",
            str(spool),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert made.returncode == 0, made.stderr
    before = _spool_state(spool)
    assert before[1] == 3  # three batches put: seq 1, 2, 3
    old_release = os.readlink(installed.prefix / "venv")
    common = [
        "--prefix",
        str(installed.prefix),
        "--config",
        str(installed.config),
        "--no-systemd",
        "--unit-dir",
        str(installed.units),
        "--users-prefix",
        str(installed.users),
    ]
    r = _unshare(f"bash {installed.bundle_dir}/install.sh " + " ".join(common))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "user netwatch exists" in r.stderr
    new_release = os.readlink(installed.prefix / "venv")
    assert new_release != old_release
    assert (installed.prefix / "releases/previous").read_text().strip() == Path(old_release).name
    assert _spool_state(spool) == before  # not a byte of the spool changed, seq still 3

    # A release that fails its check (here: the config no longer loads) is removed; the link stays.
    good = installed.config.read_text()
    installed.config.write_text(good + "bogus_key: 1\n")
    try:
        bad = _unshare(f"bash {installed.bundle_dir}/install.sh " + " ".join(common))
    finally:
        installed.config.write_text(good)
    assert bad.returncode == 4, bad.stderr[-3000:]
    assert os.readlink(installed.prefix / "venv") == new_release
    assert sorted(p.name for p in (installed.prefix / "releases").iterdir() if p.is_dir()) == sorted(
        [Path(old_release).name, Path(new_release).name]
    )
    # --rollback goes back to the release before
    rb = subprocess.run(
        ["bash", str(installed.prefix / "install.sh"), "--rollback", *common],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert rb.returncode == 0, rb.stderr
    assert os.readlink(installed.prefix / "venv") == old_release
    assert _spool_state(spool) == before
