#!/usr/bin/env bash
# Installs what netwatch needs on Debian 12, only what is missing: Debian packages, then a venv
# with netwatch installed in it. Sourced by configs/demo/start.sh and tests/run.sh.
#   NETWATCH_EXTRAS   pip extras to install (default: collector)
#   NETWATCH_APT      extra "file:package" pairs (a command on PATH or a path that exists) to make sure of
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
EXTRAS="${NETWATCH_EXTRAS:-collector}"

say() { printf '\033[1m[netwatch]\033[0m %s\n' "$*" >&2; }

missing=()
# python3-venv brings ensurepip, without which `python3 -m venv` fails on a fresh Debian.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
for pair in ${NETWATCH_APT:-}; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -e "$bin" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  # The packages' own services would start on their default ports; tests start their own copies.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
fi
# Reinstall only when pyproject.toml or the extras change.
stamp="$VENV/.netwatch-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  say "installing netwatch[$EXTRAS] into the venv"
  "$VENV/bin/pip" install -q -e "$ROOT[$EXTRAS]" 2>&1 | grep -vE '^(WARNING: Location|  )' >&2 || true
  "$VENV/bin/python" -c 'import agent, collector, probes' || { say "install failed"; exit 1; }
  echo "$want" >> "$stamp"
fi
export PATH="$VENV/bin:$PATH"
