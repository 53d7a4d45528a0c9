//! Money formatting for emails: exact amounts with the currency's minor-unit digits.
//!
//! The exponent table mirrors the order service's supported currencies (the only ones an
//! order can carry); a currency missing here is an error rather than a guessed format.

/// ISO 4217 code and minor-unit exponent of each supported currency.
const EXPONENTS: [(&str, u32); 12] = [
    ("EUR", 2),
    ("USD", 2),
    ("GBP", 2),
    ("JPY", 0),
    ("CHF", 2),
    ("SEK", 2),
    ("NOK", 2),
    ("DKK", 2),
    ("PLN", 2),
    ("CZK", 2),
    ("CAD", 2),
    ("AUD", 2),
];

/// A currency code the formatter does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported currency {0:?}")]
pub struct UnknownCurrency(pub String);

/// Minor-unit exponent of `currency` (2 for EUR, 0 for JPY).
pub fn exponent(currency: &str) -> Result<u32, UnknownCurrency> {
    EXPONENTS
        .iter()
        .find(|(code, _)| *code == currency)
        .map(|(_, e)| *e)
        .ok_or_else(|| UnknownCurrency(currency.to_owned()))
}

/// `12.34 EUR`, `-0.05 USD`, `1200 JPY`.
pub fn format_money(minor_units: i64, currency: &str) -> Result<String, UnknownCurrency> {
    let exp = exponent(currency)?;
    let sign = if minor_units < 0 { "-" } else { "" };
    let abs = minor_units.unsigned_abs();
    if exp == 0 {
        return Ok(format!("{sign}{abs} {currency}"));
    }
    let scale = 10_u64.pow(exp);
    let width = exp as usize;
    Ok(format!(
        "{sign}{}.{:0width$} {currency}",
        abs / scale,
        abs % scale
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_with_the_right_minor_units() {
        assert_eq!(format_money(2599, "EUR").unwrap(), "25.99 EUR");
        assert_eq!(format_money(5, "GBP").unwrap(), "0.05 GBP");
        assert_eq!(format_money(-120, "USD").unwrap(), "-1.20 USD");
        assert_eq!(format_money(1200, "JPY").unwrap(), "1200 JPY");
        assert_eq!(
            format_money(i64::MIN, "CHF").unwrap(),
            "-92233720368547758.08 CHF"
        );
        assert_eq!(format_money(1, "XXX"), Err(UnknownCurrency("XXX".into())));
    }

    proptest! {
        #[test]
        fn digits_round_trip(minor in any::<i64>()) {
            let s = format_money(minor, "SEK").unwrap();
            let digits: String = s.trim_end_matches(" SEK").chars().filter(|c| *c != '.').collect();
            prop_assert_eq!(digits.parse::<i128>().unwrap(), i128::from(minor));
        }
    }
}
