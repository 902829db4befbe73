//! Input partitions added while an app runs: each key's state moves to the
//! partition the key now hashes to, before a record of the new layout is
//! processed (`docs/partition-growth.md`). Both styles use this; the
//! key-independent one takes the keys from its workers and hands them back.
//!
//! [`LayoutCell`] keeps the app's layout: it notices the growth (at start,
//! every [`CHECK_EVERY`], and when a consumer is given a partition it does
//! not know), records it in the `<group>-layout` topic, grows the
//! changelog to match, and makes the group assign new partitions its
//! leader missed. [`Growth`] is one consumer's side of the move, for
//! the partitions it owns, with the state layer's [`Layout`] arithmetic
//! and marks:
//!
//! - an old partition `p` goes on as before until the producers have
//!   switched (records appear in the new partitions) and [`GRACE`] has
//!   passed, then processes up to the end it then reads (the cut) and, in
//!   one commit, sends its moved keys' states and marks to their new
//!   partitions' changelogs (under at-least-once, the old partition's own
//!   side in the next, once those are acknowledged);
//! - a partition holds a record of a key that came from `p` until `p`'s
//!   mark is in its changelog, buffering it and what follows it
//!   uncommitted, then takes the moved states and goes on;
//! - a record written in the old layout after the cut goes to the dead
//!   letter topic: nothing is dropped quietly.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use riffle_state::{Cut, Durability, Layout, Moving, PartitionStores, Store, Upgrade};

use crate::error::{Error, Result};
use crate::log::{Log, OutRecord, Record, RecordRef, TopicSpec};
use crate::stream::Producer;

use super::time::now_ms;

/// How often the input's partition count is read.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long after the producers switched to the new layout an old
/// partition's end is taken as its cut: records sent in the old layout
/// before the switch may still be in flight that long.
pub(super) const GRACE: Duration = Duration::from_secs(2);
/// How long an old partition waits for records in the new partitions
/// before it moves its keys all the same: the producers' metadata refresh
/// (5 minutes by default, in the Java client and librdkafka alike).
const SWITCH_WAIT: Duration = Duration::from_secs(300);
/// How often a partition holding records reads its changelog for the
/// moved states, and an old partition checks the input's ends.
const POLL_EVERY: Duration = Duration::from_millis(250);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after a growth was recorded its new partitions may go without
/// an owner before this process makes the group assign them: the group's
/// leader notices them at its next metadata refresh (every 10 s in
/// Riffle's clients), unless it is restarted before.
const UNOWNED_WAIT: Duration = Duration::from_secs(12);
/// The least time between two rebalances this process asks for.
const REBALANCE_EVERY: Duration = Duration::from_secs(30);

/// The app's partition layout, shared by its consumers.
pub(crate) struct LayoutCell {
    log: Arc<dyn Log>,
    group: String,
    inputs: Vec<String>,
    changelog: String,
    /// [`Layout::pack`] of the last growth.
    packed: AtomicU64,
    /// The partitions state is kept for.
    partitions: AtomicI32,
    refreshing: Mutex<()>,
    /// When this process first saw the producers write in the new layout
    /// (or gave up waiting for them): a property of the input, not of a
    /// partition's owner, so a rebalance does not start the wait over.
    switched: Mutex<Option<Instant>>,
    /// When this process learnt of the growth.
    grown_at: Mutex<Option<Instant>>,
    /// When the last growth was recorded, in ms since the epoch.
    recorded_at: AtomicI64,
    /// [`Layout::pack`] of the growth whose partitions have all been seen
    /// owned in the group.
    owned: AtomicU64,
    /// When this process last asked the group to rebalance.
    rebalanced_at: Mutex<Option<Instant>>,
}

impl LayoutCell {
    /// Reads the layout, growing the changelog if the inputs grew since it
    /// was made. The changelog must exist.
    pub(crate) fn open(
        log: Arc<dyn Log>,
        group: &str,
        inputs: &[String],
        changelog: &str,
    ) -> Result<Arc<Self>> {
        let cell = Arc::new(Self {
            log,
            group: group.to_owned(),
            inputs: inputs.to_vec(),
            changelog: changelog.to_owned(),
            packed: AtomicU64::new(0),
            partitions: AtomicI32::new(0),
            refreshing: Mutex::new(()),
            switched: Mutex::new(None),
            grown_at: Mutex::new(None),
            recorded_at: AtomicI64::new(0),
            owned: AtomicU64::new(Layout::pack(None)),
            rebalanced_at: Mutex::new(None),
        });
        cell.refresh()?;
        Ok(cell)
    }

