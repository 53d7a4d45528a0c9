//! Gateway calls as the handlers make them: through the circuit breaker, retried in-process with
//! exponential backoff with jitter on transient failures, each call logged in
//! `payment_gateway_attempts` and counted in the metrics.
//!
//! Breakers are per process (per replica): they protect this process's calls, and every replica
//! learns about an outage on its own. There are two levels, so that one customer's failing card
//! cannot hold back everyone's payments:
//! - one breaker per card (payment token; per authorization for capture and void) opens after
//!   `failure_threshold` consecutive transient failures of that card and refuses only its calls;
//! - the gateway-wide breaker opens after `failure_threshold` consecutive failures *of distinct
//!   cards*: a card counts once until one of its calls succeeds, so a gateway outage (every card
//!   failing) opens it and a single bad card never does.
//!
//! An authorization retries until its deadline (see the handlers) and stops as soon as its order
//! is cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::Utc;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{
    Authorization, AuthorizeOutcome, AuthorizeRequest, BreakerConfig, BreakerState, CircuitBreaker,
    CircuitOpen, GatewayError, PaymentGateway, RetryPolicy,
};
use crate::store::{self, Attempt};

/// A gateway operation.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Operation {
    Authorize,
    Capture,
    Void,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Authorize => "AUTHORIZE",
            Operation::Capture => "CAPTURE",
            Operation::Void => "VOID",
        }
    }
}

/// How a call ended, as logged and counted.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum CallOutcome {
    Authorized,
    Declined,
    Captured,
    Voided,
    TransientError,
    Rejected,
}

impl CallOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Authorized => "AUTHORIZED",
            CallOutcome::Declined => "DECLINED",
            CallOutcome::Captured => "CAPTURED",
            CallOutcome::Voided => "VOIDED",
            CallOutcome::TransientError => "TRANSIENT_ERROR",
            CallOutcome::Rejected => "REJECTED",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: Operation,
    outcome: CallOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: Operation,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The payment service's own metrics.
#[derive(Debug)]
pub struct GatewayMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    refused: Family<OperationLabels, Counter>,
    /// 0 closed, 1 half-open, 2 open.
    breaker: Gauge,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Arc<GatewayMetrics> {
        let m = Arc::new(GatewayMetrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            refused: Family::default(),
            breaker: Gauge::default(),
        });
        let r = registry.sub_registry_with_prefix("jetmart_payment");
        r.register(
            "gateway_calls",
            "Payment gateway calls by operation and outcome",
            m.calls.clone(),
        );
        r.register(
            "gateway_call_seconds",
            "Payment gateway call latency",
            m.latency.clone(),
        );
        r.register(
            "gateway_circuit_open_refusals",
            "Gateway calls not made because the circuit breaker was open",
            m.refused.clone(),
        );
        r.register(
            "gateway_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            m.breaker.clone(),
        );
        m
    }
}

/// Why a guarded call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The breaker refused the call: nothing was sent.
    #[error("{operation:?} not attempted: {open}")]
    CircuitOpen {
        operation: Operation,
        open: CircuitOpen,
    },
    /// Transient failures until the retry policy (or the breaker) stopped the retries.
    #[error("{operation:?} failed {attempts} time(s), last: {last}")]
    Exhausted {
        operation: Operation,
        attempts: u32,
        last: GatewayError,
    },
    /// The gateway refused the request itself (conflict, unknown or closed authorization).
    #[error("{operation:?} refused by the gateway: {error}")]
    Rejected {
        operation: Operation,
        error: GatewayError,
    },
    /// The authorization deadline passed (or no further attempt fits before it).
    #[error("{operation:?} had no answer before its deadline after {attempts} attempt(s)")]
    OutOfTime { operation: Operation, attempts: u32 },
    /// The order was cancelled while the call was being retried: retrying stopped.
    #[error("{operation:?} abandoned after {attempts} attempt(s): the order was cancelled")]
    OrderCancelled { operation: Operation, attempts: u32 },
    /// The attempt could not be logged.
    #[error("recording the gateway attempt: {0}")]
    Database(#[from] sqlx::Error),
}

/// Cards (breaker keys) remembered at once; past that a new failing card has no breaker of its
/// own but still counts against the gateway-wide one.
const MAX_CARD_BREAKERS: usize = 10_000;

/// The gateway-wide breaker and one per card that is failing now.
struct Breakers {
    config: BreakerConfig,
    gateway: CircuitBreaker,
    cards: HashMap<String, CircuitBreaker>,
}

/// The breaker key of a payment token. Tokens stay in memory only, never in logs or labels.
fn card_key(token: &str) -> String {
    format!("card:{token}")
}

