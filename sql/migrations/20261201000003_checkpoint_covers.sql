-- Runs as a dynamic migrate role after SET ROLE precinct_owner, in schema
-- precinct.
--
-- audit_head() also reports what the last checkpoint signed. Rows appended
-- between a replica reading the head and writing its checkpoint lie before
-- the checkpoint row but after the seq it covers: counting only the rows
-- after the checkpoint row left them unsigned until the next write (seen
-- under 10 concurrent writers on two replicas).
DROP FUNCTION audit_head();
CREATE FUNCTION audit_head(OUT seq bigint, OUT row_hash bytea,
  OUT checkpoint_row_seq bigint, OUT checkpoint_age_secs double precision,
  OUT checkpoint_covers_seq bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = precinct, pg_temp AS $$
  SELECT h.seq, h.row_hash, h.checkpoint_row_seq,
         CASE WHEN h.checkpoint_at = '-infinity' THEN 'Infinity'::double precision
              ELSE extract(epoch FROM now() - h.checkpoint_at)::double precision END,
         -- Before any checkpoint the genesis row is the one "covered".
         coalesce((SELECT (a.detail->>'covers_seq')::bigint FROM audit_log a
                   WHERE a.seq = h.checkpoint_row_seq AND a.event = 'audit_checkpoint'),
                  h.checkpoint_row_seq)
  FROM audit_chain_head h;
$$;
REVOKE ALL ON FUNCTION audit_head() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_head() TO precinct_app;
