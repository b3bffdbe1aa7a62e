#![no_main]
//! Fuzz target `scram_server`: a thin wrapper, the oracle is `pgvpd::testing::scram_server_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::scram_server_oracle(data);
});
