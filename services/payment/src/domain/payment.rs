//! The payment state machine.
//!
//! ```text
//! Pending -> Authorized -> Captured
//!                       -> Voided
//! Pending -> Declined
//! Pending -> Voided          (order cancelled before the gateway answered)
//! ```
//!
//! Guarded like the order: repeating a command whose effect is already there is a no-op
//! ([`Transition::Unchanged`]), so duplicate and late events do no harm; contradictory commands
//! (capture of a voided payment, void of a captured one, capture before authorization) are
//! errors. [`Transition::gateway_action`] tells the caller which gateway call goes with a
//! transition, which keeps invariant 2 (one capture per confirmed order, no open authorization
//! for a cancelled one): an authorization that arrives after the payment was voided must itself
//! be voided at the gateway.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::gateway::{Amount, AuthorizationId, DeclineReason};

/// Lifecycle status of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Pending,
    Authorized,
    Captured,
    Voided,
    Declined,
}

impl PaymentStatus {
    /// API spelling, e.g. `AUTHORIZED`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Voided => "VOIDED",
            PaymentStatus::Declined => "DECLINED",
        }
    }

    /// Captured, Voided and Declined never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PaymentStatus::Captured | PaymentStatus::Voided | PaymentStatus::Declined
        )
    }
}

impl std::str::FromStr for PaymentStatus {
    type Err = String;

    /// The API spelling back (`AUTHORIZED`), as stored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use PaymentStatus as S;
        [
            S::Pending,
            S::Authorized,
            S::Captured,
            S::Voided,
            S::Declined,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown payment status {s:?}"))
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An input to the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    /// The gateway authorized (record the result of `authorize`).
    Authorize(AuthorizationId),
    /// The gateway declined.
    Decline(DeclineReason),
    /// The order was confirmed: capture.
    Capture,
    /// The order was cancelled: void.
    Void,
}

impl PaymentCommand {
    pub fn name(&self) -> &'static str {
        match self {
            PaymentCommand::Authorize(_) => "authorize",
            PaymentCommand::Decline(_) => "decline",
            PaymentCommand::Capture => "capture",
            PaymentCommand::Void => "void",
        }
    }
}

/// What a command does to a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The status changes.
    Moved {
        from: PaymentStatus,
        to: PaymentStatus,
    },
    /// Already done (duplicate or late input): nothing to do.
    Unchanged,
    /// An authorization arrived for a payment voided while it was pending (a cancel raced the
    /// gateway call): the status stays Voided, the authorization must be voided at the gateway.
    VoidLateAuthorization,
}

/// The gateway call that goes with a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayAction {
    Capture,
    Void,
}

impl Transition {
    /// The gateway call the caller must make (before recording the transition), if any.
    pub fn gateway_action(&self) -> Option<GatewayAction> {
        match self {
            Transition::Moved {
                from: PaymentStatus::Authorized,
                to: PaymentStatus::Captured,
            } => Some(GatewayAction::Capture),
            Transition::Moved {
                from: PaymentStatus::Authorized,
                to: PaymentStatus::Voided,
            }
            | Transition::VoidLateAuthorization => Some(GatewayAction::Void),
            _ => None,
        }
    }
}

/// A refused command; the payment is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("cannot {command} a {from} payment")]
    InvalidTransition {
        from: PaymentStatus,
        command: &'static str,
    },
    #[error("payment already has authorization {recorded}, got {received}")]
    AuthorizationMismatch {
        recorded: AuthorizationId,
        received: AuthorizationId,
    },
}

