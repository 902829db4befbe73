//! HTTP/1.1 messages: reading and writing requests and responses.
//!
//! Just what a webhook server and a client posting records need: a start
//! line, headers, and a body framed by `Content-Length`, by chunked
//! transfer coding, or (responses only) by the end of the connection.
//! Every size is bounded so that a peer cannot make either end allocate
//! without limit. Plain `http://` only: TLS is not supported yet.

use std::io::{self, BufRead, Read, Write};

use riffle::{Error, Result};

use crate::net::Url;

/// The most bytes a start line and its headers may take together.
pub const MAX_HEAD: u64 = 64 << 10;

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The connection ended before the first byte of a message: the peer
    /// is simply done (or the server closed a kept-alive connection).
    Closed,
    Io(io::Error),
    /// The message is not acceptable; for a request, the status to answer
    /// with (400, 411, 413, 501) and why.
    Bad(u16, String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Bad(400, "the message ends early".into())
        } else {
            ReadError::Io(e)
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Bad(status, why) => write!(f, "{why} ({status})"),
        }
    }
}

fn bad(why: impl Into<String>) -> ReadError {
    ReadError::Bad(400, why.into())
}

/// A start line and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `POST /path HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (in any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a header lists `token` (as `Connection: close` or
    /// `Transfer-Encoding: chunked` do), in any case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Reads a start line and headers, at most [`MAX_HEAD`] bytes.
pub fn read_head(r: &mut impl BufRead) -> std::result::Result<Head, ReadError> {
    let mut limited = r.take(MAX_HEAD);
    let mut line = Vec::new();
    let mut next_line = |line: &mut Vec<u8>| -> std::result::Result<bool, ReadError> {
        line.clear();
        limited.read_until(b'\n', line)?;
        if line.last() != Some(&b'\n') {
            return if line.is_empty() {
                Ok(false)
            } else if limited.limit() == 0 {
                Err(ReadError::Bad(431, "headers too large".into()))
            } else {
                Err(bad("the message ends early"))
            };
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(true)
    };
    // Empty lines before a request are allowed (RFC 9112 2.2).
    loop {
        if !next_line(&mut line)? {
            return Err(ReadError::Closed);
        }
        if !line.is_empty() {
            break;
        }
    }
    let start = String::from_utf8(line.clone()).map_err(|_| bad("start line is not UTF-8"))?;
    let mut headers = Vec::new();
    loop {
        if !next_line(&mut line)? {
            return Err(bad("the message ends in its headers"));
        }
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(bad("folded header line"));
        }
        let text = String::from_utf8_lossy(&line);
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| bad(format!("header line without a colon: {text}")))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(bad(format!("bad header name '{name}'")));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Head { start, headers })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection ends (responses only).
    Close,
    /// A request that says neither (answered 411 by the webhook server).
    Unknown,
}

/// The framing of a request body.
pub fn request_framing(head: &Head) -> std::result::Result<Framing, ReadError> {
    framing(head).map(|f| f.unwrap_or(Framing::Unknown))
}

/// The framing of a response body, for a request with `method`.
pub fn response_framing(
    head: &Head,
    status: u16,
    method: &str,
) -> std::result::Result<Framing, ReadError> {
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::Empty);
    }
    framing(head).map(|f| f.unwrap_or(Framing::Close))
}

fn framing(head: &Head) -> std::result::Result<Option<Framing>, ReadError> {
    let lengths: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    if let Some(te) = head.header("transfer-encoding") {
        // Both headers at once is how requests are smuggled past proxies:
        // refuse rather than pick one.
        if !lengths.is_empty() {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        // Chunked alone: other codings (gzip, ...) are not decoded here.
        if !te.trim().eq_ignore_ascii_case("chunked") {
            return Err(ReadError::Bad(
                501,
                format!("transfer coding '{te}' is not supported"),
            ));
        }
        return Ok(Some(Framing::Chunked));
    }
    match lengths.as_slice() {
        [] => Ok(None),
        [first, rest @ ..] => {
            if rest.iter().any(|l| l != first) {
                return Err(bad("conflicting Content-Length headers"));
            }
            if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("bad Content-Length '{first}'")));
            }
            first
                .parse()
                .map(|n| Some(Framing::Length(n)))
                .map_err(|_| bad(format!("bad Content-Length '{first}'")))
        }
    }
}

