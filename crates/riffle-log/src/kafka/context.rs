//! librdkafka callbacks: its log lines go to `tracing`, group changes are
//! queued for the consumer's poll to hand out in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::reach::Reach;
use crate::error::{Error, Result};
use crate::{GroupEvent, GroupToken, PollVisitor, Progress, TopicPartition};

/// The first authentication or TLS failure that any client of one
/// `KafkaLog` met.
///
/// librdkafka reports a refused password or an untrusted certificate only
/// through the error callback, then retries the connection for ever: the
/// request that was waiting merely times out. Keeping the callback's cause
/// here lets a failed request name it (see `KafkaLog::explain`) instead of
/// a generic timeout. Only the first one is kept: librdkafka repeats the
/// same error at every retry, and a failure is explained by its first cause.
///
/// Lost connections go the same way, to the log's [`Reach`] watch.
#[derive(Default)]
pub(crate) struct Faults {
    first: Mutex<Option<Error>>,
    pub(crate) reach: Arc<Reach>,
    /// The bootstrap servers, for messages.
    brokers: String,
}

impl Faults {
    pub(crate) fn new(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            ..Self::default()
        }
    }

    /// Keeps `error` if it is the first security failure; has the brokers
    /// watched if a client lost them all.
    pub(crate) fn note(&self, error: &KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        if error.rdkafka_error_code() == Some(C::AllBrokersDown) {
            self.reach.suspect(&self.brokers, reason);
        }
        let Some(fault) = classify(error, reason) else {
            return;
        };
        let mut slot = self.first.lock().unwrap();
        if slot.is_none() {
            *slot = Some(fault);
        }
    }

    pub(crate) fn get(&self) -> Option<Error> {
        self.first.lock().unwrap().clone()
    }
}

/// An authentication or TLS failure as its typed error, from the error
/// callback's code and text (`sasl_ssl://host:port/bootstrap: SASL
/// authentication error: ... (after 3ms in state AUTH_REQ)`); `None` for
/// other errors, which stay the business of the request that meets them.
fn classify(error: &KafkaError, reason: &str) -> Option<Error> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = error.rdkafka_error_code()?;
    let tls_words = ["SSL handshake failed", "SSL transport error", "certificate"];
    let tls = code == C::SSL
        || (matches!(code, C::BrokerTransportFailure | C::AllBrokersDown)
            && tls_words.iter().any(|w| reason.contains(w)));
    let auth = matches!(
        code,
        C::Authentication | C::SaslAuthenticationFailed | C::ClusterAuthorizationFailed
    ) || (code == C::BrokerTransportFailure && reason.contains("SASL authentication"));
    if !tls && !auth {
        return None;
    }
    // "proto://host:port/name: text": the address, then the text.
    let (broker, detail) = match reason.split_once("://") {
        Some((_, rest)) => match rest.split_once('/') {
            Some((addr, tail)) => (
                addr.to_owned(),
                tail.split_once(": ").map_or(tail, |(_, d)| d),
            ),
            None => (String::new(), reason),
        },
        None => (String::new(), reason),
    };
    // librdkafka's timing note says nothing to the user.
    let mut detail = detail
        .split(" (after ")
        .next()
        .unwrap_or(detail)
        .trim()
        .to_owned();
    // The broker's alert is all the client learns when its certificate is
    // missing or not trusted: say what it means.
    if [
        "alert bad certificate",
        "alert certificate required",
        "alert unknown ca",
    ]
    .iter()
    .any(|a| detail.contains(a))
    {
        detail.push_str(
            " (the broker refused the client certificate, or none was given: \
             check ssl.certificate.location and ssl.key.location)",
        );
    }
    Some(if auth {
        Error::Authentication { broker, detail }
    } else {
        Error::Tls { broker, detail }
    })
}

/// Routes librdkafka's own log lines and errors to `tracing`, tagged with the
/// client's role, and keeps security failures in the log's [`Faults`].
pub(crate) struct LoggingContext {
    role: &'static str,
    faults: Arc<Faults>,
}

impl LoggingContext {
    pub(crate) fn new(role: &'static str, faults: Arc<Faults>) -> Self {
        Self { role, faults }
    }
}

