//! One connection to an MQTT broker through rumqttc, in either protocol
//! version, seen from a pipeline's thread as a client to send requests
//! with and a channel of events.
//!
//! rumqttc splits a connection in two: an `AsyncClient` that queues
//! requests (publish, acknowledge, subscribe, disconnect) and an
//! `EventLoop` that must be polled to move anything. Here the event loop
//! is set up (TCP, TLS, CONNECT/CONNACK and, for a source, SUBSCRIBE/
//! SUBACK) on the pipeline's thread, so that an unreachable broker, a
//! refused login or an untrusted certificate fails the call that asked for
//! the connection; then a task on the shared runtime polls it, which also
//! sends the keep-alive pings while the pipeline is busy elsewhere, and
//! hands what it sees to the pipeline's thread as [`Event`]s.
//!
//! The task ends at the first error of its connection, after reporting it
//! as [`Event::Lost`]: reconnecting (which broker, after which backoff) is
//! the source's and the sink's to decide, each with a fresh connection, so
//! that no request queued for the old one is sent on the new one.

use std::future::Future;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use riffle::{Error, Result};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{Outgoing, QoS, TlsConfiguration, Transport};
use rustls::ClientConfig;

use crate::runtime;

/// How long connecting (TCP, TLS and CONNACK) may take before the broker
/// is reported unreachable, and how long a SUBACK may take after it.
pub const CONNECT_TIMEOUT: Duration = crate::net::CONNECT_TIMEOUT;

/// The largest packet the protocol can carry: the fixed header's length
/// of four bytes of seven bits, plus that header. rumqttc's default of
/// 10 KiB would drop the connection at the first larger message.
const MAX_PACKET: usize = 268_435_455 + 5;

/// The most of our QoS 1 and 2 messages unconfirmed at once (fewer if the
/// broker's receive maximum says so); beyond it requests wait in the
/// client's queue.
const MAX_IN_FLIGHT: u16 = 1000;

/// Requests queued for the event loop before the client waits for room.
const REQUEST_QUEUE: usize = 1000;

/// rumqttc's version 5 client takes no keep-alive under 5 s.
const MIN_KEEP_ALIVE_V5: Duration = Duration::from_secs(5);

/// The protocol version spoken on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
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

/// One broker of the `url` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl Broker {
    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The last will: published by the broker for us if our connection ends
/// without a DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// What every connection of one source or sink says and uses.
#[derive(Clone)]
pub struct Settings {
    /// Tried in turn; at least one.
    pub brokers: Vec<Broker>,
    pub version: Version,
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5): false keeps the session,
    /// its subscriptions and undelivered messages, across connections.
    pub clean: bool,
    pub keep_alive: Duration,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Version 5: how long the broker keeps the session after the
    /// connection ends, in seconds.
    pub session_expiry: u32,
    /// Version 5: the most unacknowledged messages the broker may send us
    /// at once.
    pub receive_maximum: u16,
    /// TLS, when on.
    pub tls: Option<Arc<ClientConfig>>,
    pub will: Option<Will>,
}

/// A message from the broker.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Version 5 user properties.
    pub user_properties: Vec<(String, String)>,
    /// What acknowledging it takes: its QoS and packet id.
    qos: u8,
    pkid: u16,
}

/// What a connection's task saw.
#[derive(Debug)]
pub enum Event {
    Message(Message),
    /// One of our PUBLISHes went out with this packet id (0 for QoS 0), in
    /// the order they were requested.
    Sent(u16),
    /// The broker is done with our PUBLISH of this packet id: PUBACK
    /// (QoS 1), PUBCOMP (QoS 2), or a version 5 refusal (`code` from
    /// 0x80) in a PUBACK or PUBREC.
    Settled {
        pkid: u16,
        code: u8,
        reason: Option<String>,
    },
    /// The connection is gone; the task has ended.
    Lost(Error),
}

