//! Publishing at QoS 1: a flush waits for the PUBACK of every message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};

use super::client::{encode_publish, refusal, ConnectOptions, Connection, Packet, Publish};
use crate::net::Backoff;

/// The most unconfirmed messages at once (fewer if the broker says so):
/// beyond it, `send` waits for PUBACKs.
const MAX_IN_FLIGHT: usize = 1000;
/// Queued bytes written without waiting for a flush.
const WRITE_AT: usize = 64 * 1024;
/// How long `send` waits for room among the unconfirmed messages.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes each record's value to the topic its template gives.
///
/// With MQTT 5, a PUBACK reason code of 0x80 or more (not authorized,
/// topic name invalid, quota exceeded, payload format invalid, ...)
/// refuses that message for good; the flush reports it by its place among
/// the records sent since the last flush, and the others go on. MQTT
/// 3.1.1 has no way to refuse a message: a broker that will not take one
/// drops the connection, which is transient like any disconnect.
pub struct MqttSink {
    address: String,
    options: ConnectOptions,
    template: String,
    qos: u8,
    retain: bool,
    conn: Option<Connection>,
    next_id: u16,
    /// Packet ids sent and not yet confirmed, with their places in the
    /// round (the records sent since the last flush).
    in_flight: HashMap<u16, usize>,
    /// Records sent in this round.
    round: usize,
    /// Refused in this round: place and why.
    refused: Vec<(usize, String)>,
    backoff: Backoff,
    /// When the next reconnection attempt may be made.
    retry_at: Option<Instant>,
}

impl MqttSink {
    /// Connects (an unreachable broker fails here, naming its address)
    /// with a clean session: what a lost connection left unconfirmed is
    /// the caller's to send again.
    pub fn open(
        address: &str,
        options: ConnectOptions,
        template: String,
        qos: u8,
        retain: bool,
    ) -> Result<Self> {
        let options = ConnectOptions {
            clean: true,
            ..options
        };
        let conn = Connection::open(address, &options)?;
        Ok(Self {
            address: address.to_owned(),
            options,
            template,
            qos,
            retain,
            conn: Some(conn),
            next_id: 0,
            in_flight: HashMap::new(),
            round: 0,
            refused: Vec::new(),
            backoff: Backoff::default(),
            retry_at: None,
        })
    }

