#![no_main]
//! Fuzz target `ring_ops`: a thin wrapper, the oracle is `pgvpd::testing::ring_ops_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::ring_ops_oracle(data);
});
