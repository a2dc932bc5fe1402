//! The tool catalog: what each upstream tool can do and how dangerous it is, with the
//! evidence; poisoning checks; fingerprints for pinning; and a recommended starting policy.
//!
//! Pure: no I/O. The gateway feeds it `tools/list` items and keeps what it says.
#![forbid(unsafe_code)]

pub mod class;
pub mod classify;
pub mod recommend;
pub mod scan;
pub mod shadow;
pub mod tool;

pub use class::{Category, Classification, Evidence, Finding, FindingKind, Severity, Source};
pub use classify::{Classifier, KnownServer, KnownTool, Override, ServerRef, builtin};
pub use recommend::{Subject, recommend};
pub use shadow::shadowing;
pub use tool::{ToolDef, canonical, fingerprint_of, server_fingerprint};

#[cfg(test)]
mod tests;
