//! Who gets a post-purchase survey.
//!
//! [`decide`] is a pure function of the confirmed order, the customer's history and the
//! configuration. Rules, checked in this order (the first failing one is the reason):
//! 1. the order currency has a configured minimum, and the total reaches it;
//! 2. if `first_order_only`, the customer has no earlier confirmed order;
//! 3. the customer was not invited within `cooldown` of this order's confirmation;
//! 4. the order id is in the sample ([`SamplingRate::includes`]).
//!
//! Times come from the event (`confirmed_at`), never the wall clock, so a replay decides the
//! same. The caller must first check whether this order already has an invitation (a
//! redelivery) and, if so, acknowledge without deciding again; `history` describes the
//! customer *before* this order (earlier confirmed orders only, excluding this one).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::sampling::SamplingRate;

/// Survey rules, from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EligibilityConfig {
    /// Minimum order total per ISO 4217 currency, in minor units. Orders in a currency that is
    /// not listed are not eligible (no guessing across currencies).
    pub min_order_minor: BTreeMap<String, i64>,
    /// Only a customer's first confirmed order qualifies.
    pub first_order_only: bool,
    pub sampling: SamplingRate,
    /// At most one invitation per customer within this period.
    pub cooldown: TimeDelta,
}

/// The confirmed order, from `order.confirmed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderFacts {
    pub order_id: Uuid,
    pub customer_id: String,
    pub currency: String,
    pub total_minor: i64,
    pub confirmed_at: DateTime<Utc>,
}

/// What the survey service knows about the customer before this order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerHistory {
    /// Confirmed orders of the customer before this one.
    pub earlier_confirmed_orders: u64,
    /// When the customer was last invited, if ever.
    pub last_invited_at: Option<DateTime<Utc>>,
}

/// Why an order does not get a survey.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("no minimum order value configured for {currency}")]
    CurrencyNotConfigured { currency: String },
    #[error("order total {total_minor} is below the minimum {minimum_minor} (minor units)")]
    BelowMinimum {
        total_minor: i64,
        minimum_minor: i64,
    },
    #[error("not the customer's first confirmed order ({earlier_confirmed_orders} earlier)")]
    NotFirstOrder { earlier_confirmed_orders: u64 },
    #[error(
        "customer invited at {last_invited_at}; next invitation allowed from {next_allowed_at}"
    )]
    RecentlyInvited {
        last_invited_at: DateTime<Utc>,
        next_allowed_at: DateTime<Utc>,
    },
    #[error("order not in the sample")]
    NotSampled,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Eligible,
    NotEligible(Ineligible),
}

/// Applies the rules (see the module docs) to one confirmed order.
pub fn decide(
    order: &OrderFacts,
    history: &CustomerHistory,
    config: &EligibilityConfig,
) -> Decision {
    match check(order, history, config) {
        Ok(()) => Decision::Eligible,
        Err(why) => Decision::NotEligible(why),
    }
}

