//! One error type for the whole library.
//!
//! Errors are plain enums rather than boxed trait objects so that the hot
//! paths (send, poll, commit) never allocate to report a routine condition
//! such as a full queue, and so that callers can match on what went wrong.
//! Each variant carries the facts a caller decides on (a code, a path, a
//! key, an [`io::ErrorKind`]); the text is for the person reading it at the
//! edge, and is what `Display` prints. `Error` is `Clone` and `Eq` (faults
//! noticed on a client's thread are kept and handed out again, tests compare
//! errors), so it holds no `std::io::Error` but its kind and message.
//!
//! # What each variant is for, and what a caller does about it
//!
//! | variant | why it exists | what the caller does |
//! | --- | --- | --- |
//! | [`InvalidInput`](Error::InvalidInput) | an argument or setting is unusable | fix the call or the configuration; retrying cannot help |
//! | [`UnknownTopic`](Error::UnknownTopic), [`UnknownGroup`](Error::UnknownGroup) | the name does not exist | create it, or fix the name |
//! | [`TopicExists`](Error::TopicExists) | creating what is there | usually treat as success |
//! | [`GroupNotEmpty`](Error::GroupNotEmpty) | the group's members hold its offsets | stop the members, then retry |
//! | [`Unreachable`](Error::Unreachable), [`Connect`](Error::Connect) | no answer from a server | retry with a backoff; check the address if it lasts |
//! | [`Authentication`](Error::Authentication), [`Tls`](Error::Tls) | credentials or certificates refused | fix the configuration; retrying the same cannot succeed |
//! | [`Timeout`](Error::Timeout) | a deadline passed | retry, or give more time |
//! | [`QueueFull`](Error::QueueFull) | the local send queue is full | poll (serve deliveries), then send again |
//! | [`Kafka`](Error::Kafka) | Kafka (or librdkafka) reported an error with no better variant | decide on `code`; otherwise report it |
//! | [`Protocol`](Error::Protocol) | a connector's server broke the protocol or the connection | reconnect and send again (connectors do); report it if it repeats |
//! | [`Refused`](Error::Refused) | a server or sink understood and said no | fix what it names (permissions, names, the records); resending the same is not expected to help |
//! | [`Io`](Error::Io) | a file, pipe, socket or thread could not be used | by `kind`: fix a path or permission (`NotFound`, `PermissionDenied`), free space, or retry |
//! | [`Corrupt`](Error::Corrupt) | the embedded log's files are damaged or of another format | do not retry: repair or remove the file named in `path`, or reopen the log |
//! | [`Locked`](Error::Locked) | another process has the embedded log's data directory | stop it, or use another directory |
//! | [`Decode`](Error::Decode) | one record cannot be decoded | skip it or send it to the dead-letter topic |
//! | [`Processor`](Error::Processor) | a processor failed on one record every time it was tried | the record goes to the dead-letter topic; fix the processor or the record |
//! | [`Undeliverable`](Error::Undeliverable) | a record that could go nowhere, under a policy that stops | look at the record and its reason, then skip it or fix the sink |
//! | [`Panicked`](Error::Panicked), [`Stopped`](Error::Stopped) | code of ours or the caller's panicked, or a thread ended early | a bug: report it; restarting the component may get past it |
//! | [`Closed`](Error::Closed) | the component was stopped | stop using it |
//! | [`Fenced`](Error::Fenced) | another writer took over, or the consumer lost its partitions (evicted from its group) | stop writing; drop what was not committed and rejoin |
//! | [`Unconfirmed`](Error::Unconfirmed) | a sink settled part of a flush | resend from `settled`, minus what was refused |
//!
//! [`Error::is_transient`] sums the last column up for code that only needs
//! to know whether waiting and trying again can help.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The result type used throughout Riffle.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to a log backend or running a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The caller passed something unusable: a bad topic name, a zero
    /// partition count, a malformed property. The message is one line.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The named topic does not exist.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The topic to create exists already.
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    /// The named consumer group has neither members nor committed offsets.
    #[error("unknown group '{0}'")]
    UnknownGroup(String),
    /// The consumer group has active members, so its offsets cannot be
    /// changed nor the group deleted: they would overwrite or need them.
    #[error(
        "group '{0}' has active members: stop them first (only a group without members can be changed)"
    )]
    GroupNotEmpty(String),
    /// No broker answered within the allowed time.
    #[error("cannot reach Kafka at {brokers}: {detail}")]
    Unreachable { brokers: String, detail: String },
    /// A broker refused the client's credentials (SASL): retrying with the
    /// same settings cannot succeed, so this is reported at once rather than
    /// as a timeout. `broker` is the address that refused.
    #[error("authentication failed at {broker}: {detail}")]
    Authentication { broker: String, detail: String },
    /// The TLS handshake with a broker failed: its certificate is not
    /// trusted, or it refused ours (or we sent none). Like
    /// [`Error::Authentication`], a matter of configuration, not of waiting.
    #[error("TLS handshake failed at {broker}: {detail}")]
    Tls { broker: String, detail: String },
    /// A server other than Kafka (an MQTT broker, a NATS server, an HTTP
    /// endpoint, ...) could not be reached; `server` names it and its
    /// address.
    #[error("cannot reach {server}: {detail}")]
    Connect { server: String, detail: String },
    /// An operation did not finish within its deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The backend's local send queue is full; poll and retry.
    #[error("local send queue is full")]
    QueueFull,
    /// Kafka or librdkafka reported an error that no other variant names.
    /// `code` is librdkafka's error code: positive codes are the Kafka
    /// protocol's own (3 is `UNKNOWN_TOPIC_OR_PARTITION`, 29
    /// `TOPIC_AUTHORIZATION_FAILED`, ...), negative ones librdkafka's local
    /// errors; `None` when the error came without one. Made only by
    /// `riffle-log`, which alone knows librdkafka.
    #[error("{message}")]
    Kafka { code: Option<i32>, message: String },
    /// A connector's server (MQTT, AMQP, NATS, Redis, HTTP) sent something
    /// that breaks its protocol, lost the connection, or stopped answering
    /// in time. `server` names it (and its address when known); `message`
    /// is the whole sentence. Connecting again and sending again is the
    /// remedy; the connectors do so themselves.
    #[error("{message}")]
    Protocol { server: String, message: String },
    /// A server or sink understood the request and said no: an error reply,
    /// a refused subscription or login, records refused for good. `server`
    /// names who refused (and where); `message` is the whole sentence, for
    /// a Redis error reply the server's own text. Sending the same again is
    /// not expected to help.
    #[error("{message}")]
    Refused { server: String, message: String },
    /// A file, pipe, socket or thread could not be used. `context` says what
    /// was being done to what (`cannot write stdout`, `snapshot PATH`);
    /// `kind` and `message` come from the `std::io::Error`.
    #[error("{context}: {message}")]
    Io {
        context: String,
        kind: io::ErrorKind,
        message: String,
    },
    /// The embedded log's files are not what this version can read: a
    /// damaged segment that is not the last, a gap between segments,
    /// unreadable metadata, a format from another version, or a partition
    /// refusing appends after a failed write left its file in doubt.
    /// `path` is the file or directory in question.
    #[error("{message}")]
    Corrupt { path: PathBuf, message: String },
    /// The embedded log's data directory is held by another process (its
    /// `LOCK` file is locked).
    #[error("data directory {} is in use by another process", dir.display())]
    Locked { dir: PathBuf },
    /// A record could not be decoded (not JSON, wrong fields, ...).
    #[error("cannot decode record: {0}")]
    Decode(String),
    /// A keyed processor failed on the record of `key` on each of its
    /// `attempts`; `reason` is the last failure.
    #[error("failed {attempts} times, last: {reason}")]
    Processor {
        key: String,
        attempts: u32,
        reason: String,
    },
    /// Application code failed in its own terms: an exception raised by a
    /// processor written in another language (Python), its text as that
    /// language reports it (`ValueError: bad reading`), so that a dead
    /// letter names it as its author would.
    #[error("{0}")]
    Raised(String),
    /// A record that could go nowhere (no dead-letter topic, or it too
    /// refused it) under a policy that stops the pipeline: `record`
    /// describes it, `reason` why it failed.
    #[error("{record}: {reason}")]
    Undeliverable { record: String, reason: String },
    /// Code run on the caller's behalf panicked: a processor, or the thread
    /// of a consumer, a simulator or a pipeline (`what`), with the panic's
    /// message when it had one.
    #[error("{what} panicked{}", panic_suffix(.message))]
    Panicked {
        what: String,
        message: Option<String>,
    },
    /// A part of the runtime (`what`: a worker) ended while it was still
    /// needed, most likely after a panic logged by its thread.
    #[error("{0} has stopped")]
    Stopped(String),
    /// The component was stopped or closed.
    #[error("closed")]
    Closed,
    /// A transactional producer was superseded by a newer one with the same
    /// id, or its consumer lost its partitions (a member of the embedded
    /// log's group evicted after its session timeout, too): it must stop
    /// writing.
    #[error("fenced: {0}")]
    Fenced(String),
    /// A sink's flush settled only part of what was sent to it: some
    /// records refused for good, the rest possibly not confirmed (see
    /// [`Unconfirmed`]). Boxed: it is rare and
    /// large, and every other result stays small.
    #[error("{0}")]
    Unconfirmed(Box<Unconfirmed>),
}

