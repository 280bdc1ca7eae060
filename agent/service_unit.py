"""The agent's systemd unit, written from its config: hardened, and given only the privileges the
config needs — ``CAP_NET_RAW`` only when an icmp entry asks for raw sockets, ``CAP_NET_BIND_SERVICE``
only when a trap listener binds a port below 1024, serial devices only when a Modbus entry names one.

The offline installer (agent/packaging/install.sh) runs ``python -m agent.service_unit`` from the
venv it has just installed; run it again after changing the config (``install.sh --unit-only``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent import __version__
from agent.config import AgentConfig

UNIT_NAME = "netwatch-agent.service"
#: systemd's StateDirectory= (under /var/lib) and ConfigurationDirectory= (under /etc)
STATE_DIR = "netwatch-agent"
CONFIG_DIR = "netwatch"

#: Sandboxing that costs the agent nothing: it reads /proc and /sys for host metrics, opens
#: sockets (IPv4/6, netlink for interface addresses, unix for the resolver) and writes its state dir.
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "KeyringMode=private",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
)


@dataclass(frozen=True)
class Needs:
    """What the config asks of the system beyond the sandbox."""

    raw_icmp: bool = False
    low_port: bool = False
    serial_devices: tuple[str, ...] = ()
    write_paths: tuple[Path, ...] = ()
    why: list[str] = field(default_factory=list)

    @property
    def capabilities(self) -> list[str]:
        return [c for c, on in (("CAP_NET_BIND_SERVICE", self.low_port), ("CAP_NET_RAW", self.raw_icmp)) if on]


def needs(cfg: AgentConfig, state_dir: Path = Path("/var/lib") / STATE_DIR) -> Needs:
    raw = low = False
    serial: list[str] = []
    why: list[str] = []
    for e in cfg.probes:
        mode = getattr(e.config, "mode", None)
        if e.kind == "icmp" and mode == "raw":
            raw = True
            why.append(f"icmp {e.name}: mode raw -> CAP_NET_RAW")
        port = int(getattr(e.config, "port", 0) or 0)
        if e.kind == "snmp_traps" and 0 < port < 1024:
            low = True
            why.append(f"snmp_traps {e.name}: port {port} -> CAP_NET_BIND_SERVICE")
        target = str(getattr(e.config, "target", ""))
        if e.kind == "modbus" and target.startswith("rtu:"):
            dev = urlsplit(target).path
            if dev and dev not in serial:
                serial.append(dev)
                why.append(f"modbus {e.name}: serial {dev} -> DeviceAllow, group dialout")
    spool_dir = cfg.spool.path.resolve().parent
    writes: tuple[Path, ...] = ()
    if not spool_dir.is_relative_to(state_dir):
        writes = (spool_dir,)
        why.append(f"spool {cfg.spool.path} is outside {state_dir} -> ReadWritePaths")
    return Needs(raw, low, tuple(serial), writes, why)


def render(
    cfg: AgentConfig | None,
    *,
    config_path: Path,
    prefix: Path,
    user: str = "netwatch",
    state_dir: Path = Path("/var/lib") / STATE_DIR,
) -> str:
    """The unit text. ``cfg`` None (no config yet) gives the least-privileged unit."""
    n = needs(cfg, state_dir) if cfg is not None else Needs(why=["no config yet: least privileges"])
    exe = prefix / "venv" / "bin" / "netwatch-agent"
    caps = " ".join(n.capabilities)
    lines = [
        f"# Written by netwatch-agent {__version__} (python -m agent.service_unit) from {config_path}.",
        "# Rewrite it after changing the config's icmp modes, trap ports or serial devices:",
        f"#   {prefix}/install.sh --unit-only",
        *(f"#   {w}" for w in n.why),
        "[Unit]",
        "Description=netwatch agent: probes this site's devices and ships the results to the centre",
        "Documentation=file://" + str(prefix / "README.md"),
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"User={user}",
        f"Group={user}",
        f"ExecStartPre={exe} check --config {config_path}",
        f"ExecStart={exe} run --config {config_path}",
        "Restart=on-failure",
        "RestartSec=10s",
        "TimeoutStopSec=30s",
        f"StateDirectory={STATE_DIR}",
        "StateDirectoryMode=0700",
        f"ConfigurationDirectory={CONFIG_DIR}",
        f"WorkingDirectory={state_dir}",
        *HARDENING,
        f"CapabilityBoundingSet={caps}",
        f"AmbientCapabilities={caps}",
    ]
    if n.serial_devices:
        lines += ["PrivateDevices=no", "DevicePolicy=closed", "SupplementaryGroups=dialout"]
        lines += [f"DeviceAllow={d} rw" for d in n.serial_devices]
    else:
        lines.append("PrivateDevices=yes")
    if n.write_paths:
        lines.append("ReadWritePaths=" + " ".join(str(p) for p in n.write_paths))
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.service_unit", description=__doc__)
    ap.add_argument("--config", type=Path, required=True, help="the agent config the unit runs")
    ap.add_argument("--prefix", type=Path, required=True, help="install prefix (its venv/bin/netwatch-agent runs)")
    ap.add_argument("--user", default="netwatch", help="the service's system user")
    ap.add_argument("--output", type=Path, help="write here instead of stdout (mode 0644)")
    args = ap.parse_args(argv)
    cfg: AgentConfig | None = None
    if args.config.exists():
        from agent.config import load
        from probes.configfile import ConfigError

        try:
            cfg = load(args.config)
        except ConfigError as e:
            print(f"config error / 配置错误: {e}", file=sys.stderr)
            return 2
    else:
        print(f"note / 提示: {args.config} does not exist yet: writing the least-privileged unit", file=sys.stderr)
    text = render(cfg, config_path=args.config, prefix=args.prefix, user=args.user)
    if args.output is None:
        sys.stdout.write(text)
    else:
        tmp = args.output.with_name(args.output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
