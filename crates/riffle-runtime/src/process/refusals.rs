//! What the log refused for good, remembered so that it is not sent again.
//!
//! Under exactly-once, one output the broker refuses (too large for its
//! topic, a topic the client may not write to, a record breaking a topic's
//! rule) spoils the whole open transaction: it must be aborted, and the
//! records since the last commit are processed again. Sending the same
//! output again would spoil the next transaction too, for ever. So before
//! the replay, each refusal is learned here, and the replay sends what was
//! refused to the dead-letter topic instead, inside the transaction that
//! commits the rest.
//!
//! What is learned, by the refusal's kind:
//!
//! - too large: the topic's `max.message.bytes`, read from the broker, and
//!   the records refused that exceed it alone. Kafka refuses a whole batch
//!   for one record too many bytes, so its companions that fit are sent
//!   again; one refused a second time counts as a culprit all the same, so
//!   that no misjudged size can keep a partition replaying. From then on,
//!   any record larger than the limit is dead-lettered before it is sent:
//!   it never spoils a transaction again.
//! - not authorized: the topic; every output to it is dead-lettered.
//! - invalid: the record itself (its topic and a fingerprint of its key and
//!   value); librdkafka tells its companions apart.
//!
//! Learned refusals last as long as the app: they describe the log's rules,
//! which a restart reads again if they changed.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::log::{Headers, Log, OwnedHeader, Refusal};

/// Records refused for themselves kept in mind, at most (the oldest are
/// forgotten first): a replay only needs those of the aborted transaction.
const KEPT: usize = 10_000;
/// How long reading a topic's limit may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A record the log refused, as its delivery report described it.
#[derive(Debug, Clone)]
pub(super) struct Refused {
    pub(super) topic: String,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Vec<u8>,
    pub(super) headers: Vec<OwnedHeader>,
    pub(super) error: String,
    pub(super) refusal: Option<Refusal>,
}

/// The refusals of one app's log, shared by all its consumers and workers
/// (a replayed record may be processed by another consumer than the one
/// whose transaction it spoiled).
pub(super) struct Refusals {
    log: Arc<dyn Log>,
    /// Whether anything is learned: outputs pay one load while nothing is.
    any: AtomicBool,
    learned: Mutex<Learned>,
}

#[derive(Default)]
struct Learned {
    /// The largest record batch each topic takes, in bytes.
    limits: Vec<(String, usize)>,
    /// Topics the client may not write to, and why.
    forbidden: Vec<(String, String)>,
    /// Records refused for themselves: topic, fingerprint, reason.
    records: VecDeque<(String, u64, String)>,
    /// Records refused in a batch too large though they fit alone.
    companions: VecDeque<(String, u64)>,
}

impl Refusals {
    pub(super) fn new(log: Arc<dyn Log>) -> Self {
        Self {
            log,
            any: AtomicBool::new(false),
            learned: Mutex::default(),
        }
    }

    /// Why the log will refuse this record, if it is known to.
    pub(super) fn verdict(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Headers<'_>,
    ) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let learned = self.learned.lock().unwrap();
        if let Some((_, why)) = learned.forbidden.iter().find(|(t, _)| t == topic) {
            return Some(why.clone());
        }
        if let Some((_, limit)) = learned.limits.iter().find(|(t, _)| t == topic) {
            let size = alone_bytes(key, value, headers);
            if size > *limit {
                return Some(format!(
                    "a record of about {size} bytes is too large for {topic} (max.message.bytes {limit})"
                ));
            }
        }
        if !learned.records.iter().any(|(t, _, _)| t == topic) {
            return None;
        }
        let print = fingerprint(key, value);
        learned
            .records
            .iter()
            .find(|(t, p, _)| *p == print && t == topic)
            .map(|(_, _, why)| why.clone())
    }

    /// Learns what the refusals of an aborted transaction say about the
    /// log; the others (timeouts, purged records) teach nothing.
    pub(super) fn learn(&self, refused: &[Refused]) {
        for r in refused {
            let Some(kind) = r.refusal else { continue };
            let mut learned = self.learned.lock().unwrap();
            match kind {
                Refusal::NotAuthorized => {
                    if !learned.forbidden.iter().any(|(t, _)| *t == r.topic) {
                        tracing::warn!(
                            "{}: {}; its outputs go to the dead-letter topic",
                            r.topic,
                            r.error
                        );
                        learned.forbidden.push((r.topic.clone(), r.error.clone()));
                    }
                }
                Refusal::Invalid => learned.culprit(r),
                Refusal::TooLarge => {
                    let limit = match learned.limits.iter().find(|(t, _)| *t == r.topic) {
                        Some((_, limit)) => Some(*limit),
                        None => {
                            // Not under the lock: an admin call.
                            drop(learned);
                            let limit = self.topic_limit(&r.topic);
                            learned = self.learned.lock().unwrap();
                            if let Some(limit) = limit {
                                learned.limits.push((r.topic.clone(), limit));
                            }
                            limit
                        }
                    };
                    let size = alone_bytes(r.key.as_deref(), &r.value, Headers::from(&r.headers));
                    let print = fingerprint(r.key.as_deref(), &r.value);
                    let again = learned
                        .companions
                        .iter()
                        .any(|(t, p)| *p == print && *t == r.topic);
                    match limit {
                        Some(limit) if size <= limit && !again => {
                            learned.companions.push_back((r.topic.clone(), print));
                            if learned.companions.len() > KEPT {
                                learned.companions.pop_front();
                            }
                        }
                        _ => learned.culprit(r),
                    }
                }
            }
            self.any.store(true, Ordering::Release);
        }
    }

    /// The largest record batch `topic` takes, from the broker.
    fn topic_limit(&self, topic: &str) -> Option<usize> {
        match self.log.topic_configs(topic, DESCRIBE_TIMEOUT) {
            Ok(configs) => configs
                .iter()
                .find(|c| c.name == "max.message.bytes")
                .and_then(|c| c.value.parse().ok()),
            Err(e) => {
                tracing::warn!(
                    "cannot read {topic}'s max.message.bytes ({e}); every record refused as too large goes to the dead letters"
                );
                None
            }
        }
    }
}

