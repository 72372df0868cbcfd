#!/usr/bin/env bash
# THE test command:  bash scripts/test.sh [pytest args...]   (ruff, mypy, then pytest)
# Prepares a fresh machine (venvs, PostgreSQL, Redis, test database), then runs pytest.
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

# ---------------------------------------------------------------- test database
ensure_database "$TEST_DB"
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgresql+psycopg2://$PG_USER@$PG_HOST:$PG_PORT/$TEST_DB}"

cd "$REPO"
# lint first: a change ruff refuses does not get as far as the suite
.venv/bin/ruff check . || die "ruff check found problems (run: .venv/bin/ruff check --fix .)"
.venv/bin/ruff format --check . >/dev/null || die "ruff format: files to reformat (run: .venv/bin/ruff format .)"
.venv/bin/mypy >/dev/null || die "mypy found type errors (run: .venv/bin/mypy)"
exec .venv/bin/python -m pytest "$@"
