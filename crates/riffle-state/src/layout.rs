//! Partition growth: moving keys' state when the input topic gains
//! partitions (see `docs/partition-growth.md`).
//!
//! State is grouped by input partition, and a key's partition is
//! `murmur2(key) % partitions`: when the input grows from `from` to `to`
//! partitions, a key of old partition `p` may now belong to another
//! partition `q`. Its state moves from changelog partition `p` to `q`,
//! written by `p`'s owner once it has processed every record the producers
//! wrote for the key in the old layout; `q`'s owner holds the key's new
//! records until that state is there.
//!
//! Both sides meet in the changelog, through *marks*: records under
//! reserved keys, kept by compaction for ever, that a store holds apart
//! from its states ([`Store::mark`]):
//!
//! - in `q`, [`Layout::moved_in`]`(p)`: every key `p` gives `q` is written
//!   before it (the receiver may process those keys);
//! - in `p`, [`Layout::moved_out`]`(q)`: `p` gave `q` its keys (a record of
//!   such a key found in `p` afterwards is one it already counted, or one
//!   written in the old layout too late).
//!
//! Both carry the [`Cut`]: the input offsets up to which the old partition
//! was processed when its keys moved.

use std::collections::BTreeMap;

use riffle_base::error::{Error, Result};
use riffle_log::{partition_for_key, RecordRef};

use crate::changelog::Durability;
use crate::store::{changelog_record, ChangelogSink, Store};
use crate::version::Upgrade;
use crate::Key;

pub use crate::store::MARK_PREFIX;

/// One growth of the input: from `from` partitions to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub from: i32,
    pub to: i32,
}

impl Layout {
    /// The key's partition before the growth.
    pub fn old(&self, key: &[u8]) -> i32 {
        partition_for_key(key, self.from)
    }

    /// The key's partition after the growth.
    pub fn new_partition(&self, key: &[u8]) -> i32 {
        partition_for_key(key, self.to)
    }

    /// The partitions old partition `p` gives keys to. A hash `h` goes
    /// from `h % from` to `h % to`; both are possible together exactly
    /// when they agree modulo `gcd(from, to)`.
    pub fn targets(&self, p: i32) -> Vec<i32> {
        if p >= self.from {
            return Vec::new();
        }
        let g = gcd(self.from, self.to);
        (0..self.to)
            .filter(|&q| q != p && (q - p) % g == 0)
            .collect()
    }

    /// The old partitions that give partition `q` keys.
    pub fn sources(&self, q: i32) -> Vec<i32> {
        let g = gcd(self.from, self.to);
        (0..self.from)
            .filter(|&p| p != q && (q - p) % g == 0)
            .collect()
    }

    /// The mark, in changelog partition `q`, that `p`'s keys are there.
    pub fn moved_in(&self, p: i32) -> String {
        format!("{MARK_PREFIX}grown-{}-{}:from:{p}", self.from, self.to)
    }

    /// The mark, in changelog partition `p`, that `p` gave `q` its keys.
    pub fn moved_out(&self, q: i32) -> String {
        format!("{MARK_PREFIX}grown-{}-{}:to:{q}", self.from, self.to)
    }

    /// The layout as one number (0 is none), for an atomic cell.
    pub fn pack(layout: Option<Self>) -> u64 {
        layout.map_or(0, |l| ((l.from as u64) << 32) | l.to as u32 as u64)
    }

    pub fn unpack(packed: u64) -> Option<Self> {
        (packed != 0).then_some(Self {
            from: (packed >> 32) as i32,
            to: packed as u32 as i32,
        })
    }

    /// As recorded in the app's layout topic: `from,to`.
    pub fn encode(&self) -> String {
        format!("{},{}", self.from, self.to)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || {
            Error::Decode(format!(
                "partition layout '{}' is not 'from,to'",
                String::from_utf8_lossy(bytes)
            ))
        };
        let s = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let (a, b) = s.split_once(',').ok_or_else(bad)?;
        let (from, to) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if from < 1 || to <= from {
            return Err(bad());
        }
        Ok(Self { from, to })
    }
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Where an old partition was cut: per input topic, the offset before
/// which its records were processed when its keys moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cut(pub BTreeMap<String, i64>);

impl Cut {
    /// Whether the record at `offset` of `topic` came before the cut: it
    /// was counted in the state that moved.
    pub fn before(&self, topic: &str, offset: i64) -> bool {
        self.0.get(topic).is_some_and(|&cut| offset < cut)
    }

    /// One `topic offset` line per input topic.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (t, o) in &self.0 {
            out.push_str(&format!("{t} {o}\n"));
        }
        out.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Decode("a partition growth mark does not decode".into());
        let s = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let mut cut = BTreeMap::new();
        for line in s.lines() {
            let (t, o) = line.rsplit_once(' ').ok_or_else(bad)?;
            cut.insert(t.to_owned(), o.parse().map_err(|_| bad())?);
        }
        Ok(Self(cut))
    }
}