#[derive(Clone)]
enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// An accepted MQTT session with a broker, its event loop running on the
/// shared runtime.
pub struct Connection {
    client: Client,
    events: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
    /// `host:port`, for messages.
    pub address: String,
    /// Whether the broker had a session for our client id already.
    pub session_present: bool,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket.
        self.task.abort();
    }
}

/// `MQTT broker at host:port`, as every message names it.
pub fn server(address: &str) -> String {
    format!("MQTT broker at {address}")
}

/// Connects to the brokers in turn from `*next` until one accepts, and
/// leaves `*next` on it. A configuration error (a refused login, an
/// untrusted certificate) fails at once, since every broker of a cluster
/// would say the same; otherwise the last broker's error is returned.
pub fn connect_any(
    settings: &Settings,
    next: &mut usize,
    subscribe: Option<&[String]>,
) -> Result<Connection> {
    let n = settings.brokers.len();
    let mut last = None;
    for i in 0..n {
        let at = (*next + i) % n;
        match Connection::open(settings, &settings.brokers[at], subscribe) {
            Ok(c) => {
                *next = at;
                return Ok(c);
            }
            Err(e) if e.is_transient() && i + 1 < n => {
                tracing::warn!("{e}; trying the next MQTT broker");
                last = Some(e);
            }
            Err(e) => {
                *next = (at + 1) % n;
                return Err(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::InvalidInput("mqtt: no broker in 'url'".into())))
}

impl Connection {
    /// Connects to `broker` and, with `subscribe`, subscribes to those
    /// filters at QoS 2 (the broker sends each message at the lower of
    /// that and its publisher's QoS). Messages of a kept session that come
    /// before the SUBACK are kept for the first events.
    pub fn open(
        settings: &Settings,
        broker: &Broker,
        subscribe: Option<&[String]>,
    ) -> Result<Self> {
        let address = broker.address();
        let (tx, rx) = mpsc::channel();
        let tls = settings.tls.is_some();
        let (client, task, session_present) = match settings.version {
            Version::V311 => {
                let (client, mut el) =
                    rumqttc::AsyncClient::new(options4(settings, broker), REQUEST_QUEUE);
                let mut net = rumqttc::NetworkOptions::new();
                net.set_tcp_nodelay(true);
                net.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
                el.set_network_options(net);
                let c = client.clone();
                let (tx2, addr) = (tx.clone(), address.clone());
                let (el, present) = runtime::block_on(async move {
                    let present = match el.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) => {
                            if a.session_present && subscribe.is_some() {
                                expect_releases4(&mut el.state);
                            }
                            a.session_present
                        }
                        Ok(other) => {
                            return Err(lost(&addr, &format!("expected CONNACK, got {other:?}")))
                        }
                        Err(e) => return Err(connect_error4(&addr, &e, tls)),
                    };
                    if let Some(list) = subscribe {
                        let filters = list
                            .iter()
                            .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::ExactlyOnce));
                        // The client refuses only a malformed filter.
                        c.subscribe_many(filters)
                            .await
                            .map_err(|_| invalid_filters(list))?;
                        let wait = async {
                            loop {
                                match el.poll().await {
                                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(a))) => {
                                        let codes = a
                                            .return_codes
                                            .iter()
                                            .map(|c| match c {
                                                rumqttc::SubscribeReasonCode::Success(q) => {
                                                    *q as u8
                                                }
                                                rumqttc::SubscribeReasonCode::Failure => 0x80,
                                            })
                                            .collect::<Vec<_>>();
                                        return check_suback(&addr, list, &codes);
                                    }
                                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                                        let _ = tx2.send(Event::Message(message4(p)));
                                    }
                                    Ok(_) => {}
                                    Err(e) => return Err(lost(&addr, &e.to_string())),
                                }
                            }
                        };
                        tokio::time::timeout(CONNECT_TIMEOUT, wait)
                            .await
                            .map_err(|_| lost(&addr, "no SUBACK within 5 s"))??;
                    }
                    Ok((el, present))
                })?;
                let task = runtime::handle().spawn(drive4(el, tx, address.clone(), tls));
                (Client::V4(client), task, present)
            }
            Version::V5 => {
                let (client, mut el) =
                    v5::AsyncClient::new(options5(settings, broker), REQUEST_QUEUE);
                let c = client.clone();
                let (tx2, addr) = (tx.clone(), address.clone());
                let (el, present) = runtime::block_on(async move {
                    let present = match el.poll().await {
                        Ok(v5::Event::Incoming(p5::Packet::ConnAck(a))) => {
                            if a.session_present && subscribe.is_some() {
                                expect_releases5(&mut el.state);
                            }
                            a.session_present
                        }
                        Ok(other) => {
                            return Err(lost(&addr, &format!("expected CONNACK, got {other:?}")))
                        }
                        Err(e) => return Err(connect_error5(&addr, &e, tls)),
                    };
                    if let Some(list) = subscribe {
                        let filters = list.iter().map(|f| {
                            let mut filter =
                                p5::Filter::new(f.clone(), v5::mqttbytes::QoS::ExactlyOnce);
                            // Retained messages only for a new subscription,
                            // not again each time a kept session subscribes
                            // after a reconnect. (3.1.1 has no choice: the
                            // broker sends them on every SUBSCRIBE.)
                            filter.retain_forward_rule = p5::RetainForwardRule::OnNewSubscribe;
                            filter
                        });
                        // The client refuses only a malformed filter.
                        c.subscribe_many(filters)
                            .await
                            .map_err(|_| invalid_filters(list))?;
                        let wait = async {
                            loop {
                                match el.poll().await {
                                    Ok(v5::Event::Incoming(p5::Packet::SubAck(a))) => {
                                        let codes = a
                                            .return_codes
                                            .iter()
                                            .map(|c| suback5(*c))
                                            .collect::<Vec<_>>();
                                        return check_suback(&addr, list, &codes);
                                    }
                                    Ok(v5::Event::Incoming(p5::Packet::Publish(p))) => {
                                        let _ = tx2.send(Event::Message(message5(p)));
                                    }
                                    Ok(_) => {}
                                    Err(e) => return Err(lost(&addr, &e.to_string())),
                                }
                            }
                        };
                        tokio::time::timeout(CONNECT_TIMEOUT, wait)
                            .await
                            .map_err(|_| lost(&addr, "no SUBACK within 5 s"))??;
                    }
                    Ok((el, present))
                })?;
                let task = runtime::handle().spawn(drive5(el, tx, address.clone(), tls));
                (Client::V5(client), task, present)
            }
        };
        Ok(Self {
            client,
            events: rx,
            task,
            address,
            session_present,
        })
    }

    /// The next event, waiting up to `timeout`; None if none came.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let e = if timeout.is_zero() {
            self.events.try_recv().ok()
        } else {
            self.events.recv_timeout(timeout).ok()
        };
        // The task reports its end before it ends; a channel closed
        // without that means it was aborted or panicked.
        if e.is_none() && self.task.is_finished() {
            if let Ok(e) = self.events.try_recv() {
                return Some(e);
            }
            return Some(Event::Lost(lost(
                &self.address,
                "the connection's task ended",
            )));
        }
        e
    }

    /// Queues a PUBLISH; waits up to `timeout` for room in the queue.
    pub fn publish(
        &self,
        topic: String,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
        user_properties: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<()> {
        let client = self.client.clone();
        self.queue(timeout, async move {
            match client {
                Client::V4(c) => c.publish(topic, qos4(qos), retain, payload).await.is_ok(),
                Client::V5(c) => {
                    let props = p5::PublishProperties {
                        user_properties,
                        ..Default::default()
                    };
                    c.publish_with_properties(topic, qos5(qos), retain, payload, props)
                        .await
                        .is_ok()
                }
            }
        })
    }

    /// Queues the acknowledgement of `m` (PUBACK for QoS 1, PUBREC for
    /// QoS 2, after which the event loop completes the exchange; nothing
    /// for QoS 0).
    pub fn ack(&self, m: &Message, timeout: Duration) -> Result<()> {
        let (qos, pkid) = (m.qos, m.pkid);
        let client = self.client.clone();
        self.queue(timeout, async move {
            match client {
                Client::V4(c) => {
                    let mut p = rumqttc::Publish::new("", qos4(qos), Vec::new());
                    p.pkid = pkid;
                    c.ack(&p).await.is_ok()
                }
                Client::V5(c) => {
                    let mut p = p5::Publish::new("", qos5(qos), Vec::new(), None);
                    p.pkid = pkid;
                    c.ack(&p).await.is_ok()
                }
            }
        })
    }

    /// Runs `queued` (a request handed to the event loop, false when its
    /// queue is closed), waiting up to `timeout` for room in the queue.
    fn queue(&self, timeout: Duration, queued: impl Future<Output = bool> + Send) -> Result<()> {
        let sent = runtime::block_on(async move { tokio::time::timeout(timeout, queued).await });
        match sent {
            Ok(true) => Ok(()),
            Ok(false) => Err(lost(&self.address, "the connection has ended")),
            Err(_) => Err(Error::Protocol {
                server: server(&self.address),
                message: format!(
                    "{}: no room for a request within {timeout:?}",
                    server(&self.address)
                ),
            }),
        }
    }

    /// Ends the session with a DISCONNECT after everything queued before
    /// (acknowledgements included), and waits up to `timeout` for the
    /// broker to close its end: closing at once could lose those
    /// acknowledgements if a new connection with the same client id took
    /// the session over first.
    pub fn disconnect(self, timeout: Duration) {
        let client = self.client.clone();
        let sent = runtime::block_on(async move {
            match client {
                Client::V4(c) => c.disconnect().await.is_ok(),
                Client::V5(c) => c.disconnect().await.is_ok(),
            }
        });
        if !sent {
            return;
        }
        let deadline = std::time::Instant::now() + timeout;
        while !self.task.is_finished() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = self
                .events
                .recv_timeout(left.min(Duration::from_millis(50)));
        }
    }
}

