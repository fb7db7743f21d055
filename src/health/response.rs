//! Reading a probe's HTTP response: decides when enough has arrived and what it says, from a
//! bounded buffer. Fed the bytes received so far; partial, oversized and malformed input all end
//! in a clear verdict.
//!
//! A `Parser` resumes where the previous call stopped: the search for the end of the headers
//! goes on from where it ended, the header lines are read once, a chunked body is decoded
//! chunk by chunk as it completes. So a response that arrives one byte at a time costs work
//! linear in its length, not quadratic.

use super::config::MAX_RESPONSE;

/// Why a probe's response is not a usable HTTP response. The discriminant is the stable code
/// stored in shared memory (`Reason::Invalid`): never renumber, only append. The Display text
/// is what the status page and the error log show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum ResponseError {
    #[error("not an HTTP/1.x response")]
    NotHttp = 0,
    #[error("response headers longer than {} KiB", MAX_RESPONSE / 1024)]
    HeadersTooLong = 1,
    #[error("connection closed before the response headers ended")]
    ClosedInHeaders = 2,
    #[error("malformed status line")]
    StatusLine = 3,
    #[error("malformed header line")]
    HeaderLine = 4,
    #[error("malformed Content-Length")]
    ContentLength = 5,
    #[error("response longer than {} KiB", MAX_RESPONSE / 1024)]
    TooLong = 6,
    #[error("connection closed inside a chunked body")]
    ClosedInChunks = 7,
    #[error("malformed chunked body")]
    Chunked = 8,
    #[error("connection closed before the body ended")]
    ClosedInBody = 9,
}

impl ResponseError {
    /// Every error, in the order of their codes (`ALL[e.code()] == e`).
    pub const ALL: [ResponseError; 10] = [
        ResponseError::NotHttp,
        ResponseError::HeadersTooLong,
        ResponseError::ClosedInHeaders,
        ResponseError::StatusLine,
        ResponseError::HeaderLine,
        ResponseError::ContentLength,
        ResponseError::TooLong,
        ResponseError::ClosedInChunks,
        ResponseError::Chunked,
        ResponseError::ClosedInBody,
    ];

    /// The stable number that stands for this error in shared memory.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The error a [`code`](Self::code) stands for; `None` for a number no error has.
    pub fn from_code(code: u32) -> Option<ResponseError> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i))
            .copied()
    }
}

/// What the bytes so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Keep reading.
    NeedMore,
    /// A complete response: its status, (decoded) body, and whether the connection can carry
    /// another request (HTTP/1.1, no `Connection: close`, framed by length or chunks, and
    /// nothing received beyond the response).
    Complete {
        status: u16,
        body: Vec<u8>,
        reusable: bool,
    },
    /// Not a usable HTTP response; the error says why.
    Invalid(ResponseError),
}

/// One response's parse in progress. Each call to [`Parser::parse`] must pass the same buffer,
/// only ever appended to; a new response needs a new (default) `Parser`. Once the answer is
/// `Complete` or `Invalid` the parser is done.
#[derive(Debug, Default)]
pub struct Parser {
    /// Where the response being read starts: after any interim (1xx) responses.
    start: usize,
    /// The search for the end of its headers goes on from here.
    scan_from: usize,
    /// The final response's head, once it has been read.
    head: Option<Head>,
    /// The response being read starts with "HTTP/1." (checked once).
    prefix_ok: bool,
    /// A chunked body: where the next chunk-size line starts (an offset in the buffer), where
    /// the search for its end goes on, the size it gave once read (with where the chunk's data
    /// starts), and the chunks decoded so far.
    next_chunk: usize,
    line_scan: usize,
    pending: Option<(usize, usize)>,
    body: Vec<u8>,
    /// Bytes looked at so far (the tests check that the work stays linear).
    looked: usize,
}

