#![no_main]
//! Fuzz target `userlist`: a thin wrapper, the oracle is `pgvpd::testing::userlist_oracle`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgvpd::testing::userlist_oracle(data);
});
