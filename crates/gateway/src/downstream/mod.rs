//! Transports towards MCP clients.

pub mod http;
pub mod stdio;
