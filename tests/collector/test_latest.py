"""collector/latest.py: each site's latest key values for the status page, kept at ingest so they
show whatever the store — first as a unit, then through a real collector that stores only to
VictoriaMetrics (no SQLite to read back), checked against what VictoriaMetrics itself answers."""

from __future__ import annotations

import re
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import Mosquitto, VictoriaMetrics

from collector import config as collector_config
from collector import latest as latest_mod
from collector.api_page import PageData, QueryUnsupported, status_page
from collector.latest import LatestValues
from collector.service import Collector
from probes.model import Sample
from protocol import envelope
from protocol.topics import Topics

NOW = time.time_ns()


def room(site: str, sensor: str, t: float, rh: float, at: int = NOW) -> Sample:
    return Sample(
        "room_env", {"site": site, "agent": "a", "sensor": sensor}, {"temperature_c": t, "humidity_pct": rh}, at
    )


def ups(site: str, device: str, on_battery_s: int, runtime: float | None, at: int = NOW) -> Sample:
    fields: dict[str, int | float | str | bool] = {"on_battery_s": on_battery_s, "charge_pct": 80.0}
    if runtime is not None:
        fields["runtime_min"] = runtime
    return Sample("ups", {"site": site, "agent": "a", "device": device}, fields, at)


def ping(site: str, target: str, loss: float, rtt: float | None, at: int = NOW, **tags: str) -> Sample:
    fields: dict[str, int | float | str | bool] = {"loss_pct": loss, "sent": 5}
    if rtt is not None:
        fields["rtt_avg_ms"] = rtt
    return Sample("icmp", {"site": site, "agent": "a", "target": target, **tags}, fields, at)


def values(lv: LatestValues, now_ns: int = NOW) -> dict[str, dict[str, float]]:
    return {site: {k: r.value for k, r in vals.items()} for site, vals in lv.snapshot(now_ns).items()}


def test_the_worst_of_each_kind_with_its_partner() -> None:
    lv = LatestValues()
    lv.feed(
        [
            room("t1", "main", 24.0, 55.0),
            room("t1", "ntc1", 29.5, 41.0),  # the hottest, and its own humidity
            room("t1", "ntc1", 31.0, 40.0, at=NOW - 10**9),  # older: does not replace the newer reading
            ups("t1", "ups-1", 0, 42.0),
            ups("t1", "ups-2", 120, 18.5),  # on battery for 2 min, the lower runtime
            ping("t1", "uplink-county", 0.0, 3.25),
            ping("t1", "uplink-backup", 20.0, 9.5),  # the worse uplink, and its RTT
            ping("t1", "portal", 100.0, None),  # not an uplink: ignored
            ping("city", "to-county-a", 40.0, 12.0, link="county-a"),  # the parent's probe of county-a's link
            Sample("host_cpu", {"site": "t1"}, {"cpu_pct": 99.0}, NOW),  # not a key value
        ]
    )
    assert values(lv) == {
        "t1": {
            "temperature_c": 29.5,
            "humidity_pct": 41.0,
            "on_battery_s": 120.0,
            "runtime_min": 18.5,
            "charge_pct": 80.0,
            "uplink_loss_pct": 20.0,
            "uplink_rtt_ms": 9.5,
        },
        "county-a": {"uplink_loss_pct": 40.0, "uplink_rtt_ms": 12.0},
    }
    # a newer reading replaces the old one of the same series
    lv.feed([room("t1", "ntc1", 22.0, 60.0, at=NOW + 10**9)])
    assert values(lv, NOW + 10**9)["t1"]["temperature_c"] == 24.0  # main is now the hottest
    assert values(lv, NOW + 10**9)["t1"]["humidity_pct"] == 55.0


