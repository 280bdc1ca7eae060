"""The storage-sink contract the collector's writer thread relies on, and the errors it acts on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from probes.model import Sample


class StorageError(Exception):
    """Base of every error a sink raises."""


class StoreUnavailable(StorageError):
    """The store cannot take the samples now (down, unreachable, busy, misconfigured credentials).

    Nothing about the samples is wrong: the caller keeps the MQTT message unacknowledged and
    retries later, after ``retry_after_s`` if the store said how long to wait.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreRejected(StorageError):
    """The store refused some or all samples for good (malformed, type conflict, too old).

    Retrying the same samples cannot succeed, so the caller acknowledges the message and counts
    ``rejected`` (None when the store did not say how many). Samples the store accepted in the
    same call are already durably stored when this is raised.
    """

    def __init__(self, message: str, *, rejected: int | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected


@runtime_checkable
class Sink(Protocol):
    """Where decoded samples end up.

    ``write`` returns only once the samples are durably stored (committed, or acknowledged by the
    server) and is idempotent: writing the same sample (same measurement, tags and time) again
    leaves the store as it was, so a redelivered batch never counts twice — or, for a store that
    keeps copies, the sink is a CheckedSink and the caller uses ``write_unsure`` for samples an
    earlier attempt may have stored.
    """

    name: str

    def write(self, samples: Sequence[Sample]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class CheckedSink(Sink, Protocol):
    """A store that keeps a second copy of a sample written twice (VictoriaMetrics without
    ``-dedup.minScrapeInterval``), so a write whose outcome is unknown is not simply repeated.

    ``write_unsure`` takes samples an earlier attempt may already have stored (the collector died
    before recording the write, or the store did not answer in time): it asks the store which
    of them it holds and writes only the others.
    """

    def write_unsure(self, samples: Sequence[Sample]) -> None: ...
