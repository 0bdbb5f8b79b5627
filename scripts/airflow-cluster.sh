#!/usr/bin/env bash
# A real Airflow 3 CeleryExecutor cluster on 127.0.0.1, one process per role, as a district runs
# it across machines (docs/deploy.md):
#
#   PostgreSQL  Airflow's metadata (db `airflow`), the Celery results (db `celery_results`) and
#               the registry (db `raccordo`) — a throwaway server in DIR/postgres
#   Redis       the Celery broker, from Debian's redis-server package (scripts/ensure-redis.sh)
#   scheduler, DAG processor, API server   the Airflow core (the district)
#   one Celery worker per file DIR/workers/NAME.env, on the queues that file names
#
# Every process starts from an empty environment (env -i) plus what its role needs: the core
# holds the metadata database and the JWT secret; a worker holds the broker, the result backend,
# the registry URL and the Airflow Connections (AIRFLOW_CONN_RACCORDO_<NAME>) of its own
# consortium's sources only — what its env file says, nothing of another worker's file.
#
# Usage:
#   airflow-cluster.sh demo [DIR]               `make airflow-cluster`: the demo district, run once
#                                               by the cluster; stays up until Ctrl-C
#   airflow-cluster.sh up DIR                   start everything for DIR/raccordo.toml
#   airflow-cluster.sh down DIR                 stop everything (and delete the PostgreSQL data)
#   airflow-cluster.sh worker-up DIR NAME       (re)start one worker
#   airflow-cluster.sh worker-down DIR NAME [SIGNAL]   stop one worker (default TERM; KILL = crash)
#   airflow-cluster.sh env DIR ROLE             print the environment ROLE (core|NAME) runs with
#
# A worker's file DIR/workers/NAME.env is shell assignments, e.g.
#   QUEUES=cot
#   LOG_PORT=18592
#   AIRFLOW_CONN_RACCORDO_COT_WAAS='{"conn_type": "http", "host": "https://…", "password": "…"}'
#
# Ports (override through the environment of `up`): CLUSTER_PG_PORT (18532), CLUSTER_REDIS_PORT
# (18579), CLUSTER_API_PORT (18580); each worker's log server on its LOG_PORT. All on 127.0.0.1.
# Settings for tests: CLUSTER_HEARTBEAT_TIMEOUT (seconds before the scheduler fails a task whose
# worker died, Airflow's default 300), CLUSTER_PARSE_INTERVAL (DAG file re-parse, default 30),
# RACCORDO_AIRFLOW_RETRY_DELAY (seconds between tries, default 300), CLUSTER_DAGS_FOLDER (default
# the repository's dags/). `up` records them in DIR/run/settings, so `worker-up` starts a worker
# with the same ones.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/.venv/bin"

say() { echo "airflow-cluster: $*"; }
die() {
  echo "airflow-cluster: ERROR: $*" >&2
  exit 1
}

[ -x "$BIN/airflow" ] || die "$BIN/airflow is missing: run \`make install\` first"

# --- where things are ------------------------------------------------------------------------

setup_paths() {
  DIR="$(realpath -m "$1")"
  RUN="$DIR/run"
  LOGS="$DIR/logs"
  WORKERS="$DIR/workers"
  CONFIG="$DIR/raccordo.toml"
  mkdir -p "$RUN" "$LOGS" "$WORKERS"
  [ -f "$RUN/ports" ] && . "$RUN/ports"
  if [ -f "$RUN/settings" ]; then . "$RUN/settings"; fi
  PG_PORT="${CLUSTER_PG_PORT:-${PG_PORT:-18532}}"
  REDIS_PORT="${CLUSTER_REDIS_PORT:-${REDIS_PORT:-18579}}"
  API_PORT="${CLUSTER_API_PORT:-${API_PORT:-18580}}"
  PGDIR="$(cat "$RUN/pgdir" 2> /dev/null || echo "$DIR/postgres")"
}

