//! The NATS client protocol, as much of it as the connector needs.
//!
//! NATS speaks lines of text: the server greets with `INFO {json}`, the
//! client answers `CONNECT {json}`, and then both sides exchange `PUB`/
//! `HPUB` (client to server), `MSG`/`HMSG` (server to client), `SUB`,
//! `PING`/`PONG`, `+OK` and `-ERR`. A message line gives the byte counts
//! of the payload that follows it, so framing needs no escaping. Headers
//! (`HPUB`/`HMSG`) are an HTTP-like block starting with `NATS/1.0`, which
//! may carry a status code (JetStream uses 404, 408 and 503 in replies).
//!
//! The server processes one connection's commands in order, so a `PING`
//! answered by `PONG` proves that everything written before it arrived and
//! was handled: that is how publishes and acknowledgements are flushed.
//!
//! JetStream is not a separate protocol: its API is request/reply on
//! `$JS.API.>` subjects with JSON bodies, and its acknowledgements are
//! publishes to the reply subject of each delivered message.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use riffle::{Error, Result};
use serde_json::{json, Value};

use crate::net::{self, Url};

/// The longest control line accepted before the stream is declared broken;
/// a real one (`MSG` with long subjects, `INFO`) is far shorter.
const MAX_LINE: usize = 64 * 1024;
/// How long the handshake and JetStream API calls may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One message delivered by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    /// The subscription it was delivered to.
    pub sid: u64,
    pub reply: Option<String>,
    /// The status of a header block such as `NATS/1.0 408 Request
    /// Timeout`, with its description.
    pub status: Option<(u16, String)>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
}

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Info(String),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    Err(String),
}

fn protocol(what: impl std::fmt::Display) -> Error {
    Error::Protocol {
        server: "NATS server".into(),
        message: format!("NATS protocol error: {what}"),
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Parses one operation from the start of `buf`: `None` if it is not
/// complete yet, else the operation and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Op, usize)>> {
    let Some(eol) = find_crlf(buf) else {
        if buf.len() > MAX_LINE {
            return Err(protocol("control line too long"));
        }
        return Ok(None);
    };
    let line =
        std::str::from_utf8(&buf[..eol]).map_err(|_| protocol("control line is not UTF-8"))?;
    let (name, args) = line
        .trim_end()
        .split_once([' ', '\t'])
        .unwrap_or((line.trim_end(), ""));
    let args = args.trim();
    let after = eol + 2;
    let op = match name.to_ascii_uppercase().as_str() {
        "PING" => Op::Ping,
        "PONG" => Op::Pong,
        "+OK" => Op::Ok,
        "-ERR" => Op::Err(args.trim_matches('\'').to_owned()),
        "INFO" => Op::Info(args.to_owned()),
        "MSG" | "HMSG" => {
            let with_headers = name.eq_ignore_ascii_case("HMSG");
            let parts: Vec<&str> = args.split_ascii_whitespace().collect();
            // MSG subject sid [reply] size; HMSG subject sid [reply] hsize size.
            let counts = if with_headers { 2 } else { 1 };
            if parts.len() != 2 + counts && parts.len() != 3 + counts {
                return Err(protocol(format!("bad message line '{line}'")));
            }
            let number = |s: &str| -> Result<usize> {
                s.parse()
                    .map_err(|_| protocol(format!("bad number '{s}' in '{line}'")))
            };
            let total = number(parts[parts.len() - 1])?;
            let header_len = if with_headers {
                number(parts[parts.len() - 2])?
            } else {
                0
            };
            if header_len > total {
                return Err(protocol(format!("header longer than message in '{line}'")));
            }
            if buf.len() < after + total + 2 {
                return Ok(None);
            }
            if &buf[after + total..after + total + 2] != b"\r\n" {
                return Err(protocol(format!("message not followed by CRLF: '{line}'")));
            }
            let body = &buf[after..after + total];
            let (status, headers) = if with_headers {
                parse_headers(&body[..header_len])?
            } else {
                (None, Vec::new())
            };
            let msg = Msg {
                subject: parts[0].to_owned(),
                sid: number(parts[1])? as u64,
                reply: (parts.len() == 3 + counts).then(|| parts[2].to_owned()),
                status,
                headers,
                payload: body[header_len..].to_vec(),
            };
            return Ok(Some((Op::Msg(msg), after + total + 2)));
        }
        _ => return Err(protocol(format!("unknown operation '{line}'"))),
    };
    Ok(Some((op, after)))
}

type Headers = Vec<(String, Vec<u8>)>;

/// Parses a `NATS/1.0[ status[ description]]` header block.
pub fn parse_headers(block: &[u8]) -> Result<(Option<(u16, String)>, Headers)> {
    let mut lines = block
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let first = std::str::from_utf8(first).map_err(|_| protocol("header line is not UTF-8"))?;
    let rest = first
        .strip_prefix("NATS/1.0")
        .ok_or_else(|| protocol(format!("header block starts with '{first}'")))?
        .trim();
    let status = match rest.split_once(' ').unwrap_or((rest, "")) {
        ("", _) => None,
        (code, description) => Some((
            code.parse()
                .map_err(|_| protocol(format!("bad status '{rest}'")))?,
            description.trim().to_owned(),
        )),
    };
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| protocol("header line without ':'"))?;
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
        let value = line[colon + 1..].trim_ascii_start().to_vec();
        headers.push((name, value));
    }
    Ok((status, headers))
}

