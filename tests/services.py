"""Real services for integration tests: Mosquitto, VictoriaMetrics and InfluxDB 1.x on free loopback ports.

Each ``start_*`` returns a handle that is also a context manager; it stops only the process it
started, by PID. ``stop()``/``start()`` restart on the same port and data directory, so broker
persistence and stored metrics survive a restart (what the reliability tests rely on).

VictoriaMetrics 1.79 facts, checked against the installed server (see tests/collector/storage):

* Flags: ``-storageDataPath``, ``-httpListenAddr``, ``-retentionPeriod`` (suffixes h/d/w/y;
  bare numbers are months), ``-dedup.minScrapeInterval``, ``-search.latencyOffset``.
* InfluxDB line protocol on ``/api/v2/write`` (and ``/write``): one series per field named
  ``{measurement}_{field}`` (separator ``-influxMeasurementFieldSeparator``), tags become
  labels. No ``db`` label is added for ``/api/v2/write?bucket=…``; ``/write?db=X`` adds
  ``db="X"``. Timestamps are cut to milliseconds (``-influxTrimTimestamp=1ms``). Booleans
  become 1/0. String fields are *not* dropped: a string that parses as a number becomes that
  number, any other string becomes 0 — hence InfluxSink's ``drop_string_fields``.
  Escapes: ``\\,`` ``\\=`` ``\\ `` as in the spec, and ``\\\\`` reads as one backslash.
  Values are float64 and come back exact (floats like 0.35, integers up to 2**53).
* Duplicates: without ``-dedup.minScrapeInterval`` the same series + timestamp written twice
  is stored (and exported) twice. With ``-dedup.minScrapeInterval=1ms`` one sample per series
  per millisecond is kept, so re-sending a batch is idempotent; the fixture uses that, and a
  production VictoriaMetrics fed by netwatch should too (the collector's (agent, seq) dedup
  covers redelivery, not a partially acknowledged batch that it re-sends).
* Flushing: ``POST /internal/force_flush`` exists and makes new points of *existing* series
  visible at once, but a brand-new series only shows up in searches after about 1 s (the
  index is published once a second). ``wait_for_points`` polls for that.
* Start-up takes ~60 ms on an empty data directory, so the fixture is function-scoped; a
  graceful stop takes ~1.3 s (final flush), so fixture teardown kills it outright — its data
  directory is thrown away anyway.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "run the test command from README.md, which installs the service packages "
    "(apt-get install mosquitto victoria-metrics influxdb)"
)


class ServiceMissing(RuntimeError):
    """The service's binary is not installed; fixtures turn this into a test failure, not a skip."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_binary(name: str, env: str, *fallbacks: str) -> str:
    """``$env``, else ``name`` on PATH, else the Debian locations (sbin is not on every PATH)."""
    for candidate in (os.environ.get(env), shutil.which(name), *fallbacks):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceMissing(f"{name} is not installed (looked in ${env}, PATH, {', '.join(fallbacks)}): {INSTALL_HINT}")


def wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")
        time.sleep(0.02)


_LIVE: dict[int, subprocess.Popen[bytes]] = {}


@atexit.register
def _kill_leftovers() -> None:
    # Safety net for an interrupted run: fixtures normally stop their process first.
    for proc in list(_LIVE.values()):
        with contextlib.suppress(OSError):
            proc.kill()
            proc.wait(5)


