//! Publishing persistent messages with publisher confirms.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};

use amqprs::channel::{BasicPublishArguments, ConfirmSelectArguments};
use amqprs::{BasicProperties, ByteArray, FieldTable, FieldValue, LongStr, ShortStr};
use tokio::sync::mpsc::error::TryRecvError;

use super::conn::{self, Event as Incoming, Link, Params};
use super::source::KEY_HEADER;
use crate::net::Backoff;

/// Records published to an exchange; a flush waits for the broker's
/// confirms.
///
/// A `basic.nack` refuses the messages it covers for good, and so does a
/// `basic.return` of a mandatory message no queue took: the broker sends
/// the return just before the ack of that message, so the first ack after
/// a return names the returned message's tag. The flush reports them by
/// their place among the records sent since the last flush.
pub struct AmqpSink {
    params: Params,
    exchange: String,
    routing_key: String,
    mandatory: bool,
    conn: Option<Link>,
    /// The server of the list that answered last: tried first next time.
    server: usize,
    /// The sequence number the broker gives the next publish (confirm mode
    /// numbers a channel's publishes from 1).
    next_tag: u64,
    /// Published and not yet confirmed: tag and place in the round (the
    /// records sent since the last flush).
    pending: BTreeMap<u64, usize>,
    /// Records sent in this round.
    round: usize,
    /// Refused in this round: place and why.
    refused: Vec<(usize, String)>,
    /// Why the next acked message came back (a `basic.return`).
    returned: Option<String>,
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
            server: 0,
            next_tag: 1,
            pending: BTreeMap::new(),
            round: 0,
            refused: Vec::new(),
            returned: None,
            // Jittered, so that clients cut off together do not come back together.
            backoff: Backoff::default().jittered(),
            failing: false,
        };
        s.connect()?;
        Ok(s)
    }

    fn connect(&mut self) -> Result<()> {
        if let Some(old) = self.conn.take() {
            old.close();
        }
        let (mut c, server) = conn::open(&self.params, self.server)?;
        self.server = server;
        let select = ConfirmSelectArguments::new(false);
        if let Err(e) = c.call("confirm.select", |ch| async move {
            ch.confirm_select(select).await
        }) {
            c.close();
            return Err(e);
        }
        self.conn = Some(c);
        self.next_tag = 1;
        self.pending.clear();
        self.returned = None;
        Ok(())
    }

    /// Reconnects after a failure, waiting with backoff while the broker
    /// stays away.
    fn reconnect(&mut self) -> Result<()> {
        if self.failing {
            std::thread::sleep(self.backoff.next_delay());
        }
        match self.connect() {
            Ok(()) => {
                let at = self.conn.as_ref().map_or("?", |c| c.address.as_str());
                tracing::info!("AMQP sink reconnected to {at}");
                self.failing = false;
                self.backoff.reset();
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    "AMQP sink cannot reconnect to {}: {e}",
                    self.params.addresses()
                );
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
            self.params.addresses()
        );
        if let Some(c) = self.conn.take() {
            c.close();
        }
        self.pending.clear();
        self.failing = true;
        e
    }

    /// Starts counting records again from 0: after a flush, whatever it
    /// reported, or after an error (the caller sends everything again).
    fn new_round(&mut self) {
        self.round = 0;
        self.refused.clear();
        self.returned = None;
    }

    /// Takes the confirmed tags (`tag` alone, or all up to it) out of
    /// `pending`; refuses them with `why` if given.
    fn settle(&mut self, tag: u64, multiple: bool, why: Option<&str>) {
        let settled: Vec<(u64, usize)> = if multiple {
            let rest = self.pending.split_off(&(tag + 1));
            std::mem::replace(&mut self.pending, rest)
                .into_iter()
                .collect()
        } else {
            self.pending
                .remove(&tag)
                .map(|at| (tag, at))
                .into_iter()
                .collect()
        };
        if let Some(why) = why {
            for (_, at) in settled {
                self.refused.push((at, why.to_owned()));
            }
        }
    }

    fn handle(&mut self, event: Incoming) {
        match event {
            Incoming::Ack { tag, multiple } => {
                if let Some(why) = self.returned.take() {
                    // The ack that follows a return is the returned
                    // message's, even when it confirms others with it.
                    if let Some(at) = self.pending.remove(&tag) {
                        self.refused.push((at, why));
                    }
                }
                self.settle(tag, multiple, None);
            }
            Incoming::Nack { tag, multiple } => {
                let at = self.conn.as_ref().map_or("?", |c| c.address.as_str());
                let why = format!("AMQP server at {at} refused the message (basic.nack)");
                self.settle(tag, multiple, Some(&why));
            }
            Incoming::Returned {
                code,
                text,
                routing_key,
            } => {
                if self.mandatory {
                    let at = self.conn.as_ref().map_or("?", |c| c.address.as_str());
                    self.returned = Some(format!(
                        "AMQP server at {at}: no queue took the message with routing key '{routing_key}' (basic.return {code} {text})"
                    ));
                }
            }
            // Reported by next_event as an error, never handed out.
            Incoming::Closed { .. } => {}
        }
    }

    /// Handles what the broker has sent already, without waiting: confirms,
    /// and above all a closed connection, found before publishing into it.
    fn drain(&mut self) -> Result<()> {
        loop {
            let conn = self.conn.as_mut().expect("connected");
            match conn.events.try_recv() {
                Ok(Incoming::Closed { .. }) => {
                    let e = conn.failure("closed");
                    return Err(self.lost(e));
                }
                Ok(event) => self.handle(event),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    let e = conn.failure("the connection was lost");
                    return Err(self.lost(e));
                }
            }
        }
    }
}