/// Fails unless `subject` can go on a protocol line: not empty, no
/// whitespace (which would split the line).
pub fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty() || subject.contains(|c: char| c.is_whitespace()) {
        return Err(Error::InvalidInput(format!(
            "NATS subject '{subject}' is empty or contains whitespace"
        )));
    }
    Ok(())
}

/// Appends a `PUB` (or `HPUB` when there are headers) to `out`.
pub fn encode_pub(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: &[(String, Vec<u8>)],
    payload: &[u8],
) -> Result<()> {
    check_subject(subject)?;
    let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
    if headers.is_empty() {
        out.extend_from_slice(format!("PUB {subject}{reply} {}\r\n", payload.len()).as_bytes());
    } else {
        let mut block = b"NATS/1.0\r\n".to_vec();
        for (name, value) in headers {
            let bad_name = name.is_empty()
                || name
                    .bytes()
                    .any(|b| b == b':' || b.is_ascii_whitespace() || b.is_ascii_control());
            if bad_name || value.iter().any(|&b| b == b'\r' || b == b'\n') {
                return Err(Error::InvalidInput(format!(
                    "header '{name}' cannot be sent to NATS: names need no ':' or whitespace, values no line breaks"
                )));
            }
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(value);
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"\r\n");
        let total = block.len() + payload.len();
        out.extend_from_slice(
            format!("HPUB {subject}{reply} {} {total}\r\n", block.len()).as_bytes(),
        );
        out.extend_from_slice(&block);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// A name no other connection will pick, for inboxes.
pub fn unique_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut id = String::new();
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id
}

/// An error reply of the JetStream API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: u64,
    pub err_code: u64,
    pub description: String,
}

/// JetStream's code for "stream name already in use".
pub const STREAM_NAME_IN_USE: u64 = 10058;

/// Reads a JetStream API reply: its JSON, or its `error` object.
pub fn api_reply(msg: &Msg) -> Result<std::result::Result<Value, ApiError>> {
    if let Some((503, _)) = msg.status {
        return Ok(Err(ApiError {
            code: 503,
            err_code: 0,
            description: "no responders: JetStream is not enabled or not ready".into(),
        }));
    }
    let v: Value = serde_json::from_slice(&msg.payload).map_err(|e| {
        protocol(format!(
            "JetStream reply is not JSON ({e}): {}",
            String::from_utf8_lossy(&msg.payload)
        ))
    })?;
    match v.get("error") {
        Some(e) => Ok(Err(ApiError {
            code: e["code"].as_u64().unwrap_or(0),
            err_code: e["err_code"].as_u64().unwrap_or(0),
            description: e["description"]
                .as_str()
                .unwrap_or("unknown error")
                .to_owned(),
        })),
        None => Ok(Ok(v)),
    }
}

