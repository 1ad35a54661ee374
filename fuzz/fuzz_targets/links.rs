//! Any body, cut into chunks anywhere: the link rewriter's output is the same as for the body whole
//! (a link split across chunks is still rewritten, nothing is lost or doubled).
#![no_main]
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use vendorgate::links::{Links, Public};

fn rewrite(links: &Arc<Links>, public: &Public, chunks: &[&[u8]]) -> Vec<u8> {
    let mut r = links.rewriter(public);
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&r.push(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&r.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, body)) = data.split_first() else {
        return;
    };
    let links = Arc::new(Links::new(["https://acme.zendesk.com", "https://acme.zendesk.com:443"]));
    let public = Public::new("https://127.0.0.1:8443");
    let whole = rewrite(&links, &public, &[body]);
    // Cut every `step` bytes (1 to 16).
    let step = usize::from(cuts % 16) + 1;
    let pieces: Vec<&[u8]> = body.chunks(step).collect();
    assert_eq!(rewrite(&links, &public, &pieces), whole);
});
