-- Batches past their retention are pruned by age (--marketplace-batch-retention-days): each
-- round finds the oldest by this index instead of scanning every batch.
CREATE INDEX batches_received_at ON batches (received_at_ms);
