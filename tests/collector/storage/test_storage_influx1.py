"""Influx1Sink (InfluxDB 1.x ``/write``) against Debian's influxd 1.6.7 — what lands, read back
with InfluxQL; exact stored/refused counts for partial writes; credentials and a missing
database or retention policy held back, not dropped — and against a scripted HTTP server for
the request shape, status mapping and Retry-After. Plus the collector's config and its fan-out
with SQLite + InfluxDB 1.x."""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from services import Influxd, Service, quote_ident, start_influxd

from collector.config import load
from collector.service import build_sinks
from collector.stats import Counters
from collector.storage import Sink, StoreRejected, StoreUnavailable
from collector.storage.fanout import Store
from collector.storage.influx import Influx1Sink
from collector.storage.sqlite import SqliteSink
from probes.configfile import ConfigError
from probes.model import Sample

pytestmark = pytest.mark.integration

S = 10**9
HOUR = 3600 * S
N = 20  # points per series

SERIES_TAGS = [
    # Chinese names and every kind of escape, as in the v2 sink's tests.
    {"site": "城关镇", "agent": "ag 1", "device": "核心交换机", "ifname": "Gi0/0/1"},
    {"site": "县中心,机房=2", "agent": "ag-2", "device": "sw a,b=c", "ifname": "Te1/0/1 uplink"},
    {"site": "s3", "agent": "ag-3", "device": "DOMAIN\\pdu", "ifname": 'quote"d'},
]


