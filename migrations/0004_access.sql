-- Access and security: upstream keys encrypted at rest (the worker seals
-- existing plain rows on first use: SQL cannot, it has no key), client
-- tokens, the audit log and login throttling.

-- keys.secret now holds "v1:<AES-GCM sealed key>"; fingerprint (an HMAC of
-- the key) finds duplicates without decrypting; masked is what listings
-- show ("sk-ab…7f3c"), so they need no decryption either.
ALTER TABLE keys ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE keys ADD COLUMN masked TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX keys_fingerprint ON keys (provider, fingerprint) WHERE fingerprint <> '';
-- The rows still to seal, found without reading the others.
CREATE INDEX keys_unsealed ON keys (id) WHERE fingerprint = '';

-- Client tokens: only a hash and a short prefix of the secret are kept.
CREATE TABLE tokens (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  name            TEXT    NOT NULL,
  hash            TEXT    NOT NULL UNIQUE,   -- SHA-256 of the token, hex
  prefix          TEXT    NOT NULL,          -- "kp-AbCd" for display
  providers       TEXT    NOT NULL DEFAULT '[]',  -- JSON; empty = all
  models          TEXT    NOT NULL DEFAULT '[]',  -- JSON patterns ("gemini-*"); empty = all
  expires_at      INTEGER NOT NULL DEFAULT 0,     -- unix ms; 0 = never
  rpm             INTEGER NOT NULL DEFAULT 0,     -- requests per minute; 0 = no limit
  requests_day    INTEGER NOT NULL DEFAULT 0,     -- quotas; 0 = none
  requests_total  INTEGER NOT NULL DEFAULT 0,
  tokens_day      INTEGER NOT NULL DEFAULT 0,
  tokens_total    INTEGER NOT NULL DEFAULT 0,
  disabled        INTEGER NOT NULL DEFAULT 0,
  used_requests   INTEGER NOT NULL DEFAULT 0,     -- counters, written coalesced
  used_tokens     INTEGER NOT NULL DEFAULT 0,
  day             INTEGER NOT NULL DEFAULT 0,     -- the UTC day (unix ms at 00:00) the day counters are for
  day_requests    INTEGER NOT NULL DEFAULT 0,
  day_tokens      INTEGER NOT NULL DEFAULT 0,
  last_used_at    INTEGER NOT NULL DEFAULT 0,
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL
);

-- Every admin action: who, what, when, from where, on what (masked).
CREATE TABLE audit_log (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  at      INTEGER NOT NULL,
  actor   TEXT    NOT NULL,   -- "session" or "password"
  ip      TEXT    NOT NULL DEFAULT '',
  action  TEXT    NOT NULL,   -- e.g. "keys.add", "token.create", "login.fail"
  target  TEXT    NOT NULL DEFAULT '',
  detail  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Failed logins per client IP, for throttling.
CREATE TABLE login_failures (
  ip         TEXT    PRIMARY KEY,
  since      INTEGER NOT NULL,   -- start of the current window, unix ms
  failures   INTEGER NOT NULL
);
