//! Output of remote commands: capped for the result, kept (bounded) for paging.
//!
//! MCP clients reject results above roughly 25k tokens, and a `cat` of a log file is megabytes.
//! So each stream is captured twice: its first `keep` bytes in full (for paging with
//! `ssh_output_read`) and its last bytes in a small ring (so the end of the output, where errors
//! usually are, is never lost). A result shows at most `cap` bytes per stream: the head and the
//! tail with a marker between them that says how to page through the rest.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use thiserror::Error;

/// Which stream of a command.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output (SSH channel data).
    Stdout,
    /// Standard error (SSH extended data, type 1).
    Stderr,
}

impl Stream {
    /// The name used in tool arguments and markers.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One stream of one command as it arrives.
#[derive(Debug, Clone)]
pub struct StreamCapture {
    kept: Vec<u8>,
    keep_limit: usize,
    tail: Vec<u8>,
    tail_limit: usize,
    total: u64,
}

impl StreamCapture {
    /// `keep_limit`: bytes kept from the start; `tail_limit`: bytes kept from the end.
    pub fn new(keep_limit: usize, tail_limit: usize) -> Self {
        Self {
            kept: Vec::new(),
            keep_limit,
            tail: Vec::new(),
            tail_limit,
            total: 0,
        }
    }

    /// Appends bytes received from the channel.
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.keep_limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
        self.tail.extend_from_slice(data);
        // Drain only when twice over the limit, so a stream of small packets costs amortised O(1).
        if self.tail.len() > 2 * self.tail_limit.max(1) {
            let cut = self.tail.len() - self.tail_limit;
            self.tail.drain(..cut);
        }
    }

    /// Bytes received in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The bytes kept from the start (all of them when `total <= keep_limit`).
    pub fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// Consumes the capture, giving the kept head bytes.
    pub fn into_kept(self) -> Vec<u8> {
        self.kept
    }

    /// The text to put in a result: everything when it fits in `cap` bytes, else head and tail
    /// joined by a marker that names `output_id` for paging. Returns the text and whether it was cut.
    pub fn render(&self, cap: usize, stream: Stream, output_id: Option<&str>) -> (String, bool) {
        if self.total <= cap as u64 {
            return (String::from_utf8_lossy(&self.kept).into_owned(), false);
        }
        let head = utf8_prefix(&self.kept[..(cap / 2).min(self.kept.len())]);
        let tail_bytes = &self.tail[self.tail.len().saturating_sub(cap / 2)..];
        let tail = utf8_suffix(tail_bytes);
        let omitted = self.total - head.len() as u64 - tail.len() as u64;
        let how = match output_id {
            Some(id) if (self.kept.len() as u64) < self.total => format!(
                "; the first {} bytes can be paged with ssh_output_read (outputId \"{id}\", stream \"{}\", offset {})",
                self.kept.len(),
                stream.name(),
                head.len()
            ),
            Some(id) => format!(
                "; page through them with ssh_output_read (outputId \"{id}\", stream \"{}\", offset {})",
                stream.name(),
                head.len()
            ),
            None => String::new(),
        };
        let marker = format!(
            "\n[... ssh-mcp: {omitted} bytes of {} omitted, {} bytes in all{how} ...]\n",
            stream.name(),
            self.total
        );
        let text = format!(
            "{}{marker}{}",
            String::from_utf8_lossy(head),
            String::from_utf8_lossy(tail)
        );
        (text, true)
    }
}

/// The longest prefix that does not end inside a UTF-8 sequence.
fn utf8_prefix(bytes: &[u8]) -> &[u8] {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes,
        Err(e) if e.error_len().is_none() => &bytes[..e.valid_up_to()],
        Err(_) => bytes, // not text anyway: cut where asked
    }
}

/// The suffix that does not start inside a UTF-8 sequence (continuation bytes skipped, at most 3).
fn utf8_suffix(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
        .count();
    &bytes[skip..]
}

