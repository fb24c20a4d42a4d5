#!/bin/sh
# Creates the application database if missing and applies sql/bootstrap.sql
# (idempotent). POSIX sh with only psql: it runs unchanged in the PostgreSQL
# image (the k8s/dev bootstrap Job) and on a workstation.
#
#   DATABASE_ADMIN_URL  a role that can create roles and databases; its password
#                       may come from PGPASSWORD instead of the URL
#   DB_NAME             the application database                  [precinct]
#   DB_VAULT_PASSWORD   password of the precinct_vault login OpenBao uses
#   SQL_DIR             where bootstrap.sql is                     [../sql]
set -eu
: "${DATABASE_ADMIN_URL:?DATABASE_ADMIN_URL is required}" "${DB_VAULT_PASSWORD:?DB_VAULT_PASSWORD is required}"
DB_NAME="${DB_NAME:-precinct}"
SQL_DIR="${SQL_DIR:-$(dirname "$0")/../sql}"

exists="$(psql "$DATABASE_ADMIN_URL" -v ON_ERROR_STOP=1 -Atq -v name="$DB_NAME" \
  -f - <<'SQL'
SELECT 1 FROM pg_database WHERE datname = :'name';
SQL
)"
if [ "$exists" != 1 ]; then
  psql "$DATABASE_ADMIN_URL" -v ON_ERROR_STOP=1 -q -v name="$DB_NAME" -f - <<'SQL'
CREATE DATABASE :"name";
SQL
fi

# \connect keeps host, user and password: the rest runs in the application
# database. The password goes through a psql variable, quoted by psql.
psql "$DATABASE_ADMIN_URL" -v ON_ERROR_STOP=1 -q -v name="$DB_NAME" -v vault_password="$DB_VAULT_PASSWORD" \
  -f - >/dev/null <<SQL
\\connect :"name"
SET client_min_messages = warning;
\\i '$SQL_DIR/bootstrap.sql'
BEGIN;
SELECT pg_advisory_xact_lock(727274);
ALTER ROLE precinct_vault PASSWORD :'vault_password';
COMMIT;
SQL
echo "database $DB_NAME bootstrapped"
