//! The notifications table: claiming a row in the handler's transaction, settling it, and the
//! paged reads behind ListNotifications.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Where a notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Only inside the handler's transaction, never committed.
    Pending,
    Sent,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        [Status::Pending, Status::Sent, Status::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// A notification about to be sent.
#[derive(Debug, Clone)]
pub struct NewNotification<'a> {
    pub notification_id: Uuid,
    pub event_id: Uuid,
    /// [`crate::domain::EmailTemplate::name`].
    pub template: &'static str,
    pub order_id: Uuid,
    pub customer_id: &'a str,
    pub survey_id: Option<&'a str>,
    pub recipient: &'a str,
    pub message_id: &'a str,
    pub attempts: i32,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub notification_id: Uuid,
    pub event_id: Uuid,
    pub template: String,
    pub order_id: Uuid,
    pub customer_id: String,
    pub survey_id: Option<String>,
    pub recipient: String,
    pub message_id: String,
    /// `None` for a status this version does not know.
    pub status: Option<Status>,
    pub attempts: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Inserts the row as pending. `false` when (event, template) already has one: that email was
/// decided before and must not be sent again.
pub async fn claim(conn: &mut PgConnection, n: &NewNotification<'_>) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO notifications
           (notification_id, event_id, template, order_id, customer_id, survey_id, recipient,
            message_id, status, attempts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)
         ON CONFLICT (event_id, template) DO NOTHING",
    )
    .bind(n.notification_id)
    .bind(n.event_id)
    .bind(n.template)
    .bind(n.order_id)
    .bind(n.customer_id)
    .bind(n.survey_id)
    .bind(n.recipient)
    .bind(n.message_id)
    .bind(n.attempts)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Records the outcome of a claimed notification.
pub async fn settle(
    conn: &mut PgConnection,
    notification_id: Uuid,
    status: Status,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE notifications SET status = $2, error = $3, updated_at = now()
         WHERE notification_id = $1",
    )
    .bind(notification_id)
    .bind(status.as_str())
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whose notifications to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    Order(Uuid),
    Customer(String),
}

/// Position after the last row of a page (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub created_at: DateTime<Utc>,
    pub notification_id: Uuid,
}

impl PageToken {
    pub fn encode(&self) -> String {
        hex::encode(format!(
            "{}|{}",
            self.created_at.timestamp_micros(),
            self.notification_id
        ))
    }

    pub fn decode(token: &str) -> Option<Self> {
        let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
        let (micros, id) = raw.split_once('|')?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            notification_id: Uuid::parse_str(id).ok()?,
        })
    }
}

const COLUMNS: &str = "notification_id, event_id, template, order_id, customer_id, survey_id,
    recipient, message_id, status, attempts, error, created_at, updated_at";

/// One page of notifications, newest first, and the token of the next page if there is one.
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    page_size: i64,
    after: Option<PageToken>,
) -> Result<(Vec<NotificationRow>, Option<PageToken>), StoreError> {
    let column = match filter {
        Filter::Order(_) => "order_id",
        Filter::Customer(_) => "customer_id",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM notifications
         WHERE {column} = $1 AND status <> 'pending'
           AND ($2::timestamptz IS NULL OR (created_at, notification_id) < ($2, $3))
         ORDER BY created_at DESC, notification_id DESC LIMIT $4"
    );
    let query = sqlx::query(&sql);
    let query = match filter {
        Filter::Order(id) => query.bind(*id),
        Filter::Customer(id) => query.bind(id.as_str()),
    };
    let rows = query
        .bind(after.map(|t| t.created_at))
        .bind(after.map(|t| t.notification_id))
        .bind(page_size + 1)
        .fetch_all(pool)
        .await?;
    let more = rows.len() as i64 > page_size;
    let page: Vec<NotificationRow> = rows
        .iter()
        .take(page_size as usize)
        .map(|r| NotificationRow {
            notification_id: r.get("notification_id"),
            event_id: r.get("event_id"),
            template: r.get("template"),
            order_id: r.get("order_id"),
            customer_id: r.get("customer_id"),
            survey_id: r.get("survey_id"),
            recipient: r.get("recipient"),
            message_id: r.get("message_id"),
            status: Status::parse(r.get("status")),
            attempts: r.get("attempts"),
            error: r.get("error"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        })
        .collect();
    let next = match page.last() {
        Some(last) if more => Some(PageToken {
            created_at: last.created_at,
            notification_id: last.notification_id,
        }),
        _ => None,
    };
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let t = PageToken {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            notification_id: Uuid::now_v7(),
        };
        assert_eq!(PageToken::decode(&t.encode()), Some(t));
        for bad in ["", "zz", "00", &hex::encode("12|nope"), &hex::encode("x|")] {
            assert_eq!(PageToken::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [Status::Pending, Status::Sent, Status::Failed] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("bounced"), None);
    }
}
