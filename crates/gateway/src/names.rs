//! Exposed names of tools and prompts when several servers are aggregated.
//!
//! Clients cap names (Claude: 64 of `[A-Za-z0-9_-]`), so `server__tool` must fit. A name that
//! does not fit, or has other characters, is cut and suffixed with a hash of the original, which
//! keeps it deterministic and unique.

use sha2::{Digest, Sha256};

/// Longest exposed name.
pub const MAX_NAME: usize = 64;

/// The separator between server and tool.
pub const SEPARATOR: &str = "__";

/// The name under which `server`'s `name` is exposed when several servers are aggregated.
pub fn exposed(server: &str, name: &str) -> String {
    let full_len = server.len() + SEPARATOR.len() + name.len();
    let clean = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if clean && full_len <= MAX_NAME && !name.is_empty() {
        // On every call's path: a plain concatenation, not the formatting machinery.
        let mut exposed = String::with_capacity(full_len);
        exposed.push_str(server);
        exposed.push_str(SEPARATOR);
        exposed.push_str(name);
        return exposed;
    }
    let hash = crate::to_hex(&Sha256::digest(name.as_bytes())[..4]);
    let room = MAX_NAME.saturating_sub(server.len() + SEPARATOR.len() + 1 + hash.len());
    let kept: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    format!("{server}{SEPARATOR}{kept}_{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        (1..=MAX_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    #[test]
    fn short_clean_names_are_prefixed() {
        assert_eq!(exposed("ssh", "ssh_exec"), "ssh__ssh_exec");
    }

    #[test]
    fn long_or_odd_names_are_shortened_deterministically_and_stay_unique() {
        let long_a = format!("{}a", "x".repeat(80));
        let long_b = format!("{}b", "x".repeat(80));
        let (a, b) = (exposed("files", &long_a), exposed("files", &long_b));
        assert!(valid(&a) && valid(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, exposed("files", &long_a));
        let dotted = exposed("docs", "search.pages");
        assert!(
            valid(&dotted) && dotted.starts_with("docs__search_pages_"),
            "{dotted}"
        );
        assert_ne!(dotted, exposed("docs", "search_pages"));
        assert!(valid(&exposed("a", "ünïcode tool")));
    }
}
