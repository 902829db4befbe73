//! When a consumer's progress becomes permanent, under each guarantee.
//!
//! A handler reports each record it finished with [`Commits::processed`] and
//! offers its progress for release after every poll. What "released" means
//! depends on the [`Guarantee`](super::Guarantee):
//!
//! - [`Acknowledged`] (at-least-once): offsets are stored for the consumer
//!   to commit only once the outputs of the records below them are
//!   acknowledged by the log, and the state changes they caused are written
//!   to the changelog and acknowledged too. State is written only after the
//!   outputs that led to it, so a restored state never claims a command was
//!   sent that was lost.
//! - [`Transaction`] (exactly-once): outputs, state changes and offsets go
//!   into one transaction, committed every commit interval and before
//!   partitions are revoked. The consumer waits while a transaction
//!   commits; under heavy load a commit takes longer (more to flush), so
//!   while records are waiting commits are spaced to keep that wait under
//!   a tenth of the time (at most two seconds apart). A consumer that has
//!   caught up commits every interval again at once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::outlet::Outlet;
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::log::{GroupToken, Progress, TopicPartition};
use crate::stream::Producer;

/// Writes the state changes made so far to the changelog through the given
/// producer; returns how many records it sent.
pub(super) type WriteState<'a> = &'a mut dyn FnMut(&Producer) -> Result<usize>;

/// How long a transaction commit may take.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// While records are waiting (the consumer's polls come back full), a
/// transaction stays open at least this many times as long as commits take,
/// so that the consumer spends at most a tenth of its time waiting for
/// commits instead of processing. With nothing waiting, the commit interval
/// decides alone: waiting for a commit then costs latency, not throughput.
const OPEN_PER_COMMIT: u32 = 9;
/// The longest commits are spaced for their cost. One slow commit (1.8 s
/// seen on a loaded machine) would otherwise hold the next transaction open
/// for 18 s: past the log's transaction timeout (10 s on Kafka), after
/// which the coordinator aborts it.
const MAX_SPACING: Duration = Duration::from_secs(2);

/// One consumer's commit protocol.
pub(super) enum Commits {
    AtLeastOnce(Acknowledged),
    ExactlyOnce(Transaction),
}

impl Commits {
    /// The producer outputs and dead letters of this consumer go through.
    pub(super) fn producer(&self) -> &Producer {
        &self.outlet().producer
    }

    pub(super) fn outlet(&self) -> &Outlet {
        match self {
            Commits::AtLeastOnce(a) => &a.outlet,
            Commits::ExactlyOnce(t) => &t.outlet,
        }
    }

    /// Everything before `next` in the partition is processed.
    pub(super) fn processed(&mut self, topic: &str, partition: i32, next: i64) {
        let list = match self {
            Commits::AtLeastOnce(a) => &mut a.processed,
            Commits::ExactlyOnce(t) => &mut t.processed,
        };
        raise(list, topic, partition, next);
    }

    /// State changed or outputs were sent outside any record (a timer
    /// fired, keys expired): the next release writes and commits them even
    /// if no record was processed.
    pub(super) fn touch(&mut self) {
        match self {
            Commits::AtLeastOnce(a) => a.touched = true,
            Commits::ExactlyOnce(t) => t.touched = true,
        }
    }

    /// Makes progress permanent if it is due (or now, when `force`).
    pub(super) fn release(
        &mut self,
        shared: &Shared,
        progress: &mut dyn Progress,
        force: bool,
        write_state: WriteState<'_>,
    ) {
        match self {
            Commits::AtLeastOnce(a) => {
                let mut counting = Counting {
                    inner: progress,
                    stored: false,
                };
                a.release(shared, &mut counting, force, write_state);
                if counting.stored {
                    shared.metrics.commits.inc();
                }
            }
            Commits::ExactlyOnce(t) => {
                let open = !t.processed.is_empty();
                t.release(shared, progress, force, write_state);
                if open && t.processed.is_empty() && t.failure.is_none() {
                    shared.metrics.commits.inc();
                }
            }
        }
    }

    /// Makes the next release wait for its commit (used on stop).
    pub(super) fn release_next(&mut self) {
        match self {
            Commits::AtLeastOnce(a) => a.force_next = true,
            Commits::ExactlyOnce(t) => t.force_next = true,
        }
    }

    /// Drops progress on partitions this consumer no longer owns; their
    /// next owner starts from the last commit.
    pub(super) fn forget(&mut self, partitions: &[TopicPartition]) {
        let keep = |(t, p, _): &(String, i32, i64)| {
            !partitions
                .iter()
                .any(|tp| tp.partition == *p && tp.topic == *t)
        };
        match self {
            Commits::AtLeastOnce(a) => {
                a.processed.retain(keep);
                a.staged.retain(keep);
            }
            Commits::ExactlyOnce(t) => t.processed.retain(keep),
        }
    }

