-- Inventory: stock per SKU, reservations per (order, SKU), the fate of each order as inventory
-- saw it (with tombstones for cancels that overtook their placement), the append-only stock
-- ledger and the AdjustStock idempotency record.
--
-- SKUs are compared byte-wise (COLLATE "C") so "ORDER BY sku", the row-lock order of every
-- multi-SKU transaction, is the same order the domain sorts lines in, and page tokens are stable.
-- SKUs also end up as the last token of NATS subjects (inventory.low.<sku>), hence the charset.

CREATE TABLE inventory_stock (
    sku                 TEXT COLLATE "C" PRIMARY KEY
                        CHECK (sku ~ '^[A-Za-z0-9_-]{1,64}$'),
    -- The three buckets; the database itself refuses a negative one.
    available           BIGINT      NOT NULL DEFAULT 0 CHECK (available >= 0),
    reserved            BIGINT      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold                BIGINT      NOT NULL DEFAULT 0 CHECK (sold >= 0),
    -- inventory.low is published when available crosses below this; 0 disables it.
    low_stock_threshold BIGINT      NOT NULL DEFAULT 0 CHECK (low_stock_threshold >= 0),
    -- +1 on every change; the Redis cache only ever replaces an entry with a newer version.
    version             BIGINT      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What inventory did for each order. 'cancelled' is also the tombstone of a cancel that arrived
-- before the order's placement: a late order.placed then reserves nothing.
CREATE TABLE inventory_orders (
    order_id    TEXT        PRIMARY KEY CHECK (order_id <> ''),
    status      TEXT        NOT NULL
                CHECK (status IN ('reserved', 'rejected', 'released', 'committed', 'cancelled')),
    customer_id TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per (order, SKU) with the merged quantity of the order's lines for that SKU.
CREATE TABLE inventory_reservations (
    order_id   TEXT        NOT NULL REFERENCES inventory_orders (order_id),
    sku        TEXT COLLATE "C" NOT NULL REFERENCES inventory_stock (sku),
    quantity   BIGINT      NOT NULL CHECK (quantity > 0),
    status     TEXT        NOT NULL CHECK (status IN ('reserved', 'released', 'committed')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX inventory_reservations_open ON inventory_reservations (sku) WHERE status = 'reserved';

-- AdjustStock requests by idempotency key: a retry finds its row and changes nothing.
CREATE TABLE inventory_adjustments (
    idempotency_key TEXT        PRIMARY KEY CHECK (idempotency_key <> ''),
    adjustment_id   UUID        NOT NULL UNIQUE,
    sku             TEXT COLLATE "C" NOT NULL REFERENCES inventory_stock (sku),
    delta           BIGINT      NOT NULL CHECK (delta <> 0),
    reason          TEXT        NOT NULL CHECK (reason <> ''),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every movement of every SKU, append-only. Deltas per bucket plus the levels after the
-- movement, so for each SKU: sum(deltas) = current levels, and no level was ever negative.
CREATE TABLE inventory_ledger (
    seq             BIGSERIAL   PRIMARY KEY,
    sku             TEXT COLLATE "C" NOT NULL REFERENCES inventory_stock (sku),
    kind            TEXT        NOT NULL CHECK (kind IN ('reserve', 'release', 'commit', 'adjust')),
    available_delta BIGINT      NOT NULL,
    reserved_delta  BIGINT      NOT NULL,
    sold_delta      BIGINT      NOT NULL,
    available_after BIGINT      NOT NULL CHECK (available_after >= 0),
    reserved_after  BIGINT      NOT NULL CHECK (reserved_after >= 0),
    sold_after      BIGINT      NOT NULL CHECK (sold_after >= 0),
    -- Saga movements name their order; adjustments their adjustment id and reason.
    order_id        TEXT,
    adjustment_id   UUID,
    reason          TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (CASE kind
        WHEN 'reserve' THEN reserved_delta > 0 AND available_delta = -reserved_delta AND sold_delta = 0
        WHEN 'release' THEN reserved_delta < 0 AND available_delta = -reserved_delta AND sold_delta = 0
        WHEN 'commit'  THEN reserved_delta < 0 AND sold_delta = -reserved_delta AND available_delta = 0
        WHEN 'adjust'  THEN available_delta <> 0 AND reserved_delta = 0 AND sold_delta = 0
    END),
    CHECK ((kind = 'adjust') = (adjustment_id IS NOT NULL)),
    CHECK ((kind = 'adjust') = (reason IS NOT NULL)),
    CHECK ((kind = 'adjust') = (order_id IS NULL))
);
CREATE INDEX inventory_ledger_sku ON inventory_ledger (sku, seq);
CREATE INDEX inventory_ledger_order ON inventory_ledger (order_id) WHERE order_id IS NOT NULL;

CREATE FUNCTION inventory_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'inventory_ledger is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER inventory_ledger_no_update BEFORE UPDATE OR DELETE ON inventory_ledger
    FOR EACH ROW EXECUTE FUNCTION inventory_ledger_append_only();
CREATE TRIGGER inventory_ledger_no_truncate BEFORE TRUNCATE ON inventory_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION inventory_ledger_append_only();