/// Reads a body of at most `max` bytes (413 when larger).
pub fn read_body(
    r: &mut impl BufRead,
    framing: Framing,
    max: u64,
) -> std::result::Result<Vec<u8>, ReadError> {
    let too_large = || ReadError::Bad(413, format!("body larger than {max} bytes"));
    match framing {
        Framing::Empty | Framing::Unknown => Ok(Vec::new()),
        Framing::Length(n) => {
            if n > max {
                return Err(too_large());
            }
            let mut body = vec![0; n as usize];
            r.read_exact(&mut body)?;
            Ok(body)
        }
        Framing::Close => {
            let mut body = Vec::new();
            r.take(max + 1).read_to_end(&mut body)?;
            if body.len() as u64 > max {
                return Err(too_large());
            }
            Ok(body)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                let mut line = Vec::new();
                r.take(1024).read_until(b'\n', &mut line)?;
                if line.last() != Some(&b'\n') {
                    return Err(bad("bad chunk size line"));
                }
                let text = String::from_utf8_lossy(&line);
                let size = text.trim_end().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size, 16)
                    .map_err(|_| bad(format!("bad chunk size '{size}'")))?;
                if size == 0 {
                    break;
                }
                if body.len() as u64 + size > max {
                    return Err(too_large());
                }
                let start = body.len();
                body.resize(start + size as usize, 0);
                r.read_exact(&mut body[start..])?;
                let mut crlf = [0; 2];
                r.read_exact(&mut crlf)?;
                if &crlf != b"\r\n" {
                    return Err(bad("chunk not followed by CRLF"));
                }
            }
            // Trailer fields, up to the empty line: read and ignored.
            loop {
                let mut line = Vec::new();
                r.take(MAX_HEAD).read_until(b'\n', &mut line)?;
                if line.last() != Some(&b'\n') {
                    return Err(bad("the message ends in its trailers"));
                }
                if line == b"\r\n" || line == b"\n" {
                    return Ok(body);
                }
            }
        }
    }
}

/// A request line's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    pub method: String,
    /// The path without its query.
    pub path: String,
}

pub fn parse_request_line(start: &str) -> std::result::Result<RequestLine, ReadError> {
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!("bad request line '{start}'")));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(bad(format!("bad method '{method}'")));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(505, format!("version '{version}'")));
    }
    // Origin form (`/path?query`) as clients send it, or absolute form
    // (`http://host/path`) as proxies do.
    let path = if target.starts_with('/') {
        target
    } else if let Some(rest) = target.split_once("://").map(|(_, r)| r) {
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        return Err(bad(format!("bad request target '{target}'")));
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Ok(RequestLine {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

/// A response's status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    /// The first line of the body, for error messages.
    pub fn first_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let line = text.lines().next().unwrap_or("").trim();
        line.chars().take(200).collect()
    }

    /// Whether the connection can carry another request.
    pub fn keeps_alive(&self, framing: Framing) -> bool {
        framing != Framing::Close && !self.head.has_token("connection", "close")
    }
}

/// Reads a response to a `method` request, skipping interim (1xx) ones.
pub fn read_response(
    r: &mut impl BufRead,
    method: &str,
    max_body: u64,
) -> std::result::Result<(Response, Framing), ReadError> {
    loop {
        let head = read_head(r)?;
        let mut parts = head.start.splitn(3, ' ');
        let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
            return Err(bad(format!("bad status line '{}'", head.start)));
        };
        let status: u16 = match code.parse() {
            Ok(s) if version.starts_with("HTTP/1.") && (100..1000).contains(&s) => s,
            _ => return Err(bad(format!("bad status line '{}'", head.start))),
        };
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let framing = response_framing(&head, status, method)?;
        let body = read_body(r, framing, max_body)?;
        return Ok((Response { status, head, body }, framing));
    }
}

