-- Assume breach (docs/audit.md, docs/threat-model.md): whoever holds the
-- runtime role's credentials (a leaked lease, an injection) can neither
-- rewrite the audit trail nor read other users' rows.
--
--   1. Least privilege by table: no blanket grants; each table gets what the
--      request path needs, column by column where a column is never written
--      at run time. Later migrations grant explicitly (no default privileges).
--   2. Row-level security, forced, on the user-owned tables: the runtime role
--      sees the rows of the user its transaction acts for (set_user), none
--      when that is unset, garbage or left over from another transaction.
--      The pre-authentication paths go through narrow SECURITY DEFINER
--      functions owned by precinct_owner.
--   3. audit_log is append-only and hash-chained; precinct signs the chain
--      head with a Transit key of its own (src/audit/checkpoint.rs).

---------------------------------------------------------------------------
-- 1. Privileges
---------------------------------------------------------------------------

ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner IN SCHEMA precinct
  REVOKE ALL ON TABLES FROM precinct_app;
ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner IN SCHEMA precinct
  REVOKE ALL ON SEQUENCES FROM precinct_app;
ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner IN SCHEMA precinct
  REVOKE ALL ON FUNCTIONS FROM precinct_app;
-- Functions are executable by PUBLIC unless revoked: the definer functions
-- below must be callable by the runtime role only.
ALTER DEFAULT PRIVILEGES FOR ROLE precinct_owner
  REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

REVOKE ALL ON ALL TABLES IN SCHEMA precinct FROM precinct_app, PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA precinct FROM precinct_app, PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA precinct FROM precinct_app, PUBLIC;

-- Profiles only: password hashes are read by login_lookup, written by
-- register_user and upgrade_password_hash.
GRANT SELECT (id, username, email, created_at, updated_at) ON users TO precinct_app;
GRANT SELECT, INSERT (id, user_id), UPDATE (revoked_at) ON refresh_families TO precinct_app;
GRANT SELECT, INSERT (id, family_id, user_id, token_hash, expires_at),
      UPDATE (used_at, revoked_at) ON refresh_tokens TO precinct_app;
GRANT SELECT, DELETE,
      INSERT (user_id, github_login, scopes, token_status, configured_at),
      UPDATE (github_login, scopes, token_status, configured_at, last_accessed_at)
  ON github_integrations TO precinct_app;
-- Shared limiter state, not user data (docs/auth.md, "Across replicas").
GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limits TO precinct_app;
GRANT SELECT, INSERT, UPDATE (last_success), DELETE ON login_known_good TO precinct_app;
-- audit_log: grants below, with its new columns. Nothing on
-- _sqlx_migrations or audit_chain_head.

---------------------------------------------------------------------------
-- 2. Whose rows: a transaction-local setting, fail-closed
---------------------------------------------------------------------------

-- `app.user_id` is '<uuid>@<this transaction's now() in µs>'. The suffix
-- binds it to one transaction: a value left by set_config(…, false) on a
-- pooled connection, or by an earlier transaction, names a different
-- instant and counts as unset. Missing, empty, not a UUID: NULL, which no
-- row's user_id equals.
CREATE FUNCTION current_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 2)
           = ((EXTRACT(epoch FROM pg_catalog.now()) * 1000000)::bigint)::text
     -- a canonical lowercase UUID (cheaper than a regex: this runs in
     -- every policy): 36 characters, hex digits but for 4 dashes, there.
     AND pg_catalog.length(pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 1)) = 36
     AND pg_catalog.translate(pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 1),
                              '0123456789abcdef', '') = '----'
     AND pg_catalog.substr(pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 1), 9, 1)
         || pg_catalog.substr(pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 1), 14, 1)
         || pg_catalog.substr(pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 1), 19, 1)
         || pg_catalog.substr(pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 1), 24, 1)
         = '----'
    THEN pg_catalog.split_part(pg_catalog.current_setting('app.user_id', true), '@', 1)::uuid
  END
$$;

