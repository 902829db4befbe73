//! Windowed aggregations per key, in event time: tumbling, hopping and
//! session windows, with built-in statistics or a fold of one's own.
//!
//! A [`Windowed`] is a [`KeyedProcessor`]: run it in an [`App`] in either
//! style, under either guarantee. Each key's open windows are its state,
//! and each window has an event-time timer at its end plus the grace
//! period: when the partition's watermark passes it (see [`EventTime`]),
//! the window's result is sent and the window dropped, so a key's state
//! holds only windows still open, and a key with none is deleted. Results
//! are therefore exact under exactly-once across crashes and rebalances,
//! like any state and timer.
//!
//! A record whose windows have all closed (its event time is older than
//! the watermark by more than the grace period) goes to the dead-letter
//! topic with the reason; one that still has an open window counts there.
//! With [`Windowed::early_every`], open windows also send their partial
//! result that often (in processing time), marked `"final": false`.
//!
//! A result is a JSON object: `key`, `start` and `end` (the window, in
//! milliseconds since the Unix epoch, end exclusive), `final`, and the
//! aggregate's fields (for [`Stats`]: `count`, `sum`, `min`, `max`,
//! `mean`), sent to the output topic keyed by the key.
//!
//! [`App`]: super::App
//! [`EventTime`]: super::EventTime

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Context, Fired, KeyedProcessor, Time};
use crate::error::{Error, Result};
use crate::log::RecordRef;

/// How records are grouped into windows by their event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windows {
    /// Back to back windows of `size`, aligned to the Unix epoch.
    Tumbling { size: Duration },
    /// Windows of `size` starting every `advance` (aligned to the Unix
    /// epoch): a record is in `size / advance` of them.
    Hopping { size: Duration, advance: Duration },
    /// A window per burst of a key's records: it ends `gap` after the
    /// last record, and a record within `gap` of two sessions merges them.
    Session { gap: Duration },
}

impl Windows {
    pub fn tumbling(size: Duration) -> Self {
        Windows::Tumbling { size }
    }

    pub fn hopping(size: Duration, advance: Duration) -> Self {
        Windows::Hopping { size, advance }
    }

    pub fn session(gap: Duration) -> Self {
        Windows::Session { gap }
    }

    /// The fixed windows (start, end) that hold a record at `at`, oldest
    /// first; empty for sessions.
    fn fixed(self, at: i64) -> Vec<(i64, i64)> {
        let (size, advance) = match self {
            Windows::Tumbling { size } => (ms(size), ms(size)),
            Windows::Hopping { size, advance } => (ms(size), ms(advance)),
            Windows::Session { .. } => return Vec::new(),
        };
        let last = at.div_euclid(advance) * advance;
        let mut out = Vec::new();
        let mut start = last;
        while start > at - size {
            out.push((start, start + size));
            start -= advance;
        }
        out.reverse();
        out
    }

    fn check(self) -> Result<()> {
        let bad = |why: &str| Err(Error::InvalidInput(format!("windows: {why}")));
        match self {
            Windows::Tumbling { size } if ms(size) <= 0 => bad("a size of at least 1 ms"),
            Windows::Hopping { size, advance } if ms(advance) <= 0 || ms(advance) > ms(size) => {
                bad("an advance of at least 1 ms and at most the size")
            }
            Windows::Session { gap } if ms(gap) <= 0 => bad("a gap of at least 1 ms"),
            _ => Ok(()),
        }
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// What is computed per window.
pub trait Aggregator: Clone + Send + 'static {
    /// What a record contributes.
    type Value: Send + 'static;
    /// The running aggregate of a window, stored with the key's state.
    type Acc: Default + Clone + Serialize + DeserializeOwned + Send + 'static;

    fn add(&self, acc: &mut Self::Acc, value: &Self::Value);

    /// Folds `other` into `acc`: two sessions that a record joins.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);

    /// The result's fields (a JSON object; anything else is sent as
    /// `value`).
    fn result(&self, acc: &Self::Acc) -> serde_json::Value;
}

/// Count, sum, minimum, maximum and mean of numbers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats;

/// [`Stats`]' running aggregate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsAcc {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Aggregator for Stats {
    type Value = f64;
    type Acc = StatsAcc;

