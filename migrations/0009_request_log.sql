-- The request log: every proxied request that failed, was retried on
-- another key or was refused, and a sample of the others (the setting
-- request_log_sample). id is the request id keypool answers with
-- (X-Keypool-Request-Id): unix ms << 12 | 12 random bits, so it orders
-- by time and a time range is an id range (no other index to write), and
-- it stays below 2^53 (JavaScript numbers carry it exactly).
-- Never a body, never a secret: keys by id, tokens by id.
CREATE TABLE request_log (
  id                INTEGER PRIMARY KEY,
  token_id          INTEGER NOT NULL,          -- 0: AUTH_KEY
  provider          TEXT    NOT NULL,
  model             TEXT    NOT NULL,
  route             TEXT    NOT NULL,          -- the path, without its query
  status            INTEGER NOT NULL,          -- what the client got
  class             TEXT    NOT NULL,          -- success, client, upstream, rejected
  key_id            INTEGER NOT NULL,          -- the key that answered; 0: none
  keys              TEXT    NOT NULL,          -- ",id,id," of every key tried, for the key filter
  attempts          TEXT    NOT NULL,          -- JSON: [{"key","status","verdict","reason","ms"}]
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  cached_tokens     INTEGER NOT NULL DEFAULT 0,
  estimated         INTEGER NOT NULL DEFAULT 0,
  latency_ms        INTEGER NOT NULL DEFAULT 0
);
