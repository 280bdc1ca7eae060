"""The "cut off" line of a site_unreachable alert (collector/alerting/topology.py), word for word in
English and Chinese: one of a kind is singular in English ("1 county"), Chinese has no plural."""

from __future__ import annotations

from typing import Any

import pytest

from collector.alerting.topology import Topology, TopologyFile


def _topology(sites: list[dict[str, Any]]) -> Topology:
    return Topology(TopologyFile.model_validate({"sites": sites}))


def _summary(topo: Topology, agents_down: set[str]) -> tuple[str, str]:
    (cut,) = topo.cut_off([], agents_down)
    return cut.summary(topo, "en"), cut.summary(topo, "zh")


def test_one_of_each_is_singular() -> None:
    topo = _topology(
        [
            {
                "id": "city",
                "kind": "city",
                "agents": ["c"],
                "children": [
                    {
                        "id": "county-a",
                        "name": {"en": "County A", "zh": "甲县"},
                        "kind": "county",
                        "agents": ["a"],
                        "devices": ["sw-a"],
                        "children": [{"id": "t1", "kind": "township", "agents": ["t1"]}],
                    }
                ],
            }
        ]
    )
    assert _summary(topo, {"a", "t1"}) == (
        "County A unreachable — 1 township, 1 device cut off",
        "甲县 不可达 — 1 个乡镇、1 台设备失联",
    )


@pytest.mark.parametrize(
    ("n", "en", "zh"),
    [
        (
            1,
            "prov unreachable — 1 city, 1 county, 1 district, 0 devices cut off",
            "1 个市、1 个县、1 个district、0 台设备",
        ),
        (
            2,
            "prov unreachable — 2 cities, 2 counties, 2 districts, 0 devices cut off",
            "2 个市、2 个县、2 个district、0 台设备",
        ),
    ],
)
def test_kinds_counted_in_their_own_words(n: int, en: str, zh: str) -> None:
    """A province over n cities, each with one county and one district (a kind not in the word list)."""
    cities = [
        {
            "id": f"c{i}",
            "kind": "city",
            "agents": [f"c{i}"],
            "children": [
                {"id": f"k{i}", "kind": "county", "agents": [f"k{i}"]},
                {"id": f"d{i}", "kind": "district", "agents": [f"d{i}"]},
            ],
        }
        for i in range(n)
    ]
    topo = _topology([{"id": "prov", "kind": "province", "agents": ["p"], "children": cities}])
    assert _summary(topo, {"p"}) == (en, f"prov 不可达 — {zh}失联")


def test_many_devices_and_townships_are_plural() -> None:
    townships = [{"id": f"t{i}", "kind": "township", "agents": [f"t{i}"], "devices": [f"ups-{i}"]} for i in range(3)]
    topo = _topology(
        [{"id": "county-b", "kind": "county", "agents": ["b"], "devices": ["sw-b"], "children": townships}]
    )
    assert _summary(topo, {"b", "t0", "t1", "t2"}) == (
        "county-b unreachable — 3 townships, 4 devices cut off",
        "county-b 不可达 — 3 个乡镇、4 台设备失联",
    )
