//! Line framing: where each request line ends, and what to do with lines that are too long.
//!
//! The connection reads into a buffer and asks [`next_line`] where the first line ends; it parses the
//! line in place and then drops the bytes from the buffer, so framing costs no allocation and no
//! reference counting. A line longer than the limit is an error as soon as the limit is passed, even
//! before its end arrives, so a client cannot make the server buffer an endless line.

/// A request line was longer than the connection's limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line too long")]
pub struct LineTooLong;

/// Where the first complete line of a buffer lies.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Line {
    /// Length of the line's content, without its LF or the CR before it.
    pub len: usize,
    /// Bytes to drop from the buffer to move past the line, its ending included.
    pub consumed: usize,
}

/// Finds the first complete line of `buf`; `Ok(None)` when there is none yet.
///
/// `max_line` bounds a line's content in bytes, line ending excluded. A line that exceeds it, complete
/// or not, is an error; the caller then answers and closes the connection.
pub fn next_line(buf: &[u8], max_line: usize) -> Result<Option<Line>, LineTooLong> {
    match memchr::memchr(b'\n', buf) {
        Some(end) => {
            let len = if end > 0 && buf[end - 1] == b'\r' { end - 1 } else { end };
            if len > max_line {
                return Err(LineTooLong);
            }
            Ok(Some(Line { len, consumed: end + 1 }))
        }
        // No LF yet: the whole buffer is the line so far, except that a final CR may be its ending.
        None => {
            let pending = if buf.last() == Some(&b'\r') { buf.len() - 1 } else { buf.len() };
            if pending > max_line {
                Err(LineTooLong)
            } else {
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(mut input: &[u8], max: usize) -> (Vec<Result<Vec<u8>, LineTooLong>>, Vec<u8>) {
        let mut out = Vec::new();
        loop {
            match next_line(input, max) {
                Ok(Some(line)) => {
                    out.push(Ok(input[..line.len].to_vec()));
                    input = &input[line.consumed..];
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        (out, input.to_vec())
    }

    #[test]
    fn splits_lf_and_crlf_lines_and_keeps_the_partial_rest() {
        let (got, rest) = lines(b"GET\nPING\r\nREL ab", 100);
        assert_eq!(got, vec![Ok(b"GET".to_vec()), Ok(b"PING".to_vec())]);
        assert_eq!(rest, b"REL ab");
    }

    #[test]
    fn empty_lines_are_lines() {
        let (got, _) = lines(b"\n\r\n", 100);
        assert_eq!(got, vec![Ok(vec![]), Ok(vec![])]);
    }

    #[test]
    fn a_lone_cr_inside_a_line_is_content() {
        let (got, _) = lines(b"a\rb\n", 100);
        assert_eq!(got, vec![Ok(b"a\rb".to_vec())]);
    }

    #[test]
    fn a_line_at_the_limit_passes_and_one_past_it_fails() {
        assert_eq!(lines(b"aaaa\r\n", 4).0, vec![Ok(b"aaaa".to_vec())]);
        assert_eq!(lines(b"aaaaa\n", 4).0, vec![Err(LineTooLong)]);
    }

    #[test]
    fn an_overlong_partial_line_fails_before_its_end_arrives() {
        assert_eq!(lines(b"aaaa", 4).0, vec![]);
        assert_eq!(lines(b"aaaa\r", 4).0, vec![]);
        assert_eq!(lines(b"aaaaa", 4).0, vec![Err(LineTooLong)]);
        assert_eq!(lines(b"aaaa\rx", 4).0, vec![Err(LineTooLong)]);
    }
}
