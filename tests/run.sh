#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, type-checks (mypy), then runs pytest.
# Extra arguments go to pytest (e.g. `bash tests/run.sh -k wire -x`).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NETWATCH_EXTRAS=test
export NETWATCH_APT="/usr/bin/ping:iputils-ping /usr/sbin/mosquitto:mosquitto /usr/bin/mosquitto_passwd:mosquitto \
  /usr/bin/victoria-metrics:victoria-metrics /usr/sbin/snmpd:snmpd /usr/bin/snmptrap:snmp /usr/bin/snmpbulkwalk:snmp \
  /usr/bin/socat:socat /usr/bin/influxd:influxdb /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver \
  /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc:fonts-noto-cjk /usr/bin/systemd-analyze:systemd /usr/sbin/ip:iproute2"
# shellcheck source=../.ci/bootstrap.sh
source "$ROOT/.ci/bootstrap.sh"
cd "$ROOT"
# Types first: strict on protocol/, agent/ and collector/, check_untyped_defs on probes/ (pyproject.toml).
echo "mypy: $("$ROOT/.venv/bin/python" -m mypy --version)" >&2
"$ROOT/.venv/bin/python" -m mypy
set +e
# Parallel (pytest-xdist): most tests wait on real processes, not the CPU. NETWATCH_TEST_WORKERS=0
# runs them in one process. --dist loadfile keeps each file on one worker, so a module's one real
# run (the demo's, on fixed ports; the dashboards') happens once. (loadgroup's xdist_group marks
# are not honoured with pytest 9: a file's tests were spread over workers and two demos collided.)
"$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider -n "${NETWATCH_TEST_WORKERS:-3}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
