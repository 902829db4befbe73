//! The key-based style: state lives in the consumer actor that owns the
//! partition (the chapter's `TemperatureControllerManager`, one state per
//! key, grouped by partition so it can move with the partition).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::commit::Commits;
use super::growth::{Growth, LayoutCell, Verdict};
use super::query::to_json;
use super::shared::{Settling, Shared};
use super::time::Watermark;
use super::timers::{apply_changes, fire, Clock};
use super::{run_processor, Context, KeyedProcessor, Upgrader};
use crate::error::{Error, Result};
use crate::log::{Progress, RecordRef, TopicPartition};
use crate::stream::{memory, Deferring, Handler, Producer};
use riffle_state::{
    restore_point, Domain, Durability, PartitionStores, RestoreFrom, Standby, Store,
};
use riffle_state::{ByPartition, Handoff};

/// How often partition states are saved as local snapshots.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);

/// A partition's state as one consumer left it for the next, with the
/// changelog offset it reflects: a newer owner elsewhere may have written
/// the changelog since, and the next owner here reads what it missed.
pub(super) struct Parked<S> {
    store: Store<S>,
    offset: i64,
}

pub(super) struct KeyedHandler<P: KeyedProcessor> {
    processor: P,
    shared: Arc<Shared>,
    handoff: Arc<Handoff<Parked<P::State>>>,
    /// Warm copies of the partitions nobody here owns, if kept.
    standby: Option<Arc<Standby<P::State>>>,
    /// Where state is made durable; `None` for stateless processors.
    durability: Option<Arc<Durability>>,
    /// Keyed by partition number: co-partitioned input topics share state.
    owned: PartitionStores<P::State>,
    commits: Commits,
    last_snapshot: Instant,
    /// Set when the consumer stops: the last release settles everything.
    stopping: bool,
    /// The changelog ends the last release settled at, when stopping:
    /// the snapshots are written from them once the consumer has left the
    /// group (see `Drop`), so that writing them does not delay the
    /// partitions' next owners.
    final_ends: Option<HashMap<i32, i64>>,
    /// Each owned partition's watermark.
    watermarks: ByPartition<Watermark>,
    settling: Settling,
    /// Processing time, read once per poll.
    now: i64,
    /// Keys expired since memory was last given back.
    expired: u64,
    /// Whether the processor is inside a batch ([`KeyedProcessor::begin_batch`]).
    in_batch: bool,
    /// Moving state when the input gains partitions.
    growth: Option<Growth>,
    /// Why a move could not be written: the consumer starts over.
    growth_failure: Option<Error>,
}

impl<P: KeyedProcessor> KeyedHandler<P> {
    /// Takes partitions' state from `standby` when it has a copy.
    pub(super) fn with_standby(mut self, standby: Option<Arc<Standby<P::State>>>) -> Self {
        self.standby = standby;
        self
    }

    /// Moves state as `layout` says when the input gains partitions.
    pub(super) fn with_growth(mut self, layout: Option<Arc<LayoutCell>>) -> Self {
        let atomic = matches!(self.commits, Commits::ExactlyOnce(_));
        self.growth = layout.map(|cell| Growth::new(cell, atomic));
        self
    }

    pub(super) fn new(
        processor: P,
        shared: Arc<Shared>,
        handoff: Arc<Handoff<Parked<P::State>>>,
        durability: Option<Arc<Durability>>,
        commits: Commits,
    ) -> Self {
        Self {
            now: shared.clock.now_ms(),
            processor,
            shared,
            handoff,
            standby: None,
            durability,
            owned: PartitionStores::new(),
            commits,
            last_snapshot: Instant::now(),
            stopping: false,
            final_ends: None,
            watermarks: ByPartition::default(),
            settling: Settling::new(),
            expired: 0,
            in_batch: false,
            growth: None,
            growth_failure: None,
        }
    }

    /// Ends the processor's batch, if one is open: before anything but
    /// processing the poll's next record.
    fn end_batch(&mut self) {
        if self.in_batch {
            self.in_batch = false;
            self.processor.end_batch();
        }
    }

    /// A new store for a partition, with the app's time to live.
    fn new_store(shared: &Shared) -> Store<P::State> {
        let mut store = Store::new(P::STATE_VERSION);
        store.set_ttl(shared.ttl);
        store
    }

