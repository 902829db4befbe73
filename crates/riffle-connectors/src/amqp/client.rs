//! The AMQP 0-9-1 wire protocol, as much of it as a queue consumer and a
//! confirming publisher need: frames, field tables, the connection
//! handshake, one channel, and the queue, basic and confirm methods.
//!
//! Everything is one connection with one channel (number 1): a source or a
//! sink owns its connection, so there is nothing to multiplex. Reads go
//! through a buffer of our own rather than `read_exact`, so that a read
//! timeout in the middle of a frame loses nothing and heartbeats can be
//! sent while waiting.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use riffle::{Error, Result};

use crate::net;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Type, channel and size before the payload, plus the end marker.
const FRAME_OVERHEAD: usize = 8;
/// The largest frame we accept or ask for; RabbitMQ's default too.
const FRAME_MAX: u32 = 131_072;

/// The channel everything happens on.
const CHANNEL: u16 = 1;
/// How long the server may take to answer a method (declare, consume...).
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

// Class and method ids used here.
const CONNECTION: u16 = 10;
const CHANNEL_CLASS: u16 = 20;
const QUEUE: u16 = 50;
const BASIC: u16 = 60;
const CONFIRM: u16 = 85;

const PROP_HEADERS: u16 = 1 << 13;
const PROP_DELIVERY_MODE: u16 = 1 << 12;

/// A value of a field table. The tags are RabbitMQ's (which differ from
/// the 0-9-1 text for a few types: `s` is a short int, and there is no
/// short string), as that is the server we talk to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal(u8, u32),
    LongStr(Vec<u8>),
    Array(Vec<Value>),
    Timestamp(u64),
    Table(Table),
    Void,
    Bytes(Vec<u8>),
}

impl Value {
    /// The value as header text: strings as they are, numbers and
    /// booleans written out; `None` for tables, arrays and void.
    pub fn as_bytes(&self) -> Option<Vec<u8>> {
        Some(match self {
            Value::LongStr(b) | Value::Bytes(b) => b.clone(),
            Value::Bool(b) => b.to_string().into_bytes(),
            Value::I8(n) => n.to_string().into_bytes(),
            Value::U8(n) => n.to_string().into_bytes(),
            Value::I16(n) => n.to_string().into_bytes(),
            Value::U16(n) => n.to_string().into_bytes(),
            Value::I32(n) => n.to_string().into_bytes(),
            Value::U32(n) => n.to_string().into_bytes(),
            Value::I64(n) => n.to_string().into_bytes(),
            Value::Timestamp(n) => n.to_string().into_bytes(),
            Value::F32(n) => n.to_string().into_bytes(),
            Value::F64(n) => n.to_string().into_bytes(),
            Value::Decimal(..) | Value::Array(_) | Value::Table(_) | Value::Void => return None,
        })
    }
}

/// A field table: names and values in order.
pub type Table = Vec<(String, Value)>;

// ---- Encoding ----

