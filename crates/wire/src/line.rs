//! Newline-delimited messages, as MCP's stdio transport frames them.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite};

/// What one read of a line produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its newline (and without a trailing `\r`).
    Data(Vec<u8>),
    /// A line longer than the cap; its bytes were discarded up to and including its newline.
    TooLong(usize),
    /// End of input. A final line without a newline is returned as `Data` first.
    Eof,
}

/// Reads newline-delimited lines with a size cap, so that a peer that never sends a newline
/// cannot make the reader buffer without bound.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    buf: Vec<u8>,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Wraps a buffered reader; lines longer than `max` bytes are skipped and reported.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            max,
            buf: Vec::new(),
        }
    }

    /// Reads the next line.
    pub async fn next_line(&mut self) -> std::io::Result<Line> {
        self.buf.clear();
        let mut skipped = 0usize;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if skipped > 0 {
                    return Ok(Line::TooLong(skipped));
                }
                if self.buf.is_empty() {
                    return Ok(Line::Eof);
                }
                return Ok(Line::Data(trim_cr(std::mem::take(&mut self.buf))));
            }
            let (chunk, done) = match memchr(available) {
                Some(at) => (&available[..at], Some(at + 1)),
                None => (available, None),
            };
            if skipped > 0 || self.buf.len() + chunk.len() > self.max {
                skipped += self.buf.len() + chunk.len();
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(chunk);
            }
            let used = done.unwrap_or(available.len());
            self.inner.consume(used);
            if done.is_some() {
                if skipped > 0 {
                    return Ok(Line::TooLong(skipped));
                }
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    // Blank lines between messages are tolerated, as most peers do.
                    self.buf.clear();
                    continue;
                }
                return Ok(Line::Data(trim_cr(std::mem::take(&mut self.buf))));
            }
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn trim_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// This process's stdin and stdout for async use. When they are pipes (as when a client spawns
/// an MCP server) they are registered with the reactor directly; otherwise (a terminal, a file)
/// Tokio's blocking-thread versions are used. The pipe path avoids a thread hand-off per read
/// and per write, which dominates the cost of a small message.
pub fn stdio() -> (
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncWrite + Send + Unpin>,
) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;

    let input: Box<dyn AsyncRead + Send + Unpin> = match std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Receiver::from_owned_fd)
    {
        Ok(rx) => Box::new(rx),
        Err(_) => Box::new(tokio::io::stdin()),
    };
    let output: Box<dyn AsyncWrite + Send + Unpin> = match std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .and_then(pipe::Sender::from_owned_fd)
    {
        Ok(tx) => Box::new(tx),
        Err(_) => Box::new(tokio::io::stdout()),
    };
    (input, output)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = LineReader::new(tokio::io::BufReader::with_capacity(4, input), max);
        let mut out = Vec::new();
        loop {
            let line = reader.next_line().await.unwrap();
            let end = line == Line::Eof;
            out.push(line);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn splits_lines_across_small_reads() {
        let got = lines(b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\"", 64).await;
        assert_eq!(
            got,
            vec![
                Line::Data(b"{\"a\":1}".to_vec()),
                Line::Data(b"{\"b\":2}".to_vec()),
                Line::Data(b"{\"c\"".to_vec()),
                Line::Eof
            ]
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_skipped_and_the_next_one_is_read() {
        let got = lines(b"0123456789abcdef\nok\n", 8).await;
        assert_eq!(
            got,
            vec![Line::TooLong(16), Line::Data(b"ok".to_vec()), Line::Eof]
        );
    }

    #[tokio::test]
    async fn a_never_ending_line_is_bounded() {
        let input = vec![b'x'; 10_000];
        let got = lines(&input, 100).await;
        assert_eq!(got, vec![Line::TooLong(10_000), Line::Eof]);
    }
}