/// One payment per order. Fields are public so storage can map rows; change them only through
/// [`Payment::handle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: Amount,
    pub status: PaymentStatus,
    pub authorization_id: Option<AuthorizationId>,
    pub decline_reason: Option<DeclineReason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    /// A new PENDING payment for `order_id`.
    pub fn new(id: Uuid, order_id: Uuid, amount: Amount, now: DateTime<Utc>) -> Payment {
        Payment {
            id,
            order_id,
            amount,
            status: PaymentStatus::Pending,
            authorization_id: None,
            decline_reason: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// What `command` would do, without changing anything.
    pub fn decide(&self, command: &PaymentCommand) -> Result<Transition, PaymentError> {
        use PaymentStatus as S;
        let moved = |to| {
            Ok(Transition::Moved {
                from: self.status,
                to,
            })
        };
        let invalid = || {
            Err(PaymentError::InvalidTransition {
                from: self.status,
                command: command.name(),
            })
        };
        match (self.status, command) {
            (S::Pending, PaymentCommand::Authorize(_)) => moved(S::Authorized),
            (S::Authorized | S::Captured | S::Voided, PaymentCommand::Authorize(id)) => {
                match &self.authorization_id {
                    None => Ok(Transition::VoidLateAuthorization),
                    Some(recorded) if recorded == id => Ok(Transition::Unchanged),
                    Some(recorded) => Err(PaymentError::AuthorizationMismatch {
                        recorded: recorded.clone(),
                        received: id.clone(),
                    }),
                }
            }
            (S::Declined, PaymentCommand::Authorize(_)) => invalid(),

            (S::Pending, PaymentCommand::Decline(_)) => moved(S::Declined),
            // Already declined, or cancelled before the gateway answered: nothing to compensate.
            (S::Declined | S::Voided, PaymentCommand::Decline(_)) => Ok(Transition::Unchanged),
            (S::Authorized | S::Captured, PaymentCommand::Decline(_)) => invalid(),

            (S::Authorized, PaymentCommand::Capture) => moved(S::Captured),
            (S::Captured, PaymentCommand::Capture) => Ok(Transition::Unchanged),
            (S::Pending | S::Voided | S::Declined, PaymentCommand::Capture) => invalid(),

            (S::Pending | S::Authorized, PaymentCommand::Void) => moved(S::Voided),
            (S::Voided | S::Declined, PaymentCommand::Void) => Ok(Transition::Unchanged),
            (S::Captured, PaymentCommand::Void) => invalid(),
        }
    }

    /// Decides `command` and applies the result. The caller performs
    /// [`Transition::gateway_action`] first (decide, call the gateway, then handle).
    pub fn handle(
        &mut self,
        command: PaymentCommand,
        now: DateTime<Utc>,
    ) -> Result<Transition, PaymentError> {
        let transition = self.decide(&command)?;
        match (&transition, command) {
            (Transition::Moved { to, .. }, command) => {
                self.status = *to;
                match command {
                    PaymentCommand::Authorize(id) => self.authorization_id = Some(id),
                    PaymentCommand::Decline(reason) => self.decline_reason = Some(reason),
                    PaymentCommand::Capture | PaymentCommand::Void => {}
                }
                self.updated_at = now;
            }
            (Transition::VoidLateAuthorization, PaymentCommand::Authorize(id)) => {
                // Remembered so that a repeat of the same authorization is Unchanged.
                self.authorization_id = Some(id);
                self.updated_at = now;
            }
            _ => {}
        }
        Ok(transition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus as S;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn auth(n: u8) -> PaymentCommand {
        PaymentCommand::Authorize(AuthorizationId(format!("auth_{n}")))
    }

    fn payment() -> Payment {
        Payment::new(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Amount::new(100, "EUR"),
            t(0),
        )
    }

    fn run(cmds: &[PaymentCommand]) -> (Payment, Vec<Result<Transition, PaymentError>>) {
        let mut p = payment();
        let results = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| p.handle(c.clone(), t(i as i64 + 1)))
            .collect();
        (p, results)
    }

    #[test]
    fn happy_path_authorize_then_capture_once() {
        let (p, r) = run(&[
            auth(1),
            PaymentCommand::Capture,
            PaymentCommand::Capture,
            auth(1),
        ]);
        assert_eq!(
            r[0],
            Ok(Transition::Moved {
                from: S::Pending,
                to: S::Authorized
            })
        );
        assert_eq!(
            r[1],
            Ok(Transition::Moved {
                from: S::Authorized,
                to: S::Captured
            })
        );
        assert_eq!(
            r[1].as_ref().unwrap().gateway_action(),
            Some(GatewayAction::Capture)
        );
        assert_eq!(r[2], Ok(Transition::Unchanged));
        assert_eq!(r[3], Ok(Transition::Unchanged));
        assert_eq!(p.status, S::Captured);
        assert_eq!(p.authorization_id, Some(AuthorizationId("auth_1".into())));
        assert_eq!(p.updated_at, t(2));
    }

    #[test]
    fn void_after_capture_and_capture_after_void_are_refused() {
        let (_, r) = run(&[auth(1), PaymentCommand::Capture, PaymentCommand::Void]);
        assert_eq!(
            r[2],
            Err(PaymentError::InvalidTransition {
                from: S::Captured,
                command: "void"
            })
        );
        let (p, r) = run(&[
            auth(1),
            PaymentCommand::Void,
            PaymentCommand::Capture,
            PaymentCommand::Void,
        ]);
        assert_eq!(
            r[1].as_ref().unwrap().gateway_action(),
            Some(GatewayAction::Void)
        );
        assert_eq!(
            r[2],
            Err(PaymentError::InvalidTransition {
                from: S::Voided,
                command: "capture"
            })
        );
        assert_eq!(r[3], Ok(Transition::Unchanged));
        assert_eq!(p.status, S::Voided);
        assert_eq!(
            PaymentError::InvalidTransition {
                from: S::Voided,
                command: "capture"
            }
            .to_string(),
            "cannot capture a VOIDED payment"
        );
    }

    #[test]
    fn decline_only_from_pending_and_cancel_after_decline_is_harmless() {
        let (p, r) = run(&[
            PaymentCommand::Decline(DeclineReason::CardDeclined),
            PaymentCommand::Void,
        ]);
        assert_eq!(
            r[0],
            Ok(Transition::Moved {
                from: S::Pending,
                to: S::Declined
            })
        );
        assert_eq!(r[1], Ok(Transition::Unchanged));
        assert_eq!(p.decline_reason, Some(DeclineReason::CardDeclined));
        let (_, r) = run(&[
            auth(1),
            PaymentCommand::Decline(DeclineReason::CardDeclined),
        ]);
        assert!(matches!(
            r[1],
            Err(PaymentError::InvalidTransition {
                from: S::Authorized,
                ..
            })
        ));
        let (_, r) = run(&[
            PaymentCommand::Decline(DeclineReason::CardDeclined),
            auth(1),
        ]);
        assert!(matches!(
            r[1],
            Err(PaymentError::InvalidTransition {
                from: S::Declined,
                ..
            })
        ));
    }

    #[test]
    fn statuses_parse_back() {
        for st in [
            S::Pending,
            S::Authorized,
            S::Captured,
            S::Voided,
            S::Declined,
        ] {
            assert_eq!(st.as_str().parse::<PaymentStatus>(), Ok(st));
        }
        assert!("authorized".parse::<PaymentStatus>().is_err());
    }

    #[test]
    fn capture_before_authorization_is_refused() {
        let (p, r) = run(&[PaymentCommand::Capture]);
        assert_eq!(
            r[0],
            Err(PaymentError::InvalidTransition {
                from: S::Pending,
                command: "capture"
            })
        );
        assert_eq!(p, payment());
    }

    #[test]
    fn cancel_racing_the_authorization_voids_the_late_authorization() {
        let (p, r) = run(&[PaymentCommand::Void, auth(1), auth(1)]);
        assert_eq!(
            r[0],
            Ok(Transition::Moved {
                from: S::Pending,
                to: S::Voided
            })
        );
        assert_eq!(
            r[0].as_ref().unwrap().gateway_action(),
            None,
            "nothing authorized yet"
        );
        assert_eq!(r[1], Ok(Transition::VoidLateAuthorization));
        assert_eq!(
            r[1].as_ref().unwrap().gateway_action(),
            Some(GatewayAction::Void)
        );
        assert_eq!(r[2], Ok(Transition::Unchanged));
        assert_eq!(p.status, S::Voided);
        // A decline that lost the race is harmless too.
        let (_, r) = run(&[
            PaymentCommand::Void,
            PaymentCommand::Decline(DeclineReason::InsufficientFunds),
        ]);
        assert_eq!(r[1], Ok(Transition::Unchanged));
    }

    #[test]
    fn a_different_authorization_is_a_mismatch() {
        let (_, r) = run(&[auth(1), auth(2)]);
        assert_eq!(
            r[1],
            Err(PaymentError::AuthorizationMismatch {
                recorded: AuthorizationId("auth_1".into()),
                received: AuthorizationId("auth_2".into()),
            })
        );
    }

    fn arb_command() -> impl Strategy<Value = PaymentCommand> {
        prop_oneof![
            (1u8..3).prop_map(auth),
            Just(PaymentCommand::Decline(DeclineReason::CardDeclined)),
            Just(PaymentCommand::Capture),
            Just(PaymentCommand::Void),
        ]
    }

    proptest! {
        /// Any sequence of inputs: at most one capture and one void, never both a capture and a void at the
        /// gateway, terminal statuses never change, refused commands change nothing, decide
        /// never mutates, and a voided payment with a known authorization always had a gateway
        /// void issued (no open authorization for a cancelled order).
        #[test]
        fn state_machine_invariants(cmds in proptest::collection::vec(arb_command(), 0..30)) {
            let mut p = payment();
            let (mut captures, mut voids) = (0, 0);
            for (i, cmd) in cmds.into_iter().enumerate() {
                let before = p.clone();
                let decided = p.decide(&cmd);
                prop_assert_eq!(&p, &before);
                let handled = p.handle(cmd, t(i as i64));
                prop_assert_eq!(&decided, &handled);
                match handled {
                    Ok(tr) => {
                        match tr.gateway_action() {
                            Some(GatewayAction::Capture) => captures += 1,
                            Some(GatewayAction::Void) => voids += 1,
                            None => {}
                        }
                        if before.status.is_terminal() {
                            prop_assert_eq!(p.status, before.status);
                        }
                        if p.status == S::Declined {
                            prop_assert!(matches!(before.status, S::Pending | S::Declined));
                        }
                    }
                    Err(_) => prop_assert_eq!(&p, &before),
                }
                prop_assert!(captures <= 1 && voids <= 1);
                prop_assert!(captures == 0 || voids == 0);
                if p.status == S::Voided && p.authorization_id.is_some() {
                    prop_assert!(voids >= 1);
                }
                if p.status == S::Captured {
                    prop_assert_eq!(captures, 1);
                }
            }
        }
    }
}