/// What the head of the final response says.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// Where the head ends and the body begins.
    end: usize,
    status: u16,
    /// HTTP/1.1, no `Connection: close`, no framing in doubt: the connection may carry another
    /// request if the peer has not closed it and the response ends exactly at the buffer's end.
    keep: bool,
    length: Option<usize>,
    chunked: bool,
}

/// `buf`: everything received so far; `eof`: the peer closed the connection; `head`: the probe
/// was a HEAD request (no body follows). A one-off parse (see [`Parser`] to resume).
pub fn parse(buf: &[u8], eof: bool, head: bool) -> Progress {
    Parser::default().parse(buf, eof, head)
}

impl Parser {
    /// As [`parse`], resuming from the previous call on the same (grown) buffer.
    pub fn parse(&mut self, buf: &[u8], eof: bool, head_request: bool) -> Progress {
        let head = match self.head {
            Some(h) => h,
            None => match self.read_head(buf, eof) {
                Ok(h) => {
                    self.head = Some(h);
                    self.next_chunk = h.end;
                    h
                }
                Err(p) => return p,
            },
        };
        let Head {
            end: head_end,
            status,
            ..
        } = head;
        let reusable = |end: usize| head.keep && !eof && end == buf.len();
        let rest = &buf[head_end..];
        if head_request || status < 200 || status == 204 || status == 304 {
            return Progress::Complete {
                status,
                body: Vec::new(),
                reusable: reusable(head_end),
            };
        }
        if head.chunked {
            return match self.dechunk(buf) {
                Chunks::Done(end) => Progress::Complete {
                    status,
                    body: core::mem::take(&mut self.body),
                    reusable: end.is_some_and(reusable),
                },
                Chunks::Partial if buf.len() >= MAX_RESPONSE => {
                    Progress::Invalid(ResponseError::TooLong)
                }
                Chunks::Partial if eof => Progress::Invalid(ResponseError::ClosedInChunks),
                Chunks::Partial => Progress::NeedMore,
                Chunks::Bad => Progress::Invalid(ResponseError::Chunked),
            };
        }
        match head.length {
            Some(l) if head_end.checked_add(l).is_none_or(|end| end > MAX_RESPONSE) => {
                Progress::Invalid(ResponseError::TooLong)
            }
            Some(l) if rest.len() >= l => Progress::Complete {
                status,
                body: rest[..l].to_vec(),
                reusable: reusable(head_end + l),
            },
            Some(_) if eof => Progress::Invalid(ResponseError::ClosedInBody),
            Some(_) => Progress::NeedMore,
            None if buf.len() >= MAX_RESPONSE => Progress::Invalid(ResponseError::TooLong),
            None if eof => Progress::Complete {
                status,
                body: rest.to_vec(),
                reusable: false,
            },
            None => Progress::NeedMore,
        }
    }

    /// Bytes looked at so far, over all calls.
    pub fn looked(&self) -> usize {
        self.looked
    }

