#![no_main]
//! Fuzz target `backend`: a thin wrapper, the oracle is `pgvpd::testing::backend_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::backend_oracle(data);
});
