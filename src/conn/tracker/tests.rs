//! Tracker rules, one conversation each, plus split invariance and a
//! randomized model check.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use super::*;

fn m(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}
fn q(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    m(b'Q', &b)
}
fn z(s: u8) -> Vec<u8> {
    m(b'Z', &[s])
}
fn cc(t: &str) -> Vec<u8> {
    let mut b = t.as_bytes().to_vec();
    b.push(0);
    m(b'C', &b)
}
fn parse() -> Vec<u8> {
    m(b'P', b"\0SELECT 1\0\0\0")
}
fn bind() -> Vec<u8> {
    m(b'B', &[0, 0, 0, 0, 0, 0, 0, 0])
}
fn exec() -> Vec<u8> {
    m(b'E', &[0, 0, 0, 0, 0])
}
fn sync() -> Vec<u8> {
    m(b'S', &[])
}
fn err() -> Vec<u8> {
    m(b'E', b"SERROR\0C42601\0Mboom\0\0")
}
fn notice() -> Vec<u8> {
    m(b'N', b"SNOTICE\0C00000\0Mhi\0\0")
}
fn copy_in() -> Vec<u8> {
    m(b'G', &[0, 0, 1, 0, 0])
}
fn data(d: &[u8]) -> Vec<u8> {
    m(b'd', d)
}
fn terminate() -> Vec<u8> {
    m(b'X', &[])
}

fn client(t: &mut ServerTracker, b: &[u8]) -> Option<isize> {
    t.client_bytes(b).expect("valid client bytes")
}
fn server(t: &mut ServerTracker, b: &[u8]) {
    t.server_bytes(b).expect("valid server bytes")
}

#[test]
fn simple_query_round_trip() {
    let mut t = ServerTracker::new();
    assert!(t.is_idle());
    client(&mut t, &q("SELECT 1"));
    assert_eq!(t.outstanding(), 1);
    assert!(!t.is_idle());
    assert_eq!(t.release_step(), Release::Drain);
    let resp = [
        m(b'T', &[0, 0]),
        m(b'D', &[0, 0]),
        cc("SELECT 1"),
        notice(),
        z(b'I'),
    ]
    .concat();
    server(&mut t, &resp);
    assert!(t.is_idle());
    assert_eq!(t.release_step(), Release::Reset);
}

#[test]
fn every_split_of_a_conversation_gives_the_same_state() {
    let c = [q("BEGIN"), parse(), bind(), exec(), sync(), q("x")].concat();
    let s = [
        cc("BEGIN"),
        z(b'T'),
        m(b'1', &[]),
        m(b'2', &[]),
        cc("SELECT 1"),
        z(b'T'),
    ]
    .concat();
    for cut in 0..=c.len() {
        let mut t = ServerTracker::new();
        client(&mut t, &c[..cut]);
        client(&mut t, &c[cut..]);
        assert_eq!(t.outstanding(), 3, "cut {cut}");
        for scut in 0..=s.len() {
            let mut u = t.clone();
            server(&mut u, &s[..scut]);
            server(&mut u, &s[scut..]);
            assert_eq!(u.outstanding(), 1, "cut {cut}/{scut}");
            assert_eq!(u.tx_status(), b'T');
            assert!(!u.is_dirty());
        }
    }
    // Byte by byte.
    let mut t = ServerTracker::new();
    for b in &c {
        client(&mut t, std::slice::from_ref(b));
    }
    for b in &s {
        server(&mut t, std::slice::from_ref(b));
    }
    assert_eq!(t.outstanding(), 1);
}

#[test]
fn pipelined_extended_and_error_before_sync() {
    let mut t = ServerTracker::new();
    client(&mut t, &[parse(), bind(), exec()].concat());
    assert_eq!(t.release_step(), Release::SendSync, "open cycle");
    client(&mut t, &[sync(), parse(), bind(), exec(), sync()].concat());
    assert_eq!(t.outstanding(), 2);
    // First cycle fails at Parse: error, then discard until Sync → one Z.
    server(&mut t, &[err(), z(b'I')].concat());
    assert_eq!(t.outstanding(), 1);
    server(
        &mut t,
        &[m(b'1', &[]), m(b'2', &[]), cc("SELECT 1"), z(b'I')].concat(),
    );
    assert!(t.is_idle());
}

