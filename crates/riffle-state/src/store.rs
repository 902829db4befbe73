//! Stores: the states of one partition's keys, in memory for speed, each
//! flagged when it changes so that the changelog gets only what changed
//! ([`crate::changelog`]), and the whole written now and then as a
//! snapshot ([`crate::snapshot`]).
//!
//! States are JSON in the changelog and in snapshots, after the version of
//! their type ([`crate::version`]): readable with any Kafka tool. A state
//! type may gain fields (with serde defaults) without losing what was
//! stored; a change that old states do not decode into takes a new version
//! and an upgrade. A stored state that does not decode at all is set aside
//! ([`Store::take_damaged`]) and its key starts afresh: one bad record
//! never keeps a partition from being restored.
//!
//! A key's entry also holds its timers ([`crate::timers`]), and a key can
//! be deleted: the changelog gets a tombstone for it (Kafka's null value,
//! which compaction removes in time), and restore drops the key when it
//! reads one. With a time to live ([`Store::set_ttl`]), keys untouched for
//! that long are deleted so, a sweep at a time: state stays bounded when
//! keys come and go.

/// hashbrown rather than std's map: its default hasher (foldhash, seeded
/// per map) costs a fraction of SipHash per short key, and `entry_ref`
/// finds or inserts a key with one hash, building the owned key only when
/// it is new. A store is looked up once per record.
use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::key::Key;
use crate::timers::{self, Domain, Fired, Index, KeyTimers, Timer, TimerChange};
use crate::version::{decode_state, write_prefix, Damaged, StoredState, Unreadable, Upgrade};
use riffle_base::error::{Error, Result};
use riffle_log::OutRecord;

