//! Name patterns: `tools` keys and `hide` entries.
//!
//! A key is an exact tool name (`ssh_exec`), a server-qualified name (`ssh/ssh_exec`), a glob
//! over either (`ssh_session_*`, `*/delete_*`; `*` any run of characters, `?` one), or a risk
//! class from the catalog (`category:execute`, `severity:critical`).

/// The categories the catalog assigns.
pub const CATEGORIES: &[&str] = &[
    "read",
    "write",
    "execute",
    "network",
    "destructive",
    "financial",
    "credential-access",
];
/// The severities the catalog assigns.
pub const SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];

/// A compiled name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Matches one tool name (on any server) exactly.
    Exact(String),
    /// Matches `server/tool` exactly.
    Qualified(String, String),
    /// A glob over the tool name.
    Glob(Glob),
    /// Globs over the server and the tool name (`*/delete_*`).
    QualifiedGlob(Glob, Glob),
    /// Every tool of a catalog category.
    Category(String),
    /// Every tool of a catalog severity.
    Severity(String),
}

/// The names a pattern is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The upstream server's name.
    pub server: &'a str,
    /// The tool's name on its server.
    pub name: &'a str,
    /// Its aggregated name, `server__tool`.
    pub exposed: &'a str,
    /// The catalog's categories (empty when unknown).
    pub categories: &'a [&'a str],
    /// The catalog's severity, when known.
    pub severity: Option<&'a str>,
}

impl Pattern {
    /// Parses a key; the error says why it is not a valid pattern.
    pub fn parse(key: &str) -> Result<Pattern, String> {
        if key.is_empty() {
            return Err("a tool pattern must not be empty".into());
        }
        if let Some(c) = key.strip_prefix("category:") {
            if !CATEGORIES.contains(&c) {
                return Err(format!(
                    "unknown category `{c}` (one of {})",
                    CATEGORIES.join(", ")
                ));
            }
            return Ok(Pattern::Category(c.to_owned()));
        }
        if let Some(s) = key.strip_prefix("severity:") {
            if !SEVERITIES.contains(&s) {
                return Err(format!(
                    "unknown severity `{s}` (one of {})",
                    SEVERITIES.join(", ")
                ));
            }
            return Ok(Pattern::Severity(s.to_owned()));
        }
        if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("a tool pattern must not hold spaces or control characters".into());
        }
        let qualified = key.contains('/');
        if qualified && key.matches('/').count() > 1 {
            return Err("a qualified name is `server/tool`, with one `/`".into());
        }
        if key.contains(['*', '?']) {
            return Ok(match key.split_once('/') {
                Some((server, tool)) => Pattern::QualifiedGlob(Glob::new(server), Glob::new(tool)),
                None => Pattern::Glob(Glob::new(key)),
            });
        }
        Ok(match key.split_once('/') {
            Some((server, tool)) => Pattern::Qualified(server.to_owned(), tool.to_owned()),
            None => Pattern::Exact(key.to_owned()),
        })
    }

    /// Whether the pattern selects this tool.
    pub fn matches(&self, t: &Target<'_>) -> bool {
        match self {
            Pattern::Exact(name) => name == t.name || name == t.exposed,
            Pattern::Qualified(server, name) => server == t.server && name == t.name,
            Pattern::Glob(glob) => {
                glob.is_match(t.name) || (t.exposed != t.name && glob.is_match(t.exposed))
            }
            Pattern::QualifiedGlob(server, name) => {
                server.is_match(t.server) && name.is_match(t.name)
            }
            Pattern::Category(c) => t.categories.contains(&c.as_str()),
            Pattern::Severity(s) => t.severity == Some(s.as_str()),
        }
    }

    /// The first byte every name this pattern selects starts with, when it says (a glob over
    /// the tool name with a literal head), for indexing.
    pub fn first_byte(&self) -> Option<u8> {
        match self {
            Pattern::Glob(g) => g.text.as_bytes()[..g.head].first().copied(),
            _ => None,
        }
    }

    /// The exact tool name this pattern selects, if it selects by name alone (for indexing).
    pub fn exact_name(&self) -> Option<&str> {
        match self {
            Pattern::Exact(n) => Some(n),
            Pattern::Qualified(_, n) => Some(n),
            _ => None,
        }
    }
}

/// A glob compiled for the hot path: its literal head and tail (before the first and after the
/// last wildcard) reject most names with two comparisons before the full match runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    head: usize,
    tail: usize,
}

impl Glob {
    /// Compiles a glob with `*` and `?`.
    pub fn new(text: &str) -> Glob {
        let wild = |c: char| c == '*' || c == '?';
        let head = text.find(wild).unwrap_or(text.len());
        let tail = text.rfind(wild).map_or(0, |i| text.len() - i - 1);
        Glob {
            text: text.to_owned(),
            head,
            tail,
        }
    }

    /// Whether `name` matches.
    pub fn is_match(&self, name: &str) -> bool {
        let t = self.text.as_bytes();
        let n = name.as_bytes();
        n.starts_with(&t[..self.head])
            && n.ends_with(&t[t.len() - self.tail..])
            && glob_match(&self.text, name)
    }
}

/// Glob match with `*` and `?`, in O(len(glob) * len(text)) at worst, without recursion and,
/// for ASCII names (nearly all tool names), without allocating: it runs on every call.
pub fn glob_match(glob: &str, text: &str) -> bool {
    if glob.is_ascii() && text.is_ascii() {
        match_items(glob.as_bytes(), text.as_bytes(), b'*', b'?')
    } else {
        let g: Vec<char> = glob.chars().collect();
        let t: Vec<char> = text.chars().collect();
        match_items(&g, &t, '*', '?')
    }
}

fn match_items<T: Copy + PartialEq>(g: &[T], t: &[T], any_run: T, any_one: T) -> bool {
    let (mut gi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && (g[gi] == any_one || (g[gi] != any_run && g[gi] == t[ti])) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == any_run {
            star = Some((gi, ti));
            gi += 1;
        } else if let Some((sg, st)) = star {
            gi = sg + 1;
            ti = st + 1;
            star = Some((sg, st + 1));
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == any_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(server: &'a str, name: &'a str) -> Target<'a> {
        Target {
            server,
            name,
            exposed: name,
            categories: &[],
            severity: None,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("ssh_session_*", "ssh_session_start"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*delete*", "bulk_delete_all"));
        assert!(!glob_match("delete_*", "undelete_x"));
        assert!(glob_match("*a*b*c", "xxaxxbxxc"));
        assert!(glob_match("d?cs_*", "dócs_x"));
        assert!(!glob_match("d?cs_*", "dóócs_x"));
    }

    #[test]
    fn keys_select_tools() {
        let t = target("ssh", "ssh_exec");
        assert!(Pattern::parse("ssh_exec").unwrap().matches(&t));
        assert!(Pattern::parse("ssh/ssh_exec").unwrap().matches(&t));
        assert!(!Pattern::parse("git/ssh_exec").unwrap().matches(&t));
        assert!(Pattern::parse("ssh_*").unwrap().matches(&t));
        assert!(Pattern::parse("*/ssh_*").unwrap().matches(&t));
        assert!(!Pattern::parse("*/delete_*").unwrap().matches(&t));
        let mut ex = target("fs", "write_file");
        ex.exposed = "fs__write_file";
        assert!(Pattern::parse("fs__write_file").unwrap().matches(&ex));
        ex.categories = &["read", "write"];
        assert!(Pattern::parse("category:write").unwrap().matches(&ex));
        assert!(Pattern::parse("category:nope").is_err());
        assert!(Pattern::parse("a/b/c").is_err());
    }
}