/// The keys old partition `p` moved out, with what is left to write.
pub struct Moving {
    /// Per target partition, the keys given to it.
    pub keys: BTreeMap<i32, Vec<Key>>,
    pub cut: Cut,
}

impl<S: Default + serde::Serialize + serde::de::DeserializeOwned> Store<S> {
    /// The first half of moving old partition `p`'s keys out: takes every
    /// key that now belongs to one of `targets` out of the store and sends
    /// its state (and timers) to that partition of the changelog, then the
    /// target's [`Layout::moved_in`] mark. Changes of the store's other
    /// keys are not written. What was sent must be acknowledged before
    /// [`Store::finish_moving`] writes the old partition's side.
    pub fn move_out(
        &mut self,
        layout: &Layout,
        p: i32,
        targets: &[i32],
        cut: Cut,
        sink: &dyn ChangelogSink,
        changelog: &str,
    ) -> Result<Moving> {
        let mut keys: BTreeMap<i32, Vec<Key>> = targets.iter().map(|&q| (q, Vec::new())).collect();
        for k in self.entries.keys() {
            if let Some(list) = keys.get_mut(&layout.new_partition(k.as_str().as_bytes())) {
                list.push(k.clone());
            }
        }
        let mut buf = Vec::new();
        let value = cut.encode();
        for (&q, list) in &keys {
            for k in list {
                let entry = self.take_entry(k).expect("listed above");
                crate::store::encode(k.as_str(), self.version(), &entry, &mut buf)?;
                sink.send(changelog_record(changelog, q, k.as_str(), &buf))?;
            }
            let mark = layout.moved_in(p);
            sink.send(changelog_record(changelog, q, &mark, &value))?;
        }
        Ok(Moving { keys, cut })
    }

    /// The second half: tombstones for the moved keys and the
    /// [`Layout::moved_out`] marks, in old partition `p`.
    pub fn finish_moving(
        &mut self,
        layout: &Layout,
        p: i32,
        moving: &Moving,
        sink: &dyn ChangelogSink,
        changelog: &str,
    ) -> Result<()> {
        let value = moving.cut.encode();
        for (&q, list) in &moving.keys {
            for k in list {
                sink.send(changelog_record(changelog, p, k.as_str(), &[]))?;
            }
            let mark = layout.moved_out(q);
            sink.send(changelog_record(changelog, p, &mark, &value))?;
            self.set_mark(&mark, &value);
        }
        Ok(())
    }

    /// Drops the keys that now belong to partition `q`, as after a
    /// [`Store::move_out`] to it (found done, in its changelog, by a new
    /// owner of `p`); returns them.
    pub fn drop_moved(&mut self, layout: &Layout, q: i32) -> Vec<Key> {
        let keys: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| layout.new_partition(k.as_str().as_bytes()) == q)
            .cloned()
            .collect();
        for k in &keys {
            self.take_entry(k);
        }
        keys
    }
}

