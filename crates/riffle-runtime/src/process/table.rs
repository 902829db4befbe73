//! Tables: the latest value per key of a (compacted) topic, joined with a
//! stream.
//!
//! - [`TableJoin`]: a table partitioned like the stream it is joined with
//!   (same keys, same partition count): each process holds the rows of the
//!   partitions it owns, as the state of their keys, so the table is as
//!   durable, and moves with its partitions, as any state. A table record
//!   sets its key's row (an empty value, a tombstone, deletes it); a stream
//!   record is joined with its key's row as it stands when the record
//!   arrives.
//! - [`GlobalTable`]: a table every process holds in full, read from every
//!   partition outside any group and kept up to date in the background:
//!   for what every key needs, whichever partition it lives in (fleet-wide
//!   limits, reference data). Starting one reads the topic to its end
//!   first, so that lookups see the table as it was then at least.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Context, KeyedProcessor};
use crate::error::{Error, Result};
use crate::log::{Log, ReaderConfig, RecordRef, TopicPartition};

/// Reads a table record's value (never empty: tombstones are handled).
type DecodeRow<T> = dyn Fn(&[u8]) -> Result<T> + Send + Sync;
/// Reads a stream record: its key and event.
type DecodeEvent<S> = dyn Fn(&RecordRef<'_>) -> Result<(String, S)> + Send + Sync;
/// Joins an event with its key's row, sending what it makes.
type JoinFn<S, T> = dyn Fn(&str, &S, Option<&T>, &mut Context<'_>) -> Result<()> + Send + Sync;

/// A stream joined with a co-partitioned table; see the module docs. Run
/// it in an [`App`](super::App) over both topics, the table's among the
/// inputs.
pub struct TableJoin<S, T> {
    table: Arc<str>,
    decode_row: Arc<DecodeRow<T>>,
    decode_event: Arc<DecodeEvent<S>>,
    join: Arc<JoinFn<S, T>>,
}

impl<S, T> Clone for TableJoin<S, T> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            decode_row: self.decode_row.clone(),
            decode_event: self.decode_event.clone(),
            join: self.join.clone(),
        }
    }
}

impl<S, T> TableJoin<S, T> {
    /// Records of topic `table` are rows, read by `decode_row`; any other
    /// input's records are events, read by `decode_event` and handed to
    /// `join` with their key's row.
    pub fn new(
        table: &str,
        decode_row: impl Fn(&[u8]) -> Result<T> + Send + Sync + 'static,
        decode_event: impl Fn(&RecordRef<'_>) -> Result<(String, S)> + Send + Sync + 'static,
        join: impl Fn(&str, &S, Option<&T>, &mut Context<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        Self {
            table: table.into(),
            decode_row: Arc::new(decode_row),
            decode_event: Arc::new(decode_event),
            join: Arc::new(join),
        }
    }
}

/// A record of a [`TableJoin`]'s inputs.
pub enum Joined<S, T> {
    /// A table row; `None` deletes the key's.
    Row(Option<T>),
    Event(S),
}

impl<S, T> KeyedProcessor for TableJoin<S, T>
where
    S: Send + 'static,
    T: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    type Input = Joined<S, T>;
    type State = Option<T>;

    fn decode(&self, r: &RecordRef<'_>) -> Result<(String, Joined<S, T>)> {
        if r.topic != &*self.table {
            let (key, event) = (self.decode_event)(r)?;
            return Ok((key, Joined::Event(event)));
        }
        let key = r
            .key_str()
            .ok_or_else(|| Error::Decode("a table record needs a UTF-8 key".into()))?;
        let row = match r.value {
            [] => None,
            v => Some((self.decode_row)(v)?),
        };
        Ok((key.to_owned(), Joined::Row(row)))
    }

    fn process(
        &mut self,
        key: &str,
        input: &Joined<S, T>,
        state: &mut Option<T>,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        match input {
            Joined::Row(None) => ctx.delete_state(),
            Joined::Row(Some(row)) => *state = Some(row.clone()),
            Joined::Event(event) => (self.join)(key, event, state.as_ref(), ctx)?,
        }
        Ok(())
    }
}

/// The rows of a [`GlobalTable`], and whether its reader should stop.
struct Rows<T> {
    rows: RwLock<HashMap<String, T>>,
    stop: AtomicBool,
}

/// A table every process holds in full; see the module docs. Cheap to
/// clone: clones share the rows (hand one to each processor).
pub struct GlobalTable<T> {
    rows: Arc<Rows<T>>,
    /// Stops the reader when the last clone goes.
    _reader: Arc<StopOnDrop<T>>,
}

impl<T> std::fmt::Debug for GlobalTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = self.rows.rows.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("GlobalTable")
            .field("rows", &rows.len())
            .finish()
    }
}

