//! A consumer's own producer, and the outputs the log refused it.
//!
//! Each consumer of an app sends through a producer of its own, so that
//! waiting for its outputs to be acknowledged never waits for another
//! consumer's: under load, a shared producer is never idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::dead_letter;
use super::refusals::Refused;
use super::shared::Shared;
use crate::error::Result;
use crate::log::{DeliveryReport, Headers, Log, OutRecord};
use crate::stream::Producer;

/// State changes go out through the consumer's producer, with its outputs:
/// in its transaction under exactly-once, acknowledged before the offsets
/// under at-least-once.
impl riffle_state::ChangelogSink for Producer {
    fn send(&self, record: OutRecord<'_>) -> Result<()> {
        self.send_record(record)
    }
}

pub(super) struct Outlet {
    pub(super) producer: Producer,
    refused: Arc<Mutex<Vec<Refused>>>,
    /// Set by the first failed delivery: under exactly-once, the open
    /// transaction can no longer commit (librdkafka refuses further sends
    /// in it), so processing stops until it is aborted.
    spoiled: Arc<AtomicBool>,
}

impl Outlet {
    pub(super) fn plain(log: &dyn Log) -> Result<Self> {
        let (refused, spoiled) = Default::default();
        let producer = Producer::with_reports(log, keep_refused(&refused, &spoiled))?;
        Ok(Self {
            producer,
            refused,
            spoiled,
        })
    }

    /// A transactional producer named `id` (see [`Producer::transactional`]).
    pub(super) fn transactional(log: &dyn Log, id: &str) -> Result<Self> {
        let (refused, spoiled) = Default::default();
        let producer = Producer::transactional(log, id, keep_refused(&refused, &spoiled))?;
        Ok(Self {
            producer,
            refused,
            spoiled,
        })
    }

    /// Whether a delivery failed since this outlet was made.
    pub(super) fn spoiled(&self) -> bool {
        self.spoiled.load(Ordering::Acquire)
    }

    /// Teaches the app what the log refused for good (see
    /// [`super::refusals`]); called once an aborted transaction's delivery
    /// reports are all in.
    pub(super) fn learn_refused(&self, shared: &Shared) {
        let refused = std::mem::take(&mut *self.refused.lock().unwrap());
        shared.refusals.learn(&refused);
    }

    /// Handles the outputs the log refused since the last call: each is
    /// sent once more, alone (a broker refuses a whole batch for one bad
    /// record in it, so its companions deserve another try), and to the
    /// dead-letter topic when refused again. Returns how many records were
    /// sent. Refusals are rare, so waiting for each retry costs little.
    pub(super) fn dead_letter_refused(&self, shared: &Shared) -> usize {
        let refused = std::mem::take(&mut *self.refused.lock().unwrap());
        let mut sent = 0;
        for r in refused {
            let again = self
                .producer
                .send_record(
                    OutRecord::new(&r.topic, r.key.as_deref(), &r.value).with_headers(&r.headers),
                )
                .and_then(|()| self.producer.flush(Producer::CLOSE_TIMEOUT));
            if again.is_ok() && !self.take(&r) {
                sent += 1;
                continue;
            }
            let error = format!("cannot deliver to {}: {}", r.topic, r.error);
            let envelope =
                dead_letter::envelope_for_output(&r.topic, r.key.as_deref(), &r.value, &error);
            match shared.dead_letter_topic() {
                Some(dlq) if dlq != r.topic => {
                    shared.count_dead_letter();
                    let headers =
                        dead_letter::headers(Headers::from(&r.headers), &r.topic, None, &error);
                    let letter =
                        OutRecord::new(dlq, r.key.as_deref(), &envelope).with_headers(&headers);
                    match self.producer.send_record(letter) {
                        Ok(()) => sent += 1,
                        Err(e) => tracing::error!("{error}; and not to the dead-letter topic: {e}"),
                    }
                }
                _ => tracing::error!("{error}; no dead-letter topic keeps it"),
            }
        }
        sent
    }

    /// Takes `r` out of the refused list, if it was refused again.
    fn take(&self, r: &Refused) -> bool {
        let mut refused = self.refused.lock().unwrap();
        let found = refused
            .iter()
            .position(|x| (&x.topic, &x.key, &x.value) == (&r.topic, &r.key, &r.value));
        found.map(|i| refused.remove(i)).is_some()
    }
}

/// A delivery callback that keeps what the log refused.
fn keep_refused(
    list: &Arc<Mutex<Vec<Refused>>>,
    spoiled: &Arc<AtomicBool>,
) -> impl Fn(&DeliveryReport) + Send + Sync + 'static {
    let (list, spoiled) = (list.clone(), spoiled.clone());
    move |r: &DeliveryReport| {
        if let (Err(error), Some(u)) = (&r.result, &r.undelivered) {
            spoiled.store(true, Ordering::Release);
            list.lock().unwrap().push(Refused {
                topic: r.topic.clone(),
                key: u.key.clone(),
                value: u.value.clone(),
                headers: u.headers.clone(),
                error: error.clone(),
                refusal: u.refusal,
            });
        }
    }
}
