//! What the handlers, workers, committers and the autoscaler of one app
//! share: its counters, its dead-letter topic and its board of state
//! queries. In a file of its own, below all of them, so that none of them
//! has to reach into `app` (which starts them all) for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::dead_letter;
use super::query::Board;
use super::refusals::{alone_bytes, Refusals};
use super::time::{Clock, EventTime};
use crate::error::{Error, Result};
use crate::log::{Headers, Log, OutRecord, RecordRef};
use crate::metrics::{self, Counter};
use crate::stream::Producer;
use riffle_state::{RestoreStats, Store};
use std::time::Duration;

/// Counters of a running app.
///
/// A record's sends are counted before the record itself, so a reader that
/// loads `processed` (with `Acquire`) and then `sent` sees at least every
/// send of the records it counted: it can tell when everything those records
/// caused has been sent.
#[derive(Debug, Default)]
pub struct AppStats {
    /// Records the processor finished with.
    pub processed: AtomicU64,
    /// Records the processor sent.
    pub sent: AtomicU64,
    /// Records sent to the dead-letter topic (or skipped without one).
    pub dead_letters: AtomicU64,
    /// What restoring state did.
    pub state: RestoreStats,
    /// Timers that fired.
    pub timers_fired: AtomicU64,
    /// Records too late for their partition's watermark (dead-lettered).
    pub late: AtomicU64,
    /// Keys deleted for outliving the time to live.
    pub expired: AtomicU64,
}

/// What handlers and workers of one app share.
pub(super) struct Shared {
    pub(super) dead_letter: Option<String>,
    /// State queries waiting for the consumer that owns their partition.
    pub(super) board: Arc<Board>,
    pub(super) stats: Arc<AppStats>,
    /// Extra attempts at a record the processor fails on.
    pub(super) retries: u32,
    pub(super) metrics: AppMetrics,
    /// What the log refused for good, so that it is not sent again.
    pub(super) refusals: Refusals,
    /// How event time is read.
    pub(super) event_time: EventTime,
    /// How long a key's state stays untouched before it is deleted.
    pub(super) ttl: Option<Duration>,
    /// The topic named as a fired timer's source (the first input): a
    /// timer has no record of its own.
    pub(super) timer_topic: String,
    /// Processing time.
    pub(super) clock: Clock,
    /// Set when the app is killed: handlers then stop as a killed process
    /// would, committing and handing over nothing.
    pub(super) killed: AtomicBool,
    /// Per live handler, the clock generation at the start of its latest
    /// poll after which it had nothing left to commit.
    pub(super) settled: Mutex<HashMap<u64, u64>>,
}

/// Numbers handlers for [`Shared::settled_at`].
static HANDLERS: AtomicU64 = AtomicU64::new(0);

/// A handler's place in its app's record of who settled when.
pub(super) struct Settling(u64);

impl Settling {
    pub(super) fn new() -> Self {
        Self(HANDLERS.fetch_add(1, Ordering::Relaxed))
    }
}

/// What an app counts in [`crate::metrics::global`] besides [`AppStats`].
pub(super) struct AppMetrics {
    pub(super) commits: Counter,
}

impl AppMetrics {
    pub(super) fn new(group: &str) -> Self {
        Self {
            commits: metrics::global().counter(
                "riffle_commits_total",
                "Commits of offsets (at-least-once) or transactions (exactly-once).",
                vec![("group", group.to_owned())],
            ),
        }
    }
}

