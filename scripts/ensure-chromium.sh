#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (Playwright drives it with
# executable_path=/usr/bin/chromium; no browser is downloaded by Playwright).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-chromium: /usr/bin/chromium is missing; install Debian's chromium package" >&2
  exit 1
fi
exec 9>/tmp/raccordo-apt.lock
flock 9
[ -x /usr/bin/chromium ] && exit 0
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "ensure-chromium: $(/usr/bin/chromium --version)"
