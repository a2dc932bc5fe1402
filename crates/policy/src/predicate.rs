//! Predicates: `{path, op, value}`, compiled once, evaluated per call.
//!
//! Every predicate answers one of three things: it holds, it does not, or it cannot tell
//! (the argument has the wrong type for the operator, e.g. `gt` on an object). A policy
//! must not be bypassed by sending an unexpected type, so "cannot tell" denies the call
//! whether the predicate sits in `require` or in `deny_if`. A missing path simply does not
//! hold (except for `exists`).

use std::fmt;

use regex_automata::meta::Regex;
use regex_automata::nfa::thompson::WhichCaptures;
use serde_json::Value;

use crate::path::{Path, Root, walk};
use crate::pattern::glob_match;

/// Compiled regexes are capped in size (the `regex` crate is linear-time already).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest regex source accepted.
pub const REGEX_MAX_LEN: usize = 4096;

/// Compiles a predicate's regex for matching only: no capture groups (a policy asks whether a
/// value matches, never what matched), and no one-pass DFA, whose eager construction for
/// anchored patterns was a third of a large policy's compile time and which only serves
/// capture searches. Linear time and size-capped, like `regex::Regex`.
pub fn compile_regex(src: &str) -> Result<Regex, Box<regex_automata::meta::BuildError>> {
    Regex::builder()
        .configure(
            Regex::config()
                .which_captures(WhichCaptures::None)
                .onepass(false)
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .hybrid_cache_capacity(REGEX_SIZE_LIMIT),
        )
        .build(src)
        .map_err(Box::new)
}

/// The operators.
pub const OPS: &[&str] = &[
    "eq",
    "neq",
    "in",
    "not_in",
    "lt",
    "lte",
    "gt",
    "gte",
    "regex",
    "contains",
    "exists",
    "glob",
    "starts_with",
    "ends_with",
    "max_len",
    "schema",
    "command",
];

/// A compiled operator with its operand.
#[derive(Debug, Clone)]
pub enum Op {
    Eq(Value),
    Neq(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Lt(f64),
    Lte(f64),
    Gt(f64),
    Gte(f64),
    Regex(Regex),
    Contains(Value),
    Exists(bool),
    Glob(String),
    StartsWith(String),
    EndsWith(String),
    MaxLen(u64),
    Schema(std::sync::Arc<jsonschema::Validator>),
    Command(std::sync::Arc<toolgate_shell::CompiledRule>),
}

/// A compiled predicate.
#[derive(Debug, Clone)]
pub struct Predicate {
    /// Where it looks.
    pub path: Path,
    /// The operator's name as written.
    pub op_name: &'static str,
    /// What it checks.
    pub op: Op,
    /// The operand as written, for messages.
    pub value: Value,
}

/// What a predicate says about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The predicate holds.
    Holds,
    /// It does not; for a command rule, why.
    Fails(Option<String>),
    /// It cannot be decided for this input: treated as a denial.
    Indeterminate(String),
}

/// The values a path can reach: the arguments and the call's context.
pub struct Subject<'a> {
    /// The call's arguments (an object, or `Null` when absent).
    pub args: &'a Value,
    /// The grant's name.
    pub grant: &'a str,
    /// The downstream session id.
    pub session: &'a str,
    /// The upstream server.
    pub server: &'a str,
    /// The tool's name on its server.
    pub tool: &'a str,
}

