//! MQTT brokers (3.1.1 and 5), such as Mosquitto: subscribe as a source,
//! publish as a sink, at QoS 0, 1 or 2, in plain text or TLS, with a
//! login, a last will and a list of brokers to fall back on.
//!
//! The protocol is rumqttc's (its async client, and its `v5` module for
//! MQTT 5), run on the connectors' shared runtime: each connection has a
//! task there that reads the socket and sends the keep-alive pings, also
//! while the pipeline is busy elsewhere. TLS is rustls with the ring
//! provider, configured by the common `tls*` options (see
//! [`crate::tls`]).
//!
//! # Delivery
//!
//! As a source: at-least-once. The source connects with a fixed client id
//! and without a clean session (3.1.1) / clean start (5, with a session
//! expiry interval), so the broker keeps the subscription and queues QoS 1
//! and 2 messages while the pipeline is down or reconnecting. It subscribes
//! at QoS 2, so each message comes at the QoS it was published with. Each
//! message is acknowledged (PUBACK for QoS 1, PUBREC for QoS 2, which the
//! client then completes) only in
//! [`Source::ack`](riffle::connect::Source::ack), after the pipeline's sink
//! confirmed it; a message received but not acknowledged when the
//! connection drops is sent again by the broker (with the DUP flag) after
//! the reconnect. How much waits for us is the broker's to limit
//! (Mosquitto: `max_queued_messages`, 1000 by default, beyond which it
//! drops), as is how many unacknowledged messages it sends at once
//! (`max_inflight_messages` for 3.1.1; the receive maximum of 1000 we ask
//! for in 5), which bounds a batch.
//!
//! As a sink: at-least-once with `qos=1` (the default) or `qos=2`: every
//! PUBLISH is confirmed (PUBACK; PUBREC then PUBCOMP for QoS 2) before
//! [`Sink::flush`](riffle::connect::Sink::flush) returns, so the broker
//! holds it (on disk as far as its persistence goes). QoS 2 adds that the
//! broker passes a message on once even if it receives it twice within a
//! session; it does not make the pipeline exactly-once. The sink's session
//! is clean: after a lost connection the unconfirmed messages are not
//! resent by the sink itself; the flush fails and the pipeline sends them
//! again, from the first unconfirmed one (so they may repeat). With MQTT
//! 5, a reason code of 0x80 or more in the PUBACK (or PUBREC) (not
//! authorized, quota exceeded, ...) refuses that message for good: the
//! pipeline dead-letters it after its attempts and the others go on. With
//! `qos=0` nothing is confirmed: at-most-once.
//!
//! Records: a source's record has the MQTT topic as its topic, no key, the
//! payload as its value and (MQTT 5) the user properties as headers. A
//! sink publishes the value to the topic rendered from its `topic`
//! template (`{key}`, `{topic}`), with the headers as user properties
//! (MQTT 5; 3.1.1 has nowhere to put them, so they are dropped).
//!
//! # Connecting
//!
//! `url` is `mqtt://[user[:password]@]host[:port]` (port 1883) or, for
//! TLS, `mqtts://...` (port 8883); `tcp://` and `ssl://` are read the same.
//! Several URLs, comma-separated, are brokers of one cluster (all with TLS
//! or all without): a connection is made to the first that accepts, and
//! after a lost connection the next one is tried first. Reconnecting waits
//! a backoff from 100 ms doubling to 5 s, each wait shortened at random by
//! up to a half so that the pipelines of a broker that went away do not
//! all come back at once. A broker that cannot be reached when the source
//! or sink is built fails the build, naming it.
//!
//! A login is `user` and `password` (options, which win over the URL's).
//! Like any option they may be `${ENV_VAR}` or `${file:/path}`, which keeps
//! the password out of the command line and the shell history. A refused
//! login is an authentication error at once (`authentication failed at
//! MQTT broker at host:port: ... not authorized`), not retried.
//!
//! TLS: `mqtts://` (or `tls=true`) turns it on; `tls_ca` gives the CA of
//! the broker's certificate (default: the system's roots), `tls_cert` and
//! `tls_key` a client certificate for brokers that require one (Mosquitto:
//! `require_certificate true`), `tls_server_name` the name the broker's
//! certificate must carry when it is not the URL's host, and
//! `tls_insecure=true` skips the check (testing only). A failed handshake
//! is a one-line error with what to change (an untrusted CA: give it with
//! `tls_ca`; a client certificate required; a plain-text port).
//!
//! # Options
//!
//! - `url`: see above; default `mqtt://127.0.0.1:1883`.
//! - `user`, `password`: the login; default the URL's, or none.
//! - `version`: `3.1.1` (default) or `5`.
//! - `topic`: source: topic filters, comma-separated, wildcards allowed
//!   (required); sink: a template such as `heaters/{key}/command`
//!   (default `{topic}`).
//! - `client_id`: source default `riffle-` and a hash of the filters, so
//!   that a restarted pipeline finds its session again; sink default
//!   unique per sink.
//! - `keep_alive`: default 30s, in whole seconds; with MQTT 5 at least 5s
//!   (rumqttc's floor). The broker drops a client silent for one and a
//!   half of it; the connection's task pings whatever the pipeline does.
//! - `session_expiry` (source, MQTT 5): how long the broker keeps the
//!   session while nobody is connected, default 1 day.
//! - `qos` (sink): 1 (default), 2 or 0; `retain` (sink): default false.
//! - `will_topic`, `will_payload`, `will_qos` (0, 1 or 2, default 0),
//!   `will_retain` (default false): the last will, which the broker
//!   publishes if the connection ends without a DISCONNECT (a crash, a
//!   lost network); a closed source or sink says goodbye and leaves none.
//! - `tls`, `tls_ca`, `tls_cert`, `tls_key`, `tls_server_name`,
//!   `tls_insecure`: see above.

