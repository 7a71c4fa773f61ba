-- keypool schema, first version. Applied migrations are never edited:
-- later changes come as new numbered files.
-- Times are Unix milliseconds (D1 cannot bind time values).

-- One row per upstream key.
CREATE TABLE keys (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  provider        TEXT    NOT NULL,
  secret          TEXT    NOT NULL,
  label           TEXT    NOT NULL DEFAULT '',
  -- active: in rotation; disabled: by the admin; blocked: credential
  -- rejected upstream; exhausted: no balance or quota left.
  status          TEXT    NOT NULL DEFAULT 'active'
                  CHECK (status IN ('active', 'disabled', 'blocked', 'exhausted')),
  status_reason   TEXT    NOT NULL DEFAULT '',
  balance         REAL,               -- NULL while unknown
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL,
  last_used_at    INTEGER NOT NULL DEFAULT 0,
  last_checked_at INTEGER NOT NULL DEFAULT 0,
  requests        INTEGER NOT NULL DEFAULT 0,
  successes       INTEGER NOT NULL DEFAULT 0,
  failures        INTEGER NOT NULL DEFAULT 0,
  UNIQUE (provider, secret)
);

-- Key selection reads active keys of one provider, least recently used first.
CREATE INDEX keys_rotation ON keys (provider, status, last_used_at);

-- State of a key for one model: cooling until a time, or blocked for that
-- model only. No row means the key may serve the model.
CREATE TABLE key_models (
  key_id     INTEGER NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
  model      TEXT    NOT NULL,
  state      TEXT    NOT NULL CHECK (state IN ('cooling', 'blocked')),
  until      INTEGER NOT NULL DEFAULT 0,   -- end of cooling; 0 when blocked
  reason     TEXT    NOT NULL DEFAULT '',
  streak     INTEGER NOT NULL DEFAULT 0,   -- failures in a row, grows cooldowns
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (key_id, model)
);

-- Every state change of a key, for the admin to see why.
CREATE TABLE key_events (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  key_id     INTEGER NOT NULL REFERENCES keys (id) ON DELETE CASCADE,
  at         INTEGER NOT NULL,
  model      TEXT    NOT NULL DEFAULT '',  -- '' for the key as a whole
  from_state TEXT    NOT NULL,
  to_state   TEXT    NOT NULL,
  reason     TEXT    NOT NULL DEFAULT '',
  status     INTEGER NOT NULL DEFAULT 0,   -- upstream HTTP status, 0 if none
  excerpt    TEXT    NOT NULL DEFAULT ''   -- start of the upstream body, secrets masked
);
CREATE INDEX key_events_by_key ON key_events (key_id, at);

-- Admin settings, one value per name (JSON or plain text).
CREATE TABLE settings (
  name       TEXT    PRIMARY KEY,
  value      TEXT    NOT NULL,
  updated_at INTEGER NOT NULL
);
