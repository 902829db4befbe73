//! Answering "what is the state of key K?" on any process of an app.
//!
//! A key's state lives where its partition is owned: in one consumer of one
//! process (key-based style) or on one worker of that process (actors
//! style). A question can arrive at any process, so the process that gets
//! it finds the partition's owner in the group's current assignment (from
//! the log, not from a protocol of Riffle's own) and asks that process over
//! HTTP. Each process names its endpoint in its consumers' client ids
//! ([`App::advertise`](super::App::advertise)).
//!
//! Inside the owning process the question is posted on a board that every
//! consumer of the app checks between two polls; the consumer owning the
//! partition answers from its state (or has its worker answer), so state is
//! never shared across threads.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::growth::LayoutCell;

use serde::Serialize;

use crate::error::Result;
use crate::log::{partition_for_key, Log};

/// How long a question may wait for the consumer that owns its partition
/// (a consumer checks between two polls, every 100 ms at most, but may be
/// restoring state).
const LOCAL_WAIT: Duration = Duration::from_secs(3);
/// How long asking the group or a peer may take.
pub const REMOTE_WAIT: Duration = Duration::from_secs(5);

/// One question: a key and where to send its state as JSON (`None`: the
/// partition is owned here but the key has no state).
pub(super) struct Question {
    id: u64,
    pub(super) partition: i32,
    pub(super) key: String,
    pub(super) reply: Sender<Option<String>>,
}

/// Questions waiting for the consumers of one process.
#[derive(Default)]
pub(super) struct Board {
    waiting: AtomicUsize,
    next: AtomicU64,
    questions: Mutex<Vec<Question>>,
}

impl Board {
    /// Hands the caller the questions about partitions it owns; cheap when
    /// there are none (the usual case, checked after every poll).
    pub(super) fn take(&self, owns: impl Fn(i32) -> bool) -> Vec<Question> {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        let mut q = self.questions.lock().unwrap();
        let (mine, rest) = std::mem::take(&mut *q)
            .into_iter()
            .partition(|x: &Question| owns(x.partition));
        *q = rest;
        self.waiting.store(q.len(), Ordering::Release);
        mine
    }

    /// Posts a question; returns its number, for withdrawing it.
    fn post(&self, partition: i32, key: &str, reply: Sender<Option<String>>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut q = self.questions.lock().unwrap();
        q.push(Question {
            id,
            partition,
            key: key.to_owned(),
            reply,
        });
        self.waiting.store(q.len(), Ordering::Release);
        id
    }

    /// Removes a question nobody answered in time.
    fn withdraw(&self, id: u64) {
        let mut q = self.questions.lock().unwrap();
        q.retain(|x| x.id != id);
        self.waiting.store(q.len(), Ordering::Release);
    }
}

/// The state of a key as JSON, for a handler or worker.
pub(super) fn to_json<S: Serialize>(state: Option<&S>) -> Option<String> {
    state.and_then(|s| serde_json::to_string(s).ok())
}

/// Answers state queries for one app; cheap to clone. From
/// [`Running::states`](super::Running::states).
#[derive(Clone)]
pub struct StateQueries {
    inner: Arc<Inner>,
}

struct Inner {
    board: Arc<Board>,
    log: Arc<dyn Log>,
    group: String,
    /// The topic whose partitions hold the state, and their count (the
    /// layout's, once the inputs grew).
    topic: String,
    partitions: i32,
    layout: Option<Arc<LayoutCell>>,
    /// This process's endpoint (`host:port`), if it advertises one.
    me: Option<String>,
}

impl StateQueries {
    pub(super) fn new(
        board: Arc<Board>,
        log: Arc<dyn Log>,
        group: &str,
        topic: &str,
        partitions: i32,
        me: Option<String>,
        layout: Option<Arc<LayoutCell>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                board,
                log,
                group: group.into(),
                topic: topic.into(),
                partitions,
                layout,
                me,
            }),
        }
    }

    /// The partition holding `key`'s state (while the inputs grow, the
    /// one it is moving to).
    pub fn partition(&self, key: &str) -> i32 {
        let n = match &self.inner.layout {
            Some(l) => l.partitions(),
            None => self.inner.partitions,
        };
        partition_for_key(key.as_bytes(), n)
    }

    /// The state of `key` if this process owns its partition: `Ok(None)`
    /// when it is not owned here (or not yet restored), `Ok(Some(None))`
    /// when it is owned and the key has no state.
    pub fn local(&self, key: &str) -> Option<Option<String>> {
        let (reply, answer) = mpsc::channel();
        let id = self.inner.board.post(self.partition(key), key, reply);
        let got = answer.recv_timeout(LOCAL_WAIT).ok();
        if got.is_none() {
            self.inner.board.withdraw(id);
        }
        got
    }

    /// The endpoint of the process owning `key`'s partition, from the
    /// group's assignment; `None` while the partition has no owner.
    pub fn owner(&self, key: &str) -> Result<Option<String>> {
        let p = self.partition(key);
        let members = self
            .inner
            .log
            .group_members(&self.inner.group, REMOTE_WAIT)?;
        Ok(members
            .into_iter()
            .find(|m| {
                m.assignment
                    .iter()
                    .any(|tp| tp.partition == p && tp.topic == self.inner.topic)
            })
            .map(|m| endpoint_of(&m.client_id).unwrap_or_default().to_owned()))
    }

    /// This process's endpoint (`host:port`), empty if it advertises none.
    pub fn me(&self) -> &str {
        self.inner.me.as_deref().unwrap_or("")
    }
}

/// The client id of the consumers of an app advertising `endpoint`.
pub(super) fn client_id(group: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(e) => format!("{group}@{e}"),
        None => group.to_owned(),
    }
}

/// The endpoint named in a consumer's client id (`group@host:port-N`).
fn endpoint_of(client_id: &str) -> Option<&str> {
    let (_, rest) = client_id.rsplit_once('@')?;
    Some(rest.rsplit_once('-').map_or(rest, |(e, _)| e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip_through_client_ids() {
        let id = format!(
            "{}-3",
            client_id("heater-controller", Some("127.0.0.1:9464"))
        );
        assert_eq!(endpoint_of(&id), Some("127.0.0.1:9464"));
        assert_eq!(endpoint_of(&format!("{}-0", client_id("g", None))), None);
    }

    #[test]
    fn the_board_hands_each_question_to_its_owner() {
        let board = Board::default();
        assert!(board.take(|_| true).is_empty());
        let (tx, rx) = mpsc::channel();
        let a = board.post(1, "a", tx.clone());
        board.post(2, "b", tx);
        let mine = board.take(|p| p == 2);
        assert_eq!((mine.len(), mine[0].key.as_str()), (1, "b"));
        mine[0].reply.send(Some("{}".into())).unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("{}"));
        board.withdraw(a);
        assert!(board.take(|_| true).is_empty());
    }
}
