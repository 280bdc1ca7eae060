"""InfluxSink against a real VictoriaMetrics (what lands, idempotence, store down) and against a
scripted HTTP server (status mapping, batching, auth header, TLS)."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from services import VictoriaMetrics, free_port, make_tls_files, start_victoria_metrics

from collector.storage import Sink, StoreRejected, StoreUnavailable
from collector.storage.influx import InfluxSink
from probes.model import Sample

pytestmark = pytest.mark.integration

MS = 1_000_000
N = 30  # points per series

SERIES_TAGS = [
    # Chinese names, and values that need every kind of escape on the way in.
    {"site": "城关镇", "agent": "ag 1", "device": "核心交换机", "ifname": "Gi0/0/1"},
    {"site": "县中心,机房=2", "agent": "ag-2", "device": "sw a,b=c", "ifname": "Te1/0/1 uplink"},
    {"site": "s3", "agent": "ag-3", "device": "DOMAIN\\pdu", "ifname": 'quote"d'},
]


def make_samples(base_ns: int, *, offset: int = 0) -> list[Sample]:
    out = []
    for k, tags in enumerate(SERIES_TAGS):
        for i in range(offset, offset + N):
            out.append(
                Sample(
                    "iface",
                    tags,
                    {
                        "in_octets": 10**11 + 1000 * i + k,
                        "in_bps": 0.1 + i * 0.25 + k,
                        "up": i % 3 != 0,
                        "status": "up",
                    },
                    # Whole seconds plus a sub-millisecond part the server trims away.
                    base_ns + i * 1000 * MS + 123_456,
                )
            )
    return out


def vm_sink(vm: VictoriaMetrics, **kw: object) -> InfluxSink:
    return InfluxSink(vm.url, "netwatch", "metrics", "", timeout_s=2, **kw)  # type: ignore[arg-type]


def by_series(export: list[dict]) -> dict[tuple, dict]:
    return {tuple(sorted(s["metric"].items())): s for s in export}


def base_time() -> int:
    return (time.time_ns() // (1000 * MS) - 3600) * 1000 * MS  # an hour ago, on a whole second


def test_samples_land_exactly(victoria_metrics: VictoriaMetrics) -> None:
    sink = vm_sink(victoria_metrics)
    assert isinstance(sink, Sink)
    base = base_time()
    samples = make_samples(base)
    sink.write(samples)
    # 3 series x 4 fields (VictoriaMetrics keeps the string field as a 0-valued series).
    got = by_series(victoria_metrics.wait_for_points('{__name__=~"iface_.*"}', 3 * 4 * N))
    assert len(got) == 12
    want_ts = [(base + i * 1000 * MS) // MS for i in range(N)]
    for k, tags in enumerate(SERIES_TAGS):
        expected = {
            "in_octets": [float(10**11 + 1000 * i + k) for i in range(N)],
            "in_bps": [0.1 + i * 0.25 + k for i in range(N)],
            "up": [0.0 if i % 3 == 0 else 1.0 for i in range(N)],
            "status": [0.0] * N,
        }
        for fname, values in expected.items():
            # Name is measurement_field, the tags are the labels, nothing else (no "db").
            s = got[tuple(sorted({"__name__": f"iface_{fname}", **tags}.items()))]
            assert s["timestamps"] == want_ts
            assert s["values"] == values, fname
    sink.close()


def test_rewrite_does_not_duplicate_with_dedup(victoria_metrics: VictoriaMetrics) -> None:
    sink = vm_sink(victoria_metrics, drop_string_fields=True)
    samples = make_samples(base_time())
    sink.write(samples)
    match = '{__name__=~"iface_.*"}'
    first = victoria_metrics.wait_for_points(match, 3 * 3 * N)
    sink.write(samples)  # a redelivered batch
    sink.write(samples[5:40])
    victoria_metrics.flush()  # new points of existing series are searchable right after a flush
    again = victoria_metrics.export(match)
    assert sum(len(s["values"]) for s in again) == 3 * 3 * N
    assert by_series(again) == by_series(first)
    assert not any(s["metric"]["__name__"] == "iface_status" for s in again)  # string field dropped
    sink.close()


def test_without_dedup_victoria_metrics_stores_duplicates(tmp_path: Path) -> None:
    """Documents the server default: why the fixture (and production) use -dedup.minScrapeInterval."""
    with start_victoria_metrics(tmp_path / "vm", dedup=None) as vm:
        sink = vm_sink(vm)
        s = [Sample("dup", {"k": "v"}, {"v": 1}, base_time())]
        sink.write(s)
        vm.wait_for_points("dup_v", 1)
        sink.write(s)
        assert vm.wait_for_points("dup_v", 2)[0]["values"] == [1, 1]
        sink.close()


def test_store_down_fails_fast_then_recovers(victoria_metrics: VictoriaMetrics) -> None:
    sink = vm_sink(victoria_metrics)
    base = base_time()
    sink.write(make_samples(base)[:1])
    victoria_metrics.kill()
    t = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot reach"):
        sink.write(make_samples(base, offset=N))
    assert time.monotonic() - t < 2
    victoria_metrics.start()
    sink.write(make_samples(base, offset=N))  # same sink, new connection
    got = victoria_metrics.wait_for_points("iface_in_octets", 3 * N)
    assert sum(len(s["values"]) for s in got) >= 3 * N
    sink.close()


def test_hung_server_times_out() -> None:
    """A server that accepts and never answers must not hang the writer thread."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        sink = InfluxSink(f"http://127.0.0.1:{srv.getsockname()[1]}", "o", "b", "", timeout_s=0.5)
        t = time.monotonic()
        with pytest.raises(StoreUnavailable):
            sink.write(make_samples(base_time())[:3])
        assert time.monotonic() - t < 3
        sink.close()


