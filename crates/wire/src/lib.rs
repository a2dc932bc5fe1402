//! The wire layer of toolgate: JSON-RPC 2.0 messages as MCP uses them.
//!
//! The gateway must never read a message differently from the upstream that receives it, so
//! parsing is strict (no duplicate keys, no batches, bounded depth and size) while everything the
//! gateway does not need stays raw and is forwarded byte-for-byte. Only the envelope (`id`,
//! `method`) and, on demand, single fields of `params` or `result` are looked at.
//!
//! This crate knows neither policy nor sockets.
#![forbid(unsafe_code)]

mod error;
mod id;
pub mod line;
mod message;
mod raw;
pub mod sse;
mod strict;

pub use error::{ErrorCode, WireError};
pub use id::Id;
pub use message::{Kind, Message};
pub use raw::{RawObject, push_json_str, raw, raw_string};
pub use strict::{Limits, validate};