fn put_u16(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// A short string: at most 255 bytes (callers check names first; anything
/// longer is cut rather than corrupting the frame).
fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn put_long_str(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// Encodes a field table with its length prefix.
pub fn put_table(out: &mut Vec<u8>, table: &[(String, Value)]) {
    let at = out.len();
    put_u32(out, 0);
    for (name, value) in table {
        put_short_str(out, name);
        put_value(out, value);
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Bool(b) => out.extend_from_slice(&[b't', *b as u8]),
        Value::I8(n) => out.extend_from_slice(&[b'b', *n as u8]),
        Value::U8(n) => out.extend_from_slice(&[b'B', *n]),
        Value::I16(n) => {
            out.push(b's');
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::U16(n) => {
            out.push(b'u');
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::I32(n) => {
            out.push(b'I');
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::U32(n) => {
            out.push(b'i');
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::I64(n) => {
            out.push(b'l');
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::F32(n) => {
            out.push(b'f');
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::F64(n) => {
            out.push(b'd');
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Decimal(scale, n) => {
            out.extend_from_slice(&[b'D', *scale]);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::LongStr(b) => {
            out.push(b'S');
            put_long_str(out, b);
        }
        Value::Array(items) => {
            out.push(b'A');
            let at = out.len();
            put_u32(out, 0);
            for item in items {
                put_value(out, item);
            }
            let len = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        Value::Timestamp(n) => {
            out.push(b'T');
            put_u64(out, *n);
        }
        Value::Table(t) => {
            out.push(b'F');
            put_table(out, t);
        }
        Value::Void => out.push(b'V'),
        Value::Bytes(b) => {
            out.push(b'x');
            put_long_str(out, b);
        }
    }
}

/// Appends one frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    put_u16(out, channel);
    put_u32(out, payload.len() as u32);
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

/// The start of a method frame's payload: its class and method ids.
fn method(class: u16, method: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    put_u16(&mut m, class);
    put_u16(&mut m, method);
    m
}

// ---- Decoding ----

fn malformed(what: &str) -> Error {
    Error::Protocol {
        server: "AMQP server".into(),
        message: format!("malformed AMQP data: {what}"),
    }
}

/// Reads the fields of a payload in order.
pub struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(malformed("truncated field"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn short_str(&mut self) -> Result<String> {
        let n = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    pub fn long_str(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn table(&mut self) -> Result<Table> {
        let mut inner = Dec::new(self.long_str()?);
        let mut table = Vec::new();
        while inner.pos < inner.buf.len() {
            let name = inner.short_str()?;
            let value = inner.value()?;
            table.push((name, value));
        }
        Ok(table)
    }

    fn value(&mut self) -> Result<Value> {
        let tag = self.u8()?;
        Ok(match tag {
            b't' => Value::Bool(self.u8()? != 0),
            b'b' => Value::I8(self.u8()? as i8),
            b'B' => Value::U8(self.u8()?),
            b's' => Value::I16(i16::from_be_bytes(self.array()?)),
            b'u' => Value::U16(self.u16()?),
            b'I' => Value::I32(i32::from_be_bytes(self.array()?)),
            b'i' => Value::U32(self.u32()?),
            b'l' | b'L' => Value::I64(i64::from_be_bytes(self.array()?)),
            b'f' => Value::F32(f32::from_be_bytes(self.array()?)),
            b'd' => Value::F64(f64::from_be_bytes(self.array()?)),
            b'D' => Value::Decimal(self.u8()?, self.u32()?),
            b'S' => Value::LongStr(self.long_str()?.to_vec()),
            b'x' => Value::Bytes(self.long_str()?.to_vec()),
            b'A' => {
                let mut inner = Dec::new(self.long_str()?);
                let mut items = Vec::new();
                while inner.pos < inner.buf.len() {
                    items.push(inner.value()?);
                }
                Value::Array(items)
            }
            b'T' => Value::Timestamp(self.u64()?),
            b'F' => Value::Table(self.table()?),
            b'V' => Value::Void,
            other => {
                return Err(malformed(&format!(
                    "unknown field type {:?}",
                    other as char
                )))
            }
        })
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

/// One frame as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

/// The first complete frame in `buf` and how many bytes it took; `None`
/// while it is incomplete. A frame larger than `max` or without its end
/// marker means the stream is out of step: an error.
pub fn parse_frame(buf: &[u8], max: usize) -> Result<Option<(Frame, usize)>> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let size = u32::from_be_bytes(buf[3..7].try_into().expect("4 bytes")) as usize;
    if size + FRAME_OVERHEAD > max {
        return Err(malformed(&format!("frame of {size} bytes, above {max}")));
    }
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(malformed("frame without its end marker"));
    }
    let frame = Frame {
        kind: buf[0],
        channel: u16::from_be_bytes([buf[1], buf[2]]),
        payload: buf[7..total - 1].to_vec(),
    };
    Ok(Some((frame, total)))
}

/// The headers of a content header frame's properties (the one property
/// read here; those before it are skipped).
pub fn parse_content_header(payload: &[u8]) -> Result<(u64, Table)> {
    let mut d = Dec::new(payload);
    let _class = d.u16()?;
    let _weight = d.u16()?;
    let size = d.u64()?;
    let flags = d.u16()?;
    if flags & (1 << 15) != 0 {
        d.short_str()?; // content-type
    }
    if flags & (1 << 14) != 0 {
        d.short_str()?; // content-encoding
    }
    let headers = if flags & PROP_HEADERS != 0 {
        d.table()?
    } else {
        Vec::new()
    };
    Ok((size, headers))
}

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct Params {
    /// `host:port`.
    pub address: String,
    pub user: String,
    pub password: String,
    pub vhost: String,
    /// Zero disables heartbeats.
    pub heartbeat: Duration,
}

/// A message delivered to our consumer.
#[derive(Debug, Clone)]
pub struct Message {
    pub delivery_tag: u64,
    pub routing_key: String,
    pub headers: Table,
    pub body: Vec<u8>,
}

/// What the server sends on its own accord on an open channel.
#[derive(Debug)]
pub enum Incoming {
    Delivery(Message),
    /// Publisher confirms: every tag up to `tag` (with `multiple`) or just
    /// `tag` is stored.
    Ack {
        tag: u64,
        multiple: bool,
    },
    /// The server could not take these messages.
    Nack {
        tag: u64,
        multiple: bool,
    },
    /// A mandatory message no queue took.
    Returned {
        code: u16,
        text: String,
        routing_key: String,
    },
}

/// One AMQP connection with channel 1 open.
pub struct Connection {
    stream: TcpStream,
    address: String,
    input: Vec<u8>,
    output: Vec<u8>,
    frame_max: usize,
    heartbeat: Option<Duration>,
    last_read: Instant,
    last_write: Instant,
}

impl Connection {
    /// Connects, authenticates with PLAIN, agrees frame size and
    /// heartbeats, opens the virtual host and channel 1. An unreachable
    /// server is reported within [`net::CONNECT_TIMEOUT`], with its
    /// address.
    pub fn open(p: &Params) -> Result<Self> {
        let stream = net::connect("AMQP server", &p.address)?;
        let mut c = Self {
            stream,
            address: p.address.clone(),
            input: Vec::new(),
            output: Vec::new(),
            frame_max: FRAME_MAX as usize,
            heartbeat: None,
            last_read: Instant::now(),
            last_write: Instant::now(),
        };
        c.handshake(p).map_err(|e| match e {
            // Name the server in errors that do not already.
            Error::Protocol { server, message } if server == "AMQP server" => Error::Protocol {
                server: format!("AMQP server at {}", p.address),
                message: format!("AMQP server at {}: {message}", p.address),
            },
            other => other,
        })?;
        Ok(c)
    }

    fn handshake(&mut self, p: &Params) -> Result<()> {
        self.output.extend_from_slice(b"AMQP\x00\x00\x09\x01");
        self.write_out()?;
        let start = self.expect(0, (CONNECTION, 10))?;
        let mut d = Dec::new(&start);
        let (major, minor) = (d.u8()?, d.u8()?);
        let _server_properties = d.table()?;
        let mechanisms = String::from_utf8_lossy(d.long_str()?).into_owned();
        if (major, minor) != (0, 9) {
            return Err(self.refused(format!(": speaks AMQP {major}-{minor}, not 0-9-1")));
        }
        if !mechanisms.split(' ').any(|m| m == "PLAIN") {
            return Err(self.refused(format!(
                ": does not offer PLAIN authentication (offers {mechanisms})"
            )));
        }

        let mut m = method(CONNECTION, 11);
        let capabilities = vec![
            ("publisher_confirms".to_owned(), Value::Bool(true)),
            ("basic.nack".to_owned(), Value::Bool(true)),
            // Without it a refused login is a bare disconnect, no reason.
            ("authentication_failure_close".to_owned(), Value::Bool(true)),
        ];
        put_table(
            &mut m,
            &[
                ("product".to_owned(), Value::LongStr(b"riffle".to_vec())),
                ("capabilities".to_owned(), Value::Table(capabilities)),
            ],
        );
        put_short_str(&mut m, "PLAIN");
        put_long_str(&mut m, format!("\0{}\0{}", p.user, p.password).as_bytes());
        put_short_str(&mut m, "en_US");
        self.send_method(0, &m)?;

        let tune = self.expect(0, (CONNECTION, 30))?;
        let mut d = Dec::new(&tune);
        let channel_max = d.u16()?;
        let frame_max = match d.u32()? {
            0 => FRAME_MAX,
            n => n.min(FRAME_MAX),
        };
        let server_heartbeat = d.u16()?;
        let ours = p.heartbeat.as_secs().min(u16::MAX as u64) as u16;
        let heartbeat = match (ours, server_heartbeat) {
            (0, _) => 0,
            (h, 0) => h,
            (h, s) => h.min(s),
        };
        let mut m = method(CONNECTION, 31);
        put_u16(&mut m, channel_max);
        put_u32(&mut m, frame_max);
        put_u16(&mut m, heartbeat);
        self.send_method(0, &m)?;
        self.frame_max = frame_max as usize;
        self.heartbeat = (heartbeat > 0).then(|| Duration::from_secs(heartbeat.into()));

        let mut m = method(CONNECTION, 40);
        put_short_str(&mut m, &p.vhost);
        put_short_str(&mut m, "");
        m.push(0);
        self.send_method(0, &m)?;
        self.expect(0, (CONNECTION, 41))?;

        let mut m = method(CHANNEL_CLASS, 10);
        put_short_str(&mut m, "");
        self.send_method(CHANNEL, &m)?;
        self.expect(CHANNEL, (CHANNEL_CLASS, 11))?;
        Ok(())
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        Error::io(format!("AMQP connection to {}", self.address), &e)
    }

    /// The server breaking the protocol, closing the connection or not
    /// answering: `what` says which, after the server's name.
    fn broken(&self, what: String) -> Error {
        let server = format!("AMQP server at {}", self.address);
        Error::Protocol {
            message: format!("{server}{what}"),
            server,
        }
    }

    /// The server saying no: `what` says to what, after the server's name.
    fn refused(&self, what: String) -> Error {
        let server = format!("AMQP server at {}", self.address);
        Error::Refused {
            message: format!("{server}{what}"),
            server,
        }
    }

    /// Writes whatever is buffered.
    pub fn write_out(&mut self) -> Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.output);
        self.output.clear();
        r.map_err(|e| self.io_error(e))?;
        self.last_write = Instant::now();
        Ok(())
    }

    fn send_method(&mut self, channel: u16, payload: &[u8]) -> Result<()> {
        put_frame(&mut self.output, FRAME_METHOD, channel, payload);
        self.write_out()
    }

    /// Sends a heartbeat when we have been quiet for half the interval,
    /// and fails when the server has been quiet for two intervals (the
    /// server does the same to us, so both notice a dead peer).
    fn keep_alive(&mut self) -> Result<()> {
        let Some(hb) = self.heartbeat else {
            return Ok(());
        };
        if self.last_write.elapsed() >= hb / 2 {
            put_frame(&mut self.output, FRAME_HEARTBEAT, 0, &[]);
            self.write_out()?;
        }
        if self.last_read.elapsed() > hb * 2 {
            return Err(self.broken(format!(" missed its heartbeats for {:?}", hb * 2)));
        }
        Ok(())
    }

    /// Reads more bytes, waiting up to `wait` (not at all when zero);
    /// `false` when nothing came.
    fn fill(&mut self, wait: Duration) -> Result<bool> {
        let mut buf = [0u8; 16384];
        let r = if wait.is_zero() {
            self.stream
                .set_nonblocking(true)
                .map_err(|e| self.io_error(e))?;
            let r = self.stream.read(&mut buf);
            self.stream
                .set_nonblocking(false)
                .map_err(|e| self.io_error(e))?;
            r
        } else {
            self.stream
                .set_read_timeout(Some(wait))
                .map_err(|e| self.io_error(e))?;
            self.stream.read(&mut buf)
        };
        match r {
            Ok(0) => Err(self.broken(" closed the connection".into())),
            Ok(n) => {
                self.input.extend_from_slice(&buf[..n]);
                self.last_read = Instant::now();
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// The next frame other than a heartbeat, waiting until `deadline`
    /// (checking once without waiting when it has passed); `None` if none
    /// came.
    fn read_frame(&mut self, deadline: Instant) -> Result<Option<Frame>> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.input, self.frame_max)? {
                self.input.drain(..used);
                if frame.kind == FRAME_HEARTBEAT {
                    continue;
                }
                return Ok(Some(frame));
            }
            self.keep_alive()?;
            let tick = self.heartbeat.map_or(Duration::from_secs(1), |h| h / 2);
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self.fill(left.min(tick))?;
            if !got && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    /// A frame that must come within the RPC timeout.
    fn read_frame_soon(&mut self) -> Result<Frame> {
        self.read_frame(Instant::now() + RPC_TIMEOUT)?
            .ok_or_else(|| self.broken(format!(" did not answer within {RPC_TIMEOUT:?}")))
    }

    /// Answers a Connection.Close or Channel.Close from the server and
    /// turns it into an error carrying the server's reason.
    fn closed_by_server(&mut self, class: u16, args: &[u8]) -> Error {
        let mut d = Dec::new(args);
        let code = d.u16().unwrap_or(0);
        let text = d.short_str().unwrap_or_default();
        let (channel, what) = if class == CONNECTION {
            (0, "connection")
        } else {
            (CHANNEL, "channel")
        };
        let _ = self.send_method(
            channel,
            &method(class, if class == CONNECTION { 51 } else { 41 }),
        );
        self.refused(format!(" closed the {what}: {code} {text}"))
    }

    /// Splits a method frame into (class, method, arguments), handling a
    /// close from the server as an error.
    fn method_of(&mut self, frame: &Frame) -> Result<Option<(u16, u16, Vec<u8>)>> {
        if frame.kind != FRAME_METHOD {
            return Ok(None);
        }
        let mut d = Dec::new(&frame.payload);
        let (class, id) = (d.u16()?, d.u16()?);
        let args = d.rest().to_vec();
        if (class, id) == (CONNECTION, 50) || (class, id) == (CHANNEL_CLASS, 40) {
            return Err(self.closed_by_server(class, &args));
        }
        Ok(Some((class, id, args)))
    }

    /// Waits for the method `want` on `channel` and returns its arguments.
    fn expect(&mut self, channel: u16, want: (u16, u16)) -> Result<Vec<u8>> {
        loop {
            let frame = self.read_frame_soon()?;
            match self.method_of(&frame)? {
                Some((class, id, args)) if (class, id) == want && frame.channel == channel => {
                    return Ok(args)
                }
                other => tracing::debug!("AMQP: ignoring {other:?} while waiting for {want:?}"),
            }
        }
    }

    /// Declares `queue` durable (or, `passive`, checks that it exists).
    pub fn declare_queue(&mut self, queue: &str, passive: bool) -> Result<()> {
        let mut m = method(QUEUE, 10);
        put_u16(&mut m, 0);
        put_short_str(&mut m, queue);
        m.push(if passive { 1 } else { 2 }); // passive / durable
        put_table(&mut m, &[]);
        self.send_method(CHANNEL, &m)?;
        self.expect(CHANNEL, (QUEUE, 11)).map(drop)
    }

    pub fn bind_queue(&mut self, queue: &str, exchange: &str, routing_key: &str) -> Result<()> {
        let mut m = method(QUEUE, 20);
        put_u16(&mut m, 0);
        put_short_str(&mut m, queue);
        put_short_str(&mut m, exchange);
        put_short_str(&mut m, routing_key);
        m.push(0);
        put_table(&mut m, &[]);
        self.send_method(CHANNEL, &m)?;
        self.expect(CHANNEL, (QUEUE, 21)).map(drop)
    }

    /// Limits unacknowledged deliveries to `count`.
    pub fn qos(&mut self, count: u16) -> Result<()> {
        let mut m = method(BASIC, 10);
        put_u32(&mut m, 0);
        put_u16(&mut m, count);
        m.push(0);
        self.send_method(CHANNEL, &m)?;
        self.expect(CHANNEL, (BASIC, 11)).map(drop)
    }

    /// Starts consuming `queue` with manual acknowledgements.
    pub fn consume(&mut self, queue: &str) -> Result<()> {
        let mut m = method(BASIC, 20);
        put_u16(&mut m, 0);
        put_short_str(&mut m, queue);
        put_short_str(&mut m, "");
        m.push(0); // no-local, no-ack, exclusive, no-wait all off
        put_table(&mut m, &[]);
        self.send_method(CHANNEL, &m)?;
        self.expect(CHANNEL, (BASIC, 21)).map(drop)
    }

    /// Acknowledges deliveries up to `tag` (or just `tag`).
    pub fn ack(&mut self, tag: u64, multiple: bool) -> Result<()> {
        let mut m = method(BASIC, 80);
        put_u64(&mut m, tag);
        m.push(multiple as u8);
        self.send_method(CHANNEL, &m)
    }

    /// Puts the channel in confirm mode: the server acks every publish
    /// once it is stored, numbering them from 1.
    pub fn confirm_select(&mut self) -> Result<()> {
        let mut m = method(CONFIRM, 10);
        m.push(0);
        self.send_method(CHANNEL, &m)?;
        self.expect(CHANNEL, (CONFIRM, 11)).map(drop)
    }

    /// Buffers a persistent message (method, header and body frames split
    /// at the frame size); [`Connection::write_out`] sends it. Writes
    /// early once much is buffered.
    pub fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        headers: &[(String, Value)],
        body: &[u8],
    ) -> Result<()> {
        let mut m = method(BASIC, 40);
        put_u16(&mut m, 0);
        put_short_str(&mut m, exchange);
        put_short_str(&mut m, routing_key);
        m.push(mandatory as u8);
        put_frame(&mut self.output, FRAME_METHOD, CHANNEL, &m);

        let mut h = Vec::with_capacity(64);
        put_u16(&mut h, BASIC);
        put_u16(&mut h, 0);
        put_u64(&mut h, body.len() as u64);
        put_u16(&mut h, PROP_HEADERS | PROP_DELIVERY_MODE);
        put_table(&mut h, headers);
        h.push(2); // persistent
        put_frame(&mut self.output, FRAME_HEADER, CHANNEL, &h);

        for chunk in body.chunks(self.frame_max - FRAME_OVERHEAD) {
            put_frame(&mut self.output, FRAME_BODY, CHANNEL, chunk);
        }
        if self.output.len() >= 256 * 1024 {
            self.write_out()?;
        }
        Ok(())
    }

    /// The next thing the server sends, waiting until `deadline` (or just
    /// looking, when it has passed); `None` if nothing came.
    pub fn next(&mut self, deadline: Instant) -> Result<Option<Incoming>> {
        loop {
            let Some(frame) = self.read_frame(deadline)? else {
                return Ok(None);
            };
            let Some((class, id, args)) = self.method_of(&frame)? else {
                tracing::debug!("AMQP: ignoring a stray frame of type {}", frame.kind);
                continue;
            };
            let mut d = Dec::new(&args);
            match (class, id) {
                (BASIC, 60) => {
                    let _consumer_tag = d.short_str()?;
                    let delivery_tag = d.u64()?;
                    let _redelivered = d.u8()?;
                    let _exchange = d.short_str()?;
                    let routing_key = d.short_str()?;
                    let (headers, body) = self.read_content()?;
                    return Ok(Some(Incoming::Delivery(Message {
                        delivery_tag,
                        routing_key,
                        headers,
                        body,
                    })));
                }
                (BASIC, 80) | (BASIC, 120) => {
                    let tag = d.u64()?;
                    let multiple = d.u8()? & 1 != 0;
                    return Ok(Some(if id == 80 {
                        Incoming::Ack { tag, multiple }
                    } else {
                        Incoming::Nack { tag, multiple }
                    }));
                }
                (BASIC, 50) => {
                    let code = d.u16()?;
                    let text = d.short_str()?;
                    let _exchange = d.short_str()?;
                    let routing_key = d.short_str()?;
                    self.read_content()?;
                    return Ok(Some(Incoming::Returned {
                        code,
                        text,
                        routing_key,
                    }));
                }
                (BASIC, 30) => {
                    return Err(self.broken(" cancelled the consumer (queue deleted?)".into()))
                }
                other => tracing::debug!("AMQP: ignoring method {other:?}"),
            }
        }
    }

    /// The header and body frames after a delivery or a return.
    fn read_content(&mut self) -> Result<(Table, Vec<u8>)> {
        let header = self.read_frame_soon()?;
        if header.kind != FRAME_HEADER {
            return Err(malformed("a content header was expected"));
        }
        let (size, headers) = parse_content_header(&header.payload)?;
        let mut body = Vec::with_capacity(size.min(1 << 24) as usize);
        while (body.len() as u64) < size {
            let frame = self.read_frame_soon()?;
            if frame.kind != FRAME_BODY {
                return Err(malformed("a content body was expected"));
            }
            body.extend_from_slice(&frame.payload);
        }
        Ok((headers, body))
    }

    /// Closes the connection politely (unacknowledged deliveries go back
    /// to the queue), waiting briefly for the server's answer.
    pub fn close(mut self) {
        let mut m = method(CONNECTION, 50);
        put_u16(&mut m, 200);
        put_short_str(&mut m, "closing");
        put_u16(&mut m, 0);
        put_u16(&mut m, 0);
        if self.send_method(0, &m).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(frame)) = self.read_frame(deadline) {
            if frame.kind == FRAME_METHOD && frame.payload.starts_with(&[0, 10, 0, 51]) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_end() {
        let mut out = Vec::new();
        put_frame(&mut out, FRAME_METHOD, 1, b"hello");
        assert_eq!(out.len(), 5 + FRAME_OVERHEAD);
        assert_eq!(&out[..7], &[1, 0, 1, 0, 0, 0, 5]);
        assert_eq!(*out.last().unwrap(), 0xCE);
        // Incomplete: nothing yet.
        assert_eq!(parse_frame(&out[..out.len() - 1], 4096).unwrap(), None);
        put_frame(&mut out, FRAME_HEARTBEAT, 0, &[]);
        let (f, used) = parse_frame(&out, 4096).unwrap().unwrap();
        assert_eq!(
            f,
            Frame {
                kind: FRAME_METHOD,
                channel: 1,
                payload: b"hello".to_vec()
            }
        );
        let (hb, used2) = parse_frame(&out[used..], 4096).unwrap().unwrap();
        assert_eq!((hb.kind, hb.payload.len(), used + used2), (8, 0, out.len()));
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut out = Vec::new();
        put_frame(&mut out, FRAME_BODY, 1, b"abc");
        *out.last_mut().unwrap() = 0;
        assert!(parse_frame(&out, 4096).is_err());
        let mut big = Vec::new();
        put_frame(&mut big, FRAME_BODY, 1, &[0; 5000]);
        assert!(parse_frame(&big[..7], 4096).is_err());
    }

    #[test]
    fn tables_round_trip_every_type() {
        let table: Table = vec![
            ("b".into(), Value::Bool(true)),
            ("i8".into(), Value::I8(-3)),
            ("u8".into(), Value::U8(200)),
            ("i16".into(), Value::I16(-300)),
            ("u16".into(), Value::U16(60000)),
            ("i32".into(), Value::I32(-70000)),
            ("u32".into(), Value::U32(4_000_000_000)),
            ("i64".into(), Value::I64(-5_000_000_000)),
            ("f32".into(), Value::F32(1.5)),
            ("f64".into(), Value::F64(-2.25)),
            ("dec".into(), Value::Decimal(2, 12345)),
            ("s".into(), Value::LongStr(b"text".to_vec())),
            (
                "a".into(),
                Value::Array(vec![Value::I32(1), Value::LongStr(b"x".to_vec())]),
            ),
            ("t".into(), Value::Timestamp(1_700_000_000)),
            (
                "nested".into(),
                Value::Table(vec![("in".into(), Value::Bool(false))]),
            ),
            ("v".into(), Value::Void),
            ("x".into(), Value::Bytes(vec![0, 1, 2])),
        ];
        let mut out = Vec::new();
        put_table(&mut out, &table);
        out.push(99); // what follows the table stays unread
        let mut d = Dec::new(&out);
        assert_eq!(d.table().unwrap(), table);
        assert_eq!(d.u8().unwrap(), 99);
    }

    #[test]
    fn truncated_tables_and_unknown_types_are_errors() {
        let mut out = Vec::new();
        put_table(&mut out, &[("k".into(), Value::LongStr(b"value".to_vec()))]);
        assert!(Dec::new(&out[..out.len() - 2]).table().is_err());
        // Claim the table is shorter than its one field.
        let mut cut = out.clone();
        cut[3] -= 2;
        assert!(Dec::new(&cut).table().is_err());
        let bad = [0, 0, 0, 3, 1, b'k', b'?'];
        let e = Dec::new(&bad).table().unwrap_err().to_string();
        assert!(e.contains("unknown field type"), "{e}");
    }

    #[test]
    fn content_headers_skip_to_the_headers() {
        let mut h = Vec::new();
        put_u16(&mut h, BASIC);
        put_u16(&mut h, 0);
        put_u64(&mut h, 42);
        put_u16(&mut h, (1 << 15) | PROP_HEADERS | PROP_DELIVERY_MODE);
        put_short_str(&mut h, "application/json");
        put_table(
            &mut h,
            &[("riffle-key".into(), Value::LongStr(b"k1".to_vec()))],
        );
        h.push(2);
        let (size, headers) = parse_content_header(&h).unwrap();
        assert_eq!(size, 42);
        assert_eq!(headers[0].1.as_bytes().unwrap(), b"k1");
    }
}