/// Reports an app's [`AppStats`] at every scrape, while the app runs.
/// Registers the app's series; `log` is asked whether its servers answer.
pub(super) fn collect_stats(group: &str, shared: &Arc<Shared>, log: Arc<dyn Log>) {
    type Read = fn(&AppStats) -> &AtomicU64;
    #[rustfmt::skip]
    const COUNTERS: [(&str, &str, Read); 11] = [
        ("riffle_processed_total", "Records handed to the processor.", |s| &s.processed),
        ("riffle_processor_sent_total", "Records the processor sent.", |s| &s.sent),
        ("riffle_dead_letters_total", "Records sent to the dead-letter topic.", |s| &s.dead_letters),
        ("riffle_restores_total", "Partition states restored from snapshots and the changelog.", |s| &s.state.restores),
        ("riffle_restored_keys_total", "Keys whose state was restored.", |s| &s.state.restored_keys),
        ("riffle_changelog_replayed_total", "Changelog records read while restoring.", |s| &s.state.changelog_replayed),
        ("riffle_states_upgraded_total", "Stored states of an older version upgraded while restoring.", |s| &s.state.upgraded),
        ("riffle_states_damaged_total", "Stored states that did not decode while restoring (dead-lettered, their keys started afresh).", |s| &s.state.damaged),
        ("riffle_timers_fired_total", "Per-key timers that fired.", |s| &s.timers_fired),
        ("riffle_late_records_total", "Records older than their partition's watermark allows (dead-lettered).", |s| &s.late),
        ("riffle_states_expired_total", "Keys whose state was deleted for outliving the time to live.", |s| &s.expired),
    ];
    let labels = vec![("group", group.to_owned())];
    metrics::global().collect(shared, move |shared, s| {
        for (name, help, read) in COUNTERS {
            s.counter(
                name,
                help,
                &labels,
                read(&shared.stats).load(Ordering::Relaxed),
            );
        }
        s.gauge(
            "riffle_restoring_partitions",
            "Partition states being restored now.",
            &labels,
            shared.stats.state.restoring.load(Ordering::Relaxed) as f64,
        );
        s.gauge(
            "riffle_log_unreachable_seconds",
            "How long the log's servers (Kafka's brokers) have not answered; 0 while they do.",
            &labels,
            log.unreachable_for().unwrap_or_default().as_secs_f64(),
        );
    });
}

impl Shared {
    pub(super) fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Notes that handler `who` had nothing left to commit after a poll
    /// that started at clock generation `generation`.
    pub(super) fn settled_at(&self, who: &Settling, generation: u64) {
        let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(who.0, generation);
    }

    /// Forgets a handler that is gone.
    pub(super) fn forget_handler(&self, who: &Settling) {
        let mut s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        s.remove(&who.0);
    }

    /// Whether at least `handlers` handlers settled, all after `generation`.
    pub(super) fn settled_since(&self, generation: u64, handlers: usize) -> bool {
        let s = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        s.len() >= handlers && s.values().all(|&g| g >= generation)
    }

    pub(super) fn processed(&self, sent: u64) {
        if sent > 0 {
            self.stats.sent.fetch_add(sent, Ordering::Relaxed);
        }
        self.stats.processed.fetch_add(1, Ordering::Release);
    }

    pub(super) fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    pub(super) fn count_dead_letter(&self) {
        self.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends a failed record to the dead-letter topic through `producer`;
    /// without one, returns the error so the consumer reports and skips it.
    pub(super) fn dead_letter(
        &self,
        producer: &Producer,
        record: &RecordRef<'_>,
        error: &Error,
    ) -> Result<()> {
        self.count_dead_letter();
        let Some(topic) = &self.dead_letter else {
            return Err(error.clone());
        };
        let error = error.to_string();
        let position = Some((record.partition, record.offset));
        let max = room(producer, record.key, record.headers);
        let envelope = dead_letter::envelope_at(
            record.topic,
            position,
            record.key,
            record.value,
            &error,
            max,
        );
        self.send_letter(producer, topic, record, &envelope, &error)
    }

    /// Like [`Shared::dead_letter`], for a record whose bytes are no longer
    /// at hand (only its coordinates and key).
    pub(super) fn dead_letter_without_value(
        &self,
        producer: &Producer,
        record: &RecordRef<'_>,
        error: &Error,
    ) -> Result<()> {
        self.count_dead_letter();
        let Some(topic) = &self.dead_letter else {
            return Err(error.clone());
        };
        let error = error.to_string();
        let envelope = dead_letter::envelope_without_value(record, &error);
        self.send_letter(producer, topic, record, &envelope, &error)
    }

    /// Sends `envelope` for `record` to the dead-letter topic `topic`,
    /// unless the log is known to refuse it there too.
    fn send_letter(
        &self,
        producer: &Producer,
        topic: &str,
        record: &RecordRef<'_>,
        envelope: &[u8],
        error: &str,
    ) -> Result<()> {
        if let Some(why) = self
            .refusals
            .verdict(topic, record.key, envelope, record.headers)
        {
            tracing::error!(
                "{}/{}@{}: {error}; and not to the dead-letter topic: {why}",
                record.topic,
                record.partition,
                record.offset
            );
            return Ok(());
        }
        dead_letter::send_envelope(producer, topic, record, envelope, error)
    }

    /// Sends the stored states of `store` that did not decode (read from
    /// `changelog`, or a snapshot of it) to the dead-letter topic, and
    /// starts their keys afresh: the fresh state is written to the
    /// changelog with the next changes, so that the next restore does not
    /// meet the damaged one again.
    /// [`Shared::dead_letter_damaged`] for states found damaged after the
    /// restore, as their keys were first used (a snapshot's states are
    /// decoded then): counted here, as a restore counts its own.
    pub(super) fn dead_letter_found_damaged<S>(
        &self,
        producer: &Producer,
        changelog: &str,
        store: &mut Store<S>,
    ) where
        S: Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        let found = store.damaged().len() as u64;
        self.stats.state.damaged.fetch_add(found, Ordering::Relaxed);
        self.dead_letter_damaged(producer, changelog, store);
    }

