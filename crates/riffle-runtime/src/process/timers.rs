//! Firing a partition's due timers, and applying what a processor asked
//! of its key's timers and state: the same in both styles (on the
//! consumer thread in the key-based one, on the workers in the other).

use std::sync::atomic::Ordering;

use super::shared::Shared;
use super::{run_timer, Context, KeyedProcessor};
use crate::log::{Headers, RecordRef};
use crate::stream::Producer;
use riffle_state::{Domain, Store, TimerChange};

/// The time a timer fires at: processing time, and its partition's
/// watermark.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) now: i64,
    pub(super) watermark: Option<i64>,
}

/// Applies what a processor asked of `key`'s timers and state.
pub(super) fn apply_changes<S: Default + serde::Serialize + serde::de::DeserializeOwned>(
    store: &mut Store<S>,
    key: &str,
    timers: Vec<TimerChange>,
    delete: bool,
) {
    if delete {
        store.remove(key);
    } else if !timers.is_empty() {
        store.change_timers(key, timers);
    }
}

/// Fires the timers of `partition`'s store due in `domain` at or before
/// `upto`, in order, sending what they send through `producer`; returns
/// how many fired. A timer that fails (after the app's retries) goes to
/// the dead-letter topic as its key, with its name and time as the value.
pub(super) fn fire<P: KeyedProcessor>(
    processor: &mut P,
    (producer, shared): (&Producer, &Shared),
    store: &mut Store<P::State>,
    partition: i32,
    (domain, upto): (Domain, i64),
    clock: Clock,
) -> usize {
    let mut fired = 0;
    while let Some(timer) = store.pop_due(domain, upto) {
        fired += 1;
        let mut ctx = Context::new(
            (producer, shared),
            &shared.timer_topic,
            partition,
            -1,
            Some(timer.at.millis()),
            Headers::EMPTY,
        )
        .at(clock.now, clock.watermark);
        let state = store.get_mut(&timer.key);
        let result = run_timer(processor, &timer, state, &mut ctx, shared.retries);
        shared.stats.sent.fetch_add(ctx.sent, Ordering::Relaxed);
        apply_changes(store, &timer.key, ctx.timers, ctx.delete);
        if let Err(e) = result {
            let what = format!("timer '{}' at {:?}", &*timer.name, timer.at);
            let r = RecordRef {
                topic: &shared.timer_topic,
                partition,
                offset: -1,
                key: Some(timer.key.as_bytes()),
                value: what.as_bytes(),
                timestamp: Some(timer.at.millis()),
                headers: Headers::EMPTY,
            };
            if let Err(e) = shared.dead_letter(producer, &r, &e) {
                tracing::warn!("key '{}', {what}: {e}", &*timer.key);
            }
        }
    }
    if fired > 0 {
        shared
            .stats
            .timers_fired
            .fetch_add(fired as u64, Ordering::Relaxed);
    }
    fired
}