    /// Fires the timers of `domain` due at or before `upto` in partition
    /// `partition`, in order.
    fn fire(&mut self, partition: i32, domain: Domain, upto: i64) {
        let Some(store) = self.owned.get_mut(&partition) else {
            return;
        };
        let clock = Clock {
            now: self.now,
            watermark: self.watermarks.get(&partition).and_then(Watermark::current),
        };
        let to = (self.commits.producer(), &*self.shared);
        if fire(
            &mut self.processor,
            to,
            store,
            partition,
            (domain, upto),
            clock,
        ) > 0
        {
            self.commits.touch();
        }
    }

    /// Between polls: reads the clock, fires the processing-time timers
    /// due, moves idle partitions' watermarks on (firing the event-time
    /// timers they pass), and deletes keys past their time to live.
    fn tick(&mut self) {
        self.now = self.shared.clock.now_ms();
        let partitions: Vec<i32> = self.owned.keys().copied().collect();
        for p in partitions {
            let now = self.now;
            if let Some(store) = self.owned.get_mut(&p) {
                store.set_now(now);
            }
            self.fire(p, Domain::Processing, now);
            let moved = self
                .watermarks
                .get_mut(&p)
                .and_then(|w| w.tick(now, &self.shared.event_time));
            if let Some(mark) = moved {
                self.fire(p, Domain::Event, mark);
            }
            let expired = self.owned.get_mut(&p).map_or(0, Store::expire);
            if expired > 0 {
                self.shared
                    .stats
                    .expired
                    .fetch_add(expired as u64, Ordering::Relaxed);
                self.commits.touch();
                self.expired += expired as u64;
            }
        }
    }

    /// Moves a growth on: partitions that held records and now have their
    /// keys' state process them; a move due makes the next release write.
    fn grow(&mut self) {
        let (Some(g), Some(d)) = (self.growth.as_mut(), self.durability.as_deref()) else {
            return;
        };
        let upgrade = Upgrader(self.processor.clone());
        let released = g.poll(&mut self.owned, d, &upgrade);
        if g.pending() {
            self.commits.touch();
        }
        for r in released {
            if let Err(e) = self.handle(r.as_ref()) {
                tracing::warn!("{}/{}@{}: {e}", r.topic, r.partition, r.offset);
            }
        }
        self.end_batch();
    }

    /// Makes progress permanent if due (now, when `force`), writing the
    /// changed states with it; returns whether everything is committed.
    fn release(&mut self, progress: &mut dyn Progress, force: bool) -> bool {
        let Self {
            shared,
            owned,
            commits,
            durability,
            growth,
            growth_failure,
            ..
        } = self;
        commits.release(shared, progress, force, &mut |producer| {
            let mut moved = 0;
            if let (Some(g), Some(d)) = (growth.as_mut(), durability.as_deref()) {
                // Keys leave their store here: a failure leaves memory and
                // the changelog apart, and the consumer starts over.
                moved = g
                    .write(owned, producer, &d.changelog)
                    .inspect_err(|e| *growth_failure = Some(e.clone()))?;
            }
            Ok(moved + write_changes(owned, durability.as_deref(), producer)?)
        });
        commits.is_settled()
    }

    /// Commits now, so that stores and the changelog agree.
    fn settle(&mut self, progress: &mut dyn Progress) -> bool {
        self.release(progress, true)
    }

    fn changelog_ends(&self) -> Option<HashMap<i32, i64>> {
        self.durability.as_ref()?.ends_or_warn()
    }

    /// Saves a snapshot of every owned partition that changed since its last.
    fn snapshot(&mut self, progress: &mut dyn Progress) {
        if let Some(ends) = self.snapshot_ends(progress) {
            self.save_snapshots(&ends);
        }
    }

    /// Settles everything for a snapshot and returns the changelog's ends
    /// it reflects; `None` when no snapshot is due or possible.
    fn snapshot_ends(&mut self, progress: &mut dyn Progress) -> Option<HashMap<i32, i64>> {
        self.last_snapshot = Instant::now();
        let d = self.durability.as_ref()?;
        if d.snapshots.is_none()
            || !self.owned.values().any(|s| s.changed_since_snapshot() > 0)
            || !self.settle(progress)
        {
            return None;
        }
        self.changelog_ends()
    }

