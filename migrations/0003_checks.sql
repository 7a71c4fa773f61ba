-- Health checks: when each key is due for its next check, how its recent
-- checks went, every check's result (balance history), and on-demand check
-- jobs that advance in chunks.
ALTER TABLE keys ADD COLUMN next_check_at INTEGER NOT NULL DEFAULT 0;  -- unix ms; 0 = now
ALTER TABLE keys ADD COLUMN check_fails INTEGER NOT NULL DEFAULT 0;    -- failed recovery probes in a row
ALTER TABLE keys ADD COLUMN check_result TEXT NOT NULL DEFAULT '';     -- outcome of the last check
CREATE INDEX keys_next_check ON keys (next_check_at);

CREATE TABLE key_checks (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  key_id  INTEGER NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
  at      INTEGER NOT NULL,
  -- ok, invalid, exhausted, limited, error, inconclusive
  outcome TEXT    NOT NULL,
  status  INTEGER NOT NULL DEFAULT 0,   -- upstream HTTP status, 0 if none
  balance REAL,                         -- total balance when the provider tells
  detail  TEXT    NOT NULL DEFAULT ''   -- e.g. the balance fields as sent, an error excerpt
);
CREATE INDEX key_checks_by_key ON key_checks (key_id, at);
CREATE INDEX key_checks_at ON key_checks (at);

CREATE TABLE check_jobs (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  state        TEXT    NOT NULL CHECK (state IN ('running', 'stopped', 'done')),
  filter       TEXT    NOT NULL,               -- JSON: which keys
  options      TEXT    NOT NULL,               -- JSON: pacing and retries
  total        INTEGER NOT NULL,
  done         INTEGER NOT NULL DEFAULT 0,
  changed      INTEGER NOT NULL DEFAULT 0,
  errors       INTEGER NOT NULL DEFAULT 0,
  cursor       INTEGER NOT NULL DEFAULT 0,     -- last key id checked
  changed_keys TEXT    NOT NULL DEFAULT '[]',  -- JSON: [[id, from, to], …] (the first 200)
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  run_ms       INTEGER NOT NULL DEFAULT 0,     -- time spent checking, for the rate
  lease_until  INTEGER NOT NULL DEFAULT 0      -- one advancer at a time
);
