//! Classification of SMTP delivery failures.
//!
//! Transient failures (the relay is down, slow, or answers 4xx) are retried with backoff and
//! never drop the email. Permanent ones (5xx, or a message that cannot be built) are recorded
//! as failed, emit `notification.failed`, and are not retried. The SMTP adapter maps its
//! client library's errors to [`SmtpFailure`]; nothing here depends on that library.

/// What went wrong while sending, as observed by the SMTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpFailure {
    ConnectionRefused,
    Timeout,
    /// Other connection-level trouble: reset, DNS, broken pipe.
    Network(String),
    /// TLS or STARTTLS handshake failed (often configuration; retried so nothing is lost while
    /// it is fixed).
    Tls(String),
    /// The server answered with a reply code.
    Reply {
        code: u16,
        message: String,
    },
    /// The message itself is unusable (bad address, unencodable header): sending again cannot help.
    InvalidMessage(String),
}

/// Whether a failed send may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    Transient,
    Permanent,
}

impl SmtpFailure {
    /// 4xx replies and connection problems are transient; 5xx replies and invalid messages are
    /// permanent. Unexpected codes (a 2xx/3xx treated as failure) count as transient: retrying
    /// is safe thanks to the deterministic Message-ID, giving up would lose the email.
    pub fn class(&self) -> FailureClass {
        match self {
            SmtpFailure::Reply {
                code: 500..=599, ..
            }
            | SmtpFailure::InvalidMessage(_) => FailureClass::Permanent,
            SmtpFailure::Reply { .. }
            | SmtpFailure::ConnectionRefused
            | SmtpFailure::Timeout
            | SmtpFailure::Network(_)
            | SmtpFailure::Tls(_) => FailureClass::Transient,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class() == FailureClass::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16) -> SmtpFailure {
        SmtpFailure::Reply {
            code,
            message: String::new(),
        }
    }

    #[test]
    fn four_hundreds_and_connection_trouble_are_transient() {
        for f in [
            SmtpFailure::ConnectionRefused,
            SmtpFailure::Timeout,
            SmtpFailure::Network("reset by peer".into()),
            SmtpFailure::Tls("handshake".into()),
            reply(421),
            reply(450),
            reply(451),
            reply(452),
            reply(250),
        ] {
            assert_eq!(f.class(), FailureClass::Transient, "{f:?}");
            assert!(f.is_transient());
        }
    }

    #[test]
    fn five_hundreds_and_invalid_messages_are_permanent() {
        for f in [
            reply(500),
            reply(550),
            reply(553),
            reply(554),
            reply(599),
            SmtpFailure::InvalidMessage("to".into()),
        ] {
            assert_eq!(f.class(), FailureClass::Permanent, "{f:?}");
        }
    }
}
