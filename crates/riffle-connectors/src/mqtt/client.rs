//! The MQTT wire protocol, versions 3.1.1 and 5, as far as a QoS 1
//! publisher and subscriber need it: CONNECT/CONNACK, PUBLISH/PUBACK,
//! SUBSCRIBE/SUBACK, PINGREQ/PINGRESP and DISCONNECT.
//!
//! Every packet is a fixed header (type and flags in one byte, then the
//! length of the rest as a variable-length integer of 7 bits per byte) and
//! a body. Version 5 adds a property list (a length, then tagged values) to
//! most bodies and reason codes to the acknowledgements; the encoders and
//! [`decode`] below take the version and do the rest.
//!
//! [`Connection`] owns the socket: it buffers outgoing packets so that a
//! batch of PUBLISHes or PUBACKs goes out in few writes, keeps partial
//! incoming packets across read timeouts, and sends PINGREQs when the link
//! has been quiet for half the keep-alive interval (the broker drops a
//! client silent for one and a half).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use riffle::{Error, Result};

use crate::net;

/// The protocol version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    /// The protocol level byte of CONNECT.
    fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "3.1.1" | "3" | "4" => Ok(Version::V311),
            "5" | "5.0" => Ok(Version::V5),
            _ => Err("expected 3.1.1 or 5".into()),
        }
    }
}

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const PINGREQ: u8 = 12;
const PINGRESP: u8 = 13;
const DISCONNECT: u8 = 14;

/// The largest length the fixed header can express (four bytes of seven
/// bits).
const MAX_REMAINING: usize = 268_435_455;

/// What a client says in CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub version: Version,
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5): false keeps the session,
    /// its subscriptions and undelivered QoS 1 messages, across
    /// connections.
    pub clean: bool,
    pub keep_alive: Duration,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Version 5: how long the broker keeps the session after the
    /// connection ends, in seconds.
    pub session_expiry: u32,
    /// Version 5: the most unacknowledged QoS 1 messages the broker may
    /// send us at once.
    pub receive_maximum: u16,
}

/// One PUBLISH, either way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    /// Set by the broker on a redelivery.
    pub dup: bool,
    /// Present for QoS 1 and 2.
    pub packet_id: Option<u16>,
    /// Version 5 user properties.
    pub user_properties: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// The version 5 properties this client reads; others are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub user: Vec<(String, String)>,
    pub reason: Option<String>,
    pub receive_maximum: Option<u16>,
    pub server_keep_alive: Option<u16>,
}

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    ConnAck {
        session_present: bool,
        /// The 3.1.1 return code or the version 5 reason code; 0 is
        /// success.
        code: u8,
        properties: Properties,
    },
    Publish(Publish),
    PubAck {
        packet_id: u16,
        /// Version 5 reason code (0 when absent); 0x80 and above refuse.
        code: u8,
        reason: Option<String>,
    },
    SubAck {
        packet_id: u16,
        /// Granted QoS per filter, or a failure code (0x80 and above).
        codes: Vec<u8>,
    },
    PingResp,
    /// Version 5: the broker closes the connection, saying why.
    Disconnect {
        code: u8,
        reason: Option<String>,
    },
}

// ---- encoding ----

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// A packet: the fixed header around `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A property list: its length, then the properties.
fn put_properties(out: &mut Vec<u8>, props: &[u8]) {
    put_varint(out, props.len());
    out.extend_from_slice(props);
}

/// Checks what the protocol limits: strings of at most 65,535 bytes.
fn check_len(what: &str, b: &[u8]) -> Result<()> {
    if b.len() > u16::MAX as usize {
        return Err(Error::InvalidInput(format!(
            "MQTT {what} of {} bytes (at most 65535)",
            b.len()
        )));
    }
    Ok(())
}

