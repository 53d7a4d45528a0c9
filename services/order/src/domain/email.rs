//! A deliberately conservative e-mail address check.
//!
//! It accepts the plain `local@domain.tld` addresses shops see in practice and refuses
//! anything an SMTP relay or a log line could choke on (spaces, quotes, control characters,
//! IP literals). It does not implement all of RFC 5321; nothing here needs it to.

/// Longest address SMTP can carry (RFC 5321 path limit minus the angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 63;

/// Checks `address`; the error says what is wrong, for a field violation.
pub fn check_email(address: &str) -> Result<(), &'static str> {
    if address.is_empty() {
        return Err("must not be empty");
    }
    if address.len() > MAX_EMAIL_LEN {
        return Err("is longer than 254 bytes");
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err("must contain an @");
    };
    if domain.contains('@') {
        return Err("must contain exactly one @");
    }
    check_local(local)?;
    check_domain(domain)
}

fn check_local(local: &str) -> Result<(), &'static str> {
    if local.is_empty() {
        return Err("has an empty local part");
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err("has a local part longer than 64 bytes");
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("has a misplaced dot in the local part");
    }
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-.";
    if !local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c))
    {
        return Err("has a character not allowed in the local part");
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("must have a domain with a dot");
    }
    for label in &labels {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err("has an empty or oversized domain label");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a domain label starting or ending with a hyphen");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("has a character not allowed in the domain");
        }
    }
    // A numeric top-level label means an IP address, which we do not accept.
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err("must not end in a numeric label");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_addresses() {
        for ok in [
            "jane@example.com",
            "j.doe+shop@mail.example.co.uk",
            "x_y-z@a-b.io",
            "A1@B2.DE",
        ] {
            assert_eq!(check_email(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "jane@",
            "jane@localhost",
            "jane@@example.com",
            "ja ne@example.com",
            "jane@exa mple.com",
            ".jane@example.com",
            "jane.@example.com",
            "ja..ne@example.com",
            "jane@-example.com",
            "jane@example..com",
            "jane@1.2.3.4",
            "\"jane\"@example.com",
            "jane@example.com\r\nBcc: x@y.z",
            "jané@example.com",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_oversized_parts() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(check_email(&long_local).is_err());
        let long_label = format!("a@{}.com", "b".repeat(64));
        assert!(check_email(&long_label).is_err());
        let long_total = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        assert!(long_total.len() > MAX_EMAIL_LEN);
        assert_eq!(check_email(&long_total), Err("is longer than 254 bytes"));
    }
}
