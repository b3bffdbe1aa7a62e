//! Per-connection state machines. PURE.