-- The transaction acts for `uid` until it ends (set_config(…, true)).
-- plpgsql: its plan is cached (a SQL function called from plpgsql is
-- planned again on every call).
CREATE FUNCTION set_user(uid uuid) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_catalog.set_config('app.user_id',
    uid::text || '@' || ((EXTRACT(epoch FROM pg_catalog.now()) * 1000000)::bigint)::text, true);
END
$$;

-- The owner role (migrations, definer functions, `precinct audit verify`)
-- sees every row; the runtime role its user's rows. FORCE: the owner is
-- subject to policies too, so nothing reaches these tables unpoliced.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON users TO precinct_owner USING (true) WITH CHECK (true);
CREATE POLICY own_row ON users FOR SELECT TO precinct_app
  USING (id = current_user_id());

ALTER TABLE refresh_families ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_families FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON refresh_families TO precinct_owner USING (true) WITH CHECK (true);
CREATE POLICY own_rows ON refresh_families TO precinct_app
  USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());

ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON refresh_tokens TO precinct_owner USING (true) WITH CHECK (true);
CREATE POLICY own_rows ON refresh_tokens TO precinct_app
  USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());

ALTER TABLE github_integrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE github_integrations FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON github_integrations TO precinct_owner USING (true) WITH CHECK (true);
CREATE POLICY own_row ON github_integrations TO precinct_app
  USING (user_id = current_user_id()) WITH CHECK (user_id = current_user_id());

-- Pre-authentication paths: narrow functions, owner's rights, fixed
-- search_path (an object planted in another schema is never resolved).

