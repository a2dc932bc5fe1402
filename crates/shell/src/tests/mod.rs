//! Tests: the parser's trees, the bypass corpus under allow and deny lists, and properties.

mod corpus;
mod parse;
mod prop;

use crate::{CommandRule, CompiledRule};

/// The deny list of the bypass corpus.
pub(crate) fn deny_rule() -> CompiledRule {
    CommandRule {
        deny_programs: ["rm", "dd", "mkfs", "sudo", "curl"]
            .map(String::from)
            .to_vec(),
        ..CommandRule::default()
    }
    .compile()
    .expect("deny rule compiles")
}

/// The allow list of the bypass corpus.
pub(crate) fn allow_rule() -> CompiledRule {
    CommandRule {
        allow_programs: Some(
            ["ls", "cat", "df", "systemctl status", "echo", "grep"]
                .map(String::from)
                .to_vec(),
        ),
        ..CommandRule::default()
    }
    .compile()
    .expect("allow rule compiles")
}

#[test]
fn compiled_rules_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shared::<CompiledRule>();
    shared::<crate::Violation>();
}