    /// Reads on to the end of the final response's head, skipping interim responses; `Err`
    /// holds what to answer meanwhile (`NeedMore`) or the verdict.
    fn read_head(&mut self, buf: &[u8], eof: bool) -> Result<Head, Progress> {
        loop {
            const PREFIX: &[u8] = b"HTTP/1.";
            if !self.prefix_ok {
                let msg = &buf[self.start..];
                let n = msg.len().min(PREFIX.len());
                self.looked += n;
                if msg[..n] != PREFIX[..n] {
                    return Err(Progress::Invalid(ResponseError::NotHttp));
                }
                self.prefix_ok = n == PREFIX.len();
            }
            // Resume the search for the empty line where it stopped (3 bytes back, in case the
            // CRLF CRLF was cut).
            let from = self.scan_from.max(self.start);
            self.looked += buf.len() - from;
            let Some(head_end) = find(&buf[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
                self.scan_from = buf.len().saturating_sub(3);
                if buf.len() >= MAX_RESPONSE {
                    return Err(Progress::Invalid(ResponseError::HeadersTooLong));
                }
                return Err(if eof {
                    Progress::Invalid(ResponseError::ClosedInHeaders)
                } else {
                    Progress::NeedMore
                });
            };
            let header = &buf[self.start..head_end];
            self.looked += header.len();
            let line_end = find(header, b"\r\n").unwrap_or(header.len());
            let (minor, status) = match parse_status_line(&header[..line_end]) {
                Some(s) => s,
                None => return Err(Progress::Invalid(ResponseError::StatusLine)),
            };
            // An interim response (100 Continue, 103 Early Hints, ...) has no body: the final
            // one follows. 101 Switching Protocols ends HTTP on the connection: it is final.
            if (100..200).contains(&status) && status != 101 {
                self.start = head_end;
                self.scan_from = head_end;
                self.prefix_ok = false;
                continue;
            }
            return read_fields(&header[line_end + 2..], head_end, minor, status)
                .map_err(Progress::Invalid);
        }
    }

    /// Decodes the chunks that have arrived since the last call.
    fn dechunk(&mut self, buf: &[u8]) -> Chunks {
        /// The longest chunk-size line (size and extensions) before its CRLF.
        const MAX_LINE: usize = 64;
        loop {
            let (size, data_start) = match self.pending {
                Some(p) => p,
                None => {
                    // The size line: its CRLF must come within MAX_LINE bytes.
                    let line_start = self.next_chunk;
                    let window_end = buf.len().min(line_start + MAX_LINE + 2);
                    let from = self.line_scan.max(line_start);
                    self.looked += window_end - from;
                    let Some(eol) = find(&buf[from..window_end], b"\r\n").map(|i| from + i) else {
                        if window_end - line_start > MAX_LINE + 1 {
                            return Chunks::Bad;
                        }
                        self.line_scan = window_end.saturating_sub(1).max(line_start);
                        return Chunks::Partial;
                    };
                    let line = &buf[line_start..eol];
                    self.looked += line.len();
                    let size_text = line
                        .split(|&b| b == b';')
                        .next()
                        .map(trim)
                        .unwrap_or_default();
                    let Some(size) = Some(size_text)
                        .filter(|t| t.len() <= 8)
                        .and_then(|t| parse_digits(t, 16))
                    else {
                        return Chunks::Bad;
                    };
                    if size == 0 {
                        let end = buf[eol + 2..].starts_with(b"\r\n").then_some(eol + 4);
                        return Chunks::Done(end);
                    }
                    self.pending = Some((size, eol + 2));
                    (size, eol + 2)
                }
            };
            let data = &buf[data_start..];
            // The chunk and its CRLF (`size` may be as large as 4 GiB: no sum may overflow).
            let Some(end) = size.checked_add(2) else {
                return Chunks::Bad;
            };
            if data.len() < end {
                return Chunks::Partial;
            }
            self.looked += end;
            if &data[size..end] != b"\r\n" {
                return Chunks::Bad;
            }
            self.body.extend_from_slice(&data[..size]);
            self.pending = None;
            self.next_chunk = data_start + end;
            self.line_scan = self.next_chunk;
        }
    }
}

/// The header lines of the final response (after its status line, up to the empty line).
fn read_fields(fields: &[u8], end: usize, minor: u8, status: u16) -> Result<Head, ResponseError> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    // Framing that leaves the end of the message in doubt: the connection is not reused.
    let mut doubtful = false;
    let mut close = false;
    for line in fields.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ResponseError::HeaderLine);
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            // All digits but too large to count: longer than anything we read.
            let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
            match parse_digits(value, 10).or(digits.then_some(usize::MAX)) {
                Some(l) => {
                    // Two different lengths: which one frames the body is unclear.
                    doubtful |= length.is_some_and(|old| old != l);
                    length = Some(l)
                }
                None => return Err(ResponseError::ContentLength),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|v| trim(v).eq_ignore_ascii_case(b"chunked"));
            // A transfer coding that does not end in chunked delimits the body by closing
            // the connection, whatever Content-Length says.
            doubtful |= !chunked;
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= value
                .split(|&b| b == b',')
                .any(|v| trim(v).eq_ignore_ascii_case(b"close"));
        }
    }
    Ok(Head {
        end,
        status,
        keep: minor == b'1' && !close && !doubtful && status >= 200,
        length,
        chunked,
    })
}