impl Durability {
    /// Brings the keys moved into partition `q` into `store`: reads `q`'s
    /// changelog from `from` and applies the states of keys that came from
    /// a source whose [`Layout::moved_in`] mark the store does not hold yet
    /// (the rest, written by `q`'s owner, the store has), and the marks.
    /// Returns the offset to read on from.
    pub fn take_moved_in<S: Default + serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        store: &mut Store<S>,
        layout: &Layout,
        q: i32,
        from: i64,
        upgrade: &dyn Upgrade<S>,
    ) -> Result<i64> {
        self.log.read_partition(
            &self.changelog,
            q,
            from,
            self.read_committed,
            std::time::Duration::from_secs(10),
            &mut |r: RecordRef<'_>| {
                let Some(key) = r.key else { return Ok(()) };
                let src = layout.old(key);
                let theirs = key.starts_with(MARK_PREFIX.as_bytes())
                    || (src != q && store.mark(&layout.moved_in(src)).is_none());
                if theirs {
                    store.apply(key, r.value, Some((q, r.offset)), upgrade)?;
                }
                Ok(())
            },
        )
    }

    /// The marks in changelog partition `q`, read from its start.
    pub fn marks_in(&self, q: i32) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut marks = BTreeMap::new();
        self.log.read_partition(
            &self.changelog,
            q,
            0,
            self.read_committed,
            std::time::Duration::from_secs(30),
            &mut |r: RecordRef<'_>| {
                if let Some(k) = r.key.and_then(|k| std::str::from_utf8(k).ok()) {
                    if k.starts_with(MARK_PREFIX) {
                        marks.insert(k.to_owned(), r.value.to_vec());
                    }
                }
                Ok(())
            },
        )?;
        Ok(marks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_doubling_moves_keys_to_one_new_partition_each() {
        let l = Layout { from: 10, to: 20 };
        assert_eq!(l.targets(3), vec![13]);
        assert_eq!(l.sources(13), vec![3]);
        assert!(l.sources(3).is_empty());
        for i in 0..1000 {
            let k = format!("heater-{i:04}");
            let (o, n) = (l.old(k.as_bytes()), l.new_partition(k.as_bytes()));
            assert!(n == o || l.targets(o).contains(&n), "{k}: {o} -> {n}");
        }
    }

    #[test]
    fn an_uneven_growth_moves_keys_between_old_partitions_too() {
        let l = Layout { from: 3, to: 5 };
        assert_eq!(l.targets(0), vec![1, 2, 3, 4]);
        assert_eq!(l.sources(1), vec![0, 2]);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2000 {
            let k = format!("k{i}");
            let (o, n) = (l.old(k.as_bytes()), l.new_partition(k.as_bytes()));
            if o != n {
                assert!(l.targets(o).contains(&n) && l.sources(n).contains(&o));
                seen.insert((o, n));
            }
        }
        // Every pair the arithmetic allows is taken by some key.
        let all: usize = (0..3).map(|p| l.targets(p).len()).sum();
        assert_eq!(seen.len(), all);
    }

    #[test]
    fn layouts_and_cuts_round_trip() {
        let l = Layout { from: 10, to: 20 };
        assert_eq!(Layout::unpack(Layout::pack(Some(l))), Some(l));
        assert_eq!(Layout::unpack(Layout::pack(None)), None);
        assert_eq!(Layout::decode(l.encode().as_bytes()).unwrap(), l);
        assert!(Layout::decode(b"20,10").is_err());
        let cut = Cut(BTreeMap::from([("a b".to_owned(), 7), ("c".to_owned(), 0)]));
        assert_eq!(Cut::decode(&cut.encode()).unwrap(), cut);
        assert!(cut.before("a b", 6) && !cut.before("a b", 7) && !cut.before("x", 0));
    }

    /// What a store sent: (partition, key, value).
    #[derive(Default)]
    struct Sent(std::cell::RefCell<Vec<(i32, String, Vec<u8>)>>);

    impl ChangelogSink for Sent {
        fn send(&self, r: riffle_log::OutRecord<'_>) -> Result<()> {
            let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
            let value = r.value_bytes().to_vec();
            self.0.borrow_mut().push((r.partition.unwrap(), key, value));
            Ok(())
        }
    }

    impl Sent {
        fn take(&self) -> Vec<(i32, String, Vec<u8>)> {
            std::mem::take(&mut *self.0.borrow_mut())
        }
    }

    #[test]
    fn moved_keys_leave_with_their_states_and_marks_follow_them() {
        let l = Layout { from: 2, to: 4 };
        let mut store: Store<u32> = Store::new(0);
        let keys: Vec<String> = (0..200)
            .map(|i| format!("k{i}"))
            .filter(|k| l.old(k.as_bytes()) == 1)
            .collect();
        for (i, k) in keys.iter().enumerate() {
            *store.get_mut(k) = i as u32 + 1;
        }
        store.take_changes().unwrap();
        let sink = Sent::default();
        let cut = Cut(BTreeMap::from([("in".to_owned(), 42)]));
        let moving = store
            .move_out(&l, 1, &l.targets(1), cut.clone(), &sink, "c")
            .unwrap();
        let moved: usize = moving.keys.values().map(Vec::len).sum();
        assert!(moved > 0 && moved < keys.len());
        assert_eq!(store.len(), keys.len() - moved);
        let sent = sink.take();
        // Each moved key to its new partition, then the target's mark.
        assert_eq!(sent.len(), moved + 1);
        assert!(sent.iter().all(|(p, _, _)| *p == 3));
        assert_eq!(sent.last().unwrap().1, l.moved_in(1));
        assert_eq!(Cut::decode(&sent.last().unwrap().2).unwrap(), cut);
        // The receiving side takes the states and the mark as a restore
        // does, the mark kept apart from the keys, and survives a snapshot.
        let mut other: Store<u32> = Store::new(0);
        let upgrade = crate::version::Unversioned;
        for (_, k, v) in &sent {
            other.apply(k.as_bytes(), v, None, &upgrade).unwrap();
        }
        assert_eq!(other.len(), moved);
        assert!(other.mark(&l.moved_in(1)).is_some());
        for (i, k) in keys.iter().enumerate() {
            if l.new_partition(k.as_bytes()) == 3 {
                assert_eq!(other.get(k), Some(&(i as u32 + 1)));
            }
        }
        let dir = std::env::temp_dir().join(format!("riffle-layout-{}", std::process::id()));
        let path = dir.join("3.snapshot");
        other.save_snapshot(&path, 9).unwrap();
        let (loaded, offset) = Store::<u32>::load_snapshot(&path, &upgrade)
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((loaded.len(), offset), (moved, 9));
        assert!(loaded.mark(&l.moved_in(1)).is_some());
        // The old partition's side: a tombstone per moved key, its mark.
        store.finish_moving(&l, 1, &moving, &sink, "c").unwrap();
        let sent = sink.take();
        assert_eq!(sent.len(), moved + 1);
        assert!(sent.iter().all(|(p, _, _)| *p == 1));
        assert!(sent[..moved].iter().all(|(_, _, v)| v.is_empty()));
        assert!(store.mark(&l.moved_out(3)).is_some());
        assert!(!store.has_changes(), "moving writes nothing else");
    }
}