pub(crate) fn log_line(role: &str, level: RDKafkaLogLevel, fac: &str, msg: &str) {
    use RDKafkaLogLevel::*;
    // A lost or refused connection, which librdkafka retries by itself and
    // repeats per client and retry: an outage of every broker is reported
    // once by the log's watch (`Reach`), a security failure by `Faults`.
    let level = match (level, fac) {
        (Emerg | Alert | Critical | Error, "FAIL") => Warning,
        _ => level,
    };
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: "librdkafka", "{role} {fac}: {msg}")
        }
        Warning => tracing::warn!(target: "librdkafka", "{role} {fac}: {msg}"),
        Notice | Info => tracing::info!(target: "librdkafka", "{role} {fac}: {msg}"),
        Debug => tracing::debug!(target: "librdkafka", "{role} {fac}: {msg}"),
    }
}

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(self.role, level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.faults.note(&error, reason);
        tracing::warn!(target: "librdkafka", "{} error: {error}: {reason}", self.role);
    }
}

/// A group-less consumer needs no callbacks beyond logging.
impl ConsumerContext for LoggingContext {}

/// A consumer's context: logs, and a queue of assignment changes.
pub(crate) struct GroupContext {
    pub(crate) client_id: String,
    pub(crate) group_id: String,
    /// The static member name (`group.instance.id`), if any.
    pub(crate) instance: Option<String>,
    pub(crate) events: Mutex<Vec<GroupEvent>>,
    /// Offsets marked processed and not yet handed to librdkafka, as
    /// `(topic, partition, next offset)`. Kept here so that a revocation
    /// that happens inside a poll can store them before librdkafka commits.
    pub(crate) pending: Mutex<Vec<(String, i32, i64)>>,
    /// The visitor of the poll in progress, so that a revocation inside it
    /// can let the visitor finish its work first (see `KafkaConsumer::poll`).
    pub(crate) visitor: Mutex<Option<VisitorPtr>>,
    /// Start partitions without a committed offset at their end as of the
    /// assignment (see `start_at_end`).
    pub(crate) from_end: bool,
    pub(crate) faults: Arc<Faults>,
}

/// A pointer to the visitor of the poll in progress.
///
/// librdkafka runs rebalance callbacks on the thread calling poll, inside
/// that call, so the visitor lent to `KafkaConsumer::poll` is alive and not
/// otherwise in use whenever the callback dereferences this.
pub(crate) struct VisitorPtr(pub(crate) *mut (dyn PollVisitor + 'static));

// SAFETY: only dereferenced on the polling thread, during the poll that set
// it (see above); the Mutex only satisfies the context's Send + Sync bound.
unsafe impl Send for VisitorPtr {}

impl GroupContext {
    pub(crate) fn new(
        client_id: String,
        group_id: String,
        instance: Option<String>,
        from_end: bool,
        faults: Arc<Faults>,
    ) -> Self {
        Self {
            faults,
            client_id,
            group_id,
            instance,
            events: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            visitor: Mutex::new(None),
            from_end,
        }
    }

    /// Gives each newly assigned partition that has no committed offset its
    /// end offset now, in the assignment itself.
    ///
    /// Left to `auto.offset.reset=latest`, librdkafka looks the end up only
    /// when it starts fetching, some time after the assignment is visible:
    /// records written in between are skipped, although the caller already
    /// saw the partition as its own. On failure the lookup is left to
    /// librdkafka, as before.
    fn start_at_end(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        const LOOKUP: Duration = Duration::from_secs(5);
        let committed = match consumer.committed_offsets(tpl.clone(), LOOKUP) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "{}: committed offsets for the assignment: {e}",
                    self.client_id
                );
                return;
            }
        };
        for mut elem in tpl.elements() {
            let (topic, partition) = (elem.topic().to_owned(), elem.partition());
            let has_committed = committed
                .find_partition(&topic, partition)
                .is_some_and(|c| matches!(c.offset(), Offset::Offset(_)));
            if has_committed || !matches!(elem.offset(), Offset::Invalid) {
                continue;
            }
            match consumer.fetch_watermarks(&topic, partition, LOOKUP) {
                Ok((_, end)) => {
                    let _ = elem.set_offset(Offset::Offset(end));
                }
                Err(e) => {
                    tracing::warn!("{}: end offset of {topic}/{partition}: {e}", self.client_id)
                }
            }
        }
    }

    /// Hands pending offsets to librdkafka's offset store.
    pub(crate) fn store_pending(&self, consumer: &BaseConsumer<Self>) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        if pending.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::with_capacity(pending.len());
        for (topic, partition, next) in &pending {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // Happens for partitions revoked meanwhile: their records will
            // be processed again by the next owner.
            tracing::debug!("{}: storing offsets: {e}", self.client_id);
        }
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(&self.client_id, level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.faults.note(&error, reason);
        tracing::warn!(target: "librdkafka", "{} error: {error}: {reason}", self.client_id);
    }
}

