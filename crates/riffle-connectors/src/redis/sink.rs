//! Appending records to streams with pipelined XADD: on one connection
//! to a server, or through a cluster pipeline that sends each XADD to the
//! node holding its stream.

use std::time::{Duration, Instant};

use ::redis::cluster::ClusterPipeline;
use ::redis::{Cmd, Value};
use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};

use super::{Conn, Target};
use crate::net::Backoff;

/// How much may be queued before it is written out, replies still unread.
const WRITE_CHUNK: usize = 256 << 10;

/// Writes each record as one stream entry. `send` queues an XADD and
/// `flush` reads one reply per XADD: the entry's id, or an error reply
/// (`WRONGTYPE` for a key that is not a stream, `OOM`, an ACL denial),
/// which refuses that record for good while the others' replies are read
/// on. A lost connection instead ends the flush: the XADDs whose replies
/// were read are settled, and the caller sends the rest again. On a
/// cluster, the XADDs of a flush go out together, each to its stream's
/// node, and are settled together: those refused for good by their
/// error reply, the others confirmed, or none if a node was lost.
pub struct RedisSink {
    target: Target,
    stream: String,
    maxlen: Option<u64>,
    conn: Option<Conn>,
    /// Packed XADDs not yet written, on one server's connection.
    out: Vec<u8>,
    /// The XADDs of the next flush, on a cluster.
    routed: ClusterPipeline,
    /// XADDs written (or queued) whose replies are not read yet.
    in_flight: usize,
    backoff: Backoff,
}

impl RedisSink {
    /// Connects; an unreachable server, a failed TLS handshake or refused
    /// credentials are an error here, within seconds.
    pub fn open(target: Target, stream: String, maxlen: Option<u64>) -> Result<Self> {
        let conn = target.connect()?;
        Ok(Self {
            target,
            stream,
            maxlen,
            conn: Some(conn),
            out: Vec::new(),
            routed: ClusterPipeline::new(),
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
                match self.target.connect() {
                    Ok(c) => {
                        tracing::info!("reconnected to redis {}", self.target.address());
                        self.backoff.reset();
                        self.conn = Some(c);
                        break;
                    }
                    // Refused credentials or certificates do not get
                    // better by trying again.
                    Err(e) if !e.is_transient() => return Err(e),
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
        self.out.clear();
        self.routed.clear();
        self.in_flight = 0;
        e
    }

    /// Writes the queued XADDs.
    fn write_out(&mut self) -> Result<()> {
        let Some(Conn::One(conn)) = self.conn.as_mut() else {
            return Ok(());
        };
        let out = std::mem::take(&mut self.out);
        match conn.send_packed_command(&out) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = self.target.error(e);
                Err(self.fail(e))
            }
        }
    }

    fn try_flush(&mut self, timeout: Duration) -> Result<()> {
        let sent = self.in_flight;
        let mut refused = Vec::new();
        match self.conn.as_mut() {
            None => return Ok(()),
            Some(Conn::Cluster(_)) => return self.flush_routed(timeout),
            Some(Conn::One(_)) => {}
        };
        if let Err(e) = self.write_out() {
            return Err(Unconfirmed::transient(0, refused, &e, None));
        }
        let Some(Conn::One(conn)) = self.conn.as_mut() else {
            unreachable!("written above")
        };
        if let Err(e) = conn.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))) {
            let e = self.target.error(e);
            return Err(Unconfirmed::transient(0, refused, &self.fail(e), None));
        }
        for at in 0..sent {
            let broken = match conn.recv_response() {
                Ok(Value::BulkString(_) | Value::SimpleString(_)) => continue,
                // An error reply: this XADD was refused, the connection is
                // fine and the next reply is the next XADD's.
                Ok(Value::ServerError(e)) => {
                    let text = match e.details() {
                        Some(detail) => format!("{} {detail}", e.code()),
                        None => e.code().to_owned(),
                    };
                    refused.push((
                        at,
                        format!("redis {}: XADD refused: {text}", self.target.address()),
                    ));
                    continue;
                }
                Ok(other) => Error::Protocol {
                    server: format!("redis {}", self.target.address()),
                    message: format!(
                        "redis {}: XADD answered {other:?} instead of an id",
                        self.target.address()
                    ),
                },
                Err(e) => self.target.error(e),
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

impl RedisSink {
    /// Sends the cluster pipeline's XADDs and settles them together.
    fn flush_routed(&mut self, timeout: Duration) -> Result<()> {
        let sent = std::mem::take(&mut self.in_flight);
        let pipe = std::mem::take(&mut self.routed);
        let Some(Conn::Cluster(conn)) = self.conn.as_mut() else {
            return Ok(());
        };
        if sent == 0 {
            return Ok(());
        }
        let replies = conn
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| pipe.query::<Vec<Value>>(conn));
        let e = match replies {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match e.clone().into_server_errors() {
            Some(errors) => {
                let refused = errors
                    .iter()
                    .map(|(at, e)| {
                        let text = match e.details() {
                            Some(detail) => format!("{} {detail}", e.code()),
                            None => e.code().to_owned(),
                        };
                        let why = format!("redis {}: XADD refused: {text}", self.target.address());
                        (*at, why)
                    })
                    .collect();
                Unconfirmed::refused(sent, refused)
            }
            None => {
                let e = self.target.error(e);
                Err(Unconfirmed::transient(0, Vec::new(), &self.fail(e), None))
            }
        }
    }

    fn queue(&mut self, cmd: Cmd) -> Result<()> {
        self.in_flight += 1;
        if let Some(Conn::Cluster(_)) = self.conn {
            self.routed.add_command(cmd);
            return Ok(());
        }
        cmd.write_packed_command(&mut self.out);
        if self.out.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Ok(())
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
        self.conn()?;
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(render(&self.stream, record));
        if let Some(n) = self.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        if let Some(k) = &record.key {
            cmd.arg("key").arg(&k[..]);
        }
        cmd.arg("value").arg(&record.value[..]);
        for (name, v) in &record.headers {
            cmd.arg(name).arg(&v[..]);
        }
        self.queue(cmd)
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.try_flush(timeout)
    }
}
