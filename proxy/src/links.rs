//! The upstream's absolute links, rewritten to the proxy's own origin as JSON bodies stream.
//!
//! Zendesk answers with links on its own host: `next_page`, `links.next`, `after_url`, every
//! record's `url`. A client that follows them verbatim (zenpy) would go straight to the SaaS with
//! the agent's token, unauthorized, unmetered and unrecorded; one that expects its own base URL
//! (node-zendesk) would build a broken path. So every occurrence of an upstream origin in a JSON
//! body becomes the proxy's public origin, also in the `\/`-escaped form some JSON writers use.
//!
//! Streaming: each chunk is searched as it passes. What the next chunk could complete (a match
//! split across chunks, or a match whose following byte decides whether it is one) is held back,
//! at most one pattern's length; the rest goes on at once, as a slice of the chunk when nothing in
//! it matched (no copy).

use std::cell::RefCell;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// The origin links are moved to, plain and `\/`-escaped, made once per origin.
#[derive(Debug, Clone)]
pub struct Public {
    plain: Bytes,
    escaped: Bytes,
}

impl Public {
    pub fn new(origin: &str) -> Self {
        Public {
            plain: Bytes::copy_from_slice(origin.as_bytes()),
            escaped: Bytes::from(origin.replace('/', "\\/")),
        }
    }

    /// The origin a request was sent to: `https://` and its `Host` (or `:authority`), if that is a
    /// plain authority. Kept per thread for the last name seen: an agent's requests all name the
    /// same, and making it is three allocations a request otherwise.
    pub fn for_host(host: &http::HeaderValue) -> Option<Public> {
        thread_local!(static LAST: RefCell<Option<(http::HeaderValue, Public)>> = const { RefCell::new(None) });
        LAST.with(|last| {
            if let Some((seen, public)) = &*last.borrow() {
                if seen == host {
                    return Some(public.clone());
                }
            }
            let authority: http::uri::Authority = host.to_str().ok()?.parse().ok()?;
            if authority.as_str().contains('@') {
                return None;
            }
            let public = Public::new(&format!("https://{authority}"));
            *last.borrow_mut() = Some((host.clone(), public.clone()));
            Some(public)
        })
    }

    pub fn as_str(&self) -> &str {
        // Made from a `&str`.
        std::str::from_utf8(&self.plain).unwrap_or_default()
    }
}

/// What to look for and what to put instead: the upstream origins, plain and `\/`-escaped.
#[derive(Debug, Clone)]
pub struct Links {
    /// `(pattern, escaped)`: the escaped ones are replaced by the escaped public origin.
    patterns: Vec<(Box<[u8]>, bool)>,
    /// Every pattern starts with "http": candidates are where that is.
    http: memmem::Finder<'static>,
}

impl Links {
    /// The patterns for the upstream's origins (`https://acme.zendesk.com`, …).
    pub fn new<'a>(origins: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<(Box<[u8]>, bool)> = Vec::new();
        for origin in origins {
            patterns.push((origin.as_bytes().into(), false));
            patterns.push((origin.replace('/', "\\/").into_bytes().into(), true));
        }
        Links {
            patterns,
            http: memmem::Finder::new(b"http"),
        }
    }

    /// A rewriter for one body, to `public` (`https://zendesk-gw.acme.example`).
    pub fn rewriter(self: &Arc<Self>, public: &Public) -> Rewriter {
        Rewriter {
            links: self.clone(),
            public: public.clone(),
            held: Bytes::new(),
        }
    }

    /// Whether a rewrite can change a body's length (so a `Content-Length` no longer holds).
    pub fn changes_length(&self, public: &Public) -> bool {
        self.patterns.iter().any(|(p, escaped)| {
            p.len()
                != if *escaped {
                    public.escaped.len()
                } else {
                    public.plain.len()
                }
        })
    }
}

/// Rewrites one body, chunk by chunk.
pub struct Rewriter {
    links: Arc<Links>,
    public: Public,
    /// The end of the previous chunk, held back because the next one may complete a match.
    held: Bytes,
}

/// A byte that continues a host name or port: a match followed by one is a different origin
/// (`https://acme.zendesk.com.evil.example`, `https://127.0.0.1:84431`).
fn continues_origin(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':'
}

