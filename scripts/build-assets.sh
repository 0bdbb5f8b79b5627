#!/usr/bin/env bash
# Install the web app's front-end assets (Bootstrap Italia) from the npm registry
# and copy the files the app serves into hub/web/static/vendor/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=hub/web/static/vendor/bootstrap-italia
if ! command -v npm >/dev/null 2>&1; then
  echo "build-assets: npm is missing; installing Node.js from Debian's packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --no-audit --no-fund --loglevel=error
src=node_modules/bootstrap-italia/dist
rm -rf "$dest"
mkdir -p "$dest"
cp -r "$src/css" "$src/js" "$src/fonts" "$src/svg" "$dest/"
cp node_modules/bootstrap-italia/LICENSE "$dest/LICENSE" 2>/dev/null || true
# Swagger UI for /api/docs, served from our own files (the CSP allows nothing else).
swagger=hub/web/static/vendor/swagger-ui
rm -rf "$swagger"
mkdir -p "$swagger"
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
  node_modules/swagger-ui-dist/LICENSE "$swagger/"
echo "build-assets: Bootstrap Italia $(node -p "require('./node_modules/bootstrap-italia/package.json').version") in $dest"
