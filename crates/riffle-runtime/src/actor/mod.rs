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
//! Not every actor of the runtime reads a mailbox. A consumer's loop is its
//! poll (librdkafka's queue is its mailbox), and a producer is a handle on
//! librdkafka's own sending thread. The consumer restarts the way a mailbox
//! actor does, though: one [`Supervision`] policy, counted by [`Restarts`],
//! waits from `riffle_base`'s one [`Backoff`].
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
use riffle_base::backoff::Backoff;

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

/// A run of consecutive failures of one supervised actor, and what to do
/// after the next: the one way anything in the runtime restarts.
pub struct Restarts {
    policy: Supervision,
    backoff: Backoff,
    consecutive: u32,
}

impl Restarts {
    pub fn new(policy: Supervision) -> Self {
        Self {
            policy,
            backoff: Backoff::new(policy.backoff, policy.max_backoff),
            consecutive: 0,
        }
    }

    /// A success ends the run of failures.
    pub fn succeeded(&mut self) {
        if self.consecutive > 0 {
            self.consecutive = 0;
            self.backoff.reset();
        }
    }

    /// After a failure of `actor` (`why`, for the log): the wait before
    /// restarting it, or `None` when the policy gives up. `restarts` is the
    /// actor's count of restarts so far, this one included.
    pub fn failed(&mut self, actor: &str, restarts: u64, why: &str) -> Option<Duration> {
        self.consecutive += 1;
        if self
            .policy
            .max_restarts
            .is_some_and(|max| self.consecutive > max)
        {
            tracing::error!(actor, restarts, "{why}; giving up");
            return None;
        }
        let delay = self.backoff.next_delay();
        tracing::warn!(actor, restarts, "{why}; restarting in {delay:?}");
        Some(delay)
    }
}

/// Runs `f`, turning a panic into its message: how a supervisor watches
/// what it supervises.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_text(&*p).to_owned())
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
    let mut run = Restarts::new(supervision);
    while let Ok(msg) = rx.recv() {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        match catch(|| actor.handle(msg)) {
            Ok(()) => {
                run.succeeded();
                stats.handled.fetch_add(1, Ordering::Relaxed);
            }
            Err(panic) => {
                let restarts = stats.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                let why = format!("actor panicked ({panic})");
                let Some(delay) = run.failed(&name, restarts, &why) else {
                    return Exit::GaveUp { restarts };
                };
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
    fn restarts_back_off_up_to_the_cap_until_a_success() {
        let mut r = Restarts::new(Supervision {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_restarts: Some(6),
        });
        let d: Vec<_> = (1..=6)
            .map(|n| r.failed("a", n, "test").unwrap().as_millis())
            .collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.failed("a", 7, "test"), None, "gives up after 6");
        r.succeeded();
        assert_eq!(r.failed("a", 8, "test"), Some(Duration::from_millis(100)));
    }
}