fn qos4(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> v5::mqttbytes::QoS {
    match q {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn transport(settings: &Settings) -> Transport {
    match &settings.tls {
        Some(config) => Transport::tls_with_config(TlsConfiguration::Rustls(config.clone())),
        None => Transport::tcp(),
    }
}

fn options4(s: &Settings, broker: &Broker) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(s.client_id.clone(), broker.host.clone(), broker.port);
    o.set_transport(transport(s))
        .set_keep_alive(s.keep_alive)
        .set_clean_session(s.clean)
        .set_manual_acks(true)
        .set_inflight(MAX_IN_FLIGHT)
        .set_request_channel_capacity(REQUEST_QUEUE)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(user) = &s.user {
        o.set_credentials(user.clone(), s.password.clone().unwrap_or_default());
    }
    if let Some(w) = &s.will {
        o.set_last_will(rumqttc::LastWill::new(
            w.topic.clone(),
            w.payload.clone(),
            qos4(w.qos),
            w.retain,
        ));
    }
    o
}

fn options5(s: &Settings, broker: &Broker) -> v5::MqttOptions {
    let mut o = v5::MqttOptions::new(s.client_id.clone(), broker.host.clone(), broker.port);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    o.set_transport(transport(s))
        .set_keep_alive(s.keep_alive.max(MIN_KEEP_ALIVE_V5))
        .set_clean_start(s.clean)
        .set_manual_acks(true)
        .set_connection_timeout(CONNECT_TIMEOUT.as_secs())
        .set_network_options(net)
        .set_outgoing_inflight_upper_limit(MAX_IN_FLIGHT)
        .set_request_channel_capacity(REQUEST_QUEUE)
        .set_max_packet_size(Some(MAX_PACKET as u32 - 5))
        .set_receive_maximum(Some(s.receive_maximum.max(1)));
    if !s.clean {
        o.set_session_expiry_interval(Some(s.session_expiry));
    }
    if let Some(user) = &s.user {
        o.set_credentials(user.clone(), s.password.clone().unwrap_or_default());
    }
    if let Some(w) = &s.will {
        o.set_last_will(p5::LastWill::new(
            w.topic.clone(),
            w.payload.clone(),
            qos5(w.qos),
            w.retain,
            None,
        ));
    }
    o
}

fn message4(p: rumqttc::Publish) -> Message {
    Message {
        topic: p.topic,
        payload: p.payload.to_vec(),
        user_properties: Vec::new(),
        qos: p.qos as u8,
        pkid: p.pkid,
    }
}

fn message5(p: p5::Publish) -> Message {
    Message {
        topic: String::from_utf8_lossy(&p.topic).into_owned(),
        payload: p.payload.to_vec(),
        user_properties: p.properties.map(|p| p.user_properties).unwrap_or_default(),
        qos: p.qos as u8,
        pkid: p.pkid,
    }
}

/// Readies a new event loop of a kept session for the PUBRELs of QoS 2
/// messages acknowledged (PUBREC) on an earlier connection. The broker
/// sends them again after a reconnect, and rumqttc answers a PUBREL with
/// a PUBCOMP only for a packet id it saw a PUBLISH of on this event
/// loop: any other is an error that drops the connection, and so again
/// after every reconnect. Its state takes a QoS 2 PUBLISH of every packet
/// id here (without acknowledging anything: acknowledgements are manual),
/// and the event each makes is dropped at once.
fn expect_releases4(state: &mut rumqttc::MqttState) {
    let keep = state.events.len();
    for pkid in 1..=u16::MAX {
        let mut p = rumqttc::Publish::new("", QoS::ExactlyOnce, Vec::new());
        p.pkid = pkid;
        let _ = state.handle_incoming_packet(rumqttc::Packet::Publish(p));
        state.events.truncate(keep);
    }
}

/// The same for version 5.
fn expect_releases5(state: &mut v5::MqttState) {
    let keep = state.events.len();
    for pkid in 1..=u16::MAX {
        let mut p = p5::Publish::new("", qos5(2), Vec::new(), None);
        p.pkid = pkid;
        let _ = state.handle_incoming_packet(p5::Packet::Publish(p));
        state.events.truncate(keep);
    }
}

/// Polls a 3.1.1 event loop until its connection fails, handing what it
/// sees to the connection's owner.
async fn drive4(mut el: rumqttc::EventLoop, tx: mpsc::Sender<Event>, address: String, tls: bool) {
    use rumqttc::Packet;
    // A PUBLISH whose packet id was still in use waits for it and goes out
    // later with a second Outgoing::Publish: reported once, at the first.
    let mut collided = None;
    loop {
        let event = match el.poll().await {
            Ok(rumqttc::Event::Incoming(p)) => match p {
                Packet::Publish(p) => Some(Event::Message(message4(p))),
                Packet::PubAck(a) => Some(settled(a.pkid, 0, None)),
                Packet::PubComp(c) => Some(settled(c.pkid, 0, None)),
                _ => None,
            },
            Ok(rumqttc::Event::Outgoing(o)) => outgoing(o, &mut collided),
            Err(e) => {
                let _ = tx.send(Event::Lost(lost_error(&address, &e.to_string(), tls)));
                return;
            }
        };
        if let Some(e) = event {
            if tx.send(e).is_err() {
                return;
            }
        }
    }
}

/// The same for version 5, whose acknowledgements may refuse.
async fn drive5(mut el: v5::EventLoop, tx: mpsc::Sender<Event>, address: String, tls: bool) {
    use p5::Packet;
    let mut collided = None;
    loop {
        let event = match el.poll().await {
            Ok(v5::Event::Incoming(p)) => match p {
                Packet::Publish(p) => Some(Event::Message(message5(p))),
                Packet::PubAck(a) => Some(settled(
                    a.pkid,
                    puback5(a.reason),
                    a.properties.and_then(|p| p.reason_string),
                )),
                Packet::PubRec(r) => {
                    let code = pubrec5(r.reason);
                    (code >= 0x80)
                        .then(|| settled(r.pkid, code, r.properties.and_then(|p| p.reason_string)))
                }
                Packet::PubComp(c) => Some(settled(c.pkid, 0, None)),
                _ => None,
            },
            Ok(v5::Event::Outgoing(o)) => outgoing(o, &mut collided),
            Err(e) => {
                let _ = tx.send(Event::Lost(lost_error(&address, &error5(&e), tls)));
                return;
            }
        };
        if let Some(e) = event {
            if tx.send(e).is_err() {
                return;
            }
        }
    }
}

fn settled(pkid: u16, code: u8, reason: Option<String>) -> Event {
    Event::Settled { pkid, code, reason }
}

fn outgoing(o: Outgoing, collided: &mut Option<u16>) -> Option<Event> {
    match o {
        Outgoing::Publish(pkid) if *collided == Some(pkid) && pkid != 0 => {
            *collided = None;
            None
        }
        Outgoing::Publish(pkid) => Some(Event::Sent(pkid)),
        Outgoing::AwaitAck(pkid) => {
            *collided = Some(pkid);
            Some(Event::Sent(pkid))
        }
        _ => None,
    }
}

/// A version 5 error's text, with the reason of a broker's DISCONNECT.
fn error5(e: &v5::ConnectionError) -> String {
    match e {
        v5::ConnectionError::MqttState(v5::StateError::ServerDisconnect {
            reason_code,
            reason_string,
        }) => format!(
            "the broker disconnected: {reason_code:?}{}",
            reason_string
                .as_ref()
                .map_or_else(String::new, |r| format!(": {r}"))
        ),
        e => e.to_string(),
    }
}

/// A lost connection: transient, the caller reconnects.
pub fn lost(address: &str, detail: &str) -> Error {
    Error::Protocol {
        server: server(address),
        message: format!("{}: connection lost: {}", server(address), tidy(detail)),
    }
}

/// A connection lost after it was set up; a TLS failure (a client
/// certificate refused on the first read, as TLS 1.3 servers do) is
/// named with its hint.
fn lost_error(address: &str, detail: &str, tls: bool) -> Error {
    match tls_failure(address, detail, tls) {
        Some(e) => e,
        None => lost(address, detail),
    }
}

fn tls_failure(address: &str, detail: &str, tls: bool) -> Option<Error> {
    let hint = crate::tls::explain(detail).filter(|_| tls)?;
    Some(Error::Tls {
        broker: server(address),
        detail: format!("{}: {hint}", tidy(detail)),
    })
}

/// An error text without the layers rumqttc puts before its cause
/// ("TLS: I/O: ", "Mqtt state: ...: IO: ").
fn tidy(detail: &str) -> &str {
    const LAYERS: [&str; 6] = [
        "TLS: ",
        "I/O: ",
        "IO: ",
        "Io error: ",
        "Mqtt state: ",
        "Mqtt serialization/deserialization error: ",
    ];
    let mut d = detail;
    while let Some(rest) = LAYERS.iter().find_map(|l| d.strip_prefix(l)) {
        d = rest;
    }
    d
}

/// An error setting a connection up: unreachable (transient), refused
/// credentials or certificates (configuration), or a refusal with the
/// broker's reason code.
fn connect_error4(address: &str, e: &rumqttc::ConnectionError, tls: bool) -> Error {
    use rumqttc::ConnectReturnCode as C;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            let code = match code {
                C::Success => 0,
                C::RefusedProtocolVersion => 1,
                C::BadClientId => 2,
                C::ServiceUnavailable => 3,
                C::BadUserNamePassword => 4,
                C::NotAuthorized => 5,
            };
            refused_connection(address, code)
        }
        rumqttc::ConnectionError::NetworkTimeout => unreachable(address, "no answer within 5 s"),
        e => setup_error(address, &e.to_string(), tls),
    }
}

