#!/usr/bin/env bash
# Make sure Debian's redis-server binary is installed, for the Airflow cluster (the Celery broker)
# and its tests. Idempotent: does nothing when `redis-server` is already on the PATH.
# Does not enable or start the distribution's service: scripts/airflow-cluster.sh and the tests
# start their own Redis on 127.0.0.1 in a private directory, never on the default port 6379.
set -euo pipefail

say() { echo "ensure-redis: $*"; }
die() {
  echo "ensure-redis: ERROR: $*" >&2
  exit 1
}
found() { command -v redis-server > /dev/null || [ -x /usr/bin/redis-server ]; }

if found; then
  say "found $(command -v redis-server || echo /usr/bin/redis-server), nothing to install"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null ||
    die "Redis is not installed and this is not root (no sudo either); install it with: apt-get install redis-server"
  SUDO=(sudo)
fi
command -v apt-get > /dev/null ||
  die "Redis is not installed and there is no apt-get; install redis-server (7 or later) by hand"

# Two test workers may get here at once: let one install while the other waits, then re-check.
exec 9> "${TMPDIR:-/tmp}/raccordo-ensure-redis-$(id -u).lock"
flock 9
if found; then
  say "found redis-server (installed meanwhile by another process)"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
say "running apt-get update"
"${SUDO[@]}" apt-get update -q ||
  die "apt-get update failed (is a Debian mirror reachable?); Redis was not installed"
# The package's maintainer script starts the service through invoke-rc.d; in a container
# without an init system that fails harmlessly, and where systemd runs we stop it again below:
# nothing of the project uses the distribution's instance on port 6379.
say "installing Debian's redis-server package (apt-get install --no-install-recommends redis-server)"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends redis-server ||
  die "apt-get install redis-server failed (see apt's messages above); the Airflow cluster cannot run"
if command -v systemctl > /dev/null && [ -d /run/systemd/system ]; then
  "${SUDO[@]}" systemctl disable --now redis-server > /dev/null 2>&1 || true
fi

found || die "the redis-server package is installed but there is no redis-server binary"
say "installed $(redis-server --version)"