fn check(
    order: &OrderFacts,
    history: &CustomerHistory,
    config: &EligibilityConfig,
) -> Result<(), Ineligible> {
    let minimum = *config.min_order_minor.get(&order.currency).ok_or_else(|| {
        Ineligible::CurrencyNotConfigured {
            currency: order.currency.clone(),
        }
    })?;
    if order.total_minor < minimum {
        return Err(Ineligible::BelowMinimum {
            total_minor: order.total_minor,
            minimum_minor: minimum,
        });
    }
    if config.first_order_only && history.earlier_confirmed_orders > 0 {
        return Err(Ineligible::NotFirstOrder {
            earlier_confirmed_orders: history.earlier_confirmed_orders,
        });
    }
    if let Some(last) = history.last_invited_at {
        // An overflowing cool-down means "never again".
        let next_allowed_at = last
            .checked_add_signed(config.cooldown)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if order.confirmed_at < next_allowed_at {
            return Err(Ineligible::RecentlyInvited {
                last_invited_at: last,
                next_allowed_at,
            });
        }
    }
    if !config.sampling.includes(order.order_id) {
        return Err(Ineligible::NotSampled);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + days * 86_400, 0).unwrap()
    }

    fn config() -> EligibilityConfig {
        EligibilityConfig {
            min_order_minor: [("EUR".to_string(), 2_000), ("JPY".to_string(), 3_000)].into(),
            first_order_only: true,
            sampling: SamplingRate::ALL,
            cooldown: TimeDelta::days(30),
        }
    }

    fn order(total_minor: i64, currency: &str) -> OrderFacts {
        OrderFacts {
            order_id: Uuid::from_u128(42),
            customer_id: "cust-1".into(),
            currency: currency.into(),
            total_minor,
            confirmed_at: t(100),
        }
    }

    fn first_timer() -> CustomerHistory {
        CustomerHistory::default()
    }

    #[test]
    fn eligible_when_every_rule_passes() {
        assert_eq!(
            decide(&order(2_000, "EUR"), &first_timer(), &config()),
            Decision::Eligible
        );
        assert_eq!(
            decide(&order(3_000, "JPY"), &first_timer(), &config()),
            Decision::Eligible
        );
    }

    #[test]
    fn minimum_is_per_currency() {
        assert_eq!(
            decide(&order(1_999, "EUR"), &first_timer(), &config()),
            Decision::NotEligible(Ineligible::BelowMinimum {
                total_minor: 1_999,
                minimum_minor: 2_000
            })
        );
        assert_eq!(
            decide(&order(2_999, "JPY"), &first_timer(), &config()),
            Decision::NotEligible(Ineligible::BelowMinimum {
                total_minor: 2_999,
                minimum_minor: 3_000
            })
        );
        assert_eq!(
            decide(&order(1_000_000, "USD"), &first_timer(), &config()),
            Decision::NotEligible(Ineligible::CurrencyNotConfigured {
                currency: "USD".into()
            })
        );
    }

    #[test]
    fn first_order_rule_can_be_toggled() {
        let returning = CustomerHistory {
            earlier_confirmed_orders: 2,
            last_invited_at: None,
        };
        assert_eq!(
            decide(&order(5_000, "EUR"), &returning, &config()),
            Decision::NotEligible(Ineligible::NotFirstOrder {
                earlier_confirmed_orders: 2
            })
        );
        let cfg = EligibilityConfig {
            first_order_only: false,
            ..config()
        };
        assert_eq!(
            decide(&order(5_000, "EUR"), &returning, &cfg),
            Decision::Eligible
        );
    }

    #[test]
    fn one_invitation_per_cooldown_period() {
        let cfg = EligibilityConfig {
            first_order_only: false,
            ..config()
        };
        let invited = |days| CustomerHistory {
            earlier_confirmed_orders: 1,
            last_invited_at: Some(t(days)),
        };
        // Invited 29 days before this order: too soon.
        assert_eq!(
            decide(&order(5_000, "EUR"), &invited(71), &cfg),
            Decision::NotEligible(Ineligible::RecentlyInvited {
                last_invited_at: t(71),
                next_allowed_at: t(101)
            })
        );
        // Exactly 30 days: allowed again.
        assert_eq!(
            decide(&order(5_000, "EUR"), &invited(70), &cfg),
            Decision::Eligible
        );
        // An invitation after this order's confirmation (an old order replayed) blocks it too.
        assert!(matches!(
            decide(&order(5_000, "EUR"), &invited(120), &cfg),
            Decision::NotEligible(Ineligible::RecentlyInvited { .. })
        ));
        let forever = EligibilityConfig {
            cooldown: TimeDelta::MAX,
            ..cfg
        };
        assert!(matches!(
            decide(&order(5_000, "EUR"), &invited(0), &forever),
            Decision::NotEligible(Ineligible::RecentlyInvited { .. })
        ));
    }

    #[test]
    fn sampling_excludes_by_order_id() {
        let none = EligibilityConfig {
            sampling: SamplingRate::NONE,
            ..config()
        };
        assert_eq!(
            decide(&order(5_000, "EUR"), &first_timer(), &none),
            Decision::NotEligible(Ineligible::NotSampled)
        );
    }

    proptest! {
        /// The decision is a function of its inputs: replaying the same event with the same
        /// history decides the same, and Eligible implies every rule holds.
        #[test]
        fn replays_decide_the_same_and_eligible_means_all_rules_hold(
            id in any::<u128>(),
            total in -10i64..10_000,
            earlier in 0u64..3,
            invited_days_ago in proptest::option::of(0i64..90),
            rate in 0.0f64..=1.0,
            first_only in any::<bool>(),
        ) {
            let cfg = EligibilityConfig { first_order_only: first_only, sampling: SamplingRate::from_fraction(rate).unwrap(), ..config() };
            let o = OrderFacts { order_id: Uuid::from_u128(id), ..order(total, "EUR") };
            let h = CustomerHistory { earlier_confirmed_orders: earlier, last_invited_at: invited_days_ago.map(|d| t(100 - d)) };
            let d = decide(&o, &h, &cfg);
            prop_assert_eq!(&d, &decide(&o.clone(), &h.clone(), &cfg.clone()));
            if d == Decision::Eligible {
                prop_assert!(total >= 2_000);
                prop_assert!(!first_only || earlier == 0);
                prop_assert!(invited_days_ago.is_none_or(|d| d >= 30));
                prop_assert!(cfg.sampling.includes(o.order_id));
            }
        }
    }
}
