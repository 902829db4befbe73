//! Per-key timers: a processor asks to be called back for a key at a
//! time, in processing time (the wall clock) or in event time (the
//! partition's watermark, see the runtime's event-time settings).
//!
//! A timer has a name, unique per key: setting it again moves it, and
//! cancelling it by name needs no record of when it was due. Timers are
//! part of their key's entry, so they are written to the changelog and to
//! snapshots with its state, restored with it, and move with the
//! partition: a timer set before a crash fires after it, on whichever
//! consumer owns the key then.
//!
//! Stored form: a key with timers is stored as `#` and a JSON array of
//! `[name, "p" or "e", time in ms]`, a space, then the state as usual
//! ([`crate::version`]). Neither JSON nor a version prefix begins with
//! `#`, so states stored before timers existed read unchanged.
//!
//! Each store keeps an index of its keys' timers in due order, so that
//! finding what is due costs a look at the index's first entries, not a
//! scan of the keys. Timers fire in order of their time, then key, then
//! name: deterministic for a key and across a replay.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::key::Key;

/// When a timer is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Time {
    /// Once the wall clock (milliseconds since the Unix epoch) reaches it.
    Processing(i64),
    /// Once the partition's watermark (milliseconds since the Unix epoch,
    /// in the records' own time) reaches it.
    Event(i64),
}

impl Time {
    /// The timer's domain and its time in milliseconds.
    pub fn split(self) -> (Domain, i64) {
        match self {
            Time::Processing(t) => (Domain::Processing, t),
            Time::Event(t) => (Domain::Event, t),
        }
    }

    pub fn millis(self) -> i64 {
        self.split().1
    }

    fn of(domain: Domain, at: i64) -> Self {
        match domain {
            Domain::Processing => Time::Processing(at),
            Domain::Event => Time::Event(at),
        }
    }
}

/// The clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    Processing,
    Event,
}

/// A timer of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub name: Key,
    pub at: Time,
}

/// A timer that came due, taken from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub key: Key,
    pub name: Key,
    pub at: Time,
}

/// What a processor asked of its key's timers while handling one input,
/// applied to the store after it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    Set(Timer),
    Cancel(Key),
}

/// A key's timers: none for most keys, and no allocation then.
pub(crate) type KeyTimers = Box<[Timer]>;

/// A store's timers in due order: (domain, time, key, name).
#[derive(Default)]
pub(crate) struct Index(BTreeSet<(Domain, i64, Key, Key)>);

impl Index {
    pub(crate) fn add(&mut self, key: &Key, timer: &Timer) {
        let (d, at) = timer.at.split();
        self.0.insert((d, at, key.clone(), timer.name.clone()));
    }

    pub(crate) fn remove(&mut self, key: &Key, timer: &Timer) {
        let (d, at) = timer.at.split();
        self.0.remove(&(d, at, key.clone(), timer.name.clone()));
    }

    pub(crate) fn remove_all(&mut self, key: &Key, timers: &[Timer]) {
        for t in timers {
            self.remove(key, t);
        }
    }

    /// The earliest time a timer of `domain` is due.
    pub(crate) fn next(&self, domain: Domain) -> Option<i64> {
        self.0
            .range((domain, i64::MIN, Key::new(""), Key::new(""))..)
            .next()
            .filter(|(d, ..)| *d == domain)
            .map(|(_, at, ..)| *at)
    }