    fn add(&self, acc: &mut StatsAcc, v: &f64) {
        self.merge(
            acc,
            StatsAcc {
                count: 1,
                sum: *v,
                min: *v,
                max: *v,
            },
        )
    }

    fn merge(&self, acc: &mut StatsAcc, other: StatsAcc) {
        if other.count == 0 {
            return;
        }
        if acc.count == 0 {
            *acc = other;
            return;
        }
        acc.count += other.count;
        acc.sum += other.sum;
        acc.min = acc.min.min(other.min);
        acc.max = acc.max.max(other.max);
    }

    fn result(&self, acc: &StatsAcc) -> serde_json::Value {
        serde_json::json!({
            "count": acc.count,
            "sum": acc.sum,
            "min": acc.min,
            "max": acc.max,
            "mean": if acc.count == 0 { 0.0 } else { acc.sum / acc.count as f64 },
        })
    }
}

/// A fold of one's own: an initial aggregate (`A::default()`), how a value
/// is added, how two aggregates merge (for sessions), and how the result
/// reads.
pub struct Fold<V, A> {
    add: Arc<AddFn<V, A>>,
    merge: Arc<MergeFn<A>>,
    result: Arc<dyn Fn(&A) -> serde_json::Value + Send + Sync>,
}

type AddFn<V, A> = dyn Fn(&mut A, &V) + Send + Sync;
type MergeFn<A> = dyn Fn(&mut A, A) + Send + Sync;

impl<V, A> Clone for Fold<V, A> {
    fn clone(&self) -> Self {
        Self {
            add: self.add.clone(),
            merge: self.merge.clone(),
            result: self.result.clone(),
        }
    }
}

impl<V, A> Fold<V, A> {
    pub fn new(
        add: impl Fn(&mut A, &V) + Send + Sync + 'static,
        merge: impl Fn(&mut A, A) + Send + Sync + 'static,
        result: impl Fn(&A) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        Self {
            add: Arc::new(add),
            merge: Arc::new(merge),
            result: Arc::new(result),
        }
    }
}

impl<V, A> Aggregator for Fold<V, A>
where
    V: Send + 'static,
    A: Default + Clone + Serialize + DeserializeOwned + Send + 'static,
{
    type Value = V;
    type Acc = A;

    fn add(&self, acc: &mut A, value: &V) {
        (self.add)(acc, value)
    }

    fn merge(&self, acc: &mut A, other: A) {
        (self.merge)(acc, other)
    }

    fn result(&self, acc: &A) -> serde_json::Value {
        (self.result)(acc)
    }
}

/// One open window of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Open<A> {
    pub start: i64,
    pub end: i64,
    pub acc: A,
}

/// A key's open windows, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "A: Serialize + DeserializeOwned")]
pub struct OpenWindows<A> {
    pub open: Vec<Open<A>>,
}

impl<A> Default for OpenWindows<A> {
    fn default() -> Self {
        Self { open: Vec::new() }
    }
}