enum Found {
    /// A whole match at `at` of pattern `index`.
    Match { at: usize, index: usize },
    /// Something at `at` that the next chunk may turn into a match.
    Partial { at: usize },
}

impl Rewriter {
    /// The rewritten bytes of `chunk` that can go out now.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        let buf = if self.held.is_empty() {
            chunk
        } else {
            let mut joined = BytesMut::with_capacity(self.held.len() + chunk.len());
            joined.extend_from_slice(&self.held);
            joined.extend_from_slice(&chunk);
            joined.freeze()
        };
        self.held = Bytes::new();
        self.rewrite(buf, false)
    }

    /// Whether bytes are held back for the next chunk.
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// What was held back, at the end of the body.
    pub fn finish(&mut self) -> Bytes {
        let held = std::mem::take(&mut self.held);
        self.rewrite(held, true)
    }

    fn rewrite(&mut self, buf: Bytes, last: bool) -> Bytes {
        let mut out: Option<BytesMut> = None;
        let mut pos = 0;
        while let Some(found) = self.next(&buf, pos, last) {
            match found {
                Found::Match { at, index } => {
                    let (pattern, escaped) = &self.links.patterns[index];
                    let o = out.get_or_insert_with(|| BytesMut::with_capacity(buf.len() + 64));
                    o.extend_from_slice(&buf[pos..at]);
                    o.extend_from_slice(if *escaped {
                        &self.public.escaped
                    } else {
                        &self.public.plain
                    });
                    pos = at + pattern.len();
                }
                Found::Partial { at } => {
                    self.held = buf.slice(at..);
                    return emit(out, &buf, pos, at);
                }
            }
        }
        emit(out, &buf, pos, buf.len())
    }

    /// The first match or partial match at or after `from`.
    fn next(&self, buf: &[u8], from: usize, last: bool) -> Option<Found> {
        let mut search = from;
        loop {
            // Candidates are where "http" (or its start, at the very end) is.
            let at = match self.links.http.find(&buf[search..]) {
                Some(i) => search + i,
                None => {
                    // "h", "ht" or "htt" at the end may still become one.
                    let tail = buf.len().saturating_sub(3).max(search);
                    let at = (tail..buf.len()).find(|&i| b"http".starts_with(&buf[i..]))?;
                    return (!last).then_some(Found::Partial { at });
                }
            };
            let rest = &buf[at..];
            for (index, (pattern, _)) in self.links.patterns.iter().enumerate() {
                if rest.len() < pattern.len() {
                    if !last && pattern.starts_with(rest) {
                        return Some(Found::Partial { at });
                    }
                    continue;
                }
                if rest.starts_with(pattern) {
                    match rest.get(pattern.len()) {
                        Some(&b) if continues_origin(b) => {}
                        Some(_) => return Some(Found::Match { at, index }),
                        None if last => return Some(Found::Match { at, index }),
                        // The byte after decides, and it is in the next chunk.
                        None => return Some(Found::Partial { at }),
                    }
                }
            }
            search = at + 1;
            if search >= buf.len() {
                return None;
            }
        }
    }
}

/// `buf[pos..end]` after what `out` holds: a slice of `buf` when nothing was rewritten.
fn emit(out: Option<BytesMut>, buf: &Bytes, pos: usize, end: usize) -> Bytes {
    match out {
        None => buf.slice(pos..end),
        Some(mut o) => {
            o.extend_from_slice(&buf[pos..end]);
            o.freeze()
        }
    }
}

impl Links {
    /// A `Location` (or any absolute URL) on an upstream origin, moved to `public`; `None` when it
    /// points elsewhere.
    pub fn rewrite_url(&self, url: &str, public: &str) -> Option<String> {
        let origin = self.origin_of(url)?;
        Some(format!("{public}{}", &url[origin..]))
    }

    /// The length of the upstream origin `url` starts with, if it is on one.
    fn origin_of(&self, url: &str) -> Option<usize> {
        self.patterns
            .iter()
            .filter(|(_, escaped)| !escaped)
            .find_map(|(origin, _)| {
                let rest = url.as_bytes().strip_prefix(&origin[..])?;
                matches!(rest.first(), None | Some(b'/' | b'?' | b'#')).then_some(origin.len())
            })
    }