def an_hour_start(hours_ago: int = 3) -> int:
    """The start of a UTC hour ``hours_ago`` hours back (recent: inside any test retention)."""
    return (time.time_ns() // HOUR - hours_ago) * HOUR


def make_samples(base_ns: int) -> list[Sample]:
    out = []
    for k, tags in enumerate(SERIES_TAGS):
        for i in range(N):
            out.append(
                Sample(
                    "iface",
                    tags,
                    {
                        "in_octets": 10**11 + 1000 * i + k,
                        "in_bps": 0.1 + i * 0.25 + k,
                        "up": i % 3 != 0,
                        "status": f'up 第{i}次 "ok"\n',
                    },
                    base_ns + i * 1_000_000_123 + k,  # nanosecond timestamps, nothing trimmed
                )
            )
    return out


@pytest.fixture
def db(influxd: Influxd) -> str:
    return influxd.new_database()


@pytest.fixture
def writer(influxd: Influxd, db: str) -> tuple[str, str]:
    """A user with WRITE (and READ) on ``db`` only, as production would use."""
    name = f"w_{db}"
    influxd.create_user(name, "pw-" + db, {db: "ALL"})
    return name, "pw-" + db


def sink_for(influxd: Influxd, db: str, user: tuple[str, str], **kw: object) -> Influx1Sink:
    return Influx1Sink(influxd.url, db, username=user[0], password=user[1], timeout_s=5, **kw)  # type: ignore[arg-type]


def count(influxd: Influxd, db: str, measurement: str, fld: str = "v", rp: str | None = None) -> int:
    src = f"{quote_ident(rp)}.{quote_ident(measurement)}" if rp else quote_ident(measurement)
    series = influxd.series(f"SELECT count({quote_ident(fld)}) FROM {src}", db)
    return int(series[0]["values"][0][1]) if series else 0


# ------------------------------------------------------------------------ the real server


def test_samples_read_back_exactly(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    sink = sink_for(influxd, db, writer)
    assert isinstance(sink, Sink)
    base = an_hour_start() - 5 * S  # the series cross an hour boundary: two requests
    samples = make_samples(base)
    sink.write(samples)
    rows = influxd.points("SELECT * FROM iface GROUP BY *", db)
    assert len(rows) == len(samples)
    got = {(tuple(sorted((k, r[k]) for k in SERIES_TAGS[0])), r["time"]): r for r in rows}
    for s in samples:
        r = got[(tuple(sorted(s.tags.items())), s.time_ns)]
        # A line break in a string is stored as the two characters \n (collector/storage/lineproto.py).
        want = {f: v.replace("\n", "\\n") if isinstance(v, str) else v for f, v in s.fields.items()}
        assert {f: r[f] for f in s.fields} == want
    # Tag values exactly as sent, escapes undone (a lone backslash before a letter is kept).
    tags = {v for (t, _ts) in got for _k, v in t}
    assert {"县中心,机房=2", "sw a,b=c", "DOMAIN\\pdu", 'quote"d', "Te1/0/1 uplink", "ag 1"} <= tags
    sink.close()


def test_rewrite_is_idempotent(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    sink = sink_for(influxd, db, writer, batch_size=7)
    samples = make_samples(an_hour_start())
    sink.write(samples)
    sink.write(samples)  # a redelivered batch
    sink.write(samples[5:40])
    assert count(influxd, db, "iface", "in_octets") == len(samples)
    sink.close()


def test_field_type_conflict_counts_exactly(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    """`v` is an integer; a batch of 12 brings 3 floats and 1 string for it (refused by the
    server), 1 sample with nothing storable (refused by us) and 7 good ones. The fan-out counts
    7 stored and 5 refused, and the database holds exactly the 7 plus the first point."""
    sink = sink_for(influxd, db, writer)
    t0 = an_hour_start()
    sink.write([Sample("m", {"k": "a"}, {"v": 1}, t0)])
    values: list[object] = [2, 3.5, 4, 5, "six", 7, 8.25, 9, 10, 11.75, 12]
    batch = [Sample("m", {"k": "a"}, {"v": v}, t0 + (i + 1) * S) for i, v in enumerate(values)]  # type: ignore[misc]
    batch.append(Sample("m", {"k": "a"}, {"v": float("nan")}, t0 + 99 * S))
    counters = Counters()
    assert Store([sink], counters, threading.Event()).write(batch)
    snap = counters.snapshot()
    good = [v for v in values if type(v) is int]
    assert snap["stored_samples_influxdb"] == len(good) == 7
    assert snap["store_rejected_influxdb"] == len(batch) - len(good) == 5
    rows = influxd.points("SELECT v FROM m", db)
    assert [r["v"] for r in rows] == [1, *good]
    sink.close()


def test_conflicts_in_two_shards_are_all_counted(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    """With hour-long shards, conflicts in two shards: 1.x names only the first shard's in one
    request, so the sink sends each hour on its own and the count is exact (4 = 2 + 2)."""
    influxd.query(f"CREATE RETENTION POLICY hourly ON {quote_ident(db)} DURATION 1d REPLICATION 1 SHARD DURATION 1h")
    sink = sink_for(influxd, db, writer, retention_policy="hourly")
    h1, h2 = an_hour_start(5), an_hour_start(4)
    sink.write([Sample("m", {}, {"v": 0}, h1), Sample("m", {}, {"v": 0}, h2)])  # v is an integer in both shards
    batch = [Sample("m", {}, {"v": v}, h + i * S) for h in (h1, h2) for i, v in enumerate([1, 2.5, 3, 4.5, 5], 1)]
    with pytest.raises(StoreRejected) as e:
        sink.write(batch)
    assert e.value.rejected == 4
    assert count(influxd, db, "m", rp="hourly") == 2 + 6
    sink.close()


def test_points_past_the_retention_are_counted(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    influxd.query(f"CREATE RETENTION POLICY short ON {quote_ident(db)} DURATION 1h REPLICATION 1")
    sink = sink_for(influxd, db, writer, retention_policy="short")
    now = time.time_ns()
    old = [Sample("m", {}, {"v": i}, now - 3 * HOUR + i * S) for i in range(3)]
    new = [Sample("m", {}, {"v": i}, now - 60 * S + i * S) for i in range(4)]
    with pytest.raises(StoreRejected, match="beyond retention") as e:
        sink.write(old + new)
    assert e.value.rejected == 3
    assert count(influxd, db, "m", rp="short") == 4
    sink.close()


def test_unparseable_lines_are_counted(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    """Our encoder makes no such lines; the count still comes from 1.x's list of them."""
    sink = sink_for(influxd, db, writer)
    t = an_hour_start()
    with pytest.raises(StoreRejected) as e:
        sink._send([f"m v=1i {t}", "m v= 5", f"m v=2i {t + 1}", "not line protocol", f"m v=3i {t + 2}"])
    assert e.value.rejected == 2
    with pytest.raises(StoreRejected) as e:
        sink._send(["bad", "worse"])  # nothing parses: 1.x says no "partial write"
    assert e.value.rejected == 2
    assert count(influxd, db, "m") == 3
    sink.close()


def test_wrong_password_is_unavailable_not_dropped(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    bad = sink_for(influxd, db, (writer[0], "not-the-password"))
    samples = make_samples(an_hour_start())[:5]
    with pytest.raises(StoreUnavailable, match="401.*check username and password") as e:
        bad.write(samples)
    assert "not-the-password" not in str(e.value) and "not-the-password" not in repr(bad)
    # The fan-out keeps the batch (its message stays unacknowledged) and retries; nothing counted.
    counters, stop = Counters(), threading.Event()
    stop.set()  # stop while waiting for the first retry
    assert Store([bad], counters, stop).write(samples) is False
    snap = counters.snapshot()
    assert snap["store_retries_influxdb"] == 1
    assert "stored_samples_influxdb" not in snap and "store_rejected_influxdb" not in snap
    assert count(influxd, db, "iface", "in_octets") == 0
    bad.close()


def test_user_without_write_is_unavailable(influxd: Influxd, db: str) -> None:
    influxd.create_user(f"r_{db}", "reader", {db: "READ"})
    sink = sink_for(influxd, db, (f"r_{db}", "reader"))
    with pytest.raises(StoreUnavailable, match="403.*GRANT WRITE"):
        sink.write(make_samples(an_hour_start())[:1])
    sink.close()


def test_missing_database_is_unavailable_until_created(influxd: Influxd, writer: tuple[str, str]) -> None:
    name = f"later_{writer[0]}"
    sink = Influx1Sink(influxd.url, name, username=influxd.admin_user, password=influxd.admin_password)
    samples = make_samples(an_hour_start())[:4]
    with pytest.raises(StoreUnavailable, match=r'404 database not found.*CREATE DATABASE "later_'):
        sink.write(samples)
    influxd.query(f"CREATE DATABASE {quote_ident(name)}")
    sink.write(samples)  # the operator fixed it; the same sink goes on
    assert count(influxd, name, "iface", "in_octets") == 4
    sink.close()


def test_missing_retention_policy_is_unavailable(influxd: Influxd, db: str, writer: tuple[str, str]) -> None:
    sink = sink_for(influxd, db, writer, retention_policy="nope")
    with pytest.raises(StoreUnavailable, match="retention policy not found.*retention_policy"):
        sink.write(make_samples(an_hour_start())[:1])
    sink.close()


def test_too_large_request_is_split(tmp_path: Path) -> None:
    """A server taking at most 2,000 bytes per request (413 past it): every sample still lands."""
    server = start_influxd(tmp_path / "small", max_body_size=2000)
    try:
        db = server.new_database()
        sink = Influx1Sink(server.url, db, username=server.admin_user, password=server.admin_password)
        t = an_hour_start()
        samples = [Sample("m", {"k": "v"}, {"v": i, "pad": "x" * 50}, t + i) for i in range(100)]
        sink.write(samples)  # ~8 KB in one request at first
        assert [r["v"] for r in server.points("SELECT v FROM m", db)] == list(range(100))
        sink.close()
    finally:
        server.close()


def test_store_down_is_unavailable() -> None:
    from services import free_port

    sink = Influx1Sink(f"http://127.0.0.1:{free_port()}", "db", timeout_s=1)
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        sink.write(make_samples(an_hour_start())[:1])
    sink.close()


# ---------------------------------------------------------------- a scripted 1.x-like server


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    lines: list[str]


@dataclass
class Fake1:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    answers: list[tuple[int, str]] = field(default_factory=list)  # (status, error), 204 once empty
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def fake() -> Iterator[Fake1]:
    fake = Fake1()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            u = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.requests.append(Request(u.path, parse_qs(u.query), headers, body.split("\n")))
            status, error = fake.answers.pop(0) if fake.answers else (204, "")
            msg = json.dumps({"error": error}).encode() if status >= 300 else b""
            self.send_response(status)
            for k, v in fake.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def plain(n: int, t0: int = 0) -> list[Sample]:
    return [Sample("m", {"k": "v"}, {"v": i}, t0 + i) for i in range(n)]


def test_request_shape(fake: Fake1) -> None:
    sink = Influx1Sink(fake.url, "net watch", retention_policy="rp1", username="collector", password="s3cret:pw")
    sink.write(plain(3))
    (req,) = fake.requests
    assert req.path == "/write"
    assert req.query == {"db": ["net watch"], "rp": ["rp1"], "precision": ["ns"]}
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"collector:s3cret:pw").decode()
    assert req.lines == ["m,k=v v=0i 0", "m,k=v v=1i 1", "m,k=v v=2i 2"]
    assert "s3cret" not in repr(sink) and "s3cret" not in sink._write_url
    sink.close()


def test_no_credentials_no_rp(fake: Fake1) -> None:
    sink = Influx1Sink(fake.url, "db")
    sink.write(plain(1))
    assert "authorization" not in fake.requests[0].headers
    assert fake.requests[0].query == {"db": ["db"], "precision": ["ns"]}
    sink.close()


def test_batches_never_mix_hours(fake: Fake1) -> None:
    """7 lines per request at most, and one UTC hour per request: 10 samples in hour A, 4 in
    hour B, then 3 more in hour A (sent with the first 10)."""
    a, b = 400_000 * HOUR, 400_001 * HOUR
    batch = plain(10, a) + plain(4, b) + plain(3, a + 100)
    sink = Influx1Sink(fake.url, "db", batch_size=7)
    sink.write(batch)
    hours = [{int(line.rsplit(" ", 1)[1]) // HOUR for line in r.lines} for r in fake.requests]
    assert [len(r.lines) for r in fake.requests] == [7, 6, 4]
    assert hours == [{400_000}, {400_000}, {400_001}]
    assert sorted(line for r in fake.requests for line in r.lines) == sorted(sink.encoder.encode_many(batch))
    sink.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, StoreRejected),
        (401, StoreUnavailable),
        (403, StoreUnavailable),
        (404, StoreUnavailable),
        (408, StoreUnavailable),
        (429, StoreUnavailable),
        (500, StoreUnavailable),
        (503, StoreUnavailable),
        (307, StoreUnavailable),  # a proxy redirecting: the url needs fixing, the samples are fine
    ],
)
def test_status_mapping(fake: Fake1, status: int, error: type[Exception]) -> None:
    fake.answers = [(status, "scripted failure")]
    sink = Influx1Sink(fake.url, "db")
    with pytest.raises(error, match=f"{status} scripted failure"):
        sink.write(plain(2))
    sink.write(plain(2))  # next attempt goes through
    sink.close()


def test_retry_after_is_honoured(fake: Fake1) -> None:
    class RecordingStop(threading.Event):
        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.waits.append(float(timeout or 0))
            return False

    fake.answers = [(429, "too many"), (503, "busy")]
    fake.headers = {"Retry-After": "7"}
    stop, counters = RecordingStop(), Counters()
    sink = Influx1Sink(fake.url, "db")
    assert Store([sink], counters, stop).write(plain(3))
    assert stop.waits == [7.0, 7.0]
    snap = counters.snapshot()
    assert snap["store_retry_after_influxdb"] == 2 and snap["stored_samples_influxdb"] == 3
    sink.close()


def test_partial_write_answers_are_counted(fake: Fake1) -> None:
    """1.x's wording, as 1.6.7 sends it (see the real-server tests above)."""
    fake.answers = [
        (
            400,
            'partial write: field type conflict: input field "v" on measurement "m" is type float, '
            "already exists as type integer dropped=2",
        ),
        (
            400,
            "partial write: unable to parse 'x': missing fields\nunable to parse 'y z': invalid field format dropped=0",
        ),
        (400, "unable to parse 'x': missing fields"),
        (400, "partial write: something new"),
    ]
    sink = Influx1Sink(fake.url, "db", batch_size=5)
    with pytest.raises(StoreRejected) as e:
        sink.write(plain(20))
    assert e.value.rejected == 2 + 2 + 5 + 5  # no count given: all five counted refused
    sink.close()


# ------------------------------------------------------------------ config and the fan-out


def write_config(tmp_path: Path, influx: str) -> Path:
    cfg = tmp_path / "collector.yaml"
    cfg.write_text(f"collector: {{data_dir: {tmp_path / 'data'}}}\nstorage:\n  sqlite: {{}}\n  influxdb:\n{influx}")
    return cfg


def config_error(tmp_path: Path, influx: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(write_config(tmp_path, influx))
    return str(e.value)


def test_fanout_sqlite_and_influx1_from_config(
    tmp_path: Path, influxd: Influxd, db: str, writer: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pw = tmp_path / "influx.pass"
    pw.write_text(writer[1] + "\n")
    pw.chmod(0o600)
    cfg = load(
        write_config(
            tmp_path,
            f"    version: 1\n    url: {influxd.url}\n    database: {db}\n"
            f"    username: {writer[0]}\n    password_file: {pw}\n",
        )
    )
    sinks = build_sinks(cfg)
    assert [s.name for s in sinks] == ["sqlite", "influxdb"]
    assert writer[1] not in repr(sinks) and writer[1] not in repr(cfg)
    t0 = an_hour_start()
    first = [Sample("room", {"site": "城关镇"}, {"temp": 21.5, "door": 0}, t0)]
    batch = [
        Sample("room", {"site": "城关镇"}, {"temp": 22.0 + i / 4, "door": i}, t0 + (i + 1) * S) for i in range(6)
    ] + [Sample("room", {"site": "城关镇"}, {"temp": 30.0, "door": 1.5}, t0 + 10 * S)]  # door: float vs integer
    counters = Counters()
    store = Store(sinks, counters, threading.Event())
    assert store.write(first) and store.write(batch)
    snap = counters.snapshot()
    assert snap["stored_samples_sqlite"] == 8
    assert snap["stored_samples_influxdb"] == 7 and snap["store_rejected_influxdb"] == 1
    rows = influxd.points("SELECT temp, door FROM room WHERE site = '城关镇'", db)
    assert [(r["time"], r["temp"], r["door"]) for r in rows] == [
        (s.time_ns, s.fields["temp"], s.fields["door"]) for s in first + batch[:6]
    ]
    store.close()
    sqlite = SqliteSink(cfg.sqlite_path)  # type: ignore[arg-type]
    assert len(sqlite.query("room")) == 8
    sqlite.close()


def test_config_v1_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NW_TEST_INFLUX_PW", "from-env")
    cfg = load(
        write_config(
            tmp_path,
            "    version: 1\n    url: http://127.0.0.1:8086\n    database: netwatch\n"
            "    retention_policy: autogen\n    username: collector\n    password_env: NW_TEST_INFLUX_PW\n",
        )
    )
    i = cfg.influxdb
    assert i is not None and i.version == 1 and i.database == "netwatch" and i.retention_policy == "autogen"
    assert i.resolved_password() == "from-env" and "from-env" not in repr(cfg)
    no_auth = load(write_config(tmp_path, "    version: 1\n    url: http://127.0.0.1:8086\n    database: d\n"))
    assert no_auth.influxdb is not None and no_auth.influxdb.resolved_password() == ""
    v2 = load(write_config(tmp_path, "    url: http://127.0.0.1:8086\n    bucket: b\n"))
    assert v2.influxdb is not None and v2.influxdb.version == 2


@pytest.mark.parametrize(
    ("influx", "expected"),
    [
        (
            "    version: 1\n    url: http://h:8086\n",
            "storage.influxdb: version 1 writes into a database: add database",
        ),
        (
            "    version: 1\n    url: http://h:8086\n    database: d\n    bucket: b\n    token: t\n",
            "storage.influxdb: bucket, token: InfluxDB 1.x (version: 1) has no org, bucket or token; remove them",
        ),
        (
            "    version: 1\n    url: http://h:8086\n    database: d\n    username: u\n",
            "storage.influxdb: username 'u' needs a password: add password_file or password_env",
        ),
        (
            "    version: 1\n    url: http://h:8086\n    database: d\n    password_env: HOME\n",
            "storage.influxdb: password_env needs a user: add username",
        ),
        (
            "    version: 1\n    url: http://h:8086\n    database: d\n    username: u\n"
            "    password_env: HOME\n    password_file: /etc/hostname\n",
            "give only one of password_env, password_file",
        ),
        (
            "    version: 1\n    url: http://h:8086\n    database: d\n    username: u\n"
            "    password_env: NW_TEST_SURELY_UNSET\n",
            "environment variable NW_TEST_SURELY_UNSET (password_env) is not set",
        ),
        (
            "    url: http://h:8086\n    database: d\n    username: u\n",
            "storage.influxdb: database, username only apply to InfluxDB 1.x: add version: 1",
        ),
        ("    version: 4\n    url: http://h:8086\n", "storage.influxdb.version"),
        ("    version: 1\n    url: http://h:8086\n    database: ''\n", "storage.influxdb.database"),
        ("    version: 1\n    url: http://h:8086\n    databse: d\n", "did you mean 'database'?"),
    ],
)
def test_config_errors_name_file_key_and_fix(tmp_path: Path, influx: str, expected: str) -> None:
    text = config_error(tmp_path, influx)
    assert str(tmp_path / "collector.yaml") in text
    assert expected in text, text


def test_password_file_must_exist(tmp_path: Path) -> None:
    text = config_error(
        tmp_path,
        "    version: 1\n    url: http://h:8086\n    database: d\n    username: u\n"
        f"    password_file: {tmp_path / 'missing.pass'}\n",
    )
    assert "storage.influxdb.password_file" in text and "missing.pass" in text


# ------------------------------------------------------------------------------ the fixture


def test_influxd_fixture(influxd: Influxd) -> None:
    """Loopback only, auth enforced, the RPC listener moved off :8088, and started by us."""
    assert influxd.url.startswith("http://127.0.0.1:") and influxd.running
    assert isinstance(influxd, Service) and influxd.pid is not None
    conf = influxd.config_path.read_text()
    assert f'bind-address = "127.0.0.1:{influxd.rpc_port}"' in conf and ":8088" not in conf
    anonymous = influxd.query("SHOW DATABASES", auth=None, check=False)
    assert anonymous["status"] == 401
    wrong = influxd.query("SHOW DATABASES", auth=(influxd.admin_user, "wrong"), check=False)
    assert wrong == {"error": "authorization failed", "status": 401}
    users = influxd.points("SHOW USERS")
    assert {"user": influxd.admin_user, "admin": True} in users


def test_influxd_storage_config_drives_the_collector(influxd: Influxd, db: str, tmp_path: Path) -> None:
    section = influxd.storage_config(db, tmp_path / "pw")
    assert (tmp_path / "pw").stat().st_mode & 0o777 == 0o600
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"collector": {"data_dir": str(tmp_path / "d")}, "storage": {"influxdb": section}}))
    (sink,) = build_sinks(load(cfg))
    sink.write([Sample("m", {"k": "v"}, {"v": 42}, an_hour_start())])
    sink.close()
    assert [r["v"] for r in influxd.points("SELECT v FROM m", db)] == [42]


def test_example_config_both_flavours(tmp_path: Path) -> None:
    """configs/collector.example.yaml loads, and so does its commented InfluxDB 1.x block put in
    place of the v2 one."""
    example = Path(__file__).parents[3] / "configs" / "collector.example.yaml"
    v2 = load(example, check_files=False).influxdb
    assert v2 is not None and v2.version == 2 and v2.bucket == "netwatch"
    lines = example.read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("  influxdb:")))
    alt = lines.index(next(line for line in lines if line.startswith("  # influxdb:")))
    end = alt
    while end < len(lines) and lines[end].startswith("  # "):
        end += 1
    uncommented = ["  " + line[4:] for line in lines[alt:end]]
    (tmp_path / "c.yaml").write_text("\n".join(lines[:start] + uncommented + lines[end:]) + "\n")
    v1 = load(tmp_path / "c.yaml", check_files=False).influxdb
    assert v1 is not None and v1.version == 1 and v1.database == "netwatch" and v1.username == "netwatch"
    assert v1.password_file is not None and v1.password_file.name == "influx.pass"
