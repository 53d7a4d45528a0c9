//! Kubernetes resource quantities ("512Mi", "500m", "1.5", "1e3") as numbers.

use anyhow::{Result, bail};

/// The value of a quantity in base units (bytes, cores).
pub fn parse(q: &str) -> Result<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = match number.parse() {
        Ok(n) => n,
        Err(_) => bail!("{q:?} is not a Kubernetes quantity"),
    };
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        s if s.starts_with(['e', 'E']) => match s[1..].parse::<i32>() {
            Ok(exp) => 10f64.powi(exp),
            Err(_) => bail!("{q:?} is not a Kubernetes quantity"),
        },
        _ => bail!("{q:?} is not a Kubernetes quantity (suffix {suffix:?})"),
    };
    Ok(number * factor)
}

/// A byte quantity, rounded up to whole bytes.
pub fn bytes(q: &str) -> Result<u64> {
    let v = parse(q)?;
    if v < 0.0 {
        bail!("{q:?}: a size cannot be negative");
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(v.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_decimal_and_milli_suffixes() {
        assert_eq!(bytes("512Mi").unwrap(), 512 * 1024 * 1024);
        assert_eq!(bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(bytes("64M").unwrap(), 64_000_000);
        assert_eq!(bytes("1e3").unwrap(), 1000);
        assert!((parse("500m").unwrap() - 0.5).abs() < 1e-12);
        assert!((parse("1").unwrap() - 1.0).abs() < 1e-12);
        assert!((parse("1.5").unwrap() - 1.5).abs() < 1e-12);
        assert!(parse("12 apples").is_err());
        assert!(parse("Mi").is_err());
    }
}
