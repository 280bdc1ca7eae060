"""``open_session``: the one place that picks the transport for a device."""

from __future__ import annotations

from probes.configfile import SecretMissing
from probes.snmp.adapt import Adaptive
from probes.snmp.config import SnmpConfig
from probes.snmp.fastwalk import FastSession
from probes.snmp.pysnmp_session import PysnmpSession
from probes.snmp.session import Session, SnmpAuthError


def adaptive_for(cfg: SnmpConfig) -> Adaptive:
    """Fresh pacing for this device, starting from its configured settings."""
    return Adaptive(timeout_s=cfg.request_timeout, max_in_flight=cfg.max_in_flight, max_repetitions=cfg.max_repetitions)


def open_session(cfg: SnmpConfig, adaptive: Adaptive | None = None) -> Session:
    """The session for this device: v1/v2c on our own lean BER path (fastwalk.py — about 20× less CPU
    per varbind than pysnmp, see bench/snmp), v3 on pysnmp. With ``adaptive`` (the probe keeps one
    per device across polls) requests are paced to what the device copes with."""
    if cfg.version in ("1", "2c"):
        try:
            community = cfg.community_value()
        except SecretMissing as e:
            raise SnmpAuthError(f"{cfg.address}: {e} — fix the secret source in the config") from None
        return FastSession(
            cfg.host,
            cfg.port,
            community,
            version=cfg.version,
            timeout_s=cfg.request_timeout,
            retries=cfg.retries,
            max_repetitions=cfg.max_repetitions,
            max_oids_per_get=cfg.max_oids_per_get,
            adaptive=adaptive,
        )
    return PysnmpSession(cfg, adaptive)