class Service:
    """One child process with a fixed port and working directory, startable again after a stop."""

    name = "service"

    def __init__(self, workdir: Path, host: str, port: int) -> None:
        self.workdir = workdir
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.out"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def child_env(self) -> dict[str, str] | None:
        """The child's environment (None: ours)."""
        return None

    def wait_ready(self, timeout_s: float) -> None:
        wait_port(self.host, self.port, timeout_s, self.proc)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self, timeout_s: float = 15.0) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.child_env(),
            )
        _LIVE[self.proc.pid] = self.proc
        try:
            self.wait_ready(timeout_s)
        except Exception as e:
            self.kill()
            raise RuntimeError(f"{self.name} did not start on {self.host}:{self.port}: {e}\n{self.log_tail()}") from e

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM, the service saves its state), SIGKILL after ``timeout_s``."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Crash it (SIGKILL): no chance to save anything, like a power cut for that process."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        _LIVE.pop(proc.pid, None)
        self.proc = None

    def close(self) -> None:
        """Teardown: stop however fast is safe for this service."""
        self.stop()

    def log_tail(self, n: int = 30) -> str:
        texts = []
        for p in sorted(self.workdir.glob("*.log")) + [self.log_path]:
            with contextlib.suppress(OSError):
                lines = p.read_text(errors="replace").splitlines()[-n:]
                texts.append(f"--- {p.name}\n" + "\n".join(lines))
        return "\n".join(texts)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(
    directory: Path,
    *,
    dns_names: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
    server_validity: tuple[dt.datetime, dt.datetime] | None = None,
) -> TlsFiles:
    """A throwaway CA and a server certificate it signed, valid for ``dns_names`` and ``ips``;
    ``server_validity`` (not before, not after) makes e.g. an expired server certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=30))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "netwatch test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else ips[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before((server_validity or validity)[0])
        .not_valid_after((server_validity or validity)[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key.chmod(0o600)
    return files


# ----------------------------------------------------------------------------------- Mosquitto


class Mosquitto(Service):
    """A Mosquitto broker with persistence in ``workdir/data`` (persistent sessions survive a
    restart; ``save()`` forces the on-disk copy before a ``kill()``)."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        port: int,
        *,
        users: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
        acl: str | None = None,
        extra_config: str = "",
    ) -> None:
        super().__init__(workdir, "127.0.0.1", port)
        self.binary = find_binary("mosquitto", "NETWATCH_MOSQUITTO", "/usr/sbin/mosquitto")
        self.users = dict(users or {})
        self.tls = tls
        self.config_path = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        lines = [
            "# netwatch test broker (generated by tests/services.py)",
            "per_listener_settings false",
            f"listener {port} 127.0.0.1",
            "persistence true",
            f"persistence_location {workdir / 'data'}",
            # Save every second so a kill() loses at most ~1 s of broker state.
            "autosave_interval 1",
            # Reliability tests leave a collector down while agents publish; the default 1000
            # queued messages per offline session would drop some.
            "max_queued_messages 100000",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto otherwise drops to user "mosquitto", which cannot use workdir.
            lines.append("user root")
        if self.users:
            pw_file = workdir / "passwd"
            passwd = find_binary("mosquitto_passwd", "NETWATCH_MOSQUITTO_PASSWD", "/usr/bin/mosquitto_passwd")
            for i, (user, password) in enumerate(self.users.items()):
                create = ["-c"] if i == 0 else []
                subprocess.run([passwd, *create, "-b", str(pw_file), user, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw_file}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [
                f"cafile {tls.ca_cert}",
                f"certfile {tls.cert}",
                f"keyfile {tls.key}",
                "tls_version tlsv1.2",
            ]
        if acl is not None:
            acl_file = workdir / "acl"
            acl_file.write_text(acl)
            lines.append(f"acl_file {acl_file}")
        self.config_path.write_text("\n".join(lines) + "\n" + extra_config + "\n")

    def argv(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    @property
    def username(self) -> str | None:
        return next(iter(self.users), None)

    @property
    def password(self) -> str | None:
        return self.users.get(self.username) if self.username else None

    @property
    def ca_path(self) -> Path | None:
        return self.tls.ca_cert if self.tls else None

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this broker's test CA."""
        if self.tls is None:
            raise RuntimeError("this broker has no TLS listener")
        return ssl.create_default_context(cafile=str(self.tls.ca_cert))

    def save(self) -> None:
        """Write the persistence file now (SIGUSR1)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    def __enter__(self) -> Mosquitto:
        return self


def start_mosquitto(
    workdir: Path,
    *,
    port: int | None = None,
    users: Mapping[str, str] | None = None,
    tls: bool = False,
    acl: str | None = None,
    extra_config: str = "",
) -> Mosquitto:
    """Start a broker on 127.0.0.1. ``users`` turns on password auth (no anonymous clients);
    ``tls`` makes the listener TLS-only with a fresh CA (``broker.ca_path``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    tls_files = make_tls_files(workdir / "tls") if tls else None
    broker = Mosquitto(workdir, port or free_port(), users=users, tls=tls_files, acl=acl, extra_config=extra_config)
    broker.start()
    return broker


def start_secure_mosquitto(workdir: Path, *, username: str = "netwatch", port: int | None = None) -> Mosquitto:
    """TLS listener + password file with one user and a random password (``broker.password``)."""
    return start_mosquitto(workdir, port=port, users={username: secrets.token_urlsafe(12)}, tls=True)


# ----------------------------------------------------------------------------- VictoriaMetrics


class VictoriaMetrics(Service):
    """A single-node VictoriaMetrics; ``url`` is its HTTP base (InfluxDB writes go to
    ``url`` + ``/api/v2/write``). See the module docstring for what it does with line protocol."""

    name = "victoria-metrics"

    def __init__(
        self, workdir: Path, port: int, *, dedup: str | None = "1ms", extra_flags: tuple[str, ...] = ()
    ) -> None:
        super().__init__(workdir, "127.0.0.1", port)
        self.binary = find_binary("victoria-metrics", "NETWATCH_VICTORIA_METRICS", "/usr/bin/victoria-metrics")
        self.data_dir = workdir / "data"
        self.dedup = dedup
        self.extra_flags = extra_flags
        self.url = f"http://127.0.0.1:{port}"

    def argv(self) -> list[str]:
        argv = [
            self.binary,
            f"-storageDataPath={self.data_dir}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",  # tests write timestamps of any age
            "-search.latencyOffset=0s",  # queries see points at once, not 30 s later
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]
        if self.dedup:
            argv.append(f"-dedup.minScrapeInterval={self.dedup}")
        return argv + list(self.extra_flags)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                if self._request("GET", "/health", timeout_s=1).strip() == b"OK":
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"/health not OK after {timeout_s} s")
            time.sleep(0.02)

    def close(self) -> None:
        self.kill()  # a graceful stop only flushes data we are about to delete

    def _request(
        self, method: str, path: str, data: Mapping[str, Any] | None = None, *, timeout_s: float = 10
    ) -> bytes:
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        req = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.read()

    def flush(self) -> None:
        """Make buffered points searchable (new series still need ~1 s: use wait_for_points)."""
        self._request("POST", "/internal/force_flush")

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every stored point of the series matching ``match`` (a series selector such as
        ``'{__name__=~"iface_.*"}'``): one dict per series with ``metric`` (labels incl.
        ``__name__``), ``values`` and ``timestamps`` (ms), as /api/v1/export returns them."""
        raw = self._request("POST", "/api/v1/export", {"match[]": match})
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def series_count(self) -> int:
        return int(json.loads(self._request("GET", "/api/v1/series/count"))["data"][0])

    def wait_for_points(self, match: str, count: int, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Flush, then export until at least ``count`` points match; returns that export."""
        deadline = time.monotonic() + timeout_s
        self.flush()
        while True:
            series = self.export(match)
            have = sum(len(s["values"]) for s in series)
            if have >= count:
                return series
            if time.monotonic() > deadline:
                raise TimeoutError(f"{match}: {have} points after {timeout_s} s, expected {count}")
            time.sleep(0.05)

    def __enter__(self) -> VictoriaMetrics:
        return self


def start_victoria_metrics(
    workdir: Path, *, port: int | None = None, dedup: str | None = "1ms", extra_flags: tuple[str, ...] = ()
) -> VictoriaMetrics:
    """Start VictoriaMetrics on 127.0.0.1; ``dedup=None`` keeps duplicate timestamps (the
    server default), ``"1ms"`` makes re-sent points idempotent."""
    workdir.mkdir(parents=True, exist_ok=True)
    vm = VictoriaMetrics(workdir, port or free_port(), dedup=dedup, extra_flags=extra_flags)
    vm.start()
    return vm


# ------------------------------------------------------------------------------ InfluxDB 1.x


class InfluxQueryError(RuntimeError):
    """InfluxDB answered a query with an error (HTTP or per statement); ``str()`` is its text."""


class Influxd(Service):
    """Debian's InfluxDB 1.x (``influxd`` 1.6.7) from a generated config in ``workdir``: HTTP on
    ``127.0.0.1:port``, the RPC (backup) listener on another loopback port, meta/data/wal under
    ``workdir``, usage reporting and the ``_internal`` monitor database off, auth on with one
    admin (``admin_user``/``admin_password``) made by the first ``CREATE USER … WITH ALL
    PRIVILEGES`` on the first start.

    Facts checked against 1.6.7 (see tests/collector/storage/test_storage_influx1.py): ``/ping``
    answers 204; ``/write`` answers 204, 400 ``partial write: <reason> dropped=N`` (field type
    conflict, points beyond the retention policy; lines it cannot parse are listed as ``unable to
    parse '<line>': …`` with dropped=0), 401 ``authorization failed``, 403 for a user without
    WRITE, 404 ``database not found``, 500 ``retention policy not found``, 413 past
    ``max-body-size``; an unknown ``precision`` is ignored. Starts in ~0.1 s; a graceful stop takes
    ~1.2 s, so ``close()`` kills it (its data is thrown away anyway).
    """

    name = "influxd"

    def __init__(
        self,
        workdir: Path,
        port: int,
        rpc_port: int,
        *,
        admin_user: str = "admin",
        admin_password: str | None = None,
        max_body_size: int = 25_000_000,
    ) -> None:
        super().__init__(workdir, "127.0.0.1", port)
        self.binary = find_binary("influxd", "NETWATCH_INFLUXD", "/usr/bin/influxd")
        self.rpc_port = rpc_port
        self.url = f"http://127.0.0.1:{port}"
        self.admin_user = admin_user
        self.admin_password = admin_password or secrets.token_urlsafe(12)
        self.max_body_size = max_body_size
        self.config_path = workdir / "influxdb.conf"
        self._has_admin = False
        self._databases = 0

    def config_text(self) -> str:
        w = self.workdir
        return f"""\
# generated by tests/services.py
reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{w / "meta"}"

[data]
  dir = "{w / "data"}"
  wal-dir = "{w / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = true
  log-enabled = false
  pprof-enabled = false
  max-body-size = {self.max_body_size}

[logging]
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
"""

    def argv(self) -> list[str]:
        self.config_path.write_text(self.config_text())
        return [self.binary, "run", "-config", str(self.config_path)]

    def child_env(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file: none of the caller's may leak in.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/ping", timeout=1) as resp:
                if resp.status == 204:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"/ping did not answer 204 after {timeout_s} s")
            time.sleep(0.02)

    def start(self, timeout_s: float = 15.0) -> None:
        super().start(timeout_s)
        if not self._has_admin:
            # With auth on and no user yet, 1.x accepts exactly this statement without credentials.
            self.query(
                f"CREATE USER {quote_ident(self.admin_user)} WITH PASSWORD {quote_string(self.admin_password)} "
                "WITH ALL PRIVILEGES",
                auth=None,
            )
            self._has_admin = True

    def close(self) -> None:
        self.kill()

    def query(
        self,
        influxql: str,
        db: str | None = None,
        *,
        epoch: str | None = "ns",
        params: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None | bool = True,
        check: bool = True,
        timeout_s: float = 10.0,
    ) -> dict[str, Any]:
        """Run ``influxql`` (one or more ``;``-separated statements) and return the parsed JSON
        (``{"results": [{"statement_id": 0, "series": [...]}, ...]}``). Times come back as integers
        in ``epoch`` units (ns by default; None: RFC 3339 strings). ``auth``: True for the admin,
        a (user, password) pair, or None for no credentials. ``check`` raises InfluxQueryError for
        an HTTP error or any statement's ``error``."""
        fields: dict[str, str] = {"q": influxql}
        if db is not None:
            fields["db"] = db
        if epoch is not None:
            fields["epoch"] = epoch
        fields.update(params or {})
        req = urllib.request.Request(self.url + "/query", data=urllib.parse.urlencode(fields).encode(), method="POST")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        creds = (self.admin_user, self.admin_password) if auth is True else auth or None
        if creds:
            req.add_header("Authorization", basic_auth(*creds))
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError, TypeError, KeyError):
                text = json.loads(text)["error"]
            if not check:
                return {"error": text, "status": e.code}
            raise InfluxQueryError(f"HTTP {e.code}: {text} (query: {influxql})") from None
        if check:
            errors = [r["error"] for r in doc.get("results", []) if "error" in r]
            if "error" in doc or errors:
                raise InfluxQueryError(f"{doc.get('error') or '; '.join(errors)} (query: {influxql})")
        return doc

    def series(self, influxql: str, db: str | None = None, **kw: Any) -> list[dict[str, Any]]:
        """The ``series`` of the first statement (``[]`` when it matched nothing): each with
        ``name``, ``columns``, ``values`` and, under GROUP BY, ``tags``."""
        return list(self.query(influxql, db, **kw)["results"][0].get("series", []))

    def points(self, influxql: str, db: str | None = None, **kw: Any) -> list[dict[str, Any]]:
        """Every row of every series of the first statement as a dict of column -> value, with the
        series' GROUP BY tags added."""
        out = []
        for s in self.series(influxql, db, **kw):
            for row in s.get("values", []):
                out.append({**s.get("tags", {}), **dict(zip(s["columns"], row, strict=True))})
        return out

    def new_database(self, prefix: str = "t") -> str:
        """Create a database with a name unique in this server (one per test on a shared server)."""
        self._databases += 1
        name = f"{prefix}_{self._databases}_{secrets.token_hex(3)}"
        self.query(f"CREATE DATABASE {quote_ident(name)}")
        return name

    def create_user(self, name: str, password: str, grants: Mapping[str, str] = {}) -> None:  # noqa: B006 - read only
        """A non-admin user with ``grants`` (database -> READ, WRITE or ALL)."""
        self.query(f"CREATE USER {quote_ident(name)} WITH PASSWORD {quote_string(password)}")
        for db, privilege in grants.items():
            self.query(f"GRANT {privilege} ON {quote_ident(db)} TO {quote_ident(name)}")

    def write(self, lines: str | list[str], db: str, *, rp: str | None = None) -> None:
        """Write line protocol as the admin (ns precision); raises InfluxQueryError unless 204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        fields = {"db": db, "precision": "ns", **({"rp": rp} if rp else {})}
        req = urllib.request.Request(
            f"{self.url}/write?{urllib.parse.urlencode(fields)}", data=body.encode(), method="POST"
        )
        req.add_header("Authorization", basic_auth(self.admin_user, self.admin_password))
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            raise InfluxQueryError(f"HTTP {e.code}: {e.read().decode('utf-8', 'replace')}") from None

    def storage_config(self, db: str, password_file: Path) -> dict[str, Any]:
        """The collector's ``storage.influxdb`` section for writing into ``db`` as the admin; writes
        the password to ``password_file`` (0600)."""
        password_file.write_text(self.admin_password + "\n")
        password_file.chmod(0o600)
        return {
            "version": 1,
            "url": self.url,
            "database": db,
            "username": self.admin_user,
            "password_file": str(password_file),
            "timeout": 5,
        }

    def __enter__(self) -> Influxd:
        return self


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(text: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def start_influxd(workdir: Path, *, port: int | None = None, max_body_size: int = 25_000_000) -> Influxd:
    """Start Debian's influxd on 127.0.0.1 with auth on and an admin; see Influxd."""
    workdir.mkdir(parents=True, exist_ok=True)
    http_port = port or free_port()
    rpc_port = free_port()
    while rpc_port == http_port:
        rpc_port = free_port()
    server = Influxd(workdir, http_port, rpc_port, max_body_size=max_body_size)
    server.start()
    return server
