//! Validation of a PlaceOrder request.
//!
//! [`validate`] checks everything and reports *every* problem as a [`FieldViolation`]
//! (the gRPC layer turns the list into INVALID_ARGUMENT with `BadRequest` field violations),
//! or returns a [`ValidatedOrder`], which can only be obtained this way.
//!
//! Decisions worth knowing:
//! - Duplicate SKUs are **refused**, not merged: merging would silently rewrite what the
//!   customer sent (and is ambiguous when the unit prices differ); the client gets a precise
//!   violation instead (`lines[3].sku: duplicate of lines[1].sku`).
//! - SKUs are `[A-Za-z0-9_-]+`: they end up as NATS subject tokens (`inventory.low.<sku>`),
//!   where `.`, `*`, `>` and whitespace are not allowed.
//! - String limits count UTF-8 bytes (what storage and the wire pay for).
//! - Unit prices must be positive: a zero price would reach payment as a zero amount, which no
//!   gateway authorizes, so it is refused here, where the client can still fix it.
//! - Only the first `max_lines` lines are checked: a request over the limit is refused anyway,
//!   and checking the rest would cost work and a response as large as the request.
//! - The total limit is in *major* units of the order currency, so one number works for
//!   EUR and JPY alike.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::email::{MAX_EMAIL_LEN, check_email};
use super::money::{Currency, Money};

/// A PlaceOrder request as received, before validation (field names match the API).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlaceOrderInput {
    pub customer_id: String,
    pub customer_email: String,
    pub lines: Vec<LineInput>,
    pub currency: String,
    pub payment_token: String,
    pub idempotency_key: String,
}

/// One requested line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LineInput {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: PriceInput,
}

/// A price as received: minor units and a currency code still to be checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceInput {
    pub amount_minor: i64,
    pub currency: String,
}

/// Bounds a request must stay within. `Default` gives the service's standard limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_lines: usize,
    pub max_quantity_per_line: u32,
    /// Largest order total, in major units of the order currency (1_000_000 = 1M EUR or 1M JPY).
    pub max_total_major: i64,
    pub max_customer_id_len: usize,
    pub max_email_len: usize,
    pub max_sku_len: usize,
    pub max_payment_token_len: usize,
    pub max_idempotency_key_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_lines: 100,
            max_quantity_per_line: 1_000,
            max_total_major: 1_000_000,
            max_customer_id_len: 128,
            max_email_len: MAX_EMAIL_LEN,
            max_sku_len: 64,
            max_payment_token_len: 256,
            max_idempotency_key_len: 128,
        }
    }
}

pub use jetmart_kit::error::FieldViolation;

/// A validated order line: positive quantity, non-negative price in the order currency,
/// and its exact line total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

/// A PlaceOrder request that passed [`validate`]. Fields are private so that every value of
/// this type has been checked; read them through the accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedOrder {
    customer_id: String,
    customer_email: String,
    lines: Vec<OrderLine>,
    currency: Currency,
    total: Money,
    payment_token: String,
    idempotency_key: String,
}

impl ValidatedOrder {
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }
    pub fn customer_email(&self) -> &str {
        &self.customer_email
    }
    /// The lines in request order (SKUs are unique).
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }
    pub fn currency(&self) -> Currency {
        self.currency
    }
    /// Sum of the line totals; never negative, never above the limit.
    pub fn total(&self) -> Money {
        self.total
    }
    pub fn payment_token(&self) -> &str {
        &self.payment_token
    }
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }
}