    pub(crate) fn layout(&self) -> Option<Layout> {
        Layout::unpack(self.packed.load(Ordering::Acquire))
    }

    pub(crate) fn partitions(&self) -> i32 {
        self.partitions.load(Ordering::Acquire)
    }

    fn layout_topic(&self) -> String {
        format!("{}-layout", self.group)
    }

    /// Reads the inputs' partition count again and grows the state's to it.
    pub(crate) fn refresh(&self) -> Result<()> {
        let _one = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = Vec::new();
        for t in &self.inputs {
            counts.push(self.log.describe_topic(t, ADMIN_TIMEOUT)?.partitions.len() as i32);
        }
        let inputs = counts.iter().copied().max().unwrap_or(1);
        if counts.iter().any(|&n| n != inputs) {
            return Err(Error::InvalidInput(format!(
                "input topics must have the same partition count, not {counts:?} ({:?}): grow them all",
                self.inputs
            )));
        }
        // The changelog first: a growth is recorded before the changelog
        // grows, so a grown changelog means the record can be read.
        let kept = self
            .log
            .describe_topic(&self.changelog, ADMIN_TIMEOUT)?
            .partitions
            .len() as i32;
        if inputs == kept && inputs == self.partitions() {
            return Ok(());
        }
        let recorded = self.recorded()?;
        let current = recorded.map_or(kept, |l| l.to.max(kept));
        let layout = if inputs < current {
            return Err(Error::InvalidInput(format!(
                "the inputs have {inputs} partitions, fewer than the {current} the state of group {} is kept in; \
                 partitions cannot be taken away",
                self.group
            )));
        } else if inputs > current {
            let grown = Layout {
                from: current,
                to: inputs,
            };
            self.record(&grown)?;
            tracing::info!(
                "the inputs grew from {current} to {inputs} partitions: moving state to the partitions its keys now hash to"
            );
            Some(grown)
        } else {
            recorded
        };
        if let Some(l) = layout {
            if kept < l.to {
                self.grow_changelog(l.to)?;
            }
        }
        if layout != self.layout() {
            *self.switched.lock().unwrap() = None;
            *self.grown_at.lock().unwrap() = Some(Instant::now());
        }
        self.packed.store(Layout::pack(layout), Ordering::Release);
        self.partitions.store(inputs, Ordering::Release);
        Ok(())
    }