/// Which event a call is made for (for the attempts log).
#[derive(Debug, Clone, Copy)]
pub struct Cause {
    pub event_id: Uuid,
    pub delivery: i64,
}

enum Call<'a> {
    Authorize(&'a AuthorizeRequest),
    Capture(&'a Authorization),
    Void(&'a Authorization),
}

enum Answer {
    Authorize(AuthorizeOutcome),
    Settled,
}

/// The gateway with breaker, retries and the attempts log.
pub struct GuardedGateway {
    gateway: Arc<dyn PaymentGateway>,
    breakers: Mutex<Breakers>,
    policy: RetryPolicy,
    pool: PgPool,
    metrics: Arc<GatewayMetrics>,
}

impl std::fmt::Debug for GuardedGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedGateway")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A call the breakers let through. Reports its result exactly once; a call abandoned midway
/// (the future dropped) counts as a failure, so a half-open trial can never stay "in flight".
struct Permit<'a> {
    gateway: &'a GuardedGateway,
    card: String,
    /// This call is the gateway-wide breaker's half-open trial.
    gateway_trial: bool,
    reported: bool,
}

impl Permit<'_> {
    fn report(mut self, healthy: bool) {
        self.reported = true;
        self.gateway.report(&self.card, self.gateway_trial, healthy);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.gateway.report(&self.card, self.gateway_trial, false);
        }
    }
}

