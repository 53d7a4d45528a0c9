//! Pure domain logic of the inventory service: the all-or-nothing reservation decision,
//! stock accounting with movements that never go negative, and the low-stock rule.
//! No I/O here; storage (rows locked in SKU order), the ledger, the Redis cache and the
//! event handlers wrap these functions.

pub mod low_stock;
pub mod reservation;
pub mod stock;

pub use low_stock::{LowStock, LowStockRule};
pub use reservation::{
    RequestedLine, ReservationDecision, Shortage, decide_reservation, merge_lines,
};
pub use stock::{MAX_REASON_LEN, Movement, MovementError, StockLevel, apply_movement};
