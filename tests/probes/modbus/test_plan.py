"""The read planner: adjacent points merge into as few requests as the device allows, and a
refused request splits where a hole most likely is."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from probes.modbus.plan import Block, Limits, plan, split
from probes.modbus.registermap import Point


def pts(*specs: tuple[Any, ...]) -> list[Point]:
    """(table, address[, type]) -> points named p0, p1, …"""
    out = []
    for i, spec in enumerate(specs):
        table, address, *rest = spec
        dtype = rest[0] if rest else ("bit" if table in ("coil", "discrete") else "uint16")
        extra: dict[str, Any] = {"bit": 0} if dtype == "bit" and table in ("holding", "input") else {}
        if dtype == "string":
            extra = {"length": 10}
        out.append(Point.model_validate({"name": f"p{i}", "table": table, "address": address, "type": dtype, **extra}))
    return out


def shape(blocks: list[Block]) -> list[tuple[str, int, int]]:
    return [(b.table, b.start, b.count) for b in blocks]


def test_adjacent_and_overlapping_points_share_one_request() -> None:
    p = pts(("holding", 0), ("holding", 1), ("holding", 2, "float32"), ("holding", 4, "bit"), ("holding", 4, "bit"))
    assert shape(plan(p, Limits())) == [("holding", 0, 5)]


def test_gap_fill_reads_across_small_gaps_only() -> None:
    p = pts(("holding", 0), ("holding", 9), ("holding", 30))
    assert shape(plan(p, Limits(gap_fill=8))) == [("holding", 0, 10), ("holding", 30, 1)]
    assert shape(plan(p, Limits(gap_fill=0))) == [("holding", 0, 1), ("holding", 9, 1), ("holding", 30, 1)]
    assert shape(plan(p, Limits(gap_fill=30))) == [("holding", 0, 31)]


def test_the_device_limit_caps_a_request() -> None:
    p = pts(*[("input", a) for a in range(300)])
    assert shape(plan(p, Limits())) == [("input", 0, 125), ("input", 125, 125), ("input", 250, 50)]
    assert shape(plan(p[:10], Limits(max_registers=4))) == [("input", 0, 4), ("input", 4, 4), ("input", 8, 2)]
    # a wide value is never cut in two
    wide = pts(("holding", 0), ("holding", 3, "float32"))
    assert shape(plan(wide, Limits(max_registers=4))) == [("holding", 0, 1), ("holding", 3, 2)]


def test_bits_use_their_own_limit_and_gap() -> None:
    p = pts(*[("discrete", a) for a in range(0, 2500, 5)], ("coil", 0), ("coil", 100), ("coil", 200))
    blocks = plan(p, Limits())
    assert shape(blocks)[:2] == [("coil", 0, 201), ("discrete", 0, 1996)]  # gap_fill 8 regs = 128 bits
    assert all(b.count <= 2000 for b in blocks)
    assert shape(plan(p[-3:], Limits(gap_fill=1))) == [("coil", 0, 1), ("coil", 100, 1), ("coil", 200, 1)]


def test_tables_never_mix_and_each_point_is_read_once() -> None:
    p = pts(("input", 5), ("holding", 5), ("coil", 5), ("discrete", 5), ("holding", 6))
    blocks = plan(p, Limits())
    assert shape(blocks) == [("coil", 5, 1), ("discrete", 5, 1), ("holding", 5, 2), ("input", 5, 1)]
    assert sorted(i for b in blocks for i in b.points) == [0, 1, 2, 3, 4]


def test_split_cuts_at_the_widest_gap() -> None:
    p = pts(("holding", 0), ("holding", 1), ("holding", 6), ("holding", 7), ("holding", 8))
    (block,) = plan(p, Limits())
    assert shape([block]) == [("holding", 0, 9)]
    halves = split(block, p)
    assert halves is not None and shape(halves) == [("holding", 0, 2), ("holding", 6, 3)]


def test_split_of_a_contiguous_run_cuts_in_the_middle_then_down_to_single_points() -> None:
    p = pts(*[("holding", a) for a in range(8)])
    (block,) = plan(p, Limits())
    halves = split(block, p)
    assert halves is not None and shape(halves) == [("holding", 0, 4), ("holding", 4, 4)]
    quarters = split(halves[1], p)
    assert quarters is not None and shape(quarters) == [("holding", 4, 2), ("holding", 6, 2)]
    single = split(Block("holding", 7, 1, (7,)), p)
    assert single is None


def test_points_sharing_a_register_cannot_be_split_apart() -> None:
    p = pts(("input", 0, "bit"), ("input", 0, "bit"))
    (block,) = plan(p, Limits())
    assert split(block, p) is None


def test_describe_names_the_range() -> None:
    assert Block("holding", 0, 10, (0,)).describe() == "holding 0-9"
    assert Block("coil", 3, 1, (0,)).describe() == "coil 3"


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["holding", "input"]), st.integers(0, 600), st.sampled_from(["uint16", "float32", "string"])
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 125),
    st.integers(0, 20),
)
def test_plans_cover_every_point_within_the_limits(specs: list[tuple[str, int, str]], size: int, gap: int) -> None:
    p = pts(*specs)
    limits = Limits(max_registers=max(size, 10), gap_fill=gap)
    blocks = plan(p, limits)
    assert sorted(i for b in blocks for i in b.points) == list(range(len(p)))
    for b in blocks:
        assert b.count <= limits.max_registers
        for i in b.points:
            assert p[i].table == b.table and b.start <= p[i].address and p[i].address + p[i].words <= b.end
        halves = split(b, p)
        if halves is not None:
            assert sorted(halves[0].points + halves[1].points) == sorted(b.points)
            assert halves[0].end <= halves[1].start and all(h.count < b.count for h in halves)
