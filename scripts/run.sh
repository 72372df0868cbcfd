#!/usr/bin/env bash
# THE run command:  bash scripts/run.sh
# Prepares this machine like scripts/test.sh (.venv, the local PostgreSQL and Redis), creates
# the database if missing, migrates it (alembic upgrade head), then runs in the foreground,
# each in its own process group, output prefixed per process:
#   worker     celery -A tasks worker -Q cashu,cashu.beat
#   lightning  celery -A tasks worker -Q cashu.lightning --pool threads -c 16
#              (the melt's pay step: with a mint that cannot pay in the background it
#              waits there for the payment, never in a slot the other work needs)
#   beat       celery -A tasks beat       (exactly one; schedule and pidfile under $RUN_DIR)
#   flower     celery -A tasks flower     (http://127.0.0.1:$FLOWER_PORT)
# Ctrl-C or SIGTERM stops them all (warm shutdown: running tasks finish, up to
# $STOP_TIMEOUT seconds, then SIGKILL); a second Ctrl-C kills at once. If one of them
# exits by itself, the others are stopped too and the exit status is non-zero.
#
# Environment (tasks/config.py for the rest: CASHU_LOG_FORMAT, CASHU_METRICS_PORT, ...):
#   DATABASE_URL   postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker
#   REDIS_URL      redis://127.0.0.1:6379/0
#   WALLET_MNEMONIC / WALLET_MNEMONIC_FILE   unset in development: ./wallet-mnemonic.txt
#   FLOWER_PORT 5555, LOG_LEVEL INFO, STOP_TIMEOUT 30, RUN_DIR .run (git-ignored)
set -euo pipefail

cd "$(dirname "$0")/.."

# say/die, the venvs, PostgreSQL and Redis: shared with scripts/test.sh
source scripts/common.sh

export DATABASE_URL="${DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export PYTHONUNBUFFERED=1
FLOWER_PORT="${FLOWER_PORT:-5555}"
LOG_LEVEL="${LOG_LEVEL:-INFO}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
RUN_DIR="${RUN_DIR:-.run}"
PY=.venv/bin/python
CELERY=.venv/bin/celery

ensure_project_venv

# ---------------------------------------------------------------- PostgreSQL and Redis
# Started if they are this machine's defaults and stopped; anything else must already run.
read -r db_host db_port redis_host redis_port < <("$PY" - "$DATABASE_URL" "$REDIS_URL" <<'PY'
import sys
from urllib.parse import urlsplit

for url in sys.argv[1:]:
    parts = urlsplit(url)
    print(parts.hostname or "-", parts.port or "-", end=" ")
print()
PY
)
is_local() { [[ "$1" == 127.0.0.1 || "$1" == localhost || "$1" == ::1 ]]; }
if is_local "$db_host" && [[ "$db_port" == 5432 || "$db_port" == - ]]; then
    ensure_postgres
fi
if is_local "$redis_host" && [[ "$redis_port" == "$REDIS_PORT" || "$redis_port" == - ]]; then
    ensure_redis
fi

# ---------------------------------------------------------------- database and migrations
"$PY" - <<'PY' || die "cannot prepare the database of DATABASE_URL (see above)"
import os
import sys

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

url = make_url(os.environ["DATABASE_URL"])
name = url.database
admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
exists = "SELECT 1 FROM pg_database WHERE datname = :name"
try:
    with admin.connect() as conn:
        if not conn.scalar(text(exists), {"name": name}):
            print(f"[run.sh] creating database {name}", file=sys.stderr)
            try:
                conn.execute(text('CREATE DATABASE "{}"'.format(name.replace('"', '""'))))
            except SQLAlchemyError:
                if not conn.scalar(text(exists), {"name": name}):  # not created meanwhile
                    raise
except SQLAlchemyError as exc:
    print(f"[run.sh] ERROR: {url.render_as_string(hide_password=True)}: {exc}", file=sys.stderr)
    sys.exit(1)
