-- Prompt tokens the providers read from their prompt caches, per rollup
-- (usage.Usage.Cached): the dashboard's "cached share of prompt tokens".
ALTER TABLE usage_rollups ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
