//! RESP2, the Redis wire protocol, and a connection speaking it.
//!
//! A command is an array of bulk strings (`*<n>\r\n` then `$<len>\r\n<bytes>\r\n`
//! per argument); a reply is one typed value, arrays nesting. Commands can
//! be pipelined: written back to back, their replies read later in the same
//! order, which is how the sink sends a batch in one round trip.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use riffle::{Error, Result};

use crate::net::{self, Url};

/// The default server, when no URL is given.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the server refused the command; the text is its reason.
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nabc`, or `$-1` (None) for a missing value.
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...`, or `*-1` (None), which XREADGROUP answers when its
    /// BLOCK time passes with nothing new.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(Some(b)) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The elements of an array; a null array is empty.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(Some(v)) => Some(v),
            Value::Array(None) => Some(&[]),
            _ => None,
        }
    }
}

/// Appends `args` to `out` as one command.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn lost(address: &str, e: io::Error) -> Error {
    Error::Connect {
        server: format!("Redis server at {address}"),
        detail: e.to_string(),
    }
}

/// `e` with its message rewritten by `say` (which puts what was being done
/// before it), when it is the server's refusal or breach of protocol; other
/// errors as they are, their kind being what a caller decides on.
pub fn in_context(e: Error, say: impl FnOnce(&str) -> String) -> Error {
    match e {
        Error::Refused { server, message } => Error::Refused {
            message: say(&message),
            server,
        },
        Error::Protocol { server, message } => Error::Protocol {
            message: say(&message),
            server,
        },
        other => other,
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The largest bulk string or array accepted, so that a corrupt length
/// cannot make the reader allocate without bound (Redis's own limit on a
/// string is 512 MiB).
const MAX_LEN: i64 = 512 << 20;

/// Reads one reply. An error reply is a value, not an `Err`: only broken
/// framing or I/O is.
pub fn read_value(r: &mut impl BufRead) -> io::Result<Value> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the server",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad("reply line without CRLF"));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || -> io::Result<i64> {
        text.parse()
            .map_err(|_| bad(format!("expected a number, got '{text}'")))
    };
    match line[0] {
        b'+' => Ok(Value::Simple(text)),
        b'-' => Ok(Value::Error(text)),
        b':' => Ok(Value::Int(number()?)),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Value::Bulk(None));
            }
            if n > MAX_LEN {
                return Err(bad(format!("bulk string of {n} bytes")));
            }
            let mut data = vec![0; n as usize + 2];
            r.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(bad("bulk string without CRLF"));
            }
            data.truncate(n as usize);
            Ok(Value::Bulk(Some(data)))
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                return Ok(Value::Array(None));
            }
            if n > MAX_LEN {
                return Err(bad(format!("array of {n} elements")));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                items.push(read_value(r)?);
            }
            Ok(Value::Array(Some(items)))
        }
        other => Err(bad(format!("unknown reply type '{}'", other as char))),
    }
}

/// Where a Redis server is and how to log in to it, from
/// `redis://[[user]:password@]host[:port]`.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
}

impl Target {
    pub fn parse(text: &str) -> Result<Self> {
        let url = Url::parse(text, 6379)?;
        if url.scheme != "redis" {
            return Err(Error::InvalidInput(format!(
                "URL '{text}': expected redis://[:password@]host[:port] (rediss:// with TLS is not supported)"
            )));
        }
        Ok(Self { url })
    }

    pub fn address(&self) -> String {
        self.url.address()
    }
}

/// A connection to one server, commands written to a buffer and sent on
/// [`Conn::flush`] (or by [`Conn::command`]).
pub struct Conn {
    address: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    out: Vec<u8>,
}

impl Conn {
    /// Connects (reporting an unreachable server within seconds, with its
    /// address) and logs in when the URL has a password.
    pub fn open(target: &Target) -> Result<Self> {
        let address = target.address();
        let stream = net::connect("Redis server", &address)?;
        let writer = stream.try_clone().map_err(|e| lost(&address, e))?;
        let mut conn = Self {
            address,
            reader: BufReader::with_capacity(64 << 10, stream),
            writer,
            out: Vec::new(),
        };
        conn.set_timeout(Duration::from_secs(10))?;
        if let Some(password) = &target.url.password {
            let user = target.url.user.as_deref().filter(|u| !u.is_empty());
            match user {
                Some(u) => conn.command(&[b"AUTH", u.as_bytes(), password.as_bytes()])?,
                None => conn.command(&[b"AUTH", password.as_bytes()])?,
            };
        }
        Ok(conn)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// How long a read or write may wait before the connection counts as
    /// lost.
    pub fn set_timeout(&mut self, t: Duration) -> Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        self.writer
            .set_read_timeout(t)
            .and_then(|()| self.writer.set_write_timeout(t))
            .map_err(|e| self.io(e))
    }