    /// Whether records must not be processed now: under exactly-once, the
    /// open transaction failed, or a delivery failed in it (it can no
    /// longer commit, and the next release aborts it).
    pub(super) fn halted(&self) -> bool {
        match self {
            Commits::AtLeastOnce(_) => false,
            Commits::ExactlyOnce(t) => t.failure.is_some() || t.outlet.spoiled(),
        }
    }

    /// A failed commit that spoils the work since the last one.
    pub(super) fn failure(&self) -> Option<&Error> {
        match self {
            Commits::AtLeastOnce(_) => None,
            Commits::ExactlyOnce(t) => t.failure.as_ref(),
        }
    }

    /// Whether everything processed so far is committed.
    pub(super) fn is_settled(&self) -> bool {
        match self {
            Commits::AtLeastOnce(a) => a.processed.is_empty() && a.staged.is_empty() && !a.touched,
            Commits::ExactlyOnce(t) => t.is_empty() && t.failure.is_none(),
        }
    }
}

fn raise(list: &mut Vec<(String, i32, i64)>, topic: &str, partition: i32, next: i64) {
    match list
        .iter_mut()
        .find(|(t, p, _)| *p == partition && t == topic)
    {
        Some(e) => e.2 = e.2.max(next),
        None => list.push((topic.to_owned(), partition, next)),
    }
}

/// At-least-once bookkeeping of one consumer. Offsets move through two
/// stages: *processed* (outputs sent, maybe not yet acknowledged) and
/// *staged* (outputs acknowledged, state changes sent to the changelog,
/// maybe not yet acknowledged). A release happens when the producer has
/// nothing in flight, which acknowledges both stages at once: staged
/// offsets are stored, and at most once per commit interval the current
/// state is written and processed offsets become staged (or are stored at
/// once when there was no state to write).
///
/// The producer is often idle between bursts, so this never waits on the
/// hot path; offsets held back for [`MAX_HOLD`], and any release that is
/// forced (revocation, stop), wait for a flush instead. Writing state once
/// per interval, not per release, writes a key changed many times once.
pub(super) struct Acknowledged {
    outlet: Outlet,
    processed: Vec<(String, i32, i64)>,
    staged: Vec<(String, i32, i64)>,
    /// Since when offsets wait for acknowledgements.
    held_since: Option<Instant>,
    /// The next release waits for acknowledgements (set on stop).
    force_next: bool,
    interval: Duration,
    last_write: Instant,
    /// State changed outside records since the last write.
    touched: bool,
}

/// Notes whether a release moved offsets on: a commit, under
/// at-least-once (the log commits stored offsets in the background).
struct Counting<'a> {
    inner: &'a mut dyn Progress,
    stored: bool,
}

impl Progress for Counting<'_> {
    fn store(&mut self, topic: &str, partition: i32, next_offset: i64) {
        self.stored = true;
        self.inner.store(topic, partition, next_offset);
    }

    fn group(&self) -> Result<GroupToken> {
        self.inner.group()
    }

    fn behind(&self) -> bool {
        self.inner.behind()
    }
}

/// The longest offsets wait for the producer to be idle before a release
/// waits for a flush.
pub(super) const MAX_HOLD: Duration = Duration::from_secs(1);

impl Acknowledged {
    /// Writes state (and so moves offsets on) at most every `interval`.
    pub(super) fn new(outlet: Outlet, interval: Duration) -> Self {
        Self {
            outlet,
            processed: Vec::new(),
            staged: Vec::new(),
            held_since: None,
            force_next: false,
            interval,
            last_write: Instant::now(),
            touched: false,
        }
    }

