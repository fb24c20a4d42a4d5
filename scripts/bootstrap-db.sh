#!/usr/bin/env bash
# Creates the application database if missing and applies sql/bootstrap.sql
# (idempotent). Needs DATABASE_ADMIN_URL (a role that can create roles and
# databases), DB_NAME and DB_VAULT_PASSWORD.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${DATABASE_ADMIN_URL:?}" "${DB_NAME:=precinct}" "${DB_VAULT_PASSWORD:?}"
psql "$DATABASE_ADMIN_URL" -v ON_ERROR_STOP=1 -Atqc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 \
  || psql "$DATABASE_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$DB_NAME\""
db_url="$(python3 -c "import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(u.urlunparse(p._replace(path='/'+sys.argv[2])))" "$DATABASE_ADMIN_URL" "$DB_NAME")"
psql "$db_url" -v ON_ERROR_STOP=1 -q -f "$ROOT/sql/bootstrap.sql" >/dev/null
psql "$db_url" -v ON_ERROR_STOP=1 -q >/dev/null <<SQL
BEGIN;
SELECT pg_advisory_xact_lock(727274);
ALTER ROLE precinct_vault PASSWORD '$DB_VAULT_PASSWORD';
COMMIT;
SQL
echo "database $DB_NAME bootstrapped"
