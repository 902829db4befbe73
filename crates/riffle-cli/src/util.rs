//! Small helpers shared by the commands.

use std::time::Duration;

use riffle::stream::Stopper;

/// Logs go to stderr; `RIFFLE_LOG` (or `RUST_LOG`) sets the filter, e.g.
/// `RIFFLE_LOG=debug` or `RIFFLE_LOG=riffle=debug,librdkafka=info`. By
/// default Riffle's warnings show, and librdkafka only speaks for errors
/// (its connection retries would otherwise repeat what the error says).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RIFFLE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn,librdkafka=error".into());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_target(false)
        .compact()
        .init();
}

/// A duration flag's value, in the one grammar of `riffle::duration`
/// (`500ms`, `10s`, `1h30m`, a bare number of seconds), for clap's
/// `value_parser`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    riffle::duration::parse(s)
}

/// A stopper that Ctrl-C (SIGINT) or SIGTERM triggers, so that a process
/// stopped from the terminal or by a supervisor (systemd, Kubernetes, a shell
/// script's `kill`) finishes its records, commits and leaves its group. A
/// second signal exits at once.
pub fn signal_stopper() -> Stopper {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};

    let stopper = Stopper::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("signal runtime");
    // Handlers are installed before this returns, so that a signal that
    // comes right after start-up already stops gracefully.
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let _in_runtime = rt.enter();
        for (kind, name) in [
            (SignalKind::interrupt(), "Ctrl-C"),
            (SignalKind::terminate(), "SIGTERM"),
        ] {
            let Ok(mut signals) = signal(kind) else {
                tracing::warn!("cannot handle {name}; it will end the process at once");
                continue;
            };
            let (s, stopping) = (stopper.clone(), stopping.clone());
            rt.spawn(async move {
                while signals.recv().await.is_some() {
                    if stopping.swap(true, Ordering::SeqCst) {
                        // The shell's convention: 128 + the signal number.
                        std::process::exit(128 + kind.as_raw_value());
                    }
                    eprintln!("\nstopping on {name} (again to quit at once)");
                    s.stop();
                }
            });
        }
    }
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    stopper
}

/// Sleeps until `stopper` fires or `limit` passes (forever when `None`).
pub fn wait(stopper: &Stopper, limit: Option<Duration>) {
    let start = std::time::Instant::now();
    while !stopper.is_stopped() && limit.is_none_or(|l| start.elapsed() < l) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A record's bytes for display: UTF-8 as is, anything else escaped.
pub fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// A record's headers for display, after a space: ` headers=k1=v1,k2=v2`,
/// a null value shown as the bare name; nothing for a record without
/// headers, so that their lines read as before.
pub fn show_headers(headers: riffle::log::Headers<'_>) -> String {
    if headers.is_empty() {
        return String::new();
    }
    let mut out = String::from(" headers=");
    for (i, h) in headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(h.name);
        if let Some(v) = h.value {
            out.push('=');
            out.push_str(&show(v));
        }
    }
    out
}