def test_bounded_stale_and_hostile_input() -> None:
    lv = LatestValues(accept_site=lambda s: s in {"t1", "county-a"})
    lv.feed(
        [
            ping("t1", "x", 0.0, 1.0, link="made-up-site"),  # a link to a site not in the tree
            room("elsewhere", "main", 20.0, 50.0),
            Sample("room_env", {"site": "t1", "sensor": "s"}, {"temperature_c": "hot", "humidity_pct": True}, NOW),
        ]
    )
    assert values(lv) == {}
    lv = LatestValues()
    # two fields a sensor: half as many sensors fill the site
    lv.feed(room("t1", f"s{i}", 20.0 + i / 100, 50.0) for i in range(latest_mod.MAX_SERIES_PER_SITE // 2))
    assert lv.dropped == 0
    lv.feed([room("t1", "one-too-many", 99.0, 99.0)])
    assert lv.dropped == 2 and values(lv)["t1"]["temperature_c"] < 99  # both fields refused
    later = NOW + int((latest_mod.STALE_S + 1) * 1e9)
    assert values(lv, later) == {}


def test_page_shows_the_values_and_flags_the_bad_ones() -> None:
    lv = LatestValues()
    lv.feed([room("t1", "main", 28.4, 45.0), ups("t1", "ups-1", 300, 2.5), ping("t1", "uplink", 7.5, 31.25)])
    page = status_page(
        PageData(
            lang="en",
            user="u",
            role="viewer",
            agents=[{"id": "a", "site": "t1", "status": "online", "last_seen_ns": NOW, "version": "1.2"}],
            stats={},
            sites=[],
            latest=lv.as_dicts(),
            alerts=[],
            silences=[],
        )
    )
    spans = dict(re.findall(r'<span class="kv[^"]*" data-key="(\w+)"[^>]*>(.*?)</span>', page))
    text = {k: re.sub("<[^>]+>", "", v) for k, v in spans.items()}
    assert text == {
        "uplink": "uplink loss 7.5 % · 31.2 ms",
        "room": "room 28.4 °C · 45 %",
        "ups": "UPS ON BATTERY 5 min · runtime 2.5 min · charge 80 %",
    }
    # loss over 5 %, a room above 27 °C (GB 50174), a UPS on battery: flagged
    assert re.search(r'class="kv bad" data-key="uplink"', page) and re.search(r'class="kv warn" data-key="room"', page)
    assert re.search(r'class="kv bad" data-key="ups"', page)
    zh = status_page(PageData(lang="zh", user="u", role="viewer", agents=[], sites=[], latest=lv.as_dicts(), alerts=[]))
    assert "data-key" not in zh  # no agent, no site in the tree: nothing to hang the values on


@pytest.mark.parametrize(
    ("sites", "en", "zh"),
    [
        (["t1"], "1 site · agents online 1/1", "1 个站点 · 节点在线 1/1"),
        (["t1", "t2"], "2 sites · agents online 1/2", "2 个站点 · 节点在线 1/2"),
    ],
)
def test_page_counts_sites_in_singular_and_plural(sites: list[str], en: str, zh: str) -> None:
    agents = [{"id": f"a{i}", "site": s, "status": "online" if i == 0 else "offline"} for i, s in enumerate(sites)]
    for lang, want in (("en", en), ("zh", zh)):
        page = status_page(PageData(lang=lang, user="u", role="viewer", agents=agents, sites=[], alerts=[]))
        (line,) = re.findall(r'<section id="summary".*?<p class="muted">(.*?)</p>', page, re.S)
        assert re.sub(r"<[^>]+>", "", line).startswith(want + " · "), line


@pytest.mark.integration
def test_values_show_with_only_victoria_metrics_behind(
    tmp_path: Path, mosquitto: Mosquitto, victoria_metrics: VictoriaMetrics
) -> None:
    (tmp_path / "c.yaml").write_text(
        f"mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, client_id: latest-{time.time_ns()}}}\n"
        f"storage:\n  influxdb: {{url: '{victoria_metrics.url}', bucket: netwatch, drop_string_fields: true}}\n"
        "api: {enabled: false}\n"
        f"collector: {{data_dir: {tmp_path / 'data'}}}\n"
    )
    cfg = collector_config.load(tmp_path / "c.yaml")
    assert cfg.sqlite_path is None
    col = Collector(cfg)
    col.start()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latest-pub")
    try:
        assert col.connected.wait(10)
        c.connect("127.0.0.1", mosquitto.port)
        c.loop_start()
        now = time.time_ns() // 10**6 * 10**6  # whole milliseconds: VictoriaMetrics keeps no more
        batches = [
            [
                room("town-1", "main", 21.0 + seq, 50.0 - seq, at=now + seq * 10**6),
                ups("town-1", "ups-1", 0, 40.0 - seq, at=now + seq * 10**6),
            ]
            for seq in range(1, 4)
        ]
        for seq, samples in enumerate(batches, 1):
            c.publish(
                Topics().agent("a1", "metrics"), envelope.encode("a1", "town-1", seq, samples), qos=1
            ).wait_for_publish(5)
        deadline = time.monotonic() + 20
        while col.stats().get("stored_samples", 0) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = {k: v["value"] for k, v in col.latest()["town-1"].items()}
        with pytest.raises(QueryUnsupported):
            col.query("room_env", agent=None, since_ns=0, limit=10)
    finally:
        c.disconnect()
        c.loop_stop()
        col.stop()
    # the engine's own answer: the newest point of each series, as VictoriaMetrics stored it
    stored = {}
    for name in ("room_env_temperature_c", "room_env_humidity_pct", "ups_runtime_min", "ups_on_battery_s"):
        (series,) = victoria_metrics.wait_for_points(f'{{__name__="{name}"}}', 3)
        stored[name] = series["values"][series["timestamps"].index(max(series["timestamps"]))]
    assert got == {
        "temperature_c": stored["room_env_temperature_c"],
        "humidity_pct": stored["room_env_humidity_pct"],
        "runtime_min": stored["ups_runtime_min"],
        "on_battery_s": stored["ups_on_battery_s"],
        "charge_pct": 80.0,
    }
    assert got["temperature_c"] == 24.0 and got["runtime_min"] == 37.0  # the last batch (seq 3), as fed
