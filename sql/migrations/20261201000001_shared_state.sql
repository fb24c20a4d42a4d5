-- State every replica shares: ended sessions are announced, rate limits
-- hold in total (docs/auth.md, "Across replicas").

-- Sessions (refresh families) that end are announced to every replica
-- (src/db/listen.rs, src/auth/sessions.rs), whoever ends them: a logout, a
-- detected reuse, or an administrator's UPDATE. One notification per
-- statement: the ids, or "resync" when there are too many for a payload.
CREATE INDEX refresh_families_revoked ON refresh_families (revoked_at)
  WHERE revoked_at IS NOT NULL;

-- Functions name their schema: triggers fire under whatever search_path the
-- session that ends a session has (an administrator's psql, say).
CREATE FUNCTION announce_ended_sessions(ended uuid[]) RETURNS void
LANGUAGE plpgsql SET search_path = precinct, pg_temp AS $$
BEGIN
  IF ended IS NULL OR cardinality(ended) = 0 THEN
    RETURN;
  END IF;
  IF cardinality(ended) > 100 THEN
    PERFORM pg_notify('precinct_sessions', 'resync');
  ELSE
    PERFORM pg_notify('precinct_sessions', array_to_string(ended, ','));
  END IF;
END
$$;

CREATE FUNCTION refresh_families_revoked() RETURNS trigger
LANGUAGE plpgsql SET search_path = precinct, pg_temp AS $$
BEGIN
  PERFORM announce_ended_sessions(ARRAY(
    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
    WHERE o.revoked_at IS NULL AND n.revoked_at IS NOT NULL));
  RETURN NULL;
END
$$;

CREATE FUNCTION refresh_families_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = precinct, pg_temp AS $$
BEGIN
  PERFORM announce_ended_sessions(ARRAY(
    SELECT o.id FROM old_rows o WHERE o.revoked_at IS NULL));
  RETURN NULL;
END
$$;

CREATE TRIGGER refresh_families_revoked AFTER UPDATE ON refresh_families
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION refresh_families_revoked();
CREATE TRIGGER refresh_families_deleted AFTER DELETE ON refresh_families
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION refresh_families_deleted();

-- Rate limits (src/db/limits.rs): one row per key (a SHA-256 of the
-- limiter and the key's parts), GCRA. `tat` is the theoretical arrival
-- time: a key is refused while it is more than the burst tolerance ahead
-- of now. UNLOGGED: a crash of PostgreSQL resets the limits, nothing else.
CREATE UNLOGGED TABLE rate_limits (
  key bytea PRIMARY KEY,
  tat timestamptz NOT NULL
);
CREATE INDEX rate_limits_tat ON rate_limits (tat);

-- (client IP, username) pairs that logged in successfully: the
-- per-username backstop spares them. Hashed like the limiter keys.
CREATE TABLE login_known_good (
  key bytea PRIMARY KEY,
  last_success timestamptz NOT NULL
);
CREATE INDEX login_known_good_last ON login_known_good (last_success);

-- Takes one token from each key in order and stops at the first that has
-- none: `refused` is its position (1-based; 0 when every key had one) and
-- `retry_after_ms` when it will. Keys whose `spare_known_good` is set are
-- skipped when `known_good` logged in within `known_good_for` seconds.
-- Each key is one INSERT … ON CONFLICT DO UPDATE … WHERE: PostgreSQL locks
-- the row and re-checks the condition on its latest version, so concurrent
-- takes from any number of replicas never overspend a key.
CREATE FUNCTION rate_limit_take(
  keys bytea[], emission_ms double precision[], burst integer[],
  spare_known_good boolean[], known_good bytea, known_good_for double precision,
  OUT refused integer, OUT retry_after_ms double precision)
LANGUAGE plpgsql SET search_path = precinct, pg_temp AS $$
DECLARE
  t timestamptz := clock_timestamp();
  known boolean := false;
  emission interval;
  tolerance interval;
  ahead timestamptz;
BEGIN
  refused := 0;
  retry_after_ms := 0;
  IF known_good IS NOT NULL THEN
    known := EXISTS (SELECT 1 FROM login_known_good k
                     WHERE k.key = known_good
                       AND k.last_success > t - make_interval(secs => known_good_for));
  END IF;
  FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
    CONTINUE WHEN spare_known_good[i] AND known;
    emission := make_interval(secs => emission_ms[i] / 1000.0);
    tolerance := emission * (burst[i] - 1);
    INSERT INTO rate_limits AS r (key, tat) VALUES (keys[i], t + emission)
      ON CONFLICT (key) DO UPDATE SET tat = greatest(r.tat, t) + emission
      WHERE greatest(r.tat, t) - t <= tolerance;
    IF NOT FOUND THEN
      SELECT r.tat INTO ahead FROM rate_limits r WHERE r.key = keys[i];
      refused := i;
      retry_after_ms := greatest(
        extract(epoch FROM (greatest(ahead, t) - t - tolerance)) * 1000, 1);
      RETURN;
    END IF;
  END LOOP;
END
$$;

-- Expired limiter rows are the same as no row; forgotten clients go too.
CREATE FUNCTION rate_limits_sweep(known_good_for double precision) RETURNS void
LANGUAGE sql SET search_path = precinct, pg_temp AS $$
  DELETE FROM rate_limits WHERE tat < now();
  DELETE FROM login_known_good
    WHERE last_success < now() - make_interval(secs => known_good_for);
$$;
