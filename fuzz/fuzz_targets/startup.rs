#![no_main]
//! Fuzz target `startup`: a thin wrapper, the oracle is `pgvpd::testing::startup_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::startup_oracle(data);
});
