#!/usr/bin/env bash
# Make sure a PostgreSQL server binary is installed (Debian's package), for the tests that need a
# real server. Idempotent: does nothing when an initdb is already under /usr/lib/postgresql/*/bin.
# Does not create or start the distribution's cluster: the tests start their own throwaway server
# in a temporary directory (tests/support/postgres.py).
set -euo pipefail

say() { echo "ensure-postgres: $*"; }
die() {
  echo "ensure-postgres: ERROR: $*" >&2
  exit 1
}
newest_initdb() { compgen -G "/usr/lib/postgresql/*/bin/initdb" | sort -V | tail -n 1; }

if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
  say "found $(newest_initdb), nothing to install"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null ||
    die "PostgreSQL is not installed and this is not root (no sudo either); install it with: apt-get install postgresql"
  SUDO=(sudo)
fi
command -v apt-get > /dev/null ||
  die "PostgreSQL is not installed and there is no apt-get; install the PostgreSQL server (initdb, pg_ctl) by hand"

# Two test workers may get here at once: let one install while the other waits, then re-check.
exec 9> "${TMPDIR:-/tmp}/raccordo-ensure-postgres-$(id -u).lock"
flock 9
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
  say "found $(newest_initdb) (installed meanwhile by another process)"
  exit 0
fi

# postgresql-common reads /etc/postgresql-common/createcluster.d/*.conf (included by its
# createcluster.conf): with create_main_cluster off the package creates no "main" cluster, so
# there is no distribution cluster to start and nothing listens on port 5432.
say "telling postgresql-common not to create its main cluster (/etc/postgresql-common/createcluster.d/raccordo.conf)"
"${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" |
  "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/raccordo.conf > /dev/null

export DEBIAN_FRONTEND=noninteractive
say "running apt-get update"
"${SUDO[@]}" apt-get update -q ||
  die "apt-get update failed (is a Debian mirror reachable?); PostgreSQL was not installed"
say "installing Debian's postgresql package (apt-get install --no-install-recommends postgresql)"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends postgresql ||
  die "apt-get install postgresql failed (see apt's messages above); the PostgreSQL tests cannot run"

compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null ||
  die "the postgresql package is installed but no /usr/lib/postgresql/*/bin/initdb exists"
say "installed $(newest_initdb)"