    /// Writes the snapshots of the changed partitions, as of `ends`.
    fn save_snapshots(&mut self, ends: &HashMap<i32, i64>) {
        let Some(d) = self.durability.clone() else {
            return;
        };
        for (p, store) in &mut self.owned {
            if store.changed_since_snapshot() == 0 || !whole(&self.growth, *p, store) {
                continue;
            }
            if let (Some(path), Some(&end)) = (d.snapshot_path(*p), ends.get(p)) {
                if let Err(e) = store.save_snapshot(&path, end) {
                    tracing::warn!("{e}");
                }
            }
        }
    }
}

/// Whether partition `p`'s store reflects all of its changelog up to the
/// changelog's end (so that a snapshot or a hand-over may say so): not
/// while a growth may still move keys into it, written by another
/// partition's owner.
fn whole<S>(growth: &Option<Growth>, p: i32, store: &Store<S>) -> bool {
    growth.as_ref().is_none_or(|g| g.complete(p, Some(store)))
}

/// Writes the changed states of every owned partition to the changelog.
fn write_changes<S: Default + serde::Serialize + serde::de::DeserializeOwned>(
    owned: &mut PartitionStores<S>,
    durability: Option<&Durability>,
    producer: &Producer,
) -> Result<usize> {
    let Some(d) = durability else {
        return Ok(0);
    };
    let mut sent = 0;
    for (p, store) in owned.iter_mut() {
        if store.has_changes() {
            sent += store.write_changes(producer, &d.changelog, *p)?;
        }
    }
    Ok(sent)
}

