//! Subscribing: a persistent session whose QoS 1 messages are acknowledged
//! only once the pipeline is done with them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use riffle::connect::{Delivery, Record, Source};
use riffle::{Error, Result};

use super::client::{
    encode_puback, encode_subscribe, refusal, ConnectOptions, Connection, Packet, Publish,
};
use crate::net::{self, Backoff};

/// The packet id of our SUBSCRIBE: one per connection, so any will do.
const SUBSCRIBE_ID: u16 = 1;

/// Messages from the topic filters of one persistent MQTT session.
pub struct MqttSource {
    address: String,
    options: ConnectOptions,
    filters: Vec<String>,
    conn: Option<Connection>,
    /// Received and not yet handed out.
    received: VecDeque<Publish>,
    /// Packet ids of the QoS 1 messages handed out since the last ack, to
    /// PUBACK then. They belong to the current connection: a new one gets
    /// the messages again, with ids of its own.
    handed_out: Vec<u16>,
    backoff: Backoff,
    /// When the next reconnection attempt may be made.
    retry_at: Option<Instant>,
}

impl MqttSource {
    /// Connects (an unreachable broker fails here, naming its address),
    /// resumes or creates the session `options.client_id` and subscribes
    /// to `filters` at QoS 1.
    pub fn open(address: &str, options: ConnectOptions, filters: Vec<String>) -> Result<Self> {
        let mut s = Self {
            address: address.to_owned(),
            options: ConnectOptions {
                clean: false,
                ..options
            },
            filters,
            conn: None,
            received: VecDeque::new(),
            handed_out: Vec::new(),
            backoff: Backoff::default(),
            retry_at: None,
        };
        s.connect()?;
        Ok(s)
    }

    fn connect(&mut self) -> Result<()> {
        let mut conn = Connection::open(&self.address, &self.options)?;
        // Subscribing again to a kept session is harmless, and recreates
        // the subscription if the broker lost it.
        conn.queue(&encode_subscribe(
            conn.version(),
            SUBSCRIBE_ID,
            &self.filters,
            1,
        )?);
        conn.send()?;
        let deadline = Instant::now() + net::CONNECT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.read(left)? {
                Some(Packet::SubAck { packet_id, codes }) if packet_id == SUBSCRIBE_ID => {
                    if let Some((f, &code)) =
                        self.filters.iter().zip(&codes).find(|(_, &c)| c >= 0x80)
                    {
                        return Err(Error::Refused {
                            server: format!("MQTT broker at {}", self.address),
                            message: format!(
                                "MQTT broker at {} refused the subscription to '{f}': {} (code 0x{code:02x})",
                                self.address,
                                refusal(code)
                            ),
                        });
                    }
                    break;
                }
                // A kept session's messages may come before the SUBACK.
                Some(Packet::Publish(p)) => self.received.push_back(p),
                Some(_) => {}
                None => return Err(conn.lost("no SUBACK within 5 s".into())),
            }
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Gives up the connection after `e`: what was received but not
    /// acknowledged comes again on the next one.
    fn lose(&mut self, e: &Error) {
        tracing::warn!(
            "{e}; reconnecting to the MQTT broker at {} (unacknowledged messages come again)",
            self.address
        );
        self.conn = None;
        self.received.clear();
        self.handed_out.clear();
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// Reconnects if the connection is gone and the backoff allows, waiting
    /// at most `timeout` for it; whether there is a connection now.
    fn reconnect(&mut self, timeout: Duration) -> bool {
        if self.conn.is_some() {
            return true;
        }
        if let Some(at) = self.retry_at {
            let wait = at.saturating_duration_since(Instant::now());
            if wait > timeout {
                std::thread::sleep(timeout);
                return false;
            }
            std::thread::sleep(wait);
        }
        match self.connect() {
            Ok(()) => {
                tracing::info!("reconnected to the MQTT broker at {}", self.address);
                self.backoff.reset();
                self.retry_at = None;
                true
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                tracing::warn!(
                    "cannot reconnect to the MQTT broker at {} (trying again in {delay:?}): {e}",
                    self.address
                );
                self.retry_at = Some(Instant::now() + delay);
                false
            }
        }
    }
}

fn record(p: Publish) -> Record {
    Record {
        topic: p.topic,
        key: None,
        value: p.payload,
        headers: p
            .user_properties
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
    }
}

impl Source for MqttSource {
    fn describe(&self) -> String {
        format!("mqtt {} {}", self.address, self.filters.join(","))
    }

    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        if !self.reconnect(timeout) {
            return Ok(0);
        }
        let mut n = 0;
        while n < max {
            if let Some(p) = self.received.pop_front() {
                if let Some(id) = p.packet_id.filter(|_| p.qos > 0) {
                    self.handed_out.push(id);
                }
                out.push(record(p));
                n += 1;
                continue;
            }
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            // Wait for the first message; after that take only what has
            // arrived already.
            let wait = if n == 0 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match conn.read(wait) {
                Ok(Some(Packet::Publish(p))) => self.received.push_back(p),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    self.lose(&e);
                    break;
                }
            }
        }
        Ok(n)
    }

    fn ack(&mut self) -> Result<()> {
        if self.handed_out.is_empty() {
            return Ok(());
        }
        let Some(conn) = self.conn.as_mut() else {
            self.handed_out.clear();
            return Ok(());
        };
        for id in self.handed_out.drain(..) {
            conn.queue(&encode_puback(id));
        }
        if let Err(e) = conn.send() {
            self.lose(&e);
            return Err(e);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        // Unacknowledged messages stay with the session for the next run.
        if let Some(conn) = self.conn.take() {
            conn.disconnect();
        }
        Ok(())
    }
}