fn connect_error5(address: &str, e: &v5::ConnectionError, tls: bool) -> Error {
    use p5::ConnectReturnCode as C;
    match e {
        v5::ConnectionError::ConnectionRefused(code)
        | v5::ConnectionError::MqttState(v5::StateError::ConnFail { reason: code }) => {
            let code = match code {
                C::Success => 0,
                C::RefusedProtocolVersion => 1,
                C::BadClientId => 2,
                C::ServiceUnavailable => 3,
                C::UnspecifiedError => 0x80,
                C::MalformedPacket => 0x81,
                C::ProtocolError => 0x82,
                C::ImplementationSpecificError => 0x83,
                C::UnsupportedProtocolVersion => 0x84,
                C::ClientIdentifierNotValid => 0x85,
                C::BadUserNamePassword => 0x86,
                C::NotAuthorized => 0x87,
                C::ServerUnavailable => 0x88,
                C::ServerBusy => 0x89,
                C::Banned => 0x8A,
                C::BadAuthenticationMethod => 0x8C,
                C::TopicNameInvalid => 0x90,
                C::PacketTooLarge => 0x95,
                C::QuotaExceeded => 0x97,
                C::PayloadFormatInvalid => 0x99,
                C::RetainNotSupported => 0x9A,
                C::QoSNotSupported => 0x9B,
                C::UseAnotherServer => 0x9C,
                C::ServerMoved => 0x9D,
                C::ConnectionRateExceeded => 0x9F,
            };
            refused_connection(address, code)
        }
        v5::ConnectionError::Timeout(_) => unreachable(address, "no answer within 5 s"),
        e => setup_error(address, &error5(e), tls),
    }
}

