use crate::Id;

/// JSON-RPC error codes the gateway itself produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// `-32700`: the bytes are not JSON (or not UTF-8).
    Parse,
    /// `-32600`: JSON, but not an acceptable JSON-RPC message.
    InvalidRequest,
    /// `-32601`: the method does not exist here.
    MethodNotFound,
    /// `-32602`: bad parameters, unknown tool, bad cursor.
    InvalidParams,
    /// `-32603`: the gateway or an upstream failed.
    Internal,
    /// `-32002`: MCP's "resource not found".
    ResourceNotFound,
    /// `-32020`: 2026-07-28 `Mcp-Method`/`Mcp-Name` headers disagree with the body.
    HeaderMismatch,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::Parse => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            ErrorCode::ResourceNotFound => -32002,
            ErrorCode::HeaderMismatch => -32020,
        }
    }
}

/// Why a message was refused. Carries what is needed to answer with a JSON-RPC error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// The JSON-RPC code to answer with.
    pub code: ErrorCode,
    /// A human-readable reason, safe to show to the client.
    pub message: String,
    /// The request id, when it could be read before the error was found.
    pub id: Option<Id>,
}

impl WireError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            id: None,
        }
    }
}
