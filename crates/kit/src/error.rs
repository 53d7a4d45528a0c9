//! Client mistakes as gRPC statuses: INVALID_ARGUMENT with one `google.rpc.BadRequest` field
//! violation per bad field, the same list in the message for clients that ignore details.
//!
//! Responses stay small whatever the request: at most [`MAX_VIOLATIONS`] violations are
//! returned (the message says how many more there were) and each field path and description
//! is cut at [`MAX_TEXT_BYTES`]. Validators should still stop checking a repeated field at its
//! limit, so that a huge request costs little work before it is refused.

use std::fmt;

use serde::{Deserialize, Serialize};
use tonic_types::{ErrorDetails, StatusExt};

/// Most field violations one INVALID_ARGUMENT carries.
pub const MAX_VIOLATIONS: usize = 20;
/// Longest field path or description returned, in bytes (cut at a character boundary).
pub const MAX_TEXT_BYTES: usize = 256;

/// One problem with one request field; `field` is a path such as `lines[2].quantity`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

impl<F: Into<String>, D: Into<String>> From<(F, D)> for FieldViolation {
    fn from((field, description): (F, D)) -> Self {
        FieldViolation::new(field, description)
    }
}

/// INVALID_ARGUMENT naming every bad field (bounded: see the module docs).
pub fn invalid_argument<V: Into<FieldViolation>>(
    violations: impl IntoIterator<Item = V>,
) -> tonic::Status {
    let mut details = ErrorDetails::new();
    let mut summary = Vec::new();
    let mut omitted = 0usize;
    for v in violations {
        if summary.len() == MAX_VIOLATIONS {
            omitted += 1;
            continue;
        }
        let v: FieldViolation = v.into();
        let (field, description) = (
            bounded(&v.field).to_owned(),
            bounded(&v.description).to_owned(),
        );
        summary.push(format!("{field}: {description}"));
        details.add_bad_request_violation(field, description);
    }
    let mut message = format!("invalid request: {}", summary.join("; "));
    if omitted > 0 {
        message.push_str(&format!(" (and {omitted} more)"));
    }
    tonic::Status::with_error_details(tonic::Code::InvalidArgument, message, details)
}

/// `text` cut to at most [`MAX_TEXT_BYTES`] bytes at a character boundary.
fn bounded(text: &str) -> &str {
    if text.len() <= MAX_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_field_in_details_and_message() {
        let status = invalid_argument([
            FieldViolation::new("a", "bad"),
            FieldViolation::new("b.c", "worse"),
        ]);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "invalid request: a: bad; b.c: worse");
        let bad = status.get_details_bad_request().expect("BadRequest");
        let fields: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["a", "b.c"]);
    }

    #[test]
    fn caps_the_violations_and_their_length() {
        let long = "é".repeat(1000);
        let status = invalid_argument(
            (0..10_000).map(|i| FieldViolation::new(format!("lines[{i}].sku"), long.clone())),
        );
        let bad = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS);
        assert!(
            bad.field_violations
                .iter()
                .all(|v| v.description.len() <= MAX_TEXT_BYTES)
        );
        assert!(
            status.message().ends_with("(and 9980 more)"),
            "{}",
            status.message()
        );
        assert!(status.message().len() < MAX_VIOLATIONS * (2 * MAX_TEXT_BYTES + 4) + 64);
    }

    #[test]
    fn accepts_pairs() {
        let status = invalid_argument([("order_id", "not a UUID".to_string())]);
        assert_eq!(status.message(), "invalid request: order_id: not a UUID");
    }
}