impl<P: KeyedProcessor> Handler for KeyedHandler<P> {
    fn handle(&mut self, record: RecordRef<'_>) -> Result<()> {
        if self.commits.halted() {
            // The consumer starts over from the last commit after this poll.
            return Ok(());
        }
        if self.growth.as_mut().is_some_and(|g| g.held(&record)) {
            return Ok(());
        }
        if !self.in_batch {
            self.in_batch = true;
            self.processor.begin_batch();
        }
        let decoded = self.processor.decode(&record);
        if let (Some(g), Ok((key, _))) = (self.growth.as_mut(), &decoded) {
            if let Some(l) = g.layout() {
                let at = (record.topic, record.partition, record.offset);
                let verdict = g.verdict(&l, at, key, self.owned.get(&record.partition));
                match verdict {
                    Verdict::Process => {}
                    Verdict::Hold => {
                        g.hold(&record);
                        return Ok(());
                    }
                    Verdict::Skip => {
                        self.commits
                            .processed(record.topic, record.partition, record.offset + 1);
                        return Ok(());
                    }
                    Verdict::Stale(why) => {
                        self.commits
                            .processed(record.topic, record.partition, record.offset + 1);
                        let producer = self.commits.producer();
                        return self.shared.dead_letter(
                            producer,
                            &record,
                            &Error::InvalidInput(why),
                        );
                    }
                }
                g.processed(record.topic, record.partition, record.offset + 1);
            }
        }
        // Whatever the outcome (processed, dead letter, skipped), the record
        // is done once what it sent is acknowledged.
        self.commits
            .processed(record.topic, record.partition, record.offset + 1);
        let producer = self.commits.producer();
        let (key, input) = match decoded {
            Ok(d) => d,
            Err(e) => return self.shared.dead_letter(producer, &record, &e),
        };
        let event_time = self.processor.event_time(&record, &input);
        let cfg = &self.shared.event_time;
        let mark = self.watermarks.entry(record.partition).or_default();
        if let Some(why) = mark.late(event_time, cfg) {
            self.shared.stats.late.fetch_add(1, Ordering::Relaxed);
            return self
                .shared
                .dead_letter(producer, &record, &Error::InvalidInput(why));
        }
        let before = mark.current();
        let watermark = mark.observe(event_time, self.now, cfg);
        if P::STATEFUL && watermark > before {
            // Timers the record's time passed fire before it: a replay of
            // the partition fires them at the same place.
            let due = self
                .owned
                .get(&record.partition)
                .and_then(|s| s.next_due(Domain::Event));
            if let (Some(due), Some(mark)) = (due, watermark) {
                if due <= mark {
                    self.fire(record.partition, Domain::Event, mark);
                }
            }
        }
        let producer = self.commits.producer();
        let mut ctx = Context::new(
            (producer, &*self.shared),
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.headers,
        )
        .at(self.now, watermark)
        .with_event_time(event_time);
        let retries = self.shared.retries;
        let result = if P::STATEFUL {
            let shared = &self.shared;
            let store = self
                .owned
                .entry(record.partition)
                .or_insert_with(|| Self::new_store(shared));
            let state = store.get_mut(&key);
            let result = run_processor(&mut self.processor, &key, &input, state, &mut ctx, retries);
            apply_changes(store, &key, std::mem::take(&mut ctx.timers), ctx.delete);
            result
        } else {
            let mut state = P::State::default();
            run_processor(
                &mut self.processor,
                &key,
                &input,
                &mut state,
                &mut ctx,
                retries,
            )
        };
        self.shared.processed(ctx.sent);
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.shared.dead_letter(producer, &record, &e),
        }
    }

    fn polled(&mut self) {
        self.end_batch();
    }

    fn assigned(&mut self, partitions: &[TopicPartition]) {
        self.end_batch();
        if !P::STATEFUL {
            return;
        }
        let Some(d) = self.durability.clone() else {
            return;
        };
        // Partition numbers new here (co-partitioned inputs share theirs).
        let mut new: Vec<i32> = partitions
            .iter()
            .map(|tp| tp.partition)
            .filter(|p| !self.owned.contains_key(p))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return;
        }
        if let Some(g) = &self.growth {
            g.know(&new);
        }
        let ends = restore_point(&d);
        let mut ready = Vec::new();
        let mut restore = Vec::new();
        for p in new {
            let end = ends.get(&p).copied().unwrap_or(0);
            // What this process left of the partition when it last owned
            // it, and its standby copy, which followed the changelog since:
            // whichever is further along.
            let parked = self.handoff.take(p);
            let copy = self.standby.as_ref().and_then(|s| s.take(p));
            let held = match (parked, copy) {
                (Some(parked), Some((_, offset))) if parked.offset >= offset => Some(parked),
                (_, Some((store, offset))) => {
                    tracing::info!(
                        "partition {p}: state taken from the standby copy ({} keys, {} changelog records behind)",
                        store.len(),
                        end - offset
                    );
                    Some(Parked { store, offset })
                }
                (parked, None) => parked,
            };
            match held {
                // Nobody wrote the changelog since it was parked here.
                Some(parked) if parked.offset == end => ready.push((p, parked.store)),
                Some(parked) => restore.push((
                    p,
                    RestoreFrom::Store {
                        store: parked.store,
                        offset: parked.offset,
                    },
                )),
                None => restore.push((p, RestoreFrom::Snapshot)),
            }
        }
        let stats = &self.shared.stats.state;
        let processor = &self.processor;
        for (p, store) in d.restore_all(restore, &ends, stats, || Upgrader(processor.clone())) {
            // Processing without the partition's state would be wrong:
            // let the consumer restart and try again.
            let store =
                store.unwrap_or_else(|e| panic!("cannot restore the state of partition {p}: {e}"));
            ready.push((p, store));
        }
        for (p, mut store) in ready {
            if let Some(g) = &mut self.growth {
                let end = ends.get(&p).copied().unwrap_or(0);
                g.assigned(p, end, &mut store, &d);
            }
            self.shared
                .dead_letter_damaged(self.commits.producer(), &d.changelog, &mut store);
            store.set_ttl(self.shared.ttl);
            store.set_now(self.now);
            self.owned.insert(p, store);
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        self.end_batch();
        if self.shared.killed() {
            // Gone with the process: nothing saved, nothing handed over;
            // a sibling consumer given the partition while the process
            // goes down must not wait for it.
            for tp in partitions {
                if self.owned.remove(&tp.partition).is_some() {
                    self.handoff.park(tp.partition, None);
                }
            }
            return;
        }
        let settled = self.commits.is_settled() && self.owned.values().all(|s| !s.has_changes());
        self.commits.forget(partitions);
        let ends = if settled && P::STATEFUL {
            self.changelog_ends()
        } else {
            None
        };
        for tp in partitions {
            self.watermarks.remove(&tp.partition);
            if let Some(g) = &mut self.growth {
                g.revoked(tp.partition);
            }
            if let Some(mut store) = self.owned.remove(&tp.partition) {
                let end = ends
                    .as_ref()
                    .and_then(|e| e.get(&tp.partition))
                    .copied()
                    .filter(|_| whole(&self.growth, tp.partition, &store));
                // The partition may be leaving this process: save what
                // changed, so that its next owner here starts from it.
                let path = self
                    .durability
                    .as_ref()
                    .and_then(|d| d.snapshot_path(tp.partition));
                if let (Some(path), Some(end)) = (path, end) {
                    if store.changed_since_snapshot() > 0 {
                        if let Err(e) = store.save_snapshot(&path, end) {
                            tracing::warn!("{e}");
                        }
                    }
                }
                let parked = end.map(|offset| Parked { store, offset });
                self.handoff.park(tp.partition, parked);
                if let Some(s) = &self.standby {
                    s.release(tp.partition);
                }
            }
        }
    }
}

