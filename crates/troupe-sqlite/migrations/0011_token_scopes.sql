-- Token roles beyond admin/worker need nothing new; scopes, expiry and revocation do.
-- projects: a JSON array of project ids the token is limited to, NULL for every project.
ALTER TABLE tokens ADD COLUMN projects TEXT;
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE tokens ADD COLUMN revoked_at INTEGER;