/// Reads a record: its key, its value for the aggregate, and its event
/// time in milliseconds (`None`: the record's timestamp).
pub type Decode<V> = dyn Fn(&RecordRef<'_>) -> Result<(String, V, Option<i64>)> + Send + Sync;

/// A windowed aggregation per key; see the module docs.
pub struct Windowed<G: Aggregator> {
    windows: Windows,
    aggregator: G,
    output: Arc<str>,
    decode: Arc<Decode<G::Value>>,
    grace: i64,
    early: Option<i64>,
}

impl<G: Aggregator> Clone for Windowed<G> {
    fn clone(&self) -> Self {
        Self {
            windows: self.windows,
            aggregator: self.aggregator.clone(),
            output: self.output.clone(),
            decode: self.decode.clone(),
            grace: self.grace,
            early: self.early,
        }
    }
}

/// The timer that sends open windows' partial results.
const EARLY: &str = "early";

impl<G: Aggregator> Windowed<G> {
    /// Aggregates what `decode` reads from each record with `aggregator`
    /// over `windows`, sending results to `output`. Fails for windows of
    /// no size.
    pub fn new(
        windows: Windows,
        aggregator: G,
        output: &str,
        decode: impl Fn(&RecordRef<'_>) -> Result<(String, G::Value, Option<i64>)>
            + Send
            + Sync
            + 'static,
    ) -> Result<Self> {
        windows.check()?;
        Ok(Self {
            windows,
            aggregator,
            output: output.into(),
            decode: Arc::new(decode),
            grace: 0,
            early: None,
        })
    }

    /// How long after its end (in event time) a window still takes
    /// records; default 0. Its result is sent once the watermark passes
    /// its end plus this.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = ms(grace);
        self
    }

    /// Also sends open windows' partial results every `every` of
    /// processing time, as `"final": false`.
    pub fn early_every(mut self, every: Duration) -> Self {
        self.early = Some(ms(every).max(1));
        self
    }

    fn timer_name(start: i64) -> String {
        format!("w{start}")
    }

    fn send(&self, key: &str, w: &Open<G::Acc>, last: bool, ctx: &mut Context<'_>) -> Result<()> {
        let mut out = serde_json::Map::new();
        out.insert("key".into(), key.into());
        out.insert("start".into(), w.start.into());
        out.insert("end".into(), w.end.into());
        out.insert("final".into(), last.into());
        match self.aggregator.result(&w.acc) {
            serde_json::Value::Object(fields) => out.extend(fields),
            other => {
                out.insert("value".into(), other);
            }
        }
        ctx.send_json(&self.output, Some(key), &out)
    }

    /// Adds `value` at `at` to the key's session windows, merging those it
    /// joins.
    fn add_to_session(
        &self,
        state: &mut OpenWindows<G::Acc>,
        gap: i64,
        at: i64,
        value: &G::Value,
        ctx: &mut Context<'_>,
    ) {
        let mut merged = Open {
            start: at,
            end: at + gap,
            acc: G::Acc::default(),
        };
        self.aggregator.add(&mut merged.acc, value);
        let mut kept = Vec::with_capacity(state.open.len());
        for w in std::mem::take(&mut state.open) {
            if w.start <= merged.end && merged.start <= w.end {
                ctx.cancel_timer(&Self::timer_name(w.start));
                merged.start = merged.start.min(w.start);
                merged.end = merged.end.max(w.end);
                self.aggregator.merge(&mut merged.acc, w.acc);
            } else {
                kept.push(w);
            }
        }
        ctx.set_timer(
            &Self::timer_name(merged.start),
            Time::Event(merged.end + self.grace),
        );
        let at = kept.partition_point(|w| w.start < merged.start);
        kept.insert(at, merged);
        state.open = kept;
    }
}

impl<G: Aggregator> KeyedProcessor for Windowed<G> {
    /// The value and its event time.
    type Input = (G::Value, Option<i64>);
    type State = OpenWindows<G::Acc>;

    fn decode(&self, record: &RecordRef<'_>) -> Result<(String, Self::Input)> {
        let (key, value, at) = (self.decode)(record)?;
        Ok((key, (value, at.or(record.timestamp))))
    }

    fn event_time(&self, _: &RecordRef<'_>, input: &Self::Input) -> Option<i64> {
        input.1
    }

    fn process(
        &mut self,
        _key: &str,
        (value, at): &Self::Input,
        state: &mut Self::State,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        let at = at.ok_or_else(|| Error::Decode("the record has no event time".into()))?;
        // A window is closed once the watermark passed its end plus the
        // grace; the watermark never moves back.
        let (watermark, grace) = (ctx.watermark(), self.grace);
        let closed = |end: i64| watermark.is_some_and(|w| end + grace <= w);
        let was_empty = state.open.is_empty();
        match self.windows {
            Windows::Session { gap } => {
                if closed(at + ms(gap)) {
                    return Err(late(at, watermark));
                }
                self.add_to_session(state, ms(gap), at, value, ctx);
            }
            fixed => {
                let mut added = false;
                for (start, end) in fixed.fixed(at) {
                    if closed(end) {
                        continue;
                    }
                    added = true;
                    let i = state.open.partition_point(|w| w.start < start);
                    if state.open.get(i).is_none_or(|w| w.start != start) {
                        state.open.insert(
                            i,
                            Open {
                                start,
                                end,
                                acc: G::Acc::default(),
                            },
                        );
                        ctx.set_timer(&Self::timer_name(start), Time::Event(end + self.grace));
                    }
                    self.aggregator.add(&mut state.open[i].acc, value);
                }
                if !added {
                    return Err(late(at, watermark));
                }
            }
        }
        if let (Some(every), true) = (self.early, was_empty) {
            ctx.set_timer(EARLY, Time::Processing(ctx.now() + every));
        }
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &str,
        timer: &Fired,
        state: &mut Self::State,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        if &*timer.name == EARLY {
            for w in &state.open {
                self.send(key, w, false, ctx)?;
            }
            if let (Some(every), false) = (self.early, state.open.is_empty()) {
                ctx.set_timer(EARLY, Time::Processing(ctx.now() + every));
            }
            return Ok(());
        }
        let Some(start) = timer
            .name
            .strip_prefix('w')
            .and_then(|s| s.parse::<i64>().ok())
        else {
            return Ok(());
        };
        let Some(i) = state.open.iter().position(|w| w.start == start) else {
            return Ok(());
        };
        self.send(key, &state.open[i], true, ctx)?;
        state.open.remove(i);
        if state.open.is_empty() {
            // Nothing open: the key's state goes, so state stays bounded
            // by the keys with open windows.
            ctx.delete_state();
        }
        Ok(())
    }
}

fn late(at: i64, watermark: Option<i64>) -> Error {
    Error::InvalidInput(format!(
        "late: every window of event time {at} has closed (watermark {})",
        watermark.unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_windows_hold_a_record_where_they_should() {
        let s = Duration::from_secs;
        assert_eq!(Windows::tumbling(s(60)).fixed(61_000), [(60_000, 120_000)]);
        assert_eq!(Windows::tumbling(s(60)).fixed(-1), [(-60_000, 0)]);
        assert_eq!(
            Windows::hopping(s(60), s(20)).fixed(61_000),
            [(20_000, 80_000), (40_000, 100_000), (60_000, 120_000)]
        );
        assert_eq!(Windows::hopping(s(60), s(20)).fixed(60_000).len(), 3);
        assert!(Windows::session(s(5)).fixed(1).is_empty());
        assert!(Windows::hopping(s(10), s(20)).check().is_err());
        assert!(Windows::tumbling(Duration::ZERO).check().is_err());
    }

    #[test]
    fn stats_merge_like_adding_one_by_one() {
        let (mut a, mut b, mut all) = (
            StatsAcc::default(),
            StatsAcc::default(),
            StatsAcc::default(),
        );
        for v in [3.0, -1.0, 7.5] {
            Stats.add(&mut a, &v);
            Stats.add(&mut all, &v);
        }
        for v in [10.0, 0.5] {
            Stats.add(&mut b, &v);
            Stats.add(&mut all, &v);
        }
        Stats.merge(&mut a, b);
        assert_eq!(a, all);
        assert_eq!(Stats.result(&a)["mean"], 4.0);
        assert_eq!((a.min, a.max, a.count), (-1.0, 10.0, 5));
    }
}