impl<T> Clone for GlobalTable<T> {
    fn clone(&self) -> Self {
        Self {
            rows: self.rows.clone(),
            _reader: self._reader.clone(),
        }
    }
}

struct StopOnDrop<T>(Arc<Rows<T>>);

impl<T> Drop for StopOnDrop<T> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// How long a global table's first read may take.
const BOOTSTRAP: Duration = Duration::from_secs(60);

impl<T: Clone + Send + Sync + 'static> GlobalTable<T> {
    /// Reads `topic` from its start to its end with `decode` (an empty
    /// value, a tombstone, deletes its key; a record that does not decode
    /// is logged and skipped), then follows it in a thread of its own
    /// until the last clone is dropped. Committed records only.
    pub fn start(
        log: &dyn Log,
        topic: &str,
        decode: impl Fn(&[u8]) -> Result<T> + Send + 'static,
    ) -> Result<Self> {
        let partitions = log.describe_topic(topic, BOOTSTRAP)?.partitions.len() as i32;
        let config = ReaderConfig {
            start: (0..partitions)
                .map(|p| (TopicPartition::new(topic, p), 0))
                .collect(),
            read_committed: true,
        };
        let mut reader = log.reader(&config)?;
        let rows = Arc::new(Rows {
            rows: RwLock::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let apply = {
            let (rows, topic) = (rows.clone(), topic.to_owned());
            move |r: RecordRef<'_>| -> Result<()> {
                let Some(key) = r.key_str() else {
                    return Ok(());
                };
                let mut table = rows.rows.write().unwrap_or_else(|e| e.into_inner());
                if r.value.is_empty() {
                    table.remove(key);
                    return Ok(());
                }
                match decode(r.value) {
                    Ok(row) => {
                        table.insert(key.to_owned(), row);
                    }
                    Err(e) => tracing::warn!("{topic}/{}@{}: {e}; skipped", r.partition, r.offset),
                }
                Ok(())
            }
        };
        let mut apply: Box<dyn FnMut(RecordRef<'_>) -> Result<()> + Send> = Box::new(apply);
        let deadline = std::time::Instant::now() + BOOTSTRAP;
        while !reader.at_end() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "global table {topic}: not read to its end within {BOOTSTRAP:?}"
                )));
            }
            reader.poll(Duration::from_millis(100), 1024, &mut apply)?;
        }
        let follow = rows.clone();
        let name = format!("table-{topic}");
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                while !follow.stop.load(Ordering::Relaxed) {
                    if let Err(e) = reader.poll(Duration::from_millis(100), 1024, &mut apply) {
                        tracing::warn!("global table: {e}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
            .map_err(|e| Error::io("starting a global table's reader", &e))?;
        Ok(Self {
            _reader: Arc::new(StopOnDrop(rows.clone())),
            rows,
        })
    }

    /// The row of `key`, as last read.
    pub fn get(&self, key: &str) -> Option<T> {
        let rows = self.rows.rows.read().unwrap_or_else(|e| e.into_inner());
        rows.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.rows
            .rows
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