mod conn;
mod sink;
mod source;

pub use conn::Version;
pub use sink::MqttSink;
pub use source::MqttSource;

use std::time::Duration;

use riffle::connect::Delivery;
use riffle::{Error, Result};

use crate::connector::{Connector, Fallback, Opt, Role};
use crate::net::Url;
use crate::options::Options;
use crate::tls;
use conn::{Broker, Settings, Will};

pub const MQTT: Connector = Connector {
    name: "mqtt",
    summary: "an MQTT broker (3.1.1 or 5), QoS 1 or 2, TLS: subscribe as a source, publish as a sink",
    source: Some(Delivery::AtLeastOnce),
    sink: Some(Delivery::AtLeastOnce),
    options: &[
        Opt {
            name: "url",
            role: Role::Both,
            default: Fallback::Value("mqtt://127.0.0.1:1883"),
            help: "the broker, mqtt[s]://[user[:password]@]host[:port]; several, comma-separated, are tried in turn",
        },
        Opt {
            name: "user",
            role: Role::Both,
            default: Fallback::Described("the URL's"),
            help: "the user name to log in with",
        },
        Opt {
            name: "password",
            role: Role::Both,
            default: Fallback::Described("the URL's"),
            help: "the password, best as ${ENV_VAR} or ${file:/path}",
        },
        Opt {
            name: "version",
            role: Role::Both,
            default: Fallback::Value("3.1.1"),
            help: "the protocol version, 3.1.1 or 5 (5 carries headers as user properties)",
        },
        Opt {
            name: "topic",
            role: Role::Source,
            default: Fallback::None,
            help: "topic filters to subscribe to, comma-separated, + and # allowed",
        },
        Opt {
            name: "topic",
            role: Role::Sink,
            default: Fallback::Value("{topic}"),
            help: "the topic to publish to, a template with {key} and {topic}",
        },
        Opt {
            name: "client_id",
            role: Role::Both,
            default: Fallback::Described("source: riffle-<hash of the topic filters>; sink: unique"),
            help: "the MQTT client id; a source's session (and its queued messages) belongs to it",
        },
        Opt {
            name: "keep_alive",
            role: Role::Both,
            default: Fallback::Value("30s"),
            help: "how often the connection is checked with PINGREQ (MQTT 5: at least 5s)",
        },
        Opt {
            name: "session_expiry",
            role: Role::Source,
            default: Fallback::Value("1d"),
            help:
                "MQTT 5: how long the broker keeps the session and its messages while disconnected",
        },
        Opt {
            name: "qos",
            role: Role::Sink,
            default: Fallback::Value("1"),
            help: "1: each message confirmed (at-least-once); 2: confirmed in two steps (the broker keeps no duplicate of a resent one within a connection); 0: not confirmed (at-most-once)",
        },
        Opt {
            name: "retain",
            role: Role::Sink,
            default: Fallback::Value("false"),
            help: "publish as retained messages (the broker keeps the last one per topic)",
        },
        Opt {
            name: "will_topic",
            role: Role::Both,
            default: Fallback::None,
            help: "the last will: a message the broker publishes to this topic if the connection ends without a goodbye",
        },
        Opt {
            name: "will_payload",
            role: Role::Both,
            default: Fallback::Described("empty"),
            help: "the last will's payload",
        },
        Opt {
            name: "will_qos",
            role: Role::Both,
            default: Fallback::Value("0"),
            help: "the last will's QoS, 0, 1 or 2",
        },
        Opt {
            name: "will_retain",
            role: Role::Both,
            default: Fallback::Value("false"),
            help: "whether the broker keeps the last will as the topic's retained message",
        },
    ],
    tls: true,
    build_source: Some(|mut o, _| {
        let mut settings = common(&mut o)?;
        let topics = o.required("topic")?;
        let filters: Vec<String> = topics
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if filters.is_empty() {
            return Err(Error::InvalidInput(
                "mqtt: option 'topic' names no topic filter".into(),
            ));
        }
        if let Some(f) = filters.iter().find(|f| !rumqttc::valid_filter(f)) {
            return Err(Error::InvalidInput(format!(
                "mqtt: option 'topic': '{f}' is not a valid topic filter ('#' only last, '+' and '#' only as whole levels)"
            )));
        }
        // Session lifetimes are often given in days (`7d`), which the
        // common grammar reads.
        let expiry = MQTT.duration(&mut o, Role::Source, "session_expiry")?;
        settings.session_expiry = expiry.as_secs().min(u32::MAX as u64) as u32;
        settings.clean = false;
        if settings.client_id.is_empty() {
            settings.client_id = source_client_id(&filters);
        }
        MQTT.finish(o, Role::Source)?;
        Ok(Box::new(MqttSource::open(settings, filters)?))
    }),
    build_sink: Some(|mut o, _| {
        let mut settings = common(&mut o)?;
        let template = MQTT.text(&mut o, Role::Sink, "topic")?;
        let qos: u8 = MQTT.get(&mut o, Role::Sink, "qos")?;
        if qos > 2 {
            return Err(Error::InvalidInput(format!(
                "mqtt: option 'qos'='{qos}': expected 0, 1 or 2"
            )));
        }
        let retain = MQTT.get(&mut o, Role::Sink, "retain")?;
        settings.clean = true;
        if settings.client_id.is_empty() {
            settings.client_id = sink_client_id();
        }
        MQTT.finish(o, Role::Sink)?;
        Ok(Box::new(MqttSink::open(settings, template, qos, retain)?))
    }),
};

