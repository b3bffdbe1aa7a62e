#![no_main]
//! Fuzz target `resolvers`: a thin wrapper, the oracle is `pgvpd::testing::resolvers_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::resolvers_oracle(data);
});
