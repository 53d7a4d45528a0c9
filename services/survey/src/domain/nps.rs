//! Scores and the Net Promoter Score.
//!
//! Promoters score 9-10, passives 7-8, detractors 0-6;
//! NPS = % promoters - % detractors, from -100 to 100.

/// A survey score, 0 to 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Score(u8);

/// NPS category of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpsCategory {
    Detractor,
    Passive,
    Promoter,
}

impl Score {
    /// `Some` for 0..=10.
    pub fn new(score: i64) -> Option<Score> {
        u8::try_from(score).ok().filter(|s| *s <= 10).map(Score)
    }

    pub fn value(self) -> u8 {
        self.0
    }

    pub fn category(self) -> NpsCategory {
        match self.0 {
            9..=10 => NpsCategory::Promoter,
            7..=8 => NpsCategory::Passive,
            _ => NpsCategory::Detractor,
        }
    }
}

/// Counts per category; add scores one by one or merge partial summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NpsSummary {
    pub promoters: u64,
    pub passives: u64,
    pub detractors: u64,
}

impl NpsSummary {
    pub fn from_scores(scores: impl IntoIterator<Item = Score>) -> NpsSummary {
        let mut s = NpsSummary::default();
        scores.into_iter().for_each(|score| s.add(score));
        s
    }

    pub fn add(&mut self, score: Score) {
        match score.category() {
            NpsCategory::Promoter => self.promoters += 1,
            NpsCategory::Passive => self.passives += 1,
            NpsCategory::Detractor => self.detractors += 1,
        }
    }

    /// Combines two summaries (e.g. per-day rows of a query).
    pub fn merge(self, other: NpsSummary) -> NpsSummary {
        NpsSummary {
            promoters: self.promoters + other.promoters,
            passives: self.passives + other.passives,
            detractors: self.detractors + other.detractors,
        }
    }

    pub fn responses(&self) -> u64 {
        self.promoters + self.passives + self.detractors
    }

    /// The NPS in `-100.0..=100.0`, or `None` without responses.
    pub fn nps(&self) -> Option<f64> {
        let n = self.responses();
        (n > 0).then(|| (self.promoters as f64 - self.detractors as f64) * 100.0 / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scores(v: &[i64]) -> Vec<Score> {
        v.iter().map(|s| Score::new(*s).unwrap()).collect()
    }

    #[test]
    fn categories() {
        let cat = |s| Score::new(s).unwrap().category();
        assert_eq!(cat(0), NpsCategory::Detractor);
        assert_eq!(cat(6), NpsCategory::Detractor);
        assert_eq!(cat(7), NpsCategory::Passive);
        assert_eq!(cat(8), NpsCategory::Passive);
        assert_eq!(cat(9), NpsCategory::Promoter);
        assert_eq!(cat(10), NpsCategory::Promoter);
        assert_eq!(Score::new(11), None);
        assert_eq!(Score::new(-1), None);
        assert_eq!(Score::new(256), None);
    }

    #[test]
    fn nps_is_percent_promoters_minus_percent_detractors() {
        // 5 promoters, 3 passives, 2 detractors: 50% - 20% = 30.
        let s = NpsSummary::from_scores(scores(&[10, 9, 9, 10, 9, 7, 8, 7, 0, 6]));
        assert_eq!(
            s,
            NpsSummary {
                promoters: 5,
                passives: 3,
                detractors: 2
            }
        );
        assert_eq!(s.nps(), Some(30.0));
        assert_eq!(NpsSummary::default().nps(), None);
        assert_eq!(NpsSummary::from_scores(scores(&[10])).nps(), Some(100.0));
        assert_eq!(NpsSummary::from_scores(scores(&[3, 3])).nps(), Some(-100.0));
        assert_eq!(NpsSummary::from_scores(scores(&[7, 8])).nps(), Some(0.0));
    }

    proptest! {
        /// NPS stays within -100..=100, counts add up, and merging equals summarizing all at once.
        #[test]
        fn nps_bounds_and_merge(a in proptest::collection::vec(0i64..=10, 0..50), b in proptest::collection::vec(0i64..=10, 0..50)) {
            let (sa, sb) = (NpsSummary::from_scores(scores(&a)), NpsSummary::from_scores(scores(&b)));
            let all: Vec<i64> = a.iter().chain(&b).copied().collect();
            let whole = NpsSummary::from_scores(scores(&all));
            prop_assert_eq!(sa.merge(sb), whole);
            prop_assert_eq!(whole.responses(), all.len() as u64);
            if let Some(n) = whole.nps() {
                prop_assert!((-100.0..=100.0).contains(&n));
            } else {
                prop_assert!(all.is_empty());
            }
        }
    }
}