/// One connection to a NATS server. Every error means the connection is
/// no longer usable: the owner drops it and connects again.
pub struct Client {
    stream: TcpStream,
    address: String,
    /// Bytes read; those from `parsed` on are not parsed yet. Parsed
    /// bytes are dropped before the next read, not after each operation,
    /// so that many small messages in one read cost one move.
    input: Vec<u8>,
    parsed: usize,
    /// Bytes queued for writing.
    output: Vec<u8>,
    next_sid: u64,
    /// Messages read while waiting for something else (a `PONG`, a
    /// request's reply), in arrival order.
    queued: VecDeque<Msg>,
    /// The subscription for request replies, made on first use.
    replies: Option<(u64, String)>,
    next_reply: u64,
}

impl Client {
    /// Connects and completes the handshake: `INFO`, `CONNECT`, then a
    /// `PING` whose `PONG` shows the server accepted us (a refusal, such as
    /// bad credentials, arrives as `-ERR` before it).
    pub fn connect(url: &Url) -> Result<Self> {
        let address = url.address();
        let stream = net::connect("NATS server", &address)?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| Error::io(format!("NATS server at {address}"), &e))?;
        let mut client = Self {
            stream,
            address,
            input: Vec::with_capacity(64 * 1024),
            parsed: 0,
            output: Vec::new(),
            next_sid: 1,
            queued: VecDeque::new(),
            replies: None,
            next_reply: 0,
        };
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let info = loop {
            match client.read_op(deadline)? {
                Some(Op::Info(info)) => break info,
                Some(Op::Err(e)) => return Err(client.refused(&e)),
                Some(_) => continue,
                None => return Err(client.fail("no INFO from the server")),
            }
        };
        let info: Value =
            serde_json::from_str(&info).map_err(|e| protocol(format!("INFO is not JSON: {e}")))?;
        if info["tls_required"].as_bool() == Some(true) {
            return Err(client.fail("the server requires TLS, which this client does not speak"));
        }
        let mut connect = json!({
            "verbose": false,
            "pedantic": false,
            "headers": true,
            // A request nobody listens on is answered at once with status
            // 503 rather than left to time out.
            "no_responders": true,
            "lang": "rust-riffle",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
        });
        if let Some(user) = &url.user {
            connect["user"] = json!(user);
            connect["pass"] = json!(url.password.clone().unwrap_or_default());
        }
        client
            .output
            .extend_from_slice(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
        client.write_out()?;
        loop {
            match client.read_op(deadline)? {
                Some(Op::Pong) => return Ok(client),
                Some(Op::Err(e)) => return Err(client.refused(&e)),
                Some(_) => continue,
                None => return Err(client.fail("no answer to CONNECT")),
            }
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> Error {
        Error::Protocol {
            server: format!("NATS server at {}", self.address),
            message: format!("NATS server at {}: {what}", self.address),
        }
    }

    fn refused(&self, e: &str) -> Error {
        Error::Refused {
            server: format!("NATS server at {}", self.address),
            message: format!(
                "NATS server at {}: refused the connection: {e}",
                self.address
            ),
        }
    }

    /// Reads until one operation is complete or `deadline` passes (one
    /// short read is still tried after it). Answers the server's `PING`s.
    fn read_op(&mut self, deadline: Instant) -> Result<Option<Op>> {
        loop {
            if let Some((op, used)) = parse(&self.input[self.parsed..])? {
                self.parsed += used;
                if op == Op::Ping {
                    self.output.extend_from_slice(b"PONG\r\n");
                    self.write_out()?;
                    continue;
                }
                return Ok(Some(op));
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }

    /// One read from the socket; `false` if nothing came before `deadline`.
    fn fill(&mut self, deadline: Instant) -> Result<bool> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(|e| self.fail(e))?;
        self.input.drain(..self.parsed);
        self.parsed = 0;
        let len = self.input.len();
        self.input.resize(len + 64 * 1024, 0);
        let result = self.stream.read(&mut self.input[len..]);
        self.input.truncate(len + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => Err(self.fail("connection closed by the server")),
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Ok(Instant::now() < deadline)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The next operation other than `+OK`/`INFO`; a `-ERR` is an error.
    fn next_op(&mut self, deadline: Instant) -> Result<Option<Op>> {
        loop {
            match self.read_op(deadline)? {
                Some(Op::Ok | Op::Info(_)) => continue,
                Some(Op::Err(e)) => return Err(self.fail(format_args!("-ERR {e}"))),
                other => return Ok(other),
            }
        }
    }

    /// Writes everything queued.
    pub fn write_out(&mut self) -> Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.output);
        self.output.clear();
        result.map_err(|e| self.fail(e))
    }

    /// Subscribes to `subject` (wildcards allowed), in `queue` group if
    /// given; returns the subscription id messages will carry.
    pub fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<u64> {
        check_subject(subject)?;
        let sid = self.next_sid;
        self.next_sid += 1;
        let queue = queue.map(|q| format!(" {q}")).unwrap_or_default();
        self.output
            .extend_from_slice(format!("SUB {subject}{queue} {sid}\r\n").as_bytes());
        self.write_out()?;
        Ok(sid)
    }

    /// Queues a publish; it is written when enough is queued or at the
    /// next [`Client::write_out`], [`Client::ping`] or read.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: &[(String, Vec<u8>)],
        payload: &[u8],
    ) -> Result<()> {
        encode_pub(&mut self.output, subject, reply, headers, payload)?;
        if self.output.len() >= 64 * 1024 {
            self.write_out()?;
        }
        Ok(())
    }

    /// Writes what is queued and waits for the server to have processed it
    /// (`PING` answered by `PONG`).
    pub fn ping(&mut self, deadline: Instant) -> Result<()> {
        self.output.extend_from_slice(b"PING\r\n");
        self.write_out()?;
        loop {
            match self.next_op(deadline)? {
                Some(Op::Pong) => return Ok(()),
                Some(Op::Msg(m)) => self.queued.push_back(m),
                Some(_) => {}
                None => return Err(self.fail("no PONG in time")),
            }
        }
    }

    /// The next message, waiting until `deadline`.
    pub fn next_msg(&mut self, deadline: Instant) -> Result<Option<Msg>> {
        if let Some(m) = self.queued.pop_front() {
            return Ok(Some(m));
        }
        self.write_out()?;
        loop {
            match self.next_op(deadline)? {
                Some(Op::Msg(m)) => return Ok(Some(m)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// A fresh reply subject under this connection's reply subscription
    /// (made on first use), and that subscription's id.
    pub fn new_inbox(&mut self) -> Result<(String, u64)> {
        let (sid, prefix) = match &self.replies {
            Some(r) => r.clone(),
            None => {
                let prefix = format!("_INBOX.{}", unique_id());
                let sid = self.subscribe(&format!("{prefix}.*"), None)?;
                self.replies = Some((sid, prefix.clone()));
                (sid, prefix)
            }
        };
        self.next_reply += 1;
        Ok((format!("{prefix}.{}", self.next_reply), sid))
    }

    /// Publishes `payload` to `subject` and waits for the reply.
    pub fn request(&mut self, subject: &str, payload: &[u8], timeout: Duration) -> Result<Msg> {
        let (reply, _) = self.new_inbox()?;
        self.publish(subject, Some(&reply), &[], payload)?;
        self.write_out()?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_op(deadline)? {
                Some(Op::Msg(m)) if m.subject == reply => return Ok(m),
                Some(Op::Msg(m)) => self.queued.push_back(m),
                Some(_) => {}
                None => return Err(self.fail(format_args!("no reply on {subject} in time"))),
            }
        }
    }

    /// A JetStream API call: the reply's JSON or its error.
    pub fn api(
        &mut self,
        subject: &str,
        body: &Value,
    ) -> Result<std::result::Result<Value, ApiError>> {
        let reply = self.request(subject, body.to_string().as_bytes(), REQUEST_TIMEOUT)?;
        api_reply(&reply)
    }

    /// Creates the stream `name` on `subjects` with file storage, unless a
    /// stream of that name exists (then it is used as it is).
    pub fn ensure_stream(&mut self, name: &str, subjects: &[String]) -> Result<()> {
        let config = json!({
            "name": name,
            "subjects": subjects,
            "storage": "file",
            "retention": "limits",
        });
        match self.api(&format!("$JS.API.STREAM.CREATE.{name}"), &config)? {
            Ok(_) => Ok(()),
            Err(e) if e.err_code == STREAM_NAME_IN_USE => {
                tracing::debug!("NATS stream {name} exists already: {}", e.description);
                Ok(())
            }
            Err(e) => Err(self.fail(format_args!(
                "cannot create stream {name} on {subjects:?}: {} (code {})",
                e.description, e.err_code
            ))),
        }
    }

    /// Creates (or confirms) the durable pull consumer `durable` on
    /// `stream`, acknowledged one message at a time, redelivering what is
    /// not acknowledged within `ack_wait`.
    pub fn ensure_consumer(
        &mut self,
        stream: &str,
        durable: &str,
        filter: &str,
        ack_wait: Duration,
    ) -> Result<()> {
        let body = json!({
            "stream_name": stream,
            "config": {
                "durable_name": durable,
                "ack_policy": "explicit",
                "ack_wait": ack_wait.as_nanos() as u64,
                "deliver_policy": "all",
                "filter_subject": filter,
            }
        });
        let subject = format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}");
        match self.api(&subject, &body)? {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(format_args!(
                "cannot create consumer {durable} on stream {stream}: {} (code {})",
                e.description, e.err_code
            ))),
        }
    }

    /// Asks the consumer for up to `batch` messages, delivered to `inbox`
    /// as they come, for at most `expires`.
    pub fn pull(
        &mut self,
        stream: &str,
        durable: &str,
        inbox: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<()> {
        let body = json!({"batch": batch, "expires": expires.as_nanos() as u64});
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}");
        self.publish(&subject, Some(inbox), &[], body.to_string().as_bytes())?;
        self.write_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(mut buf: &[u8]) -> Vec<Op> {
        let mut ops = Vec::new();
        while let Some((op, used)) = parse(buf).unwrap() {
            ops.push(op);
            buf = &buf[used..];
        }
        assert!(
            buf.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(buf)
        );
        ops
    }

    #[test]
    fn control_lines_parse() {
        let ops = parse_all(b"INFO {\"server_id\":\"x\"}\r\nPING\r\npong\r\n+OK\r\n-ERR 'Unknown Protocol Operation'\r\n");
        assert_eq!(
            ops,
            [
                Op::Info("{\"server_id\":\"x\"}".into()),
                Op::Ping,
                Op::Pong,
                Op::Ok,
                Op::Err("Unknown Protocol Operation".into()),
            ]
        );
    }

    #[test]
    fn messages_parse_with_and_without_reply() {
        let ops = parse_all(b"MSG a.b 7 5\r\nhello\r\nMSG a.c 7 _INBOX.x.1 0\r\n\r\n");
        let Op::Msg(m) = &ops[0] else { panic!() };
        assert_eq!(
            (m.subject.as_str(), m.sid, m.reply.as_deref()),
            ("a.b", 7, None)
        );
        assert_eq!(m.payload, b"hello");
        let Op::Msg(m) = &ops[1] else { panic!() };
        assert_eq!(m.reply.as_deref(), Some("_INBOX.x.1"));
        assert!(m.payload.is_empty());
    }

    #[test]
    fn incomplete_input_waits_for_more() {
        let whole = b"MSG a 1 5\r\nhello\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(whole).unwrap().is_some());
        // A payload that is not followed by CRLF means lost framing.
        assert!(parse(b"MSG a 1 2\r\nhello\r\n").is_err());
        assert!(parse(b"MSG a 1 x\r\n").is_err());
        assert!(parse(b"WHAT\r\n").is_err());
    }

    #[test]
    fn headers_round_trip_through_hpub_and_hmsg() {
        let headers = vec![
            ("riffle-key".to_owned(), b"h-1".to_vec()),
            ("trace".to_owned(), b"a b: c".to_vec()),
        ];
        let mut out = Vec::new();
        encode_pub(&mut out, "s.1", Some("_INBOX.r.1"), &headers, b"{\"t\":1}").unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HPUB s.1 _INBOX.r.1 "), "{text}");
        assert!(text.contains("NATS/1.0\r\nriffle-key: h-1\r\ntrace: a b: c\r\n\r\n{\"t\":1}\r\n"));
        // The server delivers the same block and sizes as HMSG.
        let delivered = text.replacen("HPUB s.1 _INBOX.r.1", "HMSG s.1 3 _INBOX.r.1", 1);
        let ops = parse_all(delivered.as_bytes());
        let Op::Msg(m) = &ops[0] else { panic!() };
        assert_eq!(m.headers, headers);
        assert_eq!(m.payload, b"{\"t\":1}");
        assert_eq!((m.sid, m.status.clone()), (3, None));
    }

    #[test]
    fn plain_pub_and_bad_input() {
        let mut out = Vec::new();
        encode_pub(&mut out, "a", None, &[], b"xy").unwrap();
        assert_eq!(out, b"PUB a 2\r\nxy\r\n");
        assert!(encode_pub(&mut out, "a b", None, &[], b"").is_err());
        assert!(encode_pub(&mut out, "", None, &[], b"").is_err());
        let bad = [("k".to_owned(), b"line\r\nbreak".to_vec())];
        assert!(encode_pub(&mut out, "a", None, &bad, b"").is_err());
    }

    #[test]
    fn status_headers_and_api_replies() {
        let block = b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n";
        let (status, headers) = parse_headers(block).unwrap();
        assert_eq!(status, Some((408, "Request Timeout".into())));
        assert_eq!(headers, [("Nats-Pending-Messages".into(), b"3".to_vec())]);
        assert_eq!(
            parse_headers(b"NATS/1.0 503\r\n\r\n").unwrap().0,
            Some((503, String::new()))
        );
        assert!(parse_headers(b"HTTP/1.1 200\r\n\r\n").is_err());

        let ok = Msg {
            payload: br#"{"stream":"S","seq":4}"#.to_vec(),
            ..Msg::default()
        };
        assert_eq!(api_reply(&ok).unwrap().unwrap()["seq"], 4);
        let err = Msg {
            payload: br#"{"error":{"code":400,"err_code":10058,"description":"stream name already in use"}}"#.to_vec(),
            ..Msg::default()
        };
        assert_eq!(
            api_reply(&err).unwrap().unwrap_err().err_code,
            STREAM_NAME_IN_USE
        );
        let none = Msg {
            status: Some((503, String::new())),
            ..Msg::default()
        };
        assert_eq!(api_reply(&none).unwrap().unwrap_err().code, 503);
    }

    #[test]
    fn ids_differ() {
        assert_ne!(unique_id(), unique_id());
        assert_eq!(unique_id().len(), 32);
    }
}