/// The reason phrase for the statuses used here.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes a whole response, with `Content-Length` (except for 1xx and
/// 204, which have no body).
pub fn write_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if status >= 200 && status != 204 {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// Writes a whole request to `url` with `Content-Length`. Header values
/// are bytes (a record's key need not be UTF-8) but must not contain CR,
/// LF or NUL, which would end the header early.
pub fn write_request(
    w: &mut impl Write,
    method: &str,
    url: &Url,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> io::Result<()> {
    let mut out = format!("{method} {} HTTP/1.1\r\nHost: {}", url.path, url.host).into_bytes();
    if url.port != 80 {
        out.extend_from_slice(format!(":{}", url.port).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for (n, v) in headers {
        if v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("header {n} has a line break or NUL"),
            ));
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// Parses an `http://host[:port][/path]` URL; `https` is refused (not
/// supported yet).
pub fn parse_url(text: &str) -> Result<Url> {
    let url = Url::parse(text, 80)?;
    match url.scheme.as_str() {
        "http" => Ok(url),
        "https" => Err(Error::InvalidInput(format!(
            "URL '{text}': https is not supported yet; use http://"
        ))),
        other => Err(Error::InvalidInput(format!(
            "URL '{text}': scheme '{other}' is not http"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        bytes: &[u8],
        max: u64,
    ) -> std::result::Result<(RequestLine, Head, Vec<u8>), ReadError> {
        let mut r = bytes;
        let head = read_head(&mut r)?;
        let line = parse_request_line(&head.start)?;
        let body = read_body(&mut r, request_framing(&head)?, max)?;
        Ok((line, head, body))
    }

    fn status_of(e: ReadError) -> u16 {
        match e {
            ReadError::Bad(s, _) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_with_a_length_parse() {
        let (line, head, body) = request(
            b"POST /hook?x=1 HTTP/1.1\r\nHost: h\r\nX-Riffle-Key:  k1 \r\nContent-Length: 5\r\n\r\nhello",
            100,
        )
        .unwrap();
        assert_eq!(line.method, "POST");
        assert_eq!(line.path, "/hook");
        assert_eq!(head.header("x-riffle-key"), Some("k1"));
        assert_eq!(body, b"hello");
    }

    #[test]
    fn chunked_requests_parse() {
        let (_, _, body) = request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(body, b"hello world");
        let e = request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            8,
        )
        .unwrap_err();
        assert_eq!(status_of(e), 413);
        let e = request(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            8,
        )
        .unwrap_err();
        assert_eq!(status_of(e), 400);
    }

    #[test]
    fn bad_requests_get_the_right_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"garbage\r\n\r\n", 400),
            (b"POST / HTTP/2.0\r\n\r\n", 505),
            (b"POST / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            (b"POST / HTTP/1.1\r\nHost: h", 400),
        ];
        for (bytes, want) in cases {
            let e = request(bytes, 100).unwrap_err();
            assert_eq!(status_of(e), *want, "{}", String::from_utf8_lossy(bytes));
        }
        let huge = format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert_eq!(status_of(request(huge.as_bytes(), 100).unwrap_err()), 431);
        assert!(matches!(request(b"", 100), Err(ReadError::Closed)));
        let (_, head, _) = request(b"POST / HTTP/1.1\r\n\r\n", 100).unwrap();
        assert_eq!(request_framing(&head).unwrap(), Framing::Unknown);
    }

    #[test]
    fn responses_parse_by_every_framing() {
        let mut r = &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 No Content\r\n\r\n"[..];
        let (resp, framing) = read_response(&mut r, "POST", 100).unwrap();
        assert_eq!((resp.status, &resp.body[..]), (200, &b"ok"[..]));
        assert!(resp.keeps_alive(framing));
        let (resp, _) = read_response(&mut r, "POST", 100).unwrap();
        assert_eq!((resp.status, resp.body.len()), (204, 0));

        let mut r = &b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbusy\r\n6\r\n\nlater\r\n0\r\n\r\n"[..];
        let (resp, _) = read_response(&mut r, "POST", 100).unwrap();
        assert_eq!(resp.status, 503);
        assert_eq!(resp.body, b"busy\nlater");
        assert_eq!(resp.first_line(), "busy");

        let mut r =
            &b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\nno such thing\nat all"[..];
        let (resp, framing) = read_response(&mut r, "POST", 100).unwrap();
        assert_eq!(framing, Framing::Close);
        assert!(!resp.keeps_alive(framing));
        assert_eq!(resp.first_line(), "no such thing");

        assert!(read_response(&mut &b"HTTP/1.1 abc\r\n\r\n"[..], "POST", 100).is_err());
        assert!(read_response(&mut &b"SSH-2.0\r\n\r\n"[..], "POST", 100).is_err());
    }

    #[test]
    fn messages_are_written_whole() {
        let url = parse_url("http://example.com:8080/in?a=b").unwrap();
        let mut out = Vec::new();
        write_request(&mut out, "POST", &url, &[("X-Riffle-Key", b"k")], b"{}").unwrap();
        assert_eq!(
            out,
            b"POST /in?a=b HTTP/1.1\r\nHost: example.com:8080\r\nX-Riffle-Key: k\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert!(write_request(&mut Vec::new(), "POST", &url, &[("K", b"a\r\nb")], b"").is_err());
        let mut out = Vec::new();
        write_response(&mut out, 204, &[("Connection", "close")], b"").unwrap();
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let mut out = Vec::new();
        write_response(&mut out, 404, &[], b"no\n").unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n"
        );
        assert!(parse_url("https://h/x")
            .unwrap_err()
            .to_string()
            .contains("not supported yet"));
        assert_eq!(parse_url("http://h").unwrap().address(), "h:80");
    }
}
