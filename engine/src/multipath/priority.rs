//! The priority scheduler (sans-IO): deficit round robin over three
//! classes sharing the aggregate bandwidth 50 / 30 / 20.
//!
//! Each class has a queue of items with a size in bytes. [`Drr::pop`]
//! visits the classes in turn; a visited class with work earns
//! `quantum × weight` bytes of credit and sends items while its credit
//! covers them. A class with nothing queued loses its credit, so the
//! scheduler is work-conserving: an idle class's share goes to the others,
//! and a lone class gets everything. Over any stretch where all three stay
//! backlogged, bytes served follow the weights to within one item per
//! round.

#![deny(clippy::disallowed_methods)]

use std::collections::VecDeque;

/// Priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// 50 % of the bandwidth when all classes are busy.
    Critical,
    /// 30 %.
    High,
    /// 20 %.
    Normal,
}

impl Class {
    /// All classes, in visiting order.
    pub const ALL: [Class; 3] = [Class::Critical, Class::High, Class::Normal];

    /// Share weight (sums to 10).
    pub fn weight(self) -> u64 {
        match self {
            Class::Critical => 5,
            Class::High => 3,
            Class::Normal => 2,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::str::FromStr for Class {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "critical" => Ok(Class::Critical),
            "high" => Ok(Class::High),
            "normal" => Ok(Class::Normal),
            other => Err(format!(
                "unknown priority {other:?} (critical, high, normal)"
            )),
        }
    }
}

/// Deficit round robin over [`Class`]es.
#[derive(Debug, Clone)]
pub struct Drr<T> {
    queues: [VecDeque<(T, u64)>; 3],
    deficit: [u64; 3],
    quantum: u64,
    turn: usize,
    fresh_turn: bool,
}

impl<T> Drr<T> {
    /// A scheduler whose classes earn `quantum × weight` bytes per visit
    /// (use about one item's size: 1 MiB blocks → 1 MiB).
    pub fn new(quantum: u64) -> Self {
        Self {
            queues: Default::default(),
            deficit: [0; 3],
            quantum: quantum.max(1),
            turn: 0,
            fresh_turn: true,
        }
    }

    /// Queues `item` of `bytes` in `class`.
    pub fn push(&mut self, class: Class, item: T, bytes: u64) {
        self.queues[class.index()].push_back((item, bytes));
    }

    /// Items waiting in `class`.
    pub fn len(&self, class: Class) -> usize {
        self.queues[class.index()].len()
    }

    /// Items waiting in all classes.
    pub fn total(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Keeps only the items `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for q in &mut self.queues {
            q.retain(|(item, _)| keep(item));
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    /// The next item to send, and its class.
    pub fn pop(&mut self) -> Option<(Class, T)> {
        if self.is_empty() {
            return None;
        }
        // Bounded: every full cycle adds credit to a non-empty class, so an
        // item is found within (largest item / quantum + 1) cycles.
        loop {
            let i = self.turn;
            let class = Class::ALL[i];
            if self.queues[i].is_empty() {
                self.deficit[i] = 0;
                self.advance();
                continue;
            }
            if self.fresh_turn {
                self.deficit[i] += self.quantum * class.weight();
                self.fresh_turn = false;
            }
            let size = self.queues[i].front().expect("non-empty").1;
            if size <= self.deficit[i] {
                self.deficit[i] -= size;
                let (item, _) = self.queues[i].pop_front().expect("non-empty");
                if self.queues[i].is_empty() {
                    self.deficit[i] = 0;
                    self.advance();
                }
                return Some((class, item));
            }
            self.advance();
        }
    }

    fn advance(&mut self) {
        self.turn = (self.turn + 1) % 3;
        self.fresh_turn = true;
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shares(served: &[u64; 3]) -> [f64; 3] {
        let total: u64 = served.iter().sum();
        served.map(|s| s as f64 / total as f64)
    }

    #[test]
    fn backlogged_classes_share_50_30_20() {
        let mut d = Drr::new(1 << 20);
        for i in 0..3000u32 {
            for c in Class::ALL {
                d.push(c, i, 1 << 20);
            }
        }
        let mut served = [0u64; 3];
        for _ in 0..2000 {
            let (c, _) = d.pop().unwrap();
            served[c.index()] += 1 << 20;
        }
        let s = shares(&served);
        assert!(
            (s[0] - 0.5).abs() < 0.01 && (s[1] - 0.3).abs() < 0.01 && (s[2] - 0.2).abs() < 0.01,
            "{s:?}"
        );
    }

    #[test]
    fn a_lone_class_gets_everything_and_idle_credit_is_not_hoarded() {
        let mut d = Drr::new(1000);
        for i in 0..10 {
            d.push(Class::Normal, i, 1000);
        }
        let order: Vec<_> = std::iter::from_fn(|| d.pop()).collect();
        assert_eq!(order.len(), 10);
        assert!(order.iter().all(|(c, _)| *c == Class::Normal));
        // Critical arriving later does not get a burst from credit earned while idle.
        for i in 0..100 {
            d.push(Class::Critical, i, 1000);
            d.push(Class::Normal, i, 1000);
        }
        let first: Vec<Class> = (0..10).map(|_| d.pop().unwrap().0).collect();
        let crit = first.iter().filter(|c| **c == Class::Critical).count();
        assert!((6..=8).contains(&crit), "{first:?}");
    }

    #[test]
    fn priorities_parse() {
        assert_eq!("Critical".parse(), Ok(Class::Critical));
        assert!(
            "urgent"
                .parse::<Class>()
                .unwrap_err()
                .contains("critical, high, normal")
        );
    }

    proptest! {
        /// Whatever the item sizes, while all three classes stay backlogged
        /// the bytes served are within 5 points of 50/30/20, and every item
        /// comes out exactly once.
        #[test]
        fn shares_hold_for_any_sizes(sizes in proptest::collection::vec(1u64..4_000_000, 3..30), quantum in 100_000u64..2_000_000) {
            let mut d = Drr::new(quantum);
            let n = 400usize;
            for i in 0..n {
                for c in Class::ALL {
                    d.push(c, (c, i), sizes[(i + c.index()) % sizes.len()]);
                }
            }
            let mut served = [0u64; 3];
            let mut seen = std::collections::HashSet::new();
            // Stop while every class still has work.
            while Class::ALL.iter().all(|&c| d.len(c) > 50) {
                let (c, item) = d.pop().unwrap();
                prop_assert!(seen.insert(item));
                served[c.index()] += sizes[(item.1 + c.index()) % sizes.len()];
            }
            let s = shares(&served);
            prop_assert!((s[0] - 0.5).abs() < 0.05 && (s[1] - 0.3).abs() < 0.05 && (s[2] - 0.2).abs() < 0.05, "{:?}", s);
        }
    }
}
