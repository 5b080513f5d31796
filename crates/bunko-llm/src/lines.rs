//! Incremental line framing for streamed answers (SSE and NDJSON) with a bound on line length:
//! an upstream that sends a 10 MB line gets a clear error, not 10 MB of buffer per stream.

/// The longest line a stream may send.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Where the next scan for '\n' starts (bytes before it have none).
    scanned: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LineError {
    TooLong,
    NotUtf8,
}

impl Lines {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line (without `\r\n` / `\n`), if one is buffered.
    pub fn next_line(&mut self) -> Result<Option<String>, LineError> {
        match self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let end = self.scanned + i;
                if end > MAX_LINE {
                    return Err(LineError::TooLong);
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                String::from_utf8(line)
                    .map(Some)
                    .map_err(|_| LineError::NotUtf8)
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_LINE {
                    return Err(LineError::TooLong);
                }
                Ok(None)
            }
        }
    }

    /// What is left after the stream ended (a last line without a newline).
    pub fn rest(&mut self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        self.scanned = 0;
        let rest = std::mem::take(&mut self.buf);
        String::from_utf8(rest)
            .ok()
            .filter(|s| !s.trim().is_empty())
    }
}

/// One server-sent event: its `event:` name (empty when absent) and its joined `data:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Collects SSE fields line by line; a blank line dispatches the event.
#[derive(Debug, Default)]
pub struct Sse {
    event: String,
    data: Vec<String>,
}

impl Sse {
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lines_across_chunks() {
        let mut l = Lines::default();
        l.push(b"data: a");
        assert_eq!(l.next_line(), Ok(None));
        l.push(b"bc\r\n\ndata: 2\n");
        assert_eq!(l.next_line(), Ok(Some("data: abc".into())));
        assert_eq!(l.next_line(), Ok(Some(String::new())));
        assert_eq!(l.next_line(), Ok(Some("data: 2".into())));
        assert_eq!(l.next_line(), Ok(None));
        l.push(b"{\"done\":true}");
        assert_eq!(l.rest(), Some("{\"done\":true}".into()));
    }

    #[test]
    fn refuses_an_over_long_line_without_holding_it_all() {
        let mut l = Lines::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut err = None;
        for _ in 0..200 {
            l.push(&chunk);
            if let Err(e) = l.next_line() {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(LineError::TooLong));
        assert!(l.buf.len() <= MAX_LINE + chunk.len());
    }

    #[test]
    fn sse_events_dispatch_on_blank_lines() {
        let mut s = Sse::default();
        assert_eq!(s.line(": ping"), None);
        assert_eq!(s.line("event: message_start"), None);
        assert_eq!(s.line("data: {\"a\":1}"), None);
        assert_eq!(
            s.line(""),
            Some(SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into()
            })
        );
        assert_eq!(s.line(""), None);
    }
}
