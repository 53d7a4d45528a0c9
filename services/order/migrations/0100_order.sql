-- Event store: the source of truth. One row per event; (order_id, version) enforces optimistic
-- concurrency; seq orders the whole store for projection rebuilds.
CREATE TABLE order_events (
    seq         BIGSERIAL   NOT NULL UNIQUE,
    order_id    UUID        NOT NULL,
    version     INTEGER     NOT NULL CHECK (version >= 1),
    kind        TEXT        NOT NULL,
    event       JSONB       NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, version)
);

-- PlaceOrder idempotency: a key names one request (by fingerprint) and the order it created.
CREATE TABLE order_idempotency (
    idempotency_key TEXT        PRIMARY KEY,
    fingerprint     TEXT        NOT NULL,
    order_id        UUID        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Read model (CQRS), fed from the ORDER stream and rebuildable from order_events.
CREATE TABLE order_view (
    order_id       UUID        PRIMARY KEY,
    customer_id    TEXT        NOT NULL,
    status         TEXT        NOT NULL,
    version        INTEGER     NOT NULL,
    placed_at      TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    -- The order as the API returns it: an encoded jetmart.order.v1.Order.
    body           BYTEA       NOT NULL
);
CREATE INDEX order_view_by_customer ON order_view (customer_id, placed_at DESC, order_id DESC);
CREATE INDEX order_view_by_status ON order_view (status);
