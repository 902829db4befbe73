//! Time in an app: the processing-time clock, and event time (each
//! partition's watermark, records arriving too late for it).
//!
//! A record's event time is what [`KeyedProcessor::event_time`] says (its
//! Kafka timestamp unless the processor reads one from the record). Each
//! partition has a watermark: the latest event time seen there, less the
//! out-of-orderness the app allows. It says "records older than this are
//! not expected any more": event-time timers due at or before it fire
//! (before the record that moved it is processed, so that a replay fires
//! them at the same place), and with an allowed lateness, records older
//! than the watermark by more than that go to the dead-letter topic with
//! the reason instead of being processed.
//!
//! A watermark moves only when records arrive, so a partition that falls
//! quiet would keep its event-time timers (and windows built on them) from
//! ever firing. After the idle timeout, a quiet partition's watermark
//! follows the wall clock instead, from where it stood: what was waiting
//! for time to pass sees it pass. Each partition has its own watermark,
//! and keys live in one partition, so a quiet partition holds back nothing
//! of the others.
//!
//! [`KeyedProcessor::event_time`]: super::KeyedProcessor::event_time

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The wall clock: milliseconds since the Unix epoch.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An app's processing-time clock: the wall clock, or one that stands
/// still until it is moved (for tests, see [`crate::testing`], and for
/// replaying a day in a minute). Cheap to clone; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct Clock(Option<Arc<Manual>>);

#[derive(Debug)]
struct Manual {
    now: AtomicI64,
    /// Counts moves and touches: what has happened since a given one.
    generation: AtomicU64,
}

impl Clock {
    /// The wall clock (the default).
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock at `start_ms` (milliseconds since the Unix epoch) that
    /// moves only when told to.
    pub fn manual(start_ms: i64) -> Self {
        Self(Some(Arc::new(Manual {
            now: AtomicI64::new(start_ms),
            generation: AtomicU64::new(0),
        })))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            None => now_ms(),
            Some(m) => m.now.load(Ordering::Acquire),
        }
    }

    /// Moves a manual clock on by `by`; the wall clock moves by itself and
    /// ignores this.
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.0 {
            m.now.fetch_add(by.as_millis() as i64, Ordering::AcqRel);
            m.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks a point in time that an app's consumers report having
    /// settled after (see [`Clock::generation`]); returns it.
    pub fn touch(&self) -> u64 {
        match &self.0 {
            None => 0,
            Some(m) => m.generation.fetch_add(1, Ordering::AcqRel) + 1,
        }
    }

    /// How many moves and touches the clock has seen.
    pub fn generation(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |m| m.generation.load(Ordering::Acquire))
    }
}

/// How an app reads event time; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime {
    /// How far out of order records may arrive: the watermark trails the
    /// latest event time seen by this much. Default 0.
    pub out_of_orderness: Duration,
    /// After this long without records, a partition's watermark follows
    /// the wall clock. Default 30 s; `None`: never. Choose it above the
    /// longest pause a partition's input may take: records that arrive
    /// after their partition moved on this way may be late.
    pub idle_timeout: Option<Duration>,
    /// Records older than the watermark by more than this are late: they
    /// go to the dead-letter topic, not to the processor. `None` (the
    /// default): every record is processed, however old.
    pub allowed_lateness: Option<Duration>,
}

impl Default for EventTime {
    fn default() -> Self {
        Self {
            out_of_orderness: Duration::ZERO,
            idle_timeout: Some(Duration::from_secs(30)),
            allowed_lateness: None,
        }
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// One partition's watermark.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Watermark {
    /// The latest event time seen, less the out-of-orderness; moved on by
    /// the wall clock while the partition is idle.
    mark: Option<i64>,
    /// When the last record arrived (processing time).
    arrived: i64,
    /// Where the watermark stood when the partition fell idle.
    idle_from: Option<i64>,
}

impl Watermark {
    pub(super) fn current(&self) -> Option<i64> {
        self.mark
    }

    /// Why a record of event time `at` is too late to process, if it is.
    pub(super) fn late(&self, at: Option<i64>, cfg: &EventTime) -> Option<String> {
        let (at, mark, lateness) = (at?, self.mark?, cfg.allowed_lateness?);
        (at < mark.saturating_sub(ms(lateness))).then(|| {
            format!(
                "late: event time {at} is {} ms behind the partition's watermark {mark}, more than the {} ms allowed",
                mark - at,
                ms(lateness)
            )
        })
    }

    /// A record of event time `at` arrived at `now`: the watermark moves
    /// on if it is newer. Returns the watermark.
    pub(super) fn observe(&mut self, at: Option<i64>, now: i64, cfg: &EventTime) -> Option<i64> {
        self.arrived = now;
        self.idle_from = None;
        if let Some(at) = at {
            let mark = at.saturating_sub(ms(cfg.out_of_orderness));
            self.mark = Some(self.mark.map_or(mark, |m| m.max(mark)));
        }
        self.mark
    }

    /// At `now`, with no record since the last: once idle for the timeout,
    /// the watermark follows the wall clock. Returns it when it moved.
    pub(super) fn tick(&mut self, now: i64, cfg: &EventTime) -> Option<i64> {
        let idle = ms(cfg.idle_timeout?);
        let mark = self.mark?;
        if now - self.arrived < idle {
            return None;
        }
        let from = *self.idle_from.get_or_insert(mark);
        let moved = from.saturating_add(now - self.arrived - idle);
        (moved > mark).then(|| {
            self.mark = Some(moved);
            moved
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_trails_the_latest_event_time_and_late_records_are_named() {
        let cfg = EventTime {
            out_of_orderness: Duration::from_millis(100),
            idle_timeout: None,
            allowed_lateness: Some(Duration::from_millis(50)),
        };
        let mut w = Watermark::default();
        assert_eq!(w.late(Some(0), &cfg), None, "no watermark yet");
        assert_eq!(w.observe(Some(1000), 1, &cfg), Some(900));
        assert_eq!(w.observe(Some(950), 2, &cfg), Some(900), "never backwards");
        assert_eq!(w.observe(None, 3, &cfg), Some(900));
        assert_eq!(w.late(Some(850), &cfg), None, "within the lateness");
        let why = w.late(Some(849), &cfg).unwrap();
        assert!(why.contains("51 ms behind"), "{why}");
        let lenient = EventTime {
            allowed_lateness: None,
            ..cfg
        };
        assert_eq!(w.late(Some(0), &lenient), None);
    }

    #[test]
    fn an_idle_partition_follows_the_wall_clock_after_the_timeout() {
        let cfg = EventTime {
            idle_timeout: Some(Duration::from_secs(10)),
            ..EventTime::default()
        };
        let mut w = Watermark::default();
        assert_eq!(w.tick(50_000, &cfg), None, "nothing to move yet");
        w.observe(Some(5_000), 1_000, &cfg);
        assert_eq!(w.tick(10_999, &cfg), None, "not idle long enough");
        assert_eq!(w.tick(11_000, &cfg), None, "idle from here");
        assert_eq!(w.tick(14_000, &cfg), Some(8_000));
        assert_eq!(w.tick(14_000, &cfg), None, "no move, no report");
        // A record again: back to event time, never backwards.
        assert_eq!(w.observe(Some(6_000), 15_000, &cfg), Some(8_000));
        assert_eq!(w.observe(Some(9_000), 15_001, &cfg), Some(9_000));
        let never = EventTime {
            idle_timeout: None,
            ..cfg
        };
        assert_eq!(w.tick(1_000_000, &never), None);
    }
}
