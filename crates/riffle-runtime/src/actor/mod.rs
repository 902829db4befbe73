//! A small actor runtime.
//!
//! An actor is a value that owns its state and handles one message at a time
//! from a bounded mailbox. The bound is the backpressure: a sender waits when
//! the actor falls behind instead of growing a queue without limit. Handles
//! ([`Addr`]) are cheap to clone and are the only way to reach the actor, so
//! its state needs no locks.
//!
//! Each actor runs on a thread of its own. Riffle's actors are few and busy
//! (a consumer per group member, a worker per core) and their work is
//! synchronous, CPU-bound user code or librdkafka's blocking calls, so a
//! thread per actor costs nothing an async executor would save, and a slow
//! handler cannot stall other actors. The many small per-key actors of the
//! key-independent style are virtual: entries multiplexed on a few workers.
//!
//! Actors run under supervision: a panic while handling a message is caught,
//! reported, counted, and the actor is rebuilt from its factory after a
//! backoff that doubles with each consecutive panic. The mailbox survives the
//! restart, so only the message that caused the panic is lost.
//!
//! A message costs a channel hop (a few hundred nanoseconds): send batches,
//! not single records, across actors on hot paths.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::Error;

/// A unit of state and behaviour that handles messages one at a time.
pub trait Actor: Send + 'static {
    type Msg: Send + 'static;

    /// Handles one message. A panic here restarts the actor.
    fn handle(&mut self, msg: Self::Msg);

    /// Called once when every [`Addr`] is gone and the mailbox is drained.
    fn stopped(&mut self) {}
}

/// How a supervisor treats a panicking actor.
#[derive(Debug, Clone, Copy)]
pub struct Supervision {
    /// Wait before the first restart; doubled for each consecutive panic.
    pub backoff: Duration,
    /// The longest wait between restarts.
    pub max_backoff: Duration,
    /// Give up after this many consecutive panics (`None`: never).
    pub max_restarts: Option<u32>,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_restarts: None,
        }
    }
}

impl Supervision {
    /// The wait before restart number `attempt` (1-based) of a run of panics.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Counters an actor's supervisor keeps, readable through any [`Addr`].
#[derive(Debug, Default)]
pub struct ActorStats {
    pub handled: AtomicU64,
    pub restarts: AtomicU64,
    queued: AtomicUsize,
}

/// A handle on an actor's mailbox.
pub struct Addr<M> {
    name: Arc<str>,
    tx: SyncSender<M>,
    stats: Arc<ActorStats>,
}

impl<M> Clone for Addr<M> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            tx: self.tx.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<M: Send + 'static> Addr<M> {
    /// Sends a message, waiting while the mailbox is full. Fails once the
    /// actor has stopped for good.
    pub fn send(&self, msg: M) -> Result<(), Error> {
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            Error::Closed
        })
    }

    /// Sends only if there is room now; gives the message back otherwise.
    pub fn try_send(&self, msg: M) -> Result<(), M> {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => Err(m),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Messages waiting in the mailbox.
    pub fn mailbox_depth(&self) -> usize {
        self.stats.queued.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> &ActorStats {
        &self.stats
    }
}

/// Why a supervised actor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Every handle was dropped and the mailbox drained.
    Stopped,
    /// It kept panicking past [`Supervision::max_restarts`].
    GaveUp { restarts: u64 },
}

/// Starts an actor built by `factory` (called again on every restart) with a
/// mailbox of `capacity` messages, on a thread named `name`.
pub fn spawn<A, F>(
    name: &str,
    capacity: usize,
    supervision: Supervision,
    factory: F,
) -> (Addr<A::Msg>, JoinHandle<Exit>)
where
    A: Actor,
    F: FnMut() -> A + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(capacity.max(1));
    let stats = Arc::new(ActorStats::default());
    let labels = vec![("actor", name.to_owned())];
    crate::metrics::global().collect(&stats, move |st, s| {
        s.counter(
            "riffle_actor_restarts_total",
            "Restarts of an actor after a panic.",
            &labels,
            st.restarts.load(Ordering::Relaxed),
        );
        s.gauge(
            "riffle_mailbox_depth",
            "Messages waiting in an actor's mailbox.",
            &labels,
            st.queued.load(Ordering::Relaxed) as f64,
        );
    });
    let addr = Addr {
        name: name.into(),
        tx,
        stats: stats.clone(),
    };
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || supervise(rx, &stats, supervision, factory))
        .expect("spawning an actor thread");
    (addr, thread)
}

