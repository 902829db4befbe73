//! Publishing persistent messages with publisher confirms.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink};
use riffle::{Error, Result};

use super::client::{Connection, Incoming, Params, Value};
use super::source::KEY_HEADER;
use crate::net::Backoff;

/// Records published to an exchange; a flush waits for the broker's
/// confirms.
pub struct AmqpSink {
    params: Params,
    exchange: String,
    routing_key: String,
    mandatory: bool,
    conn: Option<Connection>,
    /// The sequence number the broker gives the next publish (confirm mode
    /// numbers a channel's publishes from 1).
    next_tag: u64,
    /// Published and not yet confirmed.
    pending: BTreeSet<u64>,
    /// Why the broker refused something since the last flush.
    refused: Option<String>,
    backoff: Backoff,
    /// Whether the last connection attempt failed (the next one waits).
    failing: bool,
}

impl AmqpSink {
    /// Connects at once, so that an unreachable broker is reported at
    /// start-up.
    pub fn open(
        params: Params,
        exchange: String,
        routing_key: String,
        mandatory: bool,
    ) -> Result<Self> {
        let mut s = Self {
            params,
            exchange,
            routing_key,
            mandatory,
            conn: None,
            next_tag: 1,
            pending: BTreeSet::new(),
            refused: None,
            backoff: Backoff::default(),
            failing: false,
        };
        s.connect()?;
        Ok(s)
    }

    fn connect(&mut self) -> Result<()> {
        let mut c = Connection::open(&self.params)?;
        c.confirm_select()?;
        self.conn = Some(c);
        self.next_tag = 1;
        self.pending.clear();
        self.refused = None;
        Ok(())
    }

    /// Reconnects after a failure, waiting with backoff while the broker
    /// stays away.
    fn reconnect(&mut self) -> Result<()> {
        if self.failing {
            self.backoff.wait();
        }
        match self.connect() {
            Ok(()) => {
                tracing::info!("AMQP sink reconnected to {}", self.params.address);
                self.failing = false;
                self.backoff.reset();
                Ok(())
            }
            Err(e) => {
                tracing::warn!("AMQP sink cannot reconnect to {}: {e}", self.params.address);
                self.failing = true;
                Err(e)
            }
        }
    }

    /// Gives up on a connection; what it had not confirmed is sent again
    /// by the caller.
    fn lost(&mut self, e: Error) -> Error {
        tracing::warn!(
            "AMQP sink at {}: {e}; reconnecting on the next send",
            self.params.address
        );
        self.conn = None;
        self.pending.clear();
        self.failing = true;
        e
    }

    fn handle(&mut self, event: Incoming) {
        match event {
            Incoming::Ack { tag, multiple } => {
                if multiple {
                    self.pending = self.pending.split_off(&(tag + 1));
                } else {
                    self.pending.remove(&tag);
                }
            }
            Incoming::Nack { tag, multiple } => {
                if multiple {
                    self.pending = self.pending.split_off(&(tag + 1));
                } else {
                    self.pending.remove(&tag);
                }
                self.refused = Some("the broker refused a message (nack)".into());
            }
            Incoming::Returned {
                code,
                text,
                routing_key,
            } => {
                if self.mandatory {
                    self.refused = Some(format!(
                        "no queue took a message with routing key '{routing_key}': {code} {text}"
                    ));
                }
            }
            Incoming::Delivery(_) => {}
        }
    }

    /// Handles what the broker has sent already, without waiting: confirms,
    /// and above all a closed connection, found before publishing into it.
    fn drain(&mut self) -> Result<()> {
        loop {
            let conn = self.conn.as_mut().expect("connected");
            match conn.next(Instant::now()) {
                Ok(Some(event)) => self.handle(event),
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.lost(e)),
            }
        }
    }
}

impl Sink for AmqpSink {
    fn describe(&self) -> String {
        let exchange = if self.exchange.is_empty() {
            "(default)"
        } else {
            &self.exchange
        };
        format!(
            "amqp {} exchange {exchange} routing key {}",
            self.params.address, self.routing_key
        )
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        if self.conn.is_none() {
            self.reconnect()?;
        }
        if self.pending.is_empty() && self.drain().is_err() {
            // Nothing was sent on it since the last flush, so nothing is
            // lost: a connection that died while idle (the broker closes
            // one that missed its heartbeats) is replaced at once.
            self.reconnect()?;
        }
        let routing_key = render(&self.routing_key, record);
        if routing_key.len() > 255 {
            return Err(Error::InvalidInput(format!(
                "amqp: routing key '{routing_key}' is longer than 255 bytes"
            )));
        }
        let mut headers: Vec<(String, Value)> = Vec::with_capacity(record.headers.len() + 1);
        if let Some(key) = &record.key {
            headers.push((KEY_HEADER.to_owned(), Value::LongStr(key.clone())));
        }
        for (name, value) in &record.headers {
            headers.push((name.clone(), Value::LongStr(value.clone())));
        }
        let conn = self.conn.as_mut().expect("connected above");
        if let Err(e) = conn.publish(
            &self.exchange,
            &routing_key,
            self.mandatory,
            &headers,
            &record.value,
        ) {
            return Err(self.lost(e));
        }
        self.pending.insert(self.next_tag);
        self.next_tag += 1;
        Ok(())
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            // Nothing sent since the connection was lost and reported.
            return Ok(());
        };
        if let Err(e) = conn.write_out() {
            return Err(self.lost(e));
        }
        let deadline = Instant::now() + timeout;
        while !self.pending.is_empty() {
            let conn = self.conn.as_mut().expect("connected");
            match conn.next(deadline) {
                Ok(Some(event)) => self.handle(event),
                Ok(None) => {
                    let n = self.pending.len();
                    self.pending.clear();
                    return Err(Error::Timeout(format!(
                        "AMQP server at {} confirmed not all messages within {timeout:?} ({n} left)",
                        self.params.address
                    )));
                }
                Err(e) => return Err(self.lost(e)),
            }
        }
        // A return comes before its message's ack: look once more for any.
        self.drain()?;
        match self.refused.take() {
            Some(why) => Err(Error::Backend(format!(
                "AMQP server at {}: {why}",
                self.params.address
            ))),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> Result<()> {
        let r = self.flush(Duration::from_secs(10));
        if let Some(c) = self.conn.take() {
            c.close();
        }
        r
    }
}
