//! The emails: templates embedded from `services/notification/templates/` and the data each
//! one needs.
//!
//! Each text template starts with a `Subject: ...` line and a blank line; the rest is the
//! text/plain body. Every email also has an HTML body. Values are HTML-escaped in the HTML
//! body, inserted as is in the text body, and stripped of control characters in the subject
//! (a header). Amounts are formatted in the order's currency with its minor-unit digits.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::money::{UnknownCurrency, format_money};
use super::render::{Context, Escape, RenderError, render};

/// The kinds of email the service sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailTemplate {
    OrderConfirmed,
    OrderCancelled,
    SurveyInvitation,
}

impl EmailTemplate {
    pub const ALL: [EmailTemplate; 3] = [
        EmailTemplate::OrderConfirmed,
        EmailTemplate::OrderCancelled,
        EmailTemplate::SurveyInvitation,
    ];

    /// Stable name, used in the Message-ID and stored with each notification.
    pub fn name(self) -> &'static str {
        match self {
            EmailTemplate::OrderConfirmed => "order_confirmed",
            EmailTemplate::OrderCancelled => "order_cancelled",
            EmailTemplate::SurveyInvitation => "survey_invitation",
        }
    }

    fn sources(self) -> (&'static str, &'static str) {
        match self {
            EmailTemplate::OrderConfirmed => (
                include_str!("../../templates/order_confirmed.txt"),
                include_str!("../../templates/order_confirmed.html"),
            ),
            EmailTemplate::OrderCancelled => (
                include_str!("../../templates/order_cancelled.txt"),
                include_str!("../../templates/order_cancelled.html"),
            ),
            EmailTemplate::SurveyInvitation => (
                include_str!("../../templates/survey_invitation.txt"),
                include_str!("../../templates/survey_invitation.html"),
            ),
        }
    }
}

/// A rendered email, ready for the SMTP adapter (which adds From, To and the Message-ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub template: EmailTemplate,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// One order line as shown in an email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub sku: String,
    pub quantity: u64,
    pub unit_price_minor: i64,
    pub line_total_minor: i64,
}

/// The order data shown in confirmation and cancellation emails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    pub order_id: Uuid,
    /// ISO 4217 code of every amount of the order.
    pub currency: String,
    pub lines: Vec<LineItem>,
    pub total_minor: i64,
}

/// Why an order was cancelled, in the customer's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancellationReason {
    OutOfStock,
    PaymentDeclined,
    Customer,
    /// A reason this version does not know (forward compatibility).
    Other,
}

impl CancellationReason {
    fn sentence(self) -> &'static str {
        match self {
            CancellationReason::OutOfStock => "some items are out of stock",
            CancellationReason::PaymentDeclined => "the payment was declined",
            CancellationReason::Customer => "you cancelled it",
            CancellationReason::Other => "we could not complete it",
        }
    }
}

/// A SKU that was short, for an out-of-stock cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortageItem {
    pub sku: String,
    pub requested: u64,
    pub available: u64,
}

/// Data for the cancellation email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCancelledEmail {
    pub order: OrderSummary,
    pub reason: CancellationReason,
    pub shortages: Vec<ShortageItem>,
}

/// Data for the survey invitation email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyInvitationEmail {
    pub order_id: Uuid,
    /// Absolute http(s) link to the survey form.
    pub survey_url: String,
    pub expires_at: DateTime<Utc>,
}

/// Why an email could not be rendered. All are permanent for the event at hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error(transparent)]
    UnknownCurrency(#[from] UnknownCurrency),
    #[error("survey link {0:?} is not an absolute http(s) URL")]
    UnsafeLink(String),
    #[error("template {template}: {source}")]
    Template {
        template: &'static str,
        source: RenderError,
    },
}

/// The order confirmation email.
pub fn render_order_confirmed(order: &OrderSummary) -> Result<RenderedEmail, EmailError> {
    render_email(EmailTemplate::OrderConfirmed, &order_context(order)?)
}

