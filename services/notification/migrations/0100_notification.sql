-- One row per email the service decided on: sent (the SMTP server accepted it) or failed (a
-- permanent rejection, or an email that cannot be built). 'pending' exists only inside the
-- handler's transaction, between claiming the row and the SMTP answer; it never commits.
CREATE TABLE notifications (
    notification_id UUID        PRIMARY KEY,
    -- The event that asked for the email (its ce-id) and which email it is.
    event_id        UUID        NOT NULL,
    template        TEXT        NOT NULL
        CHECK (template IN ('order_confirmed', 'order_cancelled', 'survey_invitation')),
    order_id        UUID        NOT NULL,
    customer_id     TEXT        NOT NULL,
    -- Survey invitations only.
    survey_id       TEXT,
    -- The customer's own address (shown back to them through ListNotifications).
    recipient       TEXT        NOT NULL,
    -- Deterministic from (event_id, template): a duplicate from the kill window carries the same.
    message_id      TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    -- Deliveries of the event up to the decision (transient failures roll back, so this is the
    -- broker's delivery count, not a counter kept here).
    attempts        INTEGER     NOT NULL CHECK (attempts >= 1),
    error           TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Exactly one email per (event, template), whatever the consumer's own dedupe record says.
    UNIQUE (event_id, template)
);

-- ListNotifications, newest first, keyset paging.
CREATE INDEX notifications_by_order ON notifications (order_id, created_at DESC, notification_id DESC);
CREATE INDEX notifications_by_customer ON notifications (customer_id, created_at DESC, notification_id DESC);
