#![no_main]
//! Fuzz target `conn_ops`: a thin wrapper, the oracle is `pgvpd::testing::conn_ops_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::conn_ops_oracle(data);
});