/// The order cancellation email.
pub fn render_order_cancelled(email: &OrderCancelledEmail) -> Result<RenderedEmail, EmailError> {
    let shortages = email
        .shortages
        .iter()
        .map(|s| {
            Context::new()
                .text("sku", &s.sku)
                .text("requested", s.requested.to_string())
                .text("available", s.available.to_string())
        })
        .collect();
    let ctx = order_context(&email.order)?
        .text("reason", email.reason.sentence())
        .flag("has_shortages", !email.shortages.is_empty())
        .list("shortages", shortages);
    render_email(EmailTemplate::OrderCancelled, &ctx)
}

/// The survey invitation email.
pub fn render_survey_invitation(
    email: &SurveyInvitationEmail,
) -> Result<RenderedEmail, EmailError> {
    let url = &email.survey_url;
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EmailError::UnsafeLink(url.clone()));
    }
    let ctx = Context::new()
        .text("order_id", email.order_id.to_string())
        .text("survey_url", url)
        .text(
            "expires_at",
            email.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        );
    render_email(EmailTemplate::SurveyInvitation, &ctx)
}

fn order_context(order: &OrderSummary) -> Result<Context, EmailError> {
    let money = |minor| format_money(minor, &order.currency);
    let lines = order
        .lines
        .iter()
        .map(|l| {
            Ok(Context::new()
                .text("sku", &l.sku)
                .text("quantity", l.quantity.to_string())
                .text("unit_price", money(l.unit_price_minor)?)
                .text("line_total", money(l.line_total_minor)?))
        })
        .collect::<Result<Vec<_>, UnknownCurrency>>()?;
    Ok(Context::new()
        .text("order_id", order.order_id.to_string())
        .text("total", money(order.total_minor)?)
        .list("lines", lines))
}

fn render_email(template: EmailTemplate, ctx: &Context) -> Result<RenderedEmail, EmailError> {
    let err = |source| EmailError::Template {
        template: template.name(),
        source,
    };
    let (text_src, html_src) = template.sources();
    let (subject_src, body_src) =
        split_subject(text_src).ok_or_else(|| err(RenderError::Missing("Subject".into())))?;
    let subject: String = render(subject_src, ctx, Escape::Plain)
        .map_err(err)?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Ok(RenderedEmail {
        template,
        subject: subject.trim().to_owned(),
        text: render(body_src, ctx, Escape::Plain).map_err(err)?,
        html: render(html_src, ctx, Escape::Html).map_err(err)?,
    })
}

