//! POSIX shell quoting for `ssh_exec_raw` and for the wrappers this crate puts around commands.
//!
//! SSH has no argv: the server hands one string to the user's login shell (`$SHELL -c STRING`).
//! So every word that must arrive as one literal argument is wrapped in single quotes, the one
//! POSIX quoting form in which no character is special; a `'` inside is written `'\''` (close,
//! escaped quote, reopen). Nothing in a quoted word can reach the shell as syntax: no `;`, `$(...)`,
//! backtick, glob, newline or redirection.

use thiserror::Error;

/// A word that cannot be passed through a shell command line at all.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuoteError {
    /// C strings end at NUL, so the remote shell would silently cut the word there.
    #[error("argument {index} contains a NUL character, which no remote shell can receive")]
    Nul {
        /// Position of the word in the argument array (0-based).
        index: usize,
    },
    /// `ssh_exec_raw` needs at least the program name.
    #[error("the command array is empty: give at least the program to run")]
    Empty,
}

/// Quotes one word so that a POSIX shell reads it back as exactly that word.
///
/// Words made only of characters that are never special (`[A-Za-z0-9_@%+=:,./-]`) are left bare
/// so that commands stay readable in logs; everything else is single-quoted.
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Joins an argument vector into one command line, each word quoted.
///
/// ```text
/// ["printf", "%s\n", "a b; touch /tmp/x"]  ->  printf '%s\n' 'a b; touch /tmp/x'
/// ```
pub fn join_argv(words: &[String]) -> Result<String, QuoteError> {
    if words.is_empty() {
        return Err(QuoteError::Empty);
    }
    let mut out = String::new();
    for (index, word) in words.iter().enumerate() {
        if word.contains('\0') {
            return Err(QuoteError::Nul { index });
        }
        if index > 0 {
            out.push(' ');
        }
        out.push_str(&quote(word));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
