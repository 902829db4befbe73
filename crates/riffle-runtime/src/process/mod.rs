//! Processing records, statelessly or with state per key.
//!
//! A [`KeyedProcessor`] decodes each record into a key and an input, and
//! handles it with `&mut` access to that key's state and a [`Context`] for
//! sending records to any topic. Stateless steps ([`stateless::map`],
//! [`stateless::filter`], [`stateless::flat_map`]) are keyed processors with
//! no state. An [`App`] runs a processor over input topics in one of two
//! [`Style`]s:
//!
//! - [`Style::Keyed`]: the chapter's key-based approach. State lives in the
//!   consumer actor that owns the partition; a manager there keeps one state
//!   per key. Parallelism is the number of partitions.
//! - [`Style::Actors`]: the key-independent approach. Each key's state lives
//!   in a per-key actor hosted on a pool of workers, so the keys of one
//!   partition progress in parallel. Per-key order is kept (a key always goes
//!   to the same worker) and a partition's offset is committed only below its
//!   lowest unfinished record.
//!
//! In both styles state is durable: each partition's states are written to
//! a compacted changelog topic and saved in local snapshots, and restored
//! wherever the partition is assigned next, before its records are
//! processed. What a failure may repeat depends on the [`Guarantee`]: under
//! at-least-once, records since the last commit; under exactly-once,
//! nothing, because outputs, state changes and offsets are committed in one
//! transaction.
//!
//! A processor can set timers for its key ([`Context::set_timer`]), in
//! processing time or event time (each partition's watermark, see
//! [`EventTime`]); they are stored with the key's state and fire through
//! [`KeyedProcessor::on_timer`]. A key's state can be deleted
//! ([`Context::delete_state`], or after [`App::state_ttl`] untouched).
//! Firing and watermarks are in `time` and `timers`. Built on them:
//! windowed aggregations ([`window`]), tables joined with streams and
//! global tables ([`table`]), and windowed stream joins ([`join`]).
//!
//! Records that cannot be decoded or processed (after a few attempts),
//! outputs the log refuses for good (under exactly-once too: the replay of
//! the aborted transaction sends them to the dead letters instead), and
//! stored states that no longer decode (their keys start afresh) go to a
//! dead-letter topic with the reason and the original bytes
//! ([`dead_letter`]); processing goes on. A state type that changes takes
//! a new [`KeyedProcessor::STATE_VERSION`] and an upgrade from the older
//! ones ([`KeyedProcessor::upgrade_state`]).

mod actors;
mod app;
mod commit;
mod context;
pub mod dead_letter;
mod growth;
pub mod join;
mod keyed;
mod lag;
mod offsets;
mod outlet;
mod query;
mod record;
mod refusals;
mod scale;
mod shared;
pub mod stateless;
pub mod table;
mod time;
mod timers;
pub mod window;

