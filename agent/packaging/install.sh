#!/usr/bin/env bash
# netwatch agent offline installer / netwatch 采集端离线安装 — runs from the unpacked bundle, needs no network.
#
#   sudo ./install.sh [options]
#
#   --prefix DIR      install here (default /opt/netwatch): DIR/venv -> DIR/releases/<version>-<time>
#   --config FILE     the agent config the service runs (default /etc/netwatch/agent.yaml)
#   --python PY       the node's interpreter (default /usr/bin/python3; must match the bundle's pyXY)
#   --user NAME       the service's system user (default netwatch)
#   --unit-dir DIR    where the unit goes (default /etc/systemd/system)
#   --users-prefix D  create the user in D/etc/{passwd,group,shadow,gshadow} (useradd --prefix), not /etc
#   --no-user         do not create the user
#   --no-systemd      write the unit but do not run systemctl (daemon-reload, enable, restart)
#   --unit-only       only rewrite the unit from the config (after changing icmp modes, trap ports...)
#   --dry-run         say what would be done, change nothing
#
# Upgrades in place: the new release is installed beside the old one and must pass `netwatch-agent
# version` (and `check` when the config exists) before DIR/venv is switched to it in one rename;
# otherwise it is removed and the old one keeps running (exit 4). The agent's state — spool, batch
# sequence, control state — lives in /var/lib/netwatch-agent (the unit's StateDirectory) and is
# never touched. The previous release is kept for `--rollback`.
#
# Exit codes: 0 done; 2 bad usage or a bundle for another Python/architecture; 3 install failed;
# 4 the new release failed its checks (rolled back).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=/opt/netwatch
CONFIG=/etc/netwatch/agent.yaml
PY=/usr/bin/python3
USER_NAME=netwatch
UNIT_DIR=/etc/systemd/system
USERS_PREFIX=""
DO_USER=1 DO_SYSTEMD=1 UNIT_ONLY=0 DRY=0 ROLLBACK=0

say() { printf '[netwatch-install] %s\n' "$*" >&2; }
die() { code=$1; shift; say "ERROR / 错误: $*"; exit "$code"; }
run() { if [ "$DRY" = 1 ]; then say "would run: $*"; else "$@"; fi; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --user) USER_NAME=$2; shift 2 ;;
    --unit-dir) UNIT_DIR=$2; shift 2 ;;
    --users-prefix) USERS_PREFIX=$2; shift 2 ;;
    --no-user) DO_USER=0; shift ;;
    --no-systemd) DO_SYSTEMD=0; shift ;;
    --unit-only) UNIT_ONLY=1; shift ;;
    --rollback) ROLLBACK=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) die 2 "unknown option $1 (see --help) / 未知选项" ;;
  esac
