//! Every error this crate returns. Messages are read by AI models after `[POLICY DENIED] `,
//! so they are short, say what was found, and never quote more than ~80 characters of input.

use std::fmt;

/// Why a command string could not be parsed. Anything that does not parse is denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the command is longer than 64 KiB")]
    TooLong,
    #[error("it is nested more than 32 levels deep")]
    TooDeep,
    #[error("it contains a NUL character")]
    NulByte,
    #[error("unterminated single quote")]
    UnterminatedSingleQuote,
    #[error("unterminated double quote")]
    UnterminatedDoubleQuote,
    #[error("unterminated backquote")]
    UnterminatedBackquote,
    #[error("unterminated `$(`")]
    UnterminatedSubstitution,
    #[error("unterminated `${{`")]
    UnterminatedParameter,
    #[error("unterminated arithmetic expression")]
    UnterminatedArithmetic,
    #[error("here-document without its `{0}` line")]
    UnterminatedHeredoc(String),
    #[error("a here-document inside `$(...)` must end before the `)`")]
    HeredocInSubstitution,
    #[error("unexpected `{0}`")]
    Unexpected(String),
    #[error("unexpected end of input (expected `{0}`)")]
    UnexpectedEnd(&'static str),
    #[error("bad parameter expansion `${{{0}`")]
    BadParameter(String),
    #[error("{0} is not supported")]
    Unsupported(&'static str),
}

/// Why the checker could not tell what a command would run. Always denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unchecked {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("the program name is computed at run time")]
    DynamicProgram,
    #[error("`{0}` runs shell code computed at run time")]
    DynamicCode(String),
    #[error("an argument of `{0}` is computed at run time")]
    DynamicArgument(String),
    #[error("`{program}` option `{option}` is not understood")]
    UnknownOption { program: String, option: String },
    #[error("`{0}` is missing an argument")]
    MissingOperand(String),
    #[error("`{0}` would run a program named by its input")]
    ProgramFromInput(String),
    #[error("`{program}` {why}")]
    UnseenCode { program: String, why: &'static str },
    #[error("`{0}` is a shell keyword where a program is expected")]
    ReservedWord(String),
    #[error("the output of a command substitution is evaluated as arithmetic, which can run code")]
    ArithmeticOutput,
    #[error(
        "`{0}` is evaluated as arithmetic after being set from text or input, which can run code"
    )]
    ArithmeticVariable(String),
    #[error(
        "`{0}` is evaluated as arithmetic, and its value could name a variable set here to text that runs code"
    )]
    ArithmeticOutsideVariable(String),
    #[error("`{0}` is not supported")]
    Unsupported(String),
    #[error("it nests more code (`eval`, `sh -c` ...) than can be checked")]
    TooMuchCode,
}

/// Where in the checked input a violation was found: " (command 2 of `ls; rm -rf /`)".
/// Displays as nothing when the input holds a single command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// 1-based position of the simple command, in source order, among `total`.
    pub index: usize,
    pub total: usize,
    /// The checked input, truncated to about 80 characters.
    pub input: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total > 1 && self.index > 0 {
            write!(f, " (command {} of `{}`)", self.index, self.input)
        } else {
            Ok(())
        }
    }
}

/// Why a rule denied a command. Display is the message for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("`{program}` is a denied program{via}{location}")]
    Denied {
        program: String,
        /// " (`find -delete`)" when the denied program is implied by another.
        via: String,
        location: Location,
    },
    #[error("`{program}` is not an allowed program (allowed: {allowed}){location}")]
    NotAllowed {
        program: String,
        allowed: String,
        location: Location,
    },
    #[error("command substitution is not allowed")]
    Substitution,
    #[error("redirection to or from a file is not allowed (`{0}`)")]
    Redirection(String),
    #[error("running a command in the background (`&`) is not allowed")]
    Background,
    #[error("here-documents and here-strings are not allowed")]
    Heredoc,
    #[error("{what} is not allowed: it can change which program runs{location}")]
    Rebinding { what: String, location: Location },
    #[error("the command cannot be checked: {reason}{location}")]
    Unchecked {
        reason: Unchecked,
        location: Location,
    },
}

/// What is wrong in a [`CommandRule`](crate::CommandRule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("`{list}` entry {index} is empty")]
    EmptyEntry { list: &'static str, index: usize },
    #[error(
        "`{list}` entry `{entry}` contains `{found}`: entries are a program name and optional subcommand words, e.g. `systemctl status`"
    )]
    Metacharacter {
        list: &'static str,
        entry: String,
        found: char,
    },
    #[error(
        "`{list}` entry `{entry}`: a program path must be absolute and plain, e.g. `/usr/bin/ls`"
    )]
    BadPath { list: &'static str, entry: String },
    #[error("`allow_programs` is empty, so no command could run")]
    EmptyAllowList,
}

/// Cuts `text` to about `max` characters for a message, marking the cut with `…`.
pub(crate) fn snippet(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}