# ------------------------------------------------------------------- a scripted HTTP server


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    lines: list[str]


@dataclass
class FakeInflux:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    # status to answer per request (popped from the front); 204 once empty
    statuses: list[int] = field(default_factory=list)
    max_lines: int | None = None  # answer 413 above this many lines
    headers: dict[str, str] = field(default_factory=dict)


def _serve(fake: FakeInflux, tls: ssl.SSLContext | None = None) -> Iterator[FakeInflux]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            fake.requests.append(Request(self.path, dict(self.headers), body.split("\n")))
            if fake.max_lines is not None and body.count("\n") + 1 > fake.max_lines:
                status = 413
            else:
                status = fake.statuses.pop(0) if fake.statuses else 204
            self.send_response(status)
            for k, v in fake.headers.items():
                self.send_header(k, v)
            msg = b'{"code":"x","message":"scripted failure"}' if status >= 300 else b""
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    fake.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    th = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeInflux]:
    yield from _serve(FakeInflux())


def samples(n: int) -> list[Sample]:
    return [Sample("m", {"k": "v"}, {"v": i}, i) for i in range(n)]


def test_request_shape_and_token(fake: FakeInflux) -> None:
    sink = InfluxSink(fake.url, "my-org", "my-bucket", "s3cret-token")
    sink.write(samples(3))
    (req,) = fake.requests
    assert req.path.startswith("/api/v2/write?")
    assert {"org=my-org", "bucket=my-bucket", "precision=ns"} <= set(req.path.split("?")[1].split("&"))
    assert req.headers["Authorization"] == "Token s3cret-token"
    assert req.lines == ["m,k=v v=0i 0", "m,k=v v=1i 1", "m,k=v v=2i 2"]
    assert "s3cret" not in repr(sink) and "s3cret" not in str(vars(sink).get("url"))
    sink.close()


def test_empty_token_sends_no_authorization(fake: FakeInflux) -> None:
    sink = InfluxSink(fake.url, "", "b", "")
    sink.write(samples(1))
    assert "Authorization" not in fake.requests[0].headers
    sink.close()


def test_batches(fake: FakeInflux) -> None:
    sink = InfluxSink(fake.url, "o", "b", "t", batch_size=7)
    sink.write(samples(20))
    assert [len(r.lines) for r in fake.requests] == [7, 7, 6]
    sink.write([])
    assert len(fake.requests) == 3
    sink.close()


def test_too_large_is_split(fake: FakeInflux) -> None:
    fake.max_lines = 3
    sink = InfluxSink(fake.url, "o", "b", "t")
    sink.write(samples(10))
    accepted = [line for r in fake.requests if len(r.lines) <= 3 for line in r.lines]
    assert sorted(accepted) == sorted(f"m,k=v v={i}i {i}" for i in range(10))
    sink.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, StoreRejected),
        (422, StoreRejected),
        (401, StoreUnavailable),  # a bad token is configuration, not bad data: keep the samples
        (403, StoreUnavailable),
        (404, StoreUnavailable),
        (429, StoreUnavailable),
        (500, StoreUnavailable),
        (503, StoreUnavailable),
    ],
)
def test_status_mapping(fake: FakeInflux, status: int, error: type[Exception]) -> None:
    fake.statuses = [status]
    sink = InfluxSink(fake.url, "o", "b", "t")
    with pytest.raises(error, match=str(status)):
        sink.write(samples(2))
    sink.write(samples(2))  # next attempt goes through
    sink.close()


