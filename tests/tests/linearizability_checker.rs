//! The linearizability checker itself, on histories whose answer is known:
//! it accepts linearizable ones (including unknown outcomes and generated
//! histories of a real atomic register) and rejects the classic violations:
//! stale read, lost write, non-monotonic reads, double compare-and-set, a read
//! of a value nobody wrote, a read of a write we were told failed.

use raftkv_tests::fault::checker::{check_history, linearizable, minimize, DEFAULT_BUDGET};
use raftkv_tests::fault::history::{Outcome, RegisterEntry, RegisterOp, RegisterRet, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const W: fn(Value) -> RegisterOp = RegisterOp::Write;
const R: RegisterOp = RegisterOp::Read;

fn cas(expect: Value, new: Value) -> RegisterOp {
    RegisterOp::Cas { expect, new }
}

fn op(
    client: usize,
    op: RegisterOp,
    invoke: u64,
    complete: u64,
    ret: RegisterRet,
) -> RegisterEntry {
    RegisterEntry::new(client, op, invoke, complete, Outcome::Ok(ret))
}

fn write(client: usize, v: Value, invoke: u64, complete: u64) -> RegisterEntry {
    op(client, W(v), invoke, complete, RegisterRet::Written)
}

fn read(client: usize, seen: Option<Value>, invoke: u64, complete: u64) -> RegisterEntry {
    op(client, R, invoke, complete, RegisterRet::Read(seen))
}

fn unknown(client: usize, o: RegisterOp, invoke: u64) -> RegisterEntry {
    RegisterEntry::new(client, o, invoke, invoke + 5_000_000, Outcome::Unknown)
}

fn is_linearizable(h: &[RegisterEntry]) -> bool {
    linearizable(h, DEFAULT_BUDGET).expect("search finished within its budget")
}

#[test]
fn accepts_sequential_history() {
    let h = [
        read(0, None, 0, 5),
        write(0, 1, 10, 20),
        read(1, Some(1), 30, 40),
        write(1, 2, 50, 60),
        read(0, Some(2), 70, 80),
    ];
    assert!(is_linearizable(&h));
}

#[test]
fn accepts_concurrent_read_seeing_old_or_new_value() {
    let h = [
        write(0, 1, 0, 10),
        write(0, 2, 20, 100),
        read(1, Some(1), 25, 30),
        read(2, Some(2), 26, 31),
        read(3, Some(2), 110, 120),
    ];
    assert!(is_linearizable(&h));
}

#[test]
fn accepts_unknown_writes_seen_or_not() {
    // Applied: a later read sees it.
    let seen = [unknown(0, W(1), 0), read(1, Some(1), 100, 110)];
    assert!(is_linearizable(&seen));
    // Not applied (or not yet): later reads see the old value.
    let unseen = [
        write(0, 1, 0, 10),
        unknown(0, W(2), 20),
        read(1, Some(1), 30, 40),
    ];
    assert!(is_linearizable(&unseen));
    // Applied late: first the old value, then the unknown write's.
    let late = [
        write(0, 1, 0, 10),
        unknown(0, W(2), 20),
        read(1, Some(1), 30, 40),
        read(1, Some(2), 50, 60),
    ];
    assert!(is_linearizable(&late));
}

#[test]
fn accepts_compare_and_set() {
    let h = [
        write(0, 1, 0, 10),
        op(1, cas(1, 2), 20, 30, RegisterRet::Cas(true)),
        op(2, cas(1, 3), 40, 50, RegisterRet::Cas(false)),
        read(0, Some(2), 60, 70),
        // Concurrent CASes expecting the same value: exactly one may win.
        op(1, cas(2, 4), 80, 100, RegisterRet::Cas(true)),
        op(2, cas(2, 5), 85, 95, RegisterRet::Cas(false)),
        read(0, Some(4), 110, 120),
        // A CAS on an unknown outcome that did take effect.
        RegisterEntry::new(3, cas(4, 6), 130, 140, Outcome::Unknown),
        read(0, Some(6), 150, 160),
    ];
    assert!(is_linearizable(&h));
}

#[test]
fn ignores_failed_operations() {
    let h = [
        write(0, 1, 0, 10),
        RegisterEntry::new(1, W(2), 20, 30, Outcome::Failed),
        read(0, Some(1), 40, 50),
    ];
    assert!(is_linearizable(&h));
}

#[test]
fn rejects_stale_read() {
    let h = [
        write(0, 1, 0, 10),
        write(0, 2, 20, 30),
        read(1, Some(1), 40, 50),
    ];
    assert!(!is_linearizable(&h));
}

#[test]
fn rejects_lost_write() {
    let h = [write(0, 1, 0, 10), read(1, None, 20, 30)];
    assert!(!is_linearizable(&h));
    let overwritten_then_lost = [
        write(0, 1, 0, 10),
        write(0, 2, 20, 30),
        read(1, Some(2), 40, 50),
        read(1, Some(1), 60, 70),
    ];
    assert!(!is_linearizable(&overwritten_then_lost));
}

#[test]
fn rejects_non_monotonic_reads() {
    // While w2 is in flight one reader sees it, a later read does not.
    let h = [
        write(0, 1, 0, 10),
        write(0, 2, 20, 100),
        read(1, Some(2), 30, 40),
        read(2, Some(1), 50, 60),
    ];
    assert!(!is_linearizable(&h));
}

#[test]
fn rejects_double_compare_and_set() {
    let h = [
        write(0, 1, 0, 10),
        op(1, cas(1, 2), 20, 30, RegisterRet::Cas(true)),
        op(2, cas(1, 3), 40, 50, RegisterRet::Cas(true)),
    ];
    assert!(!is_linearizable(&h));
    let concurrent = [
        write(0, 1, 0, 10),
        op(1, cas(1, 2), 20, 50, RegisterRet::Cas(true)),
        op(2, cas(1, 3), 21, 49, RegisterRet::Cas(true)),
    ];
    assert!(!is_linearizable(&concurrent));
    // A CAS that claims no swap although the value matched.
    let wrong_no = [
        write(0, 1, 0, 10),
        op(1, cas(1, 2), 20, 30, RegisterRet::Cas(false)),
    ];
    assert!(!is_linearizable(&wrong_no));
}

#[test]
fn rejects_invented_and_failed_values() {
    let invented = [write(0, 1, 0, 10), read(1, Some(99), 20, 30)];
    assert!(!is_linearizable(&invented));
    let failed_but_seen = [
        RegisterEntry::new(0, W(5), 0, 10, Outcome::Failed),
        read(1, Some(5), 20, 30),
    ];
    assert!(!is_linearizable(&failed_but_seen));
}

/// A history of `clients` clients against a real atomic register: each
/// operation takes effect at a random instant inside its interval, and its
/// answer is what the register gave at that instant. Some outcomes are then
/// forgotten (unknown), as timeouts would.
fn generated_history(
    seed: u64,
    clients: usize,
    ops_per_client: usize,
    unknown_in_20: u32,
) -> Vec<RegisterEntry> {
    let mut rng = StdRng::seed_from_u64(seed);
    // (linearization point, entry without its answer yet)
    let mut planned: Vec<(u64, RegisterEntry)> = Vec::new();
    let mut next_value: Value = 1;
    for client in 0..clients {
        let mut t = rng.random_range(0..50);
        for _ in 0..ops_per_client {
            let invoke = t;
            let complete = invoke + rng.random_range(1..200);
            let point = rng.random_range(invoke..=complete);
            let o = match rng.random_range(0..3) {
                0 => R,
                1 => {
                    next_value += 1;
                    W(next_value)
                }
                _ => {
                    next_value += 1;
                    cas(rng.random_range(1..next_value), next_value)
                }
            };
            planned.push((
                point,
                RegisterEntry::new(client, o, invoke, complete, Outcome::Unknown),
            ));
            t = complete + rng.random_range(1..30);
        }
    }
    planned.sort_by_key(|(point, _)| *point);
    let mut state: Option<Value> = None;
    let mut out = Vec::new();
    for (_, mut e) in planned {
        let ret = match e.op {
            RegisterOp::Read => RegisterRet::Read(state),
            RegisterOp::Write(v) => {
                state = Some(v);
                RegisterRet::Written
            }
            RegisterOp::Cas { expect, new } => {
                let swap = state == Some(expect);
                if swap {
                    state = Some(new);
                }
                RegisterRet::Cas(swap)
            }
        };
        e.outcome = if rng.random_range(0..20) < unknown_in_20 {
            Outcome::Unknown
        } else {
            Outcome::Ok(ret)
        };
        out.push(e);
    }
    out
}

#[test]
fn accepts_generated_histories_of_an_atomic_register() {
    for seed in 0..40 {
        let h = generated_history(seed, 5, 60, 1);
        assert!(is_linearizable(&h), "generated history {seed} rejected");
    }
}

#[test]
fn rejects_generated_histories_with_one_read_from_the_future() {
    // A read answering the value of a write invoked only after the read
    // returned: the search has to rule out every order to reject it.
    let mut rejected = 0;
    for seed in 0..40 {
        let mut h = generated_history(seed, 4, 40, 0);
        let Some((i, future)) = h.iter().enumerate().find_map(|(i, e)| {
            if !matches!(e.outcome, Outcome::Ok(RegisterRet::Read(_))) {
                return None;
            }
            h.iter().find_map(|w| match w.op {
                RegisterOp::Write(v) if w.invoke > e.complete => Some((i, v)),
                _ => None,
            })
        }) else {
            continue;
        };
        h[i].outcome = Outcome::Ok(RegisterRet::Read(Some(future)));
        assert!(!is_linearizable(&h), "corrupted history {seed} accepted");
        rejected += 1;
    }
    assert!(
        rejected > 30,
        "only {rejected} histories had a read to corrupt"
    );
}

#[test]
fn minimizes_a_violation_to_the_ops_that_cause_it() {
    // A stale read buried in a long linearizable history.
    let mut h = generated_history(7, 4, 50, 1);
    let end = h.iter().map(|e| e.complete).max().unwrap();
    h.push(write(9, 500, end + 10, end + 20));
    h.push(write(9, 501, end + 30, end + 40));
    h.push(read(8, Some(500), end + 50, end + 60));
    assert!(!is_linearizable(&h));
    let minimal = minimize(&h, DEFAULT_BUDGET, Duration::from_secs(60));
    assert!(!is_linearizable(&minimal));
    assert!(minimal.len() <= 3, "not minimal: {minimal:#?}");
    assert!(minimal.contains(&read(8, Some(500), end + 50, end + 60)));
}

#[test]
fn checks_each_key_on_its_own() {
    let mut a = vec![write(0, 1, 0, 10), read(1, Some(1), 20, 30)];
    let mut b = vec![
        write(0, 2, 0, 10),
        write(0, 3, 20, 30),
        read(1, Some(2), 40, 50),
    ];
    for e in &mut a {
        e.key = "a".to_string();
    }
    for e in &mut b {
        e.key = "b".to_string();
    }
    // Interleaved in time, but independent: only b is wrong.
    let all: Vec<RegisterEntry> = a.into_iter().chain(b).collect();
    let report = check_history(&all, DEFAULT_BUDGET, Duration::from_secs(10));
    let violations = report.violations();
    assert_eq!(violations.len(), 1, "{report:?}");
    assert_eq!(violations[0].0, "b");
    assert!(!report.is_linearizable());
}