fn supervise<A: Actor>(
    rx: Receiver<A::Msg>,
    stats: &ActorStats,
    supervision: Supervision,
    mut factory: impl FnMut() -> A,
) -> Exit {
    let name = std::thread::current().name().unwrap_or("actor").to_owned();
    let mut actor = factory();
    let mut consecutive = 0u32;
    while let Ok(msg) = rx.recv() {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        match catch_unwind(AssertUnwindSafe(|| actor.handle(msg))) {
            Ok(()) => {
                consecutive = 0;
                stats.handled.fetch_add(1, Ordering::Relaxed);
            }
            Err(panic) => {
                consecutive += 1;
                let restarts = stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                if supervision
                    .max_restarts
                    .is_some_and(|max| consecutive > max)
                {
                    tracing::error!(actor = %name, restarts, "actor panicked again ({}); giving up", panic_text(&*panic));
                    return Exit::GaveUp { restarts };
                }
                let delay = supervision.delay(consecutive);
                tracing::warn!(actor = %name, restarts, "actor panicked ({}); restarting in {delay:?}", panic_text(&*panic));
                std::thread::sleep(delay);
                actor = factory();
            }
        }
    }
    actor.stopped();
    Exit::Stopped
}

/// The message of a caught panic, when it is a string.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Summer {
        seen: Arc<Mutex<Vec<i32>>>,
    }

    impl Actor for Summer {
        type Msg = i32;
        fn handle(&mut self, msg: i32) {
            if msg < 0 {
                panic!("negative message {msg}");
            }
            self.seen.lock().unwrap().push(msg);
        }
    }

    fn fast() -> Supervision {
        Supervision {
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(8),
            max_restarts: None,
        }
    }

    #[test]
    fn panicking_actor_is_restarted_and_keeps_its_mailbox() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let built = Arc::new(AtomicUsize::new(0));
        let (s, b) = (seen.clone(), built.clone());
        let (addr, thread) = spawn("summer", 8, fast(), move || {
            b.fetch_add(1, Ordering::SeqCst);
            Summer { seen: s.clone() }
        });
        for m in [1, 2, -1, 3, -2, 4] {
            addr.send(m).unwrap();
        }
        let stats = Arc::clone(&addr.stats);
        drop(addr);
        assert_eq!(thread.join().unwrap(), Exit::Stopped);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![1, 2, 3, 4],
            "messages after a panic are still handled, in order"
        );
        assert_eq!(stats.restarts.load(Ordering::SeqCst), 2);
        assert_eq!(stats.handled.load(Ordering::SeqCst), 4);
        assert_eq!(
            built.load(Ordering::SeqCst),
            3,
            "the factory rebuilds the actor"
        );
        assert_eq!(stats.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn gives_up_after_max_restarts() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sup = Supervision {
            max_restarts: Some(2),
            ..fast()
        };
        let s = seen.clone();
        let (addr, thread) = spawn("doomed", 8, sup, move || Summer { seen: s.clone() });
        for _ in 0..3 {
            addr.send(-1).unwrap();
        }
        assert_eq!(thread.join().unwrap(), Exit::GaveUp { restarts: 3 });
        assert!(addr.send(1).is_err(), "a stopped actor refuses messages");
    }

    #[test]
    fn full_mailbox_pushes_back() {
        let gate = Arc::new(Mutex::new(()));
        struct Blocked(Arc<Mutex<()>>);
        impl Actor for Blocked {
            type Msg = ();
            fn handle(&mut self, _: ()) {
                drop(self.0.lock().unwrap());
            }
        }
        let held = gate.lock().unwrap();
        let g = gate.clone();
        let (addr, thread) = spawn("blocked", 2, fast(), move || Blocked(g.clone()));
        // One message in hand, two in the mailbox; the next does not fit.
        addr.send(()).unwrap();
        while addr.mailbox_depth() != 0 {
            std::thread::yield_now();
        }
        addr.send(()).unwrap();
        addr.send(()).unwrap();
        assert_eq!(addr.mailbox_depth(), 2);
        assert!(addr.try_send(()).is_err(), "mailbox bound enforced");
        drop(held);
        drop(addr);
        assert_eq!(thread.join().unwrap(), Exit::Stopped);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Supervision {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_restarts: None,
        };
        let d: Vec<_> = (1..=6).map(|a| s.delay(a).as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(s.delay(100), Duration::from_secs(1));
    }
}