impl Learned {
    fn culprit(&mut self, r: &Refused) {
        let print = fingerprint(r.key.as_deref(), &r.value);
        if self
            .records
            .iter()
            .any(|(t, p, _)| *p == print && *t == r.topic)
        {
            return;
        }
        self.records
            .push_back((r.topic.clone(), print, r.error.clone()));
        if self.records.len() > KEPT {
            self.records.pop_front();
        }
    }
}

/// A record's key and value, hashed: what is remembered of a record
/// refused for itself, rather than its bytes (which may be megabytes).
/// std's `DefaultHasher::new` has fixed keys, so a replay hashes alike.
fn fingerprint(key: Option<&[u8]>, value: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// About the bytes of a Kafka record batch holding this record alone (what
/// a topic's `max.message.bytes` limits): the batch header, then the
/// record's fields with their length prefixes at their largest.
pub(super) fn alone_bytes(key: Option<&[u8]>, value: &[u8], headers: Headers<'_>) -> usize {
    const BATCH_HEADER: usize = 61;
    const RECORD_FIELDS: usize = 37;
    const HEADER_FIELDS: usize = 10;
    let headers: usize = headers
        .iter()
        .map(|h| HEADER_FIELDS + h.name.len() + h.value.map_or(0, <[u8]>::len))
        .sum();
    BATCH_HEADER + RECORD_FIELDS + key.map_or(0, <[u8]>::len) + value.len() + headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::embedded::EmbeddedLog;
    use crate::log::TopicSpec;

    fn refused(topic: &str, value: &[u8], refusal: Refusal) -> Refused {
        Refused {
            topic: topic.into(),
            key: Some(b"k".to_vec()),
            value: value.to_vec(),
            headers: Vec::new(),
            error: format!("{refusal:?}"),
            refusal: Some(refusal),
        }
    }

    #[test]
    fn only_the_culprit_of_a_batch_too_large_is_refused_and_the_limit_applies_after() {
        let log = EmbeddedLog::new();
        let mut spec = TopicSpec::new("out", 1);
        spec.configs
            .push(("max.message.bytes".into(), "2000".into()));
        log.create_topic(&spec, DESCRIBE_TIMEOUT).unwrap();
        let r = Refusals::new(Arc::new(log));
        let v = |n| vec![b'x'; n];
        assert_eq!(r.verdict("out", Some(b"k"), &v(5000), Headers::EMPTY), None);
        r.learn(&[
            refused("out", &v(5000), Refusal::TooLarge),
            refused("out", &v(10), Refusal::TooLarge),
        ]);
        let verdict = r.verdict("out", Some(b"k"), &v(5000), Headers::EMPTY);
        assert!(verdict.is_some_and(|w| w.contains("max.message.bytes 2000")));
        assert_eq!(r.verdict("out", Some(b"k"), &v(10), Headers::EMPTY), None);
        // Another record larger than the limit, never sent before.
        assert!(r.verdict("out", None, &v(1950), Headers::EMPTY).is_some());
        assert_eq!(r.verdict("other", None, &v(5000), Headers::EMPTY), None);
        // A companion refused a second time is a culprit after all.
        r.learn(&[refused("out", &v(10), Refusal::TooLarge)]);
        assert!(r
            .verdict("out", Some(b"k"), &v(10), Headers::EMPTY)
            .is_some());
    }

    #[test]
    fn invalid_records_are_refused_by_content_and_forbidden_topics_whole() {
        let r = Refusals::new(Arc::new(EmbeddedLog::new()));
        r.learn(&[
            refused("out", b"bad", Refusal::Invalid),
            refused("secret", b"any", Refusal::NotAuthorized),
            Refused {
                refusal: None,
                ..refused("out", b"timed out", Refusal::Invalid)
            },
        ]);
        assert_eq!(
            r.verdict("out", Some(b"k"), b"bad", Headers::EMPTY),
            Some("Invalid".into())
        );
        assert_eq!(r.verdict("out", Some(b"k2"), b"bad", Headers::EMPTY), None);
        assert_eq!(
            r.verdict("out", Some(b"k"), b"timed out", Headers::EMPTY),
            None
        );
        assert_eq!(
            r.verdict("secret", None, b"other", Headers::EMPTY),
            Some("NotAuthorized".into())
        );
    }

    #[test]
    fn a_topic_whose_limit_cannot_be_read_refuses_each_record_refused() {
        let r = Refusals::new(Arc::new(EmbeddedLog::new()));
        r.learn(&[refused("gone", b"small", Refusal::TooLarge)]);
        assert!(r
            .verdict("gone", Some(b"k"), b"small", Headers::EMPTY)
            .is_some());
        assert_eq!(
            r.verdict("gone", Some(b"k"), b"other", Headers::EMPTY),
            None
        );
    }
}
