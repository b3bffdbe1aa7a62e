#![no_main]
//! Fuzz target `config`: a thin wrapper, the oracle is `pgvpd::testing::config_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::config_oracle(data);
});
