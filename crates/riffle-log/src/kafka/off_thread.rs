//! Short-lived clients closed on a thread of their own.
//!
//! librdkafka's destroy waits for a client's threads to wind down, which
//! took 0.1 to 0.8 s against a broker on the same machine, while what the
//! client was made for (the end offsets of a topic, the read of a small
//! changelog partition) took a few milliseconds. A failover restoring
//! state waits for both, one after the other, so the partitions it takes
//! over would stay idle for the closing alone.
//!
//! A process must not exit while such a close is under way: `exit` runs
//! OpenSSL's clean-up while the closing client's TLS connections still use
//! it, and the process dies of a segmentation fault, silently. So closes are
//! counted, and the process waits for them at exit (an `atexit` handler,
//! registered after OpenSSL's and so run before it; [`wait_closed`]).

use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

/// Closes under way in this process.
static CLOSING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Waits until no client is being closed, for at most `limit`.
pub(super) fn wait_closed(limit: Duration) {
    let deadline = Instant::now() + limit;
    let (count, done) = &CLOSING;
    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::debug!("{n} Kafka client(s) still closing");
            return;
        }
        n = done
            .wait_timeout(n, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// How long exit waits for closes under way.
const EXIT_WAIT: Duration = Duration::from_secs(5);

extern "C" fn at_exit() {
    wait_closed(EXIT_WAIT);
}

fn closing(delta: isize) {
    let (count, done) = &CLOSING;
    let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
    *n = n.saturating_add_signed(delta);
    if *n == 0 {
        done.notify_all();
    }
}

/// `T`, dropped on a thread of its own when this is dropped.
pub(super) struct OffThread<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffThread<T> {
    pub(super) fn new(client: T) -> Self {
        Self(Some(client))
    }
}

impl<T: Send + 'static> std::ops::Deref for OffThread<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("taken only on drop")
    }
}

impl<T: Send + 'static> Drop for OffThread<T> {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            static AT_EXIT: Once = Once::new();
            // SAFETY: `at_exit` is a plain function that only waits on a
            // condition variable; registering it has no other effect.
            AT_EXIT.call_once(|| unsafe {
                libc::atexit(at_exit);
            });
            closing(1);
            // Should no thread start, the client is dropped here instead.
            let started = std::thread::Builder::new()
                .name("client-close".into())
                .spawn(move || {
                    drop(client);
                    closing(-1);
                });
            if started.is_err() {
                closing(-1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Slow(mpsc::Sender<std::thread::ThreadId>);
    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn a_client_is_dropped_on_another_thread_without_waiting() {
        let (tx, rx) = mpsc::channel();
        let t = std::time::Instant::now();
        drop(OffThread::new(Slow(tx)));
        assert!(t.elapsed() < std::time::Duration::from_millis(100));
        let dropped_on = rx.recv().unwrap();
        assert_ne!(dropped_on, std::thread::current().id());
    }

    #[test]
    fn wait_closed_returns_once_the_closes_are_done() {
        let (tx, rx) = mpsc::channel();
        drop(OffThread::new(Slow(tx)));
        wait_closed(Duration::from_secs(5));
        // The close had finished: its report is already there.
        assert!(rx.try_recv().is_ok());
    }
}
