-- Idempotent database bootstrap, run by an administrator connected to the
-- application database (scripts/bootstrap-db.sh, the k8s bootstrap Job, tests).
--
-- Roles (cluster-wide, stable, never dropped by OpenBao):
--   precinct_owner  NOLOGIN  owns the schema and every table: objects survive
--                            the dynamic roles that come and go.
--   precinct_app    NOLOGIN  what each migration grants, table by table (no
--                            defaults); OpenBao's runtime role joins it.
--   precinct_vault  LOGIN    the connection OpenBao's database engine uses to
--                            create and drop dynamic roles (its password is set
--                            by the caller, never here).
-- Dynamic roles (created by OpenBao, see scripts/configure-openbao.sh):
--   runtime  IN ROLE precinct_app    → per-table, per-column DML under row-level
--                                      security; audit_log INSERT only; no DDL
--   migrate  IN ROLE precinct_owner  → runs migrations after SET ROLE precinct_owner

-- Bootstraps of several databases may run at once (tests): one transaction,
-- serialized by a lock held until it commits (role catalog rows are shared).
BEGIN;
SELECT pg_advisory_xact_lock(727274);

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'precinct_owner') THEN
    CREATE ROLE precinct_owner NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'precinct_app') THEN
    CREATE ROLE precinct_app NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'precinct_vault') THEN
    CREATE ROLE precinct_vault LOGIN CREATEROLE;
  END IF;
END
$$;

-- PostgreSQL 16+ needs ADMIN OPTION to grant membership; harmless on 15.
GRANT precinct_app TO precinct_vault WITH ADMIN OPTION;
GRANT precinct_owner TO precinct_vault WITH ADMIN OPTION;
-- Revocation terminates a dynamic role's sessions before dropping it.
GRANT pg_signal_backend TO precinct_vault;

DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO precinct_app, precinct_owner, precinct_vault', current_database());
  EXECUTE format('GRANT CREATE ON DATABASE %I TO precinct_owner', current_database());
END
$$;

-- Nobody but the owner creates objects; the public schema is closed.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS precinct AUTHORIZATION precinct_owner;
ALTER SCHEMA precinct OWNER TO precinct_owner;
REVOKE ALL ON SCHEMA precinct FROM PUBLIC;
GRANT USAGE ON SCHEMA precinct TO precinct_app;

-- No blanket grants: each migration grants the runtime role exactly what
-- each table needs (sql/migrations/20261201000002_assume_breach.sql), and
-- running this bootstrap again never widens them. Default privileges that
-- earlier versions of this file set are withdrawn.
ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner IN SCHEMA precinct
  REVOKE ALL ON TABLES FROM precinct_app;
ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner IN SCHEMA precinct
  REVOKE ALL ON SEQUENCES FROM precinct_app;
ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner IN SCHEMA precinct
  REVOKE ALL ON FUNCTIONS FROM precinct_app;
ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

COMMIT;
