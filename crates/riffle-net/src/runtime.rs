//! The one async runtime of the process's network code: the connectors
//! whose clients are async (NATS, MQTT, AMQP, HTTP) and the HTTP servers
//! (the webhook source, the operations endpoint). A small multi-threaded
//! tokio runtime, started at first use and shared by all of them.
//!
//! Callers are threads of their own (a pipeline's loop, a request handler
//! on the blocking pool, a test): they hand an async client's work to this
//! runtime with [`block_on`] (or [`within`], with a deadline), and its
//! background tasks (reading the socket, answering pings, accepting
//! connections) run here between calls. Two worker threads: the network
//! code waits more than it computes, and the record work runs elsewhere.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

use riffle_base::error::{Error, Result};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::watch;

/// The shared runtime's handle, for spawning a client's background tasks.
pub fn handle() -> &'static Handle {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("riffle-io")
                .enable_all()
                .build()
                .expect("cannot start the network runtime")
        })
        .handle()
}

/// Runs `future` on the shared runtime and waits for it, from a thread
/// that is not one of the runtime's async workers (a pipeline's, or one of
/// its blocking pool, where request handlers run). Tokio refuses, with a
/// panic, to block one of its workers.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
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

/// Runs `future` until it ends or `stop` turns true; None when stopped.
/// A server's accept loop runs this way, so that it ends when told.
pub async fn unless_stopped<F: Future>(
    future: F,
    stop: &mut watch::Receiver<bool>,
) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut stopped = pin!(stop.wait_for(|s| *s));
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match stopped.as_mut().poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Runs `work` to its end, asking it once to wind down (`wind_down`, a
/// server connection's graceful shutdown: it finishes the request under
/// way and closes) when `stop` turns true. The servers' connections run
/// this way, so that stopping a server lets each answer what it began.
pub async fn winding_down<F: Future>(
    work: F,
    stop: &mut watch::Receiver<bool>,
    wind_down: impl FnOnce(std::pin::Pin<&mut F>),
) -> F::Output {
    let mut work = pin!(work);
    let mut stopping = pin!(stop.wait_for(|s| *s));
    let mut wind_down = Some(wind_down);
    poll_fn(|cx| {
        if wind_down.is_some() && stopping.as_mut().poll(cx).is_ready() {
            if let Some(f) = wind_down.take() {
                f(work.as_mut());
            }
        }
        work.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_winds_down_once_when_stopped_and_runs_to_its_end() {
        let (tx, mut rx) = watch::channel(false);
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let a = asked.clone();
        let out = block_on(async move {
            let work = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                7
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = tx.send(true);
            });
            winding_down(work, &mut rx, |_| {
                a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .await
        });
        assert_eq!(out, 7, "the work ran to its end");
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

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

    #[test]
    fn blocking_pool_threads_may_wait_on_the_runtime() {
        // Request handlers run on the blocking pool and ask peers from there.
        let inner = block_on(async {
            tokio::task::spawn_blocking(|| block_on(async { 21 * 2 }))
                .await
                .unwrap()
        });
        assert_eq!(inner, 42);
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let (stop, mut stopped) = watch::channel(false);
        let waited = block_on(async move {
            let pending = std::future::pending::<()>();
            let _ = stop.send(true);
            unless_stopped(pending, &mut stopped).await
        });
        assert_eq!(waited, None);
    }
}