    /// Takes the first due timer of `domain` at or before `upto`.
    pub(crate) fn pop_due(&mut self, domain: Domain, upto: i64) -> Option<Fired> {
        let first = self
            .0
            .range((domain, i64::MIN, Key::new(""), Key::new(""))..)
            .next()
            .filter(|(d, at, ..)| *d == domain && *at <= upto)?
            .clone();
        self.0.remove(&first);
        let (d, at, key, name) = first;
        Some(Fired {
            key,
            name,
            at: Time::of(d, at),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// `timers` with `change` applied; what was replaced or cancelled, if any.
pub(crate) fn apply(timers: &mut KeyTimers, change: TimerChange) -> (Option<Timer>, Option<Timer>) {
    let name = match &change {
        TimerChange::Set(t) => &t.name,
        TimerChange::Cancel(n) => n,
    };
    let mut list: Vec<Timer> = std::mem::take(timers).into_vec();
    let old = list
        .iter()
        .position(|t| t.name == *name)
        .map(|i| list.remove(i));
    let new = match change {
        TimerChange::Set(t) => {
            list.push(t.clone());
            Some(t)
        }
        TimerChange::Cancel(_) => None,
    };
    *timers = list.into_boxed_slice();
    (old, new)
}

/// Removes the timer `name` due at `at` from `timers`, if it is there.
pub(crate) fn take(timers: &mut KeyTimers, name: &str, at: Time) -> bool {
    match timers.iter().position(|t| &*t.name == name && t.at == at) {
        Some(i) => {
            let mut list = std::mem::take(timers).into_vec();
            list.remove(i);
            *timers = list.into_boxed_slice();
            true
        }
        None => false,
    }
}

#[derive(Serialize)]
struct Stored<'a>(&'a str, &'a str, i64);

/// Writes `#[...] ` for a key with timers; nothing without.
pub(crate) fn write_prefix(timers: &[Timer], buf: &mut Vec<u8>) {
    if timers.is_empty() {
        return;
    }
    let stored: Vec<Stored<'_>> = timers
        .iter()
        .map(|t| {
            let (d, at) = t.at.split();
            Stored(&t.name, if d == Domain::Event { "e" } else { "p" }, at)
        })
        .collect();
    buf.push(b'#');
    // Strings and integers: encoding cannot fail.
    serde_json::to_writer(&mut *buf, &stored).expect("timers encode");
    buf.push(b' ');
}

/// A stored value's timers and the rest (the state as stored).
pub(crate) fn split(value: &[u8]) -> Result<(KeyTimers, &[u8]), String> {
    let Some(rest) = value.strip_prefix(b"#") else {
        return Ok((KeyTimers::default(), value));
    };
    // Owned names: a name with escapes in JSON cannot be borrowed.
    let mut stream =
        serde_json::Deserializer::from_slice(rest).into_iter::<Vec<(String, String, i64)>>();
    let stored = match stream.next() {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Err(format!("timers: {e}")),
        None => return Err("timers: nothing after '#'".into()),
    };
    let end = stream.byte_offset();
    let rest = rest[end..]
        .strip_prefix(b" ")
        .ok_or("timers: no space after them")?;
    let timers = stored
        .into_iter()
        .map(|(name, d, at)| {
            let at = match d.as_str() {
                "p" => Time::Processing(at),
                "e" => Time::Event(at),
                other => return Err(format!("timers: unknown clock '{other}'")),
            };
            Ok(Timer {
                name: Key::new(&name),
                at,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((timers.into_boxed_slice(), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(name: &str, at: Time) -> Timer {
        Timer {
            name: Key::new(name),
            at,
        }
    }

    #[test]
    fn timers_round_trip_before_the_state_and_leave_old_values_alone() {
        let timers = [
            timer("watchdog", Time::Processing(1_700_000_000_000)),
            timer("w\"in", Time::Event(-5)),
        ];
        let mut buf = Vec::new();
        write_prefix(&timers, &mut buf);
        buf.extend_from_slice(b"@1 {\"a\":1}");
        let (got, rest) = split(&buf).unwrap();
        assert_eq!(&*got, &timers);
        assert_eq!(rest, b"@1 {\"a\":1}");

        let mut none = Vec::new();
        write_prefix(&[], &mut none);
        assert!(none.is_empty());
        for old in [&b"{\"a\":1}"[..], b"@2 [1]", b""] {
            let (got, rest) = split(old).unwrap();
            assert!(got.is_empty());
            assert_eq!(rest, old);
        }
        for bad in [&b"#"[..], b"#[", b"#[[\"a\",\"x\",1]] {}", b"#[]{}", b"#{}"] {
            assert!(split(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_index_gives_due_timers_in_time_key_name_order_per_domain() {
        let mut index = Index::default();
        let (a, b) = (Key::new("a"), Key::new("b"));
        index.add(&b, &timer("x", Time::Event(10)));
        index.add(&a, &timer("y", Time::Event(10)));
        index.add(&a, &timer("x", Time::Event(10)));
        index.add(&a, &timer("z", Time::Event(30)));
        index.add(&b, &timer("p", Time::Processing(5)));
        assert_eq!(index.next(Domain::Event), Some(10));
        assert_eq!(index.next(Domain::Processing), Some(5));
        let mut fired = Vec::new();
        while let Some(f) = index.pop_due(Domain::Event, 20) {
            fired.push(format!("{}/{}@{}", &*f.key, &*f.name, f.at.millis()));
        }
        assert_eq!(fired, ["a/x@10", "a/y@10", "b/x@10"]);
        assert_eq!(index.next(Domain::Event), Some(30));
        index.remove(&a, &timer("z", Time::Event(30)));
        assert_eq!(index.next(Domain::Event), None);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn setting_a_named_timer_again_moves_it_and_cancel_removes_it() {
        let mut timers = KeyTimers::default();
        let (old, new) = apply(
            &mut timers,
            TimerChange::Set(timer("w", Time::Processing(1))),
        );
        assert_eq!((old, new.is_some()), (None, true));
        let (old, _) = apply(
            &mut timers,
            TimerChange::Set(timer("w", Time::Processing(9))),
        );
        assert_eq!(old, Some(timer("w", Time::Processing(1))));
        assert_eq!(&*timers, &[timer("w", Time::Processing(9))]);
        assert!(!take(&mut timers, "w", Time::Processing(1)));
        let (old, new) = apply(&mut timers, TimerChange::Cancel(Key::new("w")));
        assert_eq!((old, new), (Some(timer("w", Time::Processing(9))), None));
        assert!(timers.is_empty());
    }
}
