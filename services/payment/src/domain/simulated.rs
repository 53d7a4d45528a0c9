//! A simulated payment provider, used until a real one is wired in, and by tests and chaos runs.
//!
//! Behaviour:
//! - latency drawn uniformly from `latency_min..=latency_max` before each call is processed;
//! - injected transient failures at `transient_failure_rate`, from a seeded RNG so runs are
//!   reproducible; half of them happen *after* the call took effect (the response is lost), which
//!   is exactly the case idempotency keys exist for;
//! - decline rules: an amount above the per-currency limit, a non-positive amount, an empty
//!   token, the test tokens [`TOKEN_DECLINE`], [`TOKEN_INSUFFICIENT_FUNDS`] and any configured in
//!   [`SimulatedGatewayConfig::decline_tokens`];
//!   [`TOKEN_TRANSIENT`] always fails transiently (deterministic, for tests);
//! - idempotent: the same order id gets the same answer (a different amount or token for the
//!   same order id is an [`GatewayError::IdempotencyConflict`]); a repeated capture or void
//!   succeeds; capture after void and void after capture are refused.
//!
//! State lives in memory behind a mutex, standing in for the provider's database. Authorization
//! ids are derived from the order id, so several service replicas (each with its own simulated
//! gateway) or a restarted one agree on them; a capture or void of an authorization this
//! instance has not seen is accepted when its id matches that derivation, as the one remote
//! provider shared by all replicas would.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::gateway::{
    Amount, Authorization, AuthorizationId, AuthorizeOutcome, AuthorizeRequest, DeclineReason,
    GatewayError, GatewayFuture, PaymentGateway, Settlement,
};

/// Always declined with [`DeclineReason::CardDeclined`].
pub const TOKEN_DECLINE: &str = "tok_decline";
/// Always declined with [`DeclineReason::InsufficientFunds`].
pub const TOKEN_INSUFFICIENT_FUNDS: &str = "tok_insufficient_funds";
/// Every call with this token fails with a transient error.
pub const TOKEN_TRANSIENT: &str = "tok_transient";

/// Configuration of the [`SimulatedGateway`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedGatewayConfig {
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Probability in `0.0..=1.0` that a call fails transiently (clamped; NaN means 0).
    pub transient_failure_rate: f64,
    /// Seed of the RNG behind latency and failure injection.
    pub seed: u64,
    /// Amounts strictly above this many minor units of the currency are declined
    /// ([`DeclineReason::AmountAboveLimit`]); currencies not listed have no limit.
    pub decline_above_minor: BTreeMap<String, i64>,
    /// Further test tokens, each always declined with its reason (beside the built-in
    /// [`TOKEN_DECLINE`] and [`TOKEN_INSUFFICIENT_FUNDS`]).
    pub decline_tokens: BTreeMap<String, DeclineReason>,
}

impl Default for SimulatedGatewayConfig {
    /// Fast and reliable, with a 10 000 (major units) limit in the common currencies.
    fn default() -> Self {
        let limits = [
            ("EUR", 1_000_000),
            ("USD", 1_000_000),
            ("GBP", 1_000_000),
            ("CHF", 1_000_000),
            ("JPY", 10_000),
        ];
        SimulatedGatewayConfig {
            latency_min: Duration::ZERO,
            latency_max: Duration::ZERO,
            transient_failure_rate: 0.0,
            seed: 0,
            decline_above_minor: limits.iter().map(|(c, l)| (c.to_string(), *l)).collect(),
            decline_tokens: BTreeMap::new(),
        }
    }
}

/// A deterministic, in-memory stand-in for a payment provider.
pub struct SimulatedGateway {
    config: SimulatedGatewayConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for SimulatedGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedGateway")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct State {
    rng: StdRng,
    /// Per order id (the idempotency key).
    records: HashMap<Uuid, Record>,
}

struct Record {
    amount: Amount,
    token: String,
    outcome: AuthorizeOutcome,
    settlement: Option<Settlement>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Fails before the provider did anything.
    Before,
    /// The provider acted, but the answer never arrives.
    LostResponse,
}

impl SimulatedGateway {
    pub fn new(config: SimulatedGatewayConfig) -> SimulatedGateway {
        let rng = StdRng::seed_from_u64(config.seed);
        SimulatedGateway {
            config,
            state: Mutex::new(State {
                rng,
                records: HashMap::new(),
            }),
        }
    }

    /// The authorization id this gateway issues for `order_id`.
    pub fn authorization_id_for(order_id: Uuid) -> AuthorizationId {
        let digest = Sha256::new()
            .chain_update(b"jetmart-simulated-gateway:")
            .chain_update(order_id.as_bytes())
            .finalize();
        AuthorizationId(format!("auth_{}", &hex::encode(digest)[..24]))
    }