fn panic_suffix(message: &Option<String>) -> String {
    match message {
        Some(m) => format!(": {m}"),
        None => String::new(),
    }
}

impl Error {
    /// An [`Error::Io`]: `context` says what was being done (to what).
    pub fn io(context: impl Into<String>, e: &io::Error) -> Self {
        Error::Io {
            context: context.into(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// Whether trying the same again later may succeed: the server or the
    /// network may come back, the queue drain, the deadline be longer.
    /// Errors of configuration, of the data and of the code say no.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. }
            | Error::Connect { .. }
            | Error::Timeout(_)
            | Error::QueueFull
            | Error::Protocol { .. } => true,
            Error::Io { kind, .. } => !matches!(
                kind,
                io::ErrorKind::NotFound
                    | io::ErrorKind::PermissionDenied
                    | io::ErrorKind::AddrInUse
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::InvalidInput
                    | io::ErrorKind::InvalidData
                    | io::ErrorKind::Unsupported
            ),
            Error::Unconfirmed(u) => !u.reason.is_empty(),
            _ => false,
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

impl std::fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_they_always_did() {
        let cases = [
            (Error::InvalidInput("x".into()), "invalid input: x"),
            (Error::UnknownTopic("t".into()), "unknown topic 't'"),
            (
                Error::GroupNotEmpty("g".into()),
                "group 'g' has active members: stop them first (only a group without members can be changed)",
            ),
            (
                Error::Unreachable {
                    brokers: "b:9092".into(),
                    detail: "down".into(),
                },
                "cannot reach Kafka at b:9092: down",
            ),
            (Error::QueueFull, "local send queue is full"),
            (Error::Closed, "closed"),
            (Error::Fenced("newer".into()), "fenced: newer"),
            (
                Error::Locked {
                    dir: PathBuf::from("/d"),
                },
                "data directory /d is in use by another process",
            ),
            (
                Error::Processor {
                    key: "k".into(),
                    attempts: 3,
                    reason: "no".into(),
                },
                "failed 3 times, last: no",
            ),
            (
                Error::Panicked {
                    what: "processor".into(),
                    message: Some("boom".into()),
                },
                "processor panicked: boom",
            ),
            (
                Error::Panicked {
                    what: "consumer thread".into(),
                    message: None,
                },
                "consumer thread panicked",
            ),
            (Error::Stopped("a worker".into()), "a worker has stopped"),
            (
                Error::Undeliverable {
                    record: "t/0@5".into(),
                    reason: "bad".into(),
                },
                "t/0@5: bad",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text, "{e:?}");
        }
    }

    #[test]
    fn io_errors_keep_their_kind_and_read_as_context_then_message() {
        let e = Error::io(
            "cannot read /x",
            &io::Error::new(io::ErrorKind::NotFound, "gone"),
        );
        assert!(
            matches!(
                &e,
                Error::Io {
                    kind: io::ErrorKind::NotFound,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "cannot read /x: gone");
        assert!(!e.is_transient(), "a missing file stays missing");
        let reset = Error::io("socket", &io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(reset.is_transient());
    }

    #[test]
    fn only_what_may_pass_is_transient() {
        let server = || "s".to_owned();
        let message = || "m".to_owned();
        assert!(Error::Protocol {
            server: server(),
            message: message()
        }
        .is_transient());
        assert!(Error::Timeout("t".into()).is_transient());
        assert!(!Error::Refused {
            server: server(),
            message: message()
        }
        .is_transient());
        assert!(!Error::Corrupt {
            path: PathBuf::from("/seg"),
            message: message()
        }
        .is_transient());
        assert!(!Error::Authentication {
            broker: server(),
            detail: message()
        }
        .is_transient());
        assert!(!Unconfirmed::refused(2, vec![(1, "no".into())])
            .unwrap_err()
            .is_transient());
    }
}