    /// A broken connection (I/O error, timeout, garbled reply) is
    /// `Error::Connect`, so that callers can tell it from a refused
    /// command and reconnect.
    fn io(&self, e: io::Error) -> Error {
        lost(&self.address, e)
    }

    /// Queues a command; its reply is read later with [`Conn::reply`].
    pub fn queue(&mut self, args: &[&[u8]]) {
        encode(&mut self.out, args);
    }

    /// How many bytes are queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    /// Writes the queued commands.
    pub fn flush(&mut self) -> Result<()> {
        let out = std::mem::take(&mut self.out);
        self.writer.write_all(&out).map_err(|e| self.io(e))
    }

    /// Reads the next reply; an error reply is [`Error::Refused`] with the
    /// server's text as its `message`.
    pub fn reply(&mut self) -> Result<Value> {
        match read_value(&mut self.reader) {
            Ok(Value::Error(text)) => Err(Error::Refused {
                server: format!("redis {}", self.address),
                message: text,
            }),
            Ok(v) => Ok(v),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Sends one command (and whatever was queued before it) and returns
    /// its reply.
    pub fn command(&mut self, args: &[&[u8]]) -> Result<Value> {
        if !self.out.is_empty() {
            return Err(Error::InvalidInput(
                "redis: a command while pipelined replies are pending".into(),
            ));
        }
        self.queue(args);
        self.flush()?;
        self.reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Value> {
        read_value(&mut &bytes[..])
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XACK", b"s", b"1-0"]);
        encode(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        assert_eq!(
            out,
            b"*3\r\n$4\r\nXACK\r\n$1\r\ns\r\n$3\r\n1-0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n"
        );
    }

    #[test]
    fn every_reply_type_parses() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Value::Simple("OK".into()));
        assert_eq!(
            parse(b"-BUSYGROUP Consumer Group name already exists\r\n").unwrap(),
            Value::Error("BUSYGROUP Consumer Group name already exists".into())
        );
        assert_eq!(parse(b":-12\r\n").unwrap(), Value::Int(-12));
        assert_eq!(
            parse(b"$5\r\na\r\nbc\r\n").unwrap(),
            Value::Bulk(Some(b"a\r\nbc".to_vec()))
        );
        assert_eq!(parse(b"$0\r\n\r\n").unwrap(), Value::Bulk(Some(vec![])));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Value::Bulk(None));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Value::Array(None));
        assert_eq!(parse(b"*0\r\n").unwrap(), Value::Array(Some(vec![])));
        // An XREADGROUP reply: [[stream, [[id, [field, value]]]]].
        let v = parse(
            b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$5\r\nvalue\r\n$1\r\nx\r\n",
        )
        .unwrap();
        let entry = &v.items().unwrap()[0].items().unwrap()[1].items().unwrap()[0];
        assert_eq!(entry.items().unwrap()[0].bytes(), Some(&b"1-0"[..]));
        assert_eq!(
            entry.items().unwrap()[1].items().unwrap()[1].bytes(),
            Some(&b"x"[..])
        );
    }

    #[test]
    fn pipelined_replies_come_one_at_a_time() {
        let mut input = &b"$3\r\n1-0\r\n-ERR wrong\r\n:1\r\n"[..];
        assert_eq!(
            read_value(&mut input).unwrap(),
            Value::Bulk(Some(b"1-0".to_vec()))
        );
        assert_eq!(
            read_value(&mut input).unwrap(),
            Value::Error("ERR wrong".into())
        );
        assert_eq!(read_value(&mut input).unwrap(), Value::Int(1));
        assert_eq!(
            read_value(&mut input).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn broken_framing_is_an_error() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b"+OK\n").is_err());
        assert!(parse(b":abc\r\n").is_err());
        assert!(parse(b"$3\r\nab").is_err());
        assert!(parse(b"$2\r\nabcd").is_err());
        assert!(parse(b"*2\r\n:1\r\n").is_err());
    }

    #[test]
    fn urls_take_a_password() {
        let t = Target::parse("redis://:secret@h:7000").unwrap();
        assert_eq!(t.address(), "h:7000");
        assert_eq!(t.url.password.as_deref(), Some("secret"));
        assert_eq!(
            Target::parse(DEFAULT_URL).unwrap().address(),
            "127.0.0.1:6379"
        );
        assert!(Target::parse("http://h").is_err());
    }
}
