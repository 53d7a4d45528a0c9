//! The currencies the shop accepts: their ISO 4217 codes and minor-unit exponents, in one
//! table. The order service validates and sums in them; the notification service formats the
//! amounts of its emails with them. A currency missing here is refused, never guessed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A currency the shop accepts. Serialized as its ISO 4217 code (`"EUR"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Eur,
    Usd,
    Gbp,
    Jpy,
    Chf,
    Sek,
    Nok,
    Dkk,
    Pln,
    Czk,
    Cad,
    Aud,
}

/// The supported currencies: (currency, ISO 4217 code, minor-unit exponent).
const TABLE: [(Currency, &str, u32); 12] = [
    (Currency::Eur, "EUR", 2),
    (Currency::Usd, "USD", 2),
    (Currency::Gbp, "GBP", 2),
    (Currency::Jpy, "JPY", 0),
    (Currency::Chf, "CHF", 2),
    (Currency::Sek, "SEK", 2),
    (Currency::Nok, "NOK", 2),
    (Currency::Dkk, "DKK", 2),
    (Currency::Pln, "PLN", 2),
    (Currency::Czk, "CZK", 2),
    (Currency::Cad, "CAD", 2),
    (Currency::Aud, "AUD", 2),
];

impl Currency {
    /// Every supported currency, in table order.
    pub const ALL: [Currency; 12] = [
        Currency::Eur,
        Currency::Usd,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Chf,
        Currency::Sek,
        Currency::Nok,
        Currency::Dkk,
        Currency::Pln,
        Currency::Czk,
        Currency::Cad,
        Currency::Aud,
    ];

    /// Looks up a currency by its exact (upper-case) ISO 4217 code.
    pub fn from_code(code: &str) -> Option<Currency> {
        TABLE
            .iter()
            .find(|(_, c, _)| *c == code)
            .map(|(cur, _, _)| *cur)
    }

    /// The ISO 4217 code, e.g. `"EUR"`.
    pub fn code(self) -> &'static str {
        self.entry().1
    }

    /// Number of decimal digits of the minor unit: 2 for EUR (cents), 0 for JPY.
    pub fn exponent(self) -> u32 {
        self.entry().2
    }

    /// Minor units in one major unit (`10^exponent`).
    pub fn minor_per_major(self) -> i64 {
        10_i64.pow(self.exponent())
    }

    /// `12.34 EUR`, `-0.05 USD`, `1200 JPY`: `amount_minor` with this currency's minor digits.
    pub fn format_minor(self, amount_minor: i64) -> String {
        let sign = if amount_minor < 0 { "-" } else { "" };
        // unsigned_abs: i64::MIN has no positive i64 counterpart.
        let abs = amount_minor.unsigned_abs();
        let exp = self.exponent();
        if exp == 0 {
            return format!("{sign}{abs} {self}");
        }
        let scale = 10_u64.pow(exp);
        let width = exp as usize;
        format!("{sign}{}.{:0width$} {self}", abs / scale, abs % scale)
    }

    fn entry(self) -> &'static (Currency, &'static str, u32) {
        // The table lists every variant, so the lookup cannot fail.
        TABLE
            .iter()
            .find(|(c, _, _)| *c == self)
            .unwrap_or(&TABLE[0])
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A currency code that is not in the supported table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported currency {0:?}")]
pub struct UnknownCurrency(pub String);

impl FromStr for Currency {
    type Err = UnknownCurrency;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s).ok_or_else(|| UnknownCurrency(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_covers_every_variant_with_its_exponent() {
        for c in Currency::ALL {
            assert_eq!(Currency::from_code(c.code()), Some(c));
        }
        assert_eq!(Currency::Jpy.exponent(), 0);
        assert_eq!(Currency::Eur.exponent(), 2);
        assert_eq!(Currency::Eur.minor_per_major(), 100);
        assert_eq!(Currency::Jpy.minor_per_major(), 1);
    }

    #[test]
    fn unknown_and_lower_case_codes_are_refused() {
        assert_eq!(Currency::from_code("XXX"), None);
        assert_eq!(Currency::from_code("eur"), None);
        assert_eq!("".parse::<Currency>(), Err(UnknownCurrency(String::new())));
        assert_eq!("GBP".parse::<Currency>(), Ok(Currency::Gbp));
    }

    #[test]
    fn serializes_as_iso_code() {
        assert_eq!(serde_json::to_string(&Currency::Chf).unwrap(), r#""CHF""#);
        assert_eq!(
            serde_json::from_str::<Currency>(r#""JPY""#).unwrap(),
            Currency::Jpy
        );
    }

    #[test]
    fn formats_with_the_minor_digits() {
        assert_eq!(Currency::Eur.format_minor(1234), "12.34 EUR");
        assert_eq!(Currency::Gbp.format_minor(5), "0.05 GBP");
        assert_eq!(Currency::Usd.format_minor(-120), "-1.20 USD");
        assert_eq!(Currency::Jpy.format_minor(1200), "1200 JPY");
        assert_eq!(
            Currency::Eur.format_minor(i64::MIN),
            "-92233720368547758.08 EUR"
        );
    }

    proptest! {
        #[test]
        fn formatting_keeps_every_digit(minor in any::<i64>()) {
            let s = Currency::Sek.format_minor(minor);
            let digits: String = s.trim_end_matches(" SEK").chars().filter(|c| *c != '.').collect();
            prop_assert_eq!(digits.parse::<i128>().unwrap(), i128::from(minor));
        }
    }
}
