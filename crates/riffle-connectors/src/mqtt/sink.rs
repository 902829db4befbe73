//! Publishing at QoS 0, 1 or 2: a flush waits until the broker confirmed
//! every message (PUBACK, or PUBCOMP for QoS 2).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use riffle::connect::{render, Delivery, Record, Sink, Unconfirmed};
use riffle::{Error, Result};

use super::conn::{self, refusal, Connection, Event, Settings, Version};
use crate::net::Backoff;

/// How long `send` waits for room in the client's queue (full while the
/// broker's receive maximum of unconfirmed messages is reached).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes each record's value to the topic its template gives.
///
/// With MQTT 5, a PUBACK (or, at QoS 2, PUBREC) reason code of 0x80 or
/// more (not authorized, topic name invalid, quota exceeded, payload
/// format invalid, ...) refuses that message for good; the flush reports
/// it by its place among the records sent since the last flush, and the
/// others go on. MQTT 3.1.1 has no way to refuse a message: a broker that
/// will not take one drops the connection, which is transient like any
/// disconnect.
pub struct MqttSink {
    settings: Settings,
    template: String,
    qos: u8,
    retain: bool,
    conn: Option<Connection>,
    /// The broker of `settings.brokers` to try first.
    broker: usize,
    /// Places in the round of the records handed to the client and not
    /// yet written: the client writes them in order, each reported by
    /// [`Event::Sent`] with its packet id.
    unsent: VecDeque<usize>,
    /// Packet ids written and not yet confirmed, with their places in the
    /// round (the records sent since the last flush).
    in_flight: HashMap<u16, usize>,
    /// Records sent in this round.
    round: usize,
    /// Refused in this round: place and why.
    refused: Vec<(usize, String)>,
    /// The connection is to be made anew once the round is settled: after
    /// a refused QoS 2 message, which rumqttc keeps counting as in flight.
    renew: bool,
    backoff: Backoff,
    /// When the next connection attempt may be made.
    retry_at: Option<Instant>,
}

impl MqttSink {
    /// Connects (an unreachable broker fails here, naming its address; a
    /// refused login or certificate says why) with a clean session: what
    /// a lost connection left unconfirmed is the caller's to send again.
    pub fn open(settings: Settings, template: String, qos: u8, retain: bool) -> Result<Self> {
        let settings = Settings {
            clean: true,
            ..settings
        };
        let mut broker = 0;
        let conn = conn::connect_any(&settings, &mut broker, None)?;
        Ok(Self {
            settings,
            template,
            qos,
            retain,
            conn: Some(conn),
            broker,
            unsent: VecDeque::new(),
            in_flight: HashMap::new(),
            round: 0,
            refused: Vec::new(),
            renew: false,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).jittered(),
            retry_at: None,
        })
    }

    /// The connection, made again (after the backoff) if it was lost.
    fn connection(&mut self) -> Result<&Connection> {
        if self.conn.is_none() {
            if let Some(at) = self.retry_at {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
            }
            match conn::connect_any(&self.settings, &mut self.broker, None) {
                Ok(c) => {
                    tracing::info!("connected to the MQTT broker at {}", c.address);
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
        Ok(self.conn.as_ref().expect("connected above"))
    }

    /// Gives up the connection after `e`; returns `e` for the caller, who
    /// sends everything since its last good flush again. The next
    /// connection tries the next broker first.
    fn fail(&mut self, e: Error) -> Error {
        if let Some(c) = self.conn.take() {
            tracing::warn!(
                "{e}; {} messages unconfirmed, reconnecting to an MQTT broker on the next send",
                self.in_flight.len() + self.unsent.len(),
            );
            drop(c);
            self.broker = (self.broker + 1) % self.settings.brokers.len();
        }
        self.in_flight.clear();
        self.unsent.clear();
        e
    }

    /// Takes an event of the connection: a message written, confirmed or
    /// refused (MQTT 5 reason codes from 0x80); a lost connection is an
    /// error.
    fn handle(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Sent(pkid) => {
                if let Some(at) = self.unsent.pop_front() {
                    if self.qos > 0 {
                        self.in_flight.insert(pkid, at);
                    }
                }
            }
            Event::Settled { pkid, code, reason } => {
                let at = self.in_flight.remove(&pkid);
                if let Some(at) = at.filter(|_| code >= 0x80) {
                    if self.qos == 2 {
                        self.renew = true;
                    }
                    let address = self.conn.as_ref().map_or("", |c| c.address.as_str());
                    self.refused.push((
                        at,
                        format!(
                            "{} refused the message: {} (reason code 0x{code:02x}){}",
                            conn::server(address),
                            refusal(code),
                            reason.map_or_else(String::new, |r| format!(": {r}"))
                        ),
                    ));
                }
            }
            Event::Lost(e) => return Err(e),
            Event::Message(_) => {}
        }
        Ok(())
    }

    /// Takes the events that have come already.
    fn drain(&mut self) -> Result<()> {
        while let Some(e) = self
            .conn
            .as_ref()
            .and_then(|c| c.next_event(Duration::ZERO))
        {
            self.handle(e)?;
        }
        Ok(())
    }

    fn publish(&mut self, topic: String, record: &Record) -> Result<()> {
        let user_properties = match self.settings.version {
            Version::V5 => record
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect(),
            // 3.1.1 has nowhere to put them.
            Version::V311 => Vec::new(),
        };
        let (qos, retain) = (self.qos, self.retain);
        self.connection()?.publish(
            topic,
            qos,
            retain,
            record.value.clone(),
            user_properties,
            SEND_TIMEOUT,
        )?;
        self.unsent.push_back(self.round);
        self.round += 1;
        self.drain()
    }

    /// Waits until every message of the round is written and, unless at
    /// QoS 0, confirmed.
    fn confirm(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.unsent.is_empty() || (self.qos > 0 && !self.in_flight.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let address = self
                .conn
                .as_ref()
                .map_or(String::new(), |c| c.address.clone());
            if left.is_zero() {
                return Err(Error::Protocol {
                    server: conn::server(&address),
                    message: format!(
                        "{}: {} messages not confirmed within {timeout:?}",
                        conn::server(&address),
                        self.in_flight.len() + self.unsent.len()
                    ),
                });
            }
            let event = self.conn.as_ref().and_then(|c| c.next_event(left));
            if let Some(e) = event {
                self.handle(e)?;
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
}

impl Sink for MqttSink {
    fn describe(&self) -> String {
        let brokers: Vec<String> = self.settings.brokers.iter().map(|b| b.address()).collect();
        format!("mqtt {} topic {}", brokers.join(","), self.template)
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
        self.publish(topic, record).map_err(|e| {
            self.new_round();
            self.fail(e)
        })
    }

    /// Waits for the confirmations of the round. Brokers confirm in
    /// order, so after a lost connection or a timeout the records before
    /// the first unconfirmed one are settled and only the rest come again.
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
                let settled = self
                    .in_flight
                    .values()
                    .chain(self.unsent.front())
                    .min()
                    .copied()
                    .unwrap_or(sent);
                let refused = std::mem::take(&mut self.refused);
                let e = self.fail(e);
                Err(Unconfirmed::transient(settled, refused, &e, None))
            }
        };
        if std::mem::take(&mut self.renew) {
            if let Some(c) = self.conn.take() {
                c.disconnect(Duration::from_secs(1));
            }
        }
        self.new_round();
        result
    }

    fn close(&mut self) -> Result<()> {
        let result = self.flush(Duration::from_secs(10));
        if let Some(c) = self.conn.take() {
            c.disconnect(Duration::from_secs(1));
        }
        result
    }
}
