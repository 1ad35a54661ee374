//! What the streaming redactor costs per byte, on the Zendesk-like ticket list `bench/run.sh`
//! serves with `BODY_SHAPE=list` (short strings, many keys: the worst shape for it), with fields
//! that match (`**.email`), that match nothing (`**.zzz`), a rooted path
//! (`tickets[].requester.email`), and with each ticket judged against a record scope. The end-to-end figure is `bench/run.sh`'s A/B; this one shows
//! where a change to the scanner moves it.
//!
//!     cargo bench -p vendorgate --bench redact
//!
//! On a shared machine the times wander; instructions do not. `REDACT_PASSES=N` runs one case
//! N times with no timing, for `perf stat -e instructions:u` (the case: `REDACT_CASE`, a name
//! below, and `REDACT_SIZE`, `2k` or `1m`):
//!
//!     REDACT_PASSES=200 REDACT_CASE=any_depth_3 REDACT_SIZE=1m perf stat -e instructions:u \
//!         target/release/deps/redact-<hash> --bench

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vendorgate::redact::Redactor;
use vendorgate_policy::fields::{RedactMode, Redaction};
use vendorgate_policy::scope::RecordScope;

/// A ticket list of about `size` bytes, as `bench/run.sh` writes it.
fn list(size: usize) -> Vec<u8> {
    let mut out = String::from("{\"tickets\": [");
    let mut i = 0;
    loop {
        i += 1;
        let r = format!(
            "{{\"id\": {i}, \"subject\": \"Where is my order?\", \"status\": \"open\", \"priority\": \"normal\", \
             \"description\": \"Hello, I placed order #{} and need help with the delivery.\", \
             \"requester\": {{\"id\": {}, \"name\": \"Ana Martin\", \"email\": \"ana{i}@example.com\", \
             \"phone\": \"+33 6 12 34 56 78\"}}, \"group_id\": 360004, \"tags\": [\"marketplace\", \"delivery\"], \
             \"via\": {{\"channel\": \"email\"}}}}",
            100000 + i,
            10000 + i
        );
        if out.len() + r.len() + 20 > size {
            break;
        }
        if i > 1 {
            out.push_str(", ");
        }
        out.push_str(&r);
    }
    out.push_str("], \"pad\": \"");
    while out.len() + 2 < size {
        out.push('x');
    }
    out.push_str("\"}");
    out.into_bytes()
}

fn fields(paths: &[&str], mode: RedactMode) -> Arc<[Redaction]> {
    paths
        .iter()
        .map(|p| Redaction::new(p.parse().expect("a path"), mode))
        .collect()
}

/// One pass over `body`; `scoped`: also judging each ticket against a scope.
fn pass(fields: &Arc<[Redaction]>, scoped: bool, body: &[u8]) -> BytesMut {
    let mut r = Redactor::new(fields.clone());
    if scoped {
        r = r.scoping(Arc::new(RecordScope {
            group_id: vec![360004, 360005],
            ..RecordScope::default()
        }));
    }
    let mut out = BytesMut::with_capacity(body.len());
    for chunk in body.chunks(16 * 1024) {
        r.push(chunk, &mut out).expect("JSON");
    }
    r.finish(&mut out).expect("whole");
    out
}

type Case = (&'static str, &'static [&'static str], RedactMode, bool);

const CASES: [Case; 6] = [
    (
        "any_depth_3",
        &["**.email", "**.phone", "**.name"],
        RedactMode::Replace,
        false,
    ),
    ("any_depth_none", &["**.zzz"], RedactMode::Replace, false),
    (
        "rooted",
        &["tickets[].requester.email"],
        RedactMode::Replace,
        false,
    ),
    (
        "remove_3",
        &["**.email", "**.phone", "**.name"],
        RedactMode::Remove,
        false,
    ),
    ("scoped", &[], RedactMode::Replace, true),
    (
        "scoped_any_depth_3",
        &["**.email", "**.phone", "**.name"],
        RedactMode::Replace,
        true,
    ),
];

fn redact(c: &mut Criterion) {
    if let Ok(passes) = std::env::var("REDACT_PASSES") {
        let passes: usize = passes.parse().expect("REDACT_PASSES is a number");
        let case = std::env::var("REDACT_CASE").unwrap_or_else(|_| "any_depth_3".into());
        let size = match std::env::var("REDACT_SIZE").as_deref() {
            Ok("2k") => 2048,
            _ => 1 << 20,
        };
        let (_, paths, mode, scoped) = CASES.iter().find(|c| c.0 == case).expect("a case");
        let (f, body) = (fields(paths, *mode), list(size));
        for _ in 0..passes {
            black_box(pass(&f, *scoped, &body));
        }
        return;
    }
    for size in [2048usize, 1 << 20] {
        let body = list(size);
        let mut g = c.benchmark_group(format!("redact_{}", if size < 4096 { "2k" } else { "1m" }));
        g.throughput(Throughput::Bytes(body.len() as u64));
        for (name, paths, mode, scoped) in CASES {
            let f = fields(paths, mode);
            g.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
                b.iter(|| black_box(pass(&f, scoped, body)))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, redact);
criterion_main!(benches);
