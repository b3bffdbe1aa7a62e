//! `ByteRing`: a fixed-capacity FIFO of bytes, after smoltcp's `RingBuffer`:
//! storage plus `head` and `len`; `head` returns to 0 whenever the ring
//! empties, so most messages sit contiguously at the start.
//!
//! Invariants (checked by `debug_check`): `head < cap` (or 0 when cap is 0),
//! `len <= cap`; `len == 0` implies `head == 0`. No method panics.

/// A fixed-capacity byte ring.
pub struct ByteRing {
    storage: Box<[u8]>,
    head: usize,
    len: usize,
}

impl ByteRing {
    pub fn new(capacity: usize) -> Self {
        ByteRing {
            storage: vec![0u8; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.storage.len()
    }

    /// Free bytes in total (not necessarily contiguous).
    pub fn free(&self) -> usize {
        self.storage.len().saturating_sub(self.len)
    }

    /// Index one past the last stored byte, wrapped.
    fn tail(&self) -> usize {
        let cap = self.storage.len();
        if cap == 0 {
            return 0;
        }
        let t = self.head.saturating_add(self.len);
        if t >= cap { t.saturating_sub(cap) } else { t }
    }

    /// The contiguous free region after the tail, for `read()` to fill.
    pub fn free_contiguous_mut(&mut self) -> &mut [u8] {
        let cap = self.storage.len();
        let tail = self.tail();
        let end = if self.head.saturating_add(self.len) >= cap {
            // Stored bytes wrap (or fill to the end): free space is tail..head.
            self.head
        } else {
            cap
        };
        if self.len >= cap {
            return &mut [];
        }
        self.storage.get_mut(tail..end).unwrap_or(&mut [])
    }

    /// Marks `n` bytes written into `free_contiguous_mut()` as stored.
    /// `n` larger than the free space is clamped (callers pass what `read` returned).
    pub fn commit(&mut self, n: usize) {
        let n = n.min(self.free());
        self.len = self.len.saturating_add(n);
    }

    /// The stored bytes in order, as up to two slices.
    pub fn readable(&self) -> (&[u8], &[u8]) {
        let cap = self.storage.len();
        let first_end = self.head.saturating_add(self.len).min(cap);
        let first = self.storage.get(self.head..first_end).unwrap_or(&[]);
        let rest = self.len.saturating_sub(first.len());
        let second = self.storage.get(..rest).unwrap_or(&[]);
        (first, second)
    }

    /// Drops `n` bytes from the front (clamped to `len`).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        let cap = self.storage.len();
        self.len = self.len.saturating_sub(n);
        if self.len == 0 {
            self.head = 0;
        } else {
            let h = self.head.saturating_add(n);
            self.head = if h >= cap { h.saturating_sub(cap) } else { h };
        }
    }

    /// Appends all of `data` or nothing. Returns false when it does not fit.
    pub fn push(&mut self, mut data: &[u8]) -> bool {
        if data.len() > self.free() {
            return false;
        }
        while !data.is_empty() {
            let dst = self.free_contiguous_mut();
            let n = dst.len().min(data.len());
            if n == 0 {
                return false; // unreachable while free() >= data.len()
            }
            let (now, later) = data.split_at(n);
            if let Some(d) = dst.get_mut(..n) {
                d.copy_from_slice(now);
            }
            self.commit(n);
            data = later;
        }
        true
    }

    /// Copies the first `out.len()` stored bytes into `out` without consuming.
    /// Returns false when fewer bytes are stored.
    pub fn peek_into(&self, out: &mut [u8]) -> bool {
        if out.len() > self.len {
            return false;
        }
        let (a, b) = self.readable();
        let from_a = a.len().min(out.len());
        let (oa, ob) = out.split_at_mut(from_a);
        if let Some(src) = a.get(..from_a) {
            oa.copy_from_slice(src);
        }
        if let Some(src) = b.get(..ob.len()) {
            ob.copy_from_slice(src);
        }
        true
    }

    /// Rotates the storage so the stored bytes start at index 0; afterwards
    /// `readable().0` holds everything. Used only when a message we must
    /// inspect wraps around the end.
    pub fn make_contiguous(&mut self) {
        if self.head == 0 {
            return;
        }
        let head = self.head;
        self.storage.rotate_left(head);
        self.head = 0;
    }

    /// Contiguous view of every stored byte (rotating first if needed).
    pub fn contiguous(&mut self) -> &[u8] {
        let (_, b) = self.readable();
        if !b.is_empty() {
            self.make_contiguous();
        }
        self.readable().0
    }

    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Zeroes the storage (after carrying authentication bytes).
    pub fn wipe(&mut self) {
        self.storage.fill(0);
        self.clear();
    }

    /// Checks the invariants; returns a description of the first violation.
    pub fn debug_check(&self) -> Result<(), &'static str> {
        let cap = self.storage.len();
        if self.len > cap {
            return Err("len > capacity");
        }
        if cap > 0 && self.head >= cap {
            return Err("head out of range");
        }
        if self.len == 0 && self.head != 0 {
            return Err("empty ring with nonzero head");
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used
)]
mod tests {
    use super::*;
    use crate::testing::XorShift;
    use std::collections::VecDeque;