impl Predicate {
    /// Evaluates the predicate.
    pub fn eval(&self, s: &Subject<'_>) -> Outcome {
        let context;
        let found = match &self.path.root {
            Root::Args(steps) => walk(s.args, steps),
            root => {
                context = Value::String(
                    match root {
                        Root::Grant => s.grant,
                        Root::Session => s.session,
                        Root::Server => s.server,
                        _ => s.tool,
                    }
                    .to_owned(),
                );
                Some(&context)
            }
        };
        // `null` is treated as absent by every operator, `exists` included: an upstream reads
        // `"reason": null` as no reason.
        let Some(v) = found.filter(|v| !v.is_null()) else {
            return match self.op {
                Op::Exists(want) => bool_outcome(!want),
                _ => Outcome::Fails(None),
            };
        };
        match &self.op {
            Op::Exists(want) => bool_outcome(*want),
            Op::Eq(x) => bool_outcome(json_eq(v, x)),
            Op::Neq(x) => bool_outcome(!json_eq(v, x)),
            Op::In(xs) => bool_outcome(xs.iter().any(|x| json_eq(v, x))),
            Op::NotIn(xs) => bool_outcome(!xs.iter().any(|x| json_eq(v, x))),
            Op::Lt(x) => self.number(v, |n| n < *x),
            Op::Lte(x) => self.number(v, |n| n <= *x),
            Op::Gt(x) => self.number(v, |n| n > *x),
            Op::Gte(x) => self.number(v, |n| n >= *x),
            Op::Regex(re) => self.text(v, |t| re.is_match(t)),
            Op::Glob(g) => self.text(v, |t| glob_match(g, t)),
            Op::StartsWith(p) => self.text(v, |t| t.starts_with(p.as_str())),
            Op::EndsWith(p) => self.text(v, |t| t.ends_with(p.as_str())),
            Op::Contains(x) => match (v, x) {
                (Value::String(t), Value::String(x)) => bool_outcome(t.contains(x.as_str())),
                (Value::Array(items), x) => bool_outcome(items.iter().any(|i| json_eq(i, x))),
                _ => self.indeterminate(v, "a string or an array"),
            },
            Op::MaxLen(max) => match v {
                Value::String(t) => bool_outcome(t.chars().count() as u64 <= *max),
                Value::Array(a) => bool_outcome(a.len() as u64 <= *max),
                Value::Object(o) => bool_outcome(o.len() as u64 <= *max),
                _ => self.indeterminate(v, "a string, an array or an object"),
            },
            Op::Schema(validator) => match validator.validate(v) {
                Ok(()) => Outcome::Holds,
                Err(e) => Outcome::Fails(Some(format!(
                    "{} does not match the schema: {e}",
                    self.path.text
                ))),
            },
            Op::Command(rule) => match v {
                Value::String(command) => match rule.check_command(command) {
                    Ok(()) => Outcome::Holds,
                    Err(why) => Outcome::Fails(Some(why.to_string())),
                },
                Value::Array(words) => {
                    let Some(argv) = words.iter().map(Value::as_str).collect::<Option<Vec<_>>>()
                    else {
                        return self.indeterminate(v, "a string or an array of strings");
                    };
                    match rule.check_argv(&argv) {
                        Ok(()) => Outcome::Holds,
                        Err(why) => Outcome::Fails(Some(why.to_string())),
                    }
                }
                _ => self.indeterminate(v, "a string or an array of strings"),
            },
        }
    }

    fn number(&self, v: &Value, test: impl Fn(f64) -> bool) -> Outcome {
        let n = match v {
            Value::Number(n) => n.as_f64(),
            // An upstream may coerce "20000" to 20000: compare what it would see.
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        };
        match n {
            Some(n) => bool_outcome(test(n)),
            None => self.indeterminate(v, "a number"),
        }
    }

    fn text(&self, v: &Value, test: impl Fn(&str) -> bool) -> Outcome {
        match v {
            Value::String(s) => bool_outcome(test(s)),
            Value::Number(n) => bool_outcome(test(&n.to_string())),
            Value::Bool(b) => bool_outcome(test(if *b { "true" } else { "false" })),
            _ => self.indeterminate(v, "a string"),
        }
    }

    fn indeterminate(&self, v: &Value, wanted: &str) -> Outcome {
        Outcome::Indeterminate(format!(
            "{} is {}, not {wanted} as `{}` needs",
            self.path.text,
            kind(v),
            self.op_name
        ))
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Exists(true) => write!(f, "{} exists", self.path.text),
            Op::Exists(false) => write!(f, "{} does not exist", self.path.text),
            Op::Schema(_) => write!(f, "{} matches its schema", self.path.text),
            Op::Command(_) => write!(f, "{} passes the command rule", self.path.text),
            _ => write!(f, "{} {} {}", self.path.text, self.op_name, self.value),
        }
    }
}

fn bool_outcome(b: bool) -> Outcome {
    if b {
        Outcome::Holds
    } else {
        Outcome::Fails(None)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`), and a number equals a string
/// that an upstream would coerce to it (`20000 == "20000"`), as `lt`/`gt` compare: otherwise
/// `deny_if amount eq 20000` would be bypassed by sending `"20000"`.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => s
            .trim()
            .parse::<f64>()
            .is_ok_and(|v| v.is_finite() && Some(v) == n.as_f64()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}
