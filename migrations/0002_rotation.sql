-- Rotation engine: the models each provider offers (for /v1/models),
-- refreshed from the providers' model lists.
CREATE TABLE provider_models (
  provider   TEXT    NOT NULL,
  model      TEXT    NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (provider, model)
);

-- Cooldown rows are found by their end when pruned, and per-model states
-- by model when every key's state for one model is needed.
CREATE INDEX key_models_until ON key_models (state, until);