    fn contents(r: &ByteRing) -> Vec<u8> {
        let (a, b) = r.readable();
        [a, b].concat()
    }

    #[test]
    fn push_consume_wrap() {
        let mut r = ByteRing::new(8);
        assert!(r.push(b"abcdef"));
        r.consume(4);
        assert!(r.push(b"ghijk")); // wraps
        assert!(!r.push(b"xy")); // 7 stored, 1 free
        assert_eq!(contents(&r), b"efghijk");
        let (a, b) = r.readable();
        assert_eq!(a, b"efgh");
        assert_eq!(b, b"ijk");
        let mut hdr = [0u8; 5];
        assert!(r.peek_into(&mut hdr));
        assert_eq!(&hdr, b"efghi");
        r.make_contiguous();
        assert_eq!(r.readable().0, b"efghijk");
        r.consume(7);
        assert!(r.is_empty());
        assert_eq!(r.free_contiguous_mut().len(), 8);
        r.debug_check().unwrap();
    }

    #[test]
    fn full_ring_has_no_free_region() {
        let mut r = ByteRing::new(4);
        assert!(r.push(b"abcd"));
        assert!(r.is_full());
        assert!(r.free_contiguous_mut().is_empty());
        r.commit(10); // clamped
        assert_eq!(r.len(), 4);
    }

    /// Model test against VecDeque with a seeded xorshift (seed printed on failure).
    #[test]
    fn model_against_vecdeque() {
        for seed in 1..=200u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let cap = 1 + rng.below(64) as usize;
            let mut ring = ByteRing::new(cap);
            let mut model: VecDeque<u8> = VecDeque::new();
            for step in 0..500 {
                match rng.below(5) {
                    0 => {
                        // read()-style fill
                        let dst = ring.free_contiguous_mut();
                        let n = rng.below(dst.len() as u64 + 1) as usize;
                        for (i, d) in dst[..n].iter_mut().enumerate() {
                            *d = (step + i) as u8;
                            model.push_back((step + i) as u8);
                        }
                        ring.commit(n);
                    }
                    1 => {
                        let n = rng.below(ring.len() as u64 + 2) as usize;
                        ring.consume(n);
                        for _ in 0..n.min(model.len()) {
                            model.pop_front();
                        }
                    }
                    2 => {
                        let n = rng.below(cap as u64 + 2) as usize;
                        let data: Vec<u8> = (0..n).map(|i| (i * 7 + step) as u8).collect();
                        let fits = n <= cap - model.len();
                        assert_eq!(ring.push(&data), fits, "seed {seed} step {step}");
                        if fits {
                            model.extend(data);
                        }
                    }
                    3 => ring.make_contiguous(),
                    _ => {
                        let mut out = vec![0u8; rng.below(8) as usize];
                        let ok = ring.peek_into(&mut out);
                        assert_eq!(ok, out.len() <= model.len(), "seed {seed}");
                        if ok {
                            let want: Vec<u8> = model.iter().take(out.len()).copied().collect();
                            assert_eq!(out, want, "seed {seed}");
                        }
                    }
                }
                assert_eq!(
                    contents(&ring),
                    model.iter().copied().collect::<Vec<_>>(),
                    "seed {seed} step {step}"
                );
                assert_eq!(ring.len(), model.len());
                ring.debug_check()
                    .map_err(|e| format!("seed {seed}: {e}"))
                    .unwrap();
            }
        }
    }
}
