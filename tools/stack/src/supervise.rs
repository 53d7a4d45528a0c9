//! Keeping the local stack's services alive, as Kubernetes would: a service that exits is
//! reported with its exit status and started again after a delay that doubles on every crash
//! in a row (1 s, 2 s, 4 s, ... up to 30 s) and resets once it has stayed up for a minute.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::time::Instant;

use crate::ServiceProcess;

/// Restart delays: `initial`, doubled after each crash in a row, at most `max`; a run of at
/// least `stable` counts as healthy and resets the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub stable: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            stable: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before the next start, given the previous delay (None: no crash yet) and how
    /// long the process that just exited had been up.
    pub fn next(&self, previous: Option<Duration>, uptime: Duration) -> Duration {
        match previous {
            Some(d) if uptime < self.stable => (d * 2).min(self.max),
            _ => self.initial,
        }
    }
}

/// What the supervisor noticed in one [`Supervisor::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exited {
        service: String,
        status: ExitStatus,
        restart: u32,
        restart_in: Duration,
        log: std::path::PathBuf,
    },
    Restarted {
        service: String,
        pid: Option<u32>,
    },
    RestartFailed {
        service: String,
        error: String,
        restart_in: Duration,
    },
    Ready {
        service: String,
        after: Duration,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Exited {
                service,
                status,
                restart,
                restart_in,
                log,
            } => write!(
                f,
                "  {service:<12} exited ({status}); restart #{restart} in {} s (log {})",
                restart_in.as_secs_f32(),
                log.display()
            ),
            Event::Restarted { service, pid } => match pid {
                Some(pid) => write!(f, "  {service:<12} restarted, pid {pid}"),
                None => write!(f, "  {service:<12} restarted"),
            },
            Event::RestartFailed {
                service,
                error,
                restart_in,
            } => write!(
                f,
                "  {service:<12} could not be started ({error}); next try in {} s",
                restart_in.as_secs_f32()
            ),
            Event::Ready { service, after } => write!(
                f,
                "  {service:<12} ready again after {} ms",
                after.as_millis()
            ),
        }
    }
}

enum State {
    /// Running and ready.
    Up { since: Instant },
    /// Spawned again, waiting for /readyz.
    Starting { since: Instant },
    /// Exited; starts again at `at`.
    Down { at: Instant },
}

struct Slot {
    process: ServiceProcess,
    state: State,
    delay: Option<Duration>,
    restarts: u32,
}

/// Watches running, ready services and restarts the ones that exit.
pub struct Supervisor {
    slots: Vec<Slot>,
    backoff: Backoff,
}

impl Supervisor {
    /// `services` must be spawned and ready.
    pub fn new(services: Vec<ServiceProcess>, backoff: Backoff) -> Self {
        let now = Instant::now();
        Self {
            slots: services
                .into_iter()
                .map(|process| Slot {
                    process,
                    state: State::Up { since: now },
                    delay: None,
                    restarts: 0,
                })
                .collect(),
            backoff,
        }
    }

    /// Reaps exited services, starts the ones whose delay is over and reports those that
    /// became ready. Call it periodically.
    pub async fn check(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let now = Instant::now();
        for slot in &mut self.slots {
            let service = slot.process.label();
            match slot.state {
                State::Up { since } | State::Starting { since } => {
                    if let Some(status) = slot.process.try_exited() {
                        let delay = self.backoff.next(slot.delay, now - since);
                        slot.delay = Some(delay);
                        slot.restarts += 1;
                        slot.state = State::Down { at: now + delay };
                        events.push(Event::Exited {
                            service,
                            status,
                            restart: slot.restarts,
                            restart_in: delay,
                            log: slot.process.log_path().to_path_buf(),
                        });
                    } else if let State::Starting { since } = slot.state
                        && slot.process.is_ready().await
                    {
                        slot.state = State::Up { since };
                        events.push(Event::Ready {
                            service,
                            after: since.elapsed(),
                        });
                    }
                }
                State::Down { at } if at <= now => match slot.process.spawn() {
                    Ok(()) => {
                        slot.state = State::Starting { since: now };
                        events.push(Event::Restarted {
                            service,
                            pid: slot.process.pid(),
                        });
                    }
                    Err(e) => {
                        let delay = self.backoff.next(slot.delay, Duration::ZERO);
                        slot.delay = Some(delay);
                        slot.state = State::Down { at: now + delay };
                        events.push(Event::RestartFailed {
                            service,
                            error: format!("{e:#}"),
                            restart_in: delay,
                        });
                    }
                },
                State::Down { .. } => {}
            }
        }
        events
    }

    /// The services, to stop them.
    pub fn into_services(self) -> Vec<ServiceProcess> {
        self.slots.into_iter().map(|s| s.process).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_on_crashes_in_a_row_and_resets_after_a_stable_run() {
        let b = Backoff::default();
        let s = Duration::from_secs;
        assert_eq!(b.next(None, s(0)), s(1));
        assert_eq!(b.next(Some(s(1)), s(2)), s(2));
        assert_eq!(b.next(Some(s(2)), s(2)), s(4));
        assert_eq!(b.next(Some(s(16)), s(2)), s(30));
        assert_eq!(b.next(Some(s(30)), s(2)), s(30));
        assert_eq!(b.next(Some(s(30)), s(60)), s(1));
    }
}