pub fn encode_connect(o: &ConnectOptions) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    put_bytes(&mut body, b"MQTT");
    body.push(o.version.level());
    let mut flags = 0u8;
    if o.clean {
        flags |= 0x02;
    }
    if o.user.is_some() {
        flags |= 0x80;
    }
    if o.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    let keep_alive = o.keep_alive.as_secs().min(u16::MAX as u64) as u16;
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if o.version == Version::V5 {
        let mut props = vec![0x11];
        props.extend_from_slice(&o.session_expiry.to_be_bytes());
        props.push(0x21);
        props.extend_from_slice(&o.receive_maximum.max(1).to_be_bytes());
        put_properties(&mut body, &props);
    }
    check_len("client id", o.client_id.as_bytes())?;
    put_bytes(&mut body, o.client_id.as_bytes());
    for s in [&o.user, &o.password].into_iter().flatten() {
        check_len("user or password", s.as_bytes())?;
        put_bytes(&mut body, s.as_bytes());
    }
    Ok(packet(CONNECT << 4, &body))
}

pub fn encode_publish(version: Version, p: &Publish) -> Result<Vec<u8>> {
    check_len("topic", p.topic.as_bytes())?;
    let mut body = Vec::with_capacity(p.topic.len() + p.payload.len() + 16);
    put_bytes(&mut body, p.topic.as_bytes());
    if p.qos > 0 {
        let id = p
            .packet_id
            .ok_or_else(|| Error::InvalidInput("a QoS 1 PUBLISH needs a packet id".into()))?;
        body.extend_from_slice(&id.to_be_bytes());
    }
    if version == Version::V5 {
        let mut props = Vec::new();
        for (k, v) in &p.user_properties {
            check_len("user property", k.as_bytes())?;
            check_len("user property", v.as_bytes())?;
            props.push(0x26);
            put_bytes(&mut props, k.as_bytes());
            put_bytes(&mut props, v.as_bytes());
        }
        put_properties(&mut body, &props);
    }
    body.extend_from_slice(&p.payload);
    if body.len() > MAX_REMAINING {
        return Err(Error::InvalidInput(format!(
            "MQTT message of {} bytes (at most {MAX_REMAINING})",
            body.len()
        )));
    }
    let first = PUBLISH << 4 | u8::from(p.dup) << 3 | (p.qos & 3) << 1 | u8::from(p.retain);
    Ok(packet(first, &body))
}

/// The same in both versions: version 5 lets a success leave out the
/// reason code and properties.
pub fn encode_puback(packet_id: u16) -> Vec<u8> {
    packet(PUBACK << 4, &packet_id.to_be_bytes())
}

pub fn encode_subscribe(
    version: Version,
    packet_id: u16,
    filters: &[String],
    qos: u8,
) -> Result<Vec<u8>> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version == Version::V5 {
        put_properties(&mut body, &[]);
    }
    for f in filters {
        check_len("topic filter", f.as_bytes())?;
        put_bytes(&mut body, f.as_bytes());
        // Version 5 options: QoS in the low bits, and retain handling 1:
        // retained messages only for a new subscription, not again each
        // time a kept session subscribes after a reconnect. (3.1.1 has no
        // choice: the broker sends them on every SUBSCRIBE.)
        body.push(match version {
            Version::V311 => qos & 3,
            Version::V5 => qos & 3 | 1 << 4,
        });
    }
    // SUBSCRIBE has the reserved flags 0b0010.
    Ok(packet(SUBSCRIBE << 4 | 0x02, &body))
}

pub fn encode_pingreq() -> Vec<u8> {
    packet(PINGREQ << 4, &[])
}

/// A normal DISCONNECT: in version 5, reason 0 keeps the session for its
/// expiry interval.
pub fn encode_disconnect(version: Version) -> Vec<u8> {
    match version {
        Version::V311 => packet(DISCONNECT << 4, &[]),
        Version::V5 => packet(DISCONNECT << 4, &[0, 0]),
    }
}

// ---- decoding ----

fn malformed(what: &str) -> Error {
    Error::Protocol {
        server: "MQTT broker".into(),
        message: format!("malformed MQTT packet: {what}"),
    }
}