    pub(super) fn dead_letter_damaged<S>(
        &self,
        producer: &Producer,
        changelog: &str,
        store: &mut Store<S>,
    ) where
        S: Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        for d in store.take_damaged() {
            self.count_dead_letter();
            let error = format!(
                "stored state does not decode: {}; the key starts afresh",
                d.reason
            );
            if let Some(dlq) = &self.dead_letter {
                let key = Some(&d.key[..]);
                let max = room(producer, key, Headers::EMPTY);
                let envelope =
                    dead_letter::envelope_at(changelog, d.position, key, &d.value, &error, max);
                let headers = dead_letter::headers(Headers::EMPTY, changelog, d.position, &error);
                let letter = OutRecord::new(dlq, key, &envelope).with_headers(&headers);
                let refused = self
                    .refusals
                    .verdict(dlq, key, &envelope, Headers::from(&headers));
                let sent = match refused {
                    Some(why) => Err(Error::Refused {
                        server: dlq.clone(),
                        message: why,
                    }),
                    None => producer.send_record(letter),
                };
                if let Err(e) = sent {
                    tracing::error!("{changelog}: {error}; and not to the dead-letter topic: {e}");
                }
            }
            if let Ok(key) = std::str::from_utf8(&d.key) {
                store.start_afresh(key);
            }
        }
    }

    /// Sends an output the log refuses for good (`why`) to the dead-letter
    /// topic instead, with the reason; without one, it is logged and
    /// dropped, as the log would have.
    pub(super) fn dead_letter_output(
        &self,
        producer: &Producer,
        output: OutRecord<'_>,
        why: &str,
    ) -> Result<()> {
        self.count_dead_letter();
        let error = format!("cannot deliver to {}: {why}", output.topic);
        let dlq = match self.dead_letter_topic() {
            Some(dlq) if dlq != output.topic => dlq,
            _ => {
                tracing::error!("{error}; no dead-letter topic keeps it");
                return Ok(());
            }
        };
        let max = room(producer, output.key, output.headers);
        let envelope = dead_letter::envelope_at(
            output.topic,
            None,
            output.key,
            output.value_bytes(),
            &error,
            max,
        );
        let headers = dead_letter::headers(output.headers, output.topic, None, &error);
        let letter = OutRecord::new(dlq, output.key, &envelope).with_headers(&headers);
        if let Some(refused) =
            self.refusals
                .verdict(dlq, output.key, &envelope, Headers::from(&headers))
        {
            tracing::error!("{error}; and not to the dead-letter topic: {refused}");
            return Ok(());
        }
        tracing::warn!("{error}; sent to {dlq}");
        producer.send_record(letter)
    }
}

/// The most bytes a dead letter's value may take for `producer` to send it
/// with this key and headers (plus the error headers, a few hundred bytes).
fn room(producer: &Producer, key: Option<&[u8]>, headers: Headers<'_>) -> usize {
    const ERROR_HEADERS: usize = 1024;
    producer.max_record_bytes().map_or(usize::MAX, |max| {
        max.saturating_sub(alone_bytes(key, &[], headers) + ERROR_HEADERS)
    })
}
