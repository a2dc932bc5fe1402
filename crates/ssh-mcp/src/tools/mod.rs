//! The tools, one file per family. Each file is an `impl SshMcp` block with its own
//! `#[tool_router(router = ...)]`, combined in [`crate::server::SshMcp::router`].

pub mod copy;
pub mod credentials;
pub mod exec;
pub mod output;
pub mod session;
pub mod tunnel;

use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;

/// A successful result: `text` for people and models that read text, `value` as
/// `structuredContent` (matching the tool's `outputSchema`).
pub fn structured<T: Serialize>(text: String, value: &T, is_error: bool) -> CallToolResult {
    let mut result = if is_error {
        CallToolResult::error(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::success(vec![ContentBlock::text(text)])
    };
    result.structured_content = serde_json::to_value(value).ok();
    result
}

/// A failure before anything ran (unknown credential, refused host key, ...): text only.
pub fn failure(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}
