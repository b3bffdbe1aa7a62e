//! The worker's deadline heap with lazy deletion: a new entry is pushed
//! whenever a connection's `next_deadline()` changes; stale entries stay and
//! are skipped when popped (the connection's deadline no longer matches, or
//! its slot generation moved on). Rebuilt when it outgrows the live set.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Deadlines {
    pub fn push(&mut self, at: Instant, slot: usize, generation: u64) {
        self.heap.push(Reverse((at, slot, generation)));
    }

    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops the earliest entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u64)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries `keep` approves (used to bound the heap).
    pub fn retain(&mut self, mut keep: impl FnMut(Instant, usize, u64) -> bool) {
        let old = std::mem::take(&mut self.heap);
        self.heap = old
            .into_iter()
            .filter(|Reverse((at, s, g))| keep(*at, *s, *g))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Against a sorted Vec model, with a seeded xorshift.
    #[test]
    fn pops_in_order() {
        let t0 = Instant::now();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut d = Deadlines::default();
        let mut model = Vec::new();
        for i in 0..500usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = t0 + Duration::from_millis(x % 1000);
            d.push(at, i, 0);
            model.push((at, i, 0u64));
        }
        model.sort();
        let now = t0 + Duration::from_millis(500);
        let mut got = Vec::new();
        while let Some(e) = d.pop_due(now) {
            got.push(e);
        }
        let want: Vec<_> = model
            .iter()
            .copied()
            .filter(|(at, _, _)| *at <= now)
            .collect();
        assert_eq!(got.len(), want.len());
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(d.len(), model.len() - want.len());
    }
}
