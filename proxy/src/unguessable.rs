//! Unguessable ids (download grants, lock ids, admin tokens): bytes from the system's generator,
//! in lowercase hex. `None` when the generator fails: a caller then refuses rather than hand out
//! something guessable.

use ring::rand::{SecureRandom, SystemRandom};

/// `bytes` random bytes as `2 * bytes` hex digits.
pub fn hex(bytes: usize) -> Option<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).ok()?;
    Some(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_of_the_length_asked_and_differ() {
        let (a, b) = (super::hex(16).unwrap(), super::hex(16).unwrap());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
