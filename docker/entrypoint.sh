#!/bin/sh
# Entry point of the hpsearch image (installed as `hpsearch-node`). One role per container:
#   head    Ray head: GCS on 6379, dashboard + job API on 0.0.0.0:8265, token auth; no trials
#           unless HPSEARCH_HEAD_CPUS > 0 (it runs the sweep drivers)
#   worker  Ray worker joining $HPSEARCH_RAY_HEAD (default ray-head:6379)
#   mlflow  MLflow tracking server on 0.0.0.0:5000: PostgreSQL store, proxied artifacts
# Anything else runs as a command: `hpsearch-node hpsearch --help`, `hpsearch-node bash`.
# Each role waits (bounded) for what it needs: start order does not matter, which counts where
# the engine ignores `depends_on: condition: service_healthy` (podman < 4.6).
set -eu

usage() {
  sed -n '2,7s/^# \{0,1\}//p' "$0"
}

# wait_for HOST PORT: until a TCP connection succeeds, at most $HPSEARCH_WAIT_S seconds.
wait_for() {
  python - "$1" "$2" "${HPSEARCH_WAIT_S:-180}" <<'PY'
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + limit
while True:
    try:
        socket.create_connection((host, port), timeout=3).close()
        break
    except OSError as err:
        if time.monotonic() > deadline:
            sys.exit(f"hpsearch-node: {host}:{port} not reachable after {limit:.0f} s ({err})")
        time.sleep(1)
PY
}

require_token() {
  if [ "${RAY_AUTH_MODE:-}" != token ] || [ -z "${RAY_AUTH_TOKEN:-}" ]; then
    echo "hpsearch-node: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN must both be set (every Ray" \
         "node needs the same token; see docker/.env.example)" >&2
    exit 2
  fi
  not_placeholder RAY_AUTH_TOKEN "$RAY_AUTH_TOKEN"
}

# not_placeholder NAME VALUE: refuse docker/.env.example's values, which anyone can read.
not_placeholder() {
  case "$2" in
    replace-with*|REPLACE_WITH*)
      echo "hpsearch-node: $1 still has its placeholder value from .env.example; generate" \
           "one: python -c \"import secrets; print(secrets.token_hex(32))\"" >&2
      exit 2
      ;;
  esac
}

# Flags every Ray node gets. The object store lives in /dev/shm: size it to fit there
# (80 %), since Ray's default (30 % of RAM) overflows a 2 GB shm and falls back to disk.
ray_flags() {
  store=${HPSEARCH_OBJECT_STORE_BYTES:-}
  [ -n "$store" ] || store=$(python - <<'PY'
import os
shm = os.statvfs("/dev/shm")
size = int(shm.f_frsize * shm.f_blocks * 0.8)
print(size if size >= 256 << 20 else "")  # a tiny shm: leave it to Ray (it warns)
PY
)
  printf '%s' "--block --disable-usage-stats${store:+ --object-store-memory=$store}"
}

role=${1:---help}
case "$role" in
  head)
    require_token
    # shellcheck disable=SC2046  # the flags are words without spaces
    exec ray start --head --port=6379 --dashboard-host=0.0.0.0 --dashboard-port=8265 \
      --num-cpus="${HPSEARCH_HEAD_CPUS:-0}" ${HPSEARCH_HEAD_GPUS:+--num-gpus=$HPSEARCH_HEAD_GPUS} \
      $(ray_flags)
    ;;
  worker)
    require_token
    head=${HPSEARCH_RAY_HEAD:-ray-head:6379}
    wait_for "${head%:*}" "${head##*:}"
    # shellcheck disable=SC2046
    exec ray start --address="$head" \
      ${HPSEARCH_WORKER_CPUS:+--num-cpus=$HPSEARCH_WORKER_CPUS} \
      ${HPSEARCH_WORKER_GPUS:+--num-gpus=$HPSEARCH_WORKER_GPUS} \
      $(ray_flags)
    ;;
  mlflow)
    # The store URI goes through the environment, not argv: no password in `ps`.
    if [ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]; then
      : "${POSTGRES_PASSWORD:?hpsearch-node: set POSTGRES_PASSWORD (or MLFLOW_BACKEND_STORE_URI)}"
      not_placeholder POSTGRES_PASSWORD "$POSTGRES_PASSWORD"
      MLFLOW_BACKEND_STORE_URI=$(python - <<'PY'
import os
from urllib.parse import quote
env = os.environ
user, password = env.get("POSTGRES_USER", "mlflow"), env["POSTGRES_PASSWORD"]
where = f"{env.get('POSTGRES_HOST', 'postgres')}:{env.get('POSTGRES_PORT', '5432')}"
# +psycopg2: SQLAlchemy >= 2.1 maps plain postgresql:// to psycopg 3, which is not installed.
# client_encoding=utf8: run names and notes hold non-ASCII text (a trial's run is named
# "<id> · completed"); a database created as SQL_ASCII (initdb without a UTF-8 locale) would
# otherwise answer every such write with a 500.
print(f"postgresql+psycopg2://{quote(user, safe='')}:{quote(password, safe='')}@{where}/"
      f"{env.get('POSTGRES_DB', 'mlflow')}?client_encoding=utf8")
PY
)
      export MLFLOW_BACKEND_STORE_URI
      wait_for "${POSTGRES_HOST:-postgres}" "${POSTGRES_PORT:-5432}"
    fi
    export MLFLOW_ARTIFACTS_DESTINATION="${MLFLOW_ARTIFACTS_DESTINATION:-/mlflow/artifacts}"
    # MLflow >= 3.5 answers only Host headers it knows (DNS-rebinding protection).
    # Opt-in basic auth: MLFLOW_AUTH=basic (users in MLflow's auth DB; set the admin
    # password through MLFLOW_AUTH_CONFIG_PATH, see docker/README-cluster.md).
    app=""
    if [ "${MLFLOW_AUTH:-}" = basic ]; then app="--app-name basic-auth"; fi
    # shellcheck disable=SC2086  # $app is empty or two words on purpose
    exec mlflow server --host 0.0.0.0 --port 5000 --workers "${MLFLOW_WORKERS:-2}" \
      --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow:5000,localhost:5000,127.0.0.1:5000}" $app
    ;;
  -h|--help|help)
    usage
    ;;
  *)
    exec "$@"
    ;;
esac