/// Reads the fields of a packet body in order.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(malformed("shorter than its fields"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
    }
    fn varint(&mut self) -> Result<usize> {
        match get_varint(self.b)? {
            Some((n, used)) => {
                self.b = &self.b[used..];
                Ok(n)
            }
            None => Err(malformed("a length runs past the end")),
        }
    }
    fn properties(&mut self) -> Result<Properties> {
        let n = self.varint()?;
        let mut r = Reader { b: self.take(n)? };
        let mut p = Properties::default();
        while !r.b.is_empty() {
            match r.u8()? {
                0x26 => {
                    let k = r.string()?;
                    p.user.push((k, r.string()?));
                }
                0x1F => p.reason = Some(r.string()?),
                0x21 => p.receive_maximum = Some(r.u16()?),
                0x13 => p.server_keep_alive = Some(r.u16()?),
                // Skipped by their type: byte, two and four byte integers,
                // variable integer, strings and binary data.
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                    r.u8()?;
                }
                0x22 | 0x23 => {
                    r.u16()?;
                }
                0x02 | 0x11 | 0x18 | 0x27 => {
                    r.u32()?;
                }
                0x0B => {
                    r.varint()?;
                }
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C => {
                    r.bytes()?;
                }
                other => return Err(malformed(&format!("unknown property 0x{other:02x}"))),
            }
        }
        Ok(p)
    }
}

/// A variable-length integer at the start of `b` and the bytes it took;
/// `None` if `b` ends first.
fn get_varint(b: &[u8]) -> Result<Option<(usize, usize)>> {
    let mut n = 0usize;
    for (i, &byte) in b.iter().enumerate() {
        if i == 4 {
            return Err(malformed("a length of more than four bytes"));
        }
        n |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((n, i + 1)));
        }
    }
    if b.len() >= 4 {
        return Err(malformed("a length of more than four bytes"));
    }
    Ok(None)
}

/// The first whole packet in `buf` and how many bytes it took, or `None`
/// if `buf` holds only part of one.
pub fn decode(version: Version, buf: &[u8]) -> Result<Option<(Packet, usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, used)) = get_varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + used + len;
    if buf.len() < total {
        return Ok(None);
    }
    let mut r = Reader {
        b: &buf[1 + used..total],
    };
    let v5 = version == Version::V5;
    let packet = match first >> 4 {
        CONNACK => {
            let flags = r.u8()?;
            let code = r.u8()?;
            let properties = if v5 && !r.b.is_empty() {
                r.properties()?
            } else {
                Properties::default()
            };
            Packet::ConnAck {
                session_present: flags & 1 == 1,
                code,
                properties,
            }
        }
        PUBLISH => {
            let qos = (first >> 1) & 3;
            let topic = r.string()?;
            let packet_id = if qos > 0 { Some(r.u16()?) } else { None };
            let user_properties = if v5 { r.properties()?.user } else { Vec::new() };
            Packet::Publish(Publish {
                topic,
                qos,
                retain: first & 1 == 1,
                dup: first & 0x08 != 0,
                packet_id,
                user_properties,
                payload: r.b.to_vec(),
            })
        }
        PUBACK => {
            let packet_id = r.u16()?;
            let (code, reason) = if v5 && !r.b.is_empty() {
                let code = r.u8()?;
                let reason = if r.b.is_empty() {
                    None
                } else {
                    r.properties()?.reason
                };
                (code, reason)
            } else {
                (0, None)
            };
            Packet::PubAck {
                packet_id,
                code,
                reason,
            }
        }
        SUBACK => {
            let packet_id = r.u16()?;
            if v5 {
                r.properties()?;
            }
            Packet::SubAck {
                packet_id,
                codes: r.b.to_vec(),
            }
        }
        PINGRESP => Packet::PingResp,
        DISCONNECT => {
            let code = if r.b.is_empty() { 0 } else { r.u8()? };
            let reason = if r.b.is_empty() {
                None
            } else {
                r.properties()?.reason
            };
            Packet::Disconnect { code, reason }
        }
        other => return Err(malformed(&format!("unexpected packet type {other}"))),
    };
    Ok(Some((packet, total)))
}