/// Splits `Subject: <line>\n\n<body>` into the subject template and the body template.
fn split_subject(src: &str) -> Option<(&str, &str)> {
    let rest = src.strip_prefix("Subject:")?;
    let (subject, body) = rest.split_once('\n')?;
    Some((subject.trim(), body.strip_prefix('\n').unwrap_or(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> OrderSummary {
        OrderSummary {
            order_id: Uuid::from_u128(0xabc),
            currency: "EUR".into(),
            lines: vec![
                LineItem {
                    sku: "MUG-RED".into(),
                    quantity: 2,
                    unit_price_minor: 1250,
                    line_total_minor: 2500,
                },
                LineItem {
                    sku: "TEA-<b>".into(),
                    quantity: 1,
                    unit_price_minor: 99,
                    line_total_minor: 99,
                },
            ],
            total_minor: 2599,
        }
    }

    const ORDER_ID: &str = "00000000-0000-0000-0000-000000000abc";

    #[test]
    fn every_template_has_a_subject_and_renders() {
        for t in EmailTemplate::ALL {
            let (text, html) = t.sources();
            assert!(
                split_subject(text).is_some(),
                "{} lacks a Subject line",
                t.name()
            );
            assert!(html.contains("<html lang=\"en\">"), "{}", t.name());
        }
    }

    #[test]
    fn confirmation_lists_lines_and_totals_in_the_order_currency() {
        let e = render_order_confirmed(&order()).unwrap();
        assert_eq!(e.template, EmailTemplate::OrderConfirmed);
        assert_eq!(
            e.subject,
            format!("Your jetmart order {ORDER_ID} is confirmed")
        );
        assert!(e.text.contains(
            "  2 x MUG-RED at 12.50 EUR = 25.00 EUR\n  1 x TEA-<b> at 0.99 EUR = 0.99 EUR\n"
        ));
        assert!(e.text.contains("Total: 25.99 EUR"));
        assert!(!e.text.contains("{{") && !e.html.contains("{{"));
        assert!(e.html.contains("<td>MUG-RED</td>"));
        assert!(
            e.html.contains("<td>TEA-&lt;b&gt;</td>"),
            "values are escaped in HTML"
        );
        assert!(!e.html.contains("TEA-<b>"));
        assert!(e.html.contains("<strong>25.99 EUR</strong>"));
    }

    #[test]
    fn zero_decimal_currency() {
        let o = OrderSummary {
            currency: "JPY".into(),
            lines: vec![LineItem {
                sku: "A".into(),
                quantity: 3,
                unit_price_minor: 400,
                line_total_minor: 1200,
            }],
            total_minor: 1200,
            ..order()
        };
        let e = render_order_confirmed(&o).unwrap();
        assert!(e.text.contains("3 x A at 400 JPY = 1200 JPY"));
        let bad = OrderSummary {
            currency: "XXX".into(),
            ..order()
        };
        assert_eq!(
            render_order_confirmed(&bad),
            Err(EmailError::UnknownCurrency(UnknownCurrency("XXX".into())))
        );
    }

    #[test]
    fn cancellation_explains_the_reason_and_the_shortages() {
        let e = render_order_cancelled(&OrderCancelledEmail {
            order: order(),
            reason: CancellationReason::OutOfStock,
            shortages: vec![ShortageItem {
                sku: "MUG-RED".into(),
                requested: 2,
                available: 1,
            }],
        })
        .unwrap();
        assert_eq!(
            e.subject,
            format!("Your jetmart order {ORDER_ID} was cancelled")
        );
        assert!(e.text.contains("was cancelled: some items are out of stock.\n\nNot enough stock for:\n  MUG-RED: 2 requested, 1 available\n"));
        assert!(
            e.html
                .contains("<li>MUG-RED: 2 requested, 1 available</li>")
        );
        assert!(e.text.contains("Total: 25.99 EUR"));

        let e = render_order_cancelled(&OrderCancelledEmail {
            order: order(),
            reason: CancellationReason::PaymentDeclined,
            shortages: vec![],
        })
        .unwrap();
        assert!(
            e.text
                .contains("was cancelled: the payment was declined.\n\n  2 x MUG-RED")
        );
        assert!(!e.text.contains("Not enough stock") && !e.html.contains("<ul>"));
    }

    #[test]
    fn survey_invitation_carries_the_escaped_link() {
        let e = render_survey_invitation(&SurveyInvitationEmail {
            order_id: Uuid::from_u128(0xabc),
            survey_url: "https://shop.example/s/abc?x=1&y=\"2\"".into(),
            expires_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        })
        .unwrap();
        assert_eq!(e.subject, "How likely are you to recommend jetmart?");
        assert!(
            e.text
                .contains("\nhttps://shop.example/s/abc?x=1&y=\"2\"\n")
        );
        assert!(e.text.contains("expires on 2023-11-14 22:13 UTC."));
        assert!(
            e.html
                .contains("<a href=\"https://shop.example/s/abc?x=1&amp;y=&quot;2&quot;\">")
        );
    }

    #[test]
    fn survey_link_must_be_http() {
        for url in [
            "javascript:alert(1)",
            "/s/abc",
            "https://x.example/s/a b",
            "https://x\n.example",
        ] {
            let r = render_survey_invitation(&SurveyInvitationEmail {
                order_id: Uuid::nil(),
                survey_url: url.into(),
                expires_at: DateTime::UNIX_EPOCH,
            });
            assert_eq!(r, Err(EmailError::UnsafeLink(url.into())));
        }
    }
}
