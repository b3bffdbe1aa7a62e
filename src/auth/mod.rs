//! Authentication helpers. PURE.
