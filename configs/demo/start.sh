#!/usr/bin/env bash
# The demo: embedded broker + collector (SQLite) + a city -> county -> township tree of agents,
# all on loopback. Installs what it needs, runs until Ctrl-C, stops everything it started.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export NETWATCH_EXTRAS=demo
# shellcheck source=../../.ci/bootstrap.sh
source "$ROOT/.ci/bootstrap.sh"
exec "$ROOT/.venv/bin/python" "$ROOT/configs/demo/demo.py" "$@"
