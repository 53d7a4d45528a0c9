-- Payment service tables.
--
-- No card data ever reaches this database. The customer's payment token is passed through to
-- the gateway and not stored at all (not even hashed): a redelivered inventory.reserved event
-- carries it again, which is all a retry needs. The gateway's authorization id is the only
-- reference kept.

-- One payment per order. Rows change only through the domain state machine
-- (PENDING -> AUTHORIZED -> CAPTURED | VOIDED, PENDING -> DECLINED | VOIDED).
CREATE TABLE payments (
    payment_id             UUID        PRIMARY KEY,
    order_id               UUID        NOT NULL UNIQUE,
    status                 TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'AUTHORIZED', 'CAPTURED', 'VOIDED', 'DECLINED')),
    amount_minor           BIGINT      NOT NULL,
    currency               TEXT        NOT NULL,
    -- The gateway's handle; also set on a VOIDED payment whose authorization landed after the
    -- cancel (and was voided at once).
    authorization_id       TEXT,
    decline_reason         TEXT
        CHECK (decline_reason IN ('CARD_DECLINED', 'INSUFFICIENT_FUNDS', 'AMOUNT_ABOVE_LIMIT',
                                  'INVALID_AMOUNT', 'INVALID_TOKEN')),
    decline_message        TEXT,
    -- Set (committed) before the first authorize call: from then on the gateway may hold an
    -- authorization even if no answer was recorded, so a cancelled payment must still be
    -- resolved with the gateway before it can be considered closed.
    authorize_requested_at TIMESTAMPTZ,
    -- When order.cancelled was seen (the cancel is recorded even before any authorization).
    cancelled_at           TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    authorized_at          TIMESTAMPTZ,
    declined_at            TIMESTAMPTZ,
    captured_at            TIMESTAMPTZ,
    voided_at              TIMESTAMPTZ,
    CHECK (status NOT IN ('AUTHORIZED', 'CAPTURED') OR (authorization_id IS NOT NULL AND authorized_at IS NOT NULL)),
    CHECK (status <> 'CAPTURED' OR captured_at IS NOT NULL),
    CHECK (status <> 'VOIDED' OR voided_at IS NOT NULL),
    CHECK (status <> 'DECLINED' OR (decline_reason IS NOT NULL AND declined_at IS NOT NULL))
);

-- The invariant checker looks for open authorizations and captures by status.
CREATE INDEX payments_status ON payments (status);

-- Every gateway call, whatever came of it. Written outside the state-change transaction (the
-- call happened even if that transaction rolls back), hence no foreign key to payments.
-- Calls refused by an open circuit breaker never reached the gateway and are not listed.
CREATE TABLE payment_gateway_attempts (
    attempt_id  BIGSERIAL   PRIMARY KEY,
    order_id    UUID        NOT NULL,
    operation   TEXT        NOT NULL CHECK (operation IN ('AUTHORIZE', 'CAPTURE', 'VOID')),
    -- 1 for the first call while handling one delivery, then one more per in-process retry.
    attempt     INTEGER     NOT NULL CHECK (attempt >= 1),
    -- The triggering event and its JetStream delivery count.
    event_id    UUID        NOT NULL,
    delivery    BIGINT      NOT NULL,
    outcome     TEXT        NOT NULL
        CHECK (outcome IN ('AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED', 'TRANSIENT_ERROR', 'REJECTED')),
    -- Decline reason or error text.
    detail      TEXT,
    latency_us  BIGINT      NOT NULL CHECK (latency_us >= 0),
    started_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX payment_gateway_attempts_order ON payment_gateway_attempts (order_id, attempt_id);
