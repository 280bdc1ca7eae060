"""Writes whose outcome is unknown, against a VictoriaMetrics that keeps duplicates (no
``-dedup.minScrapeInterval``): the sink asks the store what it holds and writes only the rest,
directly and from the collector's local spool after a restart. The oracle is the store's own
raw export, which shows every copy of a point."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import VictoriaMetrics, free_port, start_victoria_metrics

from collector.storage import CheckedSink
from collector.storage.buffered import BufferedSink
from collector.storage.influx import InfluxSink
from probes.model import Sample

pytestmark = pytest.mark.integration

MS = 1_000_000
TAGS = [
    {"agent": "城关镇-1", "site": "城关镇", "device": "sw a,b=c"},
    {"agent": "ag 2", "site": "s2", "device": "DOMAIN\\pdu", "ifname": 'quote"d'},
]


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    v = start_victoria_metrics(tmp_path_factory.mktemp("vm-nodedup"), dedup=None)
    yield v
    v.close()


def samples(measurement: str, n: int, base_ns: int) -> list[Sample]:
    return [
        Sample(
            measurement,
            tags,
            {"rtt_ms": 0.5 + i, "ok": i % 2 == 0, "n": 10 + i, "why": "text"},
            base_ns + i * 1000 * MS + 77,
        )
        for tags in TAGS
        for i in range(n)
    ]


def copies(vm: VictoriaMetrics, measurement: str, want: int) -> Counter[tuple[str, str, int]]:
    """How many copies of each (metric, agent, ms) point the store holds."""
    got = vm.wait_for_points(f'{{__name__=~"{measurement}_.*"}}', want, timeout_s=15)
    time.sleep(1.2)  # a late copy of a new series would surface within ~1 s: look again
    vm.flush()
    got = vm.export(f'{{__name__=~"{measurement}_.*"}}')
    return Counter((s["metric"]["__name__"], s["metric"]["agent"], ts) for s in got for ts in s["timestamps"])


def base() -> int:
    return (time.time_ns() // (1000 * MS) - 600) * 1000 * MS


def test_write_unsure_writes_only_what_is_missing(vm: VictoriaMetrics) -> None:
    sink = InfluxSink(vm.url, "netwatch", "metrics", "", timeout_s=5, drop_string_fields=True)
    assert isinstance(sink, CheckedSink)
    b = base()
    first = samples("unsure_a", 10, b)  # 2 series x 10 samples, 3 numeric fields each: 60 points
    sink.write(first[:7] + first[10:13])  # an earlier attempt landed partly: 10 of 20 samples
    later = samples("unsure_a", 15, b)  # the redelivery, plus 5 new samples per series
    assert len(sink.missing(later)) == 30 - 10
    sink.write_unsure(later)
    got = copies(vm, "unsure_a", 2 * 15 * 3)
    assert len(got) == 2 * 15 * 3 and set(got.values()) == {1}, got.most_common(3)
    # the same with a plain write: the duplicates this guards against (the test's control)
    sink.write(later[:4])
    got = copies(vm, "unsure_a", 2 * 15 * 3 + 4 * 3)
    assert sum(got.values()) == 2 * 15 * 3 + 4 * 3 and max(got.values()) == 2
    sink.close()


def test_spooled_batch_sent_before_a_crash_is_not_sent_again(vm: VictoriaMetrics, tmp_path: Path) -> None:
    """The collector died after the store took the oldest spooled batch and before the spool row
    was deleted: the next process checks that row, and sends the rows behind it as they are."""
    b = base()
    a, c = samples("unsure_b", 6, b), samples("unsure_b", 6, b + 60_000 * MS)
    path = tmp_path / "spool.db"
    down = BufferedSink(InfluxSink(f"http://127.0.0.1:{free_port()}", "o", "b", "", timeout_s=1), path, retry_s=3600)
    down.write(a)  # store down: spooled, oldest
    down.write(c)  # joins the backlog
    down.close()
    direct = InfluxSink(vm.url, "netwatch", "metrics", "", timeout_s=5, drop_string_fields=True)
    direct.write(a)  # what the dead process's drainer had sent before it was killed
    direct.close()
    sink = BufferedSink(
        InfluxSink(vm.url, "netwatch", "metrics", "", timeout_s=5, drop_string_fields=True), path, retry_s=0.2
    )
    deadline = time.monotonic() + 30
    while sink.stats().batches and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sink.stats().batches == 0
    assert sink.unsure_checked == 1  # the oldest row only
    got = copies(vm, "unsure_b", 2 * 12 * 3)
    assert len(got) == 2 * 12 * 3 and set(got.values()) == {1}, got.most_common(3)
    sink.close()
