//! Fixed-capacity byte rings and their bounded free list.

/// Capacity of one direction's ring buffer.
pub const RING_CAPACITY: usize = 16 * 1024;
