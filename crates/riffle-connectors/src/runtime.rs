//! The one async runtime of the connectors whose clients are async (NATS,
//! MQTT, AMQP, the HTTP servers): a small multi-threaded tokio runtime,
//! started at first use and shared by every connector of the process.
//!
//! A pipeline is a loop on a thread of its own that calls its source and
//! sink in turn; an async client's work is handed to this runtime with
//! [`block_on`] (or [`within`], with a deadline), and its background tasks
//! (reading the socket, answering pings) run here between calls. Two
//! worker threads: the connectors wait on the network, and a pipeline's
//! own thread does its record work.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use riffle::{Error, Result};
use tokio::runtime::{Builder, Handle, Runtime};

/// The shared runtime's handle, for spawning a client's background tasks.
pub fn handle() -> &'static Handle {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("riffle-connect-io")
                .enable_all()
                .build()
                .expect("cannot start the connectors' runtime")
        })
        .handle()
}

/// Runs `future` on the shared runtime and waits for it, from a thread
/// that is not one of the runtime's own (a pipeline's).
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    // Entering the runtime from its own threads would deadlock; a
    // pipeline never runs there.
    debug_assert!(
        Handle::try_current().is_err(),
        "block_on inside the runtime"
    );
    handle().block_on(future)
}

/// Like [`block_on`], failing with a message naming `what` when `future`
/// takes longer than `timeout`: a server that accepts a connection and
/// then says nothing is reported, not waited for.
pub fn within<F, T>(what: &str, timeout: Duration, future: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send,
    T: Send,
{
    block_on(async { tokio::time::timeout(timeout, future).await }).map_err(|_| Error::Io {
        context: what.to_owned(),
        kind: std::io::ErrorKind::TimedOut,
        message: format!("no answer within {timeout:?}"),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn futures_run_on_the_shared_runtime_and_time_out_by_name() {
        assert_eq!(block_on(async { 1 + 1 }), 2);
        let e = within(
            "NATS server at 127.0.0.1:1",
            Duration::from_millis(20),
            async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("NATS server at 127.0.0.1:1"), "{e}");
        assert!(e.contains("no answer within"), "{e}");
    }
}
