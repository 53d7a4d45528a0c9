//! The fault schedule of a chaos run: which fault happens when, decided up front from a seed so a
//! run can be repeated.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL process `index` of the service processes, restart it `restart_after` later.
    KillService { index: usize },
    /// SIGKILL one NATS node, restart it.
    KillNats { node: usize },
    /// Immediate stop of Postgres (every service database at once), then start it again.
    CrashPostgres,
    /// FLUSHALL on Redis (the inventory cache and the analytics read model must recover).
    FlushRedis,
}

impl Fault {
    pub fn target(&self) -> &'static str {
        match self {
            Fault::KillService { .. } => "service",
            Fault::KillNats { .. } => "nats",
            Fault::CrashPostgres => "postgres",
            Fault::FlushRedis => "redis",
        }
    }
}

/// What the schedule should contain.
#[derive(Debug, Clone)]
pub struct Plan {
    pub service_kills: usize,
    pub nats_kills: usize,
    pub postgres_crashes: usize,
    pub redis_flushes: usize,
    pub processes: usize,
    pub nats_nodes: usize,
    /// Time between faults.
    pub every: Duration,
    pub seed: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("there are no service processes to kill")]
    NoProcesses,
    #[error("NATS kills need a cluster of at least 3 nodes (a single node would stop the world)")]
    NatsNotClustered,
    #[error("the interval between faults must be positive")]
    ZeroInterval,
}

impl Plan {
    /// The faults in order, each with its offset from the start. Service kills are spread evenly;
    /// the rarer faults are placed at seeded positions between them.
    pub fn schedule(&self) -> Result<Vec<(Duration, Fault)>, PlanError> {
        if self.service_kills > 0 && self.processes == 0 {
            return Err(PlanError::NoProcesses);
        }
        if self.nats_kills > 0 && self.nats_nodes < 3 {
            return Err(PlanError::NatsNotClustered);
        }
        if self.every.is_zero() {
            return Err(PlanError::ZeroInterval);
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut faults: Vec<Fault> = (0..self.service_kills)
            .map(|_| Fault::KillService {
                index: rng.random_range(0..self.processes),
            })
            .collect();
        let mut rare = Vec::new();
        rare.extend((0..self.nats_kills).map(|_| Fault::KillNats {
            node: rng.random_range(0..self.nats_nodes),
        }));
        rare.extend((0..self.postgres_crashes).map(|_| Fault::CrashPostgres));
        rare.extend((0..self.redis_flushes).map(|_| Fault::FlushRedis));
        for f in rare {
            let at = rng.random_range(0..=faults.len());
            faults.insert(at, f);
        }
        Ok(faults
            .into_iter()
            .enumerate()
            .map(|(i, f)| (self.every * (i as u32 + 1), f))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            service_kills: 10,
            nats_kills: 2,
            postgres_crashes: 1,
            redis_flushes: 1,
            processes: 12,
            nats_nodes: 3,
            every: Duration::from_secs(2),
            seed: 7,
        }
    }

    #[test]
    fn the_schedule_has_every_fault_once_in_seeded_order() {
        let s = plan().schedule().unwrap();
        assert_eq!(s.len(), 14);
        assert_eq!(
            s.iter().filter(|(_, f)| f.target() == "service").count(),
            10
        );
        assert_eq!(s.iter().filter(|(_, f)| f.target() == "nats").count(), 2);
        assert_eq!(
            s.iter().filter(|(_, f)| *f == Fault::CrashPostgres).count(),
            1
        );
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(s, plan().schedule().unwrap(), "same seed, same schedule");
        assert_ne!(s, Plan { seed: 8, ..plan() }.schedule().unwrap());
        for (_, f) in &s {
            if let Fault::KillService { index } = f {
                assert!(*index < 12);
            }
        }
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert_eq!(
            Plan {
                processes: 0,
                ..plan()
            }
            .schedule(),
            Err(PlanError::NoProcesses)
        );
        assert_eq!(
            Plan {
                nats_nodes: 1,
                ..plan()
            }
            .schedule(),
            Err(PlanError::NatsNotClustered)
        );
        assert_eq!(
            Plan {
                every: Duration::ZERO,
                ..plan()
            }
            .schedule(),
            Err(PlanError::ZeroInterval)
        );
    }
}
