-- The inbox is pruned by age (platform::retention): each round finds its oldest ids by this
-- index instead of scanning every id the service ever applied.
CREATE INDEX IF NOT EXISTS inbox_applied_at ON inbox (applied_at_ms);