#[test]
fn proxy_sync_closes_an_abandoned_cycle() {
    let mut t = ServerTracker::new();
    client(&mut t, &[parse(), bind(), exec()].concat());
    server(&mut t, &err());
    assert_eq!(t.release_step(), Release::SendSync);
    t.sent_by_proxy(&sync()).unwrap();
    assert_eq!(t.release_step(), Release::Drain);
    server(&mut t, &z(b'I'));
    assert_eq!(t.release_step(), Release::Reset);
}

#[test]
fn query_inside_open_cycle_is_dirty() {
    let mut t = ServerTracker::new();
    client(&mut t, &[parse(), q("SELECT 1")].concat());
    assert!(t.is_dirty());
    assert!(matches!(t.release_step(), Release::Close(_)));
}

#[test]
fn copy_from_stdin_simple() {
    let mut t = ServerTracker::new();
    client(&mut t, &q("COPY t FROM STDIN"));
    server(&mut t, &copy_in());
    client(&mut t, &[data(b"1\n"), data(b"2\n"), m(b'c', &[])].concat());
    server(&mut t, &[cc("COPY 2"), z(b'I')].concat());
    assert!(t.is_idle());
}

#[test]
fn client_leaving_inside_copy_gets_copy_fail() {
    let mut t = ServerTracker::new();
    client(&mut t, &q("COPY t FROM STDIN"));
    server(&mut t, &copy_in());
    client(&mut t, &data(b"1\n"));
    assert_eq!(t.release_step(), Release::SendCopyFail);
    let mut f = Vec::new();
    crate::protocol::encode::copy_fail(&mut f, b"gone").unwrap();
    t.sent_by_proxy(&f).unwrap();
    assert_eq!(t.release_step(), Release::Drain);
    server(&mut t, &[err(), z(b'I')].concat());
    assert_eq!(t.release_step(), Release::Reset);
}

#[test]
fn server_error_ends_copy_and_late_client_copy_messages_are_fine() {
    let mut t = ServerTracker::new();
    client(&mut t, &q("COPY t FROM STDIN"));
    server(&mut t, &copy_in());
    client(&mut t, &data(b"bad\n"));
    server(&mut t, &[err(), z(b'I')].concat());
    client(&mut t, &[data(b"late\n"), m(b'c', &[])].concat());
    assert!(t.is_idle(), "{t:?}");
}

#[test]
fn copy_in_extended_cycle_copy_both_and_stray_copy_are_dirty() {
    let mut t = ServerTracker::new();
    client(&mut t, &[parse(), bind(), exec(), sync()].concat());
    server(&mut t, &[m(b'1', &[]), m(b'2', &[]), copy_in()].concat());
    assert!(t.is_dirty());

    let mut t = ServerTracker::new();
    client(&mut t, &q("START_REPLICATION"));
    server(&mut t, &m(b'W', &[0, 0, 0]));
    assert!(t.is_dirty());

    let mut t = ServerTracker::new();
    client(&mut t, &data(b"x"));
    assert!(t.is_dirty());
}

#[test]
fn unsolicited_ready_for_query_is_dirty() {
    let mut t = ServerTracker::new();
    server(&mut t, &z(b'I'));
    assert!(t.is_dirty());
}

#[test]
fn transaction_status_drives_rollback() {
    let mut t = ServerTracker::new();
    client(&mut t, &q("BEGIN"));
    server(&mut t, &[cc("BEGIN"), z(b'T')].concat());
    assert_eq!(t.release_step(), Release::Rollback);
    client(&mut t, &q("SELEC"));
    server(&mut t, &[err(), z(b'E')].concat());
    assert_eq!(t.release_step(), Release::Rollback);
    assert!(!t.is_idle());
}