/// What a 3.1.1 CONNACK return code or a version 5 reason code means, for
/// messages.
pub fn refusal(code: u8) -> &'static str {
    match code {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        0x80 => "unspecified error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8E => "session taken over by another client with the same id",
        0x8F => "topic filter invalid",
        0x90 => "topic name invalid",
        0x93 => "receive maximum exceeded",
        0x95 => "packet too large",
        0x97 => "quota exceeded",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        _ => "refused",
    }
}

// ---- the connection ----

/// A connected, accepted MQTT session on a socket.
pub struct Connection {
    stream: TcpStream,
    version: Version,
    address: String,
    input: Vec<u8>,
    output: Vec<u8>,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    /// Whether the broker had a session for our client id already.
    pub session_present: bool,
    /// Version 5: the most unacknowledged QoS 1 PUBLISHes the broker
    /// takes from us at once (65,535 when it does not say).
    pub receive_maximum: u16,
}

impl Connection {
    /// Connects to `address`, sends CONNECT and waits for the broker to
    /// accept it. An unreachable broker fails within seconds naming the
    /// address; a refusal says why.
    pub fn open(address: &str, options: &ConnectOptions) -> Result<Self> {
        let stream = net::connect("MQTT broker", address)?;
        let mut c = Self {
            stream,
            version: options.version,
            address: address.to_owned(),
            input: Vec::new(),
            output: Vec::new(),
            keep_alive: options.keep_alive,
            last_sent: Instant::now(),
            ping_sent: None,
            session_present: false,
            receive_maximum: u16::MAX,
        };
        c.queue(&encode_connect(options)?);
        c.send()?;
        match c.read(net::CONNECT_TIMEOUT)? {
            Some(Packet::ConnAck {
                session_present,
                code: 0,
                properties,
            }) => {
                c.session_present = session_present;
                if let Some(m) = properties.receive_maximum {
                    c.receive_maximum = m.max(1);
                }
                if let Some(k) = properties.server_keep_alive {
                    c.keep_alive = Duration::from_secs(k.into());
                }
                Ok(c)
            }
            Some(Packet::ConnAck {
                code, properties, ..
            }) => Err(Error::Refused {
                server: format!("MQTT broker at {address}"),
                message: format!(
                    "MQTT broker at {address} refused the connection: {} (code 0x{code:02x}){}",
                    refusal(code),
                    properties
                        .reason
                        .map_or_else(String::new, |r| format!(": {r}"))
                ),
            }),
            Some(other) => Err(c.lost(format!("expected CONNACK, got {other:?}"))),
            None => Err(c.lost("no CONNACK within 5 s".into())),
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// An error for this connection, naming the broker.
    pub fn lost(&self, detail: String) -> Error {
        Error::Protocol {
            server: format!("MQTT broker at {}", self.address),
            message: format!("MQTT broker at {}: connection lost: {detail}", self.address),
        }
    }

    /// Adds a packet to what [`Connection::send`] writes.
    pub fn queue(&mut self, packet: &[u8]) {
        self.output.extend_from_slice(packet);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.output.len()
    }

    /// Writes everything queued.
    pub fn send(&mut self) -> Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.output);
        self.output.clear();
        result.map_err(|e| self.lost(e.to_string()))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends a PINGREQ when nothing was sent for half the keep-alive
    /// interval; fails when the last one has had no answer for a whole
    /// interval (the broker or the network is gone without a word).
    fn keep_alive(&mut self) -> Result<()> {
        if self.keep_alive.is_zero() {
            return Ok(());
        }
        if let Some(sent) = self.ping_sent {
            if sent.elapsed() > self.keep_alive {
                return Err(self.lost("no answer to keep-alive".into()));
            }
        } else if self.last_sent.elapsed() >= self.keep_alive / 2 {
            self.queue(&encode_pingreq());
            self.send()?;
            self.ping_sent = Some(Instant::now());
        }
        Ok(())
    }

    /// The connection has been quiet for longer than the keep-alive
    /// interval, so the broker may have dropped it.
    pub fn idle_too_long(&self) -> bool {
        !self.keep_alive.is_zero() && self.last_sent.elapsed() > self.keep_alive
    }

    /// The next packet from the broker, waiting up to `timeout` (at least
    /// a millisecond); `None` if none came. PINGRESPs are taken here;
    /// a DISCONNECT or the end of the stream is an error.
    pub fn read(&mut self, timeout: Duration) -> Result<Option<Packet>> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((packet, used)) = decode(self.version, &self.input)? {
                self.input.drain(..used);
                match packet {
                    Packet::PingResp => self.ping_sent = None,
                    Packet::Disconnect { code, reason } => {
                        return Err(self.lost(format!(
                            "the broker disconnected: {} (code 0x{code:02x}){}",
                            refusal(code),
                            reason.map_or_else(String::new, |r| format!(": {r}"))
                        )))
                    }
                    other => return Ok(Some(other)),
                }
                continue;
            }
            self.keep_alive()?;
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.max(Duration::from_millis(1));
            // Wake up for keep-alive even in a long wait.
            let wait = if self.keep_alive.is_zero() {
                wait
            } else {
                wait.min(self.keep_alive / 4).max(Duration::from_millis(1))
            };
            self.stream
                .set_read_timeout(Some(wait))
                .map_err(|e| self.lost(e.to_string()))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(self.lost("the broker closed the connection".into())),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.lost(e.to_string())),
            }
        }
    }

    /// Ends the session politely (best effort: the connection may be gone)
    /// and waits, up to a second, for the broker to close its end. The
    /// broker handles a connection's packets in order, so after that it
    /// has taken the PUBACKs sent before; closing at once could lose them
    /// if a new connection with the same client id took the session over
    /// first, or if unread input turned our close into a reset.
    pub fn disconnect(mut self) {
        self.queue(&encode_disconnect(self.version));
        if self.send().is_err() {
            return;
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut sink = [0u8; 4096];
        while let Ok(n) = self.stream.read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(version: Version) -> ConnectOptions {
        ConnectOptions {
            version,
            client_id: "c1".into(),
            clean: false,
            keep_alive: Duration::from_secs(30),
            user: Some("u".into()),
            password: Some("p".into()),
            session_expiry: 3600,
            receive_maximum: 100,
        }
    }

    #[test]
    fn lengths_take_seven_bits_a_byte() {
        for (n, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (MAX_REMAINING, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out, bytes, "{n}");
            assert_eq!(get_varint(bytes).unwrap(), Some((n, bytes.len())));
        }
        assert_eq!(get_varint(&[0x80, 0x80]).unwrap(), None);
        assert!(get_varint(&[0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
    }

    #[test]
    fn connect_311_is_byte_exact() {
        let bytes = encode_connect(&options(Version::V311)).unwrap();
        let expected: &[u8] = &[
            0x10, 20, // CONNECT, remaining length
            0, 4, b'M', b'Q', b'T', b'T', 4,    // protocol name, level 4
            0xC0, // user and password, clean session false
            0, 30, // keep alive
            0, 2, b'c', b'1', 0, 1, b'u', 0, 1, b'p',
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn connect_5_carries_session_expiry_and_receive_maximum() {
        let bytes = encode_connect(&options(Version::V5)).unwrap();
        // After the keep alive: 8 bytes of properties.
        assert_eq!(bytes[8], 5);
        assert_eq!(&bytes[12..21], &[8, 0x11, 0, 0, 0x0E, 0x10, 0x21, 0, 100]);
    }

    #[test]
    fn publishes_round_trip_in_both_versions() {
        for version in [Version::V311, Version::V5] {
            let p = Publish {
                topic: "heaters/h1/command".into(),
                qos: 1,
                retain: true,
                dup: true,
                packet_id: Some(513),
                user_properties: if version == Version::V5 {
                    vec![("trace".into(), "abc".into()), ("trace".into(), "x".into())]
                } else {
                    Vec::new()
                },
                payload: b"{\"on\":true}".to_vec(),
            };
            let mut bytes = encode_publish(version, &p).unwrap();
            assert_eq!(bytes[0], 0x3B, "PUBLISH, dup, QoS 1, retain");
            let (decoded, used) = decode(version, &bytes).unwrap().unwrap();
            assert_eq!((decoded, used), (Packet::Publish(p.clone()), bytes.len()));
            // A packet cut anywhere is not there yet; one followed by
            // another is taken alone.
            for cut in 0..bytes.len() {
                assert_eq!(decode(version, &bytes[..cut]).unwrap(), None, "{cut}");
            }
            let len = bytes.len();
            bytes.extend_from_slice(&encode_pingreq());
            assert_eq!(decode(version, &bytes).unwrap().unwrap().1, len);
        }
        let q0 = Publish {
            topic: "t".into(),
            payload: b"x".to_vec(),
            ..Publish::default()
        };
        assert_eq!(
            encode_publish(Version::V311, &q0).unwrap(),
            [0x30, 4, 0, 1, b't', b'x']
        );
        let no_id = Publish { qos: 1, ..q0 };
        assert!(encode_publish(Version::V311, &no_id).is_err());
    }

    #[test]
    fn acknowledgements_decode_with_reason_codes() {
        // 3.1.1 PUBACK: just the packet id.
        assert_eq!(
            decode(Version::V311, &[0x40, 2, 0x01, 0x02])
                .unwrap()
                .unwrap()
                .0,
            Packet::PubAck {
                packet_id: 258,
                code: 0,
                reason: None
            }
        );
        // Version 5 PUBACK refusing with a reason string.
        let mut body = vec![0, 7, 0x87];
        let mut props = vec![0x1F];
        put_bytes(&mut props, b"no");
        put_properties(&mut body, &props);
        let bytes = packet(0x40, &body);
        assert_eq!(
            decode(Version::V5, &bytes).unwrap().unwrap().0,
            Packet::PubAck {
                packet_id: 7,
                code: 0x87,
                reason: Some("no".into())
            }
        );
        // SUBACK granting QoS 1 and refusing a filter.
        assert_eq!(
            decode(Version::V311, &[0x90, 4, 0, 9, 1, 0x80])
                .unwrap()
                .unwrap()
                .0,
            Packet::SubAck {
                packet_id: 9,
                codes: vec![1, 0x80]
            }
        );
        assert_eq!(
            decode(Version::V5, &[0x90, 5, 0, 9, 0, 1, 1])
                .unwrap()
                .unwrap()
                .0,
            Packet::SubAck {
                packet_id: 9,
                codes: vec![1, 1]
            }
        );
        // CONNACK 5 with a receive maximum and a skipped property.
        let bytes = [0x20, 11, 1, 0, 8, 0x24, 1, 0x21, 0, 20, 0x13, 0, 60];
        assert_eq!(
            decode(Version::V5, &bytes).unwrap().unwrap().0,
            Packet::ConnAck {
                session_present: true,
                code: 0,
                properties: Properties {
                    receive_maximum: Some(20),
                    server_keep_alive: Some(60),
                    ..Properties::default()
                }
            }
        );
    }

    #[test]
    fn subscribe_and_small_packets_are_byte_exact() {
        let filters = vec!["a/+".to_string(), "b/#".to_string()];
        assert_eq!(
            encode_subscribe(Version::V311, 1, &filters, 1).unwrap(),
            [0x82, 14, 0, 1, 0, 3, b'a', b'/', b'+', 1, 0, 3, b'b', b'/', b'#', 1]
        );
        assert_eq!(
            encode_subscribe(Version::V5, 1, &filters[..1], 1).unwrap(),
            [0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'+', 0x11]
        );
        assert_eq!(encode_puback(0x0102), [0x40, 2, 1, 2]);
        assert_eq!(encode_pingreq(), [0xC0, 0]);
        assert_eq!(encode_disconnect(Version::V5), [0xE0, 2, 0, 0]);
    }

    #[test]
    fn malformed_packets_are_errors() {
        // A PUBLISH whose topic length runs past the packet.
        assert!(decode(Version::V311, &[0x30, 3, 0, 9, b'x']).is_err());
        // An unknown property.
        assert!(decode(Version::V5, &[0x20, 4, 0, 0, 1, 0x7F]).is_err());
        // A packet type a client never receives.
        assert!(decode(Version::V311, &[0x10, 0]).is_err());
    }
}