/// Where changelog records go: the runtime's producer, which sends them
/// inside the open transaction (exactly-once) or before the offsets they
/// cover are committed (at-least-once). A trait so that this layer does
/// not know the runtime above it.
pub trait ChangelogSink {
    fn send(&self, record: OutRecord<'_>) -> Result<()>;
}

/// The prefix of the changelog keys the state layer reserves for its
/// marks ([`Store::mark`], see [`crate::layout`]). A key starting with it
/// is not a processor's key.
pub const MARK_PREFIX: &str = "\u{0}riffle-";

/// Changed keys a store lists however small it is.
const LISTED_MIN: usize = 1024;

/// Keys and their states as JSON, packed: a burst of a million changed
/// keys handed from a worker to its dispatcher costs a few large blocks
/// rather than two small ones per key, and large blocks go back to the
/// system once sent (small ones stay in the allocator's arenas, so the
/// process would keep the peak of such a burst).
#[derive(Default)]
pub struct Encoded {
    keys: String,
    states: Vec<u8>,
    /// Per entry, where its key and its state end.
    ends: Vec<(usize, usize)>,
}

impl Encoded {
    pub(crate) fn push(&mut self, key: &str, state: &[u8]) {
        self.keys.push_str(key);
        self.states.extend_from_slice(state);
        self.ends.push((self.keys.len(), self.states.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn starts(&self, i: usize) -> (usize, usize) {
        match i {
            0 => (0, 0),
            i => self.ends[i - 1],
        }
    }

    fn entry(&self, i: usize) -> (&str, &[u8]) {
        let ((k0, s0), (k1, s1)) = (self.starts(i), self.ends[i]);
        (&self.keys[k0..k1], &self.states[s0..s1])
    }

    /// The last entry.
    pub fn last(&self) -> Option<(&str, &[u8])> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Drops the last entry.
    pub fn pop(&mut self) {
        if let Some(i) = self.len().checked_sub(1) {
            let (k, s) = self.starts(i);
            self.keys.truncate(k);
            self.states.truncate(s);
            self.ends.pop();
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        (0..self.len()).map(|i| self.entry(i))
    }
}

/// A store's record of changed keys, borrowed apart from its entries so
/// that a key can be noted while its entry is in hand.
struct Changed<'a> {
    list: &'a mut Option<Vec<Key>>,
    count: &'a mut usize,
}

impl Changed<'_> {
    /// Counts a newly flagged key of a store of `len` keys, and lists it
    /// while the list is short.
    fn note(self, key: &str, len: usize) {
        *self.count += 1;
        let room = LISTED_MIN.max(len / 8);
        if let Some(list) = self.list {
            if list.len() < room {
                list.push(Key::new(key));
            } else {
                *self.list = None;
            }
        }
    }
}

/// One key's state, its timers, whether it changed since its last
/// changelog write, and when it was last touched (for the time to live).
pub(crate) struct Entry<S> {
    pub(crate) state: Slot<S>,
    pub(crate) dirty: bool,
    /// Seconds since the Unix epoch, as the store's clock said.
    pub(crate) touched: u32,
    pub(crate) timers: KeyTimers,
}

/// A key's state: decoded, or still as a snapshot stored it (its version
/// prefix and JSON, of the store's version), decoded at its first use. A
/// restart then reads a million keys' snapshot without decoding a million
/// states first: most are decoded as their keys' records come, spread over
/// the processing, and some never are.
pub(crate) enum Slot<S> {
    Ready(S),
    Stored(Stored),
}

/// A state as stored, in place in the snapshot file read whole: no copy
/// and no allocation per key. The file's memory goes once every state in
/// it was decoded, replaced or deleted.
pub(crate) struct Stored {
    file: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

impl Stored {
    /// The bytes of `file` at `range`.
    pub(crate) fn new(file: &Arc<Vec<u8>>, range: std::ops::Range<usize>) -> Self {
        Self {
            file: file.clone(),
            start: range.start,
            end: range.end,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.file[self.start..self.end]
    }
}

impl<S: Default + DeserializeOwned> Slot<S> {
    /// Decodes a stored state in place. One that does not decode is set
    /// aside in `damaged`, and the key starts afresh.
    fn ready(&mut self, key: &str, damaged: &mut Vec<Damaged>) -> &mut S {
        if let Slot::Stored(stored) = self {
            let bytes = stored.bytes();
            let decoded = crate::version::split(bytes)
                .and_then(|stored| serde_json::from_slice(stored.json).map_err(|e| e.to_string()));
            let state = decoded.unwrap_or_else(|reason| {
                damaged.push(Damaged {
                    key: key.as_bytes().to_vec(),
                    value: bytes.to_vec(),
                    reason,
                    position: None,
                });
                S::default()
            });
            *self = Slot::Ready(state);
        }
        match self {
            Slot::Ready(state) => state,
            Slot::Stored(_) => unreachable!("decoded above"),
        }
    }
}

impl<S> Entry<S> {
    fn new(state: Slot<S>, touched: u32, timers: KeyTimers) -> Self {
        Self {
            state,
            dirty: false,
            touched,
            timers,
        }
    }
}

/// The states of one partition's keys.
pub struct Store<S> {
    pub(crate) entries: HashMap<Key, Entry<S>>,
    /// Keys changed since their last changelog write, listed while they
    /// are few; `None` once more than an eighth of the keys changed, and
    /// the next write finds them by their flags. (A list of every key after
    /// a burst of new keys would cost a third of the table again.)
    dirty: Option<Vec<Key>>,
    /// Keys flagged changed.
    changed: usize,
    /// Keys changed since the last snapshot, roughly (a hint for when one
    /// is worth writing).
    pub(crate) changed_since_snapshot: usize,
    /// The version of the state type, written with each state.
    version: u32,
    /// Stored states read into this store that did not decode, and are not
    /// superseded by a later one that did.
    damaged: Vec<Damaged>,
    /// Stored states read into this store that were upgraded.
    pub(crate) upgraded: usize,
    /// Keys deleted since the last changelog write: tombstones to write.
    deleted: Vec<Key>,
    /// Every key's timers, in due order.
    timers: Index,
    /// How long a key untouched stays, in seconds.
    ttl: Option<u32>,
    /// The store's clock, in seconds since the Unix epoch: set by its
    /// owner once per batch of records ([`Store::set_now`]), so that
    /// touching a key costs no clock reading.
    now: u32,
    /// When keys were last swept for their time to live.
    swept: u32,
    /// The state layer's own records in this partition's changelog (see
    /// [`crate::layout`]), by key: kept apart from the states.
    pub(crate) marks: BTreeMap<String, Vec<u8>>,
}

impl<S> Default for Store<S> {
    fn default() -> Self {
        Self::new(0)
    }
}

impl<S> Store<S> {
    /// An empty store of states of type version `version`.
    pub fn new(version: u32) -> Self {
        Self {
            entries: HashMap::new(),
            dirty: Some(Vec::new()),
            changed: 0,
            changed_since_snapshot: 0,
            version,
            damaged: Vec::new(),
            upgraded: 0,
            deleted: Vec::new(),
            timers: Index::default(),
            ttl: None,
            now: 0,
            swept: 0,
            marks: BTreeMap::new(),
        }
    }

    /// The value of mark `key` (see [`crate::layout`]), if this partition's
    /// changelog holds it.
    pub fn mark(&self, key: &str) -> Option<&[u8]> {
        self.marks.get(key).map(Vec::as_slice)
    }

    /// Every mark, by key.
    pub fn marks(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.marks.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Notes a mark written to this partition's changelog.
    pub fn set_mark(&mut self, key: &str, value: &[u8]) {
        self.marks.insert(key.to_owned(), value.to_vec());
    }

    /// Keys untouched (no record, no timer set) for `ttl` are deleted by
    /// [`Store::expire`]; `None` keeps them for ever. Keys with timers
    /// pending are kept: their processor means to come back to them.
    pub fn set_ttl(&mut self, ttl: Option<std::time::Duration>) {
        self.ttl = ttl.map(|d| d.as_secs().clamp(1, u32::MAX as u64) as u32);
    }

    /// Sets the store's clock to `now_ms` (milliseconds since the Unix
    /// epoch): keys touched from now on count as touched then.
    pub fn set_now(&mut self, now_ms: i64) {
        self.now = (now_ms / 1000).clamp(0, u32::MAX as i64) as u32;
        if self.swept == 0 {
            self.swept = self.now;
        }
    }

    /// The earliest time a timer of `domain` is due in this store.
    pub fn next_due(&self, domain: Domain) -> Option<i64> {
        self.timers.next(domain)
    }

    /// How many timers the store's keys have.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// The version of the state type this store writes.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The stored states that did not decode, not taken yet.
    pub fn damaged(&self) -> &[Damaged] {
        &self.damaged
    }

    /// The stored states that did not decode since the last call: their
    /// keys are absent from the store (they start afresh).
    pub fn take_damaged(&mut self) -> Vec<Damaged> {
        std::mem::take(&mut self.damaged)
    }
}

impl<S: Default + Serialize + DeserializeOwned> Store<S> {
    /// The state of `key`, created with `Default` if new, marked changed.
    pub fn get_mut(&mut self, key: &str) -> &mut S {
        let len = self.entries.len();
        let entry = match self.entries.entry_ref(key) {
            EntryRef::Occupied(e) => e.into_mut(),
            EntryRef::Vacant(e) => e.insert_with_key(
                Key::new(key),
                Entry::new(Slot::Ready(S::default()), self.now, KeyTimers::default()),
            ),
        };
        let state = entry.state.ready(key, &mut self.damaged);
        entry.touched = self.now;
        if !std::mem::replace(&mut entry.dirty, true) {
            self.changed_since_snapshot += 1;
            Changed {
                list: &mut self.dirty,
                count: &mut self.changed,
            }
            .note(key, len);
        }
        state
    }

    /// Starts afresh the key of a state that did not decode (from
    /// [`Store::take_damaged`]): a fresh state, written with the next
    /// changes so that the next restore does not meet the damaged one.
    /// A key deleted since keeps its tombstone instead.
    pub fn start_afresh(&mut self, key: &str) {
        if self.entries.contains_key(key) || !self.deleted.iter().any(|k| k.as_str() == key) {
            self.get_mut(key);
        }
    }

    /// Deletes `key`: its state and timers are gone, and the next changelog
    /// write sends a tombstone for it. A later [`Store::get_mut`] starts it
    /// afresh.
    pub fn remove(&mut self, key: &str) -> Option<S> {
        let mut entry = self.delete(key)?;
        let damaged = self.damaged.len();
        entry.state.ready(key, &mut self.damaged);
        match entry.state {
            Slot::Ready(state) if self.damaged.len() == damaged => Some(state),
            _ => None,
        }
    }

    /// Takes `key`'s entry out, with its timers, as if it never was here:
    /// no tombstone is written for it.
    pub(crate) fn take_entry(&mut self, key: &str) -> Option<Entry<S>> {
        let (key, entry) = self.entries.remove_entry(key)?;
        self.timers.remove_all(&key, &entry.timers);
        if entry.dirty {
            self.changed -= 1;
        }
        self.changed_since_snapshot += 1;
        Some(entry)
    }

    /// Takes the keys `which` picks out of the store, with their states
    /// and timers, into a store of their own; no tombstone is written for
    /// them here.
    pub fn take_where(&mut self, which: impl Fn(&str) -> bool) -> Self {
        let mut out = Self::new(self.version);
        (out.ttl, out.now) = (self.ttl, self.now);
        let keys: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| which(k.as_str()))
            .cloned()
            .collect();
        for k in keys {
            let entry = self.take_entry(&k).expect("listed above");
            for t in entry.timers.iter() {
                out.timers.add(&k, t);
            }
            out.entries.insert(k, entry);
        }
        out
    }

    /// Takes every key out (as [`Store::take_where`]), leaving the marks.
    pub fn take_states(&mut self) -> Self {
        self.take_where(|_| true)
    }

    /// Adds `other`'s keys, with their states and timers, replacing any
    /// held; `other`'s marks are not taken.
    pub fn absorb(&mut self, other: Self) {
        for (k, e) in other.entries {
            if let Some(old) = self.entries.remove(k.as_str()) {
                self.timers.remove_all(&k, &old.timers);
                if old.dirty {
                    self.changed -= 1;
                }
            }
            for t in e.timers.iter() {
                self.timers.add(&k, t);
            }
            let dirty = e.dirty;
            self.entries.insert(k.clone(), e);
            if dirty {
                self.list_changed(&k);
            }
        }
    }

    /// [`Store::remove`] without decoding the state.
    fn delete(&mut self, key: &str) -> Option<Entry<S>> {
        let (key, entry) = self.entries.remove_entry(key)?;
        self.timers.remove_all(&key, &entry.timers);
        if entry.dirty {
            self.changed -= 1;
        }
        self.changed_since_snapshot += 1;
        self.deleted.push(key);
        Some(entry)
    }

    /// Applies what a processor asked of `key`'s timers; the key's entry
    /// is created if new, and marked changed.
    pub fn change_timers(&mut self, key: &str, changes: impl IntoIterator<Item = TimerChange>) {
        let mut changes = changes.into_iter().peekable();
        if changes.peek().is_none() {
            return;
        }
        self.get_mut(key);
        let (key, entry) = self
            .entries
            .get_key_value_mut(key)
            .expect("the entry was just made");
        for change in changes {
            let (old, new) = timers::apply(&mut entry.timers, change);
            if let Some(old) = old {
                self.timers.remove(key, &old);
            }
            if let Some(new) = new {
                self.timers.add(key, &new);
            }
        }
    }

    /// Takes the first timer of `domain` due at or before `upto` from its
    /// key, whose entry is marked changed (the timer is gone from what is
    /// stored). `None` when nothing is due.
    pub fn pop_due(&mut self, domain: Domain, upto: i64) -> Option<Fired> {
        loop {
            let fired = self.timers.pop_due(domain, upto)?;
            let Some(entry) = self.entries.get_mut(fired.key.as_str()) else {
                continue;
            };
            if !timers::take(&mut entry.timers, &fired.name, fired.at) {
                continue;
            }
            self.get_mut(&fired.key);
            return Some(fired);
        }
    }

    /// Deletes the keys untouched for the time to live, at most once a
    /// quarter of it; returns how many. The table shrinks when most of it
    /// is empty, so memory follows the keys down.
    pub fn expire(&mut self) -> usize {
        let Some(ttl) = self.ttl else {
            return 0;
        };
        if self.now < self.swept.saturating_add((ttl / 4).max(1)) {
            return 0;
        }
        self.swept = self.now;
        let (now, limit) = (self.now, self.now.saturating_sub(ttl));
        let mut old: Vec<Key> = Vec::new();
        for (k, e) in self.entries.iter_mut() {
            if e.touched == 0 {
                // Restored before the store had a clock: its time starts now.
                e.touched = now;
            } else if e.touched < limit && e.timers.is_empty() {
                old.push(k.clone());
            }
        }
        for k in &old {
            self.delete(k);
        }
        if self.entries.capacity() > 4 * self.entries.len() + 1024 {
            self.entries.shrink_to(2 * self.entries.len());
        }
        old.len()
    }

    /// Counts a newly flagged key, and lists it while the list is short.
    fn list_changed(&mut self, key: &str) {
        let len = self.entries.len();
        Changed {
            list: &mut self.dirty,
            count: &mut self.changed,
        }
        .note(key, len);
    }

    /// Hands every changed key's state, encoded, to `out` and marks it
    /// unchanged; at the first error, stops with the rest still marked.
    /// Deleted keys come first, as an empty state (a tombstone).
    fn drain_changes(&mut self, mut out: impl FnMut(&Key, &[u8]) -> Result<()>) -> Result<usize> {
        let mut buf = Vec::new();
        let mut sent = 0;
        while let Some(key) = self.deleted.last() {
            out(key, &[])?;
            self.deleted.pop();
            sent += 1;
        }
        if self.deleted.capacity() > LISTED_MIN {
            self.deleted.shrink_to(LISTED_MIN);
        }
        match &mut self.dirty {
            Some(list) => {
                while let Some(key) = list.pop() {
                    // Gone, or listed twice (deleted and made again).
                    let Some(entry) = self.entries.get_mut(key.as_str()).filter(|e| e.dirty) else {
                        continue;
                    };
                    if let Err(e) =
                        encode(&key, self.version, entry, &mut buf).and_then(|()| out(&key, &buf))
                    {
                        list.push(key);
                        return Err(e);
                    }
                    entry.dirty = false;
                    self.changed -= 1;
                    sent += 1;
                }
                list.shrink_to(LISTED_MIN);
            }
            None => {
                for (key, entry) in self.entries.iter_mut().filter(|(_, e)| e.dirty) {
                    encode(key, self.version, entry, &mut buf)?;
                    out(key, &buf)?;
                    entry.dirty = false;
                    self.changed -= 1;
                    sent += 1;
                }
                self.dirty = Some(Vec::new());
            }
        }
        Ok(sent)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of `key`, if it has one (decoded now if it was not yet;
    /// one that does not decode is set aside, and the key has none).
    pub fn get(&mut self, key: &str) -> Option<&S> {
        let damaged = self.damaged.len();
        self.entries
            .get_mut(key)?
            .state
            .ready(key, &mut self.damaged);
        if self.damaged.len() > damaged {
            if let Some((k, e)) = self.entries.remove_entry(key) {
                self.timers.remove_all(&k, &e.timers);
            }
            return None;
        }
        match &self.entries.get(key)?.state {
            Slot::Ready(state) => Some(state),
            Slot::Stored(_) => None,
        }
    }

    pub fn has_changes(&self) -> bool {
        self.changed > 0 || !self.deleted.is_empty()
    }

    pub fn changed_since_snapshot(&self) -> usize {
        self.changed_since_snapshot
    }

    /// Sends every changed key's state to `partition` of the changelog and
    /// marks them unchanged; returns how many were sent.
    pub fn write_changes(
        &mut self,
        producer: &dyn ChangelogSink,
        changelog: &str,
        partition: i32,
    ) -> Result<usize> {
        self.drain_changes(|key, value| {
            producer.send(changelog_record(changelog, partition, key, value))
        })
    }

    /// Every changed key's state, encoded, the keys marked unchanged: for
    /// sending elsewhere (the key-independent style's workers hand them to
    /// their dispatcher, which sends them when the outputs are safe).
    pub fn take_changes(&mut self) -> Result<Encoded> {
        let mut out = Encoded::default();
        self.drain_changes(|key, value| {
            out.push(key, value);
            Ok(())
        })?;
        Ok(out)
    }

    /// Applies one stored state of `key` (a changelog record at
    /// `position`): it replaces the key's state, upgraded if older; one
    /// that does not decode removes it and is set aside. Fails only for a
    /// state written by a newer version of the type, which this program
    /// must not overwrite.
    pub(crate) fn apply(
        &mut self,
        key: &[u8],
        value: &[u8],
        position: Option<(i32, i64)>,
        upgrade: &dyn Upgrade<S>,
    ) -> Result<()> {
        if key.starts_with(MARK_PREFIX.as_bytes()) {
            if let Ok(k) = std::str::from_utf8(key) {
                match value {
                    [] => self.marks.remove(k),
                    v => self.marks.insert(k.to_owned(), v.to_vec()),
                };
                self.changed_since_snapshot += 1;
            }
            return Ok(());
        }
        if value.is_empty() {
            // A tombstone: the key was deleted.
            if let Some((k, e)) = std::str::from_utf8(key)
                .ok()
                .and_then(|k| self.entries.remove_entry(k))
            {
                self.timers.remove_all(&k, &e.timers);
            }
            return Ok(());
        }
        let Some((key, state, timers)) = self.decode_stored(key, value, position, upgrade)? else {
            return Ok(());
        };
        self.insert_stored(key, state, timers);
        Ok(())
    }

    /// Puts a stored key's state and timers in place, replacing any.
    pub(crate) fn insert_stored(&mut self, key: &str, state: Slot<S>, timers: KeyTimers) {
        let key = Key::new(key);
        if let Some(old) = self.entries.get(key.as_str()) {
            self.timers.remove_all(&key, &old.timers);
        }
        for t in timers.iter() {
            self.timers.add(&key, t);
        }
        self.entries
            .insert(key, Entry::new(state, self.now, timers));
    }

    /// A stored state of the store's version, kept as stored until its key
    /// is used ([`Slot`]); older versions are upgraded now, through
    /// [`Store::decode_stored`]. `key` and `value` are in `file`, which the
    /// store then holds on to.
    pub(crate) fn decode_lazily<'k>(
        &mut self,
        file: &Arc<Vec<u8>>,
        key: &'k [u8],
        value: &[u8],
        upgrade: &dyn Upgrade<S>,
    ) -> Result<Option<(&'k str, Slot<S>, KeyTimers)>> {
        if let (Ok(k), Ok((timers, rest))) = (std::str::from_utf8(key), timers::split(value)) {
            if crate::version::split(rest).is_ok_and(|v| v.version == self.version) {
                let start = rest.as_ptr() as usize - file.as_ptr() as usize;
                let stored = Stored::new(file, start..start + rest.len());
                return Ok(Some((k, Slot::Stored(stored), timers)));
            }
        }
        self.decode_stored(key, value, None, upgrade)
    }

    /// Adds a key known to be new (a snapshot holds each key once).
    pub(crate) fn insert_new(&mut self, key: &str, state: Slot<S>, timers: KeyTimers) {
        let key = Key::new(key);
        for t in timers.iter() {
            self.timers.add(&key, t);
        }
        self.entries
            .insert(key, Entry::new(state, self.now, timers));
    }

    /// A stored state of `key` as the current type; `None`, with the key
    /// removed and the state set aside, when it does not decode.
    pub(crate) fn decode_stored<'k>(
        &mut self,
        key: &'k [u8],
        value: &[u8],
        position: Option<(i32, i64)>,
        upgrade: &dyn Upgrade<S>,
    ) -> Result<Option<(&'k str, Slot<S>, KeyTimers)>> {
        let decoded = match std::str::from_utf8(key) {
            Ok(k) => timers::split(value)
                .map_err(Unreadable::Damaged)
                .and_then(|(t, rest)| decode_state(rest, upgrade).map(|d| (k, d, t))),
            Err(_) => Err(Unreadable::Damaged("the key is not UTF-8".into())),
        };
        match decoded {
            Ok((key, (state, upgraded), timers)) => {
                self.upgraded += usize::from(upgraded);
                if !self.damaged.is_empty() {
                    // Superseded by a state that decodes.
                    self.damaged.retain(|d| d.key != key.as_bytes());
                }
                Ok(Some((key, Slot::Ready(state), timers)))
            }
            Err(Unreadable::Newer(v)) => Err(Error::Decode(format!(
                "the state of '{}' is of version {v}, newer than this program's {}: run the newer program",
                String::from_utf8_lossy(key),
                self.version
            ))),
            Err(Unreadable::Damaged(reason)) => {
                if let Some((k, e)) = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| self.entries.remove_entry(k))
                {
                    self.timers.remove_all(&k, &e.timers);
                }
                self.damaged.retain(|d| d.key != key);
                self.damaged.push(Damaged {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    reason,
                    position,
                });
                Ok(None)
            }
        }
    }

    /// Every key's state, encoded as in the changelog.
    pub fn encoded(&self) -> Result<Encoded> {
        let mut out = Encoded::default();
        let mut buf = Vec::new();
        for (k, e) in &self.entries {
            encode(k, self.version, e, &mut buf)?;
            out.push(k, &buf);
        }
        Ok(out)
    }

    /// Splits the store by `which(key)`, into `n` stores.
    pub fn split(self, n: usize, which: impl Fn(&str) -> usize) -> Vec<Self> {
        let mut parts: Vec<Self> = (0..n)
            .map(|_| {
                let mut s = Self::new(self.version);
                (s.ttl, s.now, s.swept) = (self.ttl, self.now, self.swept);
                s
            })
            .collect();
        if let Some(first) = parts.first_mut() {
            first.marks = self.marks;
        }
        for k in self.deleted {
            parts[which(&k)].deleted.push(k);
        }
        for (k, e) in self.entries {
            let part = &mut parts[which(&k)];
            let dirty = e.dirty;
            for t in e.timers.iter() {
                part.timers.add(&k, t);
            }
            part.entries.insert(k.clone(), e);
            if dirty {
                part.list_changed(&k);
            }
        }
        parts
    }
}

/// A stored value (a changelog record's, or a snapshot entry's) read
/// apart: the key's timers, and its state's version and JSON. For tools
/// and tests that look at what was stored; a store reads it itself.
pub fn read_stored(value: &[u8]) -> std::result::Result<(Vec<Timer>, StoredState<'_>), String> {
    let (timers, rest) = timers::split(value)?;
    let state = crate::version::split(rest)?;
    Ok((timers.into_vec(), state))
}

/// The changelog record of a key's stored state; an empty one (a deleted
/// key) is a tombstone.
pub(crate) fn changelog_record<'a>(
    changelog: &'a str,
    partition: i32,
    key: &'a str,
    value: &'a [u8],
) -> OutRecord<'a> {
    match value {
        [] => OutRecord::tombstone(changelog, key.as_bytes(), Some(partition)),
        value => OutRecord {
            partition: Some(partition),
            ..OutRecord::new(changelog, Some(key.as_bytes()), value)
        },
    }
}

/// An entry as stored: its timers, its state's version prefix, then its
/// JSON, into `buf`.
pub(crate) fn encode<S: Serialize>(
    key: &str,
    version: u32,
    entry: &Entry<S>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.clear();
    timers::write_prefix(&entry.timers, buf);
    match &entry.state {
        // Still as stored, prefix and all.
        Slot::Stored(stored) => {
            buf.extend_from_slice(stored.bytes());
            Ok(())
        }
        Slot::Ready(state) => {
            write_prefix(version, buf);
            serde_json::to_writer(&mut *buf, state)
                .map_err(|e| Error::InvalidInput(format!("cannot encode state of '{key}': {e}")))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn store(n: usize) -> Store<Vec<u32>> {
        let mut s: Store<Vec<u32>> = Store::default();
        for i in 0..n {
            s.get_mut(&format!("key-{i}")).push(i as u32);
        }
        s
    }

    /// A state left as a snapshot stored it, damaged, and its key deleted
    /// before any use: reported, and not brought back by starting afresh.
    #[test]
    fn a_deleted_key_with_a_damaged_stored_state_stays_deleted() {
        let file = Arc::new(b"@0 {\"x\":1}@0 {broken".to_vec());
        let mut s: Store<serde_json::Value> = Store::new(0);
        s.insert_new(
            "good",
            Slot::Stored(Stored::new(&file, 0..10)),
            KeyTimers::default(),
        );
        s.insert_new(
            "bad",
            Slot::Stored(Stored::new(&file, 10..20)),
            KeyTimers::default(),
        );
        assert_eq!(s.remove("bad"), None);
        let damaged = s.take_damaged();
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].value, b"@0 {broken");
        s.start_afresh("bad");
        assert_eq!(s.get("bad"), None, "deleted, not started afresh");
        assert_eq!(s.take_changes().unwrap().last(), Some(("bad", &b""[..])));
        assert_eq!(s.get("good"), Some(&serde_json::json!({"x": 1})));
        // A damaged key found on its first read starts afresh.
        s.insert_new(
            "worse",
            Slot::Stored(Stored::new(&file, 10..20)),
            KeyTimers::default(),
        );
        assert_eq!(s.get("worse"), None);
        assert_eq!(s.take_damaged().len(), 1);
        s.start_afresh("worse");
        assert_eq!(s.get("worse"), Some(&serde_json::Value::Null));
    }

    #[test]
    fn encoded_entries_are_packed_and_popped_from_the_end() {
        let mut e = Encoded::default();
        e.push("a", b"1");
        e.push("", b"");
        e.push("k\u{e9}y", br#"{"x":2}"#);
        assert_eq!(e.len(), 3);
        let all: Vec<(&str, &[u8])> = e.iter().collect();
        assert_eq!(
            all,
            [("a", &b"1"[..]), ("", b""), ("k\u{e9}y", br#"{"x":2}"#)]
        );
        assert_eq!(e.last(), Some(("k\u{e9}y", &br#"{"x":2}"#[..])));
        e.pop();
        assert_eq!(e.last(), Some(("", &b""[..])));
        e.pop();
        e.pop();
        assert_eq!((e.len(), e.last()), (0, None));
        e.pop();
        assert_eq!(e.keys.len() + e.states.len(), 0);
    }

    /// Past the listed share, changes are found by their flags: each is
    /// still taken once, and the list serves the next few again.
    #[test]
    fn many_changes_are_taken_once_each_listed_or_not() {
        for n in [10, LISTED_MIN + 10, 20_000] {
            let mut s = store(n);
            let taken = s.take_changes().unwrap();
            let mut keys: Vec<&str> = taken.iter().map(|(k, _)| k).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), n, "{n} keys");
            assert_eq!(taken.len(), n, "{n} keys");
            assert!(!s.has_changes());
            assert_eq!(s.take_changes().unwrap().len(), 0);
            assert!(s.dirty.is_some(), "listing again after a write");

            s.get_mut("key-3").push(7);
            s.get_mut("key-3").push(8);
            s.get_mut("key-new").push(9);
            let taken = s.take_changes().unwrap();
            let mut keys: Vec<&str> = taken.iter().map(|(k, _)| k).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["key-3", "key-new"]);
            assert!(!s.has_changes());
        }
    }

    #[test]
    fn a_key_deleted_and_made_again_is_written_once_after_its_tombstone() {
        let mut s: Store<u32> = Store::default();
        *s.get_mut("a") = 1;
        s.remove("a");
        *s.get_mut("a") = 2;
        *s.get_mut("b") = 3;
        let changes = s.take_changes().unwrap();
        let all: Vec<(&str, &[u8])> = changes.iter().collect();
        assert_eq!(all, [("a", &b""[..]), ("b", b"3"), ("a", b"2")]);
        assert!(!s.has_changes());
    }

    #[test]
    fn changes_are_written_once_per_key_until_changed_again() {
        use riffle_log::embedded::EmbeddedLog;
        use riffle_log::{Log, LogProducer, TopicSpec};
        use std::time::Duration;
        struct Direct(Box<dyn LogProducer>);
        impl ChangelogSink for Direct {
            fn send(&self, record: OutRecord<'_>) -> Result<()> {
                self.0.send(record)
            }
        }
        let log = EmbeddedLog::new();
        log.create_topic(&TopicSpec::new("cl", 2), Duration::from_secs(1))
            .unwrap();
        let producer = Direct(log.producer(None).unwrap());
        let mut s: Store<u32> = Store::default();
        for _ in 0..5 {
            *s.get_mut("a") += 1;
            *s.get_mut("b") += 1;
        }
        assert_eq!(s.write_changes(&producer, "cl", 1).unwrap(), 2);
        assert!(!s.has_changes());
        assert_eq!(s.write_changes(&producer, "cl", 1).unwrap(), 0);
        *s.get_mut("a") += 1;
        assert_eq!(s.write_changes(&producer, "cl", 1).unwrap(), 1);
        let info = log.describe_topic("cl", Duration::from_secs(1)).unwrap();
        assert_eq!(info.partitions[1].high, 3, "written to the given partition");
        assert_eq!(info.partitions[0].high, 0);
    }
}
