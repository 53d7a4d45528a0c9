-- Event runtime tables, present in every service database.

-- Transactional outbox: rows are written in the same transaction as the state change they announce.
CREATE TABLE IF NOT EXISTS jetmart_outbox (
    seq          BIGSERIAL PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    subject      TEXT        NOT NULL,
    aggregate_id TEXT        NOT NULL,
    headers      JSONB       NOT NULL,
    payload      BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
-- The relay only ever scans the unpublished tail.
CREATE INDEX IF NOT EXISTS jetmart_outbox_unpublished ON jetmart_outbox (seq) WHERE published_at IS NULL;

-- Inbox / idempotency record: one row per (consumer, event) whose effect has committed.
CREATE TABLE IF NOT EXISTS jetmart_processed (
    consumer     TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Wake the relay at commit time instead of polling.
CREATE OR REPLACE FUNCTION jetmart_outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('jetmart_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS jetmart_outbox_notify ON jetmart_outbox;
CREATE TRIGGER jetmart_outbox_notify AFTER INSERT ON jetmart_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION jetmart_outbox_notify();