fn unreachable(address: &str, detail: &str) -> Error {
    Error::Connect {
        server: server(address),
        detail: detail.to_owned(),
    }
}

/// A failure before the CONNACK: TLS (explained), or the network.
fn setup_error(address: &str, detail: &str, tls: bool) -> Error {
    if let Some(e) = tls_failure(address, detail, tls) {
        return e;
    }
    // rumqttc's errors of the TLS handshake; a server that hangs up
    // there most likely did not expect TLS.
    if detail.starts_with("TLS: ") {
        return Error::Tls {
            broker: server(address),
            detail: format!(
                "{}: the server ended the TLS handshake: the port may be a plain-text listener",
                tidy(detail)
            ),
        };
    }
    unreachable(address, tidy(detail))
}

/// A CONNACK that refuses: bad credentials are an authentication failure,
/// the rest a refusal naming its reason.
fn refused_connection(address: &str, code: u8) -> Error {
    let why = refusal(code);
    if matches!(code, 4 | 5 | 0x86 | 0x87 | 0x8A | 0x8C) {
        return Error::Authentication {
            broker: server(address),
            detail: format!("the broker refused the connection: {why} (code 0x{code:02x})"),
        };
    }
    Error::Refused {
        server: server(address),
        message: format!(
            "{} refused the connection: {why} (code 0x{code:02x})",
            server(address)
        ),
    }
}

