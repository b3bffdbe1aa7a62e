#![no_main]
//! Fuzz target `scram_client`: a thin wrapper, the oracle is `pgvpd::testing::scram_client_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::scram_client_oracle(data);
});