pub(crate) fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    let mut v: Vec<_> = tpl
        .elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect();
    v.sort();
    v
}

/// Records `next_offset` as processed; the highest mark per partition wins.
pub(super) fn mark(ctx: &GroupContext, topic: &str, partition: i32, next_offset: i64) {
    let mut pending = ctx.pending.lock().unwrap();
    match pending
        .iter_mut()
        .find(|(t, p, _)| *p == partition && t == topic)
    {
        Some(entry) => entry.2 = entry.2.max(next_offset),
        None => pending.push((topic.to_owned(), partition, next_offset)),
    }
}

/// The consumer's group metadata (group id, generation, member id).
pub(super) fn group_token(consumer: &BaseConsumer<GroupContext>) -> Result<GroupToken> {
    consumer
        .group_metadata()
        .map(|m| GroupToken(std::sync::Arc::new(m)))
        .ok_or_else(|| Error::Kafka {
            code: None,
            message: "the consumer is not in a group".into(),
        })
}

/// Progress reported from inside a revocation.
struct Revoking<'a> {
    ctx: &'a GroupContext,
    consumer: &'a BaseConsumer<GroupContext>,
}

impl Progress for Revoking<'_> {
    fn store(&mut self, topic: &str, partition: i32, next: i64) {
        mark(self.ctx, topic, partition, next)
    }

    fn group(&self) -> Result<GroupToken> {
        group_token(self.consumer)
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(tpl), true) = (rebalance, self.from_end) {
            self.start_at_end(consumer, tpl);
        }
        // librdkafka commits stored offsets of revoked partitions itself
        // (auto commit is on, auto offset store off), so the next owner
        // continues where this one stopped.
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            if let Some(ptr) = self.visitor.lock().unwrap().as_ref() {
                // SAFETY: see `VisitorPtr`.
                let visitor = unsafe { &mut *ptr.0 };
                visitor.revoking(
                    &revoked,
                    &mut Revoking {
                        ctx: self,
                        consumer,
                    },
                );
            }
            self.store_pending(consumer);
            self.events
                .lock()
                .unwrap()
                .push(GroupEvent::Revoked(partitions(tpl)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self
                .events
                .lock()
                .unwrap()
                .push(GroupEvent::Assigned(partitions(tpl))),
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("{}: rebalance failed: {e}", self.client_id),
        }
    }
}