#[test]
fn client_mid_message_cannot_be_released() {
    let mut t = ServerTracker::new();
    let full = q("SELECT 1");
    client(&mut t, &full[..7]);
    assert!(matches!(t.release_step(), Release::Close(_)));
    // A partial header is held back, not forwarded; at EOF it is dropped
    // and the server, which never saw it, is at a boundary.
    let mut u = ServerTracker::new();
    client(&mut u, &full[..3]);
    assert_eq!(u.client_partial_header(), 3);
    u.abandon_partial_client_header();
    assert_eq!(u.release_step(), Release::Reset);
}

#[test]
fn terminate_is_found_even_split_across_reads() {
    let mut t = ServerTracker::new();
    let bytes = [q("SELECT 1"), terminate(), q("ignored")].concat();
    let at = client(&mut t, &bytes).expect("terminate");
    assert_eq!(at, q("SELECT 1").len() as isize);
    assert!(t.terminated());
    assert_eq!(
        t.outstanding(),
        1,
        "the query before it counts, the one after does not"
    );
    assert_eq!(client(&mut t, &q("more")), None);

    // Header split: 'X' at the end of one read, its length in the next.
    let mut t = ServerTracker::new();
    let first = [q("SELECT 1"), vec![b'X', 0]].concat();
    assert_eq!(client(&mut t, &first), None);
    assert_eq!(t.client_partial_header(), 2);
    assert_eq!(client(&mut t, &[0, 0, 4]), Some(-2));
}

#[test]
fn malformed_lengths_are_errors() {
    let mut t = ServerTracker::new();
    assert!(t.client_bytes(&[b'Q', 0, 0, 0, 2]).is_err());
    let mut t = ServerTracker::new();
    assert!(t.server_bytes(&[b'Z', 0, 0, 0, 9]).is_err());
    let mut t = ServerTracker::new();
    assert!(
        t.client_bytes(&[b'R', 0, 0, 0, 4]).is_err(),
        "not a client tag"
    );
}

#[test]
fn backpressure_at_the_run_cap() {
    let mut t = ServerTracker::new();
    let mut batch = Vec::new();
    for _ in 0..MAX_RUNS / 2 {
        batch.extend(q("a"));
        batch.extend(parse());
        batch.extend(sync());
    }
    client(&mut t, &batch);
    assert!(t.backpressure());
    assert!(!t.is_dirty());
    assert_eq!(t.outstanding(), MAX_RUNS as u32);
}

/// Random conversations: the client sends requests (simple, extended
/// cycles, FunctionCall), the modelled server answers each with its
/// messages and one Z; random chunking on both sides. The tracker's counts
/// must equal the model's after every chunk, and the end must be idle.
#[test]
fn randomized_model() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _round in 0..300 {
        let mut t = ServerTracker::new();
        let mut c_stream = Vec::new();
        let mut s_stream = Vec::new();
        let mut reqs = 0u32;
        for _ in 0..(1 + rnd(12)) {
            match rnd(3) {
                0 => {
                    c_stream.extend(q("SELECT 1"));
                    s_stream.extend([m(b'T', &[0, 0]), cc("SELECT 1"), z(b'I')].concat());
                }
                1 => {
                    c_stream.extend([parse(), bind(), exec(), sync()].concat());
                    if rnd(2) == 0 {
                        s_stream.extend([err(), z(b'I')].concat());
                    } else {
                        s_stream
                            .extend([m(b'1', &[]), m(b'2', &[]), cc("SELECT 1"), z(b'I')].concat());
                    }
                }
                _ => {
                    c_stream.extend(m(b'F', &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]));
                    s_stream.extend([m(b'V', &[255, 255, 255, 255]), notice(), z(b'I')].concat());
                }
            }
            reqs += 1;
        }
        // Client all first (pipelined), in random chunks.
        let mut i = 0;
        while i < c_stream.len() {
            let n = 1 + rnd(17) as usize;
            let j = (i + n).min(c_stream.len());
            client(&mut t, &c_stream[i..j]);
            i = j;
        }
        assert_eq!(t.outstanding(), reqs);
        let mut i = 0;
        while i < s_stream.len() {
            let n = 1 + rnd(23) as usize;
            let j = (i + n).min(s_stream.len());
            server(&mut t, &s_stream[i..j]);
            i = j;
            assert!(t.outstanding() <= reqs);
        }
        assert!(t.is_idle(), "{t:?}");
        assert_eq!(t.release_step(), Release::Reset);
    }
}