impl AmqpSink {
    /// Reads confirms until nothing is pending; on failure, the place of the
    /// first unconfirmed record and why.
    fn await_confirms(&mut self, timeout: Duration) -> std::result::Result<(), (usize, Error)> {
        let first_pending = |s: &Self| s.pending.values().min().copied().unwrap_or(s.round);
        if self.conn.is_none() {
            // Nothing published since the connection was lost and reported.
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        while !self.pending.is_empty() {
            let conn = self.conn.as_mut().expect("connected");
            match conn.next_event(deadline) {
                Ok(Some(event)) => self.handle(event),
                Ok(None) => {
                    let address = conn.address.clone();
                    let at = first_pending(self);
                    let n = self.pending.len();
                    self.pending.clear();
                    return Err((
                        at,
                        Error::Timeout(format!(
                            "AMQP server at {address} confirmed not all messages within {timeout:?} ({n} left)"
                        )),
                    ));
                }
                Err(e) => {
                    let at = first_pending(self);
                    return Err((at, self.lost(e)));
                }
            }
        }
        Ok(())
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
            self.params.addresses(),
            self.routing_key
        )
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    /// A failed send starts a new round: the caller sends everything since
    /// the last flush again.
    fn send(&mut self, record: &Record) -> Result<()> {
        let r = self.publish(record);
        if r.is_err() {
            self.new_round();
        }
        r
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.finish_round(timeout)
    }

    fn close(&mut self) -> Result<()> {
        let r = self.flush(Duration::from_secs(10));
        if let Some(c) = self.conn.take() {
            c.close();
        }
        r
    }
}

impl AmqpSink {
    fn publish(&mut self, record: &Record) -> Result<()> {
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
            // No server would take it: refused, in its place in the round.
            self.refused.push((
                self.round,
                format!("amqp: routing key '{routing_key}' is longer than 255 bytes"),
            ));
            self.round += 1;
            return Ok(());
        }
        let mut headers = FieldTable::new();
        for (name, value) in &record.headers {
            let Ok(name) = ShortStr::try_from(name.as_str()) else {
                self.refused.push((
                    self.round,
                    format!("amqp: header name '{name}' is longer than 255 bytes"),
                ));
                self.round += 1;
                return Ok(());
            };
            headers.insert(name, header_value(value));
        }
        if let Some(key) = &record.key {
            headers.insert(
                ShortStr::try_from(KEY_HEADER).expect("a short name"),
                header_value(key),
            );
        }
        let properties = BasicProperties::default()
            .with_persistence(true)
            .with_headers(headers)
            .finish();
        let mut args = BasicPublishArguments::new(&self.exchange, &routing_key);
        args.mandatory(self.mandatory);
        let args = args.finish();
        let body = record.value.clone();
        let conn = self.conn.as_mut().expect("connected above");
        if let Err(e) = conn.call("basic.publish", |ch| async move {
            ch.basic_publish(properties, body, args).await
        }) {
            return Err(self.lost(e));
        }
        self.pending.insert(self.next_tag, self.round);
        self.next_tag += 1;
        self.round += 1;
        Ok(())
    }

    /// Waits for the confirms of everything published in this round. A
    /// lost connection or a timeout reports the records before the first
    /// unconfirmed one as settled (those confirmed after it come again).
    fn finish_round(&mut self, timeout: Duration) -> Result<()> {
        let sent = self.round;
        let result = self.await_confirms(timeout);
        let refused = std::mem::take(&mut self.refused);
        let result = match result {
            Ok(()) => Unconfirmed::refused(sent, refused),
            Err((first_unconfirmed, e)) => {
                Err(Unconfirmed::transient(first_unconfirmed, refused, &e, None))
            }
        };
        self.new_round();
        result
    }
}

/// A header value: text as a long string, other bytes as a byte array
/// (RabbitMQ's `x`), so that any value travels unchanged.
fn header_value(value: &[u8]) -> FieldValue {
    match std::str::from_utf8(value)
        .ok()
        .and_then(|t| LongStr::try_from(t).ok())
    {
        Some(text) => FieldValue::S(text),
        None => FieldValue::x(ByteArray::try_from(value.to_vec()).expect("a value below 4 GiB")),
    }
}

impl Drop for AmqpSink {
    /// amqprs closes a dropped connection from a task it spawns, which
    /// needs the runtime's context.
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let _inside = crate::runtime::handle().enter();
            drop(c);
        }
    }
}
