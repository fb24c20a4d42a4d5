#!/bin/sh
# OpenBao configuration as code: idempotent (a second run changes nothing and
# fails on nothing). POSIX sh with only the `bao` CLI: it runs unchanged in the
# OpenBao image (the k8s/dev bootstrap Job) and on a workstation. Needs BAO_ADDR and a token allowed to configure mounts
# (BAO_TOKEN), and the `bao` CLI on PATH (or BAO_BIN).
#
#   OIDC_DISCOVERY_URL  SPIFFE OIDC discovery (SPIRE's provider, or the dev agent)
#   SPIFFE_ID           the backend's SPIFFE ID (bound_subject)
#   JWT_AUDIENCE        audience bound on the role            [openbao]
#   DB_CONNECTION_URL   postgresql://{{username}}:{{password}}@host:5432/db?sslmode=...
#   DB_VAULT_USER / DB_VAULT_PASSWORD   the precinct_vault login (sql/bootstrap.sql)
#   TOKEN_TTL / TOKEN_MAX_TTL           [90m / 3h]   JWT-login token lifetimes
#   DB_LEASE_TTL / DB_LEASE_MAX_TTL     [90m / 3h]   dynamic credential lifetimes
#   TRANSIT_AUTO_ROTATE_PERIOD  Transit rotates the signing key this often  [720h]
#                         (at least 1h; precinct pre-publishes each new version
#                         and retires the old one after the longest token
#                         lifetime: docs/auth.md)
#   AUDIT_SIGNING_KEY / AUDIT_CHECKPOINT_KV_PATH  [precinct-audit / audit/checkpoint]
#                         the audit checkpoints' Transit key and KV copy
#   DB_USERNAME_TEMPLATE  names of the dynamic roles   [OpenBao's default, v-…]
#                         (tests put a tag in it to find and drop their roles)
# See docs/rotation.md for why these lifetimes go together.
set -eu
BAO="${BAO_BIN:-bao}"
: "${BAO_ADDR:?BAO_ADDR is required}" "${OIDC_DISCOVERY_URL:?}" "${SPIFFE_ID:?}" "${DB_CONNECTION_URL:?}"
: "${DB_VAULT_USER:=precinct_vault}" "${DB_VAULT_PASSWORD:?}"
JWT_AUDIENCE="${JWT_AUDIENCE:-openbao}"
TOKEN_TTL="${TOKEN_TTL:-90m}"; TOKEN_MAX_TTL="${TOKEN_MAX_TTL:-3h}"
DB_LEASE_TTL="${DB_LEASE_TTL:-90m}"; DB_LEASE_MAX_TTL="${DB_LEASE_MAX_TTL:-3h}"
JWT_MOUNT="${BAO_JWT_MOUNT:-jwt}"; JWT_ROLE="${BAO_JWT_ROLE:-backend-role}"
DB_MOUNT="${BAO_DB_MOUNT:-database}"; KV_MOUNT="${BAO_KV_MOUNT:-secret}"
RUNTIME_ROLE="${BAO_DB_ROLE:-precinct-runtime}"; MIGRATE_ROLE="${BAO_DB_MIGRATE_ROLE:-precinct-migrate}"
TRANSIT_MOUNT="${BAO_TRANSIT_MOUNT:-transit}"
export BAO_ADDR

# `sys/auth/<path>` and `sys/mounts/<path>` answer 404 for what is not mounted.
mounted() { "$BAO" read "sys/$1/$2" >/dev/null 2>&1; }

mounted auth "$JWT_MOUNT" || "$BAO" auth enable -path="$JWT_MOUNT" jwt >/dev/null
mounted mounts "$DB_MOUNT" || "$BAO" secrets enable -path="$DB_MOUNT" database >/dev/null
mounted mounts "$KV_MOUNT" || "$BAO" secrets enable -path="$KV_MOUNT" -version=2 kv >/dev/null
mounted mounts "$TRANSIT_MOUNT" || "$BAO" secrets enable -path="$TRANSIT_MOUNT" transit >/dev/null

# Access tokens are signed here; the private key never leaves OpenBao.
SIGNING_KEY="${AUTH_SIGNING_KEY:-precinct-access-token}"
"$BAO" read "$TRANSIT_MOUNT/keys/$SIGNING_KEY" >/dev/null 2>&1 \
  || "$BAO" write -f "$TRANSIT_MOUNT/keys/$SIGNING_KEY" type=ecdsa-p256 >/dev/null