pub use app::{App, Guarantee, Running, Style};
pub use context::Context;
pub use lag::{group_lag, PartitionLag};
pub use offsets::OffsetTracker;
pub use query::StateQueries;
/// How long a state query waits for the process that owns its key.
pub use query::REMOTE_WAIT as STATE_QUERY_WAIT;
pub use record::connect_headers;
pub use record::Record;
pub use scale::Scaling;
pub use shared::AppStats;
pub use time::{Clock, EventTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::actor::catch;
use crate::error::{Error, Result};
use crate::log::RecordRef;
pub use riffle_state::{Fired, StoredState, Time};

/// A processor's state versions, as the state layer reads stored states.
/// Owns a copy of the processor, so that partitions can be restored on
/// threads of their own.
struct Upgrader<P>(P);

impl<P: KeyedProcessor> riffle_state::Upgrade<P::State> for Upgrader<P> {
    fn version(&self) -> u32 {
        P::STATE_VERSION
    }

    fn upgrade(&self, old: StoredState<'_>) -> Result<P::State> {
        self.0.upgrade_state(old)
    }
}

/// Application logic with state per key.
///
/// `Clone` because the key-independent style runs one copy per worker and
/// decodes on the consumer threads with another.
pub trait KeyedProcessor: Clone + Send + 'static {
    /// What a record decodes to, once, on the consumer thread.
    type Input: Send + 'static;
    /// Per-key state, created with `Default` on a key's first record.
    /// Serializable because it is written to a changelog topic and to local
    /// snapshots, from which it is restored wherever the key's partition
    /// goes next.
    type State: Default + Serialize + DeserializeOwned + Send + 'static;

    /// `false` for processors without state (stateless steps): their apps
    /// keep no state stores and no changelog.
    const STATEFUL: bool = true;

    /// The version of `State`, stored with each state. Raise it when the
    /// type changes so that states stored before no longer decode into it,
    /// and upgrade those in [`KeyedProcessor::upgrade_state`]. States
    /// stored before versions existed are version 0.
    const STATE_VERSION: u32 = 0;

    /// A state stored by an older version of `State` (`old.version` below
    /// [`KeyedProcessor::STATE_VERSION`]) as the current type, when the
    /// partition's state is restored from the changelog or a snapshot.
    /// Decode it with the old type (`old.decode::<OldState>()`) and convert.
    /// An error, or no upgrade (the default), makes the state damaged: it
    /// goes to the dead-letter topic with its key and the reason, and the
    /// key starts afresh.
    ///
    /// A counter whose state was a bare number (version 0) and is now a
    /// count with the last value seen (version 1):
    ///
    /// ```
    /// use riffle_log::RecordRef;
    /// use riffle_runtime::process::{Context, KeyedProcessor, StoredState};
    /// use riffle_runtime::{Error, Result};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Default, Serialize, Deserialize)]
    /// struct Seen {
    ///     count: u64,
    ///     last: String,
    /// }
    ///
    /// #[derive(Clone)]
    /// struct Counter;
    ///
    /// impl KeyedProcessor for Counter {
    ///     type Input = String;
    ///     type State = Seen;
    ///     const STATE_VERSION: u32 = 1;
    ///
    ///     fn upgrade_state(&self, old: StoredState<'_>) -> Result<Seen> {
    ///         match old.version {
    ///             0 => Ok(Seen { count: old.decode::<u64>()?, last: String::new() }),
    ///             _ => Err(old.unknown()),
    ///         }
    ///     }
    ///
    ///     fn decode(&self, r: &RecordRef<'_>) -> Result<(String, String)> {
    ///         let key = r.key_str().ok_or_else(|| Error::Decode("no key".into()))?;
    ///         Ok((key.into(), String::from_utf8_lossy(r.value).into()))
    ///     }
    ///
    ///     fn process(&mut self, _: &str, v: &String, s: &mut Seen, _: &mut Context<'_>) -> Result<()> {
    ///         s.count += 1;
    ///         s.last = v.clone();
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let old = StoredState { version: 0, json: b"41" };
    /// assert_eq!(Counter.upgrade_state(old)?.count, 41);
    /// # Ok::<(), Error>(())
    /// ```
    fn upgrade_state(&self, old: StoredState<'_>) -> Result<Self::State> {
        Err(old.unknown())
    }

    /// The record's key and input. An error sends the record to the
    /// dead-letter topic.
    fn decode(&self, record: &RecordRef<'_>) -> Result<(String, Self::Input)>;

    /// The input's event time, in milliseconds since the Unix epoch: what
    /// moves its partition's watermark (see [`EventTime`]). By default the
    /// record's timestamp; a processor whose records carry the time they
    /// describe (a measurement's) returns that.
    fn event_time(&self, record: &RecordRef<'_>, _input: &Self::Input) -> Option<i64> {
        record.timestamp
    }

    /// Called when a timer the processor set for `key` (with
    /// [`Context::set_timer`]) comes due, with the key's state. Timers of
    /// a partition fire in order of their time, then key, then name. An
    /// error (or a panic) is retried like a record's, then the timer goes
    /// to the dead-letter topic (its key, name and time) and is dropped.
    fn on_timer(
        &mut self,
        _key: &str,
        _timer: &Fired,
        _state: &mut Self::State,
        _ctx: &mut Context<'_>,
    ) -> Result<()> {
        Ok(())
    }

    /// Handles one input of `key`. An error (or a panic) is retried a few
    /// times (see [`App::retries`]), then sends the record to the
    /// dead-letter topic; the state keeps whatever changes were made, so a
    /// processor should fail before changing it.
    fn process(
        &mut self,
        key: &str,
        input: &Self::Input,
        state: &mut Self::State,
        ctx: &mut Context<'_>,
    ) -> Result<()>;

    /// Called on the thread that runs [`KeyedProcessor::process`] before
    /// the first record of a batch: the records of one poll (key-based
    /// style), which are also decoded inside the batch, or of one worker's
    /// batch (key-independent style), decoded before on the consumer
    /// threads. A processor whose records share a costly step (taking a
    /// lock, such as an embedded interpreter's; opening a buffer) takes it
    /// here once rather than per record, and lets it go in
    /// [`KeyedProcessor::end_batch`]. Does nothing by default.
    fn begin_batch(&mut self) {}

    /// Called on the same thread after the last record of a batch begun
    /// with [`KeyedProcessor::begin_batch`], before the runtime waits for
    /// more records, commits, restores or hands over state, or stops; also
    /// when a batch is cut short (a rebalance, a failure). Does nothing by
    /// default.
    fn end_batch(&mut self) {}
}

/// Runs `attempt_once` up to `retries` more times after a failure, a
/// panic counting as one; `key` is named in the logs and the error.
fn retrying(key: &str, retries: u32, mut attempt_once: impl FnMut() -> Result<()>) -> Result<()> {
    let mut attempt = 0;
    loop {
        let result = catch(&mut attempt_once).unwrap_or_else(|panic| {
            Err(Error::Panicked {
                what: "processor".into(),
                message: Some(panic),
            })
        });
        match result {
            Ok(()) => return Ok(()),
            Err(e) if attempt < retries => {
                attempt += 1;
                tracing::debug!("key '{key}': {e}; retrying ({attempt} of {retries})");
            }
            Err(e) if retries > 0 => {
                return Err(Error::Processor {
                    key: key.into(),
                    attempts: retries + 1,
                    reason: e.to_string(),
                })
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the processor's [`KeyedProcessor::on_timer`] for a fired timer,
/// retried as [`run_processor`] retries a record.
pub(super) fn run_timer<P: KeyedProcessor>(
    processor: &mut P,
    fired: &Fired,
    state: &mut P::State,
    ctx: &mut Context<'_>,
    retries: u32,
) -> Result<()> {
    retrying(&fired.key, retries, || {
        processor.on_timer(&fired.key, fired, state, ctx)
    })
}

/// Runs the processor on one input, retrying a failure up to `retries`
/// times without waiting, so that a poison record costs a few attempts and
/// never stalls its partition. A panic counts as a failure. Apps run their
/// processors through it; so can anything else that runs one.
pub fn run_processor<P: KeyedProcessor>(
    processor: &mut P,
    key: &str,
    input: &P::Input,
    state: &mut P::State,
    ctx: &mut Context<'_>,
    retries: u32,
) -> Result<()> {
    retrying(key, retries, || processor.process(key, input, state, ctx))
}
