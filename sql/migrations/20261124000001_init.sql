-- Runs as a dynamic migrate role after SET ROLE precinct_owner, in schema
-- precinct: every object below is owned by precinct_owner.

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at = now();
  RETURN NEW;
END
$$;

CREATE TABLE users (
  id            uuid PRIMARY KEY,
  username      text NOT NULL,
  email         text NOT NULL,
  password_hash text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT users_username_format CHECK (username ~ '^[A-Za-z0-9_.-]{3,32}$')
);
-- Usernames and emails compare case-insensitively.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Metadata only: the GitHub token itself lives in OpenBao KV v2.
CREATE TABLE github_integrations (
  user_id          uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  github_login     text NOT NULL,
  scopes           text[] NOT NULL DEFAULT '{}',
  token_status     text NOT NULL DEFAULT 'valid' CHECK (token_status IN ('valid', 'invalid')),
  configured_at    timestamptz NOT NULL DEFAULT now(),
  last_accessed_at timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER github_integrations_updated_at BEFORE UPDATE ON github_integrations
  FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE audit_log (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  occurred_at timestamptz NOT NULL DEFAULT now(),
  event       text NOT NULL,
  outcome     text NOT NULL,
  user_id     uuid REFERENCES users (id) ON DELETE SET NULL,
  client_ip   inet,
  user_agent  text,
  request_id  text,
  detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_user_time ON audit_log (user_id, occurred_at DESC);
CREATE INDEX audit_log_event_time ON audit_log (event, occurred_at DESC);