/// The full (bounded) output of one command, kept for `ssh_output_read`.
#[derive(Debug)]
pub struct StoredOutput {
    /// Kept stdout bytes (the first `keep_output_bytes`).
    pub stdout: Vec<u8>,
    /// Kept stderr bytes.
    pub stderr: Vec<u8>,
    /// Bytes the command wrote to stdout in all.
    pub stdout_total: u64,
    /// Bytes the command wrote to stderr in all.
    pub stderr_total: u64,
}

impl StoredOutput {
    fn size(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }
}

/// Errors of `ssh_output_read`.
#[derive(Debug, Error)]
pub enum OutputError {
    /// Outputs are kept in memory, a bounded number of them: old ones are dropped.
    #[error(
        "no output with id \"{0}\": it never existed or was dropped (ssh-mcp keeps the most recent outputs only, in memory)"
    )]
    Unknown(String),
}

/// One page of a stored stream.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    /// The output this page is from.
    pub output_id: String,
    /// The stream read.
    pub stream: Stream,
    /// Byte offset of the first byte of `text` (moved forward when the asked offset fell inside a
    /// UTF-8 character).
    pub offset: u64,
    /// Where the next page starts.
    pub next_offset: u64,
    /// Bytes the command wrote to this stream in all.
    pub total_bytes: u64,
    /// Bytes of this stream that ssh-mcp kept; bytes past this are gone.
    pub stored_bytes: u64,
    /// True when `next_offset` reached the end of the kept bytes.
    pub eof: bool,
    /// The page (invalid UTF-8 replaced by U+FFFD).
    pub text: String,
}

/// Recent outputs, bounded in count and bytes; the oldest are dropped first.
#[derive(Debug)]
pub struct OutputStore {
    entries: Mutex<VecDeque<(String, std::sync::Arc<StoredOutput>)>>,
    max_entries: usize,
    max_bytes: usize,
    next_id: AtomicU64,
}

impl OutputStore {
    /// A store holding at most `max_entries` outputs and `max_bytes` bytes.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            max_entries: max_entries.max(1),
            max_bytes,
            next_id: AtomicU64::new(1),
        }
    }

    /// Reserves a fresh id (ids are never reused within one process).
    pub fn next_id(&self) -> String {
        format!("out-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Keeps `output` under `id`, dropping the oldest outputs to stay within bounds.
    pub fn insert(&self, id: String, output: StoredOutput) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.push_back((id, std::sync::Arc::new(output)));
        let mut bytes: usize = entries.iter().map(|(_, o)| o.size()).sum();
        while entries.len() > self.max_entries || (bytes > self.max_bytes && entries.len() > 1) {
            if let Some((_, old)) = entries.pop_front() {
                bytes -= old.size();
            }
        }
    }

    /// Reads `length` bytes of `stream` from `offset`, never splitting a UTF-8 character.
    pub fn read(
        &self,
        id: &str,
        stream: Stream,
        offset: u64,
        length: usize,
    ) -> Result<Page, OutputError> {
        let output = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, o)| o.clone())
                .ok_or_else(|| OutputError::Unknown(id.to_owned()))?
        };
        let (bytes, total) = match stream {
            Stream::Stdout => (&output.stdout, output.stdout_total),
            Stream::Stderr => (&output.stderr, output.stderr_total),
        };
        let len = bytes.len();
        let mut start = (offset.min(len as u64)) as usize;
        // Step over continuation bytes so the page starts on a character.
        while start < len
            && start < offset as usize + 3
            && (bytes[start] & 0b1100_0000) == 0b1000_0000
        {
            start += 1;
        }
        let end = start.saturating_add(length.max(1)).min(len);
        let slice = if end < len {
            utf8_prefix(&bytes[start..end])
        } else {
            &bytes[start..end]
        };
        // A page that would be empty because one character is longer than `length`: take it whole.
        let slice = if slice.is_empty() && end > start {
            &bytes[start..(start + 4).min(len)]
        } else {
            slice
        };
        let next = start + slice.len();
        Ok(Page {
            output_id: id.to_owned(),
            stream,
            offset: start as u64,
            next_offset: next as u64,
            total_bytes: total,
            stored_bytes: len as u64,
            eof: next >= len,
            text: String::from_utf8_lossy(slice).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
