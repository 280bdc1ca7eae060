"""Settings of one ICMP echo target."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from probes.base import Duration, ProbeConfig

#: How to send echo requests; ``auto`` takes the first that works (see ``detect_mode``).
IcmpMode = Literal["auto", "datagram", "raw", "ping"]


class IcmpConfig(ProbeConfig):
    """``interval`` and ``timeout`` are the agent's per-poll keys, so the per-packet ones are
    ``packet_interval`` and ``packet_timeout``."""

    host: str = Field(min_length=1, max_length=253, description="name or IPv4/IPv6 address to ping")
    count: int = Field(3, ge=1, le=100, description="echo requests per poll")
    packet_interval: Duration = Field(0.2, ge=0.01, le=60, description="pause between two requests")
    packet_timeout: Duration = Field(1.0, gt=0, le=60, description="wait for each reply")
    # icmplib reads replies into a 1 KiB buffer, so larger payloads would be cut and not match.
    size: int = Field(56, ge=0, le=960, description="payload bytes per request, as ping -s")
    mode: IcmpMode = "auto"
