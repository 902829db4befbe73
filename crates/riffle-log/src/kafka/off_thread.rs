//! Short-lived clients closed on a thread of their own.
//!
//! librdkafka's destroy waits for a client's threads to wind down, which
//! took 0.1 to 0.8 s against a broker on the same machine, while what the
//! client was made for (the end offsets of a topic, the read of a small
//! changelog partition) took a few milliseconds. A failover restoring
//! state waits for both, one after the other, so the partitions it takes
//! over would stay idle for the closing alone.

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
            // Should no thread start, the client is dropped here instead.
            let _ = std::thread::Builder::new()
                .name("client-close".into())
                .spawn(move || drop(client));
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
}