/// The options both ends share: the brokers, the login, TLS and what
/// CONNECT says (an empty client id when none was given). The TLS
/// configuration is built here, so that a missing certificate file is
/// reported before connecting.
fn common(o: &mut Options) -> Result<Settings> {
    let urls = MQTT.text(o, Role::Both, "url")?;
    let mut brokers = Vec::new();
    let (mut user, mut password, mut scheme_tls) = (None, None, None);
    for text in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let tls = match text.split_once("://").map(|(s, _)| s.to_ascii_lowercase()) {
            Some(s) if s == "mqtt" || s == "tcp" => false,
            Some(s) if s == "mqtts" || s == "ssl" => true,
            Some(s) => {
                return Err(Error::InvalidInput(format!(
                    "mqtt: URL scheme '{s}' not supported (mqtt://host:port, or mqtts://host:port for TLS)"
                )))
            }
            None => false,
        };
        let url = Url::parse(text, if tls { 8883 } else { 1883 })?;
        if scheme_tls.is_some_and(|t| t != tls) {
            return Err(Error::InvalidInput(
                "mqtt: option 'url': every broker with TLS (mqtts://) or none".into(),
            ));
        }
        scheme_tls = Some(tls);
        user = user.or(url.user);
        password = password.or(url.password);
        brokers.push(Broker {
            host: url.host,
            port: url.port,
        });
    }
    if brokers.is_empty() {
        return Err(Error::InvalidInput(
            "mqtt: option 'url' names no broker".into(),
        ));
    }
    // The options, when given, win over the URL's (whose password would
    // otherwise sit in plain text in the command line).
    let user = o.string("user").or(user);
    let password = o.string("password").or(password);
    if password.is_some() && user.is_none() {
        return Err(Error::InvalidInput(
            "mqtt: a password needs a user (option 'user' or user@ in the URL)".into(),
        ));
    }
    let version: Version = MQTT.get(o, Role::Both, "version")?;
    let keep_alive = MQTT.duration(o, Role::Both, "keep_alive")?;
    if keep_alive.as_secs() > u16::MAX as u64 {
        return Err(Error::InvalidInput(
            "mqtt: option 'keep_alive': at most 65535s".into(),
        ));
    }
    // The protocol counts keep-alive in whole seconds.
    let keep_alive =
        Duration::from_secs(keep_alive.as_secs().max(u64::from(!keep_alive.is_zero())));
    let will = match o.string("will_topic") {
        Some(topic) => {
            if !rumqttc::valid_topic(&topic) {
                return Err(Error::InvalidInput(format!(
                    "mqtt: option 'will_topic'='{topic}': a topic name, without wildcards"
                )));
            }
            let qos: u8 = MQTT.get(o, Role::Both, "will_qos")?;
            if qos > 2 {
                return Err(Error::InvalidInput(format!(
                    "mqtt: option 'will_qos'='{qos}': expected 0, 1 or 2"
                )));
            }
            Some(Will {
                topic,
                payload: o.string("will_payload").unwrap_or_default().into_bytes(),
                qos,
                retain: MQTT.get(o, Role::Both, "will_retain")?,
            })
        }
        None => {
            if let Some(k) = ["will_payload", "will_qos", "will_retain"]
                .into_iter()
                .find(|k| o.string(k).is_some())
            {
                return Err(Error::InvalidInput(format!(
                    "mqtt: option '{k}' needs 'will_topic'"
                )));
            }
            None
        }
    };
    let tls = match tls::from_options(o, scheme_tls.unwrap_or(false))? {
        Some(t) => Some(t.client_config()?),
        None => None,
    };
    Ok(Settings {
        brokers,
        version,
        client_id: o.string("client_id").unwrap_or_default(),
        clean: true,
        keep_alive,
        user,
        password,
        session_expiry: 0,
        receive_maximum: 1000,
        tls,
        will,
    })
}

