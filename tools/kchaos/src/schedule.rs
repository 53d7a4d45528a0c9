//! The kill schedule of a run: which target is hit at which offset, decided up front from a seed
//! so a run can be repeated; plus the parsing of the command line's durations and targets.

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::{SliceRandom, index};

/// The services of the chart, one Deployment each (conventions.md).
pub const SERVICES: [&str; 6] = [
    "order",
    "inventory",
    "payment",
    "notification",
    "survey",
    "analytics",
];

/// What one kill hits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A pod of the service's Deployment (component label = the service name).
    Service(String),
    /// A pod of the in-chart NATS StatefulSet.
    Nats,
}

impl Target {
    /// The chart component (`app.kubernetes.io/component`) of the target's workload.
    pub fn component(&self) -> &str {
        match self {
            Target::Service(s) => s,
            Target::Nats => "nats",
        }
    }
}

/// What the schedule should contain.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Services whose Deployments lose pods; each is hit at least once.
    pub services: Vec<String>,
    /// NATS pods killed (at seeded slots).
    pub nats_kills: usize,
    /// Length of the chaos phase; every kill happens before it ends.
    pub duration: Duration,
    /// Time between kills.
    pub every: Duration,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("--kill-every must be positive")]
    ZeroInterval,
    #[error("--duration must be positive")]
    ZeroDuration,
    #[error("nothing to kill: no target services and --nats-kills 0")]
    NothingToKill,
    #[error(
        "--duration / --kill-every leaves room for {slots} kills, but {needed} are needed (one per target service plus --nats-kills)"
    )]
    TooShort { slots: usize, needed: usize },
}

impl Plan {
    /// Kill slots: offsets `every`, `2 every`, ... strictly before `duration`.
    pub fn slots(&self) -> usize {
        if self.every.is_zero() || self.duration.is_zero() {
            return 0;
        }
        ((self.duration.as_nanos() - 1) / self.every.as_nanos()) as usize
    }

    /// Every slot filled, in time order. NATS kills take seeded slots; the other slots go to the
    /// services in rounds, each round a fresh seeded shuffle, so every service is hit and the
    /// counts differ by at most one.
    pub fn schedule(&self) -> Result<Vec<(Duration, Target)>, PlanError> {
        if self.every.is_zero() {
            return Err(PlanError::ZeroInterval);
        }
        if self.duration.is_zero() {
            return Err(PlanError::ZeroDuration);
        }
        if self.services.is_empty() && self.nats_kills == 0 {
            return Err(PlanError::NothingToKill);
        }
        let slots = self.slots();
        let needed = self.services.len() + self.nats_kills;
        if slots < needed {
            return Err(PlanError::TooShort { slots, needed });
        }
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut targets: Vec<Option<Target>> = vec![None; slots];
        for i in index::sample(&mut rng, slots, self.nats_kills) {
            targets[i] = Some(Target::Nats);
        }
        let mut round: Vec<&String> = Vec::new();
        for t in targets.iter_mut().filter(|t| t.is_none()) {
            if round.is_empty() {
                round = self.services.iter().collect();
                round.shuffle(&mut rng);
            }
            // Only reached with services left to hit: NATS kills alone fill every slot only
            // when there are no services, and then no slot is empty.
            if let Some(s) = round.pop() {
                *t = Some(Target::Service(s.clone()));
            }
        }
        Ok(targets
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, t)| (self.every * (i as u32 + 1), t))
            .collect())
    }
}

/// `120s`, `5s`, `500ms`, `2m`, `1m30s`, `1h`; a bare number is seconds. Zero and negative
/// durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; give a positive duration like 30s"
        ));
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 120s, 500ms or 2m"))?;
        let seconds = match unit {
            "" if rest == s => value,
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
        };
        total += Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("{text:?} is out of range"))?;
        rest = next;
    }
    if total.is_zero() {
        return Err(format!("{text:?} is zero; give a positive duration"));
    }
    Ok(total)
}

