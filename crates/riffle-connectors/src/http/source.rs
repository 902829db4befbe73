//! A webhook server: each POST is a record, answered when it is safe.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use riffle::connect::{Delivery, Record, Source};
use riffle::{Error, Result};

use super::client::{self, Framing, ReadError};

/// The most requests handled (and waiting for their records to be
/// acknowledged) at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 1024;

/// What the webhook server accepts.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen: String,
    pub path: String,
    pub max_body: u64,
    /// How long a request waits for its record's acknowledgement (and how
    /// long reading a request may take).
    pub timeout: Duration,
    /// Request headers copied into the record's headers (lower case).
    pub headers: Vec<String>,
}

/// A request whose record is on its way: its handler thread waits on
/// `reply` to answer the client.
struct Waiting {
    record: Record,
    reply: SyncSender<()>,
    /// Set when the handler gave up (and answered 503): the record need not
    /// be handed out any more, the client sends it again.
    abandoned: Arc<AtomicBool>,
}

/// Serves `POST <path>` on a thread of its own; [`Source::poll`] hands the
/// request bodies out as records and [`Source::ack`] answers their
/// requests `204 No Content`.
pub struct WebhookSource {
    address: SocketAddr,
    path: String,
    queue: Receiver<Waiting>,
    /// Requests whose records were polled and not yet acknowledged.
    polled: Vec<SyncSender<()>>,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<()>>,
}

impl WebhookSource {
    /// Starts listening; fails if the address cannot be bound.
    pub fn start(config: WebhookConfig) -> Result<Self> {
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| Error::io(format!("http: cannot listen on {}", config.listen), &e))?;
        let address = listener.local_addr().map_err(|e| Error::io("http", &e))?;
        let (tx, queue) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let path = config.path.clone();
        let server = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("webhook {address}"))
                .spawn(move || serve(listener, Arc::new(config), tx, &stop))
                .map_err(|e| Error::io("http: cannot start a thread", &e))?
        };
        Ok(Self {
            address,
            path,
            queue,
            polled: Vec::new(),
            stop,
            server: Some(server),
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

fn serve(
    listener: TcpListener,
    config: Arc<WebhookConfig>,
    tx: Sender<Waiting>,
    stop: &AtomicBool,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("webhook {}: accept: {e}", config.listen);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            respond(&mut conn, 503, "too many requests in flight\n");
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (config, tx, active) = (config.clone(), tx.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("webhook request".into())
            .spawn(move || {
                handle(conn, &config, &tx);
                active.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::warn!("webhook: cannot start a thread: {e}");
        }
    }
}

/// Answers and closes: one request per connection keeps the waiting
/// simple (a client reusing connections sees `Connection: close`).
fn respond(conn: &mut TcpStream, status: u16, body: &str) {
    let mut headers = vec![("Connection", "close")];
    if status == 405 {
        headers.push(("Allow", "POST"));
    }
    if status == 503 {
        headers.push(("Retry-After", "1"));
    }
    if let Err(e) = client::write_response(conn, status, &headers, body.as_bytes()) {
        tracing::debug!("webhook: cannot answer {status}: {e}");
        return;
    }
    // Read what the client may still be sending (a body refused unread)
    // before closing: closing with unread data resets the connection,
    // and the client might never see the answer.
    let _ = conn.shutdown(Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = std::io::copy(&mut conn.take(8 << 20), &mut std::io::sink());
}

fn handle(conn: TcpStream, config: &WebhookConfig, tx: &Sender<Waiting>) {
    let _ = conn.set_read_timeout(Some(config.timeout));
    let _ = conn.set_write_timeout(Some(config.timeout));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    let record = match read_request(&mut reader, &mut writer, config) {
        Ok(r) => r,
        Err(ReadError::Closed) => return,
        Err(ReadError::Io(e)) => {
            tracing::debug!("webhook: reading a request: {e}");
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                respond(&mut writer, 408, "the request did not arrive in time\n");
            }
            return;
        }
        Err(ReadError::Bad(status, why)) => {
            tracing::debug!("webhook: refused with {status}: {why}");
            respond(&mut writer, status, &format!("{why}\n"));
            return;
        }
    };
    let (reply, acked) = mpsc::sync_channel(1);
    let abandoned = Arc::new(AtomicBool::new(false));
    let waiting = Waiting {
        record,
        reply,
        abandoned: abandoned.clone(),
    };
    if tx.send(waiting).is_err() {
        respond(&mut writer, 503, "the source is closed\n");
        return;
    }
    match acked.recv_timeout(config.timeout) {
        Ok(()) => respond(&mut writer, 204, ""),
        Err(RecvTimeoutError::Timeout) => {
            abandoned.store(true, Ordering::Relaxed);
            respond(
                &mut writer,
                503,
                "not confirmed downstream in time; send it again\n",
            );
        }
        // The source closed before the record was acknowledged.
        Err(RecvTimeoutError::Disconnected) => {
            respond(&mut writer, 503, "the source closed; send it again\n")
        }
    }
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    config: &WebhookConfig,
) -> std::result::Result<Record, ReadError> {
    let head = client::read_head(reader)?;
    let line = client::parse_request_line(&head.start)?;
    if line.path != config.path {
        return Err(ReadError::Bad(404, format!("no webhook at {}", line.path)));
    }
    if line.method != "POST" {
        return Err(ReadError::Bad(
            405,
            format!("{} is not allowed: POST records", line.method),
        ));
    }
    let framing = client::request_framing(&head)?;
    match framing {
        Framing::Unknown => return Err(ReadError::Bad(411, "no Content-Length".into())),
        Framing::Length(n) if n > config.max_body => {
            return Err(ReadError::Bad(
                413,
                format!("body larger than {} bytes", config.max_body),
            ))
        }
        _ => {}
    }
    // A client that asks waits for this before sending the body (curl does
    // for large bodies); the checks above come first so that it can be
    // refused before sending it.
    if head.has_token("expect", "100-continue") {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let body = client::read_body(reader, framing, config.max_body)?;
    let mut record = Record::new(line.path, None, body);
    record.key = head.header("x-riffle-key").map(|k| k.as_bytes().to_vec());
    for (name, value) in &head.headers {
        if config.headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            record
                .headers
                .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        }
    }
    Ok(record)
}

impl Source for WebhookSource {
    fn describe(&self) -> String {
        format!("http webhook {}{}", self.address, self.path)
    }

    /// At-least-once on the condition that clients send a request again
    /// until it gets a 2xx, which is what webhook senders do.
    fn delivery(&self) -> Delivery {
        Delivery::AtLeastOnce
    }

    fn poll(&mut self, out: &mut Vec<Record>, max: usize, timeout: Duration) -> Result<usize> {
        let mut n = 0;
        let mut next = self.queue.recv_timeout(timeout).ok();
        while let Some(w) = next {
            if !w.abandoned.load(Ordering::Relaxed) {
                out.push(w.record);
                self.polled.push(w.reply);
                n += 1;
            }
            next = if n < max {
                self.queue.try_recv().ok()
            } else {
                None
            };
        }
        Ok(n)
    }

    fn ack(&mut self) -> Result<()> {
        for reply in self.polled.drain(..) {
            // A handler that gave up already answered 503; its client
            // sends the record again (a duplicate, never a loss).
            let _ = reply.try_send(());
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        // Unacknowledged requests are answered 503 when their reply
        // channels drop with them.
        self.polled.clear();
        while self.queue.try_recv().is_ok() {}
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        let _ = server.join();
        Ok(())
    }
}

impl Drop for WebhookSource {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
