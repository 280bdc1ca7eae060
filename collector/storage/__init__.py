"""Where the collector stores Samples: the Sink contract, SQLite (embedded) and InfluxDB v2 sinks."""

from __future__ import annotations

from collector.storage.base import CheckedSink, Sink, StorageError, StoreRejected, StoreUnavailable

__all__ = ["CheckedSink", "Sink", "StorageError", "StoreRejected", "StoreUnavailable"]
