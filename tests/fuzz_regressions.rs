//! Replays every committed fuzz input through its target's oracle on stable
//! `cargo test`: `fuzz/seeds/<target>/*` and `fuzz/regressions/<target>/*`.
//!
//! A directory without a matching oracle fails the test, and so does a target
//! with no file at all, so the replay cannot pass vacuously.
//! `cargo test --test fuzz_regressions -- --ignored write_seeds` regenerates
//! `fuzz/seeds/` from `pgvpd::testing::seed_corpus()`.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use pgvpd::testing;

type Oracle = fn(&[u8]);

/// Every fuzz target and the oracle its `fuzz/fuzz_targets/<name>.rs` calls.
const TARGETS: &[(&str, Oracle)] = &[
    ("frame", testing::frame_oracle),
    ("startup", testing::startup_oracle),
    ("backend", testing::backend_oracle),
    ("config", testing::config_oracle),
    ("ring_ops", testing::ring_ops_oracle),
    ("conn_ops", testing::conn_ops_oracle),
    ("scram_server", testing::scram_server_oracle),
    ("scram_client", testing::scram_client_oracle),
    ("userlist", testing::userlist_oracle),
    ("resolvers", testing::resolvers_oracle),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn oracle(name: &str) -> Option<Oracle> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Replays `fuzz/<kind>/<target>/*`; returns files replayed per target.
fn replay(kind: &str, failures: &mut Vec<String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let root = fuzz_dir().join(kind);
    let dirs = fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for dir in dirs {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some(f) = oracle(&name) else {
            failures.push(format!("fuzz/{kind}/{name}: no oracle for this target"));
            continue;
        };
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in &files {
            let data = fs::read(file).unwrap();
            if catch_unwind(AssertUnwindSafe(|| f(&data))).is_err() {
                failures.push(format!("{}: oracle {name} failed", file.display()));
            }
        }
        counts.insert(name, files.len());
    }
    counts
}

#[test]
fn replay_seeds_and_regressions() {
    let mut failures = Vec::new();
    let seeds = replay("seeds", &mut failures);
    let regressions = replay("regressions", &mut failures);
    for (kind, counts) in [("seeds", &seeds), ("regressions", &regressions)] {
        for (name, _) in TARGETS {
            match counts.get(*name) {
                Some(n) if *n > 0 => {}
                _ => failures.push(format!("fuzz/{kind}/{name}: no input replayed")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every fuzz target file calls an oracle listed here (and vice versa).
#[test]
fn targets_match_oracles() {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    for n in &names {
        let src = fs::read_to_string(dir.join(format!("{n}.rs"))).unwrap();
        assert!(
            src.contains(&format!("testing::{n}_oracle(")),
            "fuzz_targets/{n}.rs does not call testing::{n}_oracle"
        );
    }
}

/// Regenerates `fuzz/seeds/` (run explicitly with `--ignored`).
#[test]
#[ignore]
fn write_seeds() {
    for (target, name, data) in testing::seed_corpus() {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    }
}

/// Prints how each committed `conn_ops` input ends (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn print_conn_ops_summaries() {
    for kind in ["seeds", "regressions"] {
        let dir = fuzz_dir().join(kind).join("conn_ops");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let r = testing::conn_ops_run(&fs::read(&f).unwrap());
            println!("{kind}/{}: {r:?}", f.file_name().unwrap().to_string_lossy());
        }
    }
}

/// Decodes and runs one `conn_ops` input (`FUZZ_INPUT=file`), or summarises
/// a corpus directory (`FUZZ_INPUT=dir`): run with `--ignored --nocapture`.
#[test]
#[ignore]
fn conn_ops_debug() {
    let Ok(p) = std::env::var("FUZZ_INPUT") else {
        return;
    };
    let p = PathBuf::from(p);
    if p.is_dir() {
        let mut hist: BTreeMap<String, usize> = BTreeMap::new();
        for e in fs::read_dir(&p).unwrap() {
            let r = testing::conn_ops_run(&fs::read(e.unwrap().path()).unwrap());
            *hist
                .entry(format!("started={} closed={:?}", r.started, r.closed))
                .or_default() += 1;
        }
        for (k, n) in hist {
            println!("{n:6} {k}");
        }
        return;
    }
    let d = fs::read(&p).unwrap();
    let (sel, ops) = testing::decode_conn_ops(&d);
    println!("config {sel}");
    for o in &ops {
        match o {
            testing::ConnOp::ClientBytes(b) => {
                println!("ClientBytes {:?}", String::from_utf8_lossy(b))
            }
            testing::ConnOp::ServerBytes(b) => {
                println!("ServerBytes {:?}", String::from_utf8_lossy(b))
            }
            o => println!("{o:?}"),
        }
    }
    println!("{:?}", testing::conn_ops_run(&d));
}
