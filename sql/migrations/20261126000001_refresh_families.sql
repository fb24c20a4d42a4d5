-- A family is one login's chain of refresh tokens. A refresh locks its
-- family's row (SELECT … FOR UPDATE), so the reuse check, spending the
-- presented token, inserting its successor and revoking the family happen
-- one at a time per family: two concurrent refreshes of one token cannot
-- both win, and a revocation cannot miss a successor inserted meanwhile.
CREATE TABLE refresh_families (
  id          uuid PRIMARY KEY,
  user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

-- Families that exist already: revoked when every token of theirs is.
INSERT INTO refresh_families (id, user_id, created_at, revoked_at)
SELECT family_id,
       (array_agg(user_id))[1],
       min(created_at),
       CASE WHEN count(*) = count(revoked_at) THEN max(revoked_at) END
FROM refresh_tokens
GROUP BY family_id;

ALTER TABLE refresh_tokens
  ADD CONSTRAINT refresh_tokens_family_fk
  FOREIGN KEY (family_id) REFERENCES refresh_families (id) ON DELETE CASCADE;