impl<P: KeyedProcessor> Deferring for KeyedHandler<P> {
    fn completed(&mut self, progress: &mut dyn Progress) {
        self.end_batch();
        if self.shared.killed() {
            return;
        }
        let generation = self.shared.clock.generation();
        if P::STATEFUL && !self.commits.halted() {
            self.tick();
            self.grow();
        }
        let owned = &mut self.owned;
        for q in self.shared.board.take(|p| owned.contains_key(&p)) {
            let state = owned.get_mut(&q.partition).and_then(|s| s.get(&q.key));
            let _ = q.reply.send(to_json(state));
        }
        // States found damaged as their keys were first used since the
        // last poll (a snapshot's are decoded then).
        if let Some(d) = &self.durability {
            for store in self.owned.values_mut() {
                if !store.damaged().is_empty() {
                    self.shared.dead_letter_found_damaged(
                        self.commits.producer(),
                        &d.changelog,
                        store,
                    );
                }
            }
        }
        let settled = self.release(progress, false);
        if self.stopping {
            self.final_ends = self.snapshot_ends(progress);
        } else if self.last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            self.snapshot(progress);
        }
        if settled && self.owned.values().all(|s| !s.has_changes()) {
            self.shared.settled_at(&self.settling, generation);
            // Many keys expired, and their tombstones are delivered: what
            // they held goes back to the system.
            if self.expired >= memory::BURST && self.commits.producer().in_flight() == 0 {
                self.expired = 0;
                memory::free_unused();
            }
        }
    }

    fn revoking(&mut self, _: &[TopicPartition], progress: &mut dyn Progress) {
        self.end_batch();
        if self.shared.killed() {
            return;
        }
        // Runs inside the backend's rebalance callback: nothing here may
        // panic. A failed commit shows in `failure` after the poll.
        self.settle(progress);
    }

    fn drain(&mut self) {
        self.end_batch();
        if self.shared.killed() {
            return;
        }
        self.stopping = true;
        self.commits.release_next();
    }

    fn failure(&mut self) -> Option<Error> {
        self.commits
            .failure()
            .cloned()
            .or_else(|| self.growth_failure.clone())
    }
}

impl<P: KeyedProcessor> Drop for KeyedHandler<P> {
    fn drop(&mut self) {
        self.end_batch();
        self.shared.forget_handler(&self.settling);
        // Stopped with everything committed (a consumer removed from a
        // running app, say): memory holds exactly the committed state, so
        // the partitions' next owners in this process take it as they would
        // after a revocation, with no restore.
        let settled = self.stopping
            && P::STATEFUL
            && self.commits.is_settled()
            && self.owned.values().all(|s| !s.has_changes());
        if let Some(ends) = self.final_ends.take() {
            self.save_snapshots(&ends);
        }
        let ends = if settled { self.changelog_ends() } else { None };
        // Otherwise (rebuilt after a failure, or stopped with work
        // uncommitted) what is in memory may be ahead of what is committed:
        // the next owner restores from snapshots and the changelog.
        for (p, store) in self.owned.drain() {
            let parked = ends
                .as_ref()
                .and_then(|e| e.get(&p))
                .filter(|_| whole(&self.growth, p, &store))
                .map(|&offset| Parked { store, offset });
            self.handoff.park(p, parked);
        }
    }
}