"$BAO" write "$TRANSIT_MOUNT/keys/$SIGNING_KEY/config" \
  auto_rotate_period="${TRANSIT_AUTO_ROTATE_PERIOD:-720h}" >/dev/null

# Audit checkpoints are signed here (docs/audit.md): a key of their own, not
# rotated automatically (every version must keep verifying old checkpoints;
# a manual rotation is fine, never set min_decryption_version on it).
AUDIT_KEY="${AUDIT_SIGNING_KEY:-precinct-audit}"
AUDIT_KV_PATH="${AUDIT_CHECKPOINT_KV_PATH:-audit/checkpoint}"
"$BAO" read "$TRANSIT_MOUNT/keys/$AUDIT_KEY" >/dev/null 2>&1 \
  || "$BAO" write -f "$TRANSIT_MOUNT/keys/$AUDIT_KEY" type=ecdsa-p256 >/dev/null

# The issuer OpenBao trusts: SPIRE's OIDC discovery provider (or the dev agent).
"$BAO" write -force "auth/$JWT_MOUNT/config" \
  oidc_discovery_url="$OIDC_DISCOVERY_URL" bound_issuer="$OIDC_DISCOVERY_URL" >/dev/null

# Least privilege: exactly the paths the backend uses.
"$BAO" policy write precinct-backend - >/dev/null <<POLICY
path "$DB_MOUNT/creds/$RUNTIME_ROLE" { capabilities = ["read"] }
path "$DB_MOUNT/creds/$MIGRATE_ROLE" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/revoke-self" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "$KV_MOUNT/data/github/*" { capabilities = ["create", "read", "update", "delete"] }
path "$KV_MOUNT/metadata/github/*" { capabilities = ["read", "delete"] }
path "$TRANSIT_MOUNT/sign/$SIGNING_KEY" { capabilities = ["update"] }
path "$TRANSIT_MOUNT/sign/$SIGNING_KEY/*" { capabilities = ["update"] }
path "$TRANSIT_MOUNT/keys/$SIGNING_KEY" { capabilities = ["read"] }
path "$TRANSIT_MOUNT/sign/$AUDIT_KEY" { capabilities = ["update"] }
path "$TRANSIT_MOUNT/keys/$AUDIT_KEY" { capabilities = ["read"] }
path "$KV_MOUNT/data/$AUDIT_KV_PATH" { capabilities = ["create", "read", "update"] }
POLICY

"$BAO" write "auth/$JWT_MOUNT/role/$JWT_ROLE" \
  role_type=jwt user_claim=sub bound_subject="$SPIFFE_ID" bound_audiences="$JWT_AUDIENCE" \
  token_policies=precinct-backend token_ttl="$TOKEN_TTL" token_max_ttl="$TOKEN_MAX_TTL" >/dev/null

set --
if [ -n "${DB_USERNAME_TEMPLATE:-}" ]; then set -- username_template="$DB_USERNAME_TEMPLATE"; fi
"$BAO" write "$DB_MOUNT/config/precinct" plugin_name=postgresql-database-plugin \
  connection_url="$DB_CONNECTION_URL" username="$DB_VAULT_USER" password="$DB_VAULT_PASSWORD" \
  allowed_roles="$RUNTIME_ROLE,$MIGRATE_ROLE" password_authentication=scram-sha-256 \
  verify_connection=true "$@" >/dev/null

# Revocation ends the role's sessions before dropping it: a revoked role
# must not keep working through connections opened before.
REVOKE='SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"'"'{{name}}'"'"'; DROP ROLE IF EXISTS "{{name}}";'

"$BAO" write "$DB_MOUNT/roles/$RUNTIME_ROLE" db_name=precinct \
  creation_statements='CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '"'"'{{password}}'"'"' VALID UNTIL '"'"'{{expiration}}'"'"' IN ROLE precinct_app;' \
  revocation_statements="$REVOKE" default_ttl="$DB_LEASE_TTL" max_ttl="$DB_LEASE_MAX_TTL" >/dev/null

"$BAO" write "$DB_MOUNT/roles/$MIGRATE_ROLE" db_name=precinct \
  creation_statements='CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '"'"'{{password}}'"'"' VALID UNTIL '"'"'{{expiration}}'"'"' IN ROLE precinct_owner;' \
  revocation_statements="$REVOKE" default_ttl=15m max_ttl=1h >/dev/null

echo "OpenBao configured: JWT role $JWT_ROLE bound to $SPIFFE_ID (aud $JWT_AUDIENCE), database roles $RUNTIME_ROLE/$MIGRATE_ROLE"
