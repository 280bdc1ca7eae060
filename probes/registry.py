"""Probe kind name -> probe (or listener) class, one explicit table, imported lazily: a node
that does not use SNMP never imports pysnmp."""

from __future__ import annotations

import importlib

from probes.base import Listener, Probe

PROBES: dict[str, str] = {
    "host": "probes.host.probe:HostProbe",
    "icmp": "probes.icmp.probe:IcmpProbe",
    "tcp": "probes.tcp.probe:TcpProbe",
    "http": "probes.http.probe:HttpProbe",
    "snmp": "probes.snmp.probe:SnmpProbe",
    "snmp_traps": "probes.snmp.traps:TrapListener",
    "modbus": "probes.modbus.probe:ModbusProbe",
}


def kinds() -> list[str]:
    return sorted(PROBES)


def get(kind: str) -> type[Probe] | type[Listener]:
    """The class for ``kind``; KeyError names the kinds there are."""
    try:
        target = PROBES[kind]
    except KeyError:
        raise KeyError(f"unknown probe type {kind!r}; known types: {', '.join(kinds())}") from None
    module, _, cls = target.partition(":")
    found: type[Probe] | type[Listener] = getattr(importlib.import_module(module), cls)
    return found
