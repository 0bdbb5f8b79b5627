#!/usr/bin/env bash
# Make sure a PostgreSQL server binary is installed (Debian package), for the tests that need a
# real server. Idempotent. Does not start the distribution's cluster: the tests start their own
# throwaway server (tests/support/postgres.py).
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
  echo "ensure-postgres: found $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)"
  exit 0
fi

echo "ensure-postgres: installing Debian's postgresql package (needed by the registry tests)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo > /dev/null; then SUDO="sudo"; else
    echo "ensure-postgres: PostgreSQL is not installed and I am not root (no sudo either)." >&2
    echo "ensure-postgres: install it with: apt-get install postgresql" >&2
    exit 1
  fi
fi
# Keep the package's own cluster from being created and started.
$SUDO mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/raccordo.conf > /dev/null
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql > /dev/null
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
  echo "ensure-postgres: installation finished but initdb is still missing" >&2
  exit 1
fi
echo "ensure-postgres: installed $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)"
