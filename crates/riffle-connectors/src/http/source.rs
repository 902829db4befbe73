//! A webhook server: each POST is a record, answered when it is safe.

use std::convert::Infallible;

use std::net::SocketAddr;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use riffle::connect::{Delivery, Record, Source};
use riffle::{Error, Result};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::runtime::{self, unless_stopped, winding_down};
use crate::tls::{self, Tls};

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
    /// The bearer token every request must carry, when set.
    pub token: Option<String>,
    /// The most connections served at once; more are answered 503.
    pub max_connections: usize,
    /// TLS: `cert` and `key` are the server's own; `ca`, when given, signs
    /// the client certificates every client must present.
    pub tls: Option<Tls>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            path: "/".into(),
            max_body: 1 << 20,
            timeout: Duration::from_secs(30),
            headers: Vec::new(),
            token: None,
            max_connections: 1024,
            tls: None,
        }
    }
}

/// A request whose record is on its way: its handler waits on `reply` to
/// answer the client.
struct Waiting {
    record: Record,
    reply: oneshot::Sender<()>,
    /// Set when the handler gave up (and answered 503): the record need not
    /// be handed out any more, the client sends it again.
    abandoned: Arc<AtomicBool>,
}

/// Serves `POST <path>` on the shared runtime; [`Source::poll`] hands the
/// request bodies out as records and [`Source::ack`] answers their
/// requests `204 No Content`.
pub struct WebhookSource {
    address: SocketAddr,
    path: String,
    scheme: &'static str,
    queue: Receiver<Waiting>,
    /// Requests whose records were polled and not yet acknowledged.
    polled: Vec<oneshot::Sender<()>>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    accepted: Arc<AtomicU64>,
}

/// What every connection's handler shares.
struct Shared {
    config: WebhookConfig,
    queue: Sender<Waiting>,
    accepted: Arc<AtomicU64>,
}

