#!/usr/bin/env bash
# Build the agent's offline install bundle: one .tar.gz holding a wheelhouse for the node's Python
# and architecture (netwatch with the [agent] extra and its dependencies — none of the collector's)
# and install.sh. Needs network (or a PyPI mirror) here; the node needs none.
#
#   agent/packaging/build-bundle.sh [--python /usr/bin/python3] [--out DIR] [--wheels DIR]
#
#   --python   the interpreter the bundle is for: same minor version and architecture as the
#              nodes' (Debian 12: /usr/bin/python3, 3.11). Default: /usr/bin/python3.
#   --out      where to write the bundle (default: dist/ in the repo)
#   --wheels   cache the dependencies' wheels here and reuse them while pyproject.toml is unchanged
# Prints the bundle's path on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=/usr/bin/python3
OUT="$ROOT/dist"
WHEELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --wheels) WHEELS=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help) / 未知选项" >&2; exit 2 ;;
  esac
done
command -v "$PY" >/dev/null || { echo "no interpreter $PY: give --python / 找不到解释器" >&2; exit 2; }

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/agent/__init__.py")
pytag=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
arch=$("$PY" -c 'import platform; print(platform.machine())')
name="netwatch-agent-$version-$pytag-$arch"
[ -n "$version" ] || { echo "no __version__ in agent/__init__.py" >&2; exit 3; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir="$stage/$name"
mkdir -p "$dir/wheels" "$OUT"

# The wheelhouse: `pip wheel` for the target interpreter, so compiled wheels (pydantic-core, orjson,
# psutil, cryptography...) match its ABI and architecture. pip itself goes in too: install.sh runs
# pip from its wheel, so the node needs no ensurepip (python3-venv) and no network.
tmpvenv="$stage/pipenv"
"$PY" -m venv "$tmpvenv"
pipq() { "$tmpvenv/bin/python" -m pip "$@" 2>&1 | grep -vE '^(WARNING: Location|  )' >&2 || true; }
# The dependencies' wheels can be reused (--wheels) while pyproject.toml is unchanged; netwatch's own
# wheel is always built afresh from this tree.
stamp="deps-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-$pytag-$arch"
if [ -n "$WHEELS" ] && [ -f "$WHEELS/$stamp" ]; then
  cp "$WHEELS"/*.whl "$dir/wheels/"
  rm -f "$dir/wheels"/netwatch-*.whl
else
  pipq wheel -q --wheel-dir "$dir/wheels" "$ROOT[agent]" pip
  rm -f "$dir/wheels"/netwatch-*.whl
  if [ -n "$WHEELS" ]; then
    mkdir -p "$WHEELS"; rm -f "$WHEELS"/*.whl "$WHEELS"/deps-*; cp "$dir/wheels"/*.whl "$WHEELS/"; touch "$WHEELS/$stamp"
  fi
fi
pipq wheel -q --no-deps --wheel-dir "$dir/wheels" "$ROOT"
ls "$dir/wheels"/netwatch-"$version"-*.whl >/dev/null || { echo "pip wheel failed" >&2; exit 3; }
ls "$dir/wheels"/pip-*.whl >/dev/null || { echo "no pip wheel in the wheelhouse" >&2; exit 3; }

cp "$ROOT/agent/packaging/install.sh" "$dir/install.sh"
chmod 0755 "$dir/install.sh"
cp "$ROOT/configs/agent.example.yaml" "$dir/agent.example.yaml"
cp "$ROOT/agent/packaging/README.md" "$dir/README.md"
cat > "$dir/BUNDLE" <<EOF
name=$name
version=$version
python=$pytag
arch=$arch
EOF
(cd "$dir/wheels" && sha256sum -- *.whl) > "$dir/SHA256SUMS"

tar -C "$stage" -czf "$OUT/$name.tar.gz.tmp" "$name"
mv "$OUT/$name.tar.gz.tmp" "$OUT/$name.tar.gz"
echo "$OUT/$name.tar.gz"
