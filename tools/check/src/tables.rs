//! Every service table the checker reads, and the one query it runs on each. The auditor reads
//! the services' databases directly (their APIs would hide what it checks); keeping each read
//! here names exactly which tables of which service it depends on, so a migration that changes
//! one of them knows to change this file too.

/// order: the event store (the source of truth of each order's status).
pub const ORDER_STATUSES: &str = "SELECT order_id::text AS id, bool_or(kind = 'confirmed') AS confirmed, bool_or(kind = 'cancelled') AS cancelled
         FROM order_events GROUP BY order_id";

/// payment: each order's payment status.
pub const PAYMENTS: &str = "SELECT order_id::text AS id, status FROM payments";

/// inventory: stock rows against the sums of their ledger.
pub const STOCK_AND_LEDGER: &str = "SELECT s.sku, s.available, s.reserved, s.sold,
                COALESCE(sum(l.available_delta) FILTER (WHERE l.kind = 'adjust'), 0)::bigint AS adjusted,
                COALESCE(sum(l.available_delta), 0)::bigint AS ledger_available,
                COALESCE(sum(l.reserved_delta), 0)::bigint AS ledger_reserved,
                COALESCE(sum(l.sold_delta), 0)::bigint AS ledger_sold,
                COALESCE(min(LEAST(l.available_after, l.reserved_after, l.sold_after)), 0)::bigint AS lowest
         FROM inventory_stock s LEFT JOIN inventory_ledger l ON l.sku = s.sku
         GROUP BY s.sku, s.available, s.reserved, s.sold ORDER BY s.sku";

/// inventory: orders that still hold a reservation.
pub const OPEN_RESERVATIONS: &str =
    "SELECT DISTINCT order_id FROM inventory_reservations WHERE status = 'reserved'";

/// inventory: orders whose reservation was committed (sold).
pub const COMMITTED_RESERVATIONS: &str =
    "SELECT DISTINCT order_id FROM inventory_reservations WHERE status = 'committed'";

/// survey: every invitation's survey id.
pub const SURVEY_INVITATIONS: &str = "SELECT survey_id::text FROM survey_invitations";

/// Any service (jetmart-runtime's outbox table): publishes the relay deduplicated.
pub const DEDUPLICATED_PUBLISHES: &str = "SELECT count(*) FROM jetmart_outbox WHERE duplicate";

/// Any service (jetmart-runtime's outbox table): events not yet published.
pub const UNPUBLISHED: &str = "SELECT count(*) FROM jetmart_outbox WHERE published_at IS NULL";