/// The minor version digit and the status code.
fn parse_status_line(line: &[u8]) -> Option<(u8, u16)> {
    // "HTTP/1.1 200 OK" (the reason phrase may be empty or absent).
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    if !minor.is_ascii_digit() {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if rest.len() > 3 && rest[3] != b' ' {
        return None;
    }
    let code = core::str::from_utf8(&rest[..3]).ok()?.parse::<u16>().ok()?;
    (100..=599).contains(&code).then_some((minor, code))
}

enum Chunks {
    /// The last chunk has arrived, and where the message ends when it has no trailers and its
    /// final CRLF has arrived (`None`: it cannot be told, so the connection is not reused).
    Done(Option<usize>),
    Partial,
    Bad,
}

/// A number made of digits only (no sign, no space) in `radix`, or `None`, also when it does
/// not fit.
fn parse_digits(text: &[u8], radix: u32) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0usize, |n, &c| {
        let d = char::from(c).to_digit(radix)?;
        n.checked_mul(radix as usize)?.checked_add(d as usize)
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error's code gives it back, codes are the positions in `ALL`, and no two errors
    /// read alike on the status page. The texts (and codes: shared memory outlives a reload)
    /// are pinned.
    #[test]
    fn response_errors_round_trip_through_their_codes() {
        let pinned = [
            (0, "not an HTTP/1.x response"),
            (1, "response headers longer than 16 KiB"),
            (2, "connection closed before the response headers ended"),
            (3, "malformed status line"),
            (4, "malformed header line"),
            (5, "malformed Content-Length"),
            (6, "response longer than 16 KiB"),
            (7, "connection closed inside a chunked body"),
            (8, "malformed chunked body"),
            (9, "connection closed before the body ended"),
        ];
        assert_eq!(ResponseError::ALL.len(), pinned.len());
        let mut seen = std::collections::HashSet::new();
        for (i, (e, (code, text))) in ResponseError::ALL.into_iter().zip(pinned).enumerate() {
            assert_eq!(usize::from(e.code()), i, "{e:?}");
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(ResponseError::from_code(u32::from(e.code())), Some(e));
            assert_eq!(e.to_string(), text);
            assert!(seen.insert(e.to_string()), "{e:?} repeats a message");
        }
        assert_eq!(ResponseError::from_code(pinned.len() as u32), None);
        assert_eq!(ResponseError::from_code(u32::MAX), None);
    }

    /// Complete; the connection is closed after it.
    fn done(status: u16, body: &str) -> Progress {
        Progress::Complete {
            status,
            body: body.as_bytes().to_vec(),
            reusable: false,
        }
    }

    /// Complete; the connection can carry the next probe.
    fn kept(status: u16, body: &str) -> Progress {
        Progress::Complete {
            status,
            body: body.as_bytes().to_vec(),
            reusable: true,
        }
    }

    #[test]
    fn content_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready";
        assert_eq!(parse(r, false, false), kept(200, "ready"));
        // Fed byte by byte, it needs more until the last one.
        for i in 0..r.len() {
            assert_eq!(parse(&r[..i], false, false), Progress::NeedMore, "at {i}");
        }
        assert_eq!(
            parse(&r[..r.len() - 1], true, false),
            Progress::Invalid(ResponseError::ClosedInBody)
        );
    }

    #[test]
    fn close_delimited_and_head() {
        let r = b"HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\nbusy";
        assert_eq!(parse(r, false, false), Progress::NeedMore);
        assert_eq!(parse(r, true, false), done(503, "busy"));
        let h = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(parse(h, false, true), kept(200, ""));
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n", false, false),
            kept(204, "")
        );
    }

    #[test]
    fn chunked() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n6;x=y\r\n ready\r\n0\r\n\r\n";
        assert_eq!(parse(r, false, false), kept(200, "ok ready"));
        assert_eq!(parse(&r[..r.len() - 10], false, false), Progress::NeedMore);
        // The last chunk without its final CRLF yet, or with trailers: complete, but where the
        // message ends is not known, so the connection is not reused.
        assert_eq!(
            parse(&r[..r.len() - 2], false, false),
            done(200, "ok ready")
        );
        let trailer =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX: y\r\n\r\n";
        assert_eq!(parse(trailer, false, false), done(200, "ok"));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n";
        assert_eq!(
            parse(bad, false, false),
            Progress::Invalid(ResponseError::Chunked)
        );
    }

    #[test]
    fn reuse() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n";
        let with = |extra: &str, body: &str| format!("{ok}{extra}\r\n{body}").into_bytes();
        assert_eq!(parse(&with("", "ok"), false, false), kept(200, "ok"));
        // The server closes: by header (any case, in a list), by HTTP/1.0, by EOF.
        for close in ["Connection: close\r\n", "connection: Upgrade, CLOSE\r\n"] {
            assert_eq!(parse(&with(close, "ok"), false, false), done(200, "ok"));
        }
        assert_eq!(
            parse(&with("Connection: keep-alive\r\n", "ok"), false, false),
            kept(200, "ok")
        );
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse(old, false, false), done(200, "ok"));
        assert_eq!(parse(&with("", "ok"), true, false), done(200, "ok"));
        // Bytes beyond the response: the stream is out of step, close it.
        assert_eq!(
            parse(&with("", "okHTTP/1.1"), false, false),
            done(200, "ok")
        );
        // Framing in doubt: two different lengths, a transfer coding other than chunked.
        let two = with("Content-Length: 2\r\n", "ok");
        assert_eq!(parse(&two, false, false), kept(200, "ok"));
        let differ = with("Content-Length: 3\r\n", "okk");
        assert!(matches!(
            parse(&differ, false, false),
            Progress::Complete {
                reusable: false,
                ..
            }
        ));
        let gzip = with("Transfer-Encoding: gzip\r\n", "ok");
        assert_eq!(parse(&gzip, false, false), done(200, "ok"));
        // An error status does not prevent reuse by itself.
        let e = b"HTTP/1.1 503 x\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse(e, false, false), kept(503, ""));
    }

    #[test]
    fn garbage() {
        assert_eq!(
            parse(b"SSH-2.0-OpenSSH\r\n", false, false),
            Progress::Invalid(ResponseError::NotHttp)
        );
        assert_eq!(
            parse(b"\x16\x03\x01\x02", false, false),
            Progress::Invalid(ResponseError::NotHttp)
        );
        assert_eq!(parse(b"HTT", false, false), Progress::NeedMore);
        assert_eq!(
            parse(b"HTTP/1.1 2000 OK\r\n\r\n", false, false),
            Progress::Invalid(ResponseError::StatusLine)
        );
        assert_eq!(
            parse(b"HTTP/1.1 abc OK\r\n\r\n", false, false),
            Progress::Invalid(ResponseError::StatusLine)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nBroken\r\n\r\n", false, false),
            Progress::Invalid(ResponseError::HeaderLine)
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                false,
                false
            ),
            Progress::Invalid(ResponseError::ContentLength)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nX: y", true, false),
            Progress::Invalid(ResponseError::ClosedInHeaders)
        );
        assert_eq!(
            parse(b"", true, false),
            Progress::Invalid(ResponseError::ClosedInHeaders)
        );
    }

    #[test]
    fn oversized() {
        let mut endless = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        endless.resize(MAX_RESPONSE, b'x');
        assert_eq!(
            parse(&endless, false, false),
            Progress::Invalid(ResponseError::TooLong)
        );
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nxx";
        assert_eq!(
            parse(big, false, false),
            Progress::Invalid(ResponseError::TooLong)
        );
        let mut long_headers = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long_headers.resize(MAX_RESPONSE, b'a');
        assert_eq!(
            parse(&long_headers, false, false),
            Progress::Invalid(ResponseError::HeadersTooLong)
        );
    }

    /// Interim 1xx responses (RFC 9110 section 15.2: a status line, headers, an empty line, no
    /// body; any number of them) come before the final response and are skipped; 101 is final.
    #[test]
    fn interim_responses() {
        let r = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
                  HTTP/1.1 100 Continue\r\n\r\n\
                  HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready";
        assert_eq!(parse(r, false, false), kept(200, "ready"));
        // Split at every byte: nothing is final before the last byte, and EOF on the way is
        // never taken for an answer.
        for i in 0..r.len() {
            assert_eq!(parse(&r[..i], false, false), Progress::NeedMore, "at {i}");
            assert!(
                matches!(parse(&r[..i], true, false), Progress::Invalid(_)),
                "at {i}"
            );
        }
        // The final response's framing and headers count, not the interim ones'.
        let r = b"HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n\
                  HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n";
        assert_eq!(parse(r, false, false), kept(503, "no"));
        // HEAD: the final response has no body, the interim ones never have one.
        let r = b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(parse(r, false, true), kept(200, ""));
        // Only an interim response, then the end.
        assert_eq!(
            parse(b"HTTP/1.1 103 Early Hints\r\n\r\n", true, false),
            Progress::Invalid(ResponseError::ClosedInHeaders)
        );
        // After an interim response, what follows must be a response too.
        assert_eq!(
            parse(b"HTTP/1.1 100 Continue\r\n\r\nhello", false, false),
            Progress::Invalid(ResponseError::NotHttp)
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 20x\r\n\r\n",
                false,
                false
            ),
            Progress::Invalid(ResponseError::StatusLine)
        );
        // 101 Switching Protocols ends the HTTP exchange: it is the answer (a failing status
        // unless status= lists it), and the connection is not reused.
        assert_eq!(
            parse(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
                false,
                false
            ),
            done(101, "")
        );
        // The 16 KiB bound covers the interim responses too.
        let mut many = Vec::new();
        while many.len() < MAX_RESPONSE {
            many.extend_from_slice(b"HTTP/1.1 103 Early Hints\r\n\r\n");
        }
        assert_eq!(
            parse(&many, false, false),
            Progress::Invalid(ResponseError::HeadersTooLong)
        );
        let mut big = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        big.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 16330\r\n\r\n");
        assert_eq!(
            parse(&big, false, false),
            Progress::Invalid(ResponseError::TooLong)
        );
    }

    /// Fed one byte at a time, the parser looks at each byte a bounded number of times: the
    /// work for a trickled response is linear in its length, not quadratic.
    #[test]
    fn trickled_response_is_parsed_in_linear_work() {
        let mut long = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
                         HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            .to_vec();
        for i in 0..200 {
            long.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(20)).as_bytes());
        }
        long.extend_from_slice(b"\r\n");
        let mut body = String::new();
        for i in 0..300 {
            let chunk = format!("chunk {i};");
            body.push_str(&chunk);
            long.extend_from_slice(format!("{:x};ext=1\r\n{chunk}\r\n", chunk.len()).as_bytes());
        }
        long.extend_from_slice(b"0\r\n\r\n");
        assert!(long.len() > 10_000 && long.len() < MAX_RESPONSE);
        // (Up to the last chunk's final CRLF: the last chunk alone is already a complete,
        // not reusable, response.)
        let mut p = Parser::default();
        for i in 0..long.len() - 2 {
            assert!(
                p.parse(&long[..i], false, false) == Progress::NeedMore,
                "at {i}"
            );
        }
        assert!(p.parse(&long, false, false) == kept(200, &body));
        // A few looks per byte (the header search backs up 3 bytes per call, the header lines
        // and each chunk are read once more when complete): about 3.5 here, where parsing
        // from the start each time looked at 89 million bytes.
        assert!(
            p.looked() <= 5 * long.len(),
            "{} bytes looked at for {} bytes",
            p.looked(),
            long.len()
        );
    }

    /// Numbers from the peer that do not fit, or nearly: no overflow (a debug build checks
    /// arithmetic), just a verdict.
    #[test]
    fn huge_numbers() {
        let max = usize::MAX;
        for len in [
            format!("{max}"),
            format!("{}", max - 1),
            format!("{}", max - 40),
            "18446744073709551615".to_string(),
            "99999999999999999999999".to_string(),
        ] {
            let r = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\nxx");
            assert_eq!(
                parse(r.as_bytes(), false, false),
                Progress::Invalid(ResponseError::TooLong),
                "{len}"
            );
        }
        // A sign is not part of a length (RFC 9110: 1*DIGIT), nor of a chunk size.
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
                false,
                false
            ),
            Progress::Invalid(ResponseError::ContentLength)
        );
        let signed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nok\r\n0\r\n\r\n";
        assert_eq!(
            parse(signed, false, false),
            Progress::Invalid(ResponseError::Chunked)
        );
        // The largest chunk sizes: waited for (within the limit), never added up past it.
        for size in ["ffffffff", "fffffffe", "7fffffff"] {
            let r = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nxx");
            assert_eq!(
                parse(r.as_bytes(), false, false),
                Progress::NeedMore,
                "{size}"
            );
            assert_eq!(
                parse(r.as_bytes(), true, false),
                Progress::Invalid(ResponseError::ClosedInChunks)
            );
        }
    }

    /// Random and mutated responses, fed whole and in every split: the parser never panics,
    /// never reads a body longer than the limit, and a prefix never completes when the whole
    /// did not (a worker runs with panic=abort, so a panic here would kill it).
    #[test]
    fn never_panics_on_noise() {
        let seeds: [&[u8]; 5] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready",
            b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.0 503 x\r\nConnection: close\r\n\r\nbusy",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ];
        let alphabet = b"HTP/1. 0123456789abcdefxABCDEF:;,\r\n-chunkedContent-LengthTransfer";
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20_000 {
            let mut buf = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (buf.len() + 1);
                match next() % 3 {
                    0 if at < buf.len() => buf[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => buf.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ if at < buf.len() => {
                        buf.remove(at);
                    }
                    _ => {}
                }
            }
            if round % 97 == 0 {
                buf.resize(MAX_RESPONSE + 1 + (next() % 64) as usize, b'x');
            }
            for eof in [false, true] {
                for head in [false, true] {
                    let whole = parse(&buf, eof, head);
                    if let Progress::Complete { body, .. } = &whole {
                        assert!(body.len() <= MAX_RESPONSE, "{}", buf.escape_ascii());
                    }
                    // Fed cut by cut, a resumed parser answers as a fresh one does at every cut.
                    let mut resumed = Parser::default();
                    let mut resumed_done = false;
                    for cut in 0..buf.len().min(200) {
                        let part = parse(&buf[..cut], false, head);
                        if !resumed_done {
                            let r = resumed.parse(&buf[..cut], false, head);
                            assert_eq!(r, part, "at {cut}: {}", buf.escape_ascii());
                            resumed_done = r != Progress::NeedMore;
                        }
                        if let Progress::Complete { reusable: true, .. } = part {
                            // A reusable answer ends exactly at the cut: nothing may follow
                            // it in the same buffer when the whole is read.
                            assert!(
                                !matches!(whole, Progress::Complete { reusable: true, .. })
                                    || cut == buf.len(),
                                "{}",
                                buf.escape_ascii()
                            );
                        }
                    }
                    if !resumed_done {
                        assert_eq!(
                            resumed.parse(&buf, eof, head),
                            whole,
                            "{}",
                            buf.escape_ascii()
                        );
                    }
                }
            }
        }
    }
}