impl WebhookSource {
    /// Starts listening; fails if the address cannot be bound or the TLS
    /// certificate, key or CA cannot be read.
    pub fn start(config: WebhookConfig) -> Result<Self> {
        let acceptor = match &config.tls {
            Some(t) => Some(acceptor(t)?),
            None => None,
        };
        let listener = std::net::TcpListener::bind(&config.listen)
            .map_err(|e| Error::io(format!("http: cannot listen on {}", config.listen), &e))?;
        let address = listener.local_addr().map_err(|e| Error::io("http", &e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("http", &e))?;
        let listener = {
            let _entered = runtime::handle().enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| Error::io("http", &e))?
        };
        let (tx, queue) = mpsc::channel();
        let (stop, stopped) = watch::channel(false);
        let path = config.path.clone();
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let accepted = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            config,
            queue: tx,
            accepted: accepted.clone(),
        });
        let server = runtime::handle().spawn(serve(listener, acceptor, shared, stopped));
        Ok(Self {
            address,
            path,
            scheme,
            queue,
            polled: Vec::new(),
            stop,
            server: Some(server),
            accepted,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The number of connections accepted so far, shared: it can be read
    /// after the source moved into a pipeline (clients that keep their
    /// connections alive make few).
    pub fn accepted_connections(&self) -> Arc<AtomicU64> {
        self.accepted.clone()
    }
}

/// The server's TLS configuration: its certificate and key, and when a CA
/// is given, client certificates signed by it required (mutual TLS).
fn acceptor(t: &Tls) -> Result<TlsAcceptor> {
    let server = t.server().map_err(|_| {
        Error::InvalidInput(
            "http: a TLS webhook needs its certificate and key (tls_cert and tls_key)".into(),
        )
    })?;
    Ok(TlsAcceptor::from(server.server_config(&[b"http/1.1"])?))
}

/// The accept loop. On stop, the open connections finish the requests
/// they are answering (503 for those whose records were not acknowledged)
/// and close; whatever is left after a few seconds is dropped.
async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
    let mut connections = JoinSet::new();
    while let Some(accepted) = unless_stopped(listener.accept(), &mut stop).await {
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("webhook: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let permit = permits.clone().try_acquire_owned().ok();
        let (shared, acceptor, stop) = (shared.clone(), acceptor.clone(), stop.clone());
        connections.spawn(async move {
            let over = permit.is_none();
            match acceptor {
                None => connection(tcp, shared, over, stop).await,
                Some(acceptor) => {
                    let timeout = shared.config.timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, shared, over, stop).await,
                        Ok(Err(e)) => {
                            let hint = tls::explain(&e.to_string()).unwrap_or_default();
                            tracing::debug!("webhook: TLS handshake with {peer}: {e} {hint}");
                        }
                        Err(_) => tracing::debug!("webhook: TLS handshake with {peer} timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Serves one connection, its requests one after the other (keep-alive).
/// `over` marks a connection beyond `max_connections`: all it gets is 503.
async fn connection<S>(io: S, shared: Arc<Shared>, over: bool, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.config.timeout.max(Duration::from_secs(1));
    let service = service_fn(move |request| {
        let shared = shared.clone();
        async move {
            let response = if over {
                answer(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n")
            } else {
                handle(request, &shared).await
            };
            Ok::<_, Infallible>(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A client may close its side once its request is sent (a body
        // without a length ends that way); it still waits for the answer.
        .half_close(true)
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(io), service);
    let result = winding_down(conn, &mut stop, |c| c.graceful_shutdown()).await;
    if let Err(e) = result {
        tracing::debug!("webhook: connection: {e}");
    }
}

/// A short answer; anything but a 2xx closes the connection, so that a
/// body left unread cannot be taken for the next request.
fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if !status.is_success() {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            headers.insert("allow", HeaderValue::from_static("POST"));
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            headers.insert("retry-after", HeaderValue::from_static("1"));
        }
        StatusCode::UNAUTHORIZED => {
            headers.insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    response
}

async fn handle(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let config = &shared.config;
    let path = request.uri().path().to_owned();
    if path != config.path {
        return answer(StatusCode::NOT_FOUND, &format!("no webhook at {path}\n"));
    }
    if request.method() != Method::POST {
        let why = format!("{} is not allowed: POST records\n", request.method());
        return answer(StatusCode::METHOD_NOT_ALLOWED, &why);
    }
    if let Some(token) = &config.token {
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| riffle_net::secret::bearer(v.as_bytes()));
        match given {
            None => return answer(StatusCode::UNAUTHORIZED, "a bearer token is required\n"),
            Some(g) if !riffle_net::secret::same(g, token.as_bytes()) => {
                return answer(StatusCode::UNAUTHORIZED, "wrong bearer token\n")
            }
            Some(_) => {}
        }
    }
    let headers = request.headers();
    let length = match headers.get(CONTENT_LENGTH) {
        // hyper has checked it is one number.
        Some(v) => v.to_str().ok().and_then(|v| v.parse::<u64>().ok()),
        None if headers.contains_key(TRANSFER_ENCODING) => None,
        None => return answer(StatusCode::LENGTH_REQUIRED, "no Content-Length\n"),
    };
    let too_large = || {
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {} bytes\n", config.max_body),
        )
    };
    if length.is_some_and(|n| n > config.max_body) {
        return too_large();
    }
    let key = headers.get("x-riffle-key").map(|k| k.as_bytes().to_vec());
    let copied: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| config.headers.iter().any(|h| h == name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    // Reading the body sends `100 Continue` first to a client that asks
    // for it (curl does for large bodies), after the checks above.
    let limit = usize::try_from(config.max_body).unwrap_or(usize::MAX);
    let body = Limited::new(request.into_body(), limit);
    let body = match tokio::time::timeout(config.timeout, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            tracing::debug!("webhook: reading a request: {e}");
            return answer(StatusCode::BAD_REQUEST, &format!("malformed body: {e}\n"));
        }
        Err(_) => {
            return answer(
                StatusCode::REQUEST_TIMEOUT,
                "the request did not arrive in time\n",
            )
        }
    };
    let mut record = Record::new(path, None, body.to_vec());
    record.key = key;
    record.headers = copied;

    let (reply, acked) = oneshot::channel();
    let abandoned = Arc::new(AtomicBool::new(false));
    let waiting = Waiting {
        record,
        reply,
        abandoned: abandoned.clone(),
    };
    if shared.queue.send(waiting).is_err() {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "the source is closed\n");
    }
    match tokio::time::timeout(config.timeout, acked).await {
        Ok(Ok(())) => {
            let mut done = answer(StatusCode::NO_CONTENT, "");
            *done.body_mut() = Full::default();
            done
        }
        // The source closed before the record was acknowledged.
        Ok(Err(_)) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "the source closed; send it again\n",
        ),
        Err(_) => {
            abandoned.store(true, Ordering::Relaxed);
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "not confirmed downstream in time; send it again\n",
            )
        }
    }
}

impl Source for WebhookSource {
    fn describe(&self) -> String {
        format!(
            "http webhook {}://{}{}",
            self.scheme, self.address, self.path
        )
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
            let _ = reply.send(());
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
        let _ = self.stop.send(true);
        let _ = runtime::block_on(server);
        Ok(())
    }
}

impl Drop for WebhookSource {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
