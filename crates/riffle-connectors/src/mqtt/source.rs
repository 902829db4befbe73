//! Subscribing: a persistent session whose QoS 1 and 2 messages are
//! acknowledged only once the pipeline is done with them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use riffle::connect::{Delivery, Record, Source};
use riffle::{Error, Result};

use super::conn::{self, Connection, Event, Message, Settings};
use crate::net::Backoff;

/// How long an acknowledgement may wait for room in the client's queue.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages from the topic filters of one persistent MQTT session.
pub struct MqttSource {
    settings: Settings,
    filters: Vec<String>,
    conn: Option<Connection>,
    /// The broker of `settings.brokers` to try first.
    broker: usize,
    /// Received and not yet handed out.
    received: VecDeque<Message>,
    /// The messages handed out since the last ack, to acknowledge then.
    /// They belong to the current connection: a new one gets them again,
    /// with packet ids of its own.
    handed_out: Vec<Message>,
    backoff: Backoff,
    /// When the next reconnection attempt may be made.
    retry_at: Option<Instant>,
}

impl MqttSource {
    /// Connects (an unreachable broker fails here, naming its address; a
    /// refused login or certificate says why), resumes or creates the
    /// session `settings.client_id` and subscribes to `filters`.
    pub fn open(settings: Settings, filters: Vec<String>) -> Result<Self> {
        let mut s = Self {
            settings: Settings {
                clean: false,
                ..settings
            },
            filters,
            conn: None,
            broker: 0,
            received: VecDeque::new(),
            handed_out: Vec::new(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jittered(),
            retry_at: None,
        };
        s.connect()?;
        Ok(s)
    }

    fn connect(&mut self) -> Result<()> {
        // Subscribing again to a kept session is harmless, and recreates
        // the subscription if the broker lost it.
        let conn = conn::connect_any(&self.settings, &mut self.broker, Some(&self.filters))?;
        if !conn.session_present {
            tracing::info!(
                "the MQTT broker at {} had no session for client id '{}': a new one starts",
                conn.address,
                self.settings.client_id
            );
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Gives up the connection after `e`: what was received but not
    /// acknowledged comes again on the next one, from the next broker.
    fn lose(&mut self, e: &Error) {
        if let Some(c) = self.conn.take() {
            tracing::warn!(
                "{e}; reconnecting to the MQTT broker at {} (unacknowledged messages come again)",
                c.address
            );
        }
        self.broker = (self.broker + 1) % self.settings.brokers.len();
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
                tracing::info!(
                    "reconnected to the MQTT broker at {}",
                    self.conn.as_ref().map_or("", |c| c.address.as_str())
                );
                self.backoff.reset();
                self.retry_at = None;
                true
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                tracing::warn!(
                    "cannot reconnect to the MQTT broker (trying again in {delay:?}): {e}"
                );
                self.retry_at = Some(Instant::now() + delay);
                false
            }
        }
    }
}

fn record(m: &Message) -> Record {
    Record {
        topic: m.topic.clone(),
        key: None,
        value: m.payload.clone(),
        headers: m
            .user_properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect(),
    }
}

impl Source for MqttSource {
    fn describe(&self) -> String {
        let brokers: Vec<String> = self.settings.brokers.iter().map(|b| b.address()).collect();
        format!("mqtt {} {}", brokers.join(","), self.filters.join(","))
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
            if let Some(m) = self.received.pop_front() {
                out.push(record(&m));
                self.handed_out.push(m);
                n += 1;
                continue;
            }
            let Some(conn) = self.conn.as_ref() else {
                break;
            };
            // Wait for the first message; after that take only what has
            // arrived already.
            let wait = if n == 0 {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match conn.next_event(wait) {
                Some(Event::Message(m)) => self.received.push_back(m),
                Some(Event::Lost(e)) => {
                    self.lose(&e);
                    break;
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(n)
    }

    fn ack(&mut self) -> Result<()> {
        if self.handed_out.is_empty() {
            return Ok(());
        }
        let Some(conn) = self.conn.as_ref() else {
            self.handed_out.clear();
            return Ok(());
        };
        let mut failed = None;
        for m in self.handed_out.drain(..) {
            if let Err(e) = conn.ack(&m, ACK_TIMEOUT) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            self.lose(&e);
            return Err(e);
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        // Unacknowledged messages stay with the session for the next run.
        if let Some(conn) = self.conn.take() {
            conn.disconnect(Duration::from_secs(1));
        }
        Ok(())
    }
}
