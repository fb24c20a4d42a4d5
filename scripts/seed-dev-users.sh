#!/bin/sh
# Seeds the development demo users (jake, amy, rosa, terry, charles, gina;
# password <name>99) from sql/dev-seed.sql. Development only: scripts/dev.sh
# and the k8s/dev seed Job run it; k8s/base and the release image never do.
# Idempotent. POSIX sh with only psql: it runs in the PostgreSQL image.
#
#   DATABASE_URL   an administrator connection to the application database;
#                  its password may come from PGPASSWORD instead
#   SEED_SQL       the seed                                  [../sql/dev-seed.sql]
#   WAIT_SECONDS   how long to wait for the backend's migrations to create
#                  precinct.users                            [0]
set -eu
: "${DATABASE_URL:?DATABASE_URL is required}"
SEED_SQL="${SEED_SQL:-$(dirname "$0")/../sql/dev-seed.sql}"
WAIT_SECONDS="${WAIT_SECONDS:-0}"

waited=0
until [ "$(psql "$DATABASE_URL" -Atqc "SELECT to_regclass('precinct.users') IS NOT NULL" 2>/dev/null)" = t ]; do
  if [ "$waited" -ge "$WAIT_SECONDS" ]; then
    echo "precinct.users does not exist after ${WAIT_SECONDS}s: the backend migrates it at startup" >&2
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done
psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -f "$SEED_SQL" >/dev/null
echo "demo users present: $(psql "$DATABASE_URL" -Atqc "SELECT string_agg(username, ' ' ORDER BY username) FROM precinct.users WHERE username IN ('jake','amy','rosa','terry','charles','gina')")"
