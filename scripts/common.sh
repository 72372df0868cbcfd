# Shared by scripts/test.sh and scripts/run.sh (sourced, not run): the project's virtual
# environments and the local PostgreSQL and Redis. Source it from the repository root:
#     source scripts/common.sh
# Messages are tagged with the sourcing script's name ([test.sh], [run.sh]).

SCRIPT_TAG="${SCRIPT_TAG:-$(basename "$0")}"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_USER=postgres
REDIS_PORT=6379
MINT_PINS=("cashu==0.20.2" "marshmallow<4" "limits<4")
# the second test mint: its dependencies pinned in a file, then cashu itself with --no-deps
# (its wheel pins breez-sdk-spark<0.18, which the registry no longer has)
MINT21_REQUIREMENTS=scripts/mint21-requirements.txt
MINT21_PIN="cashu==0.21.0"

say() { echo "[$SCRIPT_TAG] $*" >&2; }
die() { echo "[$SCRIPT_TAG] ERROR: $*" >&2; exit 1; }

hash_of() { sha256sum | cut -d' ' -f1; }

wait_for() {  # wait_for <seconds> <command...>
    local n=$(( $1 * 5 )); shift
    for ((i = 0; i < n; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# ---------------------------------------------------------------- project venv
ensure_project_venv() {  # .venv: the project and its test dependencies, as constraints.txt pins
    if [[ ! -x .venv/bin/python ]]; then
        say "creating .venv"
        python3 -m venv .venv || die "python3 -m venv failed (is python3-venv installed?)"
    fi
    local want stamp
    want="$(cat pyproject.toml constraints.txt | hash_of)" \
        || die "cannot read pyproject.toml and constraints.txt"
    stamp=.venv/.cashu-worker-install.sha256
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] \
        || ! .venv/bin/python -c "import pytest" 2>/dev/null; then
        say "installing the project into .venv (pip install -e '.[test]' -c constraints.txt)"
        .venv/bin/python -m pip install -qq -e '.[test]' -c constraints.txt \
            || die "pip install -e '.[test]' -c constraints.txt failed"
        echo "$want" >"$stamp"
    fi
}

# ---------------------------------------------------------------- mint venv
ensure_mint_venv() {  # .venv-mint with the Nutshell test mint (docs/test-mint.md)
    local want stamp
    want="$(printf '%s\n' "${MINT_PINS[@]}" | hash_of)"
    stamp=.venv-mint/.cashu-worker-install.sha256
    if [[ ! -x .venv-mint/bin/python ]]; then
        say "creating .venv-mint (Nutshell test mint)"
        python3 -m venv .venv-mint || die "python3 -m venv .venv-mint failed"
    fi
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || ! -x .venv-mint/bin/mint ]]; then
        say "installing ${MINT_PINS[*]} into .venv-mint"
        .venv-mint/bin/python -m pip install -qq "${MINT_PINS[@]}" || die "installing Nutshell failed"
        echo "$want" >"$stamp"
    fi
}

ensure_mint21_venv() {  # .venv-mint21 with the Nutshell 0.21.0 test mint (docs/test-mint.md)
    local want stamp
    want="$({ cat "$MINT21_REQUIREMENTS"; echo "$MINT21_PIN"; } | hash_of)"
    stamp=.venv-mint21/.cashu-worker-install.sha256
    if [[ ! -x .venv-mint21/bin/python ]]; then
        say "creating .venv-mint21 (Nutshell 0.21.0 test mint)"
        python3 -m venv .venv-mint21 || die "python3 -m venv .venv-mint21 failed"
    fi
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" || ! -x .venv-mint21/bin/mint ]]; then
        say "installing $MINT21_REQUIREMENTS, then $MINT21_PIN (--no-deps) into .venv-mint21"
        .venv-mint21/bin/python -m pip install -qq -r "$MINT21_REQUIREMENTS" \
            || die "installing the dependencies of Nutshell 0.21.0 failed"
        .venv-mint21/bin/python -m pip install -qq --no-deps "$MINT21_PIN" \
            || die "installing Nutshell 0.21.0 failed"
        echo "$want" >"$stamp"
    fi
}

# ---------------------------------------------------------------- PostgreSQL
pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

ensure_postgres() {  # PostgreSQL answers on $PG_HOST:$PG_PORT, started if installed but stopped
    command -v pg_isready >/dev/null || die "pg_isready not found: install PostgreSQL (postgresql, postgresql-client)"
    if ! pg_up; then
        say "PostgreSQL does not answer on $PG_HOST:$PG_PORT; starting it"
        if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
            for version in $(ls /etc/postgresql); do
                pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
            done
        fi
        wait_for 30 pg_up || die "PostgreSQL is not running on $PG_HOST:$PG_PORT and could not be started
  (tried: pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start).
  Start it yourself, with trust auth for user $PG_USER on $PG_HOST:$PG_PORT."
    fi
}

# ---------------------------------------------------------------- Redis
redis_up() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

ensure_redis() {  # Redis answers on 127.0.0.1:$REDIS_PORT, started if installed but stopped
    command -v redis-cli >/dev/null || die "redis-cli not found: install Redis (redis-server, redis-tools)"
    if ! redis_up; then
        say "Redis does not answer on 127.0.0.1:$REDIS_PORT; starting it"
        if command -v redis-server >/dev/null; then
            mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
            redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
                --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
        fi
        wait_for 15 redis_up || die "Redis is not running on 127.0.0.1:$REDIS_PORT and could not be started
  (tried: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port $REDIS_PORT ...)."
    fi
}

# ---------------------------------------------------------------- RabbitMQ
RABBITMQ_PORT=5672
rabbitmq_up() { (exec 3<>"/dev/tcp/127.0.0.1/$RABBITMQ_PORT") 2>/dev/null; }

ensure_rabbitmq_vhost() {  # ensure_rabbitmq_vhost <name>: guest may use it
    rabbitmq_up || die "RabbitMQ does not answer on 127.0.0.1:$RABBITMQ_PORT (guest/guest expected)"
    command -v rabbitmqctl >/dev/null || die "rabbitmqctl not found: it makes the tests' vhosts"
    if ! rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx "$1"; then
        say "creating RabbitMQ vhost $1"
        rabbitmqctl -q add_vhost "$1" >/dev/null 2>&1 || true  # made meanwhile: fine
    fi
    rabbitmqctl -q set_permissions -p "$1" guest ".*" ".*" ".*" >/dev/null \
        || die "could not give guest the RabbitMQ vhost $1"
}

# ---------------------------------------------------------------- databases
psql_q() { psql -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -tAc "$1"; }

ensure_database() {  # ensure_database <name>: created on $PG_HOST:$PG_PORT if missing
    local db="$1" exists
    exists="$(psql_q "SELECT 1 FROM pg_database WHERE datname = '$db'")" \
        || die "cannot connect to PostgreSQL as $PG_USER@$PG_HOST:$PG_PORT (trust auth expected)"
    if [[ "$exists" != 1 ]]; then
        say "creating database $db"
        psql_q "CREATE DATABASE $db" >/dev/null \
            || [[ "$(psql_q "SELECT 1 FROM pg_database WHERE datname = '$db'")" == 1 ]] \
            || die "could not create database $db"
    fi
}
