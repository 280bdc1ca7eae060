"""Read planning: points merged into as few requests as the device allows, and a request split
again when the device refuses it (illegal address), so one hole costs a few requests, not all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from probes.modbus.codec import BIT_TABLES, TABLES, Table
from probes.modbus.registermap import Point


@dataclass(frozen=True, slots=True)
class Limits:
    max_registers: int = 125
    max_bits: int = 2000
    #: unused registers (bits: 16x as many) a request may read across to take in the next point
    gap_fill: int = 8

    def size(self, table: Table) -> int:
        return self.max_bits if table in BIT_TABLES else self.max_registers

    def gap(self, table: Table) -> int:
        return self.gap_fill * 16 if table in BIT_TABLES else self.gap_fill


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) from ``start``, serving ``points``
    (indices into the probe's point list)."""

    table: Table
    start: int
    count: int
    points: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.start + self.count

    def describe(self) -> str:
        return f"{self.table} {self.start}" if self.count == 1 else f"{self.table} {self.start}-{self.end - 1}"


def plan(points: Sequence[Point], limits: Limits) -> list[Block]:
    """Requests for ``points``: per table in address order, a point joins the request before it
    when the gap is at most ``gap_fill`` and the request stays within the device's limit."""
    blocks: list[Block] = []
    for table in TABLES:
        idx = sorted((i for i, p in enumerate(points) if p.table == table), key=lambda i: points[i].address)
        size, gap = limits.size(table), limits.gap(table)
        cur: list[int] = []
        start = end = 0
        for i in idx:
            p = points[i]
            p_end = p.address + p.words
            if cur and p.address - end <= gap and max(end, p_end) - start <= size:
                cur.append(i)
                end = max(end, p_end)
                continue
            if cur:
                blocks.append(Block(table, start, end - start, tuple(cur)))
            cur, start, end = [i], p.address, p_end
        if cur:
            blocks.append(Block(table, start, end - start, tuple(cur)))
    return blocks


def split(block: Block, points: Sequence[Point]) -> list[Block] | None:
    """Two smaller requests covering the block's points, cut at the widest gap between them
    (where a hole most likely is), else in the middle; None when the points overlap into one
    span (bits of one register, one wide value) and cannot be read apart."""
    idx = sorted(block.points, key=lambda i: (points[i].address, points[i].address + points[i].words))
    cuts: list[tuple[int, int]] = []  # (gap before idx[k], k)
    end = points[idx[0]].address + points[idx[0]].words
    for k in range(1, len(idx)):
        p = points[idx[k]]
        if p.address >= end:
            cuts.append((p.address - end, k))
        end = max(end, p.address + p.words)
    if not cuts:
        return None
    middle = len(idx) / 2
    _, k = max(cuts, key=lambda c: (c[0], -abs(c[1] - middle)))
    return [_tight(block.table, idx[:k], points), _tight(block.table, idx[k:], points)]


def _tight(table: Table, idx: list[int], points: Sequence[Point]) -> Block:
    start = min(points[i].address for i in idx)
    end = max(points[i].address + points[i].words for i in idx)
    return Block(table, start, end - start, tuple(idx))