/// Validates `input` against `limits`, reporting every violation found.
pub fn validate(
    input: &PlaceOrderInput,
    limits: &Limits,
) -> Result<ValidatedOrder, Vec<FieldViolation>> {
    let mut v = Vec::new();

    check_text(
        &mut v,
        "customer_id",
        &input.customer_id,
        limits.max_customer_id_len,
        TextRule::NoControl,
    );
    if input.customer_email.len() > limits.max_email_len {
        v.push(FieldViolation::new(
            "customer_email",
            format!("must be at most {} bytes", limits.max_email_len),
        ));
    } else if let Err(why) = check_email(&input.customer_email) {
        v.push(FieldViolation::new(
            "customer_email",
            format!("malformed e-mail address: {why}"),
        ));
    }
    check_text(
        &mut v,
        "payment_token",
        &input.payment_token,
        limits.max_payment_token_len,
        TextRule::VisibleAscii,
    );
    check_text(
        &mut v,
        "idempotency_key",
        &input.idempotency_key,
        limits.max_idempotency_key_len,
        TextRule::VisibleAscii,
    );

    let currency = Currency::from_code(&input.currency);
    if currency.is_none() {
        v.push(FieldViolation::new(
            "currency",
            format!("unsupported currency {:?}", input.currency),
        ));
    }

    if input.lines.is_empty() {
        v.push(FieldViolation::new(
            "lines",
            "at least one line is required",
        ));
    }
    if input.lines.len() > limits.max_lines {
        v.push(FieldViolation::new(
            "lines",
            format!(
                "at most {} lines are allowed, got {}",
                limits.max_lines,
                input.lines.len()
            ),
        ));
    }

    let mut first_index_of_sku: HashMap<&str, usize> = HashMap::new();
    let mut lines = Vec::with_capacity(input.lines.len());
    for (i, line) in input.lines.iter().enumerate().take(limits.max_lines) {
        let before = v.len();
        check_line(&mut v, i, line, &input.currency, limits);
        if !line.sku.is_empty() {
            if let Some(first) = first_index_of_sku.get(line.sku.as_str()) {
                v.push(FieldViolation::new(
                    format!("lines[{i}].sku"),
                    format!("duplicate of lines[{first}].sku; put the whole quantity on one line"),
                ));
            } else {
                first_index_of_sku.insert(&line.sku, i);
            }
        }
        if v.len() != before {
            continue;
        }
        // Only reached when the line is valid, which implies the order currency is known.
        let Some(currency) = currency else { continue };
        let unit_price = Money::new(line.unit_price.amount_minor, currency);
        match unit_price.checked_mul(line.quantity) {
            Ok(line_total) => lines.push(OrderLine {
                sku: line.sku.clone(),
                // check_line bounded the quantity to 1..=max_quantity_per_line (a u32).
                quantity: u32::try_from(line.quantity).unwrap_or(u32::MAX),
                unit_price,
                line_total,
            }),
            Err(_) => v.push(FieldViolation::new(
                format!("lines[{i}]"),
                "line total overflows",
            )),
        }
    }

    let mut total = None;
    if let Some(currency) = currency
        && lines.len() == input.lines.len()
        && !lines.is_empty()
    {
        match Money::checked_sum(lines.iter().map(|l| l.line_total), currency) {
            Err(_) => v.push(FieldViolation::new("lines", "order total overflows")),
            Ok(sum) => {
                // An overflowing limit means "no practical limit".
                let max = Money::from_major(limits.max_total_major, currency)
                    .unwrap_or(Money::new(i64::MAX, currency));
                if sum.amount_minor() > max.amount_minor() {
                    v.push(FieldViolation::new(
                        "lines",
                        format!("order total {sum} exceeds the maximum of {max}"),
                    ));
                } else {
                    total = Some(sum);
                }
            }
        }
    }

    match (v.is_empty(), currency, total) {
        (true, Some(currency), Some(total)) => Ok(ValidatedOrder {
            customer_id: input.customer_id.clone(),
            customer_email: input.customer_email.clone(),
            lines,
            currency,
            total,
            payment_token: input.payment_token.clone(),
            idempotency_key: input.idempotency_key.clone(),
        }),
        _ => Err(v),
    }
}

fn check_line(
    v: &mut Vec<FieldViolation>,
    i: usize,
    line: &LineInput,
    order_currency: &str,
    limits: &Limits,
) {
    let sku = &line.sku;
    let field = format!("lines[{i}].sku");
    if sku.is_empty() {
        v.push(FieldViolation::new(field, "must not be empty"));
    } else if sku.len() > limits.max_sku_len {
        v.push(FieldViolation::new(
            field,
            format!("must be at most {} bytes", limits.max_sku_len),
        ));
    } else if !sku
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        v.push(FieldViolation::new(
            field,
            "may only contain A-Z, a-z, 0-9, '-' and '_'",
        ));
    }

    let field = format!("lines[{i}].quantity");
    if line.quantity <= 0 {
        v.push(FieldViolation::new(
            field,
            format!("must be positive, got {}", line.quantity),
        ));
    } else if line.quantity > i64::from(limits.max_quantity_per_line) {
        v.push(FieldViolation::new(
            field,
            format!(
                "must be at most {}, got {}",
                limits.max_quantity_per_line, line.quantity
            ),
        ));
    }

    if line.unit_price.amount_minor <= 0 {
        v.push(FieldViolation::new(
            format!("lines[{i}].unit_price.amount_minor"),
            format!("must be positive, got {}", line.unit_price.amount_minor),
        ));
    }

    let field = format!("lines[{i}].unit_price.currency");
    let code = &line.unit_price.currency;
    if Currency::from_code(code).is_none() {
        v.push(FieldViolation::new(
            field,
            format!("unsupported currency {code:?}"),
        ));
    } else if code != order_currency {
        v.push(FieldViolation::new(
            field,
            format!("{code} differs from the order currency {order_currency:?}; mixed currencies are not allowed"),
        ));
    }
}

