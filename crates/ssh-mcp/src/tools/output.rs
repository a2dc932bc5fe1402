//! `ssh_output_read`: pages through output that a result had to cut.
//!
//! ```text
//! ssh_output_read {outputId: "out-3", stream?: "stdout" | "stderr", offset?: bytes, length?: bytes}
//! ```

use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use super::{failure, structured};
use crate::output::{Page, Stream};
use crate::server::SshMcp;

/// Arguments of `ssh_output_read`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    /// The outputId of an ssh_exec result.
    pub output_id: String,
    /// `stdout` (default) or `stderr`.
    pub stream: Option<Stream>,
    /// Byte offset to start at (default 0); use the previous page's nextOffset.
    pub offset: Option<u64>,
    /// Bytes to read (default and maximum: the result cap, 64 KiB unless configured).
    pub length: Option<usize>,
}

#[tool_router(router = output_router, vis = "pub(crate)")]
impl SshMcp {
    /// Reads a page of kept output.
    #[tool(
        name = "ssh_output_read",
        description = "Read a page of the full output of an earlier ssh_exec / ssh_exec_raw call whose \
result was cut (it names an outputId). Returns text from `offset` and the nextOffset to continue from.",
        output_schema = schema_for_output::<Page>(),
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn ssh_output_read(
        &self,
        Parameters(p): Parameters<ReadParams>,
    ) -> Result<CallToolResult, rmcp::ErrorData> {
        let cap = self.state().settings.limits.output_bytes;
        let length = p.length.unwrap_or(cap).clamp(1, cap);
        let stream = p.stream.unwrap_or(Stream::Stdout);
        match self
            .state()
            .outputs
            .read(&p.output_id, stream, p.offset.unwrap_or(0), length)
        {
            Ok(page) => {
                let text = format!(
                    "{} of {}: bytes {}..{} of {} kept ({} written){}\n{}",
                    stream.name(),
                    page.output_id,
                    page.offset,
                    page.next_offset,
                    page.stored_bytes,
                    page.total_bytes,
                    if page.eof { ", end" } else { "" },
                    page.text
                );
                Ok(structured(text, &page, false))
            }
            Err(e) => Ok(failure(e.to_string())),
        }
    }
}