done
case "$PREFIX" in /*) ;; *) die 2 "--prefix must be an absolute path / 须为绝对路径: $PREFIX" ;; esac
case "$CONFIG" in /*) ;; *) die 2 "--config must be an absolute path / 须为绝对路径: $CONFIG" ;; esac
[[ "$USER_NAME" =~ ^[a-z_][a-z0-9_-]{0,30}$ ]] || die 2 "--user $USER_NAME is not a valid user name / 用户名无效"

write_unit() {  # the unit from the config, by the installed agent itself
  local venv=$1
  if [ "$DRY" = 1 ]; then say "would write $UNIT_DIR/netwatch-agent.service"; return; fi
  mkdir -p "$UNIT_DIR"
  "$venv/bin/python" -m agent.service_unit --config "$CONFIG" --prefix "$PREFIX" --user "$USER_NAME" \
    --output "$UNIT_DIR/netwatch-agent.service" || die 3 "could not write the unit (config error above) / 无法生成服务单元"
  say "unit written / 已写入服务单元: $UNIT_DIR/netwatch-agent.service"
  # A spool outside the StateDirectory (which systemd makes) needs its directory, the user's own:
  # the sandbox cannot mount a missing ReadWritePaths= entry.
  local dirs d
  dirs=$(sed -n 's/^ReadWritePaths=//p' "$UNIT_DIR/netwatch-agent.service")
  for d in $dirs; do
    mkdir -p "$d" && chmod 0700 "$d"
    if [ "$DO_USER" = 1 ] && [ -z "$USERS_PREFIX" ]; then chown "$USER_NAME:$USER_NAME" "$d"; fi
  done
}

systemd_apply() {
  [ "$DO_SYSTEMD" = 1 ] || { say "--no-systemd: not running systemctl"; return; }
  command -v systemctl >/dev/null || { say "no systemctl here: unit written, not enabled"; return; }
  run systemctl daemon-reload
  run systemctl enable netwatch-agent.service
  if [ -f "$CONFIG" ]; then
    run systemctl restart netwatch-agent.service
    say "service (re)started / 服务已启动: systemctl status netwatch-agent"
  else
    say "not started: write $CONFIG first (see $PREFIX/agent.example.yaml), then systemctl start netwatch-agent"
  fi
}

if [ "$UNIT_ONLY" = 1 ]; then
  [ -x "$PREFIX/venv/bin/python" ] || die 2 "nothing installed in $PREFIX / 尚未安装"
  write_unit "$PREFIX/venv"
  systemd_apply
  exit 0
fi

if [ "$ROLLBACK" = 1 ]; then
  [ -f "$PREFIX/releases/previous" ] || die 2 "no previous release recorded in $PREFIX / 无可回退版本"
  prev=$(cat "$PREFIX/releases/previous")
  [ -x "$PREFIX/releases/$prev/bin/python" ] || die 2 "previous release $prev is gone / 旧版本已不存在"
  run ln -sfn "releases/$prev" "$PREFIX/venv.new"
  run mv -Tf "$PREFIX/venv.new" "$PREFIX/venv"
  say "rolled back to / 已回退到 $prev"
  systemd_apply
  exit 0
fi

# --- the bundle matches this node -----------------------------------------------------------------
[ -f "$HERE/BUNDLE" ] || die 2 "run install.sh from the unpacked bundle (no BUNDLE file beside it)"
# shellcheck disable=SC1091
. "$HERE/BUNDLE"
command -v "$PY" >/dev/null || die 2 "no $PY: install Debian's python3 (or give --python) / 缺少 python3"
node_py=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
node_arch=$("$PY" -c 'import platform; print(platform.machine())')
[ "$node_py" = "$python" ] && [ "$node_arch" = "$arch" ] ||
  die 2 "bundle is for $python/$arch, this node has $node_py/$node_arch: build one with --python for it / 安装包与本机不符"
(cd "$HERE/wheels" && sha256sum --quiet -c ../SHA256SUMS) || die 2 "wheel checksums do not match: bundle damaged / 安装包损坏"
pipwhl=$(ls "$HERE"/wheels/pip-*.whl 2>/dev/null | head -1)
[ -n "$pipwhl" ] || die 2 "no pip wheel in the bundle"
say "installing netwatch-agent $version ($python/$arch) into $PREFIX"

# --- the system user --------------------------------------------------------------------------------
if [ "$DO_USER" = 1 ]; then
  users_opt=()
  passwd_file=/etc/passwd
  if [ -n "$USERS_PREFIX" ]; then users_opt=(--prefix "$USERS_PREFIX"); passwd_file="$USERS_PREFIX/etc/passwd"; fi
  if cut -d: -f1 "$passwd_file" | grep -qxF "$USER_NAME"; then
    say "user $USER_NAME exists / 用户已存在"
  else
    run useradd "${users_opt[@]}" --system --user-group --no-create-home --home-dir /var/lib/netwatch-agent \
      --shell /usr/sbin/nologin --comment "netwatch agent" "$USER_NAME"
    [ "$DRY" = 1 ] || say "created system user / 已创建系统用户 $USER_NAME"
  fi
fi

# --- the new release, beside the old one -------------------------------------------------------------
release="$version-$(date -u +%Y%m%dT%H%M%S.%NZ)"
new="$PREFIX/releases/$release"
if [ "$DRY" = 1 ]; then
  say "would create the venv $new and pip install --no-index --find-links $HERE/wheels netwatch[agent]==$version"
  say "would check it (version, check --config $CONFIG), then point $PREFIX/venv at it"
  write_unit "$PREFIX/venv"
  systemd_apply
  exit 0
fi
mkdir -p "$PREFIX/releases"
chmod 0755 "$PREFIX" "$PREFIX/releases"
cleanup_new() { rm -rf "$new"; }
trap 'cleanup_new' ERR
# Only the bundle's wheels: no pip.conf, no PIP_* variables, no index (--no-index).
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(PIP_[A-Z0-9_]*\)=.*/\1/p')
export PIP_CONFIG_FILE=/dev/null
# --without-pip: pip runs from its wheel, so a node without python3-venv's ensurepip works too.
"$PY" -m venv --without-pip "$new" || die 3 "could not create the venv (python3-venv missing?) / 无法创建 venv"
"$new/bin/python" "$pipwhl/pip" install --quiet --no-index --find-links "$HERE/wheels" --no-cache-dir \
  --disable-pip-version-check "netwatch[agent]==$version" || die 3 "pip install from the wheelhouse failed / 安装失败"
trap - ERR

# --- the new release must work before it replaces the old one ----------------------------------------
check_new() {
  local got
  got=$("$new/bin/netwatch-agent" version 2>&1) || { say "netwatch-agent version failed: $got"; return 1; }
  [ "$got" = "netwatch-agent $version" ] || { say "unexpected version output: $got"; return 1; }
  if [ -f "$CONFIG" ]; then
    "$new/bin/netwatch-agent" check --config "$CONFIG" >/dev/null || { say "check --config $CONFIG failed"; return 1; }
  fi
}
if ! check_new; then
  rm -rf "$new"
  die 4 "the new release failed its checks: removed, the installed one is unchanged / 新版本自检失败, 已回退"
fi

old=""
if [ -L "$PREFIX/venv" ]; then old=$(basename "$(readlink "$PREFIX/venv")"); fi
ln -sfn "releases/$release" "$PREFIX/venv.new"
mv -Tf "$PREFIX/venv.new" "$PREFIX/venv"   # rename(2): the switch is atomic
[ -n "$old" ] && [ "$old" != "$release" ] && echo "$old" > "$PREFIX/releases/previous"
# keep the current and the previous release only
for d in "$PREFIX"/releases/*/; do
  d=$(basename "$d")
  [ "$d" = "$release" ] || [ "$d" = "$old" ] || rm -rf "${PREFIX:?}/releases/$d"
done
install -m 0644 "$HERE/agent.example.yaml" "$PREFIX/agent.example.yaml"
install -m 0644 "$HERE/README.md" "$PREFIX/README.md"
install -m 0755 "$HERE/install.sh" "$PREFIX/install.sh"
cp "$HERE/BUNDLE" "$PREFIX/BUNDLE"
say "installed / 已安装: $PREFIX/venv -> releases/$release${old:+ (previous: $old)}"

write_unit "$PREFIX/venv"
systemd_apply