def test_retry_after_is_passed_on(fake: FakeInflux) -> None:
    fake.statuses = [503]
    fake.headers = {"Retry-After": "7"}
    sink = InfluxSink(fake.url, "o", "b", "t")
    with pytest.raises(StoreUnavailable) as e:
        sink.write(samples(1))
    assert e.value.retry_after_s == 7.0
    sink.close()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_with_ca_file(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert, files.key)
    for fake in _serve(FakeInflux(), tls=ctx):
        good = InfluxSink(fake.url, "o", "b", "t", ca_file=str(files.ca_cert))
        good.write(samples(1))
        untrusted = InfluxSink(fake.url, "o", "b", "t", timeout_s=2)
        with pytest.raises(StoreUnavailable):
            untrusted.write(samples(1))
        unverified = InfluxSink(fake.url, "o", "b", "t", verify_tls=False)
        unverified.write(samples(1))
        assert len([r for r in fake.requests if r.lines]) == 2
        for s in (good, untrusted, unverified):
            s.close()


def test_port_nobody_listens_on() -> None:
    sink = InfluxSink(f"http://127.0.0.1:{free_port()}", "o", "b", "t", timeout_s=1)
    with pytest.raises(StoreUnavailable):
        sink.write(samples(1))
    sink.close()


# -- the store stage over this sink: retry_after honoured, partial refusals counted exactly ----------
class _RecordingStop(threading.Event):
    """The store stage's stop event; records each wait it is asked for instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        return False


def test_store_stage_waits_the_retry_after_the_store_asked_for(fake: FakeInflux) -> None:
    from collector.stats import Counters
    from collector.storage.fanout import FIRST_DELAY_S, Store

    # 429 with Retry-After: 7, then 503 without one, then accepted.
    fake.statuses = [429, 503]
    fake.headers = {"Retry-After": "7"}
    stop, counters = _RecordingStop(), Counters()
    sink = InfluxSink(fake.url, "o", "b", "t")
    store = Store([sink], counters, stop)
    assert store.write(samples(3)) is True
    fake.headers = {}
    # The store's own word (7 s) for both: the header came on both answers; the backoff
    # (FIRST_DELAY_S) would have been used had the store said nothing.
    assert stop.waits == [7.0, 7.0] and FIRST_DELAY_S != 7.0
    snap = counters.snapshot()
    assert snap["store_retries_influxdb"] == 2 and snap["store_retry_after_influxdb"] == 2
    assert snap["stored_samples_influxdb"] == 3
    sink.close()


def test_store_stage_without_retry_after_backs_off(fake: FakeInflux) -> None:
    from collector.stats import Counters
    from collector.storage.fanout import Store

    fake.statuses = [503, 503, 503]
    stop = _RecordingStop()
    sink = InfluxSink(fake.url, "o", "b", "t")
    assert Store([sink], Counters(), stop).write(samples(1))
    assert stop.waits == [0.5, 1.0, 2.0]
    sink.close()


def test_partly_refused_batch_is_counted_exactly(fake: FakeInflux) -> None:
    """10 samples in requests of 3 lines; the server refuses the second request (400), and two
    samples have no storable field. Stored: 8 - 3 = 5; refused: 3 + 2 = 5 — and the requests
    after the refused one were still sent."""
    from collector.stats import Counters
    from collector.storage.fanout import Store

    batch = samples(8) + [
        Sample("m", {"k": "v"}, {"v": float("nan")}, 1),
        Sample("m", {"k": "v"}, {"v": 2**64}, 2),
    ]
    fake.statuses = [204, 400]
    counters = Counters()
    sink = InfluxSink(fake.url, "o", "b", "t", batch_size=3)
    assert Store([sink], counters, _RecordingStop()).write(batch)
    sent = [r.lines for r in fake.requests]
    assert [len(x) for x in sent] == [3, 3, 2]  # 8 storable lines in three requests, none skipped
    stored = sent[0] + sent[2]
    snap = counters.snapshot()
    assert snap["stored_samples_influxdb"] == len(stored) == 5
    assert snap["store_rejected_influxdb"] == 5
    sink.close()