/// Every split point of `bytes` fed to the server side, one byte at a time
/// included: the result must not depend on how reads cut the stream.
fn server_split(bytes: &[u8], f: impl Fn(&ServerTracker) -> bool) -> bool {
    let whole = {
        let mut t = ServerTracker::new();
        t.server_bytes(bytes).unwrap();
        f(&t)
    };
    for cut in 0..bytes.len() {
        let mut t = ServerTracker::new();
        t.server_bytes(&bytes[..cut]).unwrap();
        t.server_bytes(&bytes[cut..]).unwrap();
        assert_eq!(f(&t), whole, "split at {cut}");
    }
    let mut t = ServerTracker::new();
    for b in bytes {
        t.server_bytes(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(f(&t), whole, "byte by byte");
    whole
}

#[test]
fn command_tags_that_change_session_state_are_seen() {
    let changed = |tag: &str| {
        let mut s = cc("SELECT 1");
        s.extend(cc(tag));
        s.extend(z(b'I'));
        (
            server_split(&s, ServerTracker::session_state_changed),
            server_split(&s, ServerTracker::statements_dropped),
        )
    };
    assert_eq!(changed("SET"), (true, false));
    assert_eq!(changed("RESET"), (true, false));
    assert_eq!(changed("DISCARD ALL"), (true, true));
    assert_eq!(changed("DEALLOCATE"), (true, true));
    assert_eq!(changed("DEALLOCATE ALL"), (true, true));
    // Words that merely start the same, and ordinary commands, do not count.
    assert_eq!(changed("SETX"), (false, false));
    assert_eq!(changed("SELECT 5"), (false, false));
    assert_eq!(changed("INSERT 0 1"), (false, false));
    assert_eq!(changed("RESETTABLE"), (false, false));
    // A long tag: only its first 12 bytes are read.
    assert_eq!(changed("CREATE MATERIALIZED VIEW"), (false, false));
    let objects = |tag: &str| {
        let mut s = cc(tag);
        s.extend(z(b'I'));
        server_split(&s, ServerTracker::session_objects)
    };
    for tag in ["LISTEN", "PREPARE", "DECLARE CURSOR", "CREATE TABLE"] {
        assert!(objects(tag), "{tag}");
    }
    for tag in [
        "SELECT 1",
        "CREATE INDEX",
        "LISTENING",
        "INSERT 0 1",
        "COMMIT",
    ] {
        assert!(!objects(tag), "{tag}");
    }
}

#[test]
fn named_parse_refused_only_when_asked() {
    let named = m(b'P', b"s1\0SELECT 1\0\0\0");
    let mut plain = ServerTracker::new();
    assert!(plain.client_bytes(&named).is_ok(), "session mode allows it");
    for cut in 0..named.len() {
        let mut t = ServerTracker::refusing_named_statements();
        let a = t.client_bytes(&named[..cut]);
        let r = a.and_then(|_| t.client_bytes(&named[cut..]));
        assert!(
            matches!(r, Err(ProtoError::Unsupported(_))),
            "split at {cut}: {r:?}"
        );
    }
    // The unnamed statement passes, split anywhere.
    let unnamed = parse();
    for cut in 0..unnamed.len() {
        let mut t = ServerTracker::refusing_named_statements();
        assert!(t.client_bytes(&unnamed[..cut]).is_ok());
        assert!(t.client_bytes(&unnamed[cut..]).is_ok(), "split at {cut}");
    }
}
