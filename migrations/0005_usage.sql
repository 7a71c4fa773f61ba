-- Usage rollups: requests, outcomes, tokens and latency per minute and per
-- day × client token × key × provider × model. Written coalesced (one
-- statement per flush, both granularities); minute rows are pruned after
-- two days, day rows with the history.
CREATE TABLE usage_rollups (
  granularity       TEXT    NOT NULL CHECK (granularity IN ('m', 'd')),
  bucket            INTEGER NOT NULL,           -- unix ms of the minute or UTC day
  token_id          INTEGER NOT NULL,           -- 0: AUTH_KEY
  key_id            INTEGER NOT NULL,           -- 0: no key served
  provider          TEXT    NOT NULL,
  model             TEXT    NOT NULL,
  requests          INTEGER NOT NULL DEFAULT 0,
  successes         INTEGER NOT NULL DEFAULT 0, -- 2xx
  client_errors     INTEGER NOT NULL DEFAULT 0, -- the upstream's 4xx, returned
  upstream_errors   INTEGER NOT NULL DEFAULT 0, -- 5xx, timeouts: keypool answered 502
  rejected          INTEGER NOT NULL DEFAULT 0, -- keypool refused: no usable key, a storm, a token limit
  prompt_tokens     INTEGER NOT NULL DEFAULT 0,
  completion_tokens INTEGER NOT NULL DEFAULT 0,
  estimated         INTEGER NOT NULL DEFAULT 0, -- requests whose tokens are estimates
  latency_ms        INTEGER NOT NULL DEFAULT 0, -- sum of the times to the answer's headers
  PRIMARY KEY (granularity, bucket, token_id, key_id, provider, model)
);
CREATE INDEX usage_rollups_time ON usage_rollups (granularity, bucket);