fn invalid_filters(filters: &[String]) -> Error {
    Error::InvalidInput(format!(
        "mqtt: option 'topic'='{}': not valid topic filters ('#' only last, '+' and '#' only as whole levels)",
        filters.join(",")
    ))
}

/// A SUBACK that refuses a filter fails the subscription, naming it.
fn check_suback(address: &str, filters: &[String], codes: &[u8]) -> Result<()> {
    match filters.iter().zip(codes).find(|(_, &c)| c >= 0x80) {
        Some((f, &code)) => Err(Error::Refused {
            server: server(address),
            message: format!(
                "{} refused the subscription to '{f}': {} (code 0x{code:02x})",
                server(address),
                refusal(code)
            ),
        }),
        None => Ok(()),
    }
}

fn suback5(c: p5::SubscribeReasonCode) -> u8 {
    use p5::SubscribeReasonCode as S;
    match c {
        S::Success(q) => q as u8,
        S::Failure | S::Unspecified => 0x80,
        S::ImplementationSpecific => 0x83,
        S::NotAuthorized => 0x87,
        S::TopicFilterInvalid => 0x8F,
        S::PkidInUse => 0x91,
        S::QuotaExceeded => 0x97,
        S::SharedSubscriptionsNotSupported => 0x9E,
        S::SubscriptionIdNotSupported => 0xA1,
        S::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

fn puback5(r: p5::PubAckReason) -> u8 {
    use p5::PubAckReason as R;
    match r {
        R::Success => 0,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
}

fn pubrec5(r: p5::PubRecReason) -> u8 {
    use p5::PubRecReason as R;
    match r {
        R::Success => 0,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    }
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
        0x81 => "malformed packet",
        0x82 => "protocol error",
        0x83 => "implementation specific error",
        0x84 => "unsupported protocol version",
        0x85 => "client identifier not valid",
        0x86 => "bad user name or password",
        0x87 => "not authorized",
        0x88 => "server unavailable",
        0x89 => "server busy",
        0x8A => "banned",
        0x8C => "bad authentication method",
        0x8E => "session taken over by another client with the same id",
        0x8F => "topic filter invalid",
        0x90 => "topic name invalid",
        0x91 => "packet identifier in use",
        0x93 => "receive maximum exceeded",
        0x95 => "packet too large",
        0x97 => "quota exceeded",
        0x99 => "payload format invalid",
        0x9A => "retain not supported",
        0x9B => "QoS not supported",
        0x9C => "use another server",
        0x9D => "server moved",
        0x9E => "shared subscriptions not supported",
        0x9F => "connection rate exceeded",
        0xA1 => "subscription identifiers not supported",
        0xA2 => "wildcard subscriptions not supported",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_their_cause() {
        let e = refused_connection("127.0.0.1:1883", 5);
        assert!(matches!(e, Error::Authentication { .. }), "{e:?}");
        assert!(e.to_string().contains("not authorized (code 0x05)"), "{e}");
        let e = refused_connection("127.0.0.1:1883", 0x89);
        assert!(matches!(e, Error::Refused { .. }), "{e:?}");
        assert!(e.to_string().contains("server busy"), "{e}");
        let e = check_suback("h:1", &["a/#".into(), "b".into()], &[2, 0x87]).unwrap_err();
        assert!(e.to_string().contains("'b': not authorized"), "{e}");
    }

    #[test]
    fn tls_failures_carry_the_hint_only_with_tls() {
        let e = setup_error(
            "h:8883",
            "TLS: I/O: invalid peer certificate: UnknownIssuer",
            true,
        );
        assert!(matches!(e, Error::Tls { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "TLS handshake failed at MQTT broker at h:8883: invalid peer certificate: UnknownIssuer: \
             the server's certificate is not signed by a trusted CA (give its CA with tls_ca)"
        );
        let e = setup_error("h:1883", "I/O: Connection refused (os error 111)", false);
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot reach MQTT broker at h:1883: Connection refused (os error 111)"
        );
    }

    #[test]
    fn a_kept_session_completes_the_releases_of_an_earlier_connection() {
        let mut state = rumqttc::MqttState::new(10, true);
        let pubrel = || rumqttc::Packet::PubRel(rumqttc::PubRel::new(7));
        assert!(state.handle_incoming_packet(pubrel()).is_err());
        let mut state = rumqttc::MqttState::new(10, true);
        expect_releases4(&mut state);
        assert!(state.events.is_empty());
        assert_eq!(
            state.handle_incoming_packet(pubrel()).unwrap(),
            Some(rumqttc::Packet::PubComp(rumqttc::PubComp::new(7)))
        );
        let mut state = v5::MqttState::new(10, true);
        expect_releases5(&mut state);
        let answer = state
            .handle_incoming_packet(p5::Packet::PubRel(p5::PubRel::new(7, None)))
            .unwrap();
        assert!(
            matches!(&answer, Some(p5::Packet::PubComp(c)) if c.pkid == 7),
            "{answer:?}"
        );
    }

    #[test]
    fn versions_parse() {
        assert_eq!("3.1.1".parse(), Ok(Version::V311));
        assert_eq!("5".parse(), Ok(Version::V5));
        assert!("4.0".parse::<Version>().is_err());
    }
}
