-- The signed-in official's own bearer token, so the web can call the indicators service on
-- their behalf (that service enforces their rights). It is stored encrypted under a key derived
-- from the session cookie, which this table never holds (only its SHA-256): a copy of the table
-- opens no token. Empty for sessions opened before this column existed.
ALTER TABLE sessions ADD COLUMN bearer TEXT NOT NULL DEFAULT '';
