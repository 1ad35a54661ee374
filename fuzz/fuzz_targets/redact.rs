//! Any body, cut into chunks anywhere, redacted both ways and scoped: the result is the same as for
//! the body whole (refused at the same byte, or the same bytes); and when the body is JSON, the
//! result is JSON in which no `email` keeps its value (replaced) or its key (removed), and no
//! record at `ticket`, `tickets[]`, `results[]` has a `group_id` other than 1.
#![no_main]
use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vendorgate::redact::{Cut, Redactor};
use vendorgate_policy::fields::{RedactMode as Mode, Redaction};
use vendorgate_policy::patterns::{Pattern, Patterns};
use vendorgate_policy::scope::{RecordFields, RecordScope};

fn redact(mode: Mode, scoped: bool, chunks: &[&[u8]]) -> Result<Vec<u8>, Cut> {
    let fields: Arc<[Redaction]> = Arc::from(vec![
        Redaction::new("**.email".parse().unwrap(), mode),
        // Free text scanned for patterns, in whatever `text` fields the input has.
        Redaction {
            path: "**.text".parse().unwrap(),
            mode: Mode::Scrub,
            patterns: Patterns::default().with(Pattern::Phone).with(Pattern::Iban),
        },
    ]);
    let mut r = Redactor::new(fields);
    if scoped {
        r = r.scoping(Arc::new(RecordScope {
            group_id: vec![1],
            ..RecordScope::default()
        }));
    }
    let mut out = BytesMut::new();
    for c in chunks {
        r.push(c, &mut out)?;
    }
    r.finish(&mut out)?;
    Ok(out.to_vec())
}

/// No `email` member keeps anything but the placeholder (replacing), or at all (removing).
fn clean(v: &serde_json::Value, mode: Mode) -> bool {
    match v {
        serde_json::Value::Object(map) => map.iter().all(|(k, v)| {
            if k == "email" {
                mode == Mode::Replace && v == "[redacted]"
            } else if k == "text" {
                // What the patterns left has no phone number in it any more.
                v.as_str().is_none_or(|t| {
                    let raw = serde_json::to_string(t).unwrap_or_default();
                    vendorgate_policy::patterns::scrub(
                        &raw.as_bytes()[1..raw.len() - 1],
                        Patterns::default().with(Pattern::Phone),
                    )
                    .is_none()
                })
            } else {
                clean(v, mode)
            }
        }),
        serde_json::Value::Array(items) => items.iter().all(|v| clean(v, mode)),
        _ => true,
    }
}

/// Every record left at the root's `ticket`, `tickets`, `results` is in group 1.
fn scoped_clean(v: &serde_json::Value) -> bool {
    let inside = |r: &serde_json::Value| r.get("group_id") == Some(&1.into());
    let Some(root) = v.as_object() else {
        return true;
    };
    root.iter().all(|(k, v)| match (k.as_str(), v) {
        ("ticket", serde_json::Value::Object(_)) => inside(v),
        ("tickets" | "results", serde_json::Value::Array(items)) => {
            items.iter().all(|r| !r.is_object() || inside(r))
        }
        _ => true,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(cuts % 16) + 1;
    let pieces: Vec<&[u8]> = body.chunks(step).collect();
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    // The scope's quick reader of a record's fields reads any JSON as serde does.
    if parsed.is_some() {
        assert_eq!(
            format!("{:?}", RecordFields::read(body)),
            format!("{:?}", serde_json::from_slice::<RecordFields>(body).ok())
        );
    }
    for mode in [Mode::Replace, Mode::Remove] {
        for scoped in [false, true] {
            let whole = redact(mode, scoped, &[body]);
            assert_eq!(redact(mode, scoped, &pieces), whole);
            // Keys written with escapes are compared as spelled (see the module): leave those
            // aside.
            if let (Some(_), false) = (&parsed, body.contains(&b'\\')) {
                let out = whole.expect("JSON refused");
                let v: serde_json::Value =
                    serde_json::from_slice(&out).expect("redacted JSON is not JSON");
                assert!(clean(&v, mode));
                assert!(!scoped || scoped_clean(&v));
            }
        }
    }
});
