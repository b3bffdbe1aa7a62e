#![no_main]
//! Fuzz target `frame`: a thin wrapper, the oracle is `pgvpd::testing::frame_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::frame_oracle(data);
});
