#!/usr/bin/env bash
# `make airflow`: the demo district under `airflow standalone` on http://localhost:8080.
#
# Builds (or refreshes) the demo workspace with `raccordo demo --no-serve`, serves its WaaS
# flows with the local fake e-service, and starts Airflow with AIRFLOW_HOME inside the
# workspace and the repository's dags/ as the DAGs folder. The WaaS base URL and token are
# taken out of raccordo.toml and given to Airflow as the Connection raccordo_cot_waas, as in
# production (docs/deploy.md). Local use only: every UI user is an admin. Ctrl-C stops it all.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.venv/bin"
WS="$(realpath -m "${1:-$ROOT/demo-workspace}")"
WAAS_PORT="${WAAS_PORT:-8765}"
TOKEN="demo-token-not-a-secret"

"$BIN/raccordo" demo --no-serve --workspace "$WS"
# Secrets go to the Airflow Connection, not to the configuration file.
sed -i -e '/^base_url = /d' -e '/^token = /d' "$WS/raccordo.toml"

"$BIN/python" -m connectors.siuss_waas.fake_server \
    --dir "$WS/sources/cot-waas" --port "$WAAS_PORT" --token "$TOKEN" &
WAAS_PID=$!
trap 'kill "$WAAS_PID" 2>/dev/null || true' EXIT

export PATH="$BIN:$PATH"
export AIRFLOW_HOME="$WS/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export RACCORDO_CONFIG="$WS/raccordo.toml"
export AIRFLOW_CONN_RACCORDO_COT_WAAS="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$WAAS_PORT/waas/v1\", \"password\": \"$TOKEN\"}"
mkdir -p "$AIRFLOW_HOME"

echo "Airflow home: $AIRFLOW_HOME — DAGs: raccordo_ciss_csv, raccordo_cbv_files, raccordo_cot_waas"
echo "Open http://localhost:8080 (Ctrl-C stops Airflow and the fake WaaS server)"
"$BIN/airflow" standalone