/// `riffle-` and a hash of the filters: the same filters give the same id,
/// so a restarted pipeline resumes its session and receives what was
/// queued meanwhile. 23 characters, the length every broker must accept.
fn source_client_id(filters: &[String]) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in filters.join(",").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("riffle-{h:016x}")
}

/// Unique per sink: two sinks with the same id would take turns throwing
/// each other off the broker.
fn sink_client_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "riffle-pub-{:x}-{:x}-{}",
        std::process::id(),
        nanos & 0xFFFF,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_are_stable_and_short() {
        let a = source_client_id(&["heaters/+/sensor".into()]);
        assert_eq!(a, source_client_id(&["heaters/+/sensor".into()]));
        assert_ne!(a, source_client_id(&["heaters/#".into()]));
        assert_eq!(a.len(), 23);
        assert_ne!(sink_client_id(), sink_client_id());
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings> {
        common(&mut Options::from_pairs("mqtt", pairs.iter().copied()))
    }

    #[test]
    fn urls_list_brokers_and_carry_logins() {
        let s = settings(&[("url", "mqtt://u:p@a, mqtt://b:1884")]).unwrap();
        let brokers: Vec<String> = s.brokers.iter().map(Broker::address).collect();
        assert_eq!(brokers, ["a:1883", "b:1884"]);
        assert_eq!(
            (s.user.as_deref(), s.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert!(s.tls.is_none());
        // The options win over the URL's login.
        let s = settings(&[("url", "mqtt://u:p@a"), ("user", "v"), ("password", "q")]).unwrap();
        assert_eq!(
            (s.user.as_deref(), s.password.as_deref()),
            (Some("v"), Some("q"))
        );
        let s = settings(&[("url", "mqtts://a"), ("tls_insecure", "true")]).unwrap();
        assert_eq!(s.brokers[0].port, 8883);
        assert!(s.tls.is_some());
        for (pairs, why) in [
            (
                &[("url", "mqtt://a,mqtts://b")][..],
                "every broker with TLS",
            ),
            (&[("url", "ws://a")][..], "'ws' not supported"),
            (&[("url", " , ")][..], "names no broker"),
            (&[("password", "p")][..], "a password needs a user"),
            (&[("will_topic", "a/+")][..], "without wildcards"),
            (
                &[("will_topic", "a"), ("will_qos", "3")][..],
                "expected 0, 1 or 2",
            ),
        ] {
            let e = settings(pairs).err().unwrap().to_string();
            assert!(e.contains(why), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn wills_and_keep_alives_are_read() {
        let s = settings(&[
            ("will_topic", "status/riffle"),
            ("will_payload", "gone"),
            ("will_qos", "2"),
            ("will_retain", "true"),
            ("keep_alive", "1500ms"),
        ])
        .unwrap();
        let w = s.will.unwrap();
        assert_eq!(
            (w.topic.as_str(), w.payload.as_slice(), w.qos, w.retain),
            ("status/riffle", &b"gone"[..], 2, true)
        );
        assert_eq!(s.keep_alive, Duration::from_secs(1));
        let s = settings(&[("keep_alive", "200ms")]).unwrap();
        assert_eq!(s.keep_alive, Duration::from_secs(1));
    }

    #[test]
    fn the_list_shows_the_login_will_and_tls_options() {
        let sink = MQTT.option_names(Role::Sink);
        for o in [
            "user",
            "password",
            "will_topic",
            "will_qos",
            "qos",
            "tls_ca",
            "tls_cert",
        ] {
            assert!(sink.contains(&o), "{o}: {sink:?}");
        }
        let source = MQTT.option_names(Role::Source);
        assert!(
            !source.contains(&"qos") && source.contains(&"tls_key"),
            "{source:?}"
        );
    }

    #[test]
    fn expiries_take_days() {
        use crate::options::parse_duration;
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("d").is_err());
    }
}
