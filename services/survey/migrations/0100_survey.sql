-- Survey service tables. Times named *_at are timestamps; "event time" means the order's
-- confirmed_at from order.confirmed, which replays reproduce, unlike the wall clock.

-- What the rules need to know about a customer, updated in the order.confirmed handler's
-- transaction. The row is locked (FOR UPDATE) while deciding, so decisions of one customer are
-- serial even across replicas.
CREATE TABLE survey_customers (
    customer_id        TEXT        PRIMARY KEY,
    -- Confirmed orders seen so far (the first-order rule).
    confirmed_orders   INTEGER     NOT NULL DEFAULT 0 CHECK (confirmed_orders >= 0),
    first_order_id     UUID,
    first_confirmed_at TIMESTAMPTZ,
    -- Event time of the latest order that got an invitation (the cool-down rule).
    last_invited_at    TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Every confirmed order seen and what the rules decided: the customer's confirmed-order history,
-- and the guard that makes an order.confirmed re-published under a new event id decide nothing.
CREATE TABLE survey_orders (
    order_id     UUID        PRIMARY KEY,
    customer_id  TEXT        NOT NULL REFERENCES survey_customers (customer_id),
    currency     TEXT        NOT NULL,
    total_minor  BIGINT      NOT NULL,
    confirmed_at TIMESTAMPTZ NOT NULL,
    decision     TEXT        NOT NULL CHECK (decision IN (
        'invited', 'currency_not_configured', 'below_minimum', 'not_first_order',
        'recently_invited', 'not_sampled')),
    decided_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX survey_orders_by_customer ON survey_orders (customer_id, confirmed_at);

-- One invitation per order. Only the SHA-256 of the token is kept: the token itself travels in
-- survey.requested and the email, never here.
CREATE TABLE survey_invitations (
    survey_id    UUID        PRIMARY KEY,
    order_id     UUID        NOT NULL UNIQUE REFERENCES survey_orders (order_id),
    customer_id  TEXT        NOT NULL,
    token_hash   TEXT        NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    requested_at TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL CHECK (expires_at > requested_at),
    -- Set once, in the transaction that stores the response.
    used_at      TIMESTAMPTZ,
    -- Correlation id of the order's saga, carried on to survey.completed.
    correlation_id TEXT
);
CREATE INDEX survey_invitations_by_customer ON survey_invitations (customer_id, requested_at);

-- Answers. The comment is plain text exactly as validated (never HTML): whatever displays it
-- escapes it.
CREATE TABLE survey_responses (
    survey_id   UUID        PRIMARY KEY REFERENCES survey_invitations (survey_id),
    score       SMALLINT    NOT NULL CHECK (score BETWEEN 0 AND 10),
    comment     TEXT        CHECK (comment <> ''),
    answered_at TIMESTAMPTZ NOT NULL
);
