//! One error type for the whole library.
//!
//! Errors are plain enums rather than boxed trait objects so that the hot
//! paths (send, poll, commit) never allocate to report a routine condition
//! such as a full queue, and so that callers can match on what went wrong.

use std::fmt;
use std::time::Duration;

/// The result type used throughout Riffle.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to a log backend or running a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The caller passed something unusable: a bad topic name, a zero
    /// partition count, a malformed property. The message is one line.
    InvalidInput(String),
    /// The named topic does not exist.
    UnknownTopic(String),
    /// The topic to create exists already.
    TopicExists(String),
    /// The named consumer group has neither members nor committed offsets.
    UnknownGroup(String),
    /// The consumer group has active members, so its offsets cannot be
    /// changed nor the group deleted: they would overwrite or need them.
    GroupNotEmpty(String),
    /// No broker answered within the allowed time.
    Unreachable { brokers: String, detail: String },
    /// A broker refused the client's credentials (SASL): retrying with the
    /// same settings cannot succeed, so this is reported at once rather than
    /// as a timeout. `broker` is the address that refused.
    Authentication { broker: String, detail: String },
    /// The TLS handshake with a broker failed: its certificate is not
    /// trusted, or it refused ours (or we sent none). Like
    /// [`Error::Authentication`], a matter of configuration, not of waiting.
    Tls { broker: String, detail: String },
    /// A server other than Kafka (an MQTT broker, a NATS server, an HTTP
    /// endpoint, ...) could not be reached; `server` names it and its
    /// address.
    Connect { server: String, detail: String },
    /// An operation did not finish within its deadline.
    Timeout(String),
    /// The backend's local send queue is full; poll and retry.
    QueueFull,
    /// The backend reported an error (Kafka error code text, I/O, ...).
    Backend(String),
    /// A record could not be decoded (not JSON, wrong fields, ...).
    Decode(String),
    /// The component was stopped or closed.
    Closed,
    /// A transactional producer was superseded by a newer one with the same
    /// id, or its consumer lost its partitions: it must stop writing.
    Fenced(String),
    /// A sink's flush settled only part of what was sent to it: some
    /// records refused for good, the rest possibly not confirmed (see
    /// [`Unconfirmed`]). Boxed: it is rare and
    /// large, and every other result stays small.
    Unconfirmed(Box<Unconfirmed>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::UnknownTopic(t) => write!(f, "unknown topic '{t}'"),
            Error::TopicExists(t) => write!(f, "topic '{t}' already exists"),
            Error::UnknownGroup(g) => write!(f, "unknown group '{g}'"),
            Error::GroupNotEmpty(g) => write!(
                f,
                "group '{g}' has active members: stop them first (only a group without members can be changed)"
            ),
            Error::Unreachable { brokers, detail } => {
                write!(f, "cannot reach Kafka at {brokers}: {detail}")
            }
            Error::Authentication { broker, detail } => {
                write!(f, "authentication failed at {broker}: {detail}")
            }
            Error::Tls { broker, detail } => {
                write!(f, "TLS handshake failed at {broker}: {detail}")
            }
            Error::Connect { server, detail } => write!(f, "cannot reach {server}: {detail}"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::QueueFull => write!(f, "local send queue is full"),
            Error::Backend(m) => write!(f, "{m}"),
            Error::Decode(m) => write!(f, "cannot decode record: {m}"),
            Error::Closed => write!(f, "closed"),
            Error::Fenced(m) => write!(f, "fenced: {m}"),
            Error::Unconfirmed(u) => write!(f, "{u}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rdkafka::error::KafkaError> for Error {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        use rdkafka::error::KafkaError as K;
        use rdkafka::types::RDKafkaErrorCode as C;
        match e.rdkafka_error_code() {
            Some(C::QueueFull) => Error::QueueFull,
            Some(C::UnknownTopicOrPartition | C::UnknownTopic) => Error::Backend(e.to_string()),
            _ => match e {
                K::ClientConfig(_, desc, key, value) => {
                    Error::InvalidInput(format!("property {key}={value}: {desc}"))
                }
                other => Error::Backend(other.to_string()),
            },
        }
    }
}

/// What a sink's `flush` (of a sink in `riffle::connect`) came to when it could not confirm
/// everything sent since its last successful flush, as the payload of
/// [`Error::Unconfirmed`](Error::Unconfirmed).
///
/// Positions count the records sent since the last successful flush, the
/// first being 0. The records before `settled` are done with: confirmed,
/// or refused for good if listed in `refused`. Those from `settled` on
/// (unless listed in `refused`) may or may not have arrived, and are sent
/// again after `retry_after` or a backoff. A sink that confirms out of
/// order reports its first unconfirmed position: the confirmed ones after
/// it come again, which at-least-once allows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unconfirmed {
    /// How many records, from the first, are confirmed or refused.
    pub settled: usize,
    /// Records the system refused for good, with its reason (the status
    /// and the start of the body, the reason code, the error reply).
    /// Sending them again is not expected to help.
    pub refused: Vec<(usize, String)>,
    /// Why the records from `settled` on were not confirmed (empty when
    /// everything is settled).
    pub reason: String,
    /// How long the system asked to be left alone (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Unconfirmed {
    /// Everything of `sent` records settled, those in `refused` refused.
    /// `Ok` when none was refused.
    pub fn refused(sent: usize, refused: Vec<(usize, String)>) -> Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        Err(Error::Unconfirmed(Box::new(Self {
            settled: sent,
            refused,
            ..Self::default()
        })))
    }

    /// Records from `settled` on not confirmed because of `error` (a
    /// transient failure); those in `refused` refused for good.
    pub fn transient(
        settled: usize,
        refused: Vec<(usize, String)>,
        error: &Error,
        retry_after: Option<Duration>,
    ) -> Error {
        Error::Unconfirmed(Box::new(Self {
            settled,
            refused,
            reason: error.to_string(),
            retry_after,
        }))
    }
}

impl fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.reason.is_empty() {
            f.write_str(&self.reason)?;
        }
        if let Some((at, why)) = self.refused.first() {
            if !self.reason.is_empty() {
                f.write_str("; ")?;
            }
            write!(f, "{} refused, record {at}: {why}", self.refused.len())?;
        }
        Ok(())
    }
}