-- One account by username, for the password check.
CREATE FUNCTION login_lookup(p_username text)
RETURNS TABLE (id uuid, username text, password_hash text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
  SELECT u.id, u.username, u.password_hash FROM users u
  WHERE lower(u.username) = lower(p_username);
$$;

-- Replaces a hash the caller proved it knows the password of (login).
CREATE FUNCTION upgrade_password_hash(p_id uuid, p_old text, p_new text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
BEGIN
  UPDATE users SET password_hash = p_new WHERE id = p_id AND password_hash = p_old;
  RETURN FOUND;
END
$$;

-- A new account: its creation time, or NULL when the username or email
-- is taken.
CREATE FUNCTION register_user(p_id uuid, p_username text, p_email text, p_hash text)
RETURNS timestamptz
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
  INSERT INTO users (id, username, email, password_hash)
  VALUES (p_id, p_username, p_email, p_hash)
  ON CONFLICT DO NOTHING RETURNING created_at;
$$;

-- The family and user of a presented refresh token (by its hash); the
-- transaction then acts for that user.
CREATE FUNCTION refresh_lookup(p_hash bytea, OUT family_id uuid, OUT user_id uuid)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
BEGIN
  SELECT t.family_id, t.user_id INTO family_id, user_id
  FROM refresh_tokens t WHERE t.token_hash = p_hash;
  IF user_id IS NOT NULL THEN
    PERFORM set_user(user_id);
  END IF;
END
$$;

-- Every replica's memory of ended sessions (src/auth/sessions.rs): ids
-- and times only, of every user.
CREATE FUNCTION ended_sessions(window_secs double precision)
RETURNS TABLE (id uuid, revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
  SELECT f.id, f.revoked_at FROM refresh_families f
  WHERE f.revoked_at > now() - make_interval(secs => window_secs);
$$;

CREATE FUNCTION live_sessions(ids uuid[]) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
  SELECT f.id FROM refresh_families f WHERE f.id = ANY (ids) AND f.revoked_at IS NULL;
$$;

---------------------------------------------------------------------------
-- 3. The audit trail: append-only, hash-chained
---------------------------------------------------------------------------

-- Deleting a user must not rewrite its audit rows (ON DELETE SET NULL did).
ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_user_id_fkey;
ALTER TABLE audit_log ADD COLUMN seq bigint, ADD COLUMN prev_hash bytea, ADD COLUMN row_hash bytea;

-- The canonical encoding of a row, the same in src/audit/chain.rs: a
-- version tag, then each field as '|' and '-' (NULL) or
-- '<octet length>:<text>'. Length prefixes: no two rows encode alike.
CREATE FUNCTION audit_field(v text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN v IS NULL THEN '-' ELSE pg_catalog.octet_length(v)::text || ':' || v END;
$$;

CREATE FUNCTION audit_row_hash(prev bytea, seq bigint, occurred_at timestamptz, event text,
  outcome text, user_id uuid, client_ip inet, user_agent text, request_id text, detail jsonb)
RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = precinct, pg_temp AS $$
  SELECT pg_catalog.sha256(prev || pg_catalog.convert_to(
    'precinct-audit-v1'
    || '|' || audit_field(seq::text)
    || '|' || audit_field(((EXTRACT(epoch FROM occurred_at) * 1000000)::bigint)::text)
    || '|' || audit_field(event)
    || '|' || audit_field(outcome)
    || '|' || audit_field(user_id::text)
    || '|' || audit_field(client_ip::text)
    || '|' || audit_field(user_agent)
    || '|' || audit_field(request_id)
    || '|' || audit_field(detail::text), 'UTF8'));
$$;

-- Where the chain ends, and the last checkpoint (src/audit/checkpoint.rs).
-- One row, updated by every append: fillfactor 10 leaves each page room
-- for its next versions (HOT updates, pruned in place), so the row stays
-- one page away however fast the chain grows.
CREATE TABLE audit_chain_head (
  single             boolean PRIMARY KEY DEFAULT true CHECK (single),
  seq                bigint NOT NULL,
  row_hash           bytea NOT NULL,
  checkpoint_row_seq bigint NOT NULL,
  checkpoint_at      timestamptz NOT NULL
) WITH (fillfactor = 10);

-- Genesis (seq 0, previous hash 32 zero bytes), then the rows that exist,
-- in the order they were written.
DO $$
DECLARE
  prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
  n bigint := 0;
  r record;
  h bytea;
BEGIN
  INSERT INTO audit_log (event, outcome, detail, seq, prev_hash)
  VALUES ('audit_genesis', 'created', '{"format": "precinct-audit-v1"}', 0, prev);
  UPDATE audit_log a SET row_hash = audit_row_hash(prev, 0, a.occurred_at, a.event, a.outcome,
      a.user_id, a.client_ip, a.user_agent, a.request_id, a.detail)
    WHERE a.seq = 0 RETURNING a.row_hash INTO prev;
  FOR r IN SELECT * FROM audit_log WHERE seq IS NULL ORDER BY id LOOP
    n := n + 1;
    h := audit_row_hash(prev, n, r.occurred_at, r.event, r.outcome, r.user_id, r.client_ip,
                        r.user_agent, r.request_id, r.detail);
    UPDATE audit_log SET seq = n, prev_hash = prev, row_hash = h WHERE id = r.id;
    prev := h;
  END LOOP;
  -- No checkpoint yet: the first one precinct signs seals every row above.
  INSERT INTO audit_chain_head (seq, row_hash, checkpoint_row_seq, checkpoint_at)
  VALUES (n, prev, 0, '-infinity');
END
$$;

ALTER TABLE audit_log
  ALTER COLUMN seq SET NOT NULL,
  ALTER COLUMN prev_hash SET NOT NULL,
  ALTER COLUMN row_hash SET NOT NULL,
  ADD CONSTRAINT audit_log_seq_key UNIQUE (seq);

-- Each insert takes the head's row lock until its transaction ends: rows
-- from any number of replicas are numbered and chained one at a time, and
-- the chain never forks. (An audit row is the last statement of its
-- transaction, so the lock is held briefly and never waits on another.)
-- The runtime role cannot supply these columns (no privilege on them);
-- rows that arrive with a row_hash come from audit_append below, which
-- chained them itself under the same lock.
CREATE FUNCTION audit_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
DECLARE
  head audit_chain_head;
BEGIN
  IF NEW.row_hash IS NOT NULL THEN
    RETURN NEW;
  END IF;
  SELECT * INTO head FROM audit_chain_head WHERE single FOR UPDATE;
  NEW.seq := head.seq + 1;
  NEW.prev_hash := head.row_hash;
  NEW.occurred_at := coalesce(NEW.occurred_at, now());
  NEW.row_hash := audit_row_hash(NEW.prev_hash, NEW.seq, NEW.occurred_at, NEW.event,
    NEW.outcome, NEW.user_id, NEW.client_ip, NEW.user_agent, NEW.request_id, NEW.detail);
  UPDATE audit_chain_head SET seq = NEW.seq, row_hash = NEW.row_hash WHERE single;
  RETURN NEW;
END
$$;
CREATE TRIGGER audit_chain BEFORE INSERT ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_chain();

-- Nobody rewrites history, not even the owner role; an administrator who
-- disables these triggers leaves a chain `precinct audit verify` rejects.
CREATE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = precinct, pg_temp AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

GRANT INSERT (event, outcome, user_id, client_ip, user_agent, request_id, detail)
  ON audit_log TO precinct_app;
GRANT SELECT ON audit_log TO precinct_app;
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON audit_log TO precinct_owner USING (true) WITH CHECK (true);
-- Anyone may append (pre-authentication events have no user); reads are
-- the acting user's own rows.
CREATE POLICY append ON audit_log FOR INSERT TO precinct_app WITH CHECK (true);
CREATE POLICY own_rows ON audit_log FOR SELECT TO precinct_app
  USING (user_id = current_user_id());

-- The chain's end and last checkpoint, for the checkpoint task.
CREATE FUNCTION audit_head(OUT seq bigint, OUT row_hash bytea,
  OUT checkpoint_row_seq bigint, OUT checkpoint_age_secs double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
  SELECT h.seq, h.row_hash, h.checkpoint_row_seq,
         CASE WHEN h.checkpoint_at = '-infinity' THEN 'Infinity'::double precision
              ELSE extract(epoch FROM now() - h.checkpoint_at)::double precision END
  FROM audit_chain_head h;
$$;

-- Appends a signed checkpoint of the chain up to `covers_seq` (whose
-- row_hash is `head`), unless one at least as recent exists (another
-- replica's). Returns the checkpoint row's seq, or NULL.
CREATE FUNCTION audit_checkpoint(covers_seq bigint, head bytea, key_name text,
  key_version integer, signature text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
DECLARE
  covered bigint;
  row_seq bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(727275);
  SELECT coalesce(max((a.detail->>'covers_seq')::bigint), -1) INTO covered
  FROM audit_log a
  WHERE a.seq >= (SELECT h.checkpoint_row_seq FROM audit_chain_head h)
    AND a.event = 'audit_checkpoint';
  IF covered >= covers_seq THEN
    RETURN NULL;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.seq = covers_seq AND a.row_hash = head) THEN
    RAISE EXCEPTION 'checkpoint of seq % does not match the chain', covers_seq;
  END IF;
  INSERT INTO audit_log (event, outcome, detail)
  VALUES ('audit_checkpoint', 'signed', jsonb_build_object(
    'covers_seq', covers_seq, 'head', encode(head, 'hex'),
    'key', key_name, 'key_version', key_version, 'signature', signature))
  RETURNING seq INTO row_seq;
  UPDATE audit_chain_head SET checkpoint_row_seq = row_seq, checkpoint_at = now() WHERE single;
  RETURN row_seq;
END
$$;

-- Internal API calls are read-only and audited at the rate of the calls:
-- precinct queues their rows and appends them in batches (src/audit/batch.rs),
-- one lock of the head and one commit per batch, without waiting for the
-- WAL flush (synchronous_commit off, that transaction only). A crash of
-- precinct may lose its queue (at most one batch interval); a crash of
-- PostgreSQL its last ~0.6 s (3 x wal_writer_delay). Neither corrupts the
-- chain: a lost batch was never chained, seq stays dense. Security changes
-- (logins, logouts, refreshes) keep their own synchronous row.
CREATE FUNCTION audit_append(p_occurred_at timestamptz[], p_event text[], p_outcome text[],
  p_user_id uuid[], p_client_ip inet[], p_user_agent text[], p_request_id text[],
  p_detail jsonb[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
DECLARE
  head audit_chain_head;
  n integer := coalesce(array_length(p_event, 1), 0);
  s bigint;
  h bytea;
  seqs bigint[] := '{}';
  prevs bytea[] := '{}';
  hashes bytea[] := '{}';
BEGIN
  IF n = 0 THEN
    RETURN NULL;
  END IF;
  PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
  SELECT * INTO head FROM audit_chain_head WHERE single FOR UPDATE;
  s := head.seq;
  h := head.row_hash;
  FOR i IN 1 .. n LOOP
    s := s + 1;
    prevs := prevs || h;
    h := audit_row_hash(h, s, p_occurred_at[i], p_event[i], p_outcome[i], p_user_id[i],
                        p_client_ip[i], p_user_agent[i], p_request_id[i], p_detail[i]);
    seqs := seqs || s;
    hashes := hashes || h;
  END LOOP;
  INSERT INTO audit_log (occurred_at, event, outcome, user_id, client_ip, user_agent,
                         request_id, detail, seq, prev_hash, row_hash)
  SELECT * FROM unnest(p_occurred_at, p_event, p_outcome, p_user_id, p_client_ip,
                       p_user_agent, p_request_id, p_detail, seqs, prevs, hashes);
  UPDATE audit_chain_head SET seq = s, row_hash = h WHERE single;
  RETURN s;
END
$$;

-- Is the session `sid` of `uid` live? (Introspection, one round trip.)
CREATE FUNCTION session_live(p_uid uuid, p_sid uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = precinct, pg_temp AS $$
BEGIN
  PERFORM set_user(p_uid);
  RETURN EXISTS (SELECT 1 FROM refresh_families f JOIN users u ON u.id = f.user_id
                 WHERE f.id = p_sid AND f.user_id = p_uid AND f.revoked_at IS NULL);
END
$$;

-- A user's public profile for an internal caller (any user: the caller
-- holds only an id).
CREATE FUNCTION public_profile(p_id uuid)
RETURNS TABLE (id uuid, username text, email text, created_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
  SELECT u.id, u.username, u.email, u.created_at FROM users u WHERE u.id = p_id;
$$;

-- The request path keeps one round trip per query: functions that set the
-- acting user and read (or write) in one statement.

-- /me: the user of a live session, with whether GitHub is configured.
-- A definer function keyed on the session: it answers only for a live
-- session id of that user, a capability the runtime role does not hold
-- (set_user needs only a user id). Measured: acting for the user under
-- row-level security cost /me 0.48x the ceiling's rate, this 0.77x.
CREATE FUNCTION me(p_uid uuid, p_sid uuid)
RETURNS TABLE (id uuid, username text, email text, created_at timestamptz, github boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
BEGIN
  -- Joins on primary keys (at most one row each): cheaper than EXISTS.
  RETURN QUERY
    SELECT u.id, u.username, u.email, u.created_at, g.user_id IS NOT NULL
    FROM users u
    JOIN refresh_families f ON f.id = p_sid AND f.user_id = u.id AND f.revoked_at IS NULL
    LEFT JOIN github_integrations g ON g.user_id = u.id AND g.token_status = 'valid'
    WHERE u.id = p_uid;
END
$$;

CREATE FUNCTION github_touch(p_uid uuid) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = precinct, pg_temp AS $$
BEGIN
  PERFORM set_user(p_uid);
  UPDATE github_integrations SET last_accessed_at = now() WHERE user_id = p_uid;
END
$$;

GRANT EXECUTE ON FUNCTION
  current_user_id(), set_user(uuid),
  login_lookup(text), upgrade_password_hash(uuid, text, text),
  register_user(uuid, text, text, text), refresh_lookup(bytea),
  ended_sessions(double precision), live_sessions(uuid[]),
  audit_head(), audit_checkpoint(bigint, bytea, text, integer, text),
  audit_append(timestamptz[], text[], text[], uuid[], inet[], text[], text[], jsonb[]),
  session_live(uuid, uuid), public_profile(uuid),
  me(uuid, uuid), github_touch(uuid),
  -- called by the session-end triggers, which run as the role that ends one
  announce_ended_sessions(uuid[]),
  rate_limit_take(bytea[], double precision[], integer[], boolean[], bytea, double precision),
  rate_limits_sweep(double precision)
TO precinct_app;
