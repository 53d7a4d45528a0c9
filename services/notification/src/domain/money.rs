//! Money formatting for emails: exact amounts with the currency's minor-unit digits, from the
//! table of the currencies an order can carry (`jetmart-currency`); a currency missing there is
//! an error rather than a guessed format.

use jetmart_currency::Currency;

pub use jetmart_currency::UnknownCurrency;

/// `12.34 EUR`, `-0.05 USD`, `1200 JPY`.
pub fn format_money(minor_units: i64, currency: &str) -> Result<String, UnknownCurrency> {
    Ok(currency.parse::<Currency>()?.format_minor(minor_units))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
