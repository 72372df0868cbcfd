#!/usr/bin/env bash
# THE test command:  bash scripts/test.sh [pytest args...]   (ruff, mypy, then pytest)
# Prepares a fresh machine (venvs, PostgreSQL, Redis, RabbitMQ vhosts, test database), then
# runs pytest: the whole suite on the Redis broker, then the task-level tests again with
# RabbitMQ as the broker. With pytest args, just `pytest args` (TEST_BROKER_URL picks the
# broker).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$(pwd)"

# say/die, the venvs, PostgreSQL and Redis: shared with scripts/run.sh
source scripts/common.sh

TEST_DB=cashu_worker_test

ensure_project_venv
ensure_mint_venv
ensure_mint21_venv
ensure_postgres
ensure_redis
ensure_rabbitmq_vhost cashu_worker_test      # the session's worker (tests/broker_harness.py)
ensure_rabbitmq_vhost cashu_worker_test_own  # a test's own workers

# ---------------------------------------------------------------- test database
ensure_database "$TEST_DB"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgresql+psycopg2://$PG_USER@$PG_HOST:$PG_PORT/$TEST_DB}"

cd "$REPO"
# lint first: a change ruff refuses does not get as far as the suite
.venv/bin/ruff check . || die "ruff check found problems (run: .venv/bin/ruff check --fix .)"
.venv/bin/ruff format --check . >/dev/null || die "ruff format: files to reformat (run: .venv/bin/ruff format .)"
.venv/bin/mypy >/dev/null || die "mypy found type errors (run: .venv/bin/mypy)"
if [[ $# -gt 0 ]]; then
    exec .venv/bin/python -m pytest "$@"
fi
.venv/bin/python -m pytest
# What goes through the broker, again on RabbitMQ: every public task and step chain, canvas,
# events, recovery, a worker killed mid-step.
say "the task-level tests with RabbitMQ as the broker"
TEST_BROKER_URL="amqp://guest:guest@127.0.0.1:5672/cashu_worker_test" \
    exec .venv/bin/python -m pytest -m "not redis_broker" tests/test_tasks_*.py
