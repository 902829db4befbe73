//! Whether the brokers answer: an outage reported once when it begins and
//! once when it ends.
//!
//! librdkafka retries lost connections by itself, for ever, and says so in a
//! log line per client and retry; when every connection of a client is down
//! it raises "all brokers down", and when they come back it says nothing.
//! That event alone also fires for harmless reasons (a producer idle for ten
//! minutes, whose connection the broker closed), so it only makes this
//! watch ask the cluster for its metadata, every second, from a thread of
//! its own that lives as long as the question is open: a first failed
//! answer reports the outage, the first answer after it reports its end and
//! its length. While the outage lasts, [`Reach::unreachable_for`] says for
//! how long, for status lines and the `riffle_kafka_unreachable_seconds`
//! gauge.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Asks the cluster whether it answers within the given time.
pub(crate) type Probe = Box<dyn Fn(Duration) -> bool + Send + Sync>;

/// How long a probe waits for an answer, and the pause between probes.
const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Reach {
    /// Set by the log once its admin client can be asked.
    probe: OnceLock<Probe>,
    /// A watch thread is running.
    watching: AtomicBool,
    /// Since when the brokers do not answer, as first confirmed; `None`
    /// while they do.
    down: Mutex<Option<Instant>>,
}

impl Reach {
    pub(crate) fn set_probe(&self, probe: Probe) {
        let _ = self.probe.set(probe);
    }

    /// A client lost every broker connection (`reason` is librdkafka's
    /// text): starts the watch unless one runs.
    pub(crate) fn suspect(self: &Arc<Self>, brokers: &str, reason: &str) {
        if self.probe.get().is_none() || self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let (reach, brokers, reason) = (self.clone(), brokers.to_owned(), reason.to_owned());
        let spawned = std::thread::Builder::new()
            .name("riffle kafka watch".into())
            .spawn(move || reach.watch(&brokers, &reason));
        if spawned.is_err() {
            self.watching.store(false, Ordering::Release);
        }
    }

    fn watch(&self, brokers: &str, reason: &str) {
        let probe = self.probe.get().expect("checked by suspect");
        loop {
            let asked = Instant::now();
            if probe(PROBE_EVERY) {
                if let Some(since) = self.down.lock().unwrap().take() {
                    tracing::warn!(
                        "Kafka at {brokers} answers again, after {:.1} s unreachable",
                        since.elapsed().as_secs_f64()
                    );
                }
                break;
            }
            let mut down = self.down.lock().unwrap();
            if down.is_none() {
                // librdkafka's "N/M brokers are down" counts connections at
                // the moment it was raised, which says nothing here.
                let reason = reason.trim().trim_end_matches('.');
                let why = if reason.is_empty() || reason.contains("brokers are down") {
                    String::new()
                } else {
                    format!(" ({reason})")
                };
                tracing::error!(
                    "Kafka at {brokers} does not answer{why}; every client keeps retrying, \
                     and processing resumes by itself when a broker answers"
                );
                *down = Some(asked);
            }
            drop(down);
            std::thread::sleep(PROBE_EVERY.saturating_sub(asked.elapsed()));
        }
        self.watching.store(false, Ordering::Release);
    }

    /// How long the brokers have been unreachable, if they are.
    pub(crate) fn unreachable_for(&self) -> Option<Duration> {
        self.down.lock().unwrap().map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn wait_until(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn an_outage_is_timed_from_a_failed_probe_to_the_first_answer() {
        let reach = Arc::new(Reach::default());
        let up = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicUsize::new(0));
        let (u, p) = (up.clone(), probes.clone());
        reach.set_probe(Box::new(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
            u.load(Ordering::SeqCst)
        }));
        reach.suspect("b:9092", "1/1 brokers are down");
        assert!(wait_until(|| reach.unreachable_for().is_some()));
        // A second report while the watch runs starts no second watch.
        reach.suspect("b:9092", "1/1 brokers are down");
        up.store(true, Ordering::SeqCst);
        assert!(wait_until(|| reach.unreachable_for().is_none()));
        assert!(wait_until(|| !reach.watching.load(Ordering::SeqCst)));
        assert!(probes.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn a_suspicion_the_first_probe_refutes_reports_nothing() {
        let reach = Arc::new(Reach::default());
        reach.set_probe(Box::new(|_| true));
        reach.suspect("b:9092", "1/1 brokers are down");
        assert!(wait_until(|| !reach.watching.load(Ordering::SeqCst)));
        assert_eq!(reach.unreachable_for(), None);
    }
}