#[derive(Clone, Copy)]
enum TextRule {
    /// Any text without control characters (ids may be UUIDs, emails, external ids...).
    NoControl,
    /// Printable ASCII without spaces: opaque tokens and keys.
    VisibleAscii,
}

fn check_text(
    v: &mut Vec<FieldViolation>,
    field: &str,
    value: &str,
    max_len: usize,
    rule: TextRule,
) {
    if value.is_empty() {
        v.push(FieldViolation::new(field, "must not be empty"));
    } else if value.len() > max_len {
        v.push(FieldViolation::new(
            field,
            format!("must be at most {max_len} bytes"),
        ));
    } else {
        let ok = match rule {
            TextRule::NoControl => !value.chars().any(char::is_control) && value.trim() == value,
            TextRule::VisibleAscii => value.bytes().all(|b| b.is_ascii_graphic()),
        };
        if !ok {
            let why = match rule {
                TextRule::NoControl => {
                    "must not contain control characters or surrounding whitespace"
                }
                TextRule::VisibleAscii => "may only contain visible ASCII characters",
            };
            v.push(FieldViolation::new(field, why));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn line(sku: &str, quantity: i64, amount_minor: i64, currency: &str) -> LineInput {
        LineInput {
            sku: sku.into(),
            quantity,
            unit_price: PriceInput {
                amount_minor,
                currency: currency.into(),
            },
        }
    }

    pub(crate) fn valid_input() -> PlaceOrderInput {
        PlaceOrderInput {
            customer_id: "cust-42".into(),
            customer_email: "jane@example.com".into(),
            lines: vec![line("SKU-1", 2, 1250, "EUR"), line("SKU-2", 1, 99, "EUR")],
            currency: "EUR".into(),
            payment_token: "tok_visa".into(),
            idempotency_key: "key-1".into(),
        }
    }

    fn violations(input: &PlaceOrderInput) -> Vec<FieldViolation> {
        validate(input, &Limits::default()).expect_err("expected violations")
    }

    fn fields(input: &PlaceOrderInput) -> Vec<String> {
        violations(input).into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn valid_request_computes_line_and_order_totals() {
        let order = validate(&valid_input(), &Limits::default()).unwrap();
        assert_eq!(order.currency(), Currency::Eur);
        assert_eq!(order.lines().len(), 2);
        assert_eq!(order.lines()[0].line_total, Money::new(2500, Currency::Eur));
        assert_eq!(order.lines()[0].quantity, 2);
        assert_eq!(order.total(), Money::new(2599, Currency::Eur));
        assert_eq!(order.customer_id(), "cust-42");
        assert_eq!(order.customer_email(), "jane@example.com");
        assert_eq!(order.payment_token(), "tok_visa");
        assert_eq!(order.idempotency_key(), "key-1");
    }

    #[test]
    fn no_lines() {
        let mut input = valid_input();
        input.lines.clear();
        assert_eq!(
            violations(&input),
            vec![FieldViolation::new(
                "lines",
                "at least one line is required"
            )]
        );
    }

    #[test]
    fn quantity_zero_negative_and_above_limit() {
        let mut input = valid_input();
        input.lines = vec![
            line("A", 0, 1, "EUR"),
            line("B", -3, 1, "EUR"),
            line("C", 1_001, 1, "EUR"),
            line("D", i64::MAX, 1, "EUR"),
        ];
        assert_eq!(
            fields(&input),
            [
                "lines[0].quantity",
                "lines[1].quantity",
                "lines[2].quantity",
                "lines[3].quantity"
            ]
        );
        assert!(violations(&input)[2].description.contains("at most 1000"));
    }

    #[test]
    fn too_many_lines() {
        let mut input = valid_input();
        let limits = Limits {
            max_lines: 3,
            ..Limits::default()
        };
        input.lines = (0..4)
            .map(|i| line(&format!("S{i}"), 1, 1, "EUR"))
            .collect();
        let v = validate(&input, &limits).unwrap_err();
        assert_eq!(
            v,
            vec![FieldViolation::new(
                "lines",
                "at most 3 lines are allowed, got 4"
            )]
        );
    }

    #[test]
    fn unknown_order_currency() {
        let mut input = valid_input();
        input.currency = "XXX".into();
        let f = fields(&input);
        assert!(f.contains(&"currency".to_string()));
        // Lines priced in EUR now differ from the (unknown) order currency.
        assert!(f.contains(&"lines[0].unit_price.currency".to_string()));
    }

    #[test]
    fn unknown_and_mixed_line_currencies() {
        let mut input = valid_input();
        input.lines = vec![
            line("A", 1, 1, "EUR"),
            line("B", 1, 1, "USD"),
            line("C", 1, 1, "eur"),
        ];
        let v = violations(&input);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].field, "lines[1].unit_price.currency");
        assert!(v[0].description.contains("mixed currencies"));
        assert_eq!(v[1].field, "lines[2].unit_price.currency");
        assert!(v[1].description.contains("unsupported"));
    }

    #[test]
    fn malformed_and_oversized_email() {
        let mut input = valid_input();
        input.customer_email = "not-an-email".into();
        assert_eq!(fields(&input), ["customer_email"]);
        input.customer_email = format!("{}@example.com", "a".repeat(300));
        let v = violations(&input);
        assert_eq!(v[0].description, "must be at most 254 bytes");
    }

    #[test]
    fn zero_price_is_refused() {
        let mut input = valid_input();
        input.lines[0].unit_price.amount_minor = 0;
        assert_eq!(
            violations(&input),
            vec![FieldViolation::new(
                "lines[0].unit_price.amount_minor",
                "must be positive, got 0"
            )]
        );
    }

    #[test]
    fn lines_past_the_limit_are_not_checked() {
        let mut input = valid_input();
        input.lines = (0..10_000).map(|_| line("", 0, -1, "ZZZ")).collect();
        let v = violations(&input);
        let limits = Limits::default();
        assert!(
            v.iter().any(|v| v.field == "lines"
                && v.description == "at most 100 lines are allowed, got 10000")
        );
        // Four bad fields in each checked line, plus the count.
        assert_eq!(v.len(), 1 + 4 * limits.max_lines);
        assert!(!v.iter().any(|v| v.field.starts_with("lines[100]")));
    }

    #[test]
    fn negative_price() {
        let mut input = valid_input();
        input.lines[1].unit_price.amount_minor = -1;
        assert_eq!(fields(&input), ["lines[1].unit_price.amount_minor"]);
    }

    #[test]
    fn overflowing_line_total() {
        let mut input = valid_input();
        input.lines[0] = line("BIG", 2, i64::MAX / 2 + 1, "EUR");
        assert_eq!(
            violations(&input),
            vec![FieldViolation::new("lines[0]", "line total overflows")]
        );
    }

    #[test]
    fn overflowing_order_total() {
        let mut input = valid_input();
        let limits = Limits {
            max_total_major: i64::MAX,
            ..Limits::default()
        };
        input.lines = vec![line("A", 1, i64::MAX, "EUR"), line("B", 1, 1, "EUR")];
        assert_eq!(
            validate(&input, &limits).unwrap_err(),
            vec![FieldViolation::new("lines", "order total overflows")]
        );
    }

    #[test]
    fn total_above_limit_is_in_major_units_of_the_currency() {
        let limits = Limits {
            max_total_major: 100,
            ..Limits::default()
        };
        let mut input = valid_input();
        input.lines = vec![line("A", 1, 10_001, "EUR")];
        let v = validate(&input, &limits).unwrap_err();
        assert_eq!(v[0].field, "lines");
        assert_eq!(
            v[0].description,
            "order total 100.01 EUR exceeds the maximum of 100.00 EUR"
        );
        input.lines = vec![line("A", 1, 10_000, "EUR")];
        assert!(validate(&input, &limits).is_ok());
        input.currency = "JPY".into();
        input.lines = vec![line("A", 1, 101, "JPY")];
        assert!(validate(&input, &limits).is_err());
    }

    #[test]
    fn oversized_and_empty_strings() {
        let limits = Limits::default();
        let input = PlaceOrderInput {
            customer_id: "c".repeat(limits.max_customer_id_len + 1),
            payment_token: "t".repeat(limits.max_payment_token_len + 1),
            idempotency_key: String::new(),
            lines: vec![line(&"S".repeat(limits.max_sku_len + 1), 1, 1, "EUR")],
            ..valid_input()
        };
        assert_eq!(
            fields(&input),
            [
                "customer_id",
                "payment_token",
                "idempotency_key",
                "lines[0].sku"
            ]
        );
        assert_eq!(violations(&input)[2].description, "must not be empty");
    }

    #[test]
    fn bad_characters_in_strings() {
        let input = PlaceOrderInput {
            customer_id: " padded".into(),
            payment_token: "tok visa".into(),
            idempotency_key: "key\n".into(),
            lines: vec![line("A.B", 1, 1, "EUR"), line("", 1, 1, "EUR")],
            ..valid_input()
        };
        assert_eq!(
            fields(&input),
            [
                "customer_id",
                "payment_token",
                "idempotency_key",
                "lines[0].sku",
                "lines[1].sku"
            ]
        );
    }

    #[test]
    fn duplicate_skus_are_refused_with_a_pointer_to_the_first() {
        let mut input = valid_input();
        input.lines.push(line("SKU-1", 1, 1250, "EUR"));
        let v = violations(&input);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "lines[2].sku");
        assert!(v[0].description.starts_with("duplicate of lines[0].sku"));
    }

    #[test]
    fn reports_every_problem_at_once() {
        let input = PlaceOrderInput {
            customer_id: String::new(),
            customer_email: "nope".into(),
            lines: vec![line("A", 0, -1, "USD")],
            currency: "EUR".into(),
            payment_token: String::new(),
            idempotency_key: String::new(),
        };
        assert_eq!(
            fields(&input),
            [
                "customer_id",
                "customer_email",
                "payment_token",
                "idempotency_key",
                "lines[0].quantity",
                "lines[0].unit_price.amount_minor",
                "lines[0].unit_price.currency",
            ]
        );
    }

    #[test]
    fn violation_displays_field_and_description() {
        assert_eq!(FieldViolation::new("lines", "x").to_string(), "lines: x");
    }

    fn arb_line() -> impl Strategy<Value = LineInput> {
        (
            prop_oneof!["[A-Z]{1,3}", ".{0,4}"],
            prop_oneof![-2i64..1_100, any::<i64>()],
            prop_oneof![-10i64..1_000_000, any::<i64>()],
            prop_oneof![Just("EUR".to_string()), Just("USD".to_string()), "[A-Z]{3}"],
        )
            .prop_map(|(sku, quantity, amount_minor, currency)| LineInput {
                sku,
                quantity,
                unit_price: PriceInput {
                    amount_minor,
                    currency,
                },
            })
    }

    proptest! {
        /// Whatever comes in, validate never panics, and an accepted order satisfies every rule.
        #[test]
        fn accepted_orders_satisfy_every_rule(
            lines in proptest::collection::vec(arb_line(), 0..6),
            currency in prop_oneof![Just("EUR".to_string()), Just("JPY".to_string()), "[A-Z]{3}"],
        ) {
            let limits = Limits { max_lines: 4, ..Limits::default() };
            let input = PlaceOrderInput { lines, currency, ..valid_input() };
            match validate(&input, &limits) {
                Ok(order) => {
                    prop_assert!(!order.lines().is_empty() && order.lines().len() <= limits.max_lines);
                    let mut skus: Vec<_> = order.lines().iter().map(|l| l.sku.as_str()).collect();
                    skus.sort_unstable();
                    skus.dedup();
                    prop_assert_eq!(skus.len(), order.lines().len());
                    let mut sum = 0i128;
                    for l in order.lines() {
                        prop_assert!(l.quantity >= 1 && l.quantity <= limits.max_quantity_per_line);
                        prop_assert!(l.unit_price.amount_minor() > 0);
                        prop_assert_eq!(l.unit_price.currency(), order.currency());
                        prop_assert_eq!(
                            i128::from(l.line_total.amount_minor()),
                            i128::from(l.unit_price.amount_minor()) * i128::from(l.quantity)
                        );
                        sum += i128::from(l.line_total.amount_minor());
                    }
                    prop_assert_eq!(i128::from(order.total().amount_minor()), sum);
                    prop_assert!(order.total().amount_minor() <= limits.max_total_major * order.currency().minor_per_major());
                }
                Err(v) => prop_assert!(!v.is_empty()),
            }
        }

        /// One bad quantity in an otherwise valid order is reported on exactly that line.
        #[test]
        fn a_bad_quantity_is_reported_on_its_line(idx in 0usize..2, q in prop_oneof![i64::MIN..=0, 1_001i64..]) {
            let mut input = valid_input();
            input.lines[idx].quantity = q;
            let v = validate(&input, &Limits::default()).unwrap_err();
            prop_assert_eq!(v.len(), 1);
            prop_assert_eq!(&v[0].field, &format!("lines[{idx}].quantity"));
        }
    }
}