PY
say "alembic upgrade head"
.venv/bin/alembic upgrade head || die "alembic upgrade head failed"

# ---------------------------------------------------------------- master mnemonic
# Checked (and in development created, once, in ./wallet-mnemonic.txt) before anything
# starts, so the worker never races another process to create it.
"$PY" - <<'PY' || die "no usable master mnemonic (see above)"
import sys

from tasks.config import MnemonicConfigError, get_settings, master_mnemonic

try:
    master_mnemonic(get_settings())
except MnemonicConfigError as exc:
    print(f"[run.sh] ERROR: {exc}", file=sys.stderr)
    sys.exit(1)
PY

# ---------------------------------------------------------------- the three processes
mkdir -p "$RUN_DIR"
[[ -e "$RUN_DIR/.gitignore" ]] || echo '*' >"$RUN_DIR/.gitignore"

set -m  # job control: every background job gets its own process group
names=() leaders=() jobpids=()

start() {  # start <name> <command...>: a background job, output prefixed with the name
    local name="$1"; shift
    local tag; tag="$(printf '%-9s | ' "$name")"
    "$@" </dev/null 2>&1 | sed -u "s/^/$tag/" &
    names+=("$name")
    jobpids+=("$!")                  # the job's last process (sed): done when the job is
    leaders+=("$(jobs -p %+)")       # the job's process group leader: the command itself
}

alive() { kill -0 -- "-$1" 2>/dev/null; }  # anything left in process group $1

stop_requested="" force=""
on_signal() {
    if [[ -n "$stop_requested" ]]; then
        force=1
        say "SIG$1 again: killing everything"
    else
        stop_requested="SIG$1"
        say "SIG$1: stopping (warm shutdown; Ctrl-C again to kill)"
    fi
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

stop_all() {
    local i deadline
    for i in "${!leaders[@]}"; do
        kill -TERM "${leaders[$i]}" 2>/dev/null || true
    done
    deadline=$(( SECONDS + STOP_TIMEOUT ))
    while [[ -z "$force" && $SECONDS -lt $deadline ]]; do
        local left=0
        for i in "${!leaders[@]}"; do
            alive "${leaders[$i]}" && left=1
        done
        [[ $left == 0 ]] && break
        sleep 0.2
    done
    for i in "${!leaders[@]}"; do
        if alive "${leaders[$i]}"; then
            say "${names[$i]} still running: SIGKILL"
            kill -KILL -- "-${leaders[$i]}" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
}

say "starting workers, beat and Flower (http://127.0.0.1:$FLOWER_PORT); Ctrl-C stops them"
start worker "$CELERY" -A tasks worker -Q cashu,cashu.beat -l "$LOG_LEVEL" -n "cashu@%h"
start lightning "$CELERY" -A tasks worker -Q cashu.lightning --pool threads -c 16 \
    -l "$LOG_LEVEL" -n "lightning@%h"
start beat "$CELERY" -A tasks beat -l "$LOG_LEVEL" \
    -s "$RUN_DIR/celerybeat-schedule" --pidfile "$RUN_DIR/celerybeat.pid"
start flower "$CELERY" -A tasks flower --port="$FLOWER_PORT" --address=127.0.0.1

status=0
while [[ -z "$stop_requested" ]]; do
    # returns when one job ends, or early when a trapped signal arrives
    if wait -n "${jobpids[@]}"; then status=0; else status=$?; fi
    [[ -n "$stop_requested" ]] && break
    for i in "${!jobpids[@]}"; do
        if ! kill -0 "${jobpids[$i]}" 2>/dev/null; then
            say "${names[$i]} exited (status $status): stopping the others"
            stop_requested="${names[$i]} exited"
            [[ $status == 0 ]] && status=1
        fi
    done
done
stop_all
if [[ "$stop_requested" == SIG* ]]; then
    say "stopped"
    exit 0
fi
exit "$status"
