"""One process playing many township agents for the soak: every ``*.yaml`` in ``--configs`` is an
ordinary agent config, run by the agent's own ``Agent`` class (scheduler, journal, spool,
publisher with its own MQTT connection) in one event loop. Only the probe is simulated
(``soak_probe.SoakProbe``). SIGTERM stops probing, waits up to ``--drain`` seconds for every
agent's spool to be acknowledged, and exits 0 (what is left stays in the spools).

    python bench/soak/fleet.py --configs DIR [--drain 120]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from agent.config import load  # noqa: E402
from agent.runner import Agent  # noqa: E402
from probes import registry  # noqa: E402

registry.PROBES["soak"] = "soak_probe:SoakProbe"


async def main(configs: list[Path], drain_s: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    agents = [Agent(load(p)) for p in configs]
    logging.getLogger("netwatch.soak").warning("fleet: %d agents running (pid %d)", len(agents), os.getpid())
    await asyncio.gather(*(a.run(stop, drain_timeout_s=drain_s) for a in agents))
    return 0  # what is left unacknowledged stays in each spool: the driver reads them (read_stats)


def cli() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=Path, required=True, help="directory of agent configs (*.yaml)")
    ap.add_argument("--drain", type=float, default=120.0, help="seconds to wait for acks at SIGTERM")
    ap.add_argument("--log-level", default="warning")
    a = ap.parse_args()
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.umask(0o077)
    configs = sorted(a.configs.glob("*.yaml"))
    if not configs:
        ap.error(f"no *.yaml in {a.configs}")
    return asyncio.run(main(configs, a.drain))


if __name__ == "__main__":
    sys.exit(cli())
