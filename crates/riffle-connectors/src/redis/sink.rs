//! Appending records to streams with pipelined XADD.

use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};

use super::client::{Conn, Target, Value};
use crate::net::Backoff;

/// How much may be queued before it is written out, replies still unread.
const WRITE_CHUNK: usize = 256 << 10;

/// Writes each record as one stream entry. `send` queues an XADD and
/// `flush` reads one reply per XADD: the entry's id, or an error reply
/// (`WRONGTYPE` for a key that is not a stream, `OOM`, an ACL denial),
/// which refuses that record for good while the others' replies are read
/// on. A lost connection instead ends the flush: the XADDs whose replies
/// were read are settled, and the caller sends the rest again.
pub struct RedisSink {
    target: Target,
    stream: String,
    maxlen: Option<u64>,
    conn: Option<Conn>,
    /// XADDs written (or queued) whose replies are not read yet.
    in_flight: usize,
    backoff: Backoff,
}

impl RedisSink {
    /// Connects; an unreachable server is an error here, within seconds.
    pub fn open(target: Target, stream: String, maxlen: Option<u64>) -> Result<Self> {
        let conn = Conn::open(&target)?;
        Ok(Self {
            target,
            stream,
            maxlen,
            conn: Some(conn),
            in_flight: 0,
            backoff: Backoff::default(),
        })
    }

    /// The connection, opened again if it was lost: a few attempts with
    /// backoff, then the error (the pipeline sends the batch again later).
    fn conn(&mut self) -> Result<&mut Conn> {
        if self.conn.is_none() {
            let give_up = Instant::now() + Duration::from_secs(5);
            loop {
                match Conn::open(&self.target) {
                    Ok(c) => {
                        tracing::info!("reconnected to redis {}", self.target.address());
                        self.backoff.reset();
                        self.conn = Some(c);
                        break;
                    }
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        if Instant::now() + delay > give_up {
                            return Err(e);
                        }
                        tracing::warn!("{e}; trying again in {delay:?}");
                        std::thread::sleep(delay);
                    }
                }
            }
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn fail(&mut self, e: Error) -> Error {
        self.conn = None;
        self.in_flight = 0;
        e
    }

    fn try_flush(&mut self, timeout: Duration) -> Result<()> {
        let sent = self.in_flight;
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let mut refused = Vec::new();
        let written = conn.flush().and_then(|()| conn.set_timeout(timeout));
        if let Err(e) = written {
            return Err(Unconfirmed::transient(0, refused, &self.fail(e), None));
        }
        for at in 0..sent {
            let broken = match conn.reply() {
                Ok(Value::Bulk(Some(_))) => continue,
                // An error reply: this XADD was refused, the connection is
                // fine and the next reply is the next XADD's.
                Err(Error::Refused { message: text, .. }) => {
                    refused.push((
                        at,
                        format!("redis {}: XADD refused: {text}", conn.address()),
                    ));
                    continue;
                }
                Ok(other) => Error::Protocol {
                    server: format!("redis {}", conn.address()),
                    message: format!(
                        "redis {}: XADD answered {other:?} instead of an id",
                        conn.address()
                    ),
                },
                Err(e) => e,
            };
            return Err(Unconfirmed::transient(
                at,
                refused,
                &self.fail(broken),
                None,
            ));
        }
        self.in_flight = 0;
        Unconfirmed::refused(sent, refused)
    }
}

impl Sink for RedisSink {
    fn describe(&self) -> String {
        format!("redis {} stream {}", self.target.address(), self.stream)
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        let stream = render(&self.stream, record);
        let maxlen = self.maxlen.map(|n| n.to_string());
        let conn = self.conn()?;
        let mut args: Vec<&[u8]> = vec![b"XADD", stream.as_bytes()];
        if let Some(n) = &maxlen {
            args.extend([&b"MAXLEN"[..], b"~", n.as_bytes()]);
        }
        args.push(b"*");
        if let Some(k) = &record.key {
            args.extend([&b"key"[..], k]);
        }
        args.extend([&b"value"[..], &record.value]);
        for (name, v) in &record.headers {
            args.extend([name.as_bytes(), v]);
        }
        conn.queue(&args);
        let written = if conn.queued_bytes() >= WRITE_CHUNK {
            conn.flush()
        } else {
            Ok(())
        };
        self.in_flight += 1;
        written.map_err(|e| self.fail(e))
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.try_flush(timeout)
    }
}
