//! Email-address redaction for logs: `jane@example.com` becomes `j***@example.com`.
//!
//! The first character and the domain stay (enough to tell a relay problem from a typo); the
//! rest of the local part, including its length, is hidden.

use std::fmt;

/// The redacted form of `address`. Anything without a usable `@` becomes `***`.
pub fn redact_email(address: &str) -> String {
    Redacted(address).to_string()
}

/// Display wrapper that prints an address redacted, e.g. `tracing::info!(to = %Redacted(&to))`.
#[derive(Debug, Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.rsplit_once('@') {
            Some((local, domain)) if !domain.is_empty() => match local.chars().next() {
                Some(first) if !first.is_control() => write!(f, "{first}***@{}", Sanitized(domain)),
                _ => write!(f, "***@{}", Sanitized(domain)),
            },
            _ => f.write_str("***"),
        }
    }
}

/// Keeps log lines single-line whatever the input holds.
struct Sanitized<'a>(&'a str);

impl fmt::Display for Sanitized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                f.write_str("?")?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn redacts_the_local_part() {
        assert_eq!(redact_email("jane.doe@example.com"), "j***@example.com");
        assert_eq!(redact_email("j@example.com"), "j***@example.com");
        assert_eq!(redact_email("élise@example.fr"), "é***@example.fr");
        assert_eq!(redact_email("@example.com"), "***@example.com");
        assert_eq!(redact_email("no-at-sign"), "***");
        assert_eq!(redact_email("jane@"), "***");
        assert_eq!(redact_email("a\"b@c\"@evil.com\r\nX"), "a***@evil.com??X");
        assert_eq!(format!("{}", Redacted("bob@x.org")), "b***@x.org");
    }

    proptest! {
        /// Only the first character of the local part can leak, and output stays on one line.
        #[test]
        fn never_reveals_more_than_the_first_character(
            local in "[a-z]{2,20}",
            domain in "[a-z]{1,10}\\.[a-z]{2,3}",
            junk in "[\r\n\t]{1,3}",
        ) {
            let out = redact_email(&format!("{local}@{domain}"));
            prop_assert_eq!(&out, &format!("{}***@{domain}", &local[..1]));
            prop_assert!(!out.split_once('@').unwrap().0.contains(&local));
            let noisy = redact_email(&format!("{local}@{domain}{junk}"));
            prop_assert!(!noisy.contains(['\r', '\n', '\t']), "{:?}", noisy);
        }
    }
}