    /// The connection, made again if it was lost (after the backoff) or
    /// has been idle so long that the broker may have dropped it.
    fn connection(&mut self) -> Result<&mut Connection> {
        if self.in_flight.is_empty() && self.conn.as_ref().is_some_and(|c| c.idle_too_long()) {
            tracing::debug!("MQTT broker at {}: idle connection renewed", self.address);
            if let Some(c) = self.conn.take() {
                c.disconnect();
            }
            self.retry_at = None;
        }
        if self.conn.is_none() {
            if let Some(at) = self.retry_at {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
            match Connection::open(&self.address, &self.options) {
                Ok(c) => {
                    tracing::info!("connected to the MQTT broker at {}", self.address);
                    self.backoff.reset();
                    self.retry_at = None;
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.retry_at = Some(Instant::now() + self.backoff.next_delay());
                    return Err(e);
                }
            }
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// Gives up the connection after `e`; returns `e` for the caller, who
    /// sends everything since its last good flush again.
    fn fail(&mut self, e: Error) -> Error {
        if self.conn.take().is_some() {
            tracing::warn!(
                "{e}; {} messages unconfirmed, reconnecting to the MQTT broker at {} on the next send",
                self.in_flight.len(),
                self.address
            );
        }
        self.in_flight.clear();
        e
    }

    /// Takes a packet from the broker: a PUBACK confirms a message, or
    /// refuses it (MQTT 5 reason codes from 0x80).
    fn handle(&mut self, packet: Packet) -> Result<()> {
        if let Packet::PubAck {
            packet_id,
            code,
            reason,
        } = packet
        {
            let at = self.in_flight.remove(&packet_id);
            if let Some(at) = at.filter(|_| code >= 0x80) {
                self.refused.push((
                    at,
                    format!(
                        "MQTT broker at {} refused the message: {} (reason code 0x{code:02x}){}",
                        self.address,
                        refusal(code),
                        reason.map_or_else(String::new, |r| format!(": {r}"))
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Starts counting records from 0 again: after a flush, or after a
    /// failed send (the caller then sends everything again).
    fn new_round(&mut self) {
        self.round = 0;
        self.refused.clear();
    }

    /// Reads one packet within `timeout` and handles it; false if none
    /// came.
    fn read_one(&mut self, timeout: Duration) -> Result<bool> {
        let conn = self.conn.as_mut().expect("connected");
        conn.send()?;
        match conn.read(timeout)? {
            Some(p) => self.handle(p).map(|()| true),
            None => Ok(false),
        }
    }

    fn publish(&mut self, p: Publish) -> Result<()> {
        let conn = self.connection()?;
        let window = MAX_IN_FLIGHT.min(conn.receive_maximum.into());
        if self.qos > 0 {
            let deadline = Instant::now() + SEND_TIMEOUT;
            while self.in_flight.len() >= window {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Protocol {
                        server: format!("MQTT broker at {}", self.address),
                        message: format!(
                            "MQTT broker at {}: no PUBACK within {SEND_TIMEOUT:?}",
                            self.address
                        ),
                    });
                }
                self.read_one(left)?;
            }
        }
        let mut p = p;
        if self.qos > 0 {
            p.packet_id = Some(self.next_packet_id());
        }
        let conn = self.conn.as_mut().expect("connected");
        conn.queue(&encode_publish(conn.version(), &p)?);
        if let Some(id) = p.packet_id {
            self.in_flight.insert(id, self.round);
        }
        self.round += 1;
        if conn.queued() >= WRITE_AT {
            conn.send()?;
        }
        Ok(())
    }

    /// The next packet id not in flight (ids are 1 to 65,535).
    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    fn confirm(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        self.conn.as_mut().expect("connected").send()?;
        while self.qos > 0 && !self.in_flight.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Protocol {
                    server: format!("MQTT broker at {}", self.address),
                    message: format!(
                        "MQTT broker at {}: {} messages not confirmed within {timeout:?}",
                        self.address,
                        self.in_flight.len()
                    ),
                });
            }
            self.read_one(left)?;
        }
        Ok(())
    }
}

impl Sink for MqttSink {
    fn describe(&self) -> String {
        format!("mqtt {} topic {}", self.address, self.template)
    }

    fn delivery(&self) -> Delivery {
        if self.qos > 0 {
            Delivery::AtLeastOnce
        } else {
            Delivery::AtMostOnce
        }
    }

    fn send(&mut self, record: &Record) -> Result<()> {
        let topic = render(&self.template, record);
        if topic.is_empty() || topic.contains(['+', '#']) {
            // No broker would take it: refused, in its place in the round.
            self.refused.push((
                self.round,
                format!(
                    "MQTT topic '{topic}' (from '{}'): empty or with a wildcard",
                    self.template
                ),
            ));
            self.round += 1;
            return Ok(());
        }
        let p = Publish {
            topic,
            qos: self.qos,
            retain: self.retain,
            dup: false,
            packet_id: None,
            user_properties: record
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            payload: record.value.clone(),
        };
        self.publish(p).map_err(|e| {
            self.new_round();
            self.fail(e)
        })
    }

    /// Waits for the PUBACKs of the round. Brokers acknowledge in order,
    /// so after a lost connection or a timeout the records before the
    /// first unacknowledged one are settled and only the rest come again.
    fn flush(&mut self, timeout: Duration) -> Result<()> {
        let sent = self.round;
        let result = match self.conn {
            // Lost after the last send, which failed and told the caller.
            None => Ok(()),
            Some(_) => self.confirm(timeout),
        };
        let result = match result {
            Ok(()) => Unconfirmed::refused(sent, std::mem::take(&mut self.refused)),
            Err(e) => {
                let settled = self.in_flight.values().min().copied().unwrap_or(sent);
                let refused = std::mem::take(&mut self.refused);
                let e = self.fail(e);
                Err(Unconfirmed::transient(settled, refused, &e, None))
            }
        };
        self.new_round();
        result
    }

    fn close(&mut self) -> Result<()> {
        let result = self.flush(Duration::from_secs(10));
        if let Some(c) = self.conn.take() {
            c.disconnect();
        }
        result
    }
}
