"""What a panel shows, said once for both query languages: a measurement's field, how it is
reduced, which tags it is grouped by and filtered on. ``influxql.py`` and ``promql.py`` turn these
into queries; ``catalogue.py`` checks every field against the probes' metric catalogues."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Agg = Literal["mean", "max", "min", "last", "sum"]
Shape = Literal["series", "latest"]
Kind = Literal["timeseries", "stat", "table", "state", "bargauge"]

#: tag filters every query may take from the dashboard's variables: tag -> variable name
VARIABLE_TAGS: dict[str, str] = {"county": "county", "site": "township", "device": "device", "ifname": "interface"}


@dataclass(frozen=True, slots=True)
class Query:
    """One target: ``agg`` of ``measurement.field`` per ``by`` tags.

    ``shape`` "series" is a time series per group (``agg`` over each interval); "latest" is one
    value per group over the dashboard's time range (``last``/``max``... of the range), for stats
    and tables. ``match`` holds fixed tag filters (regex, anchored); ``variables`` the tags filtered
    by the dashboard's template variables (see VARIABLE_TAGS).
    """

    measurement: str
    field: str
    agg: Agg = "mean"
    by: tuple[str, ...] = ("site",)
    shape: Shape = "series"
    match: tuple[tuple[str, str], ...] = ()
    variables: tuple[str, ...] = ("county", "site")
    #: added to the legend after the ``by`` tags (e.g. "in" / "out" for two queries of a panel)
    legend_suffix: str = ""
    ref: str = "A"


@dataclass(frozen=True, slots=True)
class Mapping:
    """A value mapping for enumerations (numbers in the store, words on the screen)."""

    value: int
    text: str
    color: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    kind: Kind
    queries: tuple[Query, ...]
    unit: str = ""
    description: str = ""
    width: int = 12
    height: int = 8
    #: threshold steps (value, colour); the first value is the base (None)
    thresholds: tuple[tuple[float | None, str], ...] = ()
    mappings: tuple[Mapping, ...] = ()
    min: float | None = None
    max: float | None = None
    #: tables: sort by this column (descending) and keep this many rows
    sort_by: str = ""
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    #: template variables, in chain order (a subset of county, township, device, interface)
    variables: tuple[str, ...] = ("county", "township")
    tags: tuple[str, ...] = field(default_factory=tuple)