    /// Whether `url` is on one of the upstream's origins.
    pub fn on_upstream(&self, url: &str) -> bool {
        self.origin_of(url).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &str = "https://acme.zendesk.com";
    const PUBLIC: &str = "https://gw.example:8443";

    fn rewriter() -> Rewriter {
        Arc::new(Links::new([UP])).rewriter(&Public::new(PUBLIC))
    }

    fn whole(input: &str) -> String {
        let mut r = rewriter();
        let mut out = r.push(Bytes::copy_from_slice(input.as_bytes())).to_vec();
        out.extend_from_slice(&r.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn links_are_rewritten_and_look_alikes_are_not() {
        let body = r#"{"url":"https://acme.zendesk.com/api/v2/tickets/1.json","next_page":"https:\/\/acme.zendesk.com\/api\/v2\/tickets.json?page=2","x":"https://acme.zendesk.com.evil.example/","y":"https://acme.zendesk.community","z":"https://acme.zendesk.com"}"#;
        assert_eq!(
            whole(body),
            r#"{"url":"https://gw.example:8443/api/v2/tickets/1.json","next_page":"https:\/\/gw.example:8443\/api\/v2\/tickets.json?page=2","x":"https://acme.zendesk.com.evil.example/","y":"https://acme.zendesk.community","z":"https://gw.example:8443"}"#
        );
        assert_eq!(
            whole("no links here, just http and htt"),
            "no links here, just http and htt"
        );
    }

    #[test]
    fn a_match_split_anywhere_across_chunks_is_found() {
        let body =
            r#"{"next_page":"https://acme.zendesk.com/api/v2/x","url":"https://acme.zendesk.com"}"#;
        let expected = whole(body);
        assert!(expected.contains(PUBLIC));
        for cut in 0..=body.len() {
            for cut2 in cut..=body.len() {
                let mut r = rewriter();
                let mut out = Vec::new();
                for part in [&body[..cut], &body[cut..cut2], &body[cut2..]] {
                    out.extend_from_slice(&r.push(Bytes::copy_from_slice(part.as_bytes())));
                }
                out.extend_from_slice(&r.finish());
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    expected,
                    "cut at {cut}, {cut2}"
                );
            }
        }
    }

    #[test]
    fn chunks_without_links_go_out_uncopied_and_whole() {
        let mut r = rewriter();
        let chunk = Bytes::from_static(b"{\"subject\":\"printer on fire\"}");
        let out = r.push(chunk.clone());
        assert_eq!(out, chunk);
        assert_eq!(
            out.as_ptr(),
            chunk.as_ptr(),
            "a slice of the chunk, not a copy"
        );
        assert!(r.finish().is_empty());
    }

    #[test]
    fn locations_on_the_upstream_move_and_others_stay() {
        let links = Links::new([UP, "https://acme.example"]);
        let moved = |u: &str| links.rewrite_url(u, PUBLIC);
        assert_eq!(
            moved("https://acme.zendesk.com/api/v2/tickets/7.json").as_deref(),
            Some("https://gw.example:8443/api/v2/tickets/7.json")
        );
        assert_eq!(
            moved("https://acme.example?x=1").as_deref(),
            Some("https://gw.example:8443?x=1")
        );
        assert_eq!(moved("https://acme.zendesk.com.evil.example/"), None);
        assert_eq!(moved("https://files.zdusercontent.com/a"), None);
    }

    #[test]
    fn a_requests_origin_is_its_host_when_that_is_a_plain_authority() {
        let host = |h: &'static str| Public::for_host(&http::HeaderValue::from_static(h));
        assert_eq!(
            host("gw.example:8443").unwrap().as_str(),
            "https://gw.example:8443"
        );
        assert_eq!(
            host("gw.example:8443").unwrap().as_str(),
            "https://gw.example:8443"
        );
        assert_eq!(host("[::1]:9").unwrap().as_str(), "https://[::1]:9");
        assert!(host("user@evil.example").is_none());
        assert!(host("a b").is_none());
        assert_eq!(
            host("other.example").unwrap().as_str(),
            "https://other.example"
        );
    }

    #[test]
    fn lengths_change_unless_the_origins_are_as_long() {
        let links = Links::new([UP]);
        assert!(links.changes_length(&Public::new(PUBLIC)));
        assert!(!links.changes_length(&Public::new("https://acme.zendesk.xyz")));
    }
}
