//! Fixed-capacity byte rings and their bounded free list.
//!
//! Owns: `ByteRing` (one direction's bytes in flight) and `BufPool` (recycled
//! ring storage, so idle connections hold no ring at all).
//! Must not: grow. A ring never reallocates; a full ring means "stop reading".
//! See `docs/architecture.md`, section "Buffers".
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod ring;

pub use ring::ByteRing;

/// Capacity of one direction's ring buffer.
pub const RING_CAPACITY: usize = 16 * 1024;

/// Most ring buffers a worker keeps for reuse; more are freed.
pub const POOL_KEEP: usize = 256;

/// A bounded free list of ring buffers. Rings go back only when empty, and are
/// zeroed first when they may have carried authentication messages.
pub struct BufPool {
    free: Vec<ByteRing>,
    keep: usize,
}

impl BufPool {
    pub fn new(keep: usize) -> Self {
        BufPool {
            free: Vec::new(),
            keep,
        }
    }

    /// A ring from the free list, or a newly allocated one.
    pub fn checkout(&mut self) -> ByteRing {
        self.free
            .pop()
            .unwrap_or_else(|| ByteRing::new(RING_CAPACITY))
    }

    /// Returns a ring. `wipe` zeroes its storage (it carried auth bytes).
    pub fn checkin(&mut self, mut ring: ByteRing, wipe: bool) {
        ring.clear();
        if wipe {
            ring.wipe();
        }
        if self.free.len() < self.keep && ring.capacity() == RING_CAPACITY {
            self.free.push(ring);
        }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}
