//! Transports towards MCP clients.

pub mod access;
pub mod http;
pub mod stdio;