impl GuardedGateway {
    pub fn new(
        gateway: Arc<dyn PaymentGateway>,
        breaker: BreakerConfig,
        policy: RetryPolicy,
        pool: PgPool,
        metrics: Arc<GatewayMetrics>,
    ) -> GuardedGateway {
        GuardedGateway {
            gateway,
            breakers: Mutex::new(Breakers {
                config: breaker,
                gateway: CircuitBreaker::new(breaker),
                cards: HashMap::new(),
            }),
            policy,
            pool,
            metrics,
        }
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, Breakers> {
        // The breakers are plain data updated without panicking paths: a poisoned lock is still
        // consistent.
        self.breakers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn show_state(&self, breaker: &CircuitBreaker, now: Instant) {
        let v = match breaker.state(now) {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.metrics.breaker.set(v);
    }

    fn acquire(&self, card: &str) -> Result<Permit<'_>, CircuitOpen> {
        let now = Instant::now();
        let mut b = self.breakers();
        let gateway_trial = b.gateway.state(now) == BreakerState::HalfOpen;
        let result = b.gateway.try_acquire(now);
        self.show_state(&b.gateway, now);
        result?;
        if let Some(own) = b.cards.get_mut(card)
            && let Err(open) = own.try_acquire(now)
        {
            if gateway_trial {
                b.gateway.release_trial();
            }
            return Err(open);
        }
        Ok(Permit {
            gateway: self,
            card: card.to_owned(),
            gateway_trial,
            reported: false,
        })
    }

    fn report(&self, card: &str, gateway_trial: bool, healthy: bool) {
        let now = Instant::now();
        let mut b = self.breakers();
        if healthy {
            b.cards.remove(card);
            b.gateway.record_success();
        } else {
            let config = b.config;
            let tracked = b.cards.len() < MAX_CARD_BREAKERS || b.cards.contains_key(card);
            // The first failure of a card's streak counts against the gateway; its repeats only
            // against the card (and a failed half-open trial always reopens the gateway).
            let first_of_streak = if tracked {
                let own = b
                    .cards
                    .entry(card.to_owned())
                    .or_insert_with(|| CircuitBreaker::new(config));
                let first = own.is_clear();
                own.record_failure(now);
                first
            } else {
                true
            };
            if first_of_streak || gateway_trial {
                b.gateway.record_failure(now);
            }
        }
        self.show_state(&b.gateway, now);
    }

    /// The gateway-wide breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.breakers().gateway.state(Instant::now())
    }

    /// The state of the breaker of one card (payment token) now; closed if it has none.
    pub fn card_breaker_state(&self, token: &str) -> BreakerState {
        self.breakers()
            .cards
            .get(&card_key(token))
            .map_or(BreakerState::Closed, |b| b.state(Instant::now()))
    }

    /// Authorizes with the order id as idempotency key, retrying until `deadline` at the
    /// latest, and not after the order was cancelled.
    pub async fn authorize(
        &self,
        request: &AuthorizeRequest,
        cause: Cause,
        deadline: tokio::time::Instant,
    ) -> Result<AuthorizeOutcome, CallError> {
        match self
            .call(
                request.order_id,
                cause,
                Call::Authorize(request),
                Some(deadline),
            )
            .await?
        {
            Answer::Authorize(outcome) => Ok(outcome),
            Answer::Settled => unreachable!("authorize answers with an outcome"),
        }
    }

    pub async fn capture(&self, auth: &Authorization, cause: Cause) -> Result<(), CallError> {
        self.call(auth.order_id, cause, Call::Capture(auth), None)
            .await
            .map(|_| ())
    }

    pub async fn void(&self, auth: &Authorization, cause: Cause) -> Result<(), CallError> {
        self.call(auth.order_id, cause, Call::Void(auth), None)
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        order_id: Uuid,
        cause: Cause,
        call: Call<'_>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Answer, CallError> {
        let (operation, card) = match call {
            Call::Authorize(r) => (Operation::Authorize, card_key(&r.token)),
            Call::Capture(a) => (Operation::Capture, format!("auth:{}", a.id.0)),
            Call::Void(a) => (Operation::Void, format!("auth:{}", a.id.0)),
        };
        let out_of_time = |attempts| CallError::OutOfTime {
            operation,
            attempts,
        };
        let mut failures = 0u32;
        loop {
            if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return Err(out_of_time(failures));
            }
            let permit = match self.acquire(&card) {
                Ok(p) => p,
                Err(open) if failures == 0 => {
                    self.metrics
                        .refused
                        .get_or_create(&OperationLabels { operation })
                        .inc();
                    tracing::warn!(%order_id, ?operation, retry_after_ms = open.retry_after.as_millis() as u64, "circuit open, event waits");
                    return Err(CallError::CircuitOpen { operation, open });
                }
                // The breaker opened while this event was retrying: stop here, the event waits.
                Err(_) => {
                    return Err(CallError::Exhausted {
                        operation,
                        attempts: failures,
                        last: GatewayError::Transient("circuit breaker opened".into()),
                    });
                }
            };
            let started_at = Utc::now();
            let clock = Instant::now();
            let answer = async {
                match call {
                    Call::Authorize(r) => self.gateway.authorize(r).await.map(Answer::Authorize),
                    Call::Capture(a) => self.gateway.capture(a).await.map(|()| Answer::Settled),
                    Call::Void(a) => self.gateway.void(a).await.map(|()| Answer::Settled),
                }
            };
            let result = match deadline {
                Some(d) => tokio::time::timeout_at(d, answer)
                    .await
                    .unwrap_or_else(|_| {
                        Err(GatewayError::Transient(
                            "no answer before the authorization deadline".into(),
                        ))
                    }),
                None => answer.await,
            };
            let latency = clock.elapsed();
            // Declines and refusals are healthy answers: only transient errors count against the
            // gateway.
            permit.report(!result.as_ref().is_err_and(GatewayError::is_transient));

            let (outcome, detail) = match &result {
                Ok(Answer::Authorize(AuthorizeOutcome::Authorized(_))) => {
                    (CallOutcome::Authorized, None)
                }
                Ok(Answer::Authorize(AuthorizeOutcome::Declined(r))) => {
                    (CallOutcome::Declined, Some(r.as_str().to_owned()))
                }
                Ok(Answer::Settled) if operation == Operation::Capture => {
                    (CallOutcome::Captured, None)
                }
                Ok(Answer::Settled) => (CallOutcome::Voided, None),
                Err(e) if e.is_transient() => (CallOutcome::TransientError, Some(e.to_string())),
                Err(e) => (CallOutcome::Rejected, Some(e.to_string())),
            };
            self.metrics
                .calls
                .get_or_create(&CallLabels { operation, outcome })
                .inc();
            self.metrics
                .latency
                .get_or_create(&OperationLabels { operation })
                .observe(latency.as_secs_f64());
            store::record_attempt(
                &self.pool,
                &Attempt {
                    order_id,
                    operation: operation.as_str(),
                    attempt: failures + 1,
                    event_id: cause.event_id,
                    delivery: cause.delivery,
                    outcome: outcome.as_str(),
                    detail: detail.as_deref(),
                    latency,
                    started_at,
                },
            )
            .await?;

            match result {
                Ok(answer) => return Ok(answer),
                Err(error) if error.is_transient() => {
                    failures += 1;
                    let delay = self.policy.next_delay(failures);
                    let Some(delay) = delay else {
                        return Err(CallError::Exhausted {
                            operation,
                            attempts: failures,
                            last: error,
                        });
                    };
                    if deadline.is_some_and(|d| tokio::time::Instant::now() + delay >= d) {
                        return Err(out_of_time(failures));
                    }
                    // Nobody waits for this authorization any more.
                    if operation == Operation::Authorize
                        && store::is_cancelled(&self.pool, order_id).await?
                    {
                        return Err(CallError::OrderCancelled {
                            operation,
                            attempts: failures,
                        });
                    }
                    tracing::debug!(%order_id, ?operation, failures, delay_ms = delay.as_millis() as u64, error = %error, "gateway call failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(CallError::Rejected { operation, error }),
            }
        }
    }
}