/// Serves the log lines and errors waiting on an admin client's main queue.
///
/// rust-rdkafka's admin client polls only its own result queue, so
/// librdkafka's error events (a refused password, a failed TLS handshake)
/// would wait there unread, growing with every retry, and never reach
/// [`Faults`]. Served here whenever a request's failure needs explaining.
pub(crate) fn serve_admin_events(client: &rdkafka::client::Client<LoggingContext>) {
    use rdkafka::bindings as rd;
    use std::ffi::CStr;
    let ctx = client.context();
    // SAFETY: the queue handle is taken from a live client and destroyed
    // (released) before returning; each event is destroyed after use and
    // its strings are copied before that.
    unsafe {
        let queue = rd::rd_kafka_queue_get_main(client.native_ptr());
        if queue.is_null() {
            return;
        }
        loop {
            let event = rd::rd_kafka_queue_poll(queue, 0);
            if event.is_null() {
                break;
            }
            match rd::rd_kafka_event_type(event) {
                rd::RD_KAFKA_EVENT_ERROR => {
                    let code = rd::rd_kafka_event_error(event);
                    let text = rd::rd_kafka_event_error_string(event);
                    let reason = if text.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(text).to_string_lossy().trim().to_owned()
                    };
                    ctx.error(KafkaError::Global(code.into()), &reason);
                }
                rd::RD_KAFKA_EVENT_LOG => {
                    let (mut fac, mut text, mut level) = (std::ptr::null(), std::ptr::null(), 0);
                    if rd::rd_kafka_event_log(event, &mut fac, &mut text, &mut level) == 0 {
                        let fac = CStr::from_ptr(fac).to_string_lossy();
                        let text = CStr::from_ptr(text).to_string_lossy();
                        // Capped at warn: an admin request that fails
                        // reports its cause itself, in one line, while
                        // librdkafka repeats its FAIL lines at each retry.
                        ctx.log(syslog_level(level.max(4)), fac.trim(), text.trim());
                    }
                }
                _ => {}
            }
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
    }
}

/// librdkafka's syslog-style level as rust-rdkafka's enum.
fn syslog_level(level: i32) -> RDKafkaLogLevel {
    use RDKafkaLogLevel::*;
    match level {
        i32::MIN..=0 => Emerg,
        1 => Alert,
        2 => Critical,
        3 => Error,
        4 => Warning,
        5 => Notice,
        6 => Info,
        _ => Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as C;

    fn global(code: C) -> KafkaError {
        KafkaError::Global(code)
    }

    #[test]
    fn a_refused_password_is_an_authentication_error_naming_the_broker() {
        let reason = "sasl_ssl://127.0.0.1:19094/bootstrap: SASL authentication error: \
                      Authentication failed during authentication due to invalid credentials \
                      with SASL mechanism SCRAM-SHA-512 (after 312ms in state AUTH_REQ)";
        assert_eq!(
            classify(&global(C::Authentication), reason),
            Some(Error::Authentication {
                broker: "127.0.0.1:19094".into(),
                detail: "SASL authentication error: Authentication failed during authentication \
                         due to invalid credentials with SASL mechanism SCRAM-SHA-512"
                    .into()
            })
        );
    }

    #[test]
    fn an_untrusted_server_and_a_refused_client_certificate_are_tls_errors() {
        let reason = "ssl://127.0.0.1:19095/1: SSL handshake failed: error:0A000086:SSL \
                      routines::certificate verify failed (after 4ms in state SSL_HANDSHAKE, \
                      1 identical error(s) suppressed)";
        let Some(Error::Tls { broker, detail }) = classify(&global(C::SSL), reason) else {
            panic!("not a TLS error");
        };
        assert_eq!(broker, "127.0.0.1:19095");
        assert_eq!(
            detail,
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"
        );
        let reason = "ssl://127.0.0.1:19095/bootstrap: Receive failed: error:0A000412:SSL \
                      routines::sslv3 alert bad certificate: SSL alert number 42 (after 0ms \
                      in state APIVERSION_QUERY)";
        let Some(Error::Tls { detail, .. }) = classify(&global(C::BrokerTransportFailure), reason)
        else {
            panic!("not a TLS error");
        };
        assert!(
            detail.contains("refused the client certificate"),
            "{detail}"
        );
    }

    #[test]
    fn other_errors_are_left_to_the_request() {
        let reason = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: \
                      Connection refused (after 0ms in state CONNECT)";
        assert_eq!(classify(&global(C::BrokerTransportFailure), reason), None);
        assert_eq!(
            classify(&global(C::AllBrokersDown), "1/1 brokers are down"),
            None
        );
        let faults = Faults::default();
        faults.note(&global(C::BrokerTransportFailure), reason);
        assert_eq!(faults.get(), None);
        faults.note(&global(C::Authentication), "sasl_ssl://h:1/b: first");
        faults.note(&global(C::Authentication), "sasl_ssl://h:1/b: second");
        assert_eq!(
            faults.get(),
            Some(Error::Authentication {
                broker: "h:1".into(),
                detail: "first".into()
            })
        );
    }
}
