//! A windowed join of two streams: records of the same key whose event
//! times are at most a window apart meet, whichever arrives first.
//!
//! Both streams are inputs of one [`App`](super::App), partitioned alike
//! (same keys, same partition count). Each key's state buffers its records
//! of either side for as long as a record of the other side may still
//! match them: until the partition's watermark passes their event time
//! plus the window plus the grace period, when an event-time timer drops
//! them (and the key's state once nothing is buffered). A record that
//! arrives after that, whose partners may already be gone, goes to the
//! dead-letter topic as late. Inner join: a record without a partner
//! sends nothing.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Context, Fired, KeyedProcessor, Time};
use crate::error::{Error, Result};
use crate::log::RecordRef;

/// Reads a record of one side: its key, its value, and its event time in
/// milliseconds (`None`: the record's timestamp).
type Decode<V> = dyn Fn(&RecordRef<'_>) -> Result<(String, V, Option<i64>)> + Send + Sync;
/// Joins a left and a right record of a key, sending what it makes.
type JoinFn<L, R> = dyn Fn(&str, &L, &R, &mut Context<'_>) -> Result<()> + Send + Sync;

/// A windowed inner join; see the module docs.
pub struct WindowJoin<L, R> {
    left: Arc<str>,
    within: i64,
    grace: i64,
    decode_left: Arc<Decode<L>>,
    decode_right: Arc<Decode<R>>,
    join: Arc<JoinFn<L, R>>,
}

impl<L, R> Clone for WindowJoin<L, R> {
    fn clone(&self) -> Self {
        Self {
            left: self.left.clone(),
            within: self.within,
            grace: self.grace,
            decode_left: self.decode_left.clone(),
            decode_right: self.decode_right.clone(),
            join: self.join.clone(),
        }
    }
}

impl<L, R> WindowJoin<L, R> {
    /// Records of topic `left` are the left side, read by `decode_left`;
    /// any other input's are the right side. A left and a right record of
    /// a key at most `within` apart in event time are handed to `join`.
    pub fn new(
        left: &str,
        within: Duration,
        decode_left: impl Fn(&RecordRef<'_>) -> Result<(String, L, Option<i64>)> + Send + Sync + 'static,
        decode_right: impl Fn(&RecordRef<'_>) -> Result<(String, R, Option<i64>)>
            + Send
            + Sync
            + 'static,
        join: impl Fn(&str, &L, &R, &mut Context<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            left: left.into(),
            within: within.as_millis() as i64,
            grace: 0,
            decode_left: Arc::new(decode_left),
            decode_right: Arc::new(decode_right),
            join: Arc::new(join),
        }
    }

    /// How much longer (in event time) records stay buffered for late
    /// partners; default 0.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace.as_millis() as i64;
        self
    }

    /// When a record of event time `at` can no longer be matched.
    fn expiry(&self, at: i64) -> i64 {
        at + self.within + self.grace
    }
}

/// A record of either side, and its event time.
pub enum Side<L, R> {
    Left(L, Option<i64>),
    Right(R, Option<i64>),
}

/// A key's buffered records, by event time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "L: Serialize + DeserializeOwned, R: Serialize + DeserializeOwned")]
pub struct Buffered<L, R> {
    pub left: Vec<(i64, L)>,
    pub right: Vec<(i64, R)>,
}

impl<L, R> Default for Buffered<L, R> {
    fn default() -> Self {
        Self {
            left: Vec::new(),
            right: Vec::new(),
        }
    }
}

/// The timer that drops what can no longer match.
const EVICT: &str = "evict";

impl<L, R> KeyedProcessor for WindowJoin<L, R>
where
    L: Clone + Serialize + DeserializeOwned + Send + 'static,
    R: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    type Input = Side<L, R>;
    type State = Buffered<L, R>;

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, Side<L, R>)> {
        let or_ts = |at: Option<i64>| at.or(r.timestamp);
        if r.topic == &*self.left {
            let (k, v, at) = (self.decode_left)(r)?;
            Ok((k, Side::Left(v, or_ts(at))))
        } else {
            let (k, v, at) = (self.decode_right)(r)?;
            Ok((k, Side::Right(v, or_ts(at))))
        }
    }

    fn event_time(&self, _: &RecordRef<'_>, input: &Side<L, R>) -> Option<i64> {
        self.event_time_of(input)
    }

    fn process(
        &mut self,
        key: &str,
        input: &Side<L, R>,
        state: &mut Buffered<L, R>,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        let at = self
            .event_time_of(input)
            .ok_or_else(|| Error::Decode("the record has no event time".into()))?;
        if ctx.watermark().is_some_and(|w| self.expiry(at) <= w) {
            return Err(Error::InvalidInput(format!(
                "late: event time {at} is past the join window at watermark {}",
                ctx.watermark().unwrap_or_default()
            )));
        }
        let near = |t: i64| (t - at).abs() <= self.within;
        match input {
            Side::Left(l, _) => {
                for (_, r) in state.right.iter().filter(|(t, _)| near(*t)) {
                    (self.join)(key, l, r, ctx)?;
                }
                state.left.push((at, l.clone()));
            }
            Side::Right(r, _) => {
                for (_, l) in state.left.iter().filter(|(t, _)| near(*t)) {
                    (self.join)(key, l, r, ctx)?;
                }
                state.right.push((at, r.clone()));
            }
        }
        self.schedule(state, ctx);
        Ok(())
    }

    fn on_timer(
        &mut self,
        _key: &str,
        timer: &Fired,
        state: &mut Buffered<L, R>,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        if &*timer.name != EVICT {
            return Ok(());
        }
        let mark = timer.at.millis();
        state.left.retain(|(t, _)| self.expiry(*t) > mark);
        state.right.retain(|(t, _)| self.expiry(*t) > mark);
        if state.left.is_empty() && state.right.is_empty() {
            ctx.delete_state();
        } else {
            self.schedule(state, ctx);
        }
        Ok(())
    }
}

impl<L, R> WindowJoin<L, R> {
    fn event_time_of(&self, input: &Side<L, R>) -> Option<i64> {
        match input {
            Side::Left(_, at) | Side::Right(_, at) => *at,
        }
    }

    /// Sets the eviction timer to the earliest expiry buffered.
    fn schedule(&self, state: &Buffered<L, R>, ctx: &mut Context<'_>) {
        let oldest = state
            .left
            .iter()
            .map(|(t, _)| *t)
            .chain(state.right.iter().map(|(t, _)| *t))
            .min();
        if let Some(t) = oldest {
            ctx.set_timer(EVICT, Time::Event(self.expiry(t)));
        }
    }
}