    fn release(
        &mut self,
        shared: &Shared,
        progress: &mut dyn Progress,
        force: bool,
        write_state: WriteState<'_>,
    ) {
        if self.processed.is_empty() && self.staged.is_empty() && !self.touched {
            self.held_since = None;
            return;
        }
        let since = *self.held_since.get_or_insert_with(Instant::now);
        let force = force || std::mem::take(&mut self.force_next);
        let producer = &self.outlet.producer;
        if !(force || since.elapsed() >= MAX_HOLD || producer.in_flight() == 0) {
            return;
        }
        let flush = || match producer.in_flight() {
            0 => Ok(()),
            _ => producer.flush(Producer::CLOSE_TIMEOUT),
        };
        if let Err(e) = flush() {
            tracing::warn!("outputs not acknowledged, holding offsets back: {e}");
            return;
        }
        // Outputs the log refused go again, then to the dead letters: they
        // must be acknowledged before the offsets move past their records.
        while self.outlet.dead_letter_refused(shared) > 0 {
            if let Err(e) = flush() {
                tracing::warn!("dead letters not acknowledged, holding offsets back: {e}");
                return;
            }
        }
        // Everything sent so far is acknowledged: the outputs of the
        // processed records and the state written for the staged ones.
        for (t, p, o) in self.staged.drain(..) {
            progress.store(&t, p, o);
        }
        if !force && self.last_write.elapsed() < self.interval {
            self.held_since = (!self.processed.is_empty()).then(Instant::now);
            return;
        }
        self.last_write = Instant::now();
        let result = write_state(producer);
        if result.is_ok() {
            self.touched = false;
        }
        match result {
            Ok(0) => {
                for (t, p, o) in self.processed.drain(..) {
                    progress.store(&t, p, o);
                }
            }
            Ok(_) => {
                self.staged.append(&mut self.processed);
                if force {
                    match flush() {
                        Ok(()) => {
                            for (t, p, o) in self.staged.drain(..) {
                                progress.store(&t, p, o);
                            }
                        }
                        Err(e) => {
                            tracing::warn!("state not acknowledged, holding offsets back: {e}")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot write state, holding offsets back: {e}"),
        }
        self.held_since =
            (!self.staged.is_empty() || !self.processed.is_empty()).then(Instant::now);
    }
}

/// Exactly-once bookkeeping of one consumer: its own transactional
/// producer, and the offsets processed in the open transaction.
pub(super) struct Transaction {
    outlet: Outlet,
    processed: Vec<(String, i32, i64)>,
    interval: Duration,
    /// When the open transaction's interval started: when the previous
    /// commit did, so that commits follow each other every interval.
    opened: Instant,
    /// How long commits take, commit to next begin: the latest if it was
    /// longer, else a moving average.
    commit_time: Duration,
    force_next: bool,
    failure: Option<Error>,
    /// Releases of the open transaction, and those after a full poll. A
    /// transaction most of whose polls came back full is spaced from the
    /// previous commit by the commits' cost: records are waiting, and time
    /// spent committing is time not spent on them. A few full polls alone
    /// are the records that arrived during the previous commit, and do not
    /// count: at light load a slow commit would otherwise hold the next
    /// transaction open ten times as long (seen as a p99 of 0.9 s at
    /// 20,000 rec/s). Nor is a transaction whose latest two polls came back
    /// short: the consumer has caught up (its input ran out, say), so
    /// nothing waits while it commits, and holding the transaction open
    /// would leave it idle with its work uncommitted (seen as 1.3 s of a
    /// 2.6 s run of 1,000,000 records). One short poll is not enough: in a
    /// backlog, now and then a poll finds the fetched records used up
    /// before the next fetch arrived (one in about forty at full speed),
    /// and committing at each of those spent a fifth of the consumer's
    /// time on commits.
    polls: u32,
    full_polls: u32,
    /// Whether the poll before the latest came back full.
    previous_full: bool,
    /// The producer's count of records sent when the transaction opened.
    sent_before: u64,
    /// State changed outside records in the open transaction.
    touched: bool,
}

impl Transaction {
    /// Opens the first transaction of the outlet's producer.
    pub(super) fn begin(outlet: Outlet, interval: Duration) -> Result<Self> {
        outlet.producer.begin()?;
        Ok(Self {
            outlet,
            processed: Vec::new(),
            interval,
            opened: Instant::now(),
            commit_time: Duration::ZERO,
            force_next: false,
            failure: None,
            polls: 0,
            full_polls: 0,
            previous_full: false,
            sent_before: 0,
            touched: false,
        })
    }

    /// Whether the open transaction holds nothing: no record processed,
    /// nothing sent (dead letters of damaged states are sent on
    /// assignment, before any record, and must not wait for one: the
    /// broker aborts a transaction left open too long).
    fn is_empty(&self) -> bool {
        self.processed.is_empty()
            && !self.touched
            && self.outlet.producer.stats().sent.load(Ordering::Relaxed) == self.sent_before
    }

    /// Whether the open transaction should be committed at the next release
    /// (`behind`: records are waiting for the consumer).
    pub(super) fn is_due(&self, behind: bool) -> bool {
        let (polls, full) = (self.polls + 1, self.full_polls + behind as u32);
        let recent = behind || self.previous_full;
        self.force_next || self.open_long_enough(Self::backlog(polls, full, recent))
    }

    /// Whether records are waiting for the consumer: most of the open
    /// transaction's polls came back full, one of the latest two too.
    fn backlog(polls: u32, full_polls: u32, recent_full: bool) -> bool {
        recent_full && full_polls * 2 > polls
    }

    fn open_long_enough(&self, backlog: bool) -> bool {
        // Counted from the start of the previous commit: its own time is
        // part of the interval, and one more commit time for the floor.
        self.opened.elapsed() >= self.interval.max(Self::floor(self.commit_time, backlog))
    }

    /// The least time between the starts of two commits that take
    /// `commit_time`, with or without a backlog.
    fn floor(commit_time: Duration, backlog: bool) -> Duration {
        match backlog {
            true => (commit_time * (OPEN_PER_COMMIT + 1)).min(MAX_SPACING),
            false => Duration::ZERO,
        }
    }

    fn release(
        &mut self,
        shared: &Shared,
        progress: &mut dyn Progress,
        force: bool,
        write_state: WriteState<'_>,
    ) {
        let force = force || std::mem::take(&mut self.force_next);
        let behind = progress.behind();
        self.polls += 1;
        self.full_polls += behind as u32;
        let recent = behind || std::mem::replace(&mut self.previous_full, behind);
        let backlog = Self::backlog(self.polls, self.full_polls, recent);
        // A failed delivery spoils the transaction: the commit fails with
        // the log's reason, at once rather than after more records (whose
        // sends the log refuses now) were processed in vain.
        let spoiled = self.outlet.spoiled();
        if self.failure.is_some()
            || !spoiled && (self.is_empty() || !(force || self.open_long_enough(backlog)))
        {
            return;
        }
        if let Err(e) = self.commit(progress, write_state) {
            tracing::warn!("transaction failed: {e}");
            if let Err(e) = self.outlet.producer.abort(COMMIT_TIMEOUT) {
                tracing::debug!("abort: {e}");
            }
            // Once nothing is in flight, every delivery report of the
            // aborted transaction is in: what the log refused for good is
            // learned before its records are processed again, so that the
            // replay sends it to the dead letters instead.
            if let Err(e) = self.outlet.producer.flush(COMMIT_TIMEOUT) {
                tracing::debug!("after abort: {e}");
            }
            self.outlet.learn_refused(shared);
            self.failure = Some(e);
        }
    }

    fn commit(&mut self, progress: &mut dyn Progress, write_state: WriteState<'_>) -> Result<()> {
        let started = Instant::now();
        let (open_for, polls, full_polls) = (self.opened.elapsed(), self.polls, self.full_polls);
        write_state(&self.outlet.producer)?;
        let group = progress.group()?;
        let offsets: Vec<(TopicPartition, i64)> = self
            .processed
            .iter()
            .map(|(t, p, o)| (TopicPartition::new(t.clone(), *p), *o))
            .collect();
        self.outlet
            .producer
            .commit(&offsets, &group, COMMIT_TIMEOUT)?;
        self.processed.clear();
        self.touched = false;
        self.sent_before = self.outlet.producer.stats().sent.load(Ordering::Relaxed);
        self.outlet.producer.begin()?;
        self.opened = started;
        (self.polls, self.full_polls) = (0, 0);
        // Up at once, down slowly: a load that makes commits slow spaces
        // them from the next one on, and one fast commit does not undo it.
        let took = started.elapsed();
        self.commit_time = took.max((self.commit_time * 7 + took) / 8);
        tracing::debug!(
            "transaction committed in {took:?}, open {open_for:?} over {polls} polls ({full_polls} full)"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Transaction, MAX_SPACING};

    /// Counts a transaction's polls as `release` does, `true` for a full one.
    fn backlogged(polls: &[bool]) -> bool {
        let full = polls.iter().filter(|&&f| f).count() as u32;
        let recent = polls.iter().rev().take(2).any(|&f| f);
        Transaction::backlog(polls.len() as u32, full, recent)
    }

    #[test]
    fn records_left_by_one_commit_are_not_a_backlog() {
        // Light load after a slow commit: two full polls, then short ones.
        let mut polls = vec![true, true];
        polls.extend([false; 8]);
        assert!(!backlogged(&polls));
        // Full load: nearly every poll full, now and then a short one.
        let full_load: Vec<bool> = (0..19).map(|i| i % 5 != 4).collect();
        assert!(backlogged(&full_load));
        assert!(!backlogged(&[]));
    }

    #[test]
    fn a_consumer_that_caught_up_has_no_backlog() {
        // The input ran out: hundreds of full polls, then short ones. The
        // first short one may be a fetch arriving late; the second is not.
        let mut polls = vec![true; 300];
        assert!(backlogged(&polls));
        polls.push(false);
        assert!(backlogged(&polls));
        polls.push(false);
        assert!(!backlogged(&polls));
        // Records arrive again: the spacing is back at once.
        polls.push(true);
        assert!(backlogged(&polls));
    }

    #[test]
    fn commits_are_spaced_for_their_cost_up_to_a_bound() {
        let ms = Duration::from_millis;
        assert_eq!(Transaction::floor(ms(50), true), ms(500));
        assert_eq!(Transaction::floor(ms(50), false), Duration::ZERO);
        // One very slow commit does not hold the next transaction open past
        // the log's transaction timeout.
        assert_eq!(Transaction::floor(ms(1800), true), MAX_SPACING);
    }
}
