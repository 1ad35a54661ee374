//! Method + path pattern → route, without scanning every route.
//!
//! Patterns are `/`-separated segments: a literal (`tickets`), a parameter matching any one segment
//! (`{id}`), or `**` as the last segment matching the rest of the path (zero or more segments).
//! Patterns live in a segment trie; at each level a literal beats a parameter, which beats `**`, and
//! among rules on the same pattern the first one in the file whose methods fit wins. Matching costs
//! the path's depth, not the number of routes.

use std::collections::HashMap;

use http::Method;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("route path must start with '/'")]
    NotAbsolute,
    #[error("'**' may only be the last segment")]
    WildcardNotLast,
    #[error("segment {0:?} is neither a literal, a {{parameter}} nor '**'")]
    BadSegment(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Methods {
    Any,
    Only(Vec<Method>),
}

impl Methods {
    fn allows(&self, m: &Method) -> bool {
        match self {
            Methods::Any => true,
            Methods::Only(list) => list.iter().any(|x| x == m),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Node {
    literal: HashMap<String, Node>,
    param: Option<Box<Node>>,
    /// Rules whose pattern ends here.
    here: Vec<usize>,
    /// Rules whose pattern ends here with `**`.
    rest: Vec<usize>,
}

/// Route patterns compiled for lookup; values are indexes into the caller's rule list.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    root: Node,
    methods: Vec<Methods>,
}

enum Seg<'a> {
    Literal(&'a str),
    Param,
    Rest,
}

fn parse(pattern: &str) -> Result<Vec<Seg<'_>>, PatternError> {
    let Some(body) = pattern.strip_prefix('/') else {
        return Err(PatternError::NotAbsolute);
    };
    let parts: Vec<&str> = body.split('/').filter(|s| !s.is_empty()).collect();
    let last = parts.len().saturating_sub(1);
    parts
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if *s == "**" {
                return if i == last {
                    Ok(Seg::Rest)
                } else {
                    Err(PatternError::WildcardNotLast)
                };
            }
            if s.starts_with('{')
                && s.ends_with('}')
                && s.len() > 2
                && !s[1..s.len() - 1].contains(['{', '}'])
            {
                return Ok(Seg::Param);
            }
            if s.contains(['{', '}', '*', '%', '\\']) || *s == "." || *s == ".." {
                return Err(PatternError::BadSegment(s.to_string()));
            }
            Ok(Seg::Literal(s))
        })
        .collect()
}

/// Checks a pattern without adding it.
pub fn validate(pattern: &str) -> Result<(), PatternError> {
    parse(pattern).map(|_| ())
}

impl RouteTable {
    /// Adds rule number `self.len()`.
    pub fn add(&mut self, pattern: &str, methods: Methods) -> Result<usize, PatternError> {
        let segs = parse(pattern)?;
        let index = self.methods.len();
        let mut node = &mut self.root;
        let mut rest = false;
        for seg in segs {
            node = match seg {
                Seg::Literal(s) => node.literal.entry(s.to_string()).or_default(),
                Seg::Param => node.param.get_or_insert_with(Default::default),
                Seg::Rest => {
                    rest = true;
                    node
                }
            };
        }
        if rest {
            node.rest.push(index);
        } else {
            node.here.push(index);
        }
        self.methods.push(methods);
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.methods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }

    /// The rule for `method` on a normalized path, if any.
    pub fn find(&self, method: &Method, path: &str) -> Option<usize> {
        let mut segs: [&str; 32] = [""; 32];
        let mut n = 0;
        for s in path.split('/').filter(|s| !s.is_empty()) {
            // Deeper than any sensible API path: only a `**` rule near the root could match, and
            // refusing is the safe answer.
            if n == segs.len() {
                return None;
            }
            segs[n] = s;
            n += 1;
        }
        self.walk(&self.root, &segs[..n], method)
    }

    fn walk(&self, node: &Node, segs: &[&str], method: &Method) -> Option<usize> {
        let pick = |rules: &[usize]| {
            rules
                .iter()
                .copied()
                .find(|&r| self.methods[r].allows(method))
        };
        let Some((first, rest)) = segs.split_first() else {
            return pick(&node.here).or_else(|| pick(&node.rest));
        };
        if let Some(child) = node.literal.get(*first) {
            if let Some(r) = self.walk(child, rest, method) {
                return Some(r);
            }
        }
        if let Some(child) = &node.param {
            if let Some(r) = self.walk(child, rest, method) {
                return Some(r);
            }
        }
        pick(&node.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(&str, &[&str])]) -> RouteTable {
        let mut t = RouteTable::default();
        for (p, m) in rules {
            let methods = if m.is_empty() {
                Methods::Any
            } else {
                Methods::Only(m.iter().map(|m| m.parse().unwrap()).collect())
            };
            t.add(p, methods).unwrap();
        }
        t
    }

    #[test]
    fn precedence_and_methods() {
        let t = table(&[
            ("/api/v2/tickets/{id}", &["GET"]),      // 0
            ("/api/v2/tickets/{id}", &["PUT"]),      // 1
            ("/api/v2/tickets/show_many", &["GET"]), // 2
            ("/api/v2/incremental/**", &[]),         // 3
            ("/api/v2/users/{id}/password", &[]),    // 4
            ("/api/v2/**", &["GET"]),                // 5
        ]);
        let get = Method::GET;
        assert_eq!(t.find(&get, "/api/v2/tickets/1"), Some(0));
        assert_eq!(t.find(&Method::PUT, "/api/v2/tickets/1"), Some(1));
        assert_eq!(t.find(&get, "/api/v2/tickets/show_many"), Some(2));
        assert_eq!(t.find(&get, "/api/v2/incremental/tickets/cursor"), Some(3));
        assert_eq!(t.find(&get, "/api/v2/incremental"), Some(3));
        assert_eq!(t.find(&Method::POST, "/api/v2/users/7/password"), Some(4));
        assert_eq!(t.find(&get, "/api/v2/organizations"), Some(5));
        assert_eq!(t.find(&Method::DELETE, "/api/v2/tickets/1"), None);
        assert_eq!(t.find(&get, "/other"), None);
        // A parameter is one segment, never several.
        assert_eq!(t.find(&Method::DELETE, "/api/v2/tickets/1/x"), None);
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(validate("api"), Err(PatternError::NotAbsolute));
        assert_eq!(validate("/a/**/b"), Err(PatternError::WildcardNotLast));
        assert!(matches!(
            validate("/a/{x"),
            Err(PatternError::BadSegment(_))
        ));
        assert!(matches!(validate("/a/*"), Err(PatternError::BadSegment(_))));
        assert!(matches!(
            validate("/a/../b"),
            Err(PatternError::BadSegment(_))
        ));
    }

    #[test]
    fn a_thousand_routes_still_find_the_right_one() {
        let mut t = RouteTable::default();
        for i in 0..1000 {
            t.add(
                &format!("/api/v2/resource{i}/{{id}}"),
                Methods::Only(vec![Method::GET]),
            )
            .unwrap();
        }
        assert_eq!(t.find(&Method::GET, "/api/v2/resource999/5"), Some(999));
        assert_eq!(t.find(&Method::GET, "/api/v2/resource1000/5"), None);
    }
}
