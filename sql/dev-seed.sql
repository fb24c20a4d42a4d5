-- Development-only demo users (never applied by the production migrations):
-- scripts/seed-dev-users.sh applies it, for scripts/dev.sh and the k8s/dev
-- seed Job. Password of each is <name>99, bcrypt cost 12 as in the original
-- system; the first successful login upgrades the hash to Argon2id.
INSERT INTO precinct.users (id, username, email, password_hash) VALUES
  ('00000000-0000-7000-8000-000000000001', 'jake', 'jake@nine-nine.example', '$2b$12$tuhUff7nulyQO3I5dCpTxeQSSCntJM2IQc1OgjYzVhrR.Zv5U0VKW'),
  ('00000000-0000-7000-8000-000000000002', 'amy', 'amy@nine-nine.example', '$2b$12$uPvPoyGLuehREL9ZcfBoQet2ydha1YEJZmyjgNDDpOw6QXl0dyydG'),
  ('00000000-0000-7000-8000-000000000003', 'rosa', 'rosa@nine-nine.example', '$2b$12$xYVjjmzTOEZDIXX0OWntQumiitj0uP8JSx4NI58Mr9xzUnQKjKPy2'),
  ('00000000-0000-7000-8000-000000000004', 'terry', 'terry@nine-nine.example', '$2b$12$paZSBgcMt4eweNfqWs7q4eo5aNQPjeWrr7B48MpGLWJvWbk3aRocm'),
  ('00000000-0000-7000-8000-000000000005', 'charles', 'charles@nine-nine.example', '$2b$12$r1YjzjltHxt5Jy4fhN1T/eKPqowsF.hGvip/ED3YhKi0PhQPmCMzy'),
  ('00000000-0000-7000-8000-000000000006', 'gina', 'gina@nine-nine.example', '$2b$12$W/HQH.bFVSPiKuaNq.bBN.8bIX/cwBoGZuA99tDrz/dAUNzfkYaC6')
ON CONFLICT DO NOTHING;
