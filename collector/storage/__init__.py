"""Where the collector stores Samples: the Sink contract, SQLite (embedded) and InfluxDB v2 sinks."""

from __future__ import annotations

from collector.storage.base import Sink, StorageError, StoreRejected, StoreUnavailable

__all__ = ["Sink", "StorageError", "StoreRejected", "StoreUnavailable"]
