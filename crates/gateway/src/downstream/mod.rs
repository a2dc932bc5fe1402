//! Transports towards MCP clients.

pub mod access;
pub mod h1;
pub mod http;
pub mod stdio;
