//! Server-sent events, as MCP's Streamable HTTP transport uses them: each JSON-RPC message is the
//! `data` of one `message` event.

/// Encodes one message as an SSE event. Newlines in the JSON (whitespace only: newlines inside
/// strings are escaped) are split into several `data:` lines, which SSE joins back with `\n`.
pub fn encode(json: &str, event_id: Option<&str>) -> String {
    let mut out = String::with_capacity(json.len() + 32);
    if let Some(id) = event_id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\n");
    for line in json.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
}

/// Why decoding stopped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    /// One event grew beyond the limit.
    #[error("server-sent event larger than {0} bytes")]
    TooLarge(usize),
    /// The stream is not UTF-8.
    #[error("server-sent event stream is not UTF-8")]
    Utf8,
}

/// An incremental SSE decoder: feed it chunks as they arrive, take out complete events.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_event: usize,
    data: String,
    event: String,
    id: Option<String>,
    has_data: bool,
    retry: Option<u64>,
}

impl Decoder {
    /// A decoder that refuses events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max_event,
            data: String::new(),
            event: String::new(),
            id: None,
            has_data: false,
            retry: None,
        }
    }

    /// The reconnection delay the server last asked for (`retry:`), in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id seen (`id:`), for `Last-Event-ID` when resuming.
    pub fn last_event_id(&self) -> Option<&str> {
        self.id.as_deref().filter(|id| !id.is_empty())
    }

    /// Adds a chunk and returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(at) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + at;
            let line = &self.buf[start..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line)
                .map_err(|_| SseError::Utf8)?
                .to_owned();
            start = end + 1;
            if let Some(event) = self.line(&line)? {
                events.push(event);
            }
        }
        self.buf.drain(..start);
        if self.buf.len() + self.data.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Result<Option<Event>, SseError> {
        if line.is_empty() {
            if !self.has_data {
                self.event.clear();
                return Ok(None);
            }
            self.has_data = false;
            let event = if self.event.is_empty() {
                "message".to_owned()
            } else {
                std::mem::take(&mut self.event)
            };
            return Ok(Some(Event {
                event,
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            }));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > self.max_event {
                    return Err(SseError::TooLarge(self.max_event));
                }
            }
            "event" => self.event = value.to_owned(),
            "id" => self.id = Some(value.to_owned()),
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_events_decode_to_the_same_json() {
        let json = "{\"a\":\n1}";
        let wire = encode(json, Some("7"));
        let mut d = Decoder::new(1024);
        let mut events = Vec::new();
        for b in wire.as_bytes() {
            events.extend(d.feed(&[*b]).unwrap());
        }
        assert_eq!(
            events,
            vec![Event {
                event: "message".into(),
                data: json.into(),
                id: Some("7".into())
            }]
        );
    }

    #[test]
    fn comments_and_priming_events_without_data_are_skipped() {
        let mut d = Decoder::new(1024);
        let events = d
            .feed(b": keepalive\n\nid: 1\ndata:\n\nevent: message\ndata: {}\n\n")
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, "");
        assert_eq!(events[1].data, "{}");
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut d = Decoder::new(8);
        assert_eq!(d.feed(b"data: 0123456789\n"), Err(SseError::TooLarge(8)));
    }
}