pg_bin() {
  local found
  found="$(compgen -G "/usr/lib/postgresql/*/bin/$1" | sort -V | tail -n 1 || true)"
  [ -n "$found" ] || die "PostgreSQL's $1 is not installed: run \`bash scripts/ensure-postgres.sh\`"
  echo "$found"
}

# PostgreSQL refuses to run as root: as root it runs as Debian's `postgres` user.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

db_url() { echo "postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/$1"; }

secret() {
  # A random value made once per cluster (DIR/run/NAME, mode 0600).
  local f="$RUN/$1"
  [ -s "$f" ] || (umask 077 && "$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$f")
  cat "$f"
}

# --- the environment of each role ------------------------------------------------------------

common_env() {
  # What every Airflow process of the cluster gets (no secret of a source, no metadata DB).
  local home="$1"
  echo "PATH=$BIN:/usr/local/bin:/usr/bin:/bin"
  echo "HOME=$home"
  echo "LANG=C.UTF-8"
  echo "PYTHONWARNINGS=ignore"
  echo "AIRFLOW_HOME=$home"
  echo "AIRFLOW__CORE__EXECUTOR=CeleryExecutor"
  echo "AIRFLOW__CORE__DAGS_FOLDER=${CLUSTER_DAGS_FOLDER:-$ROOT/dags}"
  echo "AIRFLOW__CORE__LOAD_EXAMPLES=False"
  echo "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$API_PORT/execution/"
  echo "AIRFLOW__API__BASE_URL=http://127.0.0.1:$API_PORT"
  echo "AIRFLOW__API__SECRET_KEY=$(secret api_secret_key)"
  echo "AIRFLOW__CELERY__BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
  echo "AIRFLOW__CELERY__RESULT_BACKEND=db+$(db_url celery_results)"
  echo "AIRFLOW__LOGGING__BASE_LOG_FOLDER=$LOGS/tasks"
  echo "RACCORDO_CONFIG=$CONFIG"
  echo "RACCORDO_AIRFLOW_RETRY_DELAY=${RACCORDO_AIRFLOW_RETRY_DELAY:-300}"
}

core_env() {
  common_env "$DIR/airflow/core"
  echo "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$(db_url airflow)"
  echo "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=$(db_url airflow | sed "s/+psycopg2/+psycopg/")"
  echo "AIRFLOW__API_AUTH__JWT_SECRET=$(secret jwt_secret)"
  echo "AIRFLOW__API__HOST=127.0.0.1"
  echo "AIRFLOW__API__PORT=$API_PORT"
  echo "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin"
  echo "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$RUN/passwords.json"
  echo "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=${CLUSTER_HEARTBEAT_TIMEOUT:-300}"
  echo "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL=5"
  echo "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=${CLUSTER_PARSE_INTERVAL:-30}"
  echo "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=${CLUSTER_PARSE_INTERVAL:-30}"
  echo "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1"
  echo "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR=True"
}

worker_env() {
  # A worker: the common part, the registry (today's topology: it writes the pseudonymised
  # rows itself), a host name of its own, and the lines of its own env file — nothing else.
  local name="$1" file="$WORKERS/$1.env"
  [ -f "$file" ] || die "no worker $name: $file does not exist"
  common_env "$DIR/airflow/worker-$name"
  echo "RACCORDO_REGISTRY_URL=$(db_url raccordo | sed 's/+psycopg2/+psycopg/')"
  echo "RACCORDO_WORKER_HOSTNAME=$name.cluster.localhost"
  echo "AIRFLOW__CORE__HOSTNAME_CALLABLE=raccordo_cluster_host.hostname"
  echo "PYTHONPATH=$ROOT/scripts/cluster"
  echo "AIRFLOW__CELERY__WORKER_CONCURRENCY=1"
  # The file's assignments, evaluated by a shell that starts empty.
  env -i bash -c "set -a; . '$file'; set +a; env" |
    grep -vE '^(PWD|SHLVL|_|OLDPWD)='
}

role_env() {
  case "$1" in
    core) core_env ;;
    *) worker_env "$1" ;;
  esac
}

# Start "$@" in a session of its own (`worker-down NAME KILL` kills the worker and every task
# process under it) with exactly the environment of role $1.
spawn() {
  local role="$1" name="$2"
  shift 2
  local -a envs
  mapfile -t envs < <(role_env "$role")
  mkdir -p "$DIR/airflow/$([ "$role" = core ] && echo core || echo "worker-$role")"
  env -i "${envs[@]}" setsid "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2> /dev/null; }

wait_for() {
  # wait_for SECONDS WHAT COMMAND...: retry COMMAND every second.
  local limit="$1" what="$2" i
  shift 2
  for ((i = 0; i < limit; i++)); do
    "$@" > /dev/null 2>&1 && return 0
    sleep 1
  done
  die "$what did not come up within ${limit}s (logs in $LOGS)"
}

# --- the parts -------------------------------------------------------------------------------

postgres_up() {
  if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
    if [ "$(id -u)" -eq 0 ]; then
      # The server user must be able to reach its data directory.
      PGDIR="$(mktemp -d /tmp/raccordo-cluster-pg-XXXXXX)"
      chown postgres: "$PGDIR"
    else
      mkdir -p "$PGDIR"
    fi
    echo "$PGDIR" > "$RUN/pgdir"
    as_pg "$(pg_bin initdb)" --pgdata "$PGDIR/data" --username postgres --auth trust \
      --no-sync --encoding UTF8 --locale C.UTF-8 > "$LOGS/initdb.log" 2>&1 ||
      die "initdb failed: see $LOGS/initdb.log"
  fi
  if ! as_pg "$(pg_bin pg_ctl)" --pgdata "$PGDIR/data" status > /dev/null 2>&1; then
    as_pg "$(pg_bin pg_ctl)" --pgdata "$PGDIR/data" --log "$PGDIR/server.log" --wait \
      --options "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PGDIR -c fsync=off -c synchronous_commit=off -c max_connections=200" \
      start > /dev/null || die "PostgreSQL did not start on port $PG_PORT: see $PGDIR/server.log"
  fi
  local db
  for db in airflow celery_results raccordo; do
    "$BIN/python" - "$PG_PORT" "$db" << 'EOF'
import sys, psycopg
with psycopg.connect(f"host=127.0.0.1 port={sys.argv[1]} user=postgres dbname=postgres",
                     autocommit=True) as c:
    if not c.execute("select 1 from pg_database where datname = %s", (sys.argv[2],)).fetchone():
        c.execute(f'create database "{sys.argv[2]}"')
EOF
  done
  say "PostgreSQL on 127.0.0.1:$PG_PORT (databases airflow, celery_results, raccordo)"
}

redis_up() {
  bash "$ROOT/scripts/ensure-redis.sh" > /dev/null
  alive redis && return 0
  mkdir -p "$DIR/redis"
  env -i PATH=/usr/bin:/bin setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" \
    --dir "$DIR/redis" --save "" --appendonly no --protected-mode yes \
    > "$LOGS/redis.log" 2>&1 < /dev/null &
  echo $! > "$RUN/redis.pid"
  wait_for 30 "Redis" redis-cli -p "$REDIS_PORT" ping
  say "Redis on 127.0.0.1:$REDIS_PORT"
}

airflow_core() {
  local -a envs
  mapfile -t envs < <(core_env)
  env -i "${envs[@]}" "$BIN/airflow" "$@"
}

core_up() {
  [ -f "$RUN/passwords.json" ] || (umask 077 && echo "{\"admin\": \"$(secret admin_password)\"}" > "$RUN/passwords.json")
  mkdir -p "$DIR/airflow/core"
  airflow_core db migrate > "$LOGS/db-migrate.log" 2>&1 || die "airflow db migrate failed: see $LOGS/db-migrate.log"
  alive api-server || spawn core api-server "$BIN/airflow" api-server --host 127.0.0.1 --port "$API_PORT"
  alive scheduler || spawn core scheduler "$BIN/airflow" scheduler
  alive dag-processor || spawn core dag-processor "$BIN/airflow" dag-processor
  wait_for 180 "the API server (port $API_PORT)" curl -fsS "http://127.0.0.1:$API_PORT/api/v2/monitor/health"
  say "API server on http://127.0.0.1:$API_PORT (user admin, password in $RUN/admin_password)"
}

worker_up() {
  local name="$1" queues port
  alive "worker-$name" && return 0
  queues="$(env -i bash -c "set -a; . '$WORKERS/$name.env'; echo \"\${QUEUES:-}\"")"
  port="$(env -i bash -c "set -a; . '$WORKERS/$name.env'; echo \"\${LOG_PORT:-}\"")"
  [ -n "$queues" ] || die "$WORKERS/$name.env sets no QUEUES"
  [ -n "$port" ] || die "$WORKERS/$name.env sets no LOG_PORT"
  : > "$LOGS/worker-$name.log"
  spawn "$name" "worker-$name" \
    env AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$port" \
    "$BIN/airflow" celery worker --queues "$queues" --concurrency 1 \
    --celery-hostname "$name@%h" --without-gossip --without-mingle
  wait_for 180 "worker $name" grep -q " ready\." "$LOGS/worker-$name.log"
  say "worker $name on queue(s) $queues (log server 127.0.0.1:$port)"
}

# Every process of the session started by spawn: the worker, its pool, and the task processes,
# which Airflow's supervisor puts in process groups of their own (but not in another session).
session_pids() { ps -eo pid=,sid= | awk -v s="$1" '$2 == s {print $1}'; }

worker_down() {
  # TERM: Celery's warm shutdown (running tasks finish first). KILL: the machine dies — the
  # worker and every task process it runs, at once.
  local name="$1" sig="${2:-TERM}" pid i
  alive "worker-$name" || return 0
  pid="$(cat "$RUN/worker-$name.pid")"
  if [ "$sig" = KILL ]; then
    # shellcheck disable=SC2046
    kill -KILL $(session_pids "$pid") 2> /dev/null || true
  else
    kill -s "$sig" -- "-$pid" 2> /dev/null || true
  fi
  for ((i = 0; i < 120; i++)); do
    [ -n "$(session_pids "$pid")" ] || break
    sleep 0.5
  done
  # shellcheck disable=SC2046
  kill -KILL $(session_pids "$pid") 2> /dev/null || true
  rm -f "$RUN/worker-$name.pid"
  say "worker $name stopped ($sig)"
}

up() {
  [ -f "$CONFIG" ] || die "$CONFIG does not exist: the cluster runs the district of DIR/raccordo.toml"
  compgen -G "$WORKERS/*.env" > /dev/null || die "no worker: write $WORKERS/NAME.env (see the header of $0)"
  printf 'PG_PORT=%s\nREDIS_PORT=%s\nAPI_PORT=%s\n' "$PG_PORT" "$REDIS_PORT" "$API_PORT" > "$RUN/ports"
  local v
  : > "$RUN/settings"
  for v in CLUSTER_HEARTBEAT_TIMEOUT CLUSTER_PARSE_INTERVAL CLUSTER_DAGS_FOLDER RACCORDO_AIRFLOW_RETRY_DELAY; do
    if [ -n "${!v:-}" ]; then printf '%s=%q\n' "$v" "${!v}" >> "$RUN/settings"; fi
  done
  postgres_up
  redis_up
  core_up
  local f
  for f in "$WORKERS"/*.env; do worker_up "$(basename "$f" .env)"; done
  say "up: $DIR"
}

down() {
  local f name
  for f in "$RUN"/worker-*.pid; do
    [ -e "$f" ] || continue
    name="$(basename "$f" .pid)"
    worker_down "${name#worker-}"
  done
  for name in scheduler dag-processor api-server redis; do
    if alive "$name"; then
      # shellcheck disable=SC2046
      kill -TERM $(session_pids "$(cat "$RUN/$name.pid")") 2> /dev/null || true
    fi
  done
  sleep 2
  for name in scheduler dag-processor api-server redis; do
    # shellcheck disable=SC2046
    [ -f "$RUN/$name.pid" ] && kill -KILL $(session_pids "$(cat "$RUN/$name.pid")") 2> /dev/null || true
    rm -f "$RUN/$name.pid"
  done
  if [ -f "$PGDIR/data/PG_VERSION" ]; then
    as_pg "$(pg_bin pg_ctl)" --pgdata "$PGDIR/data" -m immediate stop > /dev/null 2>&1 || true
    rm -rf "$PGDIR"
    rm -f "$RUN/pgdir"
  fi
  say "down: $DIR"
}

# --- `make airflow-cluster` ------------------------------------------------------------------

WAAS_PID=""
SLEEP_PID=""
demo_cleanup() {
  trap '' INT TERM
  local pid
  for pid in "$WAAS_PID" "$SLEEP_PID"; do
    if [ -n "$pid" ]; then kill "$pid" 2> /dev/null || true; fi
  done
  down
}

dags_ready() { airflow_core dags list -o plain 2> /dev/null | grep -q raccordo_cot_waas; }

demo() {
  local waas_port="${WAAS_PORT:-18565}" token
  token="demo-token-not-a-secret"
  say "building the demo district in $DIR"
  "$BIN/python" - "$DIR" "http://127.0.0.1:$waas_port/waas/v1" << 'EOF'
import re, sys
from pathlib import Path
from hub.demo import prepare_workspace
from hub.demo.district import build_sources

ws, url = Path(sys.argv[1]), sys.argv[2]
if not (ws / "sources").exists():
    build_sources(ws / "sources")
cfg = prepare_workspace(ws, url, {"csv_export", "siuss_files", "siuss_waas"})
text = cfg.read_text()
# Secrets and source locations go to each consortium's worker (Airflow Connections), not here.
text = re.sub(r"^(base_url|token) = .*\n", "", text, flags=re.MULTILINE)
text = re.sub(r'^path = "sources/ciss-borgomanero.csv"\n', "", text, flags=re.MULTILINE)
text = text.replace('type = "csv_export"\n', 'type = "csv_export"\nqueue = "ciss"\n')
text = text.replace('type = "siuss_waas"\n', 'type = "siuss_waas"\nqueue = "cot"\n')
cfg.write_text(text)
EOF
  (umask 077 && cat > "$WORKERS/ciss.env" << EOF
QUEUES=ciss
LOG_PORT=18591
AIRFLOW_CONN_RACCORDO_CISS_CSV='{"conn_type": "fs", "extra": {"path": "$DIR/sources/ciss-borgomanero.csv"}}'
EOF
  cat > "$WORKERS/cot.env" << EOF
QUEUES=cot
LOG_PORT=18592
AIRFLOW_CONN_RACCORDO_COT_WAAS='{"conn_type": "http", "host": "http://127.0.0.1:$waas_port/waas/v1", "password": "$token"}'
EOF
  cat > "$WORKERS/district.env" << EOF
QUEUES=default
LOG_PORT=18593
EOF
  )
  "$BIN/python" -m connectors.siuss_waas.fake_server \
    --dir "$DIR/sources/cot-waas" --port "$waas_port" --token "$token" > "$LOGS/fake-waas.log" 2>&1 &
  WAAS_PID=$!
  # Globals only in the traps: under `set -u` a local of this function would be unset there.
  trap demo_cleanup EXIT
  trap 'exit 130' INT TERM
  up
  local dag
  wait_for 180 "the DAGs (DAG processor)" dags_ready
  for dag in raccordo_ciss_csv raccordo_cbv_files raccordo_cot_waas; do
    # Unpausing schedules the connector's run (catchup is off: one run, the latest interval).
    airflow_core dags unpause "$dag" > /dev/null 2>&1
    say "unpaused $dag"
  done
  say "open http://127.0.0.1:$API_PORT (admin / $(secret admin_password)); Ctrl-C stops the cluster"
  local state line last=""
  # `sleep & wait`: a signal interrupts `wait` at once (a foreground sleep would delay the trap).
  while :; do
    sleep 10 &
    SLEEP_PID=$!
    wait $SLEEP_PID
    line=""
    for dag in raccordo_ciss_csv raccordo_cbv_files raccordo_cot_waas; do
      state="$(airflow_core dags list-runs "$dag" -o plain 2> /dev/null | awk 'NR==2 {print $3}')"
      line+="$dag=${state:-?} "
    done
    [ "$line" = "$last" ] || say "$line"
    last="$line"
    if [ "$line" = "raccordo_ciss_csv=success raccordo_cbv_files=success raccordo_cot_waas=success " ]; then
      say "all three runs succeeded; the registry: RACCORDO_REGISTRY_URL=postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/raccordo $BIN/raccordo runs --config $CONFIG"
      last="done"
      while :; do
        sleep 3600 &
        SLEEP_PID=$!
        wait $SLEEP_PID
      done
    fi
  done
}

cmd="${1:-}"
case "$cmd" in
  up | down)
    [ $# -eq 2 ] || die "usage: $0 $cmd DIR"
    setup_paths "$2"
    "$cmd"
    ;;
  worker-up)
    [ $# -eq 3 ] || die "usage: $0 worker-up DIR NAME"
    setup_paths "$2"
    worker_up "$3"
    ;;
  worker-down)
    [ $# -ge 3 ] || die "usage: $0 worker-down DIR NAME [SIGNAL]"
    setup_paths "$2"
    worker_down "$3" "${4:-TERM}"
    ;;
  env)
    [ $# -eq 3 ] || die "usage: $0 env DIR ROLE"
    setup_paths "$2"
    role_env "$3"
    ;;
  demo)
    setup_paths "${2:-$ROOT/demo-cluster}"
    demo
    ;;
  *) die "usage: $0 demo [DIR] | up DIR | down DIR | worker-up DIR NAME | worker-down DIR NAME [SIGNAL] | env DIR ROLE" ;;
esac
