//! Atomic counters.
