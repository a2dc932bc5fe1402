//! toolgate's policies: PolicyLayer-compatible JSON (version "1") plus toolgate's extensions,
//! turned from raw text into a validated, compiled [`Policy`] that decides calls without I/O.
//!
//! ```text
//! policy text --parse--> Policy (validated, compiled; errors carry JSON pointers)
//! Call { grant, server, tool, args } --Policy::decide--> Decision { verdict, rule, counters }
//! ```
//!
//! Time never enters here: the counters a decision names are reserved by the caller's
//! counter store, which owns the clock.
#![forbid(unsafe_code)]

mod error;
mod locate;
mod parse;
mod path;
mod pattern;
mod policy;
mod predicate;
mod window;

pub use error::{Diagnostic, PolicyError};
pub use parse::{MAX_POLICY_BYTES, parse};
pub use path::{Path, Root, Step};
pub use pattern::{CATEGORIES, SEVERITIES, Target, glob_match};
pub use policy::{
    Action, Approval, AskClient, AuditSpec, Call, CounterRequest, Decision, Fired, Policy,
    REDACTED, RULE_DEFAULT_ALLOW, RULE_DEFAULT_DENY, RULE_HIDDEN, RULE_NO_POLICY, Scope, Treatment,
    TreatmentKind, Verdict, limit_message, window_name,
};
pub use window::{Window, parse_duration, utc_rfc3339};

#[cfg(test)]
mod tests;
