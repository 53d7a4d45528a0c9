//! Money as integer minor units of a supported ISO 4217 currency (the table is
//! `jetmart-currency`'s).
//!
//! Every arithmetic operation is checked: an overflow or a currency mismatch is an error,
//! never a wrapped or silently converted amount.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use jetmart_currency::{Currency, UnknownCurrency};

/// Why a money operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency mismatch: {left} and {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount overflows a 64-bit number of minor units")]
    Overflow,
}

/// An amount of money: signed minor units (cents, yen, ...) of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// `amount_minor` minor units of `currency` (e.g. `Money::new(1250, Currency::Eur)` is 12.50 EUR).
    pub const fn new(amount_minor: i64, currency: Currency) -> Money {
        Money {
            amount_minor,
            currency,
        }
    }

    /// Zero in `currency`.
    pub const fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    /// `major` whole units of `currency`, e.g. 10 EUR = 1000 minor units.
    pub fn from_major(major: i64, currency: Currency) -> Result<Money, MoneyError> {
        major
            .checked_mul(currency.minor_per_major())
            .map(|m| Money::new(m, currency))
            .ok_or(MoneyError::Overflow)
    }

    pub const fn amount_minor(self) -> i64 {
        self.amount_minor
    }

    pub const fn currency(self) -> Currency {
        self.currency
    }

    pub const fn is_negative(self) -> bool {
        self.amount_minor < 0
    }

    /// Sum of two amounts of the same currency.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// Difference of two amounts of the same currency.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.amount_minor
            .checked_sub(other.amount_minor)
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// The amount multiplied by an integer factor (a quantity).
    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        self.amount_minor
            .checked_mul(factor)
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// Sum of `amounts`, all of which must be in `currency` (zero for an empty iterator).
    pub fn checked_sum(
        amounts: impl IntoIterator<Item = Money>,
        currency: Currency,
    ) -> Result<Money, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), Money::checked_add)
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

/// `12.34 EUR`, `-0.05 USD`, `1200 JPY`: the exact amount with the currency's minor digits.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.currency.format_minor(self.amount_minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn serializes_as_iso_code() {
        let json = serde_json::to_string(&Money::new(5, Currency::Chf)).unwrap();
        assert_eq!(json, r#"{"amount_minor":5,"currency":"CHF"}"#);
    }

    #[test]
    fn display_uses_minor_digits() {
        assert_eq!(Money::new(1234, Currency::Eur).to_string(), "12.34 EUR");
        assert_eq!(Money::new(-5, Currency::Usd).to_string(), "-0.05 USD");
        assert_eq!(Money::new(1200, Currency::Jpy).to_string(), "1200 JPY");
        assert_eq!(
            Money::new(i64::MIN, Currency::Eur).to_string(),
            "-92233720368547758.08 EUR"
        );
    }

    #[test]
    fn arithmetic_is_checked() {
        let max = Money::new(i64::MAX, Currency::Eur);
        assert_eq!(
            max.checked_add(Money::new(1, Currency::Eur)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(
            Money::new(1, Currency::Eur).checked_add(Money::new(1, Currency::Usd)),
            Err(MoneyError::CurrencyMismatch {
                left: Currency::Eur,
                right: Currency::Usd
            })
        );
        assert_eq!(
            Money::from_major(i64::MAX, Currency::Eur),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::from_major(3, Currency::Jpy),
            Ok(Money::new(3, Currency::Jpy))
        );
        assert_eq!(
            Money::checked_sum(
                [Money::new(1, Currency::Eur), Money::new(2, Currency::Eur)],
                Currency::Eur
            ),
            Ok(Money::new(3, Currency::Eur))
        );
    }

    proptest! {
        #[test]
        fn add_matches_i128_or_reports_overflow(a in any::<i64>(), b in any::<i64>()) {
            let r = Money::new(a, Currency::Eur).checked_add(Money::new(b, Currency::Eur));
            let exact = i128::from(a) + i128::from(b);
            match i64::try_from(exact) {
                Ok(v) => prop_assert_eq!(r, Ok(Money::new(v, Currency::Eur))),
                Err(_) => prop_assert_eq!(r, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn mul_matches_i128_or_reports_overflow(a in any::<i64>(), q in any::<i64>()) {
            let r = Money::new(a, Currency::Jpy).checked_mul(q);
            match i64::try_from(i128::from(a) * i128::from(q)) {
                Ok(v) => prop_assert_eq!(r, Ok(Money::new(v, Currency::Jpy))),
                Err(_) => prop_assert_eq!(r, Err(MoneyError::Overflow)),
            }
        }

        #[test]
        fn display_round_trips_the_minor_amount(a in any::<i64>()) {
            let s = Money::new(a, Currency::Eur).to_string();
            let digits: String = s.trim_end_matches(" EUR").chars().filter(|c| *c != '.').collect();
            prop_assert_eq!(digits.parse::<i128>().unwrap(), i128::from(a));
        }
    }
}