/// A comma-separated list of services (the names of [`SERVICES`]); unknown names, repeats and
/// an empty list are refused.
pub fn parse_targets(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim) {
        if name == "nats" {
            return Err(
                "nats is not a --targets entry: set the NATS kills with --nats-kills".into(),
            );
        }
        if !SERVICES.contains(&name) {
            return Err(format!(
                "unknown target {name:?} (known: {})",
                SERVICES.join(", ")
            ));
        }
        if out.iter().any(|o| o == name) {
            return Err(format!("target {name:?} is listed twice"));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn plan() -> Plan {
        Plan {
            services: SERVICES.iter().map(|s| s.to_string()).collect(),
            nats_kills: 1,
            duration: Duration::from_secs(120),
            every: Duration::from_secs(5),
            seed: 42,
        }
    }

    fn counts(s: &[(Duration, Target)]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (_, t) in s {
            *m.entry(t.component().to_owned()).or_default() += 1;
        }
        m
    }

    #[test]
    fn a_schedule_is_reproducible_from_its_seed() {
        let s = plan().schedule().unwrap();
        assert_eq!(s, plan().schedule().unwrap(), "same seed, same schedule");
        let others: Vec<_> = (43..53)
            .map(|seed| Plan { seed, ..plan() }.schedule().unwrap())
            .collect();
        assert!(
            others.iter().any(|o| *o != s),
            "other seeds, other schedules"
        );
    }

    #[test]
    fn every_slot_is_used_and_every_service_is_hit() {
        let s = plan().schedule().unwrap();
        // 5 s .. 115 s: 23 kills, all strictly inside the 120 s window, 5 s apart.
        assert_eq!(s.len(), 23);
        assert_eq!(s[0].0, Duration::from_secs(5));
        assert_eq!(s.last().unwrap().0, Duration::from_secs(115));
        assert!(
            s.windows(2)
                .all(|w| w[1].0 - w[0].0 == Duration::from_secs(5))
        );
        let c = counts(&s);
        assert_eq!(c["nats"], 1);
        for svc in SERVICES {
            // 22 service kills over 6 services: 3 or 4 each.
            assert!((3..=4).contains(&c[svc]), "{svc}: {c:?}");
        }
    }

    #[test]
    fn nats_kills_land_at_seeded_places() {
        let places: std::collections::BTreeSet<usize> = (0..20)
            .map(|seed| {
                Plan { seed, ..plan() }
                    .schedule()
                    .unwrap()
                    .iter()
                    .position(|(_, t)| *t == Target::Nats)
                    .unwrap()
            })
            .collect();
        assert!(places.len() > 3, "{places:?}");
        let two = Plan {
            nats_kills: 2,
            ..plan()
        }
        .schedule()
        .unwrap();
        assert_eq!(counts(&two)["nats"], 2);
    }

    #[test]
    fn exact_fit_and_subsets() {
        // 7 slots (5 s .. 35 s) for 6 services + 1 NATS kill: each exactly once.
        let s = Plan {
            duration: Duration::from_secs(36),
            ..plan()
        }
        .schedule()
        .unwrap();
        assert_eq!(s.len(), 7);
        assert!(counts(&s).values().all(|n| *n == 1));
        let only = Plan {
            services: vec!["payment".into()],
            nats_kills: 0,
            ..plan()
        }
        .schedule()
        .unwrap();
        assert!(
            only.iter()
                .all(|(_, t)| *t == Target::Service("payment".into()))
        );
        let nats_only = Plan {
            services: vec![],
            nats_kills: 3,
            duration: Duration::from_secs(20),
            ..plan()
        }
        .schedule()
        .unwrap();
        assert_eq!(nats_only.len(), 3);
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert_eq!(
            Plan {
                every: Duration::ZERO,
                ..plan()
            }
            .schedule(),
            Err(PlanError::ZeroInterval)
        );
        assert_eq!(
            Plan {
                duration: Duration::ZERO,
                ..plan()
            }
            .schedule(),
            Err(PlanError::ZeroDuration)
        );
        assert_eq!(
            Plan {
                services: vec![],
                nats_kills: 0,
                ..plan()
            }
            .schedule(),
            Err(PlanError::NothingToKill)
        );
        // 35 s at 5 s: slots at 5..30 = 6, but 7 targets.
        assert_eq!(
            Plan {
                duration: Duration::from_secs(35),
                ..plan()
            }
            .schedule(),
            Err(PlanError::TooShort {
                slots: 6,
                needed: 7
            })
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["-5s", "0s", "0", "", "5x", "s", "5s5", "1..2s", "-0"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_targets("order, payment").unwrap(),
            vec!["order".to_string(), "payment".to_string()]
        );
        assert_eq!(parse_targets(&SERVICES.join(",")).unwrap().len(), 6);
        for bad in ["ordr", "order,order", "", "order,", "nats", "postgres"] {
            assert!(parse_targets(bad).is_err(), "{bad:?} accepted");
        }
    }
}
