-- JetStream answered "duplicate" when this row was published: it had been published before a
-- crash and re-sent. Counted by the invariant checker as a deduplicated publish.
ALTER TABLE jetmart_outbox ADD COLUMN IF NOT EXISTS duplicate BOOLEAN NOT NULL DEFAULT false;