    /// Draws this call's latency and fault from the seeded RNG.
    fn draw(&self) -> (Duration, Fault) {
        let mut st = self.lock();
        let (lo, hi) = (
            self.config.latency_min,
            self.config.latency_max.max(self.config.latency_min),
        );
        let latency = if hi > lo {
            let nanos = st.rng.random_range(lo.as_nanos()..=hi.as_nanos());
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        } else {
            lo
        };
        let rate = self.config.transient_failure_rate;
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        let fault = if st.rng.random_bool(rate) {
            if st.rng.random_bool(0.5) {
                Fault::LostResponse
            } else {
                Fault::Before
            }
        } else {
            Fault::None
        };
        (latency, fault)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No code path panics while holding the lock, so a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authorize_now(
        &self,
        req: &AuthorizeRequest,
        fault: Fault,
    ) -> Result<AuthorizeOutcome, GatewayError> {
        if req.token == TOKEN_TRANSIENT {
            return Err(GatewayError::Transient(format!(
                "test token {TOKEN_TRANSIENT}"
            )));
        }
        if fault == Fault::Before {
            return Err(GatewayError::Transient(
                "simulated: provider unavailable".into(),
            ));
        }
        let mut st = self.lock();
        let outcome = match st.records.get(&req.order_id) {
            Some(rec) if rec.amount != req.amount || rec.token != req.token => {
                return Err(GatewayError::IdempotencyConflict {
                    order_id: req.order_id,
                });
            }
            Some(rec) => rec.outcome.clone(),
            None => {
                let outcome = self.decide(req);
                st.records.insert(
                    req.order_id,
                    Record {
                        amount: req.amount.clone(),
                        token: req.token.clone(),
                        outcome: outcome.clone(),
                        settlement: None,
                    },
                );
                outcome
            }
        };
        if fault == Fault::LostResponse {
            return Err(GatewayError::Transient(
                "simulated: response lost after authorizing".into(),
            ));
        }
        Ok(outcome)
    }

    fn decide(&self, req: &AuthorizeRequest) -> AuthorizeOutcome {
        let limit = self.config.decline_above_minor.get(&req.amount.currency);
        let declined = match req.token.as_str() {
            "" => Some(DeclineReason::InvalidToken),
            TOKEN_DECLINE => Some(DeclineReason::CardDeclined),
            TOKEN_INSUFFICIENT_FUNDS => Some(DeclineReason::InsufficientFunds),
            token if self.config.decline_tokens.contains_key(token) => {
                self.config.decline_tokens.get(token).copied()
            }
            _ if req.amount.minor_units <= 0 => Some(DeclineReason::InvalidAmount),
            _ if limit.is_some_and(|l| req.amount.minor_units > *l) => {
                Some(DeclineReason::AmountAboveLimit)
            }
            _ => None,
        };
        match declined {
            Some(reason) => AuthorizeOutcome::Declined(reason),
            None => AuthorizeOutcome::Authorized(Authorization {
                id: Self::authorization_id_for(req.order_id),
                order_id: req.order_id,
                amount: req.amount.clone(),
            }),
        }
    }

    fn settle_now(
        &self,
        auth: &Authorization,
        target: Settlement,
        fault: Fault,
    ) -> Result<(), GatewayError> {
        if fault == Fault::Before {
            return Err(GatewayError::Transient(
                "simulated: provider unavailable".into(),
            ));
        }
        if auth.id != Self::authorization_id_for(auth.order_id) {
            return Err(GatewayError::UnknownAuthorization(auth.id.clone()));
        }
        let mut st = self.lock();
        // Authorized by another replica or before a restart: adopt it.
        let rec = st.records.entry(auth.order_id).or_insert_with(|| Record {
            amount: auth.amount.clone(),
            token: String::new(),
            outcome: AuthorizeOutcome::Authorized(auth.clone()),
            settlement: None,
        });
        if matches!(rec.outcome, AuthorizeOutcome::Declined(_)) {
            return Err(GatewayError::UnknownAuthorization(auth.id.clone()));
        }
        match rec.settlement {
            None => rec.settlement = Some(target),
            Some(done) if done == target => {}
            Some(done) => {
                return Err(GatewayError::AuthorizationClosed {
                    id: auth.id.clone(),
                    settlement: done,
                });
            }
        }
        if fault == Fault::LostResponse {
            return Err(GatewayError::Transient(format!(
                "simulated: response lost after {target}"
            )));
        }
        Ok(())
    }

    async fn settle(&self, auth: &Authorization, target: Settlement) -> Result<(), GatewayError> {
        let (latency, fault) = self.draw();
        pause(latency).await;
        self.settle_now(auth, target, fault)
    }
}

async fn pause(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

impl PaymentGateway for SimulatedGateway {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> GatewayFuture<'a, AuthorizeOutcome> {
        Box::pin(async move {
            let (latency, fault) = self.draw();
            pause(latency).await;
            self.authorize_now(request, fault)
        })
    }

    fn capture<'a>(&'a self, authorization: &'a Authorization) -> GatewayFuture<'a, ()> {
        Box::pin(self.settle(authorization, Settlement::Captured))
    }

    fn void<'a>(&'a self, authorization: &'a Authorization) -> GatewayFuture<'a, ()> {
        Box::pin(self.settle(authorization, Settlement::Voided))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn gateway() -> SimulatedGateway {
        SimulatedGateway::new(SimulatedGatewayConfig::default())
    }

    fn req(order: u128, minor: i64, token: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            order_id: Uuid::from_u128(order),
            amount: Amount::new(minor, "EUR"),
            token: token.into(),
        }
    }

    fn authorized(outcome: AuthorizeOutcome) -> Authorization {
        match outcome {
            AuthorizeOutcome::Authorized(a) => a,
            AuthorizeOutcome::Declined(r) => panic!("declined: {r}"),
        }
    }

    #[tokio::test]
    async fn authorizes_through_a_trait_object_and_is_idempotent_per_order() {
        let g: Arc<dyn PaymentGateway> = Arc::new(gateway());
        let first = authorized(g.authorize(&req(1, 2599, "tok_visa")).await.unwrap());
        assert_eq!(first.order_id, Uuid::from_u128(1));
        assert_eq!(first.amount, Amount::new(2599, "EUR"));
        assert_eq!(
            first.id,
            SimulatedGateway::authorization_id_for(Uuid::from_u128(1))
        );
        let again = authorized(g.authorize(&req(1, 2599, "tok_visa")).await.unwrap());
        assert_eq!(again, first);
        let other = authorized(g.authorize(&req(2, 2599, "tok_visa")).await.unwrap());
        assert_ne!(other.id, first.id);
    }

    #[tokio::test]
    async fn same_key_with_a_different_request_is_a_conflict() {
        let g = gateway();
        g.authorize(&req(1, 100, "tok_visa")).await.unwrap();
        assert_eq!(
            g.authorize(&req(1, 101, "tok_visa")).await,
            Err(GatewayError::IdempotencyConflict {
                order_id: Uuid::from_u128(1)
            })
        );
        assert_eq!(
            g.authorize(&req(1, 100, "tok_other")).await,
            Err(GatewayError::IdempotencyConflict {
                order_id: Uuid::from_u128(1)
            })
        );
    }

    #[tokio::test]
    async fn decline_rules() {
        let g = gateway();
        let cases = [
            (req(1, 100, TOKEN_DECLINE), DeclineReason::CardDeclined),
            (
                req(2, 100, TOKEN_INSUFFICIENT_FUNDS),
                DeclineReason::InsufficientFunds,
            ),
            (
                req(3, 1_000_001, "tok_visa"),
                DeclineReason::AmountAboveLimit,
            ),
            (req(4, 0, "tok_visa"), DeclineReason::InvalidAmount),
            (req(5, -1, "tok_visa"), DeclineReason::InvalidAmount),
            (req(6, 100, ""), DeclineReason::InvalidToken),
        ];
        for (r, reason) in cases {
            assert_eq!(
                g.authorize(&r).await,
                Ok(AuthorizeOutcome::Declined(reason)),
                "{r:?}"
            );
            // The same key gets the same decline.
            assert_eq!(
                g.authorize(&r).await,
                Ok(AuthorizeOutcome::Declined(reason))
            );
        }
        // Configured test tokens decline with their reason.
        let custom = SimulatedGateway::new(SimulatedGatewayConfig {
            decline_tokens: [("tok_fraud".to_string(), DeclineReason::CardDeclined)].into(),
            ..Default::default()
        });
        assert_eq!(
            custom.authorize(&req(9, 100, "tok_fraud")).await,
            Ok(AuthorizeOutcome::Declined(DeclineReason::CardDeclined))
        );
        // Exactly at the limit is fine; other currencies have their own (or no) limit.
        assert!(matches!(
            g.authorize(&req(7, 1_000_000, "tok_visa")).await,
            Ok(AuthorizeOutcome::Authorized(_))
        ));
        let sek = AuthorizeRequest {
            amount: Amount::new(i64::MAX, "SEK"),
            ..req(8, 0, "tok_visa")
        };
        assert!(matches!(
            g.authorize(&sek).await,
            Ok(AuthorizeOutcome::Authorized(_))
        ));
    }

    #[tokio::test]
    async fn transient_test_token_always_fails_transiently() {
        let g = gateway();
        for _ in 0..3 {
            let err = g
                .authorize(&req(1, 100, TOKEN_TRANSIENT))
                .await
                .unwrap_err();
            assert!(err.is_transient(), "{err}");
        }
    }

    #[tokio::test]
    async fn capture_and_void_are_idempotent_and_exclusive() {
        let g = gateway();
        let a = authorized(g.authorize(&req(1, 100, "tok_visa")).await.unwrap());
        g.capture(&a).await.unwrap();
        g.capture(&a).await.unwrap();
        assert_eq!(
            g.void(&a).await,
            Err(GatewayError::AuthorizationClosed {
                id: a.id.clone(),
                settlement: Settlement::Captured
            })
        );
        let b = authorized(g.authorize(&req(2, 100, "tok_visa")).await.unwrap());
        g.void(&b).await.unwrap();
        g.void(&b).await.unwrap();
        assert_eq!(
            g.capture(&b).await,
            Err(GatewayError::AuthorizationClosed {
                id: b.id.clone(),
                settlement: Settlement::Voided
            })
        );
    }

    #[tokio::test]
    async fn authorizations_from_another_replica_are_honoured_forged_ones_are_not() {
        let replica_a = gateway();
        let replica_b = gateway();
        let a = authorized(replica_a.authorize(&req(1, 100, "tok_visa")).await.unwrap());
        replica_b.capture(&a).await.unwrap();
        let forged = Authorization {
            id: AuthorizationId("auth_forged".into()),
            ..a.clone()
        };
        assert_eq!(
            replica_b.void(&forged).await,
            Err(GatewayError::UnknownAuthorization(forged.id.clone()))
        );
        // A declined order has no authorization to capture.
        replica_b
            .authorize(&req(2, 100, TOKEN_DECLINE))
            .await
            .unwrap();
        let fake = Authorization {
            id: SimulatedGateway::authorization_id_for(Uuid::from_u128(2)),
            order_id: Uuid::from_u128(2),
            amount: Amount::new(100, "EUR"),
        };
        assert!(matches!(
            replica_b.capture(&fake).await,
            Err(GatewayError::UnknownAuthorization(_))
        ));
    }

    async fn outcomes(seed: u64, rate: f64) -> Vec<Result<AuthorizeOutcome, GatewayError>> {
        let g = SimulatedGateway::new(SimulatedGatewayConfig {
            seed,
            transient_failure_rate: rate,
            ..Default::default()
        });
        let mut out = Vec::new();
        for i in 0..200 {
            out.push(g.authorize(&req(i, 100, "tok_visa")).await);
        }
        out
    }

    #[tokio::test]
    async fn failure_injection_is_seeded_and_follows_the_rate() {
        let a = outcomes(42, 0.3).await;
        assert_eq!(a, outcomes(42, 0.3).await, "same seed, same run");
        assert_ne!(a, outcomes(43, 0.3).await, "another seed, another run");
        let failures = a.iter().filter(|r| r.is_err()).count();
        assert!(
            (30..=90).contains(&failures),
            "{failures} of 200 at rate 0.3"
        );
        assert!(outcomes(1, 0.0).await.iter().all(Result::is_ok));
        assert!(
            outcomes(1, 1.0)
                .await
                .iter()
                .all(|r| r.as_ref().is_err_and(GatewayError::is_transient))
        );
        assert!(outcomes(1, f64::NAN).await.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_lost_response_is_recovered_by_retrying_with_the_same_key() {
        // Every call fails; half of the failures happen after the authorization was recorded.
        let g = SimulatedGateway::new(SimulatedGatewayConfig {
            transient_failure_rate: 1.0,
            seed: 7,
            ..Default::default()
        });
        for i in 0..20 {
            assert!(g.authorize(&req(i, 100, "tok_visa")).await.is_err());
        }
        let recorded = g.lock().records.len();
        assert!(
            recorded > 0 && recorded < 20,
            "{recorded} lost responses of 20"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_applied_in_the_configured_range() {
        let g = SimulatedGateway::new(SimulatedGatewayConfig {
            latency_min: Duration::from_millis(20),
            latency_max: Duration::from_millis(80),
            ..Default::default()
        });
        for i in 0..20 {
            // Paused tokio time: the sleep auto-advances the clock, nothing really waits.
            let start = tokio::time::Instant::now();
            g.authorize(&req(i, 100, "tok_visa")).await.unwrap();
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(20) && took <= Duration::from_millis(81),
                "{took:?}"
            );
        }
    }
}