    /// Grows the changelog to `to` partitions; another process doing the
    /// same at once is no failure.
    fn grow_changelog(&self, to: i32) -> Result<()> {
        match self.log.add_partitions(&self.changelog, to, ADMIN_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(e) => {
                let now = self
                    .log
                    .describe_topic(&self.changelog, ADMIN_TIMEOUT)?
                    .partitions
                    .len() as i32;
                if now >= to {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The last growth recorded in the layout topic.
    fn recorded(&self) -> Result<Option<Layout>> {
        let topic = self.layout_topic();
        match self.log.describe_topic(&topic, ADMIN_TIMEOUT) {
            Err(Error::UnknownTopic(_)) => return Ok(None),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let mut last = None;
        self.log
            .read_partition(&topic, 0, 0, false, ADMIN_TIMEOUT, &mut |r| {
                last = Some(Layout::decode(r.value)?);
                if let Some(at) = r.timestamp {
                    self.recorded_at.store(at, Ordering::Release);
                }
                Ok(())
            })?;
        Ok(last)
    }

    fn record(&self, layout: &Layout) -> Result<()> {
        let topic = self.layout_topic();
        let mut spec = TopicSpec::new(&topic, 1);
        spec.configs
            .push(("cleanup.policy".into(), "compact".into()));
        self.log.ensure_topic(&spec, ADMIN_TIMEOUT)?;
        let producer = self.log.producer(None)?;
        let value = layout.encode();
        producer.send(OutRecord::new(&topic, Some(b"layout"), value.as_bytes()))?;
        producer.flush(ADMIN_TIMEOUT)?;
        self.recorded_at.store(now_ms(), Ordering::Release);
        Ok(())
    }

    /// Makes the group assign the input's partitions if, [`UNOWNED_WAIT`]
    /// after the last growth was recorded, the group is settled (some
    /// member owns partitions) and some partition still has no owner
    /// (`docs/partition-growth.md`, "New partitions enter the group through
    /// its leader"). Stops looking once every partition has been seen
    /// owned.
    fn claim_unowned(&self) -> Result<()> {
        let Some(layout) = self.layout() else {
            return Ok(());
        };
        let packed = Layout::pack(Some(layout));
        let since = now_ms() - self.recorded_at.load(Ordering::Acquire);
        if self.owned.load(Ordering::Acquire) == packed || since < UNOWNED_WAIT.as_millis() as i64 {
            return Ok(());
        }
        let members = self.log.group_members(&self.group, ADMIN_TIMEOUT)?;
        let mut owned: HashSet<(&str, i32)> = HashSet::new();
        for tp in members.iter().flat_map(|m| &m.assignment) {
            if let Some(t) = self.inputs.iter().find(|t| **t == tp.topic) {
                owned.insert((t.as_str(), tp.partition));
            }
        }
        // A rebalancing group shows no assignment.
        if owned.is_empty() {
            return Ok(());
        }
        let unowned: Vec<String> = self
            .inputs
            .iter()
            .filter_map(|t| {
                let ps: Vec<String> = (0..self.partitions())
                    .filter(|&p| !owned.contains(&(t.as_str(), p)))
                    .map(|p| p.to_string())
                    .collect();
                (!ps.is_empty()).then(|| format!("{t} [{}]", ps.join(", ")))
            })
            .collect();
        if unowned.is_empty() {
            self.owned.store(packed, Ordering::Release);
            return Ok(());
        }
        let mut last = self.rebalanced_at.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < REBALANCE_EVERY) {
            return Ok(());
        }
        *last = Some(Instant::now());
        tracing::info!(
            "input partitions {} have had no owner since the growth: making group {} assign them",
            unowned.join(", "),
            self.group
        );
        self.log
            .rebalance_group(&self.group, &self.layout_topic(), ADMIN_TIMEOUT)
    }

    /// Reads the layout every [`CHECK_EVERY`] while the app runs.
    pub(crate) fn watch(self: &Arc<Self>) {
        let cell: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("riffle-layout".into())
            .spawn(move || loop {
                std::thread::sleep(CHECK_EVERY);
                let Some(cell) = cell.upgrade() else { return };
                if let Err(e) = cell.refresh() {
                    tracing::warn!("cannot check the input's partitions: {e}");
                }
                // Here only: a consumer's thread must not wait for a
                // rebalance, which waits for it.
                if let Err(e) = cell.claim_unowned() {
                    tracing::warn!("cannot check the owners of the input's partitions: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot watch the input's partitions: {e}");
        }
    }
}

/// What to do with a record, given the layout.
pub(super) enum Verdict {
    Process,
    /// Its key's state is on its way: buffer it and what follows.
    Hold,
    /// Counted in the state that moved on (a repeat after a failure).
    Skip,
    /// Written in the old layout after the key moved.
    Stale(String),
}

/// One consumer's side of a growth, per owned partition.
pub(super) struct Growth {
    cell: Arc<LayoutCell>,
    /// The layout the names below are for, and per old partition the name
    /// of its [`Layout::moved_in`] mark: looked up per record.
    named: Option<Layout>,
    moved_in: Vec<String>,
    /// Whether the old partition's side is written with the new
    /// partitions' (one transaction), not after them.
    atomic: bool,
    parts: HashMap<i32, Part>,
    /// Partitions holding records: none almost always, so that a record
    /// costs no lookup then.
    holding: usize,
}

struct Part {
    /// Records held, in order, uncommitted.
    held: VecDeque<Record>,
    /// Where the next read of the changelog for moved states starts.
    tail_from: i64,
    next_poll: Instant,
    /// Targets this old partition gave its keys to, and where it was cut.
    moved: BTreeMap<i32, Cut>,
    /// Where processing is, per input topic.
    positions: HashMap<String, i64>,
    /// The ends to process up to before moving.
    cut_at: Option<BTreeMap<String, i64>>,
    ready: bool,
    /// Moved, the old partition's side not yet written.
    unfinished: Option<Moving>,
}

impl Growth {
    pub(super) fn new(cell: Arc<LayoutCell>, atomic: bool) -> Self {
        Self {
            cell,
            named: None,
            moved_in: Vec::new(),
            atomic,
            parts: HashMap::new(),
            holding: 0,
        }
    }

    /// The current layout, if the inputs grew.
    pub(super) fn layout(&mut self) -> Option<Layout> {
        let l = self.cell.layout()?;
        if self.named != Some(l) {
            self.moved_in = (0..l.from).map(|p| l.moved_in(p)).collect();
            self.named = Some(l);
        }
        Some(l)
    }

    /// Whether partition `p`'s store holds every key moved into it: no
    /// other partition's owner writes its changelog any more.
    pub(super) fn complete<S>(&self, p: i32, store: Option<&Store<S>>) -> bool {
        let Some(l) = self.cell.layout() else {
            return true;
        };
        l.sources(p)
            .iter()
            .all(|&src| store.is_some_and(|s| s.mark(&l.moved_in(src)).is_some()))
    }

    /// Makes sure the layout knows `partitions` before their state is
    /// restored: a consumer may be given a new partition before the
    /// periodic check saw it.
    pub(super) fn know(&self, partitions: &[i32]) {
        if partitions.iter().any(|&p| p >= self.cell.partitions()) {
            if let Err(e) = self.cell.refresh() {
                panic!("cannot grow the state to partition {partitions:?}: {e}");
            }
        }
    }

    /// Starts following partition `p`, restored up to changelog offset
    /// `end`. A new owner of an old partition finds whether a move was
    /// under way: its own marks, and (when the two sides are written
    /// apart) the targets' changelogs.
    pub(super) fn assigned<S>(&mut self, p: i32, end: i64, store: &mut Store<S>, d: &Durability)
    where
        S: Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        let mut part = Part {
            held: VecDeque::new(),
            tail_from: end,
            next_poll: Instant::now(),
            moved: BTreeMap::new(),
            positions: HashMap::new(),
            cut_at: None,
            ready: false,
            unfinished: None,
        };
        if let Some(l) = self.layout() {
            for q in l.targets(p) {
                let cut = match store.mark(&l.moved_out(q)) {
                    Some(v) => Cut::decode(v).ok(),
                    None if !self.atomic => match d.marks_in(q) {
                        Ok(marks) => marks
                            .get(&l.moved_in(p))
                            .and_then(|v| Cut::decode(v).ok())
                            .inspect(|cut| {
                                // Given, its side unwritten: write it now.
                                let keys = store.drop_moved(&l, q);
                                let m = part.unfinished.get_or_insert_with(|| Moving {
                                    keys: BTreeMap::new(),
                                    cut: cut.clone(),
                                });
                                m.keys.insert(q, keys);
                            }),
                        Err(e) => panic!("cannot read changelog partition {q} for a move: {e}"),
                    },
                    None => None,
                };
                if let Some(cut) = cut {
                    part.moved.insert(q, cut);
                }
            }
        }
        if let Some(old) = self.parts.insert(p, part) {
            if !old.held.is_empty() {
                self.holding -= 1;
            }
        }
    }

    pub(super) fn revoked(&mut self, p: i32) {
        if self
            .parts
            .remove(&p)
            .is_some_and(|part| !part.held.is_empty())
        {
            self.holding -= 1;
        }
    }

    /// Buffers `record` if its partition holds records.
    pub(super) fn held(&mut self, record: &RecordRef<'_>) -> bool {
        if self.holding == 0 {
            return false;
        }
        match self.parts.get_mut(&record.partition) {
            Some(part) if !part.held.is_empty() => {
                part.held.push_back(record.to_owned());
                true
            }
            _ => false,
        }
    }

    /// Starts holding `record`'s partition, from it.
    pub(super) fn hold(&mut self, record: &RecordRef<'_>) {
        if let Some(part) = self.parts.get_mut(&record.partition) {
            if part.held.is_empty() {
                self.holding += 1;
            }
            part.held.push_back(record.to_owned());
        }
    }

    /// What to do with a record of `key` at `offset` in partition `p`.
    pub(super) fn verdict<S>(
        &self,
        l: &Layout,
        (topic, p, offset): (&str, i32, i64),
        key: &str,
        store: Option<&Store<S>>,
    ) -> Verdict {
        let (old, new) = (l.old(key.as_bytes()), l.new_partition(key.as_bytes()));
        if !self.parts.contains_key(&p) {
            // Not followed here: nothing to hold it for.
            return Verdict::Process;
        }
        if old != p {
            // Written in the new layout; its state comes from `old`.
            let mark = &self.moved_in[old as usize];
            let arrived = store.is_some_and(|s| s.mark(mark).is_some());
            return if new == p && !arrived {
                Verdict::Hold
            } else {
                Verdict::Process
            };
        }
        if new == p {
            return Verdict::Process;
        }
        match self.parts.get(&p).and_then(|part| part.moved.get(&new)) {
            None => Verdict::Process,
            Some(cut) if cut.before(topic, offset) => Verdict::Skip,
            Some(_) => Verdict::Stale(format!(
                "written in the old partition layout ({} partitions) after the input grew to {}: \
                 the key's state moved to partition {new}; the producer had not refreshed its metadata",
                l.from, l.to
            )),
        }
    }

    /// Notes that the records of `topic` before `next` are processed.
    pub(super) fn processed(&mut self, topic: &str, p: i32, next: i64) {
        if let Some(part) = self.parts.get_mut(&p) {
            match part.positions.get_mut(topic) {
                Some(at) => *at = next.max(*at),
                None => {
                    part.positions.insert(topic.to_owned(), next);
                }
            }
        }
    }

    /// Between polls: takes moved states into partitions holding records
    /// (returning the records they may now process, in order), and moves
    /// old partitions on towards their cut.
    pub(super) fn poll<S>(
        &mut self,
        owned: &mut PartitionStores<S>,
        d: &Durability,
        upgrade: &dyn Upgrade<S>,
    ) -> Vec<Record>
    where
        S: Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        let Some(l) = self.layout() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut released = Vec::new();
        let mut ends = None;
        for (&p, part) in &mut self.parts {
            if part.next_poll > now {
                continue;
            }
            part.next_poll = now + POLL_EVERY;
            if let (Some(first), Some(store)) = (part.held.front(), owned.get_mut(&p)) {
                let key = first.key.as_deref().unwrap_or_default();
                let from = l.old(key);
                match d.take_moved_in(store, &l, p, part.tail_from, upgrade) {
                    Ok(end) => part.tail_from = end,
                    Err(e) => {
                        tracing::warn!("cannot read changelog partition {p} for moved state: {e}")
                    }
                }
                if store.mark(&l.moved_in(from)).is_some() {
                    tracing::info!(
                        "partition {p}: the state moved from partition {from} arrived; {} records held go on",
                        part.held.len()
                    );
                    released.extend(part.held.drain(..));
                    self.holding -= 1;
                }
            }
            let targets = l.targets(p);
            if part.ready || targets.iter().all(|q| part.moved.contains_key(q)) {
                continue;
            }
            if !part.held.is_empty() && part.cut_at.is_none() {
                // An old partition that also receives keys (a growth to
                // other than a multiple) cuts where it started holding:
                // the producers switched, and waiting for its end could
                // wait for a partition that waits for it.
                let committed = self.cell.committed(p, &part.positions).unwrap_or_default();
                let cut = self
                    .cell
                    .inputs
                    .iter()
                    .map(|t| {
                        let at = part.positions.get(t).or(committed.get(t));
                        (t.clone(), at.copied().unwrap_or(0))
                    })
                    .collect();
                tracing::info!(
                    "partition {p}: cut for the move where it holds records, at {cut:?}"
                );
                part.cut_at = Some(cut);
                part.ready = true;
                continue;
            }
            // Producers switched once a new partition has records.
            let ends = match &ends {
                Some(e) => e,
                None => ends.insert(self.cell.input_ends()),
            };
            let Ok(ends) = ends else { continue };
            let switched = self.cell.switched(&l, ends);
            match (&part.cut_at, switched) {
                (None, Some(at)) if at.elapsed() >= GRACE => {
                    let cut = ends
                        .iter()
                        .map(|(t, e)| (t.clone(), e.get(&p).copied().unwrap_or(0)))
                        .collect();
                    tracing::info!("partition {p}: cut for the move at {cut:?}");
                    part.cut_at = Some(cut);
                }
                (Some(cut), _) => {
                    let committed = self.cell.committed(p, &part.positions);
                    part.ready = cut.iter().all(|(t, &at)| {
                        part.positions
                            .get(t)
                            .copied()
                            .or_else(|| committed.as_ref().ok().and_then(|c| c.get(t).copied()))
                            .is_some_and(|pos| pos >= at)
                    });
                }
                _ => {}
            }
        }
        released
    }

    /// Inside a commit: writes what moves are due. An old partition past
    /// its cut sends its moved keys to their partitions; the old
    /// partition's side follows in the same commit when it is atomic, in
    /// the next one otherwise.
    pub(super) fn write<S>(
        &mut self,
        owned: &mut PartitionStores<S>,
        producer: &Producer,
        changelog: &str,
    ) -> Result<usize>
    where
        S: Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        let Some(l) = self.layout() else {
            return Ok(0);
        };
        let mut sent = 0;
        for (&p, part) in &mut self.parts {
            let Some(store) = owned.get_mut(&p) else {
                continue;
            };
            if let Some(m) = part.unfinished.take() {
                store.finish_moving(&l, p, &m, producer, changelog)?;
                sent += m.keys.values().map(Vec::len).sum::<usize>();
            }
            if !part.ready {
                continue;
            }
            part.ready = false;
            let targets: Vec<i32> = l
                .targets(p)
                .into_iter()
                .filter(|q| !part.moved.contains_key(q))
                .collect();
            let cut = Cut(part
                .cut_at
                .take()
                .unwrap_or_default()
                .into_iter()
                .map(|(t, at)| {
                    let pos = part.positions.get(&t).copied().unwrap_or(at).max(at);
                    (t, pos)
                })
                .collect());
            let m = store.move_out(&l, p, &targets, cut.clone(), producer, changelog)?;
            let count: usize = m.keys.values().map(Vec::len).sum();
            sent += count;
            tracing::info!(
                "partition {p}: {count} keys moved to partitions {targets:?} at {:?}",
                cut.0
            );
            for &q in &targets {
                part.moved.insert(q, cut.clone());
            }
            if self.atomic {
                store.finish_moving(&l, p, &m, producer, changelog)?;
            } else {
                part.unfinished = Some(m);
            }
        }
        Ok(sent)
    }

    /// The old partitions past their cut, whose keys are to move now.
    pub(super) fn ready(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, p)| p.ready)
            .map(|(&p, _)| p)
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether a move waits for the next commit.
    pub(super) fn pending(&self) -> bool {
        self.parts
            .values()
            .any(|p| p.ready || p.unfinished.is_some())
    }
}

impl LayoutCell {
    /// When the producers were first seen writing in layout `l`: the new
    /// partitions have records, by `ends`.
    fn switched(&self, l: &Layout, ends: &BTreeMap<String, HashMap<i32, i64>>) -> Option<Instant> {
        let mut switched = self.switched.lock().unwrap();
        if switched.is_none() {
            let fresh = ends
                .values()
                .flat_map(|e| e.iter().filter(|(q, _)| **q >= l.from))
                .any(|(_, &high)| high > 0);
            let waited = self
                .grown_at
                .lock()
                .unwrap()
                .is_some_and(|at| at.elapsed() >= SWITCH_WAIT);
            if fresh || waited {
                *switched = Some(Instant::now());
            }
        }
        *switched
    }

    /// The inputs' end offsets, per topic and partition.
    fn input_ends(&self) -> Result<BTreeMap<String, HashMap<i32, i64>>> {
        let mut ends = BTreeMap::new();
        for t in &self.inputs {
            let info = self.log.describe_topic(t, ADMIN_TIMEOUT)?;
            ends.insert(
                t.clone(),
                info.partitions.iter().map(|p| (p.id, p.high)).collect(),
            );
        }
        Ok(ends)
    }

    /// The group's committed offsets of partition `p`, for the input
    /// topics without a position in `known`.
    fn committed(&self, p: i32, known: &HashMap<String, i64>) -> Result<HashMap<String, i64>> {
        let mut out = HashMap::new();
        for t in self.inputs.iter().filter(|t| !known.contains_key(*t)) {
            for o in self.log.committed_offsets(&self.group, t, ADMIN_TIMEOUT)? {
                if let (true, Some(at)) = (o.partition.partition == p, o.committed) {
                    out.insert(t.clone(), at);
                }
            }
        }
        Ok(out)
    }
}
